//! The proxy, end to end: the official `openai` Python client, select-model,
//! compress-context, every error status, auth, admin and metrics, against real llama-server.

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Value, json};

use crate::demo::{
    self, TestHost, eventually, llama_model, python_json, serial, settings, state_of,
};

/// A chat model, its alias, and an embedding model (llama-server needs `--embeddings`).
fn chat_and_embed() -> String {
    let d = demo::demo();
    format!(
        "{}{}",
        llama_model(
            "smol",
            &d.smollm2,
            "aliases = [\"small\"]\ntags = [\"chat\"]"
        ),
        llama_model("embed", &d.smollm2, "tags = [\"embeddings\"]")
            .replace("--no-webui", "--no-webui --embeddings --pooling mean"),
    )
}

const SDK_SCRIPT: &str = r#"
import json, openai
client = openai.OpenAI()
out = {}
out["models"] = sorted(m.id for m in client.models.list())
chat = client.chat.completions.create(model="small", max_tokens=8,
    messages=[{"role": "user", "content": "Say hello."}])
out["chat"] = chat.choices[0].message.content
out["chat_model"] = chat.model
pieces = []
for chunk in client.chat.completions.create(model="smol", max_tokens=8, stream=True,
        messages=[{"role": "user", "content": "Count to five."}]):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
out["stream_chunks"] = len(pieces)
out["stream_text"] = "".join(pieces)
done = client.completions.create(model="smol", prompt="Once upon a time", max_tokens=8)
out["completion"] = done.choices[0].text
emb = client.embeddings.create(model="embed", input="a lighthouse by the sea")
out["embedding_len"] = len(emb.data[0].embedding)
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    out["unknown"] = "no error"
except openai.NotFoundError as e:
    out["unknown"] = ["NotFoundError", e.status_code, e.code]
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_client_gets_well_formed_answers() {
    let _serial = serial();
    let host = TestHost::start(settings(&chat_and_embed())).await;
    let base = host.url("/v1");
    let out = tokio::task::spawn_blocking(move || python_json(SDK_SCRIPT, &base))
        .await
        .unwrap();
    assert_eq!(out["models"], json!(["embed", "small", "smol"]), "{out}");
    assert!(
        !out["chat"].as_str().unwrap_or_default().is_empty(),
        "{out}"
    );
    assert_eq!(
        out["chat_model"], "smol",
        "the answer names the model, not a file: {out}"
    );
    assert!(
        out["stream_chunks"].as_u64().unwrap_or(0) >= 2,
        "streamed in chunks: {out}"
    );
    assert!(
        !out["completion"].as_str().unwrap_or_default().is_empty(),
        "{out}"
    );
    assert!(out["embedding_len"].as_u64().unwrap_or(0) >= 64, "{out}");
    assert_eq!(
        out["unknown"],
        json!(["NotFoundError", 404, "model_not_found"]),
        "{out}"
    );
    host.stop().await;
}

async fn post(host: &TestHost, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = host.http.post(host.url("/v1/chat/completions")).json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn hi(model: &str) -> Value {
    json!({"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_with_task_code_goes_to_the_code_model_and_aliases_resolve() {
    let _serial = serial();
    let d = demo::demo();
    let coder_file = d.smollm2_q4_0.clone().unwrap_or_else(|| d.gemma3.clone());
    let host = TestHost::start(settings(&format!(
        "selection = \"specialization\"\n{}{}",
        llama_model(
            "chatty",
            &d.smollm2,
            "aliases = [\"small\"]\ntags = [\"chat\"]"
        ),
        llama_model("coder", &coder_file, "tags = [\"code\"]"),
    )))
    .await;
    let by_header = post(&host, hi("auto"), &[("x-modelyard-task", "code")]).await;
    assert_eq!(by_header.status(), 200);
    assert_eq!(by_header.headers()["x-modelyard-model"], "coder");
    let mut body = hi("auto");
    body["metadata"] = json!({"task": "chat"});
    let by_metadata = post(&host, body, &[]).await;
    assert_eq!(by_metadata.headers()["x-modelyard-model"], "chatty");
    let by_alias = post(&host, hi("small"), &[]).await;
    assert_eq!(by_alias.status(), 200);
    assert_eq!(by_alias.headers()["x-modelyard-model"], "chatty");
    let policies = host.get_json("/admin/policies").await;
    let select = &policies["hooks"][1];
    assert_eq!(select["hook"], "select-model");
    assert_eq!(select["policy"], "specialization");
    // The two `auto` requests asked the policy; the alias was routed by the host without a
    // guest call (specialization is asked only about `auto`).
    assert_eq!(select["calls"].as_u64(), Some(2), "{policies}");
    host.stop().await;
}

fn long_conversation(turns: usize) -> Vec<Value> {
    let mut messages = vec![json!({"role": "system", "content": "You are a terse assistant."})];
    for i in 0..turns {
        messages.push(json!({"role": "user", "content": format!("Question {i}: tell me about the history of lighthouses, keepers, lenses and storms along the coast.")}));
        messages.push(json!({"role": "assistant", "content": format!("Answer {i}: lighthouses guided ships with fires, then oil lamps, then Fresnel lenses and electric light.")}));
    }
    messages.push(json!({"role": "user", "content": "In one word: what guided ships?"}));
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_conversation_is_compressed_and_reported_and_one_that_cannot_fit_is_refused() {
    let _serial = serial();
    let d = demo::demo();
    // A 512-token window; the built-in keeps the system prompt, the newest user turn and the
    // newest turns that fit.
    let host = TestHost::start(settings(&format!(
        "compression = \"lru\"\n{}",
        llama_model("small-window", &d.smollm2, ""),
    )))
    .await;
    let messages = long_conversation(20);
    let resp = post(
        &host,
        json!({"model": "small-window", "max_tokens": 8, "messages": messages}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let header = resp.headers()["x-modelyard-context"]
        .to_str()
        .unwrap()
        .to_string();
    let field = |name: &str| -> u64 {
        header
            .split("; ")
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(header.starts_with("compressed;"), "{header}");
    assert!(field("before") > 504 && field("after") <= 504, "{header}");
    assert!(field("dropped_messages") > 0, "{header}");
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["choices"][0]["message"]["content"].is_string(),
        "{body}"
    );
    // The backend saw what the host said it kept.
    assert!(
        body["usage"]["prompt_tokens"].as_u64().unwrap() <= 512,
        "{body}"
    );

    // One user message larger than the whole window: nothing to drop, so no fit.
    let huge = "lighthouse ".repeat(800);
    let resp = post(
        &host,
        json!({"model": "small-window", "max_tokens": 8,
        "messages": [{"role": "user", "content": huge}]}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "context_length_exceeded", "{body}");
    // A short conversation is left alone and says nothing.
    let resp = post(&host, hi("small-window"), &[]).await;
    assert!(!resp.headers().contains_key("x-modelyard-context"));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_its_status_and_an_openai_shaped_body() {
    let _serial = serial();
    let d = demo::demo();
    let host = TestHost::start(settings(&format!(
        "[server]\nmax_body = \"4KiB\"\nupstream_timeout = \"1s\"\n\
         [auth]\nadmin_key = \"admin-secret\"\nkeys = [{{ key = \"sk-test\", name = \"tester\" }}]\n\
         [models.broken]\ncmd = \"sh -c 'exit 3' ${{PORT}}\"\n{}",
        llama_model("slow", &d.smollm2, ""),
    )))
    .await;
    let auth = [("authorization", "Bearer sk-test")];
    let send = |body: reqwest::Body, headers: &'static [(&'static str, &'static str)]| {
        let mut req = host
            .http
            .post(host.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };
    async fn check(resp: reqwest::Response, status: u16, code: &str) -> reqwest::header::HeaderMap {
        assert_eq!(resp.status().as_u16(), status);
        let headers = resp.headers().clone();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        assert!(body["error"]["type"].is_string(), "{body}");
        headers
    }
    const AUTH: &[(&str, &str)] = &[("authorization", "Bearer sk-test")];
    check(
        send("{not json".into(), AUTH).await.unwrap(),
        400,
        "invalid_json",
    )
    .await;
    check(
        send(r#"{"messages": []}"#.into(), AUTH).await.unwrap(),
        400,
        "missing_model",
    )
    .await;
    check(
        send(hi("slow").to_string().into(), &[]).await.unwrap(),
        401,
        "invalid_api_key",
    )
    .await;
    check(
        send(
            hi("slow").to_string().into(),
            &[("authorization", "Bearer wrong")],
        )
        .await
        .unwrap(),
        401,
        "invalid_api_key",
    )
    .await;
    check(
        send(hi("nope").to_string().into(), AUTH).await.unwrap(),
        404,
        "model_not_found",
    )
    .await;
    // Over the limit: refused on its declared length, and a chunked body without one is cut off.
    let big = json!({"model": "slow", "messages": [{"role": "user", "content": "x".repeat(8000)}]})
        .to_string();
    check(
        send(big.clone().into(), AUTH).await.unwrap(),
        413,
        "request_too_large",
    )
    .await;
    let chunks = futures_util::stream::iter(
        big.into_bytes()
            .chunks(1000)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    check(
        send(reqwest::Body::wrap_stream(chunks), AUTH)
            .await
            .unwrap(),
        413,
        "request_too_large",
    )
    .await;
    // A server that cannot start: 502, then (after the immediate retry) 503 with Retry-After.
    check(
        send(hi("broken").to_string().into(), AUTH).await.unwrap(),
        502,
        "model_load_failed",
    )
    .await;
    check(
        send(hi("broken").to_string().into(), AUTH).await.unwrap(),
        502,
        "model_load_failed",
    )
    .await;
    let h = check(
        send(hi("broken").to_string().into(), AUTH).await.unwrap(),
        503,
        "model_backing_off",
    )
    .await;
    assert!(h.contains_key("retry-after"));
    // A backend slower than server.upstream_timeout: 504.
    let admin = [("authorization", "Bearer admin-secret")];
    let loaded = host
        .http
        .post(host.url("/admin/models/slow/load"))
        .header(admin[0].0, admin[0].1)
        .send()
        .await
        .unwrap();
    assert_eq!(loaded.status(), 200);
    let long = json!({"model": "slow", "max_tokens": 300, "messages": [{"role": "user", "content": "Write a long story."}]});
    check(
        send(long.to_string().into(), AUTH).await.unwrap(),
        504,
        "backend_timeout",
    )
    .await;
    // Admin needs its own key.
    let resp = host
        .http
        .get(host.url("/admin/models"))
        .header(auth[0].0, auth[0].1)
        .send()
        .await
        .unwrap();
    check(resp, 401, "invalid_api_key").await;
    let resp = host
        .http
        .get(host.url("/admin/models"))
        .header(admin[0].0, admin[0].1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A host that records nothing has no trace to give.
    let resp = host
        .http
        .get(host.url("/admin/trace"))
        .header(admin[0].0, admin[0].1)
        .send()
        .await
        .unwrap();
    check(resp, 404, "not_found").await;
    host.stop().await;

    // No room in the queue while a model loads: 429 with Retry-After.
    let host = TestHost::start(settings(
        "[scheduler]\nmax_queue = 0\n[models.sleepy]\ncmd = \"sh -c 'sleep 30' ${PORT}\"\nstart_timeout = 5\n",
    ))
    .await;
    let resp = host
        .http
        .post(host.url("/v1/chat/completions"))
        .json(&hi("sleepy"))
        .send()
        .await
        .unwrap();
    let h = check(resp, 429, "queue_full").await;
    assert!(h.contains_key("retry-after"));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_client_that_disconnects_frees_the_model() {
    let _serial = serial();
    let d = demo::demo();
    let host = TestHost::start(settings(&llama_model("streamer", &d.smollm2, ""))).await;
    let resp = post(
        &host,
        json!({"model": "streamer", "max_tokens": 400, "stream": true,
        "messages": [{"role": "user", "content": "Write a very long story."}]}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&first).contains("data:"),
        "SSE relayed as it comes"
    );
    assert_eq!(host.status().models[0].in_flight, 1);
    drop(stream); // the client goes away mid-answer
    assert!(
        eventually(Duration::from_secs(5), || host.status().models[0].in_flight
            == 0)
        .await,
        "the lease was released"
    );
    // Evictable again: an unload goes through at once.
    let resp = host
        .http
        .post(host.url("/admin/models/streamer/unload"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(state_of(&host.status(), "streamer"), "unloaded");

    let metrics = host
        .http
        .get(host.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "modelyard_requests_total{route=\"chat/completions\",model=\"streamer\",status=\"200\"} 1",
        "modelyard_request_duration_seconds_count{model=\"streamer\"} 1",
        "modelyard_model_loads_total{model=\"streamer\"} 1",
        "modelyard_evictions_total{decided_by=\"an operator\"} 1",
        "modelyard_device_memory_bytes{device=\"cpu\",kind=\"total\"}",
        // The request named its model: routed by the host, no guest call.
        "modelyard_hook_calls_total{hook=\"select-model\",policy=\"specialization\"} 0",
        "modelyard_hook_duration_seconds_bucket{le=\"+Inf\",hook=\"select-model\",policy=\"specialization\"} 0",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    host.stop().await;
}

/// A stand-in server that answers one request per connection and closes the connection when
/// the next request arrives on it: what llama-server may do to a kept-alive connection it has
/// just streamed an answer on, deterministically.
async fn one_answer_per_connection() -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                // One request: its head, then its body's declared length.
                loop {
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got);
                    if let Some(head) = text.find("\r\n\r\n") {
                        let len = text[..head]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if got.len() >= head + 4 + len {
                            break;
                        }
                    }
                }
                let body = r#"{"id":"x","object":"chat.completion","model":"stub","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nkeep-alive: timeout=5\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                // The next request on this connection: closed unanswered.
                let _ = sock.read(&mut buf).await;
            });
        }
    });
    format!("http://{addr}/v1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_request_on_a_connection_the_server_just_closed_is_sent_again() {
    let upstream = one_answer_per_connection().await;
    let host = TestHost::start(settings(&format!(
        "[models.stub]\nurl = \"{upstream}\"\nsize = \"1MiB\"\n"
    )))
    .await;
    for i in 0..5 {
        let resp = post(&host, hi("stub"), &[]).await;
        assert_eq!(resp.status(), 200, "request {i}: {:?}", resp.text().await);
    }
    host.stop().await;
}
