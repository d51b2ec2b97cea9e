//! modelyard: local LLMs behind one OpenAI-compatible endpoint, scheduled by WebAssembly
//! policies.
//!
//! The crate is layered one way: [`proxy`] → [`scheduler`] → [`backend`], [`engine`] and
//! [`telemetry`]. The engine runs policy components and knows nothing of HTTP or processes;
//! backends start and stop model servers and know nothing of policies; the scheduler decides
//! when, asking the engine's hooks, and knows nothing of HTTP. [`config`] parses the TOML once
//! into typed settings; [`sim`] replays traces through the same scheduler on a virtual clock;
//! [`pick`] is `modelyard pick`: the endpoint picker of a fleet of hosts over Envoy's `ext_proc`,
//! deciding with `select-model` over every host's models (`pick/decide.rs`).
//!
//! # A tour: one request, from socket to model server and back
//!
//! 1. **The route.** `proxy/mod.rs` builds the axum router: `/v1/*`, `/api/*` and
//!    `/upstream/*` behind the client-key middleware, `/admin/*` behind the admin key,
//!    `/metrics` (`proxy/metrics.rs`, and `proxy/model_server.rs`: the gauges llm-d's endpoint
//!    picker reads), `/health`. Every front door (`proxy/openai.rs`, `proxy/anthropic.rs`,
//!    `proxy/ollama.rs`) hands each request to `proxy/exchange.rs`, which runs the stages below
//!    over one `Exchange` (what the request has become so far) and counts the answer; errors
//!    take the route's own API shape (`proxy/dialect.rs`). `proxy/upstream.rs` is the raw
//!    passthrough, beside the stages; `proxy/dashboard.rs` serves `/ui` (the page in
//!    `proxy/ui/`, compiled in) and its event stream, `/admin/events`.
//! 2. **Parse** (`proxy/parse.rs`): the body within `server.max_body`, the model asked for,
//!    the task and priority from headers or the API key, the client's hash, the sticky key of
//!    each running experiment.
//! 3. **Route** (`proxy/route.rs`): `select-model` chooses among every configured model (a
//!    request naming its model that no policy wants to see skips the call; a policy whose
//!    calls are fast is asked on the request's own thread, any other on the blocking pool).
//!    The records a policy sees are built by `scheduler/view.rs`, the one projection to the contract, and
//!    turned into each contract version's own at the bindings edge (`engine/bindings/v1.rs`,
//!    `v2.rs`: 0.2's lean records index the `engine/catalogue.rs` each 0.2 instance is
//!    configured with); the hook call itself is `engine/hooks/selection.rs`, which validates the
//!    answer and falls back to the native default when the policy fails (`engine/policy.rs`
//!    runs the guest under its deadline and memory cap, on a pooled instance for 0.1 and on the
//!    one stateful instance for 0.2; `engine/hooks/mod.rs` routes experiments).
//! 4. **Acquire** (`proxy/acquire.rs` → `Scheduler::acquire` in `scheduler/mod.rs`): the
//!    model's slot (`scheduler/slot.rs`, a private lifecycle phase with transition methods)
//!    is ready, loading (the request waits in its bounded queue), or unloaded, and then this
//!    request starts the load. `scheduler/room.rs` makes room, asking `choose-eviction`
//!    (`engine/hooks/eviction.rs`) while the load does not fit (and draining busy models, as a
//!    0.2 policy asks or by the host's own rule when idle ones cannot make room), and starts
//!    the server through
//!    the backend's launcher (`backend/command.rs` spawns llama-server; `backend/openai.rs`
//!    uses a server that already runs). The request leaves with a `Lease`
//!    (`scheduler/lease.rs`): while it lives, the model is never evicted.
//! 5. **Fit** (`proxy/fit.rs`): a request the model's server cannot take as it is (Ollama's
//!    API always; Responses or Messages for a server without them) is first rewritten to chat
//!    completions (`proxy/translate/`). The prompt is counted with the server's own tokenizer
//!    through the lease (`backend/tokenize.rs`) and, when it does not fit the window less the
//!    requested output, goes to the model's `context_fallback` (back to acquire) or
//!    `compress-context` (`engine/hooks/compression.rs`) shortens it.
//! 6. **Forward** (`proxy/forward.rs`) to the leased server, with the model name it expects.
//! 7. **Relay** (`proxy/relay.rs`): the answer streams back chunk by chunk (translated back,
//!    when it was, by `proxy/translate/`'s `Translator`); the lease and the
//!    request's timers live in the stream, so the end of the answer (or the client leaving)
//!    releases the model and records latency, time to first token and each experiment's arm.
//!    A request that fails at any stage, and every answer when it ends, becomes a line of the
//!    traffic trace when `[trace] record` is set (`proxy/record.rs` builds it from the
//!    exchange; `recorder.rs` writes and rotates the file off the request path).
//!
//! Meanwhile `scheduler/housekeeping.rs` refreshes telemetry and footprints once a second and
//! offers idle models past their TTL, and memory pressure, to `choose-eviction`;
//! `scheduler/events.rs` tells 0.2 policies that observe what happened (arrivals, finishes,
//! loads, evictions), batched off the request path; `engine/set.rs` hot-reloads the policies
//! folder; `reload.rs` reloads the config file (on a change, SIGHUP or `/admin/config/reload`)
//! and hands a valid one to `scheduler/reconfigure.rs`, which adds, retires and re-tunes
//! models in place (slots are only ever added, so an index never changes its model).
//!
//! # Where to add things
//! - **A hook**: the WIT (a new contract version beside the frozen ones), its bindings and
//!   conversions in `engine/bindings/`, one file under `engine/hooks/` (entry point, guest call, rules,
//!   fallback, smoke sample), the variant in `engine::Hook` and the match arms the compiler
//!   then asks for (`engine/hooks/mod.rs`, `engine/policy.rs`), the SDK helpers, and the
//!   caller that asks it. Everything that lists hooks iterates `Hook::ALL` or a `HookMap`.
//! - **A backend kind**: its typed settings in `config/mod.rs` and their checks in
//!   `config/validate.rs` (the raw keys in `config/raw.rs`), one file under `backend/` with an
//!   `Instance` (and a tokenizer if the server has one), and its arms in `backend/mod.rs`'s
//!   launcher and `scheduler/status.rs`.
//! - **A route**: the line in `proxy/mod.rs`; for one that takes the request path, a `Route`
//!   variant in `proxy/exchange.rs` (its name, upstream path, dialect and capability), its
//!   field checks in the parse stage and its arms in the fit stage; for another API, a
//!   `Front` and a file in `proxy/translate/`; the stages do the rest.
//! - **A trace format**: a `Format` variant and its reader in `sim/trace.rs`.
//! - **A config key**: the raw key in `config/raw.rs`, its check in `config/validate.rs`, and
//!   in `reload.rs` or `scheduler/reconfigure.rs` whether a reload applies it at once, at a
//!   model's restart, or only at the host's next start.
//!
//! The commands (`serve`, `models`, `policy`, `setup`, `simulate`, `import`) sit beside the runtime in
//! [`cli`], one file each; `main.rs` only parses the command line and dispatches.

pub mod backend;
pub mod cli;
pub mod config;
pub mod discover;
pub mod engine;
pub mod estimate;
#[doc(hidden)]
pub mod fuzzing;
pub mod pick;
pub mod proxy;
pub mod recorder;
pub mod reload;
pub mod scheduler;
pub mod sim;
pub mod telemetry;
