"""llama-server's command line over the prebuilt llama.cpp server in the `xllamacpp` wheel.

Written by `modelyard setup` beside the demo's virtual environment (the first line names its
Python), so that a model's `cmd` reads the same whichever llama-server the demo runs. It takes
the subset of llama-server's flags below and refuses any other with a clear error: a flag it
dropped silently would serve a model other than the one configured. Router mode (`--models-dir`)
and everything else llama-server has need the source build: `modelyard setup --from-source`.
"""

import signal
import sys
import threading

# flag -> (attribute path on CommonParams, converter); a converter of None marks a switch.
VALUED = {
    ("-m", "--model"): ("model.path", str),
    ("-a", "--alias"): ("model_alias", lambda v: set(v.split(","))),
    ("--host",): ("hostnames", lambda v: [v]),
    ("--port",): ("port", int),
    ("-t", "--threads"): ("cpuparams.n_threads", int),
    ("-tb", "--threads-batch"): ("cpuparams_batch.n_threads", int),
    ("-np", "--parallel"): ("n_parallel", int),
    ("-c", "--ctx-size"): ("n_ctx", int),
    ("-b", "--batch-size"): ("n_batch", int),
    ("-ub", "--ubatch-size"): ("n_ubatch", int),
    ("-n", "--n-predict"): ("n_predict", int),
    ("-ngl", "--gpu-layers", "--n-gpu-layers"): ("n_gpu_layers", int),
    ("--pooling",): ("pooling_type", "pooling"),
    ("--api-key",): ("api_keys", lambda v: [v]),
    ("--timeout", "-to"): ("timeout_read", int),
}
SWITCHES = {
    ("--no-webui",): ("ui", False),
    ("--embedding", "--embeddings"): ("embedding", True),
    ("--jinja",): ("use_jinja", True),
    ("--no-jinja",): ("use_jinja", False),
    ("--metrics",): ("endpoint_metrics", True),
    ("--slots",): ("endpoint_slots", True),
    ("--no-slots",): ("endpoint_slots", False),
    ("--no-warmup",): ("warmup", False),
    ("--cont-batching", "-cb"): ("cont_batching", True),
    ("--no-cont-batching", "-nocb"): ("cont_batching", False),
}


def fail(message):
    print(f"llama-server (prebuilt, xllamacpp): {message}", file=sys.stderr)
    sys.exit(2)


def lookup(table, flag):
    for names, target in table.items():
        if flag in names:
            return target
    return None


def assign(params, path, value):
    *parents, last = path.split(".")
    target = params
    for name in parents:
        target = getattr(target, name)
    setattr(target, last, value)


def parse(xlc, argv):
    params = xlc.CommonParams()
    params.hostnames = ["127.0.0.1"]
    params.port = 8080
    i = 0
    while i < len(argv):
        flag, inline = (argv[i].split("=", 1) + [None])[:2] if argv[i].startswith("--") else (argv[i], None)
        if flag in ("-h", "--help"):
            print(__doc__)
            print("flags:", " ".join(n for names in (*VALUED, *SWITCHES) for n in names))
            sys.exit(0)
        if flag == "--version":
            print(f"xllamacpp {xlc.__version__}")
            sys.exit(0)
        if flag == "--reranking" or flag == "--rerank":
            params.embedding = True
            params.pooling_type = xlc.llama_pooling_type.LLAMA_POOLING_TYPE_RANK
            i += 1
            continue
        switch = lookup(SWITCHES, flag)
        if switch is not None:
            assign(params, *switch)
            i += 1
            continue
        valued = lookup(VALUED, flag)
        if valued is None:
            fail(f"{flag} is not supported here; `modelyard setup --from-source` builds the full llama-server")
        if inline is None:
            i += 1
            if i >= len(argv):
                fail(f"{flag} needs a value")
            inline = argv[i]
        path, convert = valued
        try:
            if convert == "pooling":
                value = getattr(xlc.llama_pooling_type, f"LLAMA_POOLING_TYPE_{inline.upper()}")
            else:
                value = convert(inline)
        except (ValueError, AttributeError):
            fail(f"{flag} {inline!r} is not a valid value")
        assign(params, path, value)
        i += 1
    if not params.model.path:
        fail("-m FILE is required")
    return params


def main():
    import xllamacpp as xlc

    params = parse(xlc, sys.argv[1:])
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # The server listens from its own native threads once it is made; it lives as long as `server`.
    server = xlc.Server(params)
    print(f"llama-server (prebuilt): listening on {server.listening_address}", file=sys.stderr, flush=True)
    stop.wait()


if __name__ == "__main__":
    main()
