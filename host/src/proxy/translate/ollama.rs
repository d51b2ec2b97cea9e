//! Ollama's API over the OpenAI routes: `chat` becomes chat completions, `generate` a chat turn
//! (or, with `raw`, a bare completion), `embed` and `embeddings` embeddings; the answers come
//! back in Ollama's field names (`message`, `response`, `done`, `done_reason`, durations in
//! nanoseconds), streamed as newline-delimited JSON unless `stream` is false. `keep_alive` is
//! read here and kept by the scheduler.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Front, Meta, Summary, sse, turn_text, untranslated};
use crate::proxy::ApiError;
use crate::proxy::exchange::Route;
use crate::scheduler::KeepAlive;

const API: &str = "Ollama";

/// The request's `keep_alive`: seconds as a number, or a duration (`"5m"`, `"1h30m"`,
/// `"-1"`); `None` when absent.
pub fn keep_alive(body: &Value) -> Result<Option<KeepAlive>, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_keep_alive",
            format!(
                "keep_alive must be seconds or a duration such as \"5m\", not {}",
                body["keep_alive"]
            ),
        )
    };
    let secs = match &body["keep_alive"] {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_f64().ok_or_else(bad)?,
        Value::String(s) => {
            let s = s.trim();
            if let Ok(n) = s.parse::<f64>() {
                n
            } else if let Some(rest) = s.strip_prefix('-') {
                humantime::parse_duration(rest).map_err(|_| bad())?;
                -1.0
            } else {
                humantime::parse_duration(s)
                    .map_err(|_| bad())?
                    .as_secs_f64()
            }
        }
        _ => return Err(bad()),
    };
    Ok(Some(if secs < 0.0 {
        KeepAlive::Forever
    } else if secs == 0.0 {
        KeepAlive::Unload
    } else {
        KeepAlive::For(Duration::try_from_secs_f64(secs).map_err(|_| bad())?)
    }))
}

/// Ollama's `options` that chat completions name otherwise or alike.
fn options(body: &Value, to: &mut Value) {
    let o = &body["options"];
    for (from, into) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("min_p", "min_p"),
        ("seed", "seed"),
        ("stop", "stop"),
        ("num_predict", "max_tokens"),
        ("repeat_penalty", "repeat_penalty"),
        ("presence_penalty", "presence_penalty"),
        ("frequency_penalty", "frequency_penalty"),
    ] {
        if !o[from].is_null() {
            to[into] = o[from].clone();
        }
    }
    // A negative num_predict is Ollama's "no limit".
    if to["max_tokens"].as_i64().is_some_and(|n| n < 0) {
        to.as_object_mut().map(|m| m.remove("max_tokens"));
    }
    match &body["format"] {
        Value::String(f) if f == "json" => to["response_format"] = json!({"type": "json_object"}),
        schema @ Value::Object(_) => {
            to["response_format"] =
                json!({"type": "json_schema", "json_schema": {"name": "format", "schema": schema}})
        }
        _ => {}
    }
}

fn no_images(v: &Value) -> Result<(), ApiError> {
    if v["images"].as_array().is_some_and(|i| !i.is_empty()) {
        return Err(untranslated(API, "images"));
    }
    Ok(())
}

pub fn chat_request(body: &Value) -> Result<Value, ApiError> {
    if super::given(&body["tools"]) {
        return Err(untranslated(API, "tools"));
    }
    let mut messages = Vec::new();
    for m in body["messages"].as_array().into_iter().flatten() {
        no_images(m)?;
        let role = match m["role"].as_str() {
            Some(r @ ("system" | "user" | "assistant")) => r,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "a message's role must be system, user or assistant",
                ));
            }
        };
        messages.push(json!({"role": role, "content": turn_text(&m["content"], API)?}));
    }
    let mut chat = json!({"messages": messages});
    options(body, &mut chat);
    Ok(chat)
}

/// `generate`: a chat turn (the model's template applies), or with `raw` a bare completion.
pub fn generate_request(body: &Value) -> Result<(Route, Value), ApiError> {
    no_images(body)?;
    let prompt = body["prompt"].as_str().unwrap_or_default();
    let mut out = if body["raw"].as_bool() == Some(true) {
        (Route::Completions, json!({"prompt": prompt}))
    } else {
        let mut messages = Vec::new();
        if let Some(system) = body["system"].as_str() {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": prompt}));
        (Route::Chat, json!({"messages": messages}))
    };
    options(body, &mut out.1);
    Ok(out)
}

pub fn embed_request(body: &Value) -> Result<Value, ApiError> {
    Ok(json!({"input": body["input"]}))
}

pub fn embeddings_request(body: &Value) -> Result<Value, ApiError> {
    Ok(json!({"input": body["prompt"]}))
}

/// Now, as Ollama writes times (RFC 3339, UTC).
fn now() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

fn ns(ms: f64) -> u64 {
    (ms * 1e6) as u64
}

fn done_reason(s: &Summary) -> &'static str {
    if s.cut_off() { "length" } else { "stop" }
}

/// An answer line: `message` for chat, `response` for generate.
fn line(front: Front, meta: &Meta, text: &str) -> Value {
    let mut v = json!({"model": meta.model, "created_at": now(), "done": false});
    if front == Front::OllamaChat {
        v["message"] = json!({"role": "assistant", "content": text});
    } else {
        v["response"] = json!(text);
    }
    v
}

fn finished(front: Front, meta: &Meta, s: &Summary, text: &str) -> Value {
    let mut v = line(front, meta, text);
    v["done"] = json!(true);
    v["done_reason"] = json!(done_reason(s));
    v["total_duration"] = json!(u64::try_from(meta.began.elapsed().as_nanos()).unwrap_or(u64::MAX));
    v["load_duration"] = json!(meta.load_ns);
    v["prompt_eval_count"] = json!(s.prompt_tokens);
    v["prompt_eval_duration"] = json!(ns(s.prompt_ms));
    v["eval_count"] = json!(s.completion_tokens);
    v["eval_duration"] = json!(ns(s.predicted_ms));
    v
}

pub fn whole(front: Front, s: &Summary, meta: &Meta) -> Value {
    finished(front, meta, s, &s.text)
}

pub fn delta(front: Front, meta: &Meta, text: &str) -> Vec<u8> {
    sse::ndjson(&line(front, meta, text))
}

pub fn end(front: Front, meta: &Meta, s: &Summary) -> Vec<u8> {
    sse::ndjson(&finished(front, meta, s, ""))
}

fn vectors(answer: &Value) -> Vec<Value> {
    answer["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| d["embedding"].clone())
        .collect()
}

pub fn embed_answer(answer: &Value, meta: &Meta) -> Value {
    json!({
        "model": meta.model,
        "embeddings": vectors(answer),
        "total_duration": u64::try_from(meta.began.elapsed().as_nanos()).unwrap_or(u64::MAX),
        "load_duration": meta.load_ns,
        "prompt_eval_count": answer["usage"]["prompt_tokens"],
    })
}

pub fn embeddings_answer(answer: &Value) -> Value {
    json!({"embedding": vectors(answer).into_iter().next().unwrap_or(json!([]))})
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_reads_ollamas_forms() {
        let ka = |v: Value| keep_alive(&json!({"keep_alive": v}));
        assert_eq!(ka(json!(0)).unwrap(), Some(KeepAlive::Unload));
        assert_eq!(ka(json!("0")).unwrap(), Some(KeepAlive::Unload));
        assert_eq!(ka(json!(-1)).unwrap(), Some(KeepAlive::Forever));
        assert_eq!(ka(json!("-1m")).unwrap(), Some(KeepAlive::Forever));
        assert_eq!(
            ka(json!("5m")).unwrap(),
            Some(KeepAlive::For(Duration::from_secs(300)))
        );
        assert_eq!(
            ka(json!("1h30m")).unwrap(),
            Some(KeepAlive::For(Duration::from_secs(5400)))
        );
        assert_eq!(
            ka(json!(90)).unwrap(),
            Some(KeepAlive::For(Duration::from_secs(90)))
        );
        assert_eq!(keep_alive(&json!({})).unwrap(), None);
        assert!(ka(json!("soon")).is_err());
        assert!(ka(json!([1])).is_err());
    }

    #[test]
    fn options_take_chat_names() {
        let body = json!({"messages": [{"role": "user", "content": "hi"}], "format": "json",
            "options": {"num_predict": 7, "temperature": 0.1, "stop": ["x"]}});
        assert_eq!(
            chat_request(&body).unwrap(),
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 7,
                "temperature": 0.1, "stop": ["x"], "response_format": {"type": "json_object"}})
        );
        let unlimited = json!({"options": {"num_predict": -1}});
        assert!(chat_request(&unlimited).unwrap()["max_tokens"].is_null());
        let image = json!({"messages": [{"role": "user", "content": "hi", "images": ["aGk="]}]});
        assert_eq!(
            chat_request(&image).unwrap_err().code,
            "unsupported_by_translation"
        );
        let (route, raw) = generate_request(&json!({"prompt": "Once", "raw": true})).unwrap();
        assert_eq!(
            (route, raw),
            (Route::Completions, json!({"prompt": "Once"}))
        );
        let (route, _) = generate_request(&json!({"prompt": "Once", "system": "s"})).unwrap();
        assert_eq!(route, Route::Chat);
    }
}
