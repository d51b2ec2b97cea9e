//! The LM Studio and vLLM exchanges against stand-ins that answer as those servers'
//! documents say (the response bodies below are the documents' own examples): what the host
//! sends, in order, and what it makes of the answers. Neither server runs here.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{Method, Uri};
use serde_json::{Value, json};

use super::*;

/// A request as the stand-in saw it: method, path with query, JSON body (or null).
type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;

/// Serves `answer(method, path)` and records every request; returns its `/v1` URL.
async fn stand_in(answer: fn(&str, &str, &Value) -> (u16, Value)) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| {
        let log = log.clone();
        async move {
            let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let (status, reply) = answer(method.as_str(), &path, &body);
            log.lock()
                .expect("log")
                .push((method.to_string(), path, body));
            (
                axum::http::StatusCode::from_u16(status).expect("status"),
                axum::Json(reply),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1"), seen)
}

fn settings(url: &str, model: &str, control: Control) -> OpenAiSettings {
    OpenAiSettings {
        url: url.to_string(),
        api_key: None,
        model_name: model.to_string(),
        control,
    }
}

fn requests(seen: &Seen) -> Vec<(String, String, Value)> {
    seen.lock().expect("log").clone()
}

/// What the stand-in was sent, as `(method, path)` pairs.
fn lines(sent: &[(String, String, Value)]) -> Vec<(&str, &str)> {
    sent.iter()
        .map(|(m, p, _)| (m.as_str(), p.as_str()))
        .collect()
}

/// LM Studio's `GET /api/v1/models` example, with gemma's instance as given (or none).
fn lmstudio_models(loaded: bool) -> Value {
    let instances = if loaded {
        json!([{"id": "gemma-3-270m-it-qat", "config": {"context_length": 4096}}])
    } else {
        json!([])
    };
    json!({"models": [{
        "type": "llm", "publisher": "lmstudio-community", "key": "gemma-3-270m-it-qat",
        "display_name": "Gemma 3 270m Instruct Qat", "architecture": "gemma3",
        "quantization": {"name": "Q4_0", "bits_per_weight": 4}, "size_bytes": 241410208,
        "params_string": "270M", "loaded_instances": instances, "max_context_length": 32768,
        "format": "gguf", "capabilities": {"vision": false, "trained_for_tool_use": false},
        "description": null
    }]})
}

fn lmstudio_unloaded(method: &str, path: &str, _: &Value) -> (u16, Value) {
    match (method, path) {
        ("GET", "/api/v1/models") => (200, lmstudio_models(false)),
        ("POST", "/api/v1/models/load") => (
            200,
            json!({"model_instance_id": "gemma-3-270m-it-qat:2",
                   "config": {"context_length": 2048, "eval_batch_size": 512,
                              "flash_attention": true, "num_experts": 0,
                              "offload_kv_cache_to_gpu": true},
                   "load_time_seconds": 9.099}),
        ),
        ("POST", "/api/v1/models/unload") => (200, json!({"instance_id": "gemma-3-270m-it-qat:2"})),
        _ => (404, json!({"error": "unexpected"})),
    }
}

#[tokio::test]
async fn lmstudio_loads_with_the_window_names_the_instance_and_unloads_it() {
    let (url, seen) = stand_in(lmstudio_unloaded).await;
    let s = settings(&url, "gemma-3-270m-it-qat", Control::LmStudio);
    let http = reqwest::Client::new();
    let instance = start(&http, &s, 2048).await.expect("loads");
    // Requests name the instance LM Studio made.
    assert_eq!(instance.endpoint().model_name, "gemma-3-270m-it-qat:2");
    instance.stop().await;
    let sent = requests(&seen);
    assert_eq!(
        lines(&sent),
        [
            ("GET", "/api/v1/models"),
            ("POST", "/api/v1/models/load"),
            ("POST", "/api/v1/models/unload")
        ]
    );
    assert_eq!(
        sent[1].2,
        json!({"model": "gemma-3-270m-it-qat", "config": {"context_length": 2048}})
    );
    assert_eq!(sent[2].2, json!({"instance_id": "gemma-3-270m-it-qat:2"}));
}

#[tokio::test]
async fn lmstudio_uses_a_loaded_instance_and_names_a_model_it_lacks() {
    let (url, seen) = stand_in(|m, p, _| match (m, p) {
        ("GET", "/api/v1/models") => (200, lmstudio_models(true)),
        _ => (404, json!({})),
    })
    .await;
    let http = reqwest::Client::new();
    let instance = start(
        &http,
        &settings(&url, "gemma-3-270m-it-qat", Control::LmStudio),
        2048,
    )
    .await
    .expect("already loaded");
    assert_eq!(instance.endpoint().model_name, "gemma-3-270m-it-qat");
    assert_eq!(requests(&seen).len(), 1, "no load for a loaded model");
    let missing = start(&http, &settings(&url, "qwen3", Control::LmStudio), 2048)
        .await
        .expect_err("not listed");
    assert!(
        missing.to_string().contains("does not list it"),
        "{missing}"
    );
}

#[tokio::test]
async fn vllm_wakes_a_sleeping_engine_and_sleeps_it_at_its_level() {
    fn asleep(method: &str, path: &str, _: &Value) -> (u16, Value) {
        match (method, path) {
            ("GET", "/is_sleeping") => (200, json!({"is_sleeping": true})),
            ("POST", "/wake_up" | "/sleep?level=1" | "/sleep?level=2") => (200, Value::Null),
            _ => (404, json!({})),
        }
    }
    let (url, seen) = stand_in(asleep).await;
    let http = reqwest::Client::new();
    for level in [1, 2] {
        let s = settings(&url, "Qwen/Qwen3-0.6B", Control::VllmSleep { level });
        let instance = start(&http, &s, 4096).await.expect("wakes");
        assert_eq!(instance.endpoint().model_name, "Qwen/Qwen3-0.6B");
        instance.stop().await;
    }
    let sent = requests(&seen);
    assert_eq!(
        lines(&sent),
        [
            ("GET", "/is_sleeping"),
            ("POST", "/wake_up"),
            ("POST", "/sleep?level=1"),
            ("GET", "/is_sleeping"),
            ("POST", "/wake_up"),
            ("POST", "/sleep?level=2"),
        ]
    );
}

#[tokio::test]
async fn vllm_awake_is_left_alone_and_a_server_without_sleep_mode_is_named() {
    let (url, seen) = stand_in(|m, p, _| match (m, p) {
        ("GET", "/is_sleeping") => (200, json!({"is_sleeping": false})),
        _ => (404, json!({"detail": "Not Found"})),
    })
    .await;
    let http = reqwest::Client::new();
    let s = settings(&url, "m", Control::VllmSleep { level: 1 });
    start(&http, &s, 4096).await.expect("awake already");
    assert_eq!(requests(&seen).len(), 1);
    // A vLLM without VLLM_SERVER_DEV_MODE has no /is_sleeping route.
    let (url, _) = stand_in(|_, _, _| (404, json!({"detail": "Not Found"}))).await;
    let e = start(
        &http,
        &settings(&url, "m", Control::VllmSleep { level: 1 }),
        4096,
    )
    .await
    .expect_err("no sleep mode");
    assert!(e.to_string().contains("/is_sleeping"), "{e}");
}
