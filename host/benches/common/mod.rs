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
