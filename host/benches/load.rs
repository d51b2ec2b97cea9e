//! The load run: `modelyard serve` as a process on loopback, four real llama-server models
//! with memory for two (the demo's files; run `modelyard setup` first), and 1,000 clients for
//! ten minutes, streamed and plain. It prints what the clients got (answered, 429, 503, other
//! statuses, lost: must be 0), answered latency p50/p99, the host's RSS and open file
//! descriptors at the start and the end, and whether any llama-server outlived the host.
//!
//! `cargo bench --bench load` runs the full size; `-- --clients N --seconds S` a smaller one.
//! The tests run a short form (`tests/load.rs`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use modelyard::cli::setup::{self, Demo};

mod common;
#[path = "common/load.rs"]
mod generator;

const CLIENTS: usize = 1000;
const SECONDS: u64 = 600;

fn arg(name: &str) -> Option<u64> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}

fn main() -> anyhow::Result<()> {
    let clients = arg("--clients").map_or(CLIENTS, |n| n as usize);
    let seconds = arg("--seconds").unwrap_or(SECONDS);
    let demo = Demo::read(&common::demo_dir())?;
    let q4_0 = (demo.smollm2_q4_0.as_ref())
        .ok_or_else(|| anyhow::anyhow!("the demo has no Q4_0 model; run `modelyard setup`"))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let work = tempfile::tempdir()?;
    let config = work.path().join("modelyard.toml");
    std::fs::write(
        &config,
        generator::config(
            &setup::llama_server_cmd(&demo.llama_server),
            &demo.smollm2.display().to_string(),
            &demo.gemma3.display().to_string(),
            &q4_0.display().to_string(),
            &format!("127.0.0.1:{port}"),
        ),
    )?;
    let mut host = Command::new(env!("CARGO_BIN_EXE_modelyard"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.path().join("serve.log"))?)
        .spawn()?;
    let pid = host.id();
    let base = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let up = rt.block_on(async {
        for _ in 0..100 {
            if reqwest::get(format!("{base}/health")).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    anyhow::ensure!(up, "the host did not start");
    let (rss0, fds0) = (generator::rss_kib(pid), generator::open_fds(pid));
    let plan = generator::Plan {
        clients,
        duration: Duration::from_secs(seconds),
        models: ["smollm2", "gemma3", "smollm2-q4_0", "smollm2-b"]
            .map(String::from)
            .to_vec(),
        max_tokens: 8,
        timeout: Duration::from_secs(120),
    };
    eprintln!("load: {clients} clients for {seconds} s against {base}");
    let began = Instant::now();
    let tally = rt.block_on(generator::drive(&base, &plan));
    let took = began.elapsed();
    let (rss1, fds1) = (generator::rss_kib(pid), generator::open_fds(pid));
    let llama = servers_of(pid);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let stopped = host.wait()?;
    std::thread::sleep(Duration::from_millis(500));
    let left: Vec<u32> = llama
        .into_iter()
        .filter(|p| Path::new(&format!("/proc/{p}")).exists())
        .collect();

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
    println!("| host exit after SIGTERM | {stopped} |");
    println!("| llama-server processes left | {} |", left.len());
    for why in &tally.lost_why {
        println!("lost: {why}");
    }
    anyhow::ensure!(
        tally.lost == 0 && left.is_empty(),
        "requests lost or servers left"
    );
    Ok(())
}

/// Every process descended from `host` (its model servers and whatever they started).
fn servers_of(host: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // pid (comm) state ppid ...: comm may hold spaces, so read after its last ')'.
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![host];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.retain(|&p| p != host);
    found
}
