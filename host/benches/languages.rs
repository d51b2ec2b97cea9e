//! Policies in each language, side by side: the template `policy new` writes (LRU eviction,
//! task-based selection, keep-newest compression: the same decisions in every language), built
//! as its README documents with the tools `setup --sdk` installs.
//!
//! Prints, per language: the component's size, the author's build time, the host's compile
//! time (once per version: the host caches the result), and the median and p99 of one call of
//! each hook on a reused instance (`choose-eviction` with 16 loaded models, `select-model` over
//! 8 candidates, `compress-context` on 20 turns). Run with `cargo bench --bench languages`;
//! `MODELYARD_BENCH_LANGS=c,rust` picks languages.

mod common;
#[path = "../../tests/documented.rs"]
mod documented;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::measure;

use documented::build_as_documented;
use modelyard::cli::sdk::{self, Lang};
use modelyard::engine::{EngineSettings, PolicyEngine, PolicySource, sample};

fn micros((median, p99): (Duration, Duration)) -> String {
    format!(
        "{:.1} / {:.1}",
        median.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    )
}

fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{:.0} KB", bytes as f64 / 1024.0)
    }
}

fn main() -> anyhow::Result<()> {
    let chosen = std::env::var("MODELYARD_BENCH_LANGS").unwrap_or_default();
    let langs: Vec<Lang> = Lang::ALL
        .into_iter()
        .filter(|l| chosen.is_empty() || chosen.split(',').any(|c| c.trim() == l.name()))
        .collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let demo_dir = root.join(modelyard::cli::setup::DEFAULT_DEMO_DIR);
    let scratch = tempfile::tempdir()?;
    let engine = PolicyEngine::new(EngineSettings {
        hook_deadline: Duration::from_secs(1),
        ..Default::default()
    })?;
    let eviction = sample::eviction_request(16);
    let (request, candidates, telemetry) = (
        sample::request(),
        sample::loaded(8),
        sample::telemetry(1, 1 << 34, 1 << 33),
    );
    let compression = sample::compression_request(20, 400);
    // Every model the samples name: the 16 loaded ones (the 8 candidates among them) and the
    // incoming one.
    let catalogue = sample::catalogue(16);

    println!(
        "| language | component | build | host compile | choose-eviction µs (median / p99) | select-model µs | compress-context µs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for lang in langs {
        let tools = sdk::install(&demo_dir, lang)?;
        let name = format!("bench{}", lang.name());
        let project = sdk::write_project(&name, lang, scratch.path())?;
        let (wasm, build) = build_as_documented(&project, &tools)?;
        let bytes = std::fs::read(&wasm)?;
        let began = Instant::now();
        let policy = engine.load(&name, PolicySource::File(wasm.clone()), &bytes)?;
        let compile = began.elapsed();
        let evict = measure(2000, || {
            black_box(
                policy
                    .choose_eviction(black_box(&eviction), &catalogue)
                    .expect("call"),
            );
        });
        let select = measure(2000, || {
            black_box(
                policy
                    .select_model(black_box(&request), &candidates, &telemetry, &catalogue)
                    .expect("call"),
            );
        });
        let compress = measure(2000, || {
            let _ = black_box(
                policy
                    .compress_context(black_box(&compression), &catalogue)
                    .expect("call"),
            );
        });
        println!(
            "| {} | {} | {:.1} s | {:.2} s | {} | {} | {} |",
            lang.name(),
            size(bytes.len() as u64),
            build.as_secs_f64(),
            compile.as_secs_f64(),
            micros(evict),
            micros(select),
            micros(compress),
        );
    }
    Ok(())
}
