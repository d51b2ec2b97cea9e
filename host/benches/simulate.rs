//! Replay speed: one million requests through the real scheduler and a wasm policy on the
//! virtual clock, with the LRU, hybrid and adaptive built-ins. The trace is the 100-function
//! Azure Functions sample (621,128 requests in a day) followed by its first 378,872 requests
//! again as a second day. Prints, per policy and memory size, the policy calls made and the wall time of
//! each of [`RUNS`] replays (their median, best and worst: a shared machine's speed drifts
//! from one minute to the next). Run with `cargo bench --bench simulate`; arguments narrow it
//! to the named policies and memory sizes (`cargo bench --bench simulate -- hybrid 80`).

#[path = "common/allocator.rs"]
mod allocator;

use std::sync::Arc;

use modelyard::engine::PolicyEngine;
use modelyard::sim::catalogue::Catalogue;
use modelyard::sim::report;
use modelyard::sim::run::replay;
use modelyard::sim::trace::{self, Format};

const REQUESTS: usize = 1_000_000;
const DAY_MS: u64 = 86_400_000;
const RUNS: usize = 3;
const POLICIES: [&str; 3] = ["lru", "hybrid", "adaptive"];
/// Device memory of the replays: enough for every model, and a pressed one.
const MEMORIES_GIB: [u64; 2] = [1024, 80];

/// The items of `all` that `only` names, or all of them when it names none.
fn named<T: Copy + ToString>(all: &[T], only: &[String]) -> Vec<T> {
    let named: Vec<T> = (all.iter().copied())
        .filter(|x| only.contains(&x.to_string()))
        .collect();
    if named.is_empty() {
        all.to_vec()
    } else {
        named
    }
}

fn main() -> anyhow::Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/traces/azure-functions-2019/100_inv.csv");
    let mut t = trace::read(Format::AzureFunctions, &[path])?;
    let again: Vec<_> = t
        .arrivals
        .iter()
        .take(REQUESTS - t.arrivals.len())
        .map(|a| {
            let mut a = a.clone();
            a.t_ms += DAY_MS;
            a
        })
        .collect();
    t.arrivals.extend(again);
    let catalogue = Catalogue::build(&t, None)?;
    let engine = PolicyEngine::new(report::engine_settings())?;
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "policy",
        "memory",
        "requests",
        "loads",
        "decisions",
        "median s",
        "best s",
        "worst s",
        "requests/s"
    );
    // `cargo bench` passes `--bench` itself; any other argument narrows the table.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    for name in named(&POLICIES, &only) {
        let policy = Arc::new(engine.builtin(name).expect("built in")?);
        for gib in named(&MEMORIES_GIB, &only) {
            let mut walls = Vec::new();
            let mut m = replay(&t, &catalogue, gib << 30, policy.clone())?;
            walls.push(m.wall_seconds);
            for _ in 1..RUNS {
                let again = replay(&t, &catalogue, gib << 30, policy.clone())?;
                anyhow::ensure!(again.loads == m.loads, "replays of one trace differ");
                walls.push(again.wall_seconds);
                m = again;
            }
            walls.sort_by(f64::total_cmp);
            let median = walls[walls.len() / 2];
            println!(
                "{:<8} {:>6} GiB {:>10} {:>10} {:>10} {:>10.2} {:>10.2} {:>10.2} {:>12.0}",
                name,
                gib,
                m.requests,
                m.loads,
                m.decisions,
                median,
                walls[0],
                walls[walls.len() - 1],
                m.requests as f64 / median
            );
        }
    }
    Ok(())
}
