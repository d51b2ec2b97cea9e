//! One configured model's live state and statistics, and how it is shown: to policies as the
//! contract's `model` record, to people as a [`ModelStatus`].

use std::sync::Arc;

use serde::Serialize;
use tokio::time::Instant;

use super::SchedError;
use crate::backend::Instance;
use crate::config::{BackendSettings, ModelSettings};
use crate::engine::types::{Model, ModelState};
use crate::telemetry::Footprint;

/// A model's live state.
#[derive(Debug)]
pub(super) struct Slot {
    pub cfg: Arc<ModelSettings>,
    pub state: ModelState,
    /// Counts against its device's budget: set when a load has made room, cleared when the
    /// model is unloaded or its load fails.
    pub reserved: bool,
    pub instance: Option<Arc<dyn Instance>>,
    /// Increments with every load attempt; a crash or an outcome belongs to one attempt.
    pub generation: u64,
    /// How the latest finished attempt ended, for the requests that waited on it.
    pub outcome: Option<(u64, Result<(), SchedError>)>,
    pub footprint: Option<Footprint>,
    pub in_flight: u32,
    pub queued: u32,
    pub consecutive_failures: u32,
    pub retry_at: Option<Instant>,
    pub last_error: Option<String>,
    pub stats: Stats,
}

/// Counters the contract exposes to policies.
#[derive(Debug, Default, Clone)]
pub(super) struct Stats {
    pub last_used: Option<Instant>,
    pub loaded_at: Option<Instant>,
    pub use_count: u64,
    pub load_count: u32,
    pub errors: u32,
    pub load_ms_total: u64,
    pub requests_done: u64,
    pub request_ms_total: u64,
    pub evictions: u32,
}

impl Slot {
    pub fn new(cfg: ModelSettings) -> Self {
        Self {
            cfg: Arc::new(cfg),
            state: ModelState::Unloaded,
            reserved: false,
            instance: None,
            generation: 0,
            outcome: None,
            footprint: None,
            in_flight: 0,
            queued: 0,
            consecutive_failures: 0,
            retry_at: None,
            last_error: None,
            stats: Stats::default(),
        }
    }

    /// Bytes it holds (or will hold) on its device: measured once ready, else the estimate.
    pub fn size(&self) -> u64 {
        match &self.footprint {
            Some(f) if !f.pids.is_empty() => f.on(&self.cfg.device),
            _ => self.cfg.size_estimate,
        }
    }

    pub fn size_measured(&self) -> bool {
        self.footprint.as_ref().is_some_and(|f| !f.pids.is_empty())
    }

    /// True while it counts against its device's budget.
    pub fn holds_memory(&self) -> bool {
        self.reserved || matches!(self.state, ModelState::Ready | ModelState::Unloading)
    }

    /// Ready, idle and unpinned: the host would accept evicting it.
    pub fn evictable(&self) -> bool {
        self.state == ModelState::Ready && self.in_flight == 0 && !self.cfg.pinned
    }

    /// The contract's view of this model; times are milliseconds since `epoch` (0: never).
    pub fn to_wit(&self, epoch: Instant) -> Model {
        let ms = |t: Option<Instant>| t.map_or(0, |t| millis_since(epoch, t).max(1));
        let s = &self.stats;
        Model {
            id: self.cfg.id.clone(),
            aliases: self.cfg.aliases.clone(),
            state: self.state,
            device: self.cfg.device.clone(),
            size_bytes: self.size(),
            size_measured: self.size_measured(),
            context_tokens: self.cfg.context_tokens,
            tags: self.cfg.tags.clone(),
            priority: self.cfg.priority,
            pinned: self.cfg.pinned,
            last_used_ms: ms(s.last_used),
            loaded_at_ms: ms(s.loaded_at),
            use_count: s.use_count,
            load_count: s.load_count,
            in_flight: self.in_flight,
            queued: self.queued,
            errors: s.errors,
            mean_load_ms: mean(s.load_ms_total, u64::from(s.load_count)),
            mean_latency_ms: mean(s.request_ms_total, s.requests_done),
        }
    }

    pub fn status(&self, now: Instant) -> ModelStatus {
        let s = &self.stats;
        let idle_ms = (self.state == ModelState::Ready && self.in_flight == 0)
            .then(|| s.last_used.or(s.loaded_at).map(|t| millis_since(t, now)))
            .flatten();
        let fp = self.footprint.clone().unwrap_or_default();
        ModelStatus {
            id: self.cfg.id.clone(),
            aliases: self.cfg.aliases.clone(),
            state: state_name(self.state),
            backend: match self.cfg.backend {
                BackendSettings::Command(_) => "command".to_string(),
                BackendSettings::OpenAi(_) => "openai".to_string(),
            },
            device: self.cfg.device.clone(),
            size_bytes: self.size(),
            size_measured: self.size_measured(),
            ram_bytes: fp.ram_bytes,
            vram_bytes: fp.vram_bytes.values().sum(),
            pids: fp.pids,
            endpoint: self
                .instance
                .as_ref()
                .map(|i| i.endpoint().api_base.clone()),
            pinned: self.cfg.pinned,
            priority: self.cfg.priority,
            ttl_secs: self.cfg.ttl.map(|t| t.as_secs()),
            in_flight: self.in_flight,
            queued: self.queued,
            idle_ms,
            use_count: s.use_count,
            load_count: s.load_count,
            evictions: s.evictions,
            errors: s.errors,
            mean_load_ms: mean(s.load_ms_total, u64::from(s.load_count)),
            mean_latency_ms: mean(s.request_ms_total, s.requests_done),
            last_error: self.last_error.clone(),
        }
    }
}

/// One model as `modelyard models` and `/admin/models` show it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ModelStatus {
    pub id: String,
    pub aliases: Vec<String>,
    pub state: String,
    pub backend: String,
    pub device: String,
    /// What it counts against its device: measured when `size_measured`, else estimated.
    pub size_bytes: u64,
    pub size_measured: bool,
    pub ram_bytes: u64,
    pub vram_bytes: u64,
    pub pids: Vec<u32>,
    pub endpoint: Option<String>,
    pub pinned: bool,
    pub priority: i32,
    pub ttl_secs: Option<u64>,
    pub in_flight: u32,
    pub queued: u32,
    /// How long it has been ready with nothing in flight.
    pub idle_ms: Option<u64>,
    pub use_count: u64,
    pub load_count: u32,
    pub evictions: u32,
    pub errors: u32,
    pub mean_load_ms: u32,
    pub mean_latency_ms: u32,
    pub last_error: Option<String>,
}

pub fn state_name(s: ModelState) -> String {
    match s {
        ModelState::Unloaded => "unloaded",
        ModelState::Loading => "loading",
        ModelState::Ready => "ready",
        ModelState::Unloading => "unloading",
        ModelState::Failed => "failed",
    }
    .to_string()
}

pub fn millis_since(earlier: Instant, later: Instant) -> u64 {
    u64::try_from(later.saturating_duration_since(earlier).as_millis()).unwrap_or(u64::MAX)
}

fn mean(total: u64, n: u64) -> u32 {
    total
        .checked_div(n)
        .map_or(0, |m| u32::try_from(m).unwrap_or(u32::MAX))
}
