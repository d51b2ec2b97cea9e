//! Anthropic's Messages API over chat completions: `system` (a string or text blocks) and the
//! turns' text blocks become chat messages, `max_tokens` and `stop_sequences` carry over; the
//! answer becomes a `message`, or Anthropic's event stream (`message_start`,
//! `content_block_start`, `content_block_delta` …, `content_block_stop`, `message_delta`,
//! `message_stop`).

use serde_json::{Value, json};

use super::{Meta, Summary, copy_sampling, sse, turn_text, untranslated};
use crate::proxy::ApiError;

const API: &str = "Messages";

pub fn request(body: &Value) -> Result<Value, ApiError> {
    let mut messages = Vec::new();
    let system = turn_text(&body["system"], API)?;
    if !system.is_empty() {
        messages.push(json!({"role": "system", "content": system}));
    }
    for turn in body["messages"].as_array().into_iter().flatten() {
        let role = match turn["role"].as_str() {
            Some(r @ ("user" | "assistant")) => r,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "a message's role must be user or assistant",
                ));
            }
        };
        messages.push(json!({"role": role, "content": turn_text(&turn["content"], API)?}));
    }
    if super::given(&body["tools"]) {
        return Err(untranslated(API, "tools"));
    }
    let mut chat = json!({"messages": messages});
    if let Some(n) = body["max_tokens"].as_u64() {
        chat["max_tokens"] = json!(n);
    }
    if !body["stop_sequences"].is_null() {
        chat["stop"] = body["stop_sequences"].clone();
    }
    copy_sampling(body, &mut chat);
    Ok(chat)
}

/// Anthropic's `stop_reason` for OpenAI's `finish_reason`.
fn stop_reason(s: &Summary) -> &'static str {
    match s.finish.as_deref() {
        Some("length") => "max_tokens",
        Some("tool_calls") => "tool_use",
        _ => "end_turn",
    }
}

fn id(s: &Summary) -> String {
    format!("msg_{}", s.id.trim_start_matches("chatcmpl-"))
}

pub fn whole(s: &Summary, meta: &Meta) -> Value {
    json!({
        "id": id(s), "type": "message", "role": "assistant", "model": meta.model,
        "content": [{"type": "text", "text": s.text}],
        "stop_reason": stop_reason(s), "stop_sequence": null,
        "usage": {"input_tokens": s.prompt_tokens, "output_tokens": s.completion_tokens},
    })
}

fn ev(name: &str, mut data: Value) -> Vec<u8> {
    data["type"] = json!(name);
    sse::event(name, &data)
}

pub fn start(meta: &Meta, s: &Summary) -> Vec<u8> {
    let message = json!({
        "id": id(s), "type": "message", "role": "assistant", "model": meta.model,
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": s.prompt_tokens, "output_tokens": 0},
    });
    let mut out = ev("message_start", json!({"message": message}));
    out.extend(ev(
        "content_block_start",
        json!({"index": 0, "content_block": {"type": "text", "text": ""}}),
    ));
    out
}

pub fn delta(text: &str) -> Vec<u8> {
    ev(
        "content_block_delta",
        json!({"index": 0, "delta": {"type": "text_delta", "text": text}}),
    )
}

pub fn end(s: &Summary) -> Vec<u8> {
    let mut out = ev("content_block_stop", json!({"index": 0}));
    out.extend(ev(
        "message_delta",
        json!({
            "delta": {"stop_reason": stop_reason(s), "stop_sequence": null},
            "usage": {"input_tokens": s.prompt_tokens, "output_tokens": s.completion_tokens},
        }),
    ));
    out.extend(ev("message_stop", json!({})));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn system_and_blocks_become_chat_messages() {
        let body = json!({"model": "m", "max_tokens": 5, "stop_sequences": ["\n"],
            "system": [{"type": "text", "text": "Terse."}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                         {"role": "assistant", "content": "Hello"}]});
        assert_eq!(
            request(&body).unwrap(),
            json!({"messages": [
                {"role": "system", "content": "Terse."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"}],
                "max_tokens": 5, "stop": ["\n"]})
        );
        let tool = json!({"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]});
        assert_eq!(
            request(&tool).unwrap_err().code,
            "unsupported_by_translation"
        );
    }

    #[test]
    fn finish_reasons_map_to_stop_reasons() {
        let with = |f: &str| Summary {
            finish: Some(f.into()),
            ..Summary::default()
        };
        assert_eq!(stop_reason(&with("length")), "max_tokens");
        assert_eq!(stop_reason(&with("stop")), "end_turn");
    }
}
