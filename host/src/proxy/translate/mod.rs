//! Front doors the server behind a model does not have, translated to the OpenAI routes it
//! does: the Responses and Messages APIs (for servers that lack them; llama-server has both)
//! and Ollama's API (which no model server the host runs speaks) become chat completions,
//! completions or embeddings, and the answers are turned back, whole or event by event.
//!
//! What is translated is the common subset: text turns, system prompts and instructions, the
//! output limit, sampling settings, and streaming. Images, tools and structured items are
//! refused with a clear 400 rather than dropped (the docs list them).

mod anthropic;
#[doc(hidden)]
pub mod fuzz;
mod ollama;
mod responses;
mod sse;

use serde_json::{Value, json};
use tokio::time::Instant;

pub use ollama::keep_alive;

use super::ApiError;
use super::exchange::Route;

/// The API a client spoke, when the host translates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    Responses,
    Messages,
    OllamaChat,
    OllamaGenerate,
    OllamaEmbed,
    OllamaEmbeddings,
}

impl Front {
    /// The translation of a request on `route`, if the route is one the host translates.
    pub fn of(route: Route) -> Option<Self> {
        Some(match route {
            Route::Responses => Front::Responses,
            Route::Messages => Front::Messages,
            Route::OllamaChat => Front::OllamaChat,
            Route::OllamaGenerate => Front::OllamaGenerate,
            Route::OllamaEmbed => Front::OllamaEmbed,
            Route::OllamaEmbeddings => Front::OllamaEmbeddings,
            _ => return None,
        })
    }
}

/// A translated request: what the server is sent, and how its answer comes back.
#[derive(Debug)]
pub struct Translation {
    pub front: Front,
    /// The OpenAI route the server gets.
    pub upstream: Route,
    /// The answer streams.
    pub stream: bool,
    /// The model's name as the client asked, for the answer.
    pub model: String,
    pub began: Instant,
}

impl Translation {
    /// Rewrites `body` (the client's) into the upstream route's body.
    pub fn new(
        front: Front,
        body: &mut Value,
        model: String,
        began: Instant,
    ) -> Result<Self, ApiError> {
        let (upstream, mut rewritten) = match front {
            Front::Responses => (Route::Chat, responses::request(body)?),
            Front::Messages => (Route::Chat, anthropic::request(body)?),
            Front::OllamaChat => (Route::Chat, ollama::chat_request(body)?),
            Front::OllamaGenerate => ollama::generate_request(body)?,
            Front::OllamaEmbed => (Route::Embeddings, ollama::embed_request(body)?),
            Front::OllamaEmbeddings => (Route::Embeddings, ollama::embeddings_request(body)?),
        };
        // Ollama streams unless told not to; the others only when told to.
        let stream = match front {
            Front::OllamaChat | Front::OllamaGenerate => body["stream"].as_bool().unwrap_or(true),
            Front::OllamaEmbed | Front::OllamaEmbeddings => false,
            Front::Responses | Front::Messages => body["stream"].as_bool().unwrap_or(false),
        };
        if upstream != Route::Embeddings {
            rewritten["stream"] = json!(stream);
            if stream {
                rewritten["stream_options"] = json!({"include_usage": true});
            }
        }
        rewritten["model"] = body["model"].clone();
        *body = rewritten;
        Ok(Self {
            front,
            upstream,
            stream,
            model,
            began,
        })
    }

    /// The answer's content type.
    pub fn content_type(&self) -> &'static str {
        match (self.stream, self.front) {
            (false, _) => "application/json",
            (true, Front::Responses | Front::Messages) => "text/event-stream",
            (true, _) => "application/x-ndjson",
        }
    }

    /// Turns the server's successful answer back, chunk by chunk.
    pub fn translator(self, load_seconds: Option<f64>) -> Translator {
        Translator {
            summary: Summary::default(),
            lines: sse::Lines::default(),
            buffered: Vec::new(),
            started: false,
            ended: false,
            meta: Meta {
                model: self.model,
                began: self.began,
                load_ns: load_seconds.map_or(0, |s| (s * 1e9) as u64),
                seq: 0,
            },
            front: self.front,
            stream: self.stream,
        }
    }
}

/// What the answer reports beside the server's figures.
#[derive(Debug)]
pub struct Meta {
    pub model: String,
    pub began: Instant,
    pub load_ns: u64,
    /// The Responses API's `sequence_number` of the next event.
    pub seq: u64,
}

impl Meta {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq - 1
    }
}

/// A chat (or completion) answer as the translations need it, read whole or gathered from its
/// chunks.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub id: String,
    pub created: u64,
    pub text: String,
    /// OpenAI's `finish_reason`: `stop`, `length`, ...
    pub finish: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// llama-server's `timings`, in milliseconds.
    pub prompt_ms: f64,
    pub predicted_ms: f64,
}

impl Summary {
    /// A whole chat or completion answer.
    pub fn of(answer: &Value) -> Self {
        let mut s = Self::default();
        let choice = &answer["choices"][0];
        s.text = choice["message"]["content"]
            .as_str()
            .or(choice["text"].as_str())
            .unwrap_or_default()
            .to_string();
        s.absorb_common(answer);
        s
    }

    /// Adds one streamed chunk; returns its new text.
    fn absorb(&mut self, chunk: &Value) -> String {
        let choice = &chunk["choices"][0];
        let delta = choice["delta"]["content"]
            .as_str()
            .or(choice["text"].as_str())
            .unwrap_or_default()
            .to_string();
        self.text.push_str(&delta);
        self.absorb_common(chunk);
        delta
    }

    fn absorb_common(&mut self, v: &Value) {
        if let Some(id) = v["id"].as_str() {
            self.id = id.to_string();
        }
        if let Some(c) = v["created"].as_u64() {
            self.created = c;
        }
        if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
            self.finish = Some(f.to_string());
        }
        let usage = &v["usage"];
        if let Some(n) = usage["prompt_tokens"].as_u64() {
            self.prompt_tokens = n;
        }
        if let Some(n) = usage["completion_tokens"].as_u64() {
            self.completion_tokens = n;
        }
        let timings = &v["timings"];
        if let Some(ms) = timings["prompt_ms"].as_f64() {
            self.prompt_ms = ms;
        }
        if let Some(ms) = timings["predicted_ms"].as_f64() {
            self.predicted_ms = ms;
        }
    }

    /// The finish as a length cut-off.
    pub fn cut_off(&self) -> bool {
        self.finish.as_deref() == Some("length")
    }
}

/// Turns a server's answer back into the front door's, fed the answer's chunks as they come.
#[derive(Debug)]
pub struct Translator {
    front: Front,
    stream: bool,
    meta: Meta,
    summary: Summary,
    lines: sse::Lines,
    /// A whole answer, gathered until its end.
    buffered: Vec<u8>,
    started: bool,
    ended: bool,
}

impl Translator {
    /// What goes out for the server's next chunk (may be nothing yet).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        if !self.stream {
            self.buffered.extend_from_slice(bytes);
            return Vec::new();
        }
        let mut out = Vec::new();
        for chunk in self.lines.push(bytes) {
            self.chunk(&chunk, &mut out);
        }
        out
    }

    /// What goes out when the server's answer has ended.
    pub fn end(&mut self) -> Vec<u8> {
        if self.ended {
            return Vec::new();
        }
        self.ended = true;
        if !self.stream {
            let answer: Value = serde_json::from_slice(&self.buffered).unwrap_or(Value::Null);
            return self.whole(&answer).to_string().into_bytes();
        }
        let mut out = Vec::new();
        if let Some(chunk) = self.lines.finish() {
            self.chunk(&chunk, &mut out);
        }
        // A stream that ended without a finish was broken off: the client sees it cut short,
        // never a made-up ending.
        if self.summary.finish.is_some() {
            self.start(&mut out);
            out.extend(match self.front {
                Front::Responses => responses::end(&mut self.meta, &self.summary),
                Front::Messages => anthropic::end(&self.summary),
                Front::OllamaChat | Front::OllamaGenerate => {
                    ollama::end(self.front, &self.meta, &self.summary)
                }
                Front::OllamaEmbed | Front::OllamaEmbeddings => Vec::new(),
            });
        }
        out
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            out.extend(match self.front {
                Front::Responses => responses::start(&mut self.meta, &self.summary),
                Front::Messages => anthropic::start(&self.meta, &self.summary),
                _ => Vec::new(),
            });
        }
    }

    fn chunk(&mut self, chunk: &Value, out: &mut Vec<u8>) {
        let delta = self.summary.absorb(chunk);
        self.start(out);
        if delta.is_empty() {
            return;
        }
        out.extend(match self.front {
            Front::Responses => responses::delta(&mut self.meta, &self.summary, &delta),
            Front::Messages => anthropic::delta(&delta),
            Front::OllamaChat | Front::OllamaGenerate => {
                ollama::delta(self.front, &self.meta, &delta)
            }
            Front::OllamaEmbed | Front::OllamaEmbeddings => Vec::new(),
        });
    }

    fn whole(&mut self, answer: &Value) -> Value {
        match self.front {
            Front::Responses => responses::whole(&Summary::of(answer), &self.meta),
            Front::Messages => anthropic::whole(&Summary::of(answer), &self.meta),
            Front::OllamaChat | Front::OllamaGenerate => {
                ollama::whole(self.front, &Summary::of(answer), &self.meta)
            }
            Front::OllamaEmbed => ollama::embed_answer(answer, &self.meta),
            Front::OllamaEmbeddings => ollama::embeddings_answer(answer),
        }
    }
}

/// The text of a turn's content: a string, or its text parts; anything else in it is refused
/// as beyond what the host translates.
pub(super) fn turn_text(content: &Value, api: &str) -> Result<String, ApiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut texts = Vec::new();
            for p in parts {
                match (p["type"].as_str(), p["text"].as_str()) {
                    (Some("text" | "input_text" | "output_text") | None, Some(t)) => texts.push(t),
                    (kind, _) => {
                        return Err(untranslated(api, kind.unwrap_or("a part without text")));
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        _ => Err(ApiError::bad_request(
            "invalid_request",
            "a message's content must be a string or an array of parts",
        )),
    }
}

/// A request with something the translation does not carry.
pub(super) fn untranslated(api: &str, what: &str) -> ApiError {
    ApiError::bad_request(
        "unsupported_by_translation",
        format!(
            "this model's server does not speak the {api} API, and the host's translation to chat \
             completions carries text only: {what:?} is not translated"
        ),
    )
}

/// A field given with something in it (clients send `"tools": []` or `null` for none).
pub(super) fn given(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// Copies the sampling settings both APIs name alike.
pub(super) fn copy_sampling(from: &Value, to: &mut Value) {
    for key in ["temperature", "top_p", "top_k", "seed", "user"] {
        if !from[key].is_null() {
            to[key] = from[key].clone();
        }
    }
}

/// Whether a request on `route` to `model` is translated: Ollama's always; the Responses and
/// Messages APIs when the model's `translate` names them or its server has answered 404 on
/// them.
pub fn wanted(app: &super::AppState, route: Route, model: &str) -> bool {
    if Front::of(route).is_none() && route != Route::CountTokens {
        return false;
    }
    let Some(api) = route.api() else {
        return true;
    };
    app.scheduler
        .settings()
        .model(model)
        .is_some_and(|m| m.translate.contains(&api))
        || app.lacking(model, api)
}

/// Remembers that `model`'s server lacks `api`.
pub fn learn(app: &super::AppState, model: &str, api: crate::config::Api) {
    tracing::info!(
        model,
        api = api.name(),
        "the server has no such route: translating to chat completions"
    );
    app.lacks(model, api);
}

/// Rewrites the exchange's body for the server.
pub fn begin(ex: &mut super::exchange::Exchange) -> Result<(), ApiError> {
    let Some(front) = Front::of(ex.route) else {
        return Ok(());
    };
    ex.translation = Some(Translation::new(
        front,
        &mut ex.body,
        ex.asked.clone(),
        ex.began,
    )?);
    Ok(())
}

/// Anthropic's token count, answered by the host with the model server's tokenizer when the
/// server has no count route: each turn's text and the system prompt, plus the template's
/// few tokens a turn.
pub async fn count_tokens(
    ex: &super::exchange::Exchange,
    lease: &crate::scheduler::Lease,
) -> Result<axum::response::Response, ApiError> {
    let mut texts = vec![turn_text(&ex.body["system"], "Messages")?];
    for turn in ex.body["messages"].as_array().into_iter().flatten() {
        texts.push(turn_text(&turn["content"], "Messages")?);
    }
    let counts = match lease.count_tokens(&texts).await {
        Ok(counts) => counts,
        Err(e) => {
            return Err(ApiError::backend(format!(
                "the server for {} could not count tokens: {e}",
                lease.model()
            )));
        }
    };
    let turns = u32::try_from(texts.len() - 1).unwrap_or(u32::MAX);
    let total: u32 = counts.iter().sum::<u32>() + turns * super::fit::PER_MESSAGE_OVERHEAD;
    Ok(axum::response::IntoResponse::into_response(axum::Json(
        json!({"input_tokens": total}),
    )))
}
