//! modelyard's one integration-test binary.

// A panic is how a test fails.
#![allow(clippy::unwrap_used)]
// End-to-end tests hold a process-wide lock for their whole run, across awaits, so that real
// model servers run one test at a time; each test has its own runtime, so nothing deadlocks.
#![allow(clippy::await_holding_lock)]

// Shared helpers: engines with test limits, guest files built by the host's build script.
mod util;

// Each built-in strategy's decisions on hand-built scenarios, through the real wasm path.
mod strategies;
mod trace;

// The seed built-ins on contract 0.2 against their 0.1 builds, decision by decision.
mod ported;

// The simulator on the shipped traces: bounds around every policy, the command line.
mod simulate;

// Deadline and memory cap (obeyed/violated pairs), the evil guest's every mode, quarantine.
mod limits;

// Contract 0.2 beside 0.1: stateful instances, the catalogue, resets, the lifetime memory cap,
// interests, and answers by index.
mod contract;

// `modelyard policy check|list` on built-ins, a non-wasm file, a core module, a foreign contract.
mod policy_cli;

// `modelyard import llama-swap` on llama-swap's own example configs, as a user runs it.
mod import_cli;

// Every shell block of the README and the SDK pages, run as written (offline, or against the
// demo served on :8080), unless the page says why not.
mod docs;

// Keys compared whole; a reachable address refused without keys unless --allow-open; policies
// pinned by digest; components importing files, sockets or a clock refused.
mod security;

// Faults between the host and its model servers, reproduced on loopback.
mod faults;

// The fuzz targets over their seed corpora and mutations of them (the fuzzer's smoke run).
mod fuzz_corpus;

// The load run's short form: 200 clients, four models, room for two; nothing lost.
mod load;

// The dashboard in headless Chromium: live state, unload, a shadow experiment, the playground.
mod dashboard;

// The real demo set-up (llama-server, real models) and a host harness for end-to-end tests.
mod demo;

// What a new user meets first: a model on the prebuilt llama-server, the demo's config swapping.
mod first_start;

// Serving end to end: eviction through a wasm policy, single flight, in-flight safety, pinned
// models under pressure, TTL, a backend killed mid-request, footprints, no orphans.
mod serving;

// Models found in folders and an Ollama-format store: served, broken finds reported, tables
// win, a rescan, `import ollama`.
mod discover;

// Footprint estimates before a load: the GGUF header against real servers' RSS, remembered
// footprints after a restart, a load that makes room before it starts.
mod estimates;

// Telemetry: CPU-only without a driver; GPU memory and per-process VRAM where NVML answers.
mod telemetry;

// The proxy end to end: the official openai client, select-model, compress-context, every error
// status, auth, admin, metrics, a streaming client that leaves.
mod proxy;

// The clients people run: openai on Responses, anthropic on Messages, rerank, capability
// errors, bad input on the new routes in each API's shape.
mod clients;

// More than one machine: two hosts speak the Gateway API Inference Extension's model-server
// protocol on /metrics, parsed by Prometheus's own parser.
mod model_server;

// `modelyard pick` over two real hosts, a gRPC client playing Envoy: each model goes where it is
// loaded, `auto` where the policy says, the subset hint and the fallback list hold.
mod pick;

// Recording live traffic: no content in the trace, and a replay that does what serving did.
mod recording;

// Hot reload under traffic, broken files, the compile cache.
mod reload;

// The config file reloaded without a restart: live edits, a command changed mid-stream, bad
// and deleted files, SIGHUP.
mod config_reload;

// A/B experiments: sticky splits, weight changes, shadow mode, per-arm results.
mod experiments;

// The policy SDKs: each template built from source with the documented command, checked, and
// compared with the Rust built-ins' decisions.
mod sdk;

// Reads a template's README for its build and component, and builds as it says (the languages
// bench includes this file too).
mod documented;
