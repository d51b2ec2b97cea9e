//! Specialization: route each request to the model best suited to its task, and keep loaded
//! the models that current demand needs.
//!
//! `select-model` is asked only about `auto` requests (the host routes an explicit id or alias
//! itself, without a call). It scores every candidate for the request's task (from the header
//! or metadata, else read from the newest user message): an exact tag scores 1.0, a `general`
//! tag 0.7, anything else 0.3. Ties go to a model that is already ready, then to the higher
//! priority, then to the id.
//!
//! `choose-eviction` evicts first the models whose tags match the least recent demand, least
//! recently used among equals.
//!
//! The catalogue `configure` hands over is kept: models' tags as task indices, and which task
//! is `general`.

use modelyard_policy::v0_2::helpers::{
    evict_until_fits, keep_newest_that_fit, last_active_ms, named,
};
use modelyard_policy::v0_2::types::{
    Asked, Catalogue, CompressionRequest, EvictionDecision, EvictionRequest, Interests, Message,
    Model, ModelState, Request, Selection, SelectionInterest, Task, Telemetry,
};
use modelyard_policy::v0_2::{CompressionPolicy, EvictionPolicy, Policy, SelectionPolicy};

/// Score of a model whose tags name the task.
pub const EXACT_TAG: f32 = 1.0;
/// Score of a model tagged `general`.
pub const GENERAL_TAG: f32 = 0.7;
/// Score of any other model.
pub const OTHER: f32 = 0.3;

/// What the catalogue says, kept for every call.
#[derive(Default)]
pub struct Specialization {
    /// Each model's tags, as task indices.
    tags: Vec<Vec<u32>>,
    /// Every task's name, by index.
    tasks: Vec<String>,
    /// The index of the `general` task, when a model has it.
    general: Option<u32>,
}

impl Specialization {
    fn has(&self, model: u32, task: u32) -> bool {
        self.tags
            .get(model as usize)
            .is_some_and(|tags| tags.contains(&task))
    }

    /// How well `m` suits the task with index `task` (`None`: a task no model has).
    pub fn task_score(&self, m: &Model, task: Option<u32>) -> f32 {
        if task.is_some_and(|t| self.has(m.index, t)) {
            EXACT_TAG
        } else if self.general.is_some_and(|g| self.has(m.index, g)) {
            GENERAL_TAG
        } else {
            OTHER
        }
    }

    /// The index of the task the request asks for, `None` when no model has it.
    fn task_of(&self, req: &Request) -> Option<u32> {
        match req.task {
            Some(Task::Tag(t)) => Some(t),
            Some(Task::Other) => None,
            None => {
                let inferred = infer_task(req.text.as_deref().unwrap_or(""));
                self.tasks
                    .iter()
                    .position(|t| t == inferred)
                    .map(|i| i as u32)
            }
        }
    }

    /// Recent requests for the tasks `m` is tagged with (each task once, however often it is
    /// listed).
    fn demand_for(&self, m: &Model, demand: &[u32]) -> u64 {
        (0u32..)
            .zip(demand)
            .filter(|&(task, _)| self.has(m.index, task))
            .map(|(_, &n)| u64::from(n))
            .sum()
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

impl Policy for Specialization {
    fn configure(&mut self, catalogue: Catalogue) -> Interests {
        self.tags = catalogue.models.into_iter().map(|m| m.tags).collect();
        self.general = catalogue
            .tasks
            .iter()
            .position(|t| t == "general")
            .map(|i| i as u32);
        self.tasks = catalogue.tasks;
        Interests {
            selection: SelectionInterest::AUTO,
            text: true,
        }
    }
}

impl SelectionPolicy for Specialization {
    fn select_model(
        &mut self,
        req: Request,
        candidates: Vec<Model>,
        _telemetry: Telemetry,
    ) -> Selection {
        // Named requests are routed by the host; answered the same way if asked all the same.
        if let Some(i) = named(&req.asked) {
            return Selection::Model(i);
        }
        if let Asked::Unknown(name) = &req.asked {
            return Selection::Reject(format!("no model is named {name:?}"));
        }
        let task = self.task_of(&req);
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

impl EvictionPolicy for Specialization {
    fn choose_eviction(&mut self, req: EvictionRequest) -> EvictionDecision {
        let mut ranked: Vec<(&Model, u64)> = req
            .loaded
            .iter()
            .map(|m| (m, self.demand_for(m, &req.demand)))
            .collect();
        ranked.sort_by_key(|(m, demand)| (*demand, last_active_ms(m), m.index));
        evict_until_fits(&req, ranked.into_iter().map(|(m, _)| m))
    }
}

impl CompressionPolicy for Specialization {
    fn compress_context(&mut self, req: CompressionRequest) -> Result<Vec<Message>, String> {
        keep_newest_that_fit(&req)
    }
}

modelyard_policy::export_v0_2!(Specialization: eviction, selection, compression);
