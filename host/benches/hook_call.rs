//! Hook call cost: LRU through wasm, on contract 0.1 and 0.2, versus the same crate called
//! natively.
//!
//! Prints, for 0 (the fixed cost of a call), 16, 64 and 1,000 loaded models, the median and
//! p99 of one `choose-eviction` call: LRU as it shipped on 0.1 (`policies/testdata/v0_1/lru`)
//! through wasm on a reused pooled instance (the host's normal 0.1 path) and with a fresh
//! instance per call; the `lru` built-in on 0.2 on its one stateful instance, the host's
//! conversion to 0.2's lean records included; and the 0.1 crate natively (including the input
//! copy a wasm call also makes). Run with `cargo bench --bench hook_call`.

#[path = "common/allocator.rs"]
mod allocator;
mod common;

use std::hint::black_box;
use std::time::Duration;

use common::measure;

use modelyard::engine::types as host;
use modelyard::engine::types::{Event, EventKind};
use modelyard::engine::{
    EngineSettings, Hooks, MAX_PENDING_EVENTS, PolicyEngine, PolicySource, sample,
};
use modelyard_policy::EvictionPolicy;
use modelyard_policy::types as guest;

fn to_guest(m: &host::Model) -> guest::Model {
    guest::Model {
        id: m.id.clone(),
        aliases: m.aliases.clone(),
        state: match m.state {
            host::ModelState::Unloaded => guest::ModelState::Unloaded,
            host::ModelState::Loading => guest::ModelState::Loading,
            host::ModelState::Ready => guest::ModelState::Ready,
            host::ModelState::Unloading => guest::ModelState::Unloading,
            host::ModelState::Failed => guest::ModelState::Failed,
        },
        device: m.device.clone(),
        size_bytes: m.size_bytes,
        size_measured: m.size_measured,
        context_tokens: m.context_tokens,
        tags: m.tags.clone(),
        priority: m.priority,
        pinned: m.pinned,
        last_used_ms: m.last_used_ms,
        loaded_at_ms: m.loaded_at_ms,
        use_count: m.use_count,
        load_count: m.load_count,
        in_flight: m.in_flight,
        queued: m.queued,
        errors: m.errors,
        mean_load_ms: m.mean_load_ms,
        mean_latency_ms: m.mean_latency_ms,
    }
}

fn to_guest_request(r: &host::EvictionRequest) -> guest::EvictionRequest {
    guest::EvictionRequest {
        incoming: to_guest(&r.incoming),
        needed_bytes: r.needed_bytes,
        device: r.device.clone(),
        priority: r.priority,
        loaded: r.loaded.iter().map(to_guest).collect(),
        demand: r
            .demand
            .iter()
            .map(|d| guest::TaskDemand {
                task: d.task.clone(),
                requests: d.requests,
            })
            .collect(),
        telemetry: guest::Telemetry {
            now_ms: r.telemetry.now_ms,
            devices: r
                .telemetry
                .devices
                .iter()
                .map(|d| guest::Device {
                    name: d.name.clone(),
                    total_bytes: d.total_bytes,
                    free_bytes: d.free_bytes,
                    utilization_percent: d.utilization_percent,
                })
                .collect(),
            cpu_percent: r.telemetry.cpu_percent,
        },
    }
}

fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn main() {
    let deadline = EngineSettings {
        hook_deadline: Duration::from_secs(1),
        ..Default::default()
    };
    let reused = PolicyEngine::new(deadline.clone()).expect("engine");
    let fresh = PolicyEngine::new(EngineSettings {
        recycle_after: 1,
        ..deadline
    })
    .expect("engine");
    let path = std::path::PathBuf::from(env!("MODELYARD_GUEST_DIR"))
        .join("modelyard_policy_v0_1_lru.wasm");
    let bytes = std::fs::read(&path).expect("the 0.1 LRU test guest is built with the host");
    let lru_reused = reused
        .load("lru-0.1", PolicySource::File(path.clone()), &bytes)
        .expect("loads");
    let lru_fresh = fresh
        .load("lru-0.1", PolicySource::File(path), &bytes)
        .expect("loads");
    let lru_v2 = reused.builtin("lru").expect("built-in").expect("loads");

    println!("choose-eviction, LRU built-in; µs per call");
    println!(
        "{:>7} | {:>12} {:>9} | {:>12} {:>9} | {:>11} {:>9} | {:>12} {:>9} | {:>8} {:>8}",
        "models",
        "0.1 median",
        "0.1 p99",
        "fresh median",
        "fresh p99",
        "0.2 median",
        "0.2 p99",
        "native med.",
        "native p99",
        "0.1/nat.",
        "0.2/nat."
    );
    for n in [0usize, 16, 64, 1000] {
        let iterations = if n >= 1000 { 2_000 } else { 20_000 };
        let req = sample::eviction_request(n);
        let catalogue = sample::catalogue(n);
        let guest_req = to_guest_request(&req);
        let (wm, wp) = measure(iterations, || {
            black_box(
                lru_reused
                    .choose_eviction(black_box(&req), &catalogue)
                    .expect("decides"),
            );
        });
        let (fm, fp) = measure(iterations / 4, || {
            black_box(
                lru_fresh
                    .choose_eviction(black_box(&req), &catalogue)
                    .expect("decides"),
            );
        });
        let (v2m, v2p) = measure(iterations, || {
            black_box(
                lru_v2
                    .choose_eviction(black_box(&req), &catalogue)
                    .expect("decides"),
            );
        });
        let (nm, np) = measure(iterations, || {
            black_box(modelyard_policy_v0_1_lru::Lru::choose_eviction(black_box(
                guest_req.clone(),
            )));
        });
        println!(
            "{n:>7} | {:>12} {:>9} | {:>12} {:>9} | {:>11} {:>9} | {:>12} {:>9} | {:>7.1}x {:>7.1}x",
            micros(wm),
            micros(wp),
            micros(fm),
            micros(fp),
            micros(v2m),
            micros(v2p),
            micros(nm),
            micros(np),
            wm.as_secs_f64() / nm.as_secs_f64(),
            v2m.as_secs_f64() / nm.as_secs_f64()
        );
    }
    select_per_request(&reused);
    observe_rate(&reused);
}

/// `select-model` as every request makes it, through the hooks: the 0.1 `specialization`
/// (asked about every request) against the shipped 0.2 one (asked only about `auto`; a request
/// naming its model is routed by the host without a guest call), with all configured models as
/// candidates.
fn select_per_request(engine: &PolicyEngine) {
    let path = std::path::PathBuf::from(env!("MODELYARD_GUEST_DIR"))
        .join("modelyard_policy_v0_1_specialization.wasm");
    let bytes = std::fs::read(&path).expect("the 0.1 specialization is built with the host");
    let old = std::sync::Arc::new(
        engine
            .load("specialization-0.1", PolicySource::File(path), &bytes)
            .expect("loads"),
    );
    let new = std::sync::Arc::new(
        engine
            .builtin("specialization")
            .expect("built-in")
            .expect("loads"),
    );
    println!("\nselect-model per request, specialization; µs per request");
    println!(
        "{:>7} | {:>11} {:>9} | {:>11} {:>9} | {:>11} {:>9} | {:>11} {:>9}",
        "models", "0.1 auto", "p99", "0.1 by id", "p99", "0.2 auto", "p99", "0.2 by id", "p99"
    );
    for n in [16usize, 64] {
        let candidates = sample::loaded(n);
        let telemetry = sample::telemetry(120_000, 64 << 30, 8 << 30);
        let auto = sample::request();
        let by_id = host::Request {
            model: "m3".into(),
            ..sample::request()
        };
        let mut cells = Vec::new();
        for policy in [&old, &new] {
            let hooks = Hooks::new();
            hooks.set_catalogue(sample::catalogue(n));
            hooks.set(modelyard::engine::Hook::SelectModel, Some(policy.clone()));
            for req in [&auto, &by_id] {
                let (m, p) = measure(20_000, || {
                    black_box(hooks.select_model(black_box(req), &candidates, &telemetry));
                });
                cells.push((m, p));
            }
        }
        print!("{n:>7}");
        for (m, p) in cells {
            print!(" | {:>11} {:>9}", micros(m), micros(p));
        }
        println!();
    }
}

/// Events a 0.2 Rust policy (the `adaptive` built-in) absorbs per second: the queue filled to
/// its bound, then delivered in batches, as the host's flush does off the request path.
fn observe_rate(engine: &PolicyEngine) {
    let adaptive = std::sync::Arc::new(
        engine
            .builtin("adaptive")
            .expect("built-in")
            .expect("loads"),
    );
    let hooks = Hooks::new();
    hooks.set_catalogue(sample::catalogue(64));
    hooks.set_all(&adaptive);
    let kinds = [
        EventKind::Arrived {
            model: "m3".into(),
            task: Some("code".into()),
            priority: 0,
            prompt_tokens: 100,
        },
        EventKind::LoadStarted { model: "m5".into() },
        EventKind::Finished {
            model: "m3".into(),
            latency_ms: 900,
            ttft_ms: 120,
            ok: true,
        },
    ];
    let rounds = 50;
    let mut told = 0u64;
    let mut took = Duration::ZERO;
    for r in 0..rounds {
        for i in 0..MAX_PENDING_EVENTS {
            let kind = kinds[i % kinds.len()].clone();
            hooks.observe(&Event {
                at_ms: (r * MAX_PENDING_EVENTS + i) as u64,
                kind,
            });
        }
        let began = std::time::Instant::now();
        told += hooks.deliver();
        took += began.elapsed();
    }
    println!(
        "\nobserve, adaptive built-in: {told} events told in {:.1} ms: {:.2} M events/s",
        took.as_secs_f64() * 1e3,
        told as f64 / took.as_secs_f64() / 1e6
    );
}
