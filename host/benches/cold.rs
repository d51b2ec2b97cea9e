//! A cold request, split into its parts, on the demo's real llama-server and SmolLM2 (run
//! `modelyard setup` first). Side by side in one run:
//!
//! - the server alone: spawned by the bench and polled every millisecond, the time until its
//!   health check passes (`ready`), then its first token on its first request, then on a
//!   warm one;
//! - through the host: the first token of a request for the unloaded model (`cold`), the load
//!   as the host timed it (spawn, health polls, measuring the footprint), and a warm request.
//!
//! The host's own part of a cold request is `cold − ready − first inference`: the health
//! poll's floor, measuring, waking the request, counting its tokens and forwarding it. Run
//! with `cargo bench --bench cold`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use modelyard::cli::setup::{self, Demo};
use modelyard::config::Settings;
use serde_json::json;

mod common;

/// Cold starts measured per path (the medians are printed).
const ROUNDS: usize = 7;

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let dir = common::demo_dir();
    let demo = Demo::read(&dir)
        .map_err(|e| anyhow::anyhow!("{e:#}: run `modelyard setup` first to provision the demo"))?;
    let http = reqwest::Client::new();

    let mut ready = Vec::new();
    let mut first = Vec::new();
    let mut warm_direct = Vec::new();
    for _ in 0..ROUNDS {
        let (r, f, w) = direct(&demo).await?;
        ready.push(r);
        first.push(f);
        warm_direct.push(w);
    }

    let tmp = tempfile::tempdir()?;
    let cmd = setup::llama_server_cmd(&demo.llama_server).replace('"', "\\\"");
    let text = format!(
        "listen = \"127.0.0.1:0\"\n[models.m]\ncmd = \"{cmd}\"\nfile = \"{}\"\n\
         context_tokens = 2048\nparallel = 2\n",
        demo.smollm2.display()
    );
    let settings = Settings::from_toml(&text, tmp.path(), "bench")?;
    let (host, _task) = modelyard::cli::serve::start(settings, std::future::pending()).await?;
    let base = format!("http://{}", host.addr);
    let mut cold = Vec::new();
    let mut load = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..ROUNDS {
        cold.push(ttft(&http, &format!("{base}/v1"), "m").await?);
        // The host's event for the load: "ready in N ms, ...".
        let status = host.scheduler.status();
        let timed = status
            .events
            .iter()
            .rev()
            .find(|e| e.kind == "loaded")
            .and_then(|e| {
                e.detail
                    .strip_prefix("ready in ")?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .ok_or_else(|| anyhow::anyhow!("no load event"))?;
        load.push(timed);
        warm.push(ttft(&http, &format!("{base}/v1"), "m").await?);
        http.post(format!("{base}/admin/models/m/unload"))
            .send()
            .await?
            .error_for_status()?;
    }

    let (r, f, c) = (median(&ready), median(&first), median(&cold));
    println!("a cold request on llama-server + SmolLM2 135M, median of {ROUNDS} (ms)");
    println!("{:<52} {:>9}", "part", "ms");
    let row = |name: &str, ms: f64| println!("{name:<52} {ms:>9.1}");
    row("server alone: spawn → health check passes", r);
    row("server alone: first token, first request", f);
    row("server alone: first token, warm", median(&warm_direct));
    row("through the host: first token, cold", c);
    row(
        "through the host: the load as the host timed it",
        median(&load),
    );
    row("through the host: first token, warm", median(&warm));
    row(
        "the host's own part (cold − ready − first token)",
        c - r - f,
    );
    Ok(())
}

/// The server alone: ready, first-request TTFT and warm TTFT, in milliseconds.
async fn direct(demo: &Demo) -> anyhow::Result<(f64, f64, f64)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let began = Instant::now();
    let mut child = tokio::process::Command::new(&demo.llama_server)
        .args(["-m", &demo.smollm2.display().to_string()])
        .args([
            "--alias",
            "m",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .args(["-t", "1", "-np", "2", "-c", "4096", "--no-webui"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let health = format!("http://127.0.0.1:{port}/health");
    // A connection each: llama-server may close one it streamed on just after the answer,
    // and the next request on it would find it closed.
    let poll = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    loop {
        let ok = poll
            .get(&health)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        if began.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("llama-server did not become healthy in a minute");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let ready = ms(began.elapsed());
    let base = format!("http://127.0.0.1:{port}/v1");
    let first = ttft(&poll, &base, "m").await?;
    let warm = ttft(&poll, &base, "m").await?;
    child.kill().await?;
    Ok((ready, first, warm))
}

/// Milliseconds from sending a streaming chat request to its first chunk of content.
async fn ttft(http: &reqwest::Client, base: &str, model: &str) -> anyhow::Result<f64> {
    let began = Instant::now();
    let resp = http
        .post(format!("{base}/chat/completions"))
        .json(
            &json!({"model": model, "stream": true, "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "user", "content": "Say hello."}]}),
        )
        .send()
        .await?
        .error_for_status()?;
    let mut body = resp.bytes_stream();
    let mut at = None;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if at.is_none() && chunk.windows(9).any(|w| w == b"\"content\"") {
            at = Some(began.elapsed());
        }
    }
    at.map(ms)
        .ok_or_else(|| anyhow::anyhow!("the answer had no content"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
