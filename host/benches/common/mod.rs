//! What the benchmarks share.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where `modelyard setup` provisioned the demo: `MODELYARD_DEMO_DIR`, else `target/demo`.
#[allow(dead_code)] // not every bench runs the demo
pub fn demo_dir() -> PathBuf {
    std::env::var_os("MODELYARD_DEMO_DIR").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(modelyard::cli::setup::DEFAULT_DEMO_DIR)
        },
        Into::into,
    )
}

/// The number after `--NAME` on the command line (`cargo bench --bench load -- --clients 10`).
#[allow(dead_code)] // not every bench takes arguments
pub fn arg(name: &str) -> Option<u64> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}

#[allow(dead_code)] // not every bench times a closure
/// Median and p99 of `iterations` timed runs of `f`, after a warm-up.
pub fn measure(iterations: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..iterations / 10 + 1 {
        f();
    }
    let mut samples: Vec<Duration> = (0..iterations)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
}
