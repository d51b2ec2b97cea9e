//! The fit stage: the request into its model's window. The host counts each message's tokens
//! before any hook runs (with the model server's own tokenizer, through the lease; where that
//! does not answer, with [`tokens::upper_bound`], which never falls short), so
//! `compress-context` never waits on the network and what it keeps always fits. Compression
//! runs only when the prompt does not fit the window less the requested output, and is never
//! silent: the `x-modelyard-context` header says what was done and how it was counted, or the
//! request fails with `context_length_exceeded`.

use serde_json::{Value, json};

use super::exchange::{Exchange, Route};
use super::metrics::ModelLabels;
use super::{ApiError, AppState};
use crate::backend::CountError;
use crate::engine::types::{CompressionRequest, Message, Model};
use crate::engine::{Hook, Hooks, tokens};
use crate::scheduler::Lease;

/// Tokens kept free for the answer when a request does not say how many it wants.
pub const DEFAULT_OUTPUT_RESERVE: u32 = 256;
/// Tokens a chat template adds around each message.
pub const PER_MESSAGE_OVERHEAD: u32 = 4;
/// Below this share of the budget, the estimate is trusted and nothing is tokenized.
const EXACT_COUNT_ABOVE: f64 = 0.5;

/// What compression did, for the `x-modelyard-context` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compressed {
    pub before: u32,
    pub after: u32,
    pub dropped_messages: usize,
}

/// What the fit stage did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fitted {
    pub compressed: Option<Compressed>,
    /// The prompt's tokens as sent.
    pub prompt_tokens: u32,
    /// Counted with [`tokens::upper_bound`]: the server's tokenizer did not answer.
    pub upper_bound: bool,
    /// The prompt does not fit, and goes to this model (the `context_fallback`) instead.
    pub fallback: Option<String>,
}

impl Fitted {
    fn new(prompt_tokens: u32, upper_bound: bool) -> Self {
        Self {
            compressed: None,
            prompt_tokens,
            upper_bound,
            fallback: None,
        }
    }

    /// The `x-modelyard-context` header, when there is something to say.
    pub fn header(&self) -> Option<String> {
        let counted = self.upper_bound.then_some("counted=upper-bound");
        match (&self.compressed, counted) {
            (None, None) => None,
            (None, Some(counted)) => Some(format!("fits; {counted}")),
            (Some(c), counted) => {
                let mut h = format!(
                    "compressed; before={}; after={}; dropped_messages={}",
                    c.before, c.after, c.dropped_messages
                );
                if let Some(counted) = counted {
                    h.push_str("; ");
                    h.push_str(counted);
                }
                Some(h)
            }
        }
    }

    /// Tokens compression removed.
    pub fn tokens_removed(&self) -> u32 {
        self.compressed
            .as_ref()
            .map_or(0, |c| c.before.saturating_sub(c.after))
    }
}

/// Fits the exchange's prompt into `target`'s window and counts its tokens.
pub async fn fit(
    app: &AppState,
    ex: &mut Exchange,
    target: &Model,
    lease: &Lease,
) -> Result<(), ApiError> {
    let key = ex.key_for(Hook::CompressContext).to_string();
    let f = Fitting {
        key: &key,
        hooks: app.scheduler.hooks(),
        lease,
        model: target,
        fallback: fallback(app, target, &ex.body),
    };
    ex.fitted = match ex.upstream() {
        Route::Chat => f.turns(&mut ex.body, "messages", None).await?,
        // Anthropic's system prompt and the Responses API's instructions sit beside the turns:
        // counted, never compressed.
        Route::Messages => {
            let system = text_of(&ex.body["system"]);
            f.turns(&mut ex.body, "messages", Some(system)).await?
        }
        Route::Responses if ex.body["input"].is_array() => {
            let instructions = text_of(&ex.body["instructions"]);
            f.turns(&mut ex.body, "input", Some(instructions)).await?
        }
        Route::Responses => {
            let text = [&ex.body["instructions"], &ex.body["input"]]
                .map(text_of)
                .join("\n");
            f.text(&ex.body, text).await?
        }
        Route::Completions => f.prompt(&ex.body).await?,
        Route::Embeddings | Route::Rerank | Route::CountTokens => {
            Fitted::new(ex.estimated_tokens, false)
        }
        // Translated before this stage: the upstream route is an OpenAI one.
        Route::OllamaChat
        | Route::OllamaGenerate
        | Route::OllamaEmbed
        | Route::OllamaEmbeddings => Fitted::new(ex.estimated_tokens, false),
    };
    if ex.fitted.fallback.is_some() {
        return Ok(());
    }
    let labels = ModelLabels {
        model: target.id.clone(),
    };
    let f = &ex.fitted;
    app.metrics
        .prompt_tokens
        .get_or_create(&labels)
        .inc_by(u64::from(f.prompt_tokens));
    if let Some(c) = &f.compressed {
        tracing::info!(model = %target.id, before = c.before, after = c.after, dropped = c.dropped_messages, "compressed the conversation");
        app.metrics
            .compressed_tokens
            .get_or_create(&labels)
            .inc_by(u64::from(f.tokens_removed()));
    }
    Ok(())
}

/// Each text's count with the server's tokenizer, or its upper bound where the server could
/// not count (then the flag is true).
async fn count(lease: &Lease, texts: &[String]) -> (Vec<u32>, bool) {
    counted(lease.count_tokens(texts).await, lease.model(), texts)
}

fn counted(
    answer: Result<Vec<u32>, CountError>,
    model: &str,
    texts: &[String],
) -> (Vec<u32>, bool) {
    match answer {
        Ok(counts) => (counts, false),
        Err(e) => {
            tracing::info!(model, "{e}: counting the prompt with an upper bound");
            (texts.iter().map(|t| tokens::upper_bound(t)).collect(), true)
        }
    }
}

/// The text of a message's `content` (or a system prompt): a string, or the text parts of an
/// array (OpenAI's content parts, Anthropic's text blocks, the Responses API's input text).
pub fn text_of(content: &Value) -> String {
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
        .or_else(|| body.get("max_output_tokens"))
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

/// What fitting one request into one model needs.
struct Fitting<'a> {
    /// The request's sticky key for an experiment on `compress-context`.
    key: &'a str,
    hooks: &'a std::sync::Arc<Hooks>,
    lease: &'a Lease,
    model: &'a Model,
    /// The model's `context_fallback` and that model's prompt budget for this request.
    fallback: Option<(String, u32)>,
}

/// `target`'s `context_fallback`, with its prompt budget for `body`.
fn fallback(app: &AppState, target: &Model, body: &Value) -> Option<(String, u32)> {
    let settings = app.scheduler.settings();
    let to = settings.model(&target.id)?.context_fallback.as_ref()?;
    let window = settings.model(to)?.context_tokens;
    let output = requested_output(body).unwrap_or(DEFAULT_OUTPUT_RESERVE.min(window / 4));
    Some((to.clone(), window.checked_sub(output)?))
}

impl Fitting<'_> {
    /// A prompt of `tokens` that does not fit here goes to the fallback, if it fits there.
    fn fall_back(&self, tokens: u32, upper_bound: bool) -> Option<Fitted> {
        let (to, budget) = self.fallback.as_ref()?;
        (tokens <= *budget).then(|| Fitted {
            fallback: Some(to.clone()),
            ..Fitted::new(tokens, upper_bound)
        })
    }

    /// Fits the turns in `body[field]` (chat's `messages`, say) into the model's window, by
    /// its `context_fallback` or through `compress-context` if needed; `fixed` is text beside
    /// the turns (a system prompt) that takes its share of the window and is never
    /// compressed.
    async fn turns(
        &self,
        body: &mut Value,
        field: &str,
        fixed: Option<String>,
    ) -> Result<Fitted, ApiError> {
        let model = self.model;
        let Some(originals) = body.get(field).and_then(Value::as_array).cloned() else {
            return Err(ApiError::bad_request(
                "invalid_messages",
                format!("\"{field}\" must be an array"),
            ));
        };
        let window = budget(body, model)?;
        let mut texts: Vec<String> = originals.iter().map(|m| text_of(&m["content"])).collect();
        // The fixed text rides last in the count and is split off again.
        let fixed = fixed.filter(|f| !f.is_empty());
        texts.extend(fixed.clone());
        let estimated: u32 = texts.iter().map(|t| tokens::estimate_message(t)).sum();
        if f64::from(estimated) <= f64::from(window) * EXACT_COUNT_ABOVE {
            return Ok(Fitted::new(estimated, false));
        }
        let (counts, upper_bound) = count(self.lease, &texts).await;
        let mut counts: Vec<u32> = counts
            .into_iter()
            .map(|n| n.saturating_add(PER_MESSAGE_OVERHEAD))
            .collect();
        let fixed_tokens = if fixed.is_some() {
            texts.pop();
            counts.pop().unwrap_or_default()
        } else {
            0
        };
        let before: u32 = counts.iter().sum();
        if before + fixed_tokens > window
            && let Some(moved) = self.fall_back(before + fixed_tokens, upper_bound)
        {
            return Ok(moved);
        }
        if fixed_tokens >= window {
            return Err(too_long(format!(
                "the system prompt alone has {fixed_tokens} tokens; {} takes {window} besides the requested output",
                model.id
            )));
        }
        let budget = window - fixed_tokens;
        if before <= budget {
            return Ok(Fitted::new(before + fixed_tokens, upper_bound));
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
        let kept = compress(self.key, self.hooks, model, &messages, budget).await?;
        let (rebuilt, dropped_messages) = rebuild(&originals, &messages, &kept);
        let after: u32 = kept.iter().map(|m| m.tokens).sum();
        body[field] = Value::Array(rebuilt);
        Ok(Fitted {
            compressed: Some(Compressed {
                before: before + fixed_tokens,
                after: after + fixed_tokens,
                dropped_messages,
            }),
            prompt_tokens: after + fixed_tokens,
            upper_bound,
            fallback: None,
        })
    }

    /// Refuses a completion prompt that does not fit (a bare prompt has no turns to
    /// compress), unless it fits the fallback.
    async fn prompt(&self, body: &Value) -> Result<Fitted, ApiError> {
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
        self.text(body, text).await
    }

    /// Refuses a prompt `text` that does not fit, unless it fits the fallback.
    async fn text(&self, body: &Value, text: String) -> Result<Fitted, ApiError> {
        let model = self.model;
        let budget = budget(body, model)?;
        let estimated = tokens::estimate(&text);
        if f64::from(estimated) <= f64::from(budget) * EXACT_COUNT_ABOVE {
            return Ok(Fitted::new(estimated, false));
        }
        let (counts, upper_bound) = count(self.lease, std::slice::from_ref(&text)).await;
        let count = counts.first().copied().unwrap_or_default();
        if count > budget {
            if let Some(moved) = self.fall_back(count, upper_bound) {
                return Ok(moved);
            }
            return Err(too_long(format!(
                "the prompt has {count} tokens; {} takes {budget} besides the requested output",
                model.id
            )));
        }
        Ok(Fitted::new(count, upper_bound))
    }
}

/// Asks `compress-context` (off the async threads: a guest may run to its deadline) to fit
/// `messages` into `budget`.
async fn compress(
    key: &str,
    hooks: &std::sync::Arc<Hooks>,
    model: &Model,
    messages: &[Message],
    budget: u32,
) -> Result<Vec<Message>, ApiError> {
    let before: u32 = messages.iter().map(|m| m.tokens).sum();
    let req = CompressionRequest {
        messages: messages.to_vec(),
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
    decided.value.map_err(|reason| {
        too_long(format!(
            "the conversation needs {before} tokens; {} takes {budget} besides the requested output, \
             and it could not be compressed: {reason}",
            model.id
        ))
    })
}

/// The body's messages after compression kept `kept` of `messages` (made from `originals`):
/// each surviving message as the client sent it (tool calls, names, parts), new ones (a
/// summary, say) as plain text; and how many originals were dropped.
fn rebuild(originals: &[Value], messages: &[Message], kept: &[Message]) -> (Vec<Value>, usize) {
    let mut used = vec![false; originals.len()];
    let rebuilt = kept
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
    (rebuilt, used.iter().filter(|u| !**u).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_the_tokenizer_does_not_answer_the_count_never_falls_short() {
        // 121 messages of dense text (digits and punctuation tokenize near one byte a token).
        let texts: Vec<String> = (0..121)
            .map(|i| format!("{i}: 3.14159, 2.71828; [{i}] {{x}} <y/> ").repeat(12))
            .collect();
        let unavailable = Err(CountError::Unavailable("connection closed".into()));
        let (counts, upper_bound) = counted(unavailable, "m", &texts);
        assert!(upper_bound, "said so");
        for (text, n) in texts.iter().zip(&counts) {
            assert!(
                *n as usize > text.len(),
                "{n} tokens for {} bytes",
                text.len()
            );
        }
        let exact = counted(Ok(vec![7; 121]), "m", &texts);
        assert_eq!(exact, (vec![7; 121], false));
    }

    #[test]
    fn the_context_header_says_how_the_prompt_was_counted() {
        assert_eq!(Fitted::new(10, false).header(), None);
        assert_eq!(
            Fitted::new(10, true).header().as_deref(),
            Some("fits; counted=upper-bound")
        );
        let compressed = Fitted {
            compressed: Some(Compressed {
                before: 900,
                after: 400,
                dropped_messages: 3,
            }),
            prompt_tokens: 400,
            upper_bound: true,
            fallback: None,
        };
        assert_eq!(
            compressed.header().as_deref(),
            Some("compressed; before=900; after=400; dropped_messages=3; counted=upper-bound")
        );
        assert_eq!(compressed.tokens_removed(), 500);
    }
}
