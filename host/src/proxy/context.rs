//! Fitting a request into its model's window. The host counts each message's tokens (with the
//! backend's tokenizer where it has one, llama-server's `/tokenize`; else the documented
//! estimate of [`tokens`]) before any hook runs, so `compress-context` never waits on the
//! network. Compression runs only when the prompt does not fit the window less the requested
//! output, and is never silent: the caller reports what was done, or the request fails with
//! `context_length_exceeded`.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};

use super::ApiError;
use crate::backend::Endpoint;
use crate::engine::types::{CompressionRequest, Message, Model};
use crate::engine::{Hooks, tokens};

/// Tokens kept free for the answer when a request does not say how many it wants.
pub const DEFAULT_OUTPUT_RESERVE: u32 = 256;
/// Tokens a chat template adds around each message.
const PER_MESSAGE_OVERHEAD: u32 = 4;
/// Below this share of the budget, the estimate is trusted and nothing is tokenized.
const EXACT_COUNT_ABOVE: f64 = 0.5;
const TOKENIZE_TIMEOUT: Duration = Duration::from_secs(10);

/// What compression did, for the `x-modelyard-context` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compressed {
    pub before: u32,
    pub after: u32,
    pub dropped_messages: usize,
}

impl Compressed {
    pub fn header(&self) -> String {
        format!(
            "compressed; before={}; after={}; dropped_messages={}",
            self.before, self.after, self.dropped_messages
        )
    }
}

/// Counts tokens, remembering which backends have no tokenizer.
#[derive(Debug, Default)]
pub struct Counter {
    no_tokenizer: Mutex<HashSet<String>>,
}

impl Counter {
    /// Exact counts from the backend's tokenizer, or `None` where it has none.
    async fn exact(
        &self,
        http: &reqwest::Client,
        endpoint: &Endpoint,
        texts: &[String],
    ) -> Option<Vec<u32>> {
        let root = endpoint
            .api_base
            .strip_suffix("/v1")
            .unwrap_or(&endpoint.api_base)
            .to_string();
        if self
            .no_tokenizer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&root)
        {
            return None;
        }
        let url = format!("{root}/tokenize");
        let calls = texts.iter().map(|t| {
            http.post(&url)
                .timeout(TOKENIZE_TIMEOUT)
                .json(&json!({"content": t}))
                .send()
        });
        let mut counts = Vec::with_capacity(texts.len());
        for resp in futures_util::future::join_all(calls).await {
            let tokens = match resp {
                Ok(r) if r.status().is_success() => r.json::<Value>().await.ok().and_then(|v| {
                    v["tokens"]
                        .as_array()
                        .map(|a| u32::try_from(a.len()).unwrap_or(u32::MAX))
                }),
                Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
                    self.no_tokenizer
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(root.clone());
                    None
                }
                _ => None,
            };
            counts.push(tokens?);
        }
        Some(counts)
    }
}

/// The text of a message's `content`: a string, or the text parts of an array.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The output a request asks for.
pub fn requested_output(body: &Value) -> Option<u32> {
    body.get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_u64)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

fn too_long(message: String) -> ApiError {
    ApiError::bad_request("context_length_exceeded", message)
}

/// The prompt budget: the window less the requested output.
fn budget(body: &Value, model: &Model) -> Result<u32, ApiError> {
    let window = model.context_tokens;
    let output = requested_output(body).unwrap_or(DEFAULT_OUTPUT_RESERVE.min(window / 4));
    if output >= window {
        return Err(too_long(format!(
            "{} asks for {output} output tokens; its window is {window}",
            model.id
        )));
    }
    Ok(window - output)
}

/// Fits a chat request's `messages` into `model`'s window, through `compress-context` if
/// needed. Returns what compression did, or `None` when the messages fit as they are.
#[allow(clippy::too_many_arguments)]
pub async fn fit_chat(
    key: &str,
    counter: &Counter,
    http: &reqwest::Client,
    hooks: &std::sync::Arc<Hooks>,
    endpoint: &Endpoint,
    model: &Model,
    body: &mut Value,
) -> Result<(Option<Compressed>, u32), ApiError> {
    let Some(originals) = body.get("messages").and_then(Value::as_array).cloned() else {
        return Err(ApiError::bad_request(
            "invalid_messages",
            "\"messages\" must be an array",
        ));
    };
    let budget = budget(body, model)?;
    let texts: Vec<String> = originals.iter().map(|m| text_of(&m["content"])).collect();
    let estimated: u32 = texts.iter().map(|t| tokens::estimate_message(t)).sum();
    if f64::from(estimated) <= f64::from(budget) * EXACT_COUNT_ABOVE {
        return Ok((None, estimated));
    }
    let counts = match counter.exact(http, endpoint, &texts).await {
        Some(c) => c
            .into_iter()
            .map(|n| n.saturating_add(PER_MESSAGE_OVERHEAD))
            .collect(),
        None => texts
            .iter()
            .map(|t| tokens::estimate_message(t))
            .collect::<Vec<u32>>(),
    };
    let before: u32 = counts.iter().sum();
    if before <= budget {
        return Ok((None, before));
    }
    let messages: Vec<Message> = originals
        .iter()
        .zip(&texts)
        .zip(&counts)
        .map(|((m, text), n)| Message {
            role: m["role"].as_str().unwrap_or("user").to_string(),
            content: text.clone(),
            tokens: *n,
        })
        .collect();
    let req = CompressionRequest {
        messages: messages.clone(),
        budget_tokens: budget,
        model: model.clone(),
    };
    let hooks = hooks.clone();
    let key = key.to_string();
    let decided = tokio::task::spawn_blocking(move || hooks.compress_context_for(&key, &req))
        .await
        .map_err(|e| ApiError::backend(format!("compress-context did not run: {e}")))?;
    if let crate::engine::DecidedBy::Fallback(Some(e)) = &decided.by {
        tracing::warn!(error = %e, "compress-context fell back to the native default");
    }
    let kept = decided.value.map_err(|reason| {
        too_long(format!(
            "the conversation needs {before} tokens; {} takes {budget} besides the requested output, \
             and it could not be compressed: {reason}",
            model.id
        ))
    })?;
    // Keep each surviving message as the client sent it (tool calls, names, parts); new ones
    // (a summary, say) are plain text.
    let mut used = vec![false; originals.len()];
    let rebuilt: Vec<Value> = kept
        .iter()
        .map(|k| {
            let same = (0..originals.len()).find(|&i| {
                !used[i] && messages[i].role == k.role && messages[i].content == k.content
            });
            match same {
                Some(i) => {
                    used[i] = true;
                    originals[i].clone()
                }
                None => json!({"role": k.role, "content": k.content}),
            }
        })
        .collect();
    let after: u32 = kept.iter().map(|m| m.tokens).sum();
    let dropped_messages = used.iter().filter(|u| !**u).count();
    body["messages"] = Value::Array(rebuilt);
    Ok((
        Some(Compressed {
            before,
            after,
            dropped_messages,
        }),
        after,
    ))
}

/// Refuses a completion prompt that does not fit (a bare prompt has no turns to compress).
pub async fn check_prompt(
    counter: &Counter,
    http: &reqwest::Client,
    endpoint: &Endpoint,
    model: &Model,
    body: &Value,
) -> Result<u32, ApiError> {
    let budget = budget(body, model)?;
    let text = match &body["prompt"] {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("\n"),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_prompt",
                "\"prompt\" must be a string or an array of strings",
            ));
        }
    };
    let estimated = tokens::estimate(&text);
    if f64::from(estimated) <= f64::from(budget) * EXACT_COUNT_ABOVE {
        return Ok(estimated);
    }
    let count = counter
        .exact(http, endpoint, std::slice::from_ref(&text))
        .await
        .and_then(|c| c.first().copied())
        .unwrap_or(estimated);
    if count > budget {
        return Err(too_long(format!(
            "the prompt has {count} tokens; {} takes {budget} besides the requested output",
            model.id
        )));
    }
    Ok(count)
}
