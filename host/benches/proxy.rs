//! What the proxy adds to a request: the same chat request sent straight to a stand-in upstream
//! (an instant OpenAI-shaped answer on loopback) and through a real host serving it as an
//! `openai` backend, side by side in one run. Sequential requests give the added latency (p50,
//! p99); 32 concurrent clients give throughput against the direct path. A stub upstream is
//! right here: the bench measures the host, not a model. Run with `cargo bench --bench proxy`.

use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::{get, post};
use modelyard::config::Settings;
use serde_json::{Value, json};

/// Sequential requests per path.
const SEQUENTIAL: usize = 3_000;
/// Concurrent clients, and requests each sends.
const CLIENTS: usize = 32;
const PER_CLIENT: usize = 250;

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let upstream = stub().await?;
    let tmp = tempfile::tempdir()?;
    // Places for every client at once: the bench measures the proxy, not the queue.
    let text = format!(
        "listen = \"127.0.0.1:0\"\n[models.stub]\nurl = \"{upstream}/v1\"\nsize = \"1MiB\"\nparallel = 64\n"
    );
    let settings = Settings::from_toml(&text, tmp.path(), "bench")?;
    let (host, _task) = modelyard::cli::serve::start(settings, std::future::pending()).await?;
    let proxied = format!("http://{}", host.addr);
    let http = reqwest::Client::new();
    let body = json!({"model": "stub", "max_tokens": 8,
        "messages": [{"role": "user", "content": "Hi!"}]});
    // Warm both paths (the host loads its model on the first request).
    for base in [&upstream, &proxied] {
        for _ in 0..200 {
            send(&http, base, &body).await?;
        }
    }

    println!(
        "{:<28} {:>10} {:>10} {:>12}",
        "path", "p50 µs", "p99 µs", "req/s (32)"
    );
    let mut rows = Vec::new();
    for (name, base) in [("direct", &upstream), ("through modelyard", &proxied)] {
        let mut took = Vec::with_capacity(SEQUENTIAL);
        for _ in 0..SEQUENTIAL {
            let t = Instant::now();
            send(&http, base, &body).await?;
            took.push(t.elapsed());
        }
        took.sort();
        let q = |p: f64| took[((took.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
        let rate = throughput(&http, base, &body).await?;
        println!(
            "{name:<28} {:>10.0} {:>10.0} {:>12.0}",
            q(0.5),
            q(0.99),
            rate
        );
        rows.push((q(0.5), q(0.99), rate));
    }
    let (d, p) = (rows[0], rows[1]);
    println!(
        "{:<28} {:>10.0} {:>10.0} {:>11.0}%",
        "added by the proxy",
        p.0 - d.0,
        p.1 - d.1,
        100.0 * p.2 / d.2
    );
    Ok(())
}

async fn send(http: &reqwest::Client, base: &str, body: &Value) -> anyhow::Result<()> {
    let resp = http
        .post(format!("{base}/v1/chat/completions"))
        .json(body)
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "status {}", resp.status());
    resp.bytes().await?;
    Ok(())
}

/// Requests per second with [`CLIENTS`] clients sending [`PER_CLIENT`] each.
async fn throughput(http: &reqwest::Client, base: &str, body: &Value) -> anyhow::Result<f64> {
    let began = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (http, base, body) = (http.clone(), base.to_string(), body.clone());
            tokio::spawn(async move {
                for _ in 0..PER_CLIENT {
                    send(&http, &base, &body).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for c in clients {
        c.await??;
    }
    let secs = began.elapsed().max(Duration::from_micros(1)).as_secs_f64();
    Ok((CLIENTS * PER_CLIENT) as f64 / secs)
}

/// An OpenAI-shaped server that answers at once; returns its root URL.
async fn stub() -> anyhow::Result<String> {
    let app = axum::Router::new()
        .route(
            "/v1/models",
            get(|| async { Json(json!({"object": "list", "data": [{"id": "stub"}]})) }),
        )
        .route(
            "/v1/chat/completions",
            post(|| async {
                Json(json!({
                    "id": "c1", "object": "chat.completion", "created": 0, "model": "stub",
                    "choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "Hello!"}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
                }))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}
