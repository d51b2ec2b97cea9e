//! The soak: `modelyard serve` as a process on loopback over the load runs' four real models
//! (memory for two) for an hour of steady mixed traffic (streamed and plain), while a live A/B
//! experiment runs on `choose-eviction` and, every minute, the policy in the policies folder is
//! replaced (LRU and LFU in turn) and the config is reloaded (SIGHUP). It samples the host's
//! RSS and open file descriptors every minute and prints the curve, then what the clients got
//! (lost must be 0) and whether any model server outlived the host. Flat means the last
//! quarter's figures sit where the first quarter's (after the first minute's warm-up) did.
//!
//! `cargo bench --bench soak` runs an hour with 16 clients; `-- --clients N --seconds S
//! --every S` a smaller one. Run `modelyard setup` first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

mod common;
#[path = "common/load.rs"]
mod generator;
#[path = "common/served.rs"]
mod served;

const CLIENTS: usize = 16;
const SECONDS: u64 = 3600;
/// How often a policy is replaced, the config reloaded and the host sampled.
const EVERY: u64 = 60;

/// A built-in's component, as the build left it for the tests.
fn guest(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("MODELYARD_GUEST_DIR")).join(format!("modelyard_policy_{name}.wasm"))
}

/// One sample of the host.
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
    requests: u64,
    reloads: u64,
}

fn main() -> anyhow::Result<()> {
    let clients = common::arg("--clients").map_or(CLIENTS, |n| n as usize);
    let seconds = common::arg("--seconds").unwrap_or(SECONDS);
    let every = Duration::from_secs(common::arg("--every").unwrap_or(EVERY).max(1));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The policies folder sits beside the config; it starts with LRU as `mine`.
    let policies_dir = tempfile::tempdir()?;
    let mine = policies_dir.path().join("mine.wasm");
    std::fs::copy(guest("lru"), &mine)?;
    let host = served::Served::start(
        &rt,
        &format!("[policies]\ndir = \"{}\"\n", policies_dir.path().display()),
    )?;
    let http = reqwest::Client::new();
    let started = rt.block_on(
        http.post(format!("{}/admin/experiments", host.base))
            .json(&json!({"hook": "choose-eviction", "candidate": "lfu", "mode": "live", "sticky": "request"}))
            .send(),
    )?;
    anyhow::ensure!(
        started.status().is_success(),
        "the experiment did not start: {}",
        rt.block_on(started.text())?
    );

    let progress = Arc::new(AtomicU64::new(0));
    let plan = generator::Plan {
        clients,
        duration: Duration::from_secs(seconds),
        models: generator::MODELS.map(String::from).to_vec(),
        max_tokens: 8,
        timeout: Duration::from_secs(120),
        progress: Some(progress.clone()),
    };
    eprintln!(
        "soak: {clients} clients for {seconds} s against {}, a policy swap and a config reload every {every:?}",
        host.base
    );
    let began = Instant::now();
    let traffic = {
        let base = host.base.clone();
        rt.spawn(async move { generator::drive(&base, &plan).await })
    };
    let mut samples = Vec::new();
    let (rss, fds) = host.rss_and_fds();
    samples.push(Sample {
        at: Duration::ZERO,
        rss_kib: rss,
        fds,
        requests: 0,
        reloads: 0,
    });
    let mut reloads = 0u64;
    while began.elapsed() + every <= Duration::from_secs(seconds) {
        std::thread::sleep((every * (reloads as u32 + 1)).saturating_sub(began.elapsed()));
        reloads += 1;
        // Replace the file by a rename, as an editor or a deploy does.
        let next = policies_dir.path().join("next.tmp");
        std::fs::copy(guest(if reloads % 2 == 1 { "lfu" } else { "lru" }), &next)?;
        std::fs::rename(&next, &mine)?;
        host.signal(nix::sys::signal::Signal::SIGHUP)?;
        let (rss, fds) = host.rss_and_fds();
        let sample = Sample {
            at: began.elapsed(),
            rss_kib: rss,
            fds,
            requests: progress.load(Ordering::Relaxed),
            reloads,
        };
        eprintln!(
            "soak: {:>5.0} s  RSS {:>6.1} MiB  fds {:>4}  requests {:>7}",
            sample.at.as_secs_f64(),
            rss as f64 / 1024.0,
            fds,
            sample.requests
        );
        samples.push(sample);
    }
    let tally = rt.block_on(traffic)?;
    let experiment: serde_json::Value = rt.block_on(async {
        http.get(format!("{}/admin/experiments", host.base))
            .send()
            .await?
            .json()
            .await
    })?;
    let policies: serde_json::Value = rt.block_on(async {
        http.get(format!("{}/admin/policies", host.base))
            .send()
            .await?
            .json()
            .await
    })?;
    let (rss, fds) = host.rss_and_fds();
    samples.push(Sample {
        at: began.elapsed(),
        rss_kib: rss,
        fds,
        requests: tally.total(),
        reloads,
    });
    let stopped = host.stop()?;

    println!("| at | RSS | open fds | requests so far | policy swaps + config reloads |");
    println!("|---:|---:|---:|---:|---:|");
    for s in &samples {
        println!(
            "| {:.0} s | {:.1} MiB | {} | {} | {} |",
            s.at.as_secs_f64(),
            s.rss_kib as f64 / 1024.0,
            s.fds,
            s.requests,
            s.reloads
        );
    }
    let quarter = (samples.len() / 4).max(1);
    let mean =
        |xs: &[Sample], f: fn(&Sample) -> f64| xs.iter().map(f).sum::<f64>() / xs.len() as f64;
    let warm = &samples[1.min(samples.len() - 1)..];
    let (first, last) = (
        &warm[..quarter.min(warm.len())],
        &warm[warm.len().saturating_sub(quarter)..],
    );
    println!();
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| RSS, first quarter → last quarter (mean) | {:.1} MiB → {:.1} MiB |",
        mean(first, |s| s.rss_kib as f64) / 1024.0,
        mean(last, |s| s.rss_kib as f64) / 1024.0
    );
    println!(
        "| open fds, first quarter → last quarter (mean) | {:.0} → {:.0} |",
        mean(first, |s| s.fds as f64),
        mean(last, |s| s.fds as f64)
    );
    println!(
        "| RSS max | {:.1} MiB |",
        samples.iter().map(|s| s.rss_kib).max().unwrap_or(0) as f64 / 1024.0
    );
    println!("| requests | {} |", tally.total());
    println!(
        "| answered (200, whole) | {} ({} streamed) |",
        tally.answered, tally.streamed
    );
    println!("| 429 / 503 | {} / {} |", tally.too_many, tally.unavailable);
    println!("| other statuses | {:?} |", tally.other);
    println!("| lost | {} |", tally.lost);
    println!(
        "| answered latency p50 / p99 | {:.0} ms / {:.0} ms |",
        tally.quantile(0.5),
        tally.quantile(0.99)
    );
    let arms = &experiment["experiments"][0];
    println!(
        "| experiment requests: incumbent / candidate (lfu) | {} / {} |",
        arms["incumbent_arm"]["requests"], arms["candidate_arm"]["requests"]
    );
    println!(
        "| policy compiles (compiled / from the cache) | {} / {} |",
        policies["compiles"]["compiled"], policies["compiles"]["from_cache"]
    );
    stopped.report(&tally)
}
