//! A modelyard policy in Rust: LRU eviction, task-based model selection, and compression that
//! keeps the system prompt, the newest user turn and the newest turns that fit.
//!
//! It makes the same decisions as the built-ins `lru` (eviction, compression) and
//! `specialization` (selection). Change the rankings; the helpers keep them within the host's
//! rules.

use modelyard_policy::helpers::{
    evict_until_fits, keep_newest_that_fit, last_active_ms, named_model,
};
use modelyard_policy::types::{
    CompressionRequest, EvictionDecision, EvictionRequest, Message, Model, ModelState, Request,
    Selection, Telemetry,
};
use modelyard_policy::{CompressionPolicy, EvictionPolicy, SelectionPolicy};

pub struct Policy;

/// How well a model's tags fit a task: an exact tag, a `general` model, anything else.
fn task_score(m: &Model, task: &str) -> f32 {
    if m.tags.iter().any(|t| t == task) {
        1.0
    } else if m.tags.iter().any(|t| t == "general") {
        0.7
    } else {
        0.3
    }
}

/// The task a message most likely asks for: `summarize`, `code` or `chat`.
fn infer_task(text: &str) -> &'static str {
    const CODE: [&str; 14] = [
        "```", "code", "function", "compile", "bug", "stack trace", "python", "rust",
        "javascript", "typescript", "def ", "fn ", "regex", "sql",
    ];
    const SUMMARIZE: [&str; 5] = ["summarize", "summarise", "summary", "tl;dr", "tldr"];
    let text = text.to_lowercase();
    if SUMMARIZE.iter().any(|k| text.contains(k)) {
        "summarize"
    } else if CODE.iter().any(|k| text.contains(k)) {
        "code"
    } else {
        "chat"
    }
}

impl EvictionPolicy for Policy {
    /// Least recently used first; ties by id so the answer is deterministic.
    fn choose_eviction(req: EvictionRequest) -> EvictionDecision {
        let mut ranked: Vec<&Model> = req.loaded.iter().collect();
        ranked.sort_by(|a, b| last_active_ms(a).cmp(&last_active_ms(b)).then(a.id.cmp(&b.id)));
        evict_until_fits(&req, ranked)
    }
}

impl SelectionPolicy for Policy {
    fn select_model(req: Request, candidates: Vec<Model>, _telemetry: Telemetry) -> Selection {
        if let Some(m) = named_model(&req, &candidates) {
            return Selection::Model(m.id.clone());
        }
        if req.model != "auto" {
            return Selection::Reject(format!("no model is named {:?}", req.model));
        }
        let task = req.task.clone().unwrap_or_else(|| infer_task(&req.last_user_message).into());
        // Highest score; then a ready model; then higher priority; then the smaller id.
        let best = candidates.iter().max_by(|a, b| {
            task_score(a, &task)
                .total_cmp(&task_score(b, &task))
                .then((a.state == ModelState::Ready).cmp(&(b.state == ModelState::Ready)))
                .then(a.priority.cmp(&b.priority))
                .then(b.id.cmp(&a.id))
        });
        match best {
            Some(m) => Selection::Model(m.id.clone()),
            None => Selection::Reject("no model is configured".into()),
        }
    }
}

impl CompressionPolicy for Policy {
    fn compress_context(req: CompressionRequest) -> Result<Vec<Message>, String> {
        keep_newest_that_fit(&req)
    }
}

modelyard_policy::export!(Policy: eviction, selection, compression);
