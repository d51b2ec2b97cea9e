//! A modelyard policy in Rust (contract 0.2): LRU eviction, task-based model selection, and
//! compression that keeps the system prompt, the newest user turn and the newest turns that fit.
//!
//! It makes the same decisions as the built-ins `lru` (eviction, compression) and
//! `specialization` (selection). Change the rankings; the helpers keep them within the host's
//! rules. The host keeps one instance of the component across calls, so the fields of `Mine`
//! live from one call to the next (a trap, a deadline or a reload starts a fresh one).

use modelyard_policy::v0_2::helpers::{
    evict_until_fits, keep_newest_that_fit, last_active_ms, named,
};
use modelyard_policy::v0_2::types::{
    Asked, Catalogue, CompressionRequest, EvictionDecision, EvictionRequest, Interests, Message,
    Model, ModelState, Request, Selection, SelectionInterest, Task, Telemetry,
};
use modelyard_policy::v0_2::{CompressionPolicy, EvictionPolicy, Policy, SelectionPolicy};

/// What the catalogue says: each model's tags (as task indices) and every task's name.
#[derive(Default)]
pub struct Mine {
    tags: Vec<Vec<u32>>,
    tasks: Vec<String>,
}

impl Mine {
    fn task_index(&self, name: &str) -> Option<u32> {
        self.tasks.iter().position(|t| t == name).map(|i| i as u32)
    }

    fn has(&self, m: &Model, task: Option<u32>) -> bool {
        task.is_some_and(|t| self.tags.get(m.index as usize).is_some_and(|tags| tags.contains(&t)))
    }

    /// How well a model's tags fit a task: an exact tag, a `general` model, anything else.
    fn task_score(&self, m: &Model, task: Option<u32>) -> f32 {
        if self.has(m, task) {
            1.0
        } else if self.has(m, self.task_index("general")) {
            0.7
        } else {
            0.3
        }
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

impl Policy for Mine {
    /// Called before the first call and whenever the configuration changes.
    fn configure(&mut self, catalogue: Catalogue) -> Interests {
        self.tags = catalogue.models.into_iter().map(|m| m.tags).collect();
        self.tasks = catalogue.tasks;
        // Asked only about `auto` requests (the host routes ids and aliases), with their text.
        Interests { selection: SelectionInterest::AUTO, text: true }
    }
}

impl EvictionPolicy for Mine {
    /// Least recently used first; ties by index (the catalogue's id order).
    fn choose_eviction(&mut self, req: EvictionRequest) -> EvictionDecision {
        let mut ranked: Vec<&Model> = req.loaded.iter().collect();
        ranked.sort_by_key(|m| (last_active_ms(m), m.index));
        evict_until_fits(&req, ranked)
    }
}

impl SelectionPolicy for Mine {
    fn select_model(&mut self, req: Request, candidates: Vec<Model>, _t: Telemetry) -> Selection {
        if let Some(i) = named(&req.asked) {
            return Selection::Model(i);
        }
        if let Asked::Unknown(name) = &req.asked {
            return Selection::Reject(format!("no model is named {name:?}"));
        }
        let task = match req.task {
            Some(Task::Tag(t)) => Some(t),
            Some(Task::Other) => None,
            None => self.task_index(infer_task(req.text.as_deref().unwrap_or(""))),
        };
        // Highest score; then a ready model; then higher priority; then the smaller index.
        let best = candidates.iter().max_by(|a, b| {
            self.task_score(a, task)
                .total_cmp(&self.task_score(b, task))
                .then((a.state == ModelState::Ready).cmp(&(b.state == ModelState::Ready)))
                .then(a.priority.cmp(&b.priority))
                .then(b.index.cmp(&a.index))
        });
        match best {
            Some(m) => Selection::Model(m.index),
            None => Selection::Reject("no model is configured".into()),
        }
    }
}

impl CompressionPolicy for Mine {
    fn compress_context(&mut self, req: CompressionRequest) -> Result<Vec<Message>, String> {
        keep_newest_that_fit(&req)
    }
}

modelyard_policy::export_v0_2!(Mine: eviction, selection, compression);
