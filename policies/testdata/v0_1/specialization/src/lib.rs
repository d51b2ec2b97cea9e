//! Specialization: route each request to the model best suited to its task, and keep loaded
//! the models that current demand needs.
//!
//! `select-model` honours an explicit id or alias. For `auto` it scores every candidate for the
//! request's task (from the header or metadata, else read from the newest user message): an
//! exact tag scores 1.0, a `general` tag 0.7, anything else 0.3. Ties go to a model that is
//! already ready, then to the higher priority, then to the id.
//!
//! `choose-eviction` evicts first the models whose tags match the least recent demand, least
//! recently used among equals.
//!
//! This is the built-in as it shipped on contract 0.1, kept so that `tests/ported.rs` can check
//! that its 0.2 port in `policies/` makes exactly the same decisions.

use modelyard_policy::helpers::{
    evict_until_fits, keep_newest_that_fit, last_active_ms, named_model,
};
use modelyard_policy::types::{
    CompressionRequest, EvictionDecision, EvictionRequest, Message, Model, ModelState, Request,
    Selection, TaskDemand, Telemetry,
};
use modelyard_policy::{CompressionPolicy, EvictionPolicy, SelectionPolicy};

/// Score of a model whose tags name the task.
pub const EXACT_TAG: f32 = 1.0;
/// Score of a model tagged `general`.
pub const GENERAL_TAG: f32 = 0.7;
/// Score of any other model.
pub const OTHER: f32 = 0.3;

pub struct Specialization;

/// How well `m` suits `task`.
pub fn task_score(m: &Model, task: &str) -> f32 {
    if m.tags.iter().any(|t| t == task) {
        EXACT_TAG
    } else if m.tags.iter().any(|t| t == "general") {
        GENERAL_TAG
    } else {
        OTHER
    }
}

/// The task a message most likely asks for: `code`, `summarize` or `chat`.
pub fn infer_task(text: &str) -> &'static str {
    const CODE: [&str; 14] = [
        "```",
        "code",
        "function",
        "compile",
        "bug",
        "stack trace",
        "python",
        "rust",
        "javascript",
        "typescript",
        "def ",
        "fn ",
        "regex",
        "sql",
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

impl SelectionPolicy for Specialization {
    fn select_model(req: Request, candidates: Vec<Model>, _telemetry: Telemetry) -> Selection {
        if let Some(m) = named_model(&req, &candidates) {
            return Selection::Model(m.id.clone());
        }
        if req.model != "auto" {
            return Selection::Reject(format!("no model is named {:?}", req.model));
        }
        let task = req
            .task
            .clone()
            .unwrap_or_else(|| infer_task(&req.last_user_message).into());
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

/// Recent requests for the tasks `m` is tagged with.
fn demand_for(m: &Model, demand: &[TaskDemand]) -> u64 {
    demand
        .iter()
        .filter(|d| m.tags.contains(&d.task))
        .map(|d| u64::from(d.requests))
        .sum()
}

impl EvictionPolicy for Specialization {
    fn choose_eviction(req: EvictionRequest) -> EvictionDecision {
        let mut ranked: Vec<(&Model, u64)> = req
            .loaded
            .iter()
            .map(|m| (m, demand_for(m, &req.demand)))
            .collect();
        ranked.sort_by(|(a, da), (b, db)| {
            da.cmp(db)
                .then(last_active_ms(a).cmp(&last_active_ms(b)))
                .then(a.id.cmp(&b.id))
        });
        evict_until_fits(&req, ranked.into_iter().map(|(m, _)| m))
    }
}

impl CompressionPolicy for Specialization {
    fn compress_context(req: CompressionRequest) -> Result<Vec<Message>, String> {
        keep_newest_that_fit(&req)
    }
}

modelyard_policy::export!(Specialization: eviction, selection, compression);
