//! What each front door adds over chat completions: the same one-turn request on every route,
//! through one host, to a stand-in upstream that answers at once, side by side in one run
//! (sequential, interleaved). Native routes are forwarded as they are; translated ones
//! (`translate = [...]`, and Ollama's API) are rewritten to chat completions and back; one
//! model's stand-in lacks `/v1/responses`, so the host learns on the first 404 and translates.
//! A stub upstream is right here: the bench measures the host, not a model. Run with
//! `cargo bench --bench routes`.

use std::time::Instant;

use axum::Json;
use axum::routing::{get, post};
use modelyard::config::Settings;
use serde_json::{Value, json};

/// Sequential requests per route.
const SEQUENTIAL: usize = 1_000;

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

fn chat_answer() -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "stub",
        "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Hello!"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
}

/// An upstream with chat completions and, when `full`, the Responses and Messages routes.
async fn stub(full: bool) -> anyhow::Result<String> {
    let mut app = axum::Router::new()
        .route(
            "/v1/models",
            get(|| async { Json(json!({"object": "list", "data": [{"id": "stub"}]})) }),
        )
        .route(
            "/v1/chat/completions",
            post(|| async { Json(chat_answer()) }),
        );
    if full {
        app = app
            .route(
                "/v1/responses",
                post(|| async {
                    Json(json!({"id": "resp_1", "object": "response", "status": "completed",
                        "output": [{"type": "message", "role": "assistant",
                            "content": [{"type": "output_text", "text": "Hello!"}]}]}))
                }),
            )
            .route(
                "/v1/messages",
                post(|| async {
                    Json(json!({"id": "msg_1", "type": "message", "role": "assistant",
                        "content": [{"type": "text", "text": "Hello!"}], "stop_reason": "end_turn"}))
                }),
            );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

async fn run() -> anyhow::Result<()> {
    let (full, bare) = (stub(true).await?, stub(false).await?);
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstate_dir = \"\"\n\
         [models.native]\nurl = \"{full}/v1\"\nsize = \"1MiB\"\n\
         [models.translated]\nurl = \"{full}/v1\"\nsize = \"1MiB\"\ntranslate = [\"responses\", \"messages\"]\n\
         [models.bare]\nurl = \"{bare}/v1\"\nsize = \"1MiB\"\n"
    );
    let tmp = tempfile::tempdir()?;
    let settings = Settings::from_toml(&text, tmp.path(), "bench")?;
    let (host, _task) = modelyard::cli::serve::start(settings, std::future::pending()).await?;
    let base = format!("http://{}", host.addr);
    let hi = json!([{"role": "user", "content": "Hi!"}]);
    let routes: Vec<(&str, &str, Value)> = vec![
        (
            "chat/completions",
            "/v1/chat/completions",
            json!({"model": "native", "max_tokens": 8, "messages": hi}),
        ),
        (
            "responses, native",
            "/v1/responses",
            json!({"model": "native", "max_output_tokens": 8, "input": "Hi!"}),
        ),
        (
            "responses, translated",
            "/v1/responses",
            json!({"model": "translated", "max_output_tokens": 8, "input": "Hi!"}),
        ),
        (
            "responses, learned 404",
            "/v1/responses",
            json!({"model": "bare", "max_output_tokens": 8, "input": "Hi!"}),
        ),
        (
            "messages, native",
            "/v1/messages",
            json!({"model": "native", "max_tokens": 8, "messages": hi}),
        ),
        (
            "messages, translated",
            "/v1/messages",
            json!({"model": "translated", "max_tokens": 8, "messages": hi}),
        ),
        (
            "ollama chat",
            "/api/chat",
            json!({"model": "native", "stream": false, "messages": hi}),
        ),
    ];
    let http = reqwest::Client::new();
    for (name, path, body) in &routes {
        for _ in 0..200 {
            send(&http, &base, path, body, name).await?;
        }
    }
    let mut took = vec![Vec::with_capacity(SEQUENTIAL); routes.len()];
    for i in 0..SEQUENTIAL {
        for k in 0..routes.len() {
            let j = (i + k) % routes.len();
            let (name, path, body) = &routes[j];
            let t = Instant::now();
            send(&http, &base, path, body, name).await?;
            took[j].push(t.elapsed());
        }
    }
    println!(
        "{:<24} {:>8} {:>8} {:>14}",
        "route", "p50 µs", "p99 µs", "p50 vs chat µs"
    );
    let mut chat = None;
    for ((name, _, _), took) in routes.iter().zip(&mut took) {
        took.sort();
        let q = |p: f64| took[((took.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
        let c = *chat.get_or_insert(q(0.5));
        println!(
            "{name:<24} {:>8.0} {:>8.0} {:>+14.0}",
            q(0.5),
            q(0.99),
            q(0.5) - c
        );
    }
    Ok(())
}

async fn send(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    body: &Value,
    name: &str,
) -> anyhow::Result<()> {
    let resp = http.post(format!("{base}{path}")).json(body).send().await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "{name}: status {}",
        resp.status()
    );
    let translated = resp.headers().contains_key("x-modelyard-translated");
    let should = !(name.ends_with("native") || name == "chat/completions");
    anyhow::ensure!(translated == should, "{name}: translated is {translated}");
    resp.bytes().await?;
    Ok(())
}
