//! The parse stage: the body read within its size limit, the model asked for, and what the
//! headers and the API key say of the request (task, priority, client), plus the sticky key of
//! each running experiment.

use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, header};
use serde_json::Value;

use super::exchange::{Arm, Exchange, Route};
use super::{ApiError, AppState, PRIORITY_HEADER, TASK_HEADER};
use crate::config::ApiKey;
use crate::engine::Hook;
use crate::engine::experiment::Sticky;
use crate::engine::tokens;

/// Client headers the server gets too: Anthropic's API version and beta flags.
const PASSED_HEADERS: [&str; 2] = ["anthropic-version", "anthropic-beta"];

/// Fills the exchange from the request, or says what is wrong with it.
pub async fn parse(app: &AppState, req: Request, ex: &mut Exchange) -> Result<(), ApiError> {
    let (headers, key, bytes) = read_body(app, req).await?;
    let body: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not JSON: {e}")))?;
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the body must be a JSON object",
        ));
    }
    let Some(asked) = body["model"].as_str() else {
        return Err(ApiError::bad_request(
            "missing_model",
            "the body has no \"model\" string",
        ));
    };
    ex.asked = asked.to_string();
    check_shape(ex.route, &body)?;
    let mut body = body;
    normalize(ex.route, &mut body);
    if ex.route.dialect() == super::dialect::Dialect::Ollama {
        ex.keep_alive = super::translate::keep_alive(&body)?;
    }
    ex.priority = match header_text(&headers, PRIORITY_HEADER) {
        None => key.as_ref().map_or(0, |k| k.priority),
        Some(p) => p.trim().parse().map_err(|_| {
            ApiError::bad_request(
                "invalid_priority",
                format!("{PRIORITY_HEADER} must be an integer, not {p:?}"),
            )
        })?,
    };
    ex.task = header_text(&headers, TASK_HEADER)
        .or_else(|| body["metadata"]["task"].as_str().map(str::to_string));
    ex.user = body["user"]
        .as_str()
        .or(body["metadata"]["user_id"].as_str())
        .map(str::to_string);
    ex.passed_headers = PASSED_HEADERS
        .iter()
        .filter_map(|name| {
            Some((
                header::HeaderName::from_static(name),
                headers.get(*name)?.clone(),
            ))
        })
        .collect();
    ex.client = key
        .as_ref()
        .map(|k| k.name.as_str())
        .or(ex.user.as_deref())
        .map(client_hash);
    ex.id = format!("req-{}", app.next_id.fetch_add(1, Ordering::Relaxed));
    ex.estimated_tokens = tokens::estimate(&String::from_utf8_lossy(&bytes));
    ex.body = body;
    ex.arms = arms(app, ex);
    Ok(())
}

/// The fields each route reads, checked before anything is chosen or loaded, so a malformed
/// request costs no load and reaches no server.
fn check_shape(route: Route, body: &Value) -> Result<(), ApiError> {
    let wrong = |field: &str, should: &str| {
        let code = match field {
            "messages" => "invalid_messages",
            "prompt" => "invalid_prompt",
            _ => "invalid_request",
        };
        ApiError::bad_request(code, format!("\"{field}\" must be {should}"))
    };
    let is_array = |f: &str| body[f].is_array();
    let text_or_list = |f: &str| body[f].is_string() || body[f].is_array();
    let counts = ["max_tokens", "max_completion_tokens", "max_output_tokens"];
    if let Some(f) = counts
        .into_iter()
        .find(|f| !body[*f].is_null() && !body[*f].is_u64())
    {
        return Err(wrong(f, "a non-negative integer"));
    }
    if !body["stream"].is_null() && !body["stream"].is_boolean() {
        return Err(wrong("stream", "true or false"));
    }
    match route {
        Route::Chat if !is_array("messages") => Err(wrong("messages", "an array of messages")),
        Route::Messages | Route::CountTokens if !is_array("messages") => {
            Err(wrong("messages", "an array of messages"))
        }
        Route::Messages if body["max_tokens"].is_null() => Err(ApiError::bad_request(
            "invalid_request",
            "\"max_tokens\" is required (the Messages API has no default)",
        )),
        Route::Messages | Route::CountTokens
            if !(body["system"].is_null() || text_or_list("system")) =>
        {
            Err(wrong("system", "a string or an array of text blocks"))
        }
        Route::Responses if !text_or_list("input") => {
            Err(wrong("input", "a string or an array of input items"))
        }
        Route::Completions if !text_or_list("prompt") => {
            Err(wrong("prompt", "a string or an array of strings"))
        }
        Route::Embeddings if !text_or_list("input") => Err(wrong("input", "a string or an array")),
        Route::Rerank if !body["query"].is_string() => Err(wrong("query", "a string")),
        Route::Rerank if !is_array("documents") => Err(wrong("documents", "an array of documents")),
        Route::OllamaChat if !is_array("messages") => {
            Err(wrong("messages", "an array of messages"))
        }
        Route::OllamaGenerate | Route::OllamaEmbeddings if !body["prompt"].is_string() => {
            Err(wrong("prompt", "a string"))
        }
        Route::OllamaEmbed if !text_or_list("input") => {
            Err(wrong("input", "a string or an array of strings"))
        }
        Route::OllamaChat
        | Route::OllamaGenerate
        | Route::OllamaEmbed
        | Route::OllamaEmbeddings
            if !(body["options"].is_null() || body["options"].is_object()) =>
        {
            Err(wrong("options", "an object"))
        }
        _ => Ok(()),
    }
}

/// Spells out what an API lets clients leave implicit and some servers need: a Responses
/// input message without `"type"` (OpenAI's "easy input message") gets `"type": "message"`
/// (llama-server refuses it otherwise).
fn normalize(route: Route, body: &mut Value) {
    if route == Route::Responses
        && let Some(items) = body["input"].as_array_mut()
    {
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            if item.contains_key("role") && !item.contains_key("type") {
                item.insert("type".into(), "message".into());
            }
        }
    }
}

/// Each experiment running now, with this request's sticky key for it.
fn arms(app: &AppState, ex: &Exchange) -> Vec<Arm> {
    Hook::ALL
        .into_iter()
        .filter_map(|hook| {
            let experiment = app.scheduler.hooks().experiment(hook)?;
            let key = match experiment.sticky {
                Sticky::Client => ex.client.clone(),
                Sticky::User => ex.user.clone(),
                Sticky::Request => None,
            }
            .unwrap_or_else(|| ex.id.clone());
            Some(Arm {
                hook,
                experiment,
                key,
            })
        })
        .collect()
}

/// Reads the body, refusing one over the limit before any of it is buffered.
async fn read_body(
    app: &AppState,
    req: Request,
) -> Result<(HeaderMap, Option<ApiKey>, Bytes), ApiError> {
    let key = req.extensions().get::<ApiKey>().cloned();
    let (parts, bytes) = read_within(app, req).await?;
    Ok((parts.headers, key, bytes))
}

/// A request's head and its body within `server.max_body` and `server.body_timeout`: one
/// declared over the size is refused before any of it is read, one trickling in slower than
/// the time is cut off with 408. Every route that reads a body reads it here.
pub async fn read_within(
    app: &AppState,
    req: Request,
) -> Result<(axum::http::request::Parts, Bytes), ApiError> {
    let (limit, deadline) = {
        let server = &app.scheduler.settings().server;
        (server.max_body, server.body_timeout)
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let bytes = tokio::time::timeout(deadline, read)
        .await
        .map_err(|_| ApiError::body_timeout(deadline))?
        .map_err(|_| ApiError::too_large(limit))?;
    Ok((parts, bytes))
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `request.client`: the first 16 hex digits of SHA-256 over the client's name, stable across
/// requests and never the name itself.
fn client_hash(name: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(name.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The newest user message (chat's and Anthropic's `messages`, the Responses API's `input`),
/// or a completion's prompt, for policies that read the task in it.
pub fn last_user_message(body: &Value) -> String {
    let turns = body["messages"].as_array().or(body["input"].as_array());
    turns
        .and_then(|ms| ms.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| super::fit::text_of(&m["content"]))
        .or_else(|| body["input"].as_str().map(str::to_string))
        .or_else(|| body["prompt"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_client_is_a_stable_hash_of_the_name_never_the_name() {
        let a = client_hash("team-a");
        assert_eq!(a, client_hash("team-a"), "stable");
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, client_hash("team-b"));
        // SHA-256("team-a"), first 8 bytes.
        assert_eq!(a, "96c2886c51d1dfb4");
    }
}
