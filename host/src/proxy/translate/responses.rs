//! OpenAI's Responses API over chat completions: `instructions` and `input` (a string, or
//! message items with text parts) become chat messages, `max_output_tokens` the output limit;
//! the answer becomes a `response` object, or its event stream (`response.created` …
//! `response.output_text.delta` … `response.completed`).

use serde_json::{Value, json};

use super::{Meta, Summary, copy_sampling, sse, turn_text, untranslated};
use crate::proxy::ApiError;

const API: &str = "Responses";

pub fn request(body: &Value) -> Result<Value, ApiError> {
    let mut messages = Vec::new();
    if let Some(text) = body["instructions"].as_str() {
        messages.push(json!({"role": "system", "content": text}));
    }
    match &body["input"] {
        Value::String(s) => messages.push(json!({"role": "user", "content": s})),
        Value::Array(items) => {
            for item in items {
                if !matches!(item["type"].as_str(), None | Some("message")) {
                    return Err(untranslated(API, item["type"].as_str().unwrap_or_default()));
                }
                let role = match item["role"].as_str() {
                    Some("developer") => "system",
                    Some(r @ ("system" | "user" | "assistant")) => r,
                    _ => {
                        return Err(ApiError::bad_request(
                            "invalid_request",
                            "an input message's role must be user, assistant, system or developer",
                        ));
                    }
                };
                messages.push(json!({"role": role, "content": turn_text(&item["content"], API)?}));
            }
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "\"input\" must be a string or an array of input items",
            ));
        }
    }
    for key in ["tools", "previous_response_id", "reasoning"] {
        if super::given(&body[key]) {
            return Err(untranslated(API, key));
        }
    }
    let mut chat = json!({"messages": messages});
    if let Some(n) = body["max_output_tokens"].as_u64() {
        chat["max_tokens"] = json!(n);
    }
    copy_sampling(body, &mut chat);
    Ok(chat)
}

fn ids(s: &Summary) -> (String, String) {
    let id = s.id.trim_start_matches("chatcmpl-");
    (format!("resp_{id}"), format!("msg_{id}"))
}

fn message(s: &Summary, status: &str) -> Value {
    let (_, msg) = ids(s);
    json!({
        "type": "message", "id": msg, "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": s.text, "annotations": []}],
    })
}

fn response(s: &Summary, meta: &Meta, status: &str, output: Vec<Value>) -> Value {
    let (resp, _) = ids(s);
    let mut r = json!({
        "id": resp, "object": "response", "created_at": s.created, "status": status,
        "model": meta.model, "output": output,
        "usage": {
            "input_tokens": s.prompt_tokens, "output_tokens": s.completion_tokens,
            "total_tokens": s.prompt_tokens + s.completion_tokens,
        },
    });
    if status == "incomplete" {
        r["incomplete_details"] = json!({"reason": "max_output_tokens"});
    }
    r
}

fn final_status(s: &Summary) -> &'static str {
    if s.cut_off() {
        "incomplete"
    } else {
        "completed"
    }
}

pub fn whole(s: &Summary, meta: &Meta) -> Value {
    let status = final_status(s);
    response(s, meta, status, vec![message(s, status)])
}

fn ev(meta: &mut Meta, name: &str, mut data: Value) -> Vec<u8> {
    data["type"] = json!(name);
    data["sequence_number"] = json!(meta.next_seq());
    sse::event(name, &data)
}

pub fn start(meta: &mut Meta, s: &Summary) -> Vec<u8> {
    let (_, msg) = ids(s);
    let pending = response(s, meta, "in_progress", Vec::new());
    let mut out = ev(meta, "response.created", json!({"response": pending}));
    out.extend(ev(
        meta,
        "response.in_progress",
        json!({"response": pending}),
    ));
    let empty = json!({"type": "message", "id": msg, "status": "in_progress",
        "role": "assistant", "content": []});
    out.extend(ev(
        meta,
        "response.output_item.added",
        json!({"output_index": 0, "item": empty}),
    ));
    out.extend(ev(
        meta,
        "response.content_part.added",
        json!({"item_id": msg, "output_index": 0, "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": []}}),
    ));
    out
}

pub fn delta(meta: &mut Meta, s: &Summary, delta: &str) -> Vec<u8> {
    let (_, msg) = ids(s);
    ev(
        meta,
        "response.output_text.delta",
        json!({"item_id": msg, "output_index": 0, "content_index": 0, "delta": delta, "logprobs": []}),
    )
}

pub fn end(meta: &mut Meta, s: &Summary) -> Vec<u8> {
    let (_, msg) = ids(s);
    let status = final_status(s);
    let part = json!({"type": "output_text", "text": s.text, "annotations": []});
    let at = json!({"item_id": msg, "output_index": 0, "content_index": 0});
    let with = |extra: Value| {
        let mut v = at.clone();
        for (k, x) in extra.as_object().into_iter().flatten() {
            v[k] = x.clone();
        }
        v
    };
    let mut out = ev(
        meta,
        "response.output_text.done",
        with(json!({"text": s.text, "logprobs": []})),
    );
    out.extend(ev(
        meta,
        "response.content_part.done",
        with(json!({"part": part})),
    ));
    out.extend(ev(
        meta,
        "response.output_item.done",
        json!({"output_index": 0, "item": message(s, status)}),
    ));
    let name = if status == "completed" {
        "response.completed"
    } else {
        "response.incomplete"
    };
    let done = whole(s, meta);
    out.extend(ev(meta, name, json!({"response": done})));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn input_and_instructions_become_chat_messages() {
        let body = json!({"model": "m", "instructions": "Be brief.", "max_output_tokens": 9,
            "temperature": 0.5, "input": [
                {"role": "developer", "content": "Rules."},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}]});
        let chat = request(&body).unwrap();
        assert_eq!(
            chat,
            json!({"messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "system", "content": "Rules."},
                {"role": "user", "content": "Hi"}],
                "max_tokens": 9, "temperature": 0.5})
        );
        let tools = json!({"input": "hi", "tools": [{"type": "function", "name": "f"}]});
        assert_eq!(
            request(&tools).unwrap_err().code,
            "unsupported_by_translation"
        );
        let image = json!({"input": [{"role": "user", "content": [{"type": "input_image"}]}]});
        assert_eq!(
            request(&image).unwrap_err().code,
            "unsupported_by_translation"
        );
    }

    #[test]
    fn a_cut_off_answer_is_incomplete() {
        let s = Summary {
            id: "chatcmpl-7".into(),
            text: "Hel".into(),
            finish: Some("length".into()),
            prompt_tokens: 3,
            completion_tokens: 2,
            ..Summary::default()
        };
        let meta = Meta {
            model: "m".into(),
            began: tokio::time::Instant::now(),
            load_ns: 0,
            seq: 0,
        };
        let r = whole(&s, &meta);
        assert_eq!(r["id"], "resp_7");
        assert_eq!(r["status"], "incomplete");
        assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(r["output"][0]["content"][0]["text"], "Hel");
        assert_eq!(r["usage"]["total_tokens"], 5);
    }
}
