//! The one projection from the scheduler's state to the records a policy sees: `model`,
//! `device`, `telemetry`, `eviction-request` and the selection candidates.
//!
//! Each field is built here as `wit/policy.wit` documents it, and nowhere else; the generated
//! types are never the scheduler's own state. `wit/CONTRACT.md` says what the WIT comments
//! cannot: how the host fills a field in the cases the comments do not cover.

use tokio::time::Instant;

use super::slot::{Slot, millis_since};
use super::{Inner, State};
use crate::config::CPU_DEVICE;
use crate::config::ModelSettings;
use crate::engine::types::{
    Device, EvictionReason, EvictionRecord, EvictionRequest, Model, ModelState, TaskDemand,
    Telemetry,
};
use crate::engine::{Catalogue, ModelInfo};

/// What an eviction request makes room for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Incoming<'a> {
    /// The load of model `idx`.
    Load(usize),
    /// Housekeeping that wants memory back on `device`, for an idle TTL or memory pressure.
    Housekeeping {
        reason: EvictionReason,
        device: &'a str,
    },
}

/// The priority of an eviction no request waits for: housekeeping may evict any model.
const HOUSEKEEPING_PRIORITY: i32 = i32::MAX;
/// The priority of a load once no request waits for it any more: the default request priority.
const UNWAITED_PRIORITY: i32 = 0;

/// A model as the contract shows it; times are milliseconds since `epoch` (0: never).
pub(super) fn model(slot: &Slot, epoch: Instant) -> Model {
    let ms = |t: Option<Instant>| t.map_or(0, |t| millis_since(epoch, t).max(1));
    let s = slot.stats();
    Model {
        id: slot.cfg.id.clone(),
        aliases: slot.cfg.aliases.clone(),
        state: slot.state(),
        device: slot.cfg.device.clone(),
        size_bytes: slot.size(),
        size_measured: slot.size_measured(),
        context_tokens: slot.cfg.context_tokens,
        tags: slot.cfg.tags.clone(),
        priority: slot.cfg.priority,
        pinned: slot.cfg.pinned,
        last_used_ms: ms(s.last_used),
        loaded_at_ms: ms(s.loaded_at),
        use_count: s.use_count,
        load_count: s.load_count,
        in_flight: slot.in_flight(),
        queued: slot.queued(),
        errors: s.errors,
        mean_load_ms: s.mean_load_ms(),
        mean_latency_ms: s.mean_latency_ms(),
    }
}

/// What 0.2 policies are told once: every configured model (by id, as the settings hold them),
/// and `devices` in telemetry's order (`cpu` first, then by name).
pub(super) fn catalogue(models: &[ModelSettings], devices: &[String]) -> Catalogue {
    catalogue_of(models.iter().map(info).collect(), devices)
}

fn catalogue_of(models: Vec<ModelInfo>, devices: &[String]) -> Catalogue {
    let mut devices = devices.to_vec();
    devices.sort_by_key(|d| d != CPU_DEVICE);
    Catalogue::new(models, devices)
}

fn info(m: &ModelSettings) -> ModelInfo {
    ModelInfo {
        id: m.id.clone(),
        aliases: m.aliases.clone(),
        tags: m.tags.clone(),
        context_tokens: m.context_tokens,
        parallel: m.parallel,
    }
}

/// The catalogue after a reload: every slot in slot order, so that an index never changes
/// its model; a model that left the config keeps its place without aliases or tags (no
/// request names it; it is only seen while its server stops).
pub(super) fn slots_catalogue(slots: &[Slot], devices: &[String]) -> Catalogue {
    let models = (slots.iter())
        .map(|s| {
            let mut m = info(&s.cfg);
            if s.retired() {
                m.aliases.clear();
                m.tags.clear();
            }
            m
        })
        .collect();
    catalogue_of(models, devices)
}

/// Every configured model, for `select-model`.
pub(super) fn candidates(inner: &Inner, st: &State) -> Vec<Model> {
    (st.slots.iter())
        .filter(|s| !s.retired())
        .map(|s| model(s, inner.epoch))
        .collect()
}

/// The machine as the contract shows it: every device with a budget, `cpu` first, its total
/// the budget after the reserve and its free bytes the part of that no model holds.
pub(super) fn telemetry(inner: &Inner, st: &State) -> Telemetry {
    let latest = inner.latest.lock().unwrap_or_else(|e| e.into_inner());
    let mut devices: Vec<Device> = (inner.capacities().into_iter())
        .map(|(name, capacity)| Device {
            total_bytes: capacity,
            free_bytes: capacity.saturating_sub(st.held_on(&name)),
            utilization_percent: latest.device(&name).and_then(|d| d.utilization_percent),
            name,
        })
        .collect();
    devices.sort_by_key(|d| d.name != CPU_DEVICE);
    Telemetry {
        now_ms: millis_since(inner.epoch, Instant::now()),
        devices,
        cpu_percent: latest.cpu_percent,
    }
}

/// The question for `choose-eviction`: free `needed_bytes` for `incoming`, from the resident
/// models on its device that `include` keeps.
pub(super) fn eviction_request(
    inner: &Inner,
    st: &State,
    incoming: Incoming<'_>,
    needed_bytes: u64,
    include: impl Fn(&Slot) -> bool,
) -> EvictionRequest {
    let (reason, incoming_model, priority, skip) = match incoming {
        Incoming::Load(idx) => {
            let slot = &st.slots[idx];
            let priority = slot.waiting_priority().unwrap_or(UNWAITED_PRIORITY);
            (
                EvictionReason::Load,
                model(slot, inner.epoch),
                priority,
                Some(idx),
            )
        }
        Incoming::Housekeeping { reason, device } => (
            reason,
            housekeeping_incoming(reason, device, needed_bytes),
            HOUSEKEEPING_PRIORITY,
            None,
        ),
    };
    let device = incoming_model.device.clone();
    let loaded = st
        .slots
        .iter()
        .enumerate()
        .filter(|&(i, s)| Some(i) != skip && s.holds_memory() && s.cfg.device == device)
        .filter(|(_, s)| include(s))
        .map(|(_, s)| model(s, inner.epoch))
        .collect();
    EvictionRequest {
        reason,
        record: EvictionRecord {
            incoming: incoming_model,
            needed_bytes,
            device,
            priority,
            loaded,
            demand: demand(st),
            telemetry: telemetry(inner, st),
        },
    }
}

/// Requests per task over the recent window, most requested first (ties by name).
fn demand(st: &State) -> Vec<TaskDemand> {
    let mut demand: Vec<TaskDemand> = Vec::new();
    for task in &st.demand {
        match demand.iter_mut().find(|d| &d.task == task) {
            Some(d) => d.requests += 1,
            None => demand.push(TaskDemand {
                task: task.clone(),
                requests: 1,
            }),
        }
    }
    demand.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.task.cmp(&b.task)));
    demand
}

/// The stand-in for `eviction-request.incoming` when nothing is loading (0.1 has no field for
/// the reason): id `modelyard:ttl` or `modelyard:pressure`, unloaded, on `device`, as large as
/// the bytes wanted back, with the highest priority.
fn housekeeping_incoming(reason: EvictionReason, device: &str, needed: u64) -> Model {
    let name = match reason {
        EvictionReason::IdleTtl => "ttl",
        EvictionReason::Pressure | EvictionReason::Load => "pressure",
    };
    Model {
        id: format!("modelyard:{name}"),
        aliases: Vec::new(),
        state: ModelState::Unloaded,
        device: device.to_string(),
        size_bytes: needed,
        size_measured: false,
        context_tokens: 0,
        tags: Vec::new(),
        priority: HOUSEKEEPING_PRIORITY,
        pinned: false,
        last_used_ms: 0,
        loaded_at_ms: 0,
        use_count: 0,
        load_count: 0,
        in_flight: 0,
        queued: 0,
        errors: 0,
        mean_load_ms: 0,
        mean_latency_ms: 0,
    }
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
