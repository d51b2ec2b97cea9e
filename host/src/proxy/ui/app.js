// modelyard's dashboard: one event stream (/admin/events) drives every panel; buttons call
// the admin routes; the playground streams a chat completion. Text is always set as text,
// never as HTML, so nothing a model or a config says can run here.
"use strict";

const $ = (id) => document.getElementById(id);
// From the origin, never the page's URL: a page opened as http://user:key@host/ui could not
// fetch relative URLs (they would carry the credentials); the browser's own credentials for
// the origin still go with each request.
const at = (path) => `${location.origin}${path}`;
const state = { models: null, policies: null, experiments: null, received: 0, abort: null };

function keys() {
  return { admin: $("admin-key").value.trim(), api: $("api-key").value.trim() };
}

function headers(key) {
  const h = { "content-type": "application/json" };
  if (key) h.authorization = `Bearer ${key}`;
  return h;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function mib(bytes) {
  return `${Math.round(bytes / 1048576)} MiB`;
}

function ago(ms) {
  if (ms == null) return "–";
  const s = Math.floor(ms / 1000);
  return s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s` : `${Math.floor(s / 3600)}h`;
}

function meter(used, of, label) {
  const pct = of > 0 ? Math.min(100, (100 * used) / of) : 0;
  const fill = el("span");
  // Through the CSSOM: the page's content security policy forbids inline style attributes.
  fill.style.width = `${pct.toFixed(1)}%`;
  return el("span", { class: "meter", role: "meter", "aria-valuemin": "0", "aria-valuemax": String(of),
    "aria-valuenow": String(used), "aria-label": label }, fill);
}

// --- the event stream -------------------------------------------------------------------

// Reads a server-sent-event body, calling `onEvent(name, data)` for each event; returns when
// the body ends or `onEvent` returns true.
async function readEvents(resp, onEvent) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    // Normalised on the whole buffer, so that a CRLF split across two reads is one too.
    buf = (buf + value).replaceAll("\r\n", "\n");
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let name = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trimStart();
      }
      if (data && onEvent(name, data)) {
        await reader.cancel();
        return;
      }
    }
  }
}

async function connect() {
  if (state.abort) state.abort.abort();
  const abort = new AbortController();
  state.abort = abort;
  $("connection").textContent = "connecting…";
  try {
    const resp = await fetch(at("/admin/events"), { headers: headers(keys().admin), signal: abort.signal });
    if (!resp.ok) {
      const body = await resp.json().catch(() => ({}));
      $("connection").textContent = `not connected: ${resp.status} ${body?.error?.message ?? ""}`;
      return;
    }
    $("connection").textContent = "live";
    await readEvents(resp, (name, data) => { receive(name, JSON.parse(data)); });
    $("connection").textContent = "disconnected; reconnecting…";
  } catch (e) {
    if (abort.signal.aborted) return;
    $("connection").textContent = `disconnected (${e.message}); reconnecting…`;
  }
  setTimeout(() => { if (state.abort === abort) connect(); }, 2000);
}

function receive(name, data) {
  state[name] = data;
  if (name === "models") {
    state.received = performance.now();
    renderModels();
    renderEvents();
    renderPicker();
  } else if (name === "policies") renderPolicies();
  else if (name === "experiments") renderExperiments();
}

// --- models -----------------------------------------------------------------------------

function renderModels() {
  const s = state.models;
  const devices = $("devices");
  devices.replaceChildren(...s.devices.map((d) => el("div", { class: "device" },
    el("strong", {}, d.name), " ",
    meter(d.models_bytes, d.capacity_bytes, `${d.name}: models use ${mib(d.models_bytes)} of ${mib(d.capacity_bytes)}`),
    `${mib(d.models_bytes)} of ${mib(d.capacity_bytes)} for models`)));
  const cap = Object.fromEntries(s.devices.map((d) => [d.name, d.capacity_bytes]));
  const since = performance.now() - state.received;
  $("models").tBodies[0].replaceChildren(...s.models.map((m) => {
    const loaded = m.state === "ready";
    const action = loaded
      ? el("button", { type: "button", onclick: () => act(m.id, "unload"), "aria-label": `Unload ${m.id}` }, "Unload")
      : el("button", { type: "button", onclick: () => act(m.id, "load"), "aria-label": `Load ${m.id}` }, "Load");
    if (m.state === "loading" || m.state === "unloading") action.disabled = true;
    return el("tr", { "data-model": m.id },
      el("th", { scope: "row" }, m.id, m.aliases.length ? el("small", {}, ` (${m.aliases.join(", ")})`) : ""),
      el("td", { class: `state state-${m.state}` }, m.state, m.pinned ? " · pinned" : ""),
      el("td", {}, m.device),
      el("td", {}, meter(m.size_bytes, cap[m.device] ?? 0, `${m.id}: ${mib(m.size_bytes)}`),
        `${mib(m.size_bytes)}${m.size_measured ? "" : " est."}`),
      el("td", { class: "in-flight" }, m.in_flight),
      el("td", {}, m.queued),
      el("td", { class: "idle", "data-idle": m.idle_ms ?? "" }, m.idle_ms == null ? "–" : ago(m.idle_ms + since)),
      el("td", {}, m.use_count),
      el("td", {}, m.load_count, m.mean_load_ms ? ` · ${m.mean_load_ms} ms` : ""),
      el("td", {}, action));
  }));
}

async function act(id, verb) {
  $("action-status").textContent = `${verb === "load" ? "loading" : "unloading"} ${id}…`;
  const resp = await fetch(at(`/admin/models/${encodeURIComponent(id)}/${verb}`), { method: "POST", headers: headers(keys().admin) });
  const body = await resp.json().catch(() => ({}));
  $("action-status").textContent = resp.ok ? `${id}: ${body.state}` : `${id}: ${body?.error?.message ?? resp.status}`;
}

function renderEvents() {
  const s = state.models;
  $("events").replaceChildren(...[...s.events].reverse().map((e) => el("li", { class: `kind-${e.kind}` },
    el("time", {}, `${ago(s.uptime_ms - e.at_ms)} ago`), " ",
    el("strong", {}, e.kind), ` ${e.model}`, e.detail ? `: ${e.detail}` : "")));
}

function renderPicker() {
  const pick = $("play-model");
  const ids = state.models.models.map((m) => m.id);
  const have = [...pick.options].map((o) => o.value);
  if (have.join() === ["auto", ...ids].join()) return;
  const chosen = pick.value;
  pick.replaceChildren(...["auto", ...ids].map((id) => el("option", { value: id }, id)));
  if (chosen) pick.value = chosen;
}

// --- policies and experiments -----------------------------------------------------------

function renderPolicies() {
  const p = state.policies;
  $("policies").tBodies[0].replaceChildren(...p.hooks.map((h) => el("tr", {},
    el("th", { scope: "row" }, h.hook),
    el("td", {}, h.policy ?? h.served_by),
    el("td", {}, h.calls ?? "–"),
    el("td", {}, h.failures ?? "–"),
    el("td", {}, h.calls ? `≤${h.latency_p50_us_at_most} / ≤${h.latency_p99_us_at_most} µs` : "–"),
    el("td", {}, `${p.hook_deadline_us} µs${h.p99_over_deadline ? " (p99 past it)" : ""}`),
    el("td", {}, h.quarantined ? "yes" : "no"))));
}

function interval(d, unit) {
  if (!d) return "not enough data";
  return `${d.difference.toFixed(2)} ${unit} [${d.low.toFixed(2)}, ${d.high.toFixed(2)}]${d.significant ? " significant" : ""}`;
}

function renderExperiments() {
  const list = state.experiments.experiments;
  const box = $("experiments");
  // Not while the user is in one of its fields (a weight half typed would be lost); it
  // redraws when the focus leaves.
  if (box.contains(document.activeElement) && document.activeElement.tagName === "INPUT") {
    state.experimentsWaiting = true;
    return;
  }
  state.experimentsWaiting = false;
  if (!list.length) {
    box.replaceChildren(el("p", { class: "hint" }, "No experiment runs."));
    return;
  }
  box.replaceChildren(...list.map((x) => {
    const weight = el("input", { type: "number", min: "0", max: "1", step: "0.05", value: String(x.weight), "aria-label": `Weight of ${x.candidate} on ${x.hook}` });
    const arm = (name, a) => el("li", {}, `${name}: ${a.requests} requests, ${a.hook_calls} calls, ${a.failures} failures, ${a.loads} loads, mean latency ${a.latency_ms.mean.toFixed(1)} ms`);
    return el("div", { class: "arm", "data-hook": x.hook },
      el("h3", {}, `${x.hook}: ${x.candidate} (${x.mode}, weight ${x.weight})`),
      el("ul", {}, arm("incumbent", x.incumbent_arm), arm("candidate", x.candidate_arm),
        el("li", {}, `latency difference: ${interval(x.differences.latency_ms, "ms")}`),
        el("li", {}, `time to first token difference: ${interval(x.differences.ttft_ms, "ms")}`),
        x.shadow ? el("li", {}, `shadow: ${x.shadow.agreed} of ${x.shadow.compared} decisions agreed`) : ""),
      el("form", { onsubmit: (ev) => { ev.preventDefault(); weight.blur(); experiment(x.hook, "weight", { weight: Number(weight.value) }); } },
        el("label", {}, "Weight", weight),
        el("button", { type: "submit", "data-action": "weight" }, "Reweight"),
        el("button", { type: "button", "data-action": "stop", onclick: () => experiment(x.hook, "stop") }, "Stop"),
        el("button", { type: "button", "data-action": "promote", onclick: () => experiment(x.hook, "promote") }, "Promote")));
  }));
}

async function experiment(hook, verb, body) {
  const url = verb ? `/admin/experiments/${hook}/${verb}` : "/admin/experiments";
  const resp = await fetch(at(url), { method: "POST", headers: headers(keys().admin), body: JSON.stringify(body ?? {}) });
  const answer = await resp.json().catch(() => ({}));
  $("experiment-status").textContent = resp.ok ? `${hook}: ${verb ?? "started"}` : `${hook}: ${answer?.error?.message ?? resp.status}`;
}

// --- playground -------------------------------------------------------------------------

async function play(ev) {
  ev.preventDefault();
  const out = $("play-output");
  out.textContent = "";
  const resp = await fetch(at("/v1/chat/completions"), {
    method: "POST",
    headers: headers(keys().api),
    body: JSON.stringify({ model: $("play-model").value || "auto", stream: true, max_tokens: Number($("play-max").value),
      messages: [{ role: "user", content: $("play-message").value }] }),
  });
  if (!resp.ok) {
    const body = await resp.json().catch(() => ({}));
    out.textContent = `error ${resp.status}: ${body?.error?.message ?? ""}`;
    return;
  }
  await readEvents(resp, (_, data) => {
    if (data === "[DONE]") return true;
    const delta = JSON.parse(data).choices?.[0]?.delta?.content;
    if (delta) out.append(delta);
    return false;
  });
  out.dataset.done = "true";
}

// --- wiring -----------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  for (const id of ["admin-key", "api-key"]) {
    $(id).value = sessionStorage.getItem(id) ?? "";
  }
  $("keys").addEventListener("submit", (ev) => {
    ev.preventDefault();
    for (const id of ["admin-key", "api-key"]) sessionStorage.setItem(id, $(id).value);
    connect();
  });
  $("start-experiment").addEventListener("submit", (ev) => {
    ev.preventDefault();
    experiment($("exp-hook").value, null, { hook: $("exp-hook").value, candidate: $("exp-candidate").value,
      weight: Number($("exp-weight").value), mode: $("exp-mode").value });
  });
  $("playground").addEventListener("submit", play);
  $("experiments").addEventListener("focusout", () => {
    if (state.experimentsWaiting) setTimeout(renderExperiments, 0);
  });
  // Idle times advance between the host's updates, without redrawing the rows (a redraw
  // would take the keyboard focus off a button).
  setInterval(() => {
    const since = performance.now() - state.received;
    for (const td of document.querySelectorAll("td.idle[data-idle]")) {
      if (td.dataset.idle !== "") td.textContent = ago(Number(td.dataset.idle) + since);
    }
  }, 1000);
  connect();
});
