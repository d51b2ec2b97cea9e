#!/usr/bin/env python3
"""The GPU smoke run behind scripts/gpu-smoke.sh: modelyard serving one model file as three
models on gpu0 (the same file and flags, other tags), and every figure the GPU issue asks for.

Standard library only (PyTorch, where present, measures the host-to-device bandwidth). Each
phase starts a fresh host on a loopback port and stops it; the last line lists the checks that
failed (the estimate within 25%, the eviction before the load and by the policy, the VRAM freed,
pressure unloading, nothing left on the GPU), and the exit status is 1 if any did.
"""

import argparse
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

MIB = 1 << 20
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# llama.cpp's log timestamps: minutes.seconds.milliseconds.microseconds since it started.
STAMP = re.compile(r"(\d+)\.(\d{2})\.(\d{3})\.(\d{3}) [DIWE] (.*)")
MODELS = ("a", "b", "c")


def smi(query, *extra):
    out = subprocess.run(
        ["nvidia-smi", f"--query-{query}", "--format=csv,noheader,nounits", *extra],
        capture_output=True, text=True, check=True).stdout
    return [[f.strip() for f in line.split(",")] for line in out.splitlines() if line.strip()]


def gpu_apps():
    """{pid: MiB} of the processes nvidia-smi sees on the GPUs."""
    return {int(p): int(m) for p, m in smi("compute-apps=pid,used_memory")}


def bandwidth():
    """Pinned host-to-device copy, bytes per second (best of five 1 GiB copies), or None."""
    try:
        import torch
    except ImportError:
        return None
    src = torch.empty(1 << 30, dtype=torch.uint8).pin_memory()
    dst = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    best = None
    for _ in range(5):
        torch.cuda.synchronize()
        t = time.perf_counter()
        dst.copy_(src, non_blocking=True)
        torch.cuda.synchronize()
        took = time.perf_counter() - t
        best = took if best is None else min(best, took)
    del src, dst
    torch.cuda.empty_cache()
    return (1 << 30) / best


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Host:
    def __init__(self, args, work, name, memory="", verbose=True):
        """verbose: the servers log at debug and the host passes their lines on (the cold
        split reads them); off for timing the proxy, so logging costs neither side."""
        self.device = args.device
        self.port = free_port()
        self.log_path = os.path.join(work, f"{name}.log")
        cmd = (f"{args.llama_server} -m ${{FILE}} --alias ${{MODEL}} --host 127.0.0.1 "
               "--port ${PORT} -np ${PARALLEL} -c ${CONTEXT_TOTAL} --no-webui"
               + (" -lv 4" if verbose else "")
               + (" -ngl 99" if args.device != "cpu" else ""))
        models = "".join(
            f'\n[models.{m}]\ncmd = "{cmd}"\nfile = "{args.model}"\ndevice = "{args.device}"\n'
            f'context_tokens = 2048\nparallel = 2\ntags = ["{m}"]\n' for m in MODELS)
        config = os.path.join(work, f"{name}.toml")
        with open(config, "w") as f:
            f.write(f'listen = "127.0.0.1:{self.port}"\nstate_dir = "{work}/state"\n'
                    f'[policies]\neviction = "adaptive"\n{memory}\n{models}')
        env = dict(os.environ, NO_COLOR="1",
                   RUST_LOG="info,modelyard::backend=debug" if verbose else "warn")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([args.modelyard, "serve", "--config", config],
                                     stderr=self.log, stdout=self.log, env=env)
        for _ in range(300):
            try:
                self.get("/health")
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"the host did not come up; see {self.log_path}")

    def request(self, method, path, body=None, port=None):
        c = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=600)
        c.request(method, path, body=json.dumps(body) if body else None,
                  headers={"content-type": "application/json"})
        return c, c.getresponse()

    def get(self, path):
        c, r = self.request("GET", path)
        data = r.read()
        c.close()
        return json.loads(data) if data.startswith((b"{", b"[")) else data

    def models(self):
        return {m["id"]: m for m in self.get("/admin/models")["models"]}

    def events(self):
        return self.get("/admin/models")["events"]

    def device_use(self):
        """(used, total) bytes of the device, as the host measures it."""
        d = next(d for d in self.get("/admin/models")["devices"] if d["name"] == self.device)
        return d["used_bytes"], d["total_bytes"]

    def stream(self, model, port=None, base="/v1"):
        """Seconds to the first streamed token and in all, for one short streamed chat."""
        body = {"model": model, "stream": True, "max_tokens": 8, "temperature": 0,
                "messages": [{"role": "user", "content": "Say hello."}]}
        t = time.perf_counter()
        c, r = self.request("POST", f"{base}/chat/completions", body, port)
        if r.status != 200:
            raise SystemExit(f"{model}: {r.status} {r.read()[:300]!r}")
        first = None
        for line in r:
            if first is None and line.startswith(b"data:") and b'"content"' in line:
                first = time.perf_counter() - t
        c.close()
        return first, time.perf_counter() - t

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.close()


def server_split(log_path, model):
    """From the host's log of model's server lines: seconds (by the server's own clock) to the
    start of the weights' load, to its end, and to listening."""
    marks = {}
    for raw in open(log_path, errors="replace"):
        line = ANSI.sub("", raw)
        if not re.search(rf"\bmodel={re.escape(model)}\b", line):
            continue
        m = STAMP.search(line)
        if not m:
            continue
        t = int(m[1]) * 60 + int(m[2]) + int(m[3]) / 1e3 + int(m[4]) / 1e6
        text = m[5]
        if "loading model tensors" in text:
            marks.setdefault("weights_from", t)
        elif "llama_context" in text and "weights_from" in marks:
            marks.setdefault("weights_to", t)
        elif "server is listening" in text or "model loaded" in text:
            marks.setdefault("listening", t)
    return marks


def ms(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.0f} ms"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--modelyard", required=True)
    ap.add_argument("--llama-server", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--device", default="gpu0", help="cpu: a dry run of the script itself")
    args = ap.parse_args()
    # The config lives in the work folder: every path in it absolute.
    for key in ("modelyard", "llama_server", "model"):
        setattr(args, key, os.path.abspath(getattr(args, key)))
    work = tempfile.mkdtemp(prefix="modelyard-gpu-smoke-")
    size = os.path.getsize(args.model)
    print(f"model file {args.model}: {size / MIB:.1f} MiB; work folder {work}")
    gpu = smi("gpu=name,driver_version,memory.total", "-i", "0")[0]
    print(f"gpu0: {gpu[0]}, driver {gpu[1]}, {gpu[2]} MiB")
    bw = bandwidth()
    print("host-to-device bandwidth (pinned, best of 5 x 1 GiB): "
          + (f"{bw / 1e9:.1f} GB/s" if bw else "not measured (no PyTorch)"))
    before_apps = gpu_apps()
    failed = []

    def check(what, ok):
        if not ok:
            failed.append(what)

    # 1. One model: the header's estimate before, NVML's footprint against nvidia-smi after.
    print("\n== 1. footprint: NVML against nvidia-smi, the estimate before the load")
    host = Host(args, work, "measure")
    base_used, total = host.device_use()
    est = host.models()["a"]
    first, _ = host.stream("a")
    m = host.models()["a"]
    apps = gpu_apps()
    smi_bytes = sum(apps.get(p, 0) for p in m["pids"]) * MIB
    print(f"a: estimate before the load {est['size_bytes'] / MIB:.0f} MiB ({est['size_source']}); "
          f"measured {m['size_bytes']} bytes = {m['size_bytes'] / MIB:.1f} MiB; "
          f"nvidia-smi {smi_bytes / MIB:.0f} MiB for pids {m['pids']}")
    print(f"   estimate/measured {est['size_bytes'] / max(m['size_bytes'], 1):.2f}; "
          f"cold TTFT {ms(first)}, load {m['mean_load_ms']} ms")
    for other in ("b", "c"):
        o = host.models()[other]
        print(f"{other}: estimate now {o['size_bytes'] / MIB:.0f} MiB ({o['size_source']})")
    footprint = m["size_bytes"]
    check("the estimate before the load within 25% of the footprint",
          0.75 <= est["size_bytes"] / max(footprint, 1) <= 1.25)
    check("NVML's footprint within 2% of nvidia-smi's", abs(smi_bytes - footprint) <= footprint / 50)
    host.stop()

    # 2. A gpu0 budget for two and a half: the third load evicts through the wasm policy first.
    print("\n== 2. gpu0 budget of 2.5 footprints: eviction decided before the third load")
    budget = footprint * 5 // 2
    host = Host(args, work, "budget",
                f"[memory]\npressure = 1.0\n[memory.{args.device}]\nbudget = {budget}\nreserve = 0\n")
    for mid, mm in host.models().items():
        print(f"{mid}: estimate {mm['size_bytes'] / MIB:.0f} MiB ({mm['size_source']})")
    cold = {}
    pids = {}
    for mid in MODELS:
        cold[mid] = host.stream(mid)[0]
        pids[mid] = host.models()[mid]["pids"]
    ms_ = host.models()
    events = [(e["model"], e["kind"], e["detail"]) for e in host.events()]
    evicted = [e for e in events if e[1] == "evicted"]
    order = [e[:2] for e in events]
    print(f"events: {order}")
    if evicted:
        gone = evicted[0][0]
        before_c = order.index((gone, "evicted")) < order.index(("c", "loaded"))
        apps = gpu_apps()
        freed = not any(p in apps for p in pids[gone])
        print(f"evicted {gone} ({evicted[0][2]}); before c started: {before_c}; "
              f"its VRAM freed (its pids gone from nvidia-smi): {freed}")
        check("the eviction came before c's load", before_c)
        check("the eviction was the policy's", "by policy" in evicted[0][2])
        check("the evicted server's VRAM was freed", freed)
    else:
        print("NO EVICTION: the budget held all three")
        check("the gpu0 budget evicted before the third load", False)
    on_gpu = [p for p in gpu_apps() if p not in before_apps]
    held = sum(mm["size_bytes"] for mm in ms_.values() if mm["state"] == "ready")
    print(f"servers on the GPU now: {len(on_gpu)}; models hold {held / MIB:.0f} MiB "
          f"of a {budget / MIB:.0f} MiB budget")

    # Cold starts, split by the server's own clock.
    print("\ncold request split (server clock for its start-up; the host for the rest):")
    print(f"{'model':<6}{'to weights':>12}{'weights':>10}{'to listen':>11}{'load':>8}"
          f"{'exec+health':>13}{'1st token':>11}{'TTFT':>8}{'limit':>9}")
    for mid in MODELS:
        s = server_split(host.log_path, mid)
        load = ms_[mid]["mean_load_ms"] / 1e3 if ms_[mid]["load_count"] else None
        wf, wt, li = s.get("weights_from"), s.get("weights_to"), s.get("listening")
        weights = wt - wf if wf is not None and wt is not None else None
        limit = size / bw if bw else None
        print(f"{mid:<6}{ms(wf):>12}{ms(weights):>10}{ms(li):>11}{ms(load):>8}"
              f"{ms(load - li if load and li else None):>13}"
              f"{ms(cold[mid] - load if load and cold[mid] else None):>11}{ms(cold[mid]):>8}"
              f"{ms(limit):>9}")
    print("(limit: the file's bytes at the measured host-to-device bandwidth; "
          "'to weights' is the server's start-up before them, CUDA's initialisation included)")

    host.stop()

    # 3. Pressure on gpu0: a device fuller than `pressure` unloads an idle model.
    print("\n== 3. pressure on gpu0")
    pressure = (base_used + footprint * 3 // 2) / total
    host = Host(args, work, "pressure", f"[memory]\npressure = {pressure:.6f}\n")
    host.stream("a")
    host.stream("b")
    deadline = time.time() + 15
    hit = None
    while time.time() < deadline and not hit:
        hit = next((e for e in host.events() if e["kind"] == "evicted"), None)
        time.sleep(0.5)
    states = {k: v["state"] for k, v in host.models().items()}
    check("pressure on gpu0 evicted an idle model", hit is not None)
    used_now = host.device_use()[0]
    print(f"pressure {pressure:.4f} of {total / MIB:.0f} MiB (the device's use before + 1.5 "
          f"footprints): {hit['model'] + ' evicted: ' + hit['detail'] if hit else 'NOTHING EVICTED'}"
          f"; states {states}; the device's use now {used_now / MIB:.0f} MiB")
    host.stop()

    # The proxy's added time to first token on a warm model, interleaved with direct requests.
    print("\n== 4. the proxy's added time to first token on a warm model")
    host = Host(args, work, "warm", verbose=False)
    warm = "a"
    host.stream(warm)
    port = int(re.search(r":(\d+)", host.models()[warm]["endpoint"])[1])
    direct, proxied = [], []
    for i in range(args.requests):
        for which in ((0, 1) if i % 2 else (1, 0)):
            if which:
                proxied.append(host.stream(warm)[0])
            else:
                direct.append(host.stream(warm, port=port)[0])
    check("every warm request had a first token", None not in direct + proxied)
    direct, proxied = [x for x in direct if x is not None], [x for x in proxied if x is not None]
    q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]
    print(f"\nwarm TTFT over {args.requests} streamed requests each, interleaved ({warm}):")
    for name, xs in (("direct", direct), ("through modelyard", proxied)):
        print(f"  {name:<18} p50 {q(xs, 0.5) * 1e3:.2f} ms  p99 {q(xs, 0.99) * 1e3:.2f} ms")
    print(f"  added: p50 {(q(proxied, 0.5) - q(direct, 0.5)) * 1e3:.2f} ms, "
          f"mean {(statistics.mean(proxied) - statistics.mean(direct)) * 1e3:.2f} ms")
    host.stop()

    time.sleep(1)
    left = [p for p in gpu_apps() if p not in before_apps]
    print(f"\nafter stop: processes left on the GPU: {left or 'none'}; "
          f"gpu0 used {smi('gpu=memory.used', '-i', '0')[0][0]} MiB")
    check("nothing left on the GPU after stop", not left)
    print("\nchecks: " + ("all passed" if not failed else "FAILED: " + "; ".join(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
