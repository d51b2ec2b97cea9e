//! What the proxy adds to a request: the same chat request sent straight to a stand-in upstream
//! (an instant OpenAI-shaped answer on loopback) and through real hosts serving it as `openai`
//! backends, side by side in one run: a host with the one model, and a host with 64 (asked by
//! id, which the host routes without a `select-model` call, and as `auto`, which asks the
//! `specialization` built-in with all 64 as candidates). Sequential requests, interleaved
//! across the paths, give the added latency (p50, p99); 32 concurrent clients give throughput
//! against the direct path. A bare forwarder (read the body, send it on with the same HTTP
//! client, stream the answer back) runs beside them as the floor: what one more hop costs on
//! this runtime and machine, under any proxy. A stub upstream is right here: the bench
//! measures the host, not a model. Run with `cargo bench --bench proxy`.

#[path = "common/allocator.rs"]
mod allocator;

use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::{get, post};
use modelyard::config::Settings;
use serde_json::{Value, json};

/// Sequential requests per path.
const SEQUENTIAL: usize = 1_000;
/// Concurrent clients, and requests each sends.
const CLIENTS: usize = 32;
const PER_CLIENT: usize = 250;
/// Models configured on the larger host.
const MANY: usize = 64;

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

/// A host serving `models` stand-ins for `upstream`; returns its root URL.
async fn host(upstream: &str, models: usize, dir: &std::path::Path) -> anyhow::Result<String> {
    // Nothing to remember across runs: no state folder.
    let mut text = String::from("listen = \"127.0.0.1:0\"\nstate_dir = \"\"\n");
    // Places for every client at once: the bench measures the proxy, not the queue.
    for i in 0..models {
        text.push_str(&format!(
            "[models.stub{i:02}]\nurl = \"{upstream}/v1\"\nsize = \"1MiB\"\nparallel = 64\n"
        ));
    }
    let settings = Settings::from_toml(&text, dir, "bench")?;
    // Its task, detached, serves until the bench exits.
    let (host, _task) = modelyard::cli::serve::start(settings, std::future::pending()).await?;
    Ok(format!("http://{}", host.addr))
}

async fn run() -> anyhow::Result<()> {
    let upstream = stub().await?;
    let tmp = tempfile::tempdir()?;
    let one = host(&upstream, 1, tmp.path()).await?;
    let many = host(&upstream, MANY, tmp.path()).await?;
    let http = reqwest::Client::new();
    let ask = |model: &str| {
        json!({"model": model, "max_tokens": 8,
            "messages": [{"role": "user", "content": "Hi!"}]})
    };
    let bare = bare(&upstream).await?;
    let paths = [
        ("direct", upstream.clone(), ask("stub00")),
        ("bare forwarder (floor)", bare, ask("stub00")),
        ("through modelyard, 1 model", one, ask("stub00")),
        ("64 models, by id", many.clone(), ask("stub07")),
        ("64 models, auto", many, ask("auto")),
    ];
    // Warm every path (a host loads its model on the first request).
    for (_, base, body) in &paths {
        for _ in 0..200 {
            send(&http, base, body).await?;
        }
    }
    let mut took = vec![Vec::with_capacity(SEQUENTIAL); paths.len()];
    for i in 0..SEQUENTIAL {
        for k in 0..paths.len() {
            // A different path first each round, so no path always follows the same one.
            let j = (i + k) % paths.len();
            let (_, base, body) = &paths[j];
            let t = Instant::now();
            send(&http, base, body).await?;
            took[j].push(t.elapsed());
        }
    }

    println!(
        "{:<28} {:>9} {:>9} {:>11} {:>11} {:>9}",
        "path", "p50 µs", "p99 µs", "added p50", "added p99", "req/s (32)"
    );
    let mut direct = None;
    for ((name, base, body), took) in paths.iter().zip(&mut took) {
        took.sort();
        let q = |p: f64| took[((took.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
        let rate = throughput(&http, base, body).await?;
        let (d50, d99, drate) = *direct.get_or_insert((q(0.5), q(0.99), rate));
        println!(
            "{name:<28} {:>9.0} {:>9.0} {:>11.0} {:>11.0} {:>9.0} ({:.0}% of direct)",
            q(0.5),
            q(0.99),
            q(0.5) - d50,
            q(0.99) - d99,
            rate,
            100.0 * rate / drate
        );
    }
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

/// The least a proxy can do on this runtime: read the body, send it on with the same HTTP
/// client the host uses, stream the answer back. The floor under any proxy's added latency
/// here; returns its root URL.
async fn bare(upstream: &str) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let to = format!("{upstream}/v1/chat/completions");
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |body: axum::body::Bytes| {
            let (http, to) = (http.clone(), to.clone());
            async move {
                let answer = http
                    .post(&to)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| (axum::http::StatusCode::BAD_GATEWAY, e.to_string()))?;
                let status = answer.status();
                Ok::<_, (axum::http::StatusCode, String)>((
                    status,
                    axum::body::Body::from_stream(answer.bytes_stream()),
                ))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
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
