//! The load run: `modelyard serve` as a process on loopback, four real llama-server models
//! with memory for two (the demo's files; run `modelyard setup` first), and 1,000 clients for
//! ten minutes, streamed and plain. It prints what the clients got (answered, 429, 503, other
//! statuses, lost: must be 0), answered latency p50/p99, the host's RSS and open file
//! descriptors at the start and the end, and whether any llama-server outlived the host.
//!
//! `cargo bench --bench load` runs the full size; `-- --clients N --seconds S` a smaller one.
//! The tests run a short form (`tests/load.rs`).

use std::time::{Duration, Instant};

mod common;
#[path = "common/load.rs"]
mod generator;
#[path = "common/served.rs"]
mod served;

const CLIENTS: usize = 1000;
const SECONDS: u64 = 600;

fn main() -> anyhow::Result<()> {
    let clients = common::arg("--clients").map_or(CLIENTS, |n| n as usize);
    let seconds = common::arg("--seconds").unwrap_or(SECONDS);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let host = served::Served::start(&rt, "")?;
    let (rss0, fds0) = host.rss_and_fds();
    let plan = generator::Plan {
        clients,
        duration: Duration::from_secs(seconds),
        models: generator::MODELS.map(String::from).to_vec(),
        max_tokens: 8,
        timeout: Duration::from_secs(120),
        progress: None,
    };
    eprintln!(
        "load: {clients} clients for {seconds} s against {}",
        host.base
    );
    let began = Instant::now();
    let tally = rt.block_on(generator::drive(&host.base, &plan));
    let took = began.elapsed();
    let (rss1, fds1) = host.rss_and_fds();
    let stopped = host.stop()?;

    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| clients × seconds | {clients} × {seconds} (ran {:.0} s) |",
        took.as_secs_f64()
    );
    println!("| requests | {} |", tally.total());
    println!(
        "| answered (200, whole) | {} ({} streamed) |",
        tally.answered, tally.streamed
    );
    println!("| 429 | {} |", tally.too_many);
    println!("| 503 | {} |", tally.unavailable);
    println!(
        "| refusals without Retry-After | {} |",
        tally.no_retry_after
    );
    println!("| other statuses | {:?} |", tally.other);
    println!("| lost | {} |", tally.lost);
    println!(
        "| answered latency p50 / p99 | {:.0} ms / {:.0} ms |",
        tally.quantile(0.5),
        tally.quantile(0.99)
    );
    println!(
        "| host RSS start → end | {:.1} MiB → {:.1} MiB |",
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0
    );
    println!("| host open fds start → end | {fds0} → {fds1} |");
    stopped.report(&tally)
}
