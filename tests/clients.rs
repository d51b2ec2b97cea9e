//! The clients people run, end to end against real llama-server models: the official `openai`
//! client on the Responses API, the official `anthropic` client on the Messages API, rerank,
//! capability errors, and bad input on every new route in its own API's error shape.

use serde_json::{Value, json};

use crate::demo::{self, TestHost, eventually, llama_model, serial, settings, state_of};

/// A chat model, an embedding model and a model in llama-server's reranking mode (SmolLM2 has
/// no reranking head, so its scores mean little; the route and its shape are what is tested).
fn three_kinds() -> String {
    let d = demo::demo();
    format!(
        "{}{}{}",
        llama_model("smol", &d.smollm2, "tags = [\"chat\"]"),
        llama_model("embed", &d.smollm2, "")
            .replace("--no-webui", "--no-webui --embeddings --pooling mean"),
        llama_model("ranker", &d.smollm2, "").replace("--no-webui", "--no-webui --reranking"),
    )
}

const RESPONSES_SCRIPT: &str = r#"
import json, openai
client = openai.OpenAI(max_retries=0)
out = {}
r = client.responses.create(model="smol", input="Say hello.", instructions="Be brief.",
    max_output_tokens=8)
out["text"] = r.output_text
out["status"] = r.status
out["output_tokens"] = r.usage.output_tokens
turns = client.responses.create(model="smol", max_output_tokens=8, input=[
    {"role": "user", "content": "My name is Ada."},
    {"role": "assistant", "content": "Hello Ada."},
    {"role": "user", "content": [{"type": "input_text", "text": "What is my name?"}]}])
out["turns_text"] = turns.output_text
kinds, deltas = [], []
for event in client.responses.create(model="smol", input="Count to five.",
        max_output_tokens=8, stream=True):
    kinds.append(event.type)
    if event.type == "response.output_text.delta":
        deltas.append(event.delta)
out["events"] = kinds
out["deltas"] = len(deltas)
try:
    client.responses.create(model="no-such-model", input="hi")
    out["unknown"] = "no error"
except openai.NotFoundError as e:
    out["unknown"] = [e.status_code, e.code]
print(json.dumps(out))
"#;

const MESSAGES_SCRIPT: &str = r#"
import json, os, anthropic
root = os.environ["OPENAI_BASE_URL"].removesuffix("/v1")
client = anthropic.Anthropic(base_url=root, api_key="unused", max_retries=0)
hello = [{"role": "user", "content": "Say hello."}]
out = {}
m = client.messages.create(model="smol", max_tokens=8, system="You are terse.", messages=hello)
out["text"] = m.content[0].text
out["type"] = m.type
out["stop_reason"] = m.stop_reason
out["model"] = m.model
out["output_tokens"] = m.usage.output_tokens
with client.messages.stream(model="smol", max_tokens=8, messages=[
        {"role": "user", "content": [{"type": "text", "text": "Count to five."}]}]) as s:
    out["stream_chunks"] = len([t for t in s.text_stream])
    out["stream_stop"] = s.get_final_message().stop_reason
out["count"] = client.messages.count_tokens(model="smol", messages=hello).input_tokens
out["count_with_system"] = client.messages.count_tokens(model="smol", system="You are terse.",
    messages=hello).input_tokens
try:
    client.messages.create(model="no-such-model", max_tokens=8, messages=hello)
    out["unknown"] = "no error"
except anthropic.NotFoundError as e:
    out["unknown"] = [type(e).__name__, e.status_code, e.body["type"], e.body["error"]["type"]]
try:
    client.messages.create(model="smol", max_tokens=8,
        messages=[{"role": "user", "content": "lighthouse " * 4000}])
    out["too_long"] = "no error"
except anthropic.BadRequestError as e:
    out["too_long"] = [e.status_code, e.body["error"]["type"], e.body["error"]["message"]]
print(json.dumps(out))
"#;

/// `smol` again, its Responses and Messages APIs translated to chat completions by the host
/// (as for a server that lacks them).
fn translated() -> String {
    let d = demo::demo();
    llama_model(
        "smol",
        &d.smollm2,
        "translate = [\"responses\", \"messages\"]",
    )
}

/// The route a request on `path` was translated to, if it was.
async fn translated_to(host: &TestHost, path: &str, body: Value) -> Option<String> {
    let resp = post(host, path, body).await;
    assert_eq!(resp.status(), 200, "{path}");
    resp.headers()
        .get("x-modelyard-translated")
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_client_speaks_the_responses_api() {
    let _serial = serial();
    for config in [three_kinds(), translated()] {
        check_responses(config).await;
    }
}

async fn check_responses(config: String) {
    let host = TestHost::start(settings(&config)).await;
    let body = json!({"model": "smol", "input": "hi", "max_output_tokens": 2});
    let via = translated_to(&host, "/v1/responses", body).await;
    let translated = config.contains("translate");
    assert_eq!(via.as_deref(), translated.then_some("chat/completions"));
    let out = host.python(RESPONSES_SCRIPT).await;
    assert!(
        !out["text"].as_str().unwrap_or_default().is_empty(),
        "{out}"
    );
    // OpenAI's API says `incomplete` for an answer cut at max_output_tokens (the
    // translation does); llama-server's own route says `completed`.
    let statuses = [json!("completed"), json!("incomplete")];
    assert!(statuses.contains(&out["status"]), "{out}");
    assert!(out["output_tokens"].as_u64().unwrap_or(0) >= 1, "{out}");
    assert!(
        !out["turns_text"].as_str().unwrap_or_default().is_empty(),
        "{out}"
    );
    let events: Vec<&str> = out["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(events.first(), Some(&"response.created"), "{out}");
    let last = events.last().copied().unwrap_or_default();
    assert!(
        ["response.completed", "response.incomplete"].contains(&last),
        "{out}"
    );
    assert!(out["deltas"].as_u64().unwrap_or(0) >= 2, "streamed: {out}");
    assert_eq!(out["unknown"], json!([404, "model_not_found"]), "{out}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_anthropic_client_speaks_the_messages_api() {
    let _serial = serial();
    for config in [three_kinds(), translated()] {
        check_messages(config).await;
    }
}

async fn check_messages(config: String) {
    let host = TestHost::start(settings(&config)).await;
    let body =
        json!({"model": "smol", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]});
    let via = translated_to(&host, "/v1/messages", body).await;
    let translated = config.contains("translate");
    assert_eq!(via.as_deref(), translated.then_some("chat/completions"));
    let out = host.python(MESSAGES_SCRIPT).await;
    assert!(
        !out["text"].as_str().unwrap_or_default().is_empty(),
        "{out}"
    );
    assert_eq!(out["type"], "message", "{out}");
    let stops = [json!("max_tokens"), json!("end_turn")];
    assert!(stops.contains(&out["stop_reason"]), "{out}");
    assert_eq!(out["model"], "smol", "{out}");
    assert!(out["output_tokens"].as_u64().unwrap_or(0) >= 1, "{out}");
    assert!(out["stream_chunks"].as_u64().unwrap_or(0) >= 2, "{out}");
    assert!(stops.contains(&out["stream_stop"]), "{out}");
    let (count, with_system) = (
        out["count"].as_u64().unwrap_or(0),
        out["count_with_system"].as_u64().unwrap_or(0),
    );
    // The system prompt replaces the chat template's default one: another count.
    assert!(
        count >= 2 && with_system >= 2 && with_system != count,
        "{out}"
    );
    assert_eq!(
        out["unknown"],
        json!(["NotFoundError", 404, "error", "not_found_error"]),
        "{out}"
    );
    assert_eq!(out["too_long"][0], 400, "{out}");
    assert_eq!(out["too_long"][1], "invalid_request_error", "{out}");
    assert!(
        out["too_long"][2]
            .as_str()
            .unwrap_or_default()
            .contains("smol takes"),
        "the host's refusal, before the server: {out}"
    );
    host.stop().await;
}

async fn post(host: &TestHost, path: &str, body: Value) -> reqwest::Response {
    host.http
        .post(host.url(path))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerank_and_capabilities_route_to_the_models_that_serve_them() {
    let _serial = serial();
    let host = TestHost::start(settings(&three_kinds())).await;
    let docs = json!({"query": "a lighthouse", "documents": ["the sea", "a lighthouse", "bread"]});
    for path in ["/v1/rerank", "/v1/reranking"] {
        let mut body = docs.clone();
        body["model"] = json!("ranker");
        let resp = post(&host, path, body).await;
        assert_eq!(resp.status(), 200, "{path}");
        let out: Value = resp.json().await.unwrap();
        let results = out["results"].as_array().unwrap();
        assert_eq!(results.len(), 3, "{out}");
        assert!(
            results.iter().all(|r| r["relevance_score"].is_f64()),
            "{out}"
        );
    }
    // `auto` sees only the models that serve the route.
    let mut body = docs.clone();
    body["model"] = json!("auto");
    let resp = post(&host, "/v1/rerank", body).await;
    assert_eq!(resp.headers()["x-modelyard-model"], "ranker");
    let resp = post(
        &host,
        "/v1/embeddings",
        json!({"model": "auto", "input": "hi"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-modelyard-model"], "embed");

    // A model asked for a route it does not serve: a 400 naming those that do, and no load.
    let before = host.status();
    let resp = post(
        &host,
        "/v1/embeddings",
        json!({"model": "smol", "input": "hi"}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "model_not_capable", "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("smol does not serve embeddings"),
        "{message}"
    );
    assert!(message.contains("models that do: embed"), "{message}");
    let resp = post(&host, "/v1/rerank", {
        let mut b = docs.clone();
        b["model"] = json!("smol");
        b
    })
    .await;
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("models that do: ranker"),
        "{err}"
    );
    assert_eq!(state_of(&before, "smol"), "unloaded");
    assert_eq!(
        state_of(&host.status(), "smol"),
        "unloaded",
        "nothing loaded"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_the_new_routes_gets_each_apis_error_shape_and_reaches_no_server() {
    let _serial = serial();
    let d = demo::demo();
    let host = TestHost::start(settings(&format!(
        "[server]\nmax_body = \"2KiB\"\n{}",
        llama_model("smol", &d.smollm2, "")
    )))
    .await;
    let raw = |path: &'static str, body: &'static str| {
        let host = &host;
        async move {
            let resp = host
                .http
                .post(host.url(path))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            let parsed = serde_json::from_str::<Value>(&text)
                .unwrap_or_else(|e| panic!("{path} {body:.60}: {e}: {text}"));
            (status, parsed)
        }
    };
    let big = format!(r#"{{"model":"smol","input":"{}"}}"#, "x".repeat(4096));
    let big: &'static str = Box::leak(big.into_boxed_str());
    let big_ollama = format!(r#"{{"model":"smol","prompt":"{}"}}"#, "x".repeat(4096));
    let big_ollama: &'static str = Box::leak(big_ollama.into_boxed_str());
    let cases: [(&str, &str, u16); 20] = [
        ("/v1/responses", "{not json", 400),
        ("/v1/responses", r#"{"model":"smol","input":7}"#, 400),
        ("/v1/responses", r#"{"model":"nope","input":"hi"}"#, 404),
        ("/v1/responses", big, 413),
        ("/v1/messages", "{not json", 400),
        (
            "/v1/messages",
            r#"{"model":"smol","max_tokens":8,"messages":"hi"}"#,
            400,
        ),
        ("/v1/messages", r#"{"model":"smol","messages":[]}"#, 400),
        (
            "/v1/messages",
            r#"{"model":"nope","max_tokens":8,"messages":[]}"#,
            404,
        ),
        ("/v1/messages/count_tokens", big, 413),
        (
            "/v1/rerank",
            r#"{"model":"smol","query":1,"documents":[]}"#,
            400,
        ),
        ("/v1/rerank", "[]", 400),
        ("/v1/reranking", big, 413),
        ("/api/chat", "{not json", 400),
        ("/api/chat", r#"{"model":"smol","messages":"hi"}"#, 400),
        ("/api/chat", r#"{"model":"nope","messages":[]}"#, 404),
        (
            "/api/chat",
            r#"{"model":"smol","messages":[],"keep_alive":"soon"}"#,
            400,
        ),
        ("/api/generate", r#"{"model":"smol","prompt":7}"#, 400),
        ("/api/generate", r#"{"model":"nope","prompt":"hi"}"#, 404),
        ("/api/embed", big_ollama, 413),
        (
            "/api/embeddings",
            r#"{"model":"smol","prompt":"hi","options":3}"#,
            400,
        ),
    ];
    for (path, body, status) in cases {
        let (got, err) = raw(path, body).await;
        assert_eq!(got, status, "{path} {body:.60}: {err}");
        if path.starts_with("/api/") {
            assert!(err["error"].is_string(), "Ollama's shape: {err}");
        } else if path.starts_with("/v1/messages") {
            assert_eq!(err["type"], "error", "Anthropic's shape: {err}");
            assert!(err["error"]["type"].is_string(), "{err}");
            assert!(err["error"]["message"].is_string(), "{err}");
        } else {
            assert!(err["error"]["message"].is_string(), "OpenAI's shape: {err}");
            assert!(err["error"]["code"].is_string(), "{err}");
        }
    }
    assert_eq!(
        state_of(&host.status(), "smol"),
        "unloaded",
        "no bad request loaded the model"
    );
    host.stop().await;
}

const OLLAMA_SCRIPT: &str = r#"
import json, os, ollama
root = os.environ["OPENAI_BASE_URL"].removesuffix("/v1")
c = ollama.Client(host=root)
hello = [{"role": "user", "content": "Say hello."}]
out = {}
out["load"] = c.generate(model="smol").done_reason
out["list"] = sorted(m.model for m in c.list().models)
r = c.chat(model="smol", messages=hello, options={"num_predict": 8})
out["chat"] = [r.message.role, r.message.content, r.done, r.done_reason, r.eval_count]
parts = list(c.chat(model="smol", messages=hello, stream=True, options={"num_predict": 8}))
out["stream"] = [len(parts), parts[-1].done, parts[-1].done_reason,
    "".join(p.message.content for p in parts)]
g = c.generate(model="smol", prompt="Once upon a time", stream=False, options={"num_predict": 8})
out["generate"] = [g.response, g.done, g.prompt_eval_count]
raw = list(c.generate(model="smol", prompt="Once upon a time", raw=True, stream=True,
    options={"num_predict": 8}))
out["raw_stream"] = [len(raw), raw[-1].done, "".join(p.response for p in raw)]
e = c.embed(model="embed", input=["a lighthouse", "the sea"])
out["embed"] = [len(e.embeddings), len(e.embeddings[0])]
out["embeddings"] = len(c.embeddings(model="embed", prompt="a lighthouse", keep_alive="7m").embedding)
out["ps"] = sorted(m.model for m in c.ps().models)
out["show"] = c.show("smol").capabilities
for name, call in [("pull", lambda: c.pull("smol")),
                   ("unknown", lambda: c.chat(model="nope", messages=hello)),
                   ("embed_on_chat", lambda: c.embed(model="smol", input="a"))]:
    try:
        call()
        out[name] = "no error"
    except ollama.ResponseError as err:
        out[name] = [err.status_code, err.error]
print(json.dumps(out))
"#;

const OLLAMA_UNLOAD_SCRIPT: &str = r#"
import json, os, ollama
root = os.environ["OPENAI_BASE_URL"].removesuffix("/v1")
c = ollama.Client(host=root)
out = {}
r = c.chat(model="smol", messages=[{"role": "user", "content": "Bye."}], keep_alive=0,
    options={"num_predict": 2})
out["chat"] = r.done
out["unload"] = c.generate(model="embed", keep_alive=0).done_reason
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_ollama_client_lists_chats_generates_embeds_and_unloads() {
    let _serial = serial();
    let host = TestHost::start(settings(&three_kinds())).await;
    let out = host.python(OLLAMA_SCRIPT).await;
    assert_eq!(out["load"], "load", "{out}");
    assert_eq!(out["list"], json!(["embed", "ranker", "smol"]), "{out}");
    assert_eq!(out["chat"][0], "assistant", "{out}");
    assert!(
        !out["chat"][1].as_str().unwrap_or_default().is_empty(),
        "{out}"
    );
    assert_eq!(out["chat"][2], true, "{out}");
    assert!(
        out["chat"][4].as_u64().unwrap_or(0) >= 1,
        "eval_count: {out}"
    );
    assert!(
        out["stream"][0].as_u64().unwrap_or(0) >= 3,
        "streamed: {out}"
    );
    assert_eq!(out["stream"][1], true, "the last line is done: {out}");
    assert!(
        !out["stream"][3].as_str().unwrap_or_default().is_empty(),
        "{out}"
    );
    assert!(
        !out["generate"][0].as_str().unwrap_or_default().is_empty(),
        "{out}"
    );
    assert!(out["generate"][2].as_u64().unwrap_or(0) >= 2, "{out}");
    assert_eq!(out["raw_stream"][1], true, "{out}");
    assert!(
        !out["raw_stream"][2].as_str().unwrap_or_default().is_empty(),
        "{out}"
    );
    assert_eq!(out["embed"][0], 2, "{out}");
    assert!(out["embed"][1].as_u64().unwrap_or(0) >= 64, "{out}");
    assert_eq!(out["embeddings"], out["embed"][1], "{out}");
    assert_eq!(out["ps"], json!(["embed", "smol"]), "{out}");
    assert_eq!(out["show"], json!(["completion"]), "{out}");
    assert_eq!(out["pull"][0], 501, "{out}");
    assert!(
        out["pull"][1]
            .as_str()
            .unwrap_or_default()
            .contains("[models.*]"),
        "{out}"
    );
    assert_eq!(out["unknown"][0], 404, "{out}");
    assert_eq!(out["embed_on_chat"][0], 400, "{out}");
    assert!(
        out["embed_on_chat"][1]
            .as_str()
            .unwrap_or_default()
            .contains("models that do: embed"),
        "{out}"
    );
    // keep_alive "7m" set the embedding model's TTL for this load.
    let models = host.get_json("/admin/models").await;
    let embed = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "embed")
        .unwrap();
    assert_eq!(embed["ttl_secs"], 420, "{embed}");

    let out = host.python(OLLAMA_UNLOAD_SCRIPT).await;
    assert_eq!(out["chat"], true, "{out}");
    assert_eq!(out["unload"], "unload", "{out}");
    let unloaded = eventually(std::time::Duration::from_secs(10), || {
        let s = host.status();
        state_of(&s, "smol") == "unloaded" && state_of(&s, "embed") == "unloaded"
    })
    .await;
    assert!(unloaded, "keep_alive 0 unloads: {:?}", host.status().models);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_passes_through_to_one_models_server_loading_it_first_behind_the_key() {
    let _serial = serial();
    let d = demo::demo();
    let host = TestHost::start(settings(&format!(
        "[auth]\nkeys = [{{ key = \"sk-test\", name = \"tester\" }}]\n{}",
        llama_model("smol", &d.smollm2, "aliases = [\"small\"]")
    )))
    .await;
    let get = |path: &'static str, key: Option<&'static str>| {
        let host = &host;
        async move {
            let mut req = host.http.get(host.url(path));
            if let Some(k) = key {
                req = req.header("x-api-key", k);
            }
            req.send().await.unwrap()
        }
    };
    let refused = get("/upstream/smol/health", None).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(
        state_of(&host.status(), "smol"),
        "unloaded",
        "not loaded for a refusal"
    );
    let health = get("/upstream/small/health", Some("sk-test")).await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.headers()["x-modelyard-model"], "smol");
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ok", "llama-server's own answer: {body}");
    assert_eq!(state_of(&host.status(), "smol"), "ready", "loaded first");
    let props: Value = get("/upstream/smol/props", Some("sk-test"))
        .await
        .json()
        .await
        .unwrap();
    assert!(props["default_generation_settings"].is_object(), "{props}");
    let unknown = get("/upstream/nope/health", Some("sk-test")).await;
    assert_eq!(unknown.status(), 404);
    let metrics = host.get_text("/metrics").await;
    assert!(
        metrics.lines().any(|l| l.contains("route=\"upstream\"")
            && l.contains("model=\"smol\"")
            && l.contains("status=\"200\"")),
        "counted: {metrics}"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_too_long_for_its_model_goes_to_the_context_fallback_before_compression() {
    let _serial = serial();
    let d = demo::demo();
    let host = TestHost::start(settings(&format!(
        "{}{}",
        llama_model("tiny", &d.smollm2, "context_fallback = \"roomy\""),
        llama_model("roomy", &d.smollm2, "")
            .replace("context_tokens = 512", "context_tokens = 2048"),
    )))
    .await;
    let ask = |words: usize, turns: usize| {
        let mut messages: Vec<Value> = (0..turns)
            .map(|i| {
                json!({"role": if i % 2 == 0 { "user" } else { "assistant" },
                    "content": "lighthouse ".repeat(words / turns)})
            })
            .collect();
        messages.push(json!({"role": "user", "content": "Say hi."}));
        json!({"model": "tiny", "max_tokens": 4, "messages": messages})
    };
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    // Fits tiny: tiny serves it.
    let short = post(&host, "/v1/chat/completions", ask(40, 1)).await;
    assert_eq!(short.status(), 200);
    assert_eq!(header(&short, "x-modelyard-model").as_deref(), Some("tiny"));
    assert_eq!(header(&short, "x-modelyard-context"), None);
    // Too long for tiny's 512, fits roomy's 2048: roomy serves it, uncompressed.
    let long = post(&host, "/v1/chat/completions", ask(700, 2)).await;
    assert_eq!(long.status(), 200);
    assert_eq!(header(&long, "x-modelyard-model").as_deref(), Some("roomy"));
    assert_eq!(
        header(&long, "x-modelyard-context").as_deref(),
        Some("fallback; from=tiny")
    );
    // Too long for both: compressed on tiny, as without a fallback.
    let huge = post(&host, "/v1/chat/completions", ask(2400, 8)).await;
    assert_eq!(huge.status(), 200);
    assert_eq!(header(&huge, "x-modelyard-model").as_deref(), Some("tiny"));
    let context = header(&huge, "x-modelyard-context").unwrap_or_default();
    assert!(context.starts_with("compressed;"), "{context}");
    // The same holds on the other front doors (here Anthropic's).
    let mut messages = ask(700, 2);
    messages["system"] = json!("Be brief.");
    let via_messages = post(&host, "/v1/messages", messages).await;
    assert_eq!(via_messages.status(), 200);
    assert_eq!(
        header(&via_messages, "x-modelyard-model").as_deref(),
        Some("roomy")
    );
    host.stop().await;
}

/// A stand-in server with chat completions only (a unit-level check: no real server here
/// lacks the routes).
async fn chat_only_stub() -> String {
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route(
            "/v1/models",
            get(|| async { axum::Json(json!({"object": "list", "data": [{"id": "stub"}]})) }),
        )
        .route(
            "/v1/chat/completions",
            post(|| async {
                axum::Json(json!({"id": "chatcmpl-9", "object": "chat.completion",
                    "created": 0, "model": "stub",
                    "choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "Hello!"}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2}}))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_answers_404_on_an_api_gets_it_translated_from_then_on() {
    let stub = chat_only_stub().await;
    let host = TestHost::start(settings(&format!(
        "[models.bare]\nurl = \"{stub}/v1\"\nsize = \"1MiB\"\n"
    )))
    .await;
    for _ in 0..2 {
        let body = json!({"model": "bare", "input": "hi", "max_output_tokens": 4});
        let resp = post(&host, "/v1/responses", body).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-modelyard-translated"], "chat/completions");
        let out: Value = resp.json().await.unwrap();
        assert_eq!(out["output"][0]["content"][0]["text"], "Hello!", "{out}");
        assert_eq!(out["id"], "resp_9", "{out}");
    }
    let body =
        json!({"model": "bare", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]});
    let out: Value = post(&host, "/v1/messages", body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(out["type"], "message", "{out}");
    assert_eq!(out["content"][0]["text"], "Hello!", "{out}");
    assert_eq!(out["stop_reason"], "end_turn", "{out}");
    host.stop().await;
}
