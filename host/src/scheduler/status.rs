//! How the scheduler shows itself to people: `modelyard models`, `/admin/models`, `/metrics`
//! and, later, the dashboard read these. Policies see the contract's records instead
//! ([`super::view`]).

use std::collections::BTreeMap;

use serde::Serialize;
use tokio::time::Instant;

use super::slot::{Slot, millis_since};
use crate::config::BackendSettings;
use crate::engine::types::ModelState;

/// Something that happened to a model, kept for status output.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Event {
    /// Milliseconds since the host started.
    pub at_ms: u64,
    pub model: String,
    /// `loaded`, `evicted`, `failed`, `crashed`, `rejected`.
    pub kind: String,
    /// Who decided (for evictions) or why.
    pub detail: String,
}

/// A device's memory as the scheduler sees it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DeviceStatus {
    pub name: String,
    /// What models may use: the budget, less the reserve.
    pub capacity_bytes: u64,
    /// What models hold now (measured where ready).
    pub models_bytes: u64,
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
    pub utilization_percent: Option<u8>,
}

/// Counters of `choose-eviction` decisions.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct EvictionStats {
    /// The component serving the hook (`none` when the native default does).
    pub policy: String,
    pub decisions: u64,
    /// Decisions the native default made because the policy failed or broke a host rule.
    pub fallbacks: u64,
    /// Of those, answers the host refused (e.g. naming a model with requests in flight).
    pub refused: u64,
    pub evictions: u64,
    /// Evictions by who decided (`policy lru`, `native default (invalid_decision)`, ...).
    pub by: BTreeMap<String, u64>,
}

/// Everything `modelyard models` prints.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Status {
    pub uptime_ms: u64,
    pub models: Vec<ModelStatus>,
    pub devices: Vec<DeviceStatus>,
    pub eviction: EvictionStats,
    pub events: Vec<Event>,
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
    /// Where `size_bytes` comes from: `measured`, `configured`, `remembered`, `same file as
    /// ID`, `gguf header`, `file size`, `guess`, or `external` (a server that runs itself).
    #[serde(default)]
    pub size_source: String,
    /// Where the model came from: `config` (a `[models.*]` table), `folder DIR` or `ollama
    /// STORE` (found by `[discover]`).
    #[serde(default)]
    pub source: String,
    /// Requests it serves at once (`parallel`).
    #[serde(default)]
    pub parallel: u32,
    #[serde(default)]
    pub tags: Vec<String>,
    pub ram_bytes: u64,
    pub vram_bytes: u64,
    /// What its server keeps in RAM while unloaded (vLLM asleep at level 1), counted against
    /// the CPU's budget.
    #[serde(default)]
    pub asleep_bytes: u64,
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

/// A model as people see it.
pub(super) fn model(slot: &Slot, now: Instant) -> ModelStatus {
    let s = slot.stats();
    let idle_ms = slot
        .idle()
        .then(|| slot.last_active().map(|t| millis_since(t, now)))
        .flatten();
    let fp = slot.footprint().cloned().unwrap_or_default();
    ModelStatus {
        id: slot.cfg.id.clone(),
        aliases: slot.cfg.aliases.clone(),
        state: state_name(slot.state()),
        backend: match slot.cfg.backend {
            BackendSettings::Command(_) => "command".to_string(),
            BackendSettings::OpenAi(_) => "openai".to_string(),
            BackendSettings::Simulated { .. } => "simulated".to_string(),
        },
        device: slot.cfg.device.clone(),
        size_bytes: slot.size(),
        size_measured: slot.size_measured(),
        size_source: slot.size_source(),
        source: slot.cfg.origin.to_string(),
        parallel: slot.cfg.parallel,
        tags: slot.cfg.tags.clone(),
        ram_bytes: fp.ram_bytes,
        vram_bytes: fp.vram_bytes.values().sum(),
        asleep_bytes: slot.asleep_bytes(),
        pids: fp.pids,
        endpoint: slot.instance().map(|i| i.endpoint().api_base.clone()),
        pinned: slot.cfg.pinned,
        priority: slot.cfg.priority,
        ttl_secs: slot.ttl().map(|t| t.as_secs()),
        in_flight: slot.in_flight(),
        queued: slot.queued(),
        idle_ms,
        use_count: s.use_count,
        load_count: s.load_count,
        evictions: s.evictions,
        errors: s.errors,
        mean_load_ms: s.mean_load_ms(),
        mean_latency_ms: s.mean_latency_ms(),
        last_error: slot.last_error().map(str::to_string),
    }
}

/// A state's name on `/admin/models`; [`state_of_name`] reads it back.
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

/// The state a name on `/admin/models` means (`None` for a name this version does not know).
pub fn state_of_name(name: &str) -> Option<ModelState> {
    [
        ModelState::Unloaded,
        ModelState::Loading,
        ModelState::Ready,
        ModelState::Unloading,
        ModelState::Failed,
    ]
    .into_iter()
    .find(|s| state_name(*s) == name)
}
