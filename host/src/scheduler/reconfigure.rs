//! Taking a new config while serving ([`Scheduler::reconfigure`]): models added, removed and
//! re-tuned without touching the others.
//!
//! The promises: a request in flight is never cut by a reload; a model whose server must
//! change (its command, its device, its context or its slots) keeps serving on the old one
//! until the requests in flight end, while new ones queue for the restart; a model that left
//! the config answers to no name from then on and stops once idle; every other change (aliases,
//! tags, priority, pinned, ttl, budgets, queueing rules) holds from the next decision. Slots are
//! only ever added: a slot index stays the same model for the host's life, so a waiting request
//! or a policy's catalogue index never points elsewhere.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::room::{self, Authority, Evictor};
use super::slot::Slot;
use super::{Inner, Scheduler, view};
use crate::config::{CPU_DEVICE, ModelSettings, Settings};
use crate::engine::types::EvictionCause;
use crate::telemetry::Snapshot;

/// What a reload changed, by model id.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reconfigured {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Changed in ways that hold at once.
    pub retuned: Vec<String>,
    /// Changed in ways that need its server restarted: it restarts once idle.
    pub restarting: Vec<String>,
}

impl Reconfigured {
    /// Whether nothing about the models changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.retuned.is_empty()
            && self.restarting.is_empty()
    }
}

/// Every device the settings name (the models', the budgets') and `cpu`, sorted.
pub(super) fn devices(settings: &Settings) -> Vec<String> {
    let mut devices: Vec<String> = settings.models.iter().map(|m| m.device.clone()).collect();
    devices.extend(settings.memory.devices.keys().cloned());
    devices.push(CPU_DEVICE.to_string());
    devices.sort();
    devices.dedup();
    devices
}

/// What models may hold on each device: its budget, else its total, less its reserve.
pub(super) fn capacities(
    settings: &Settings,
    devices: &[String],
    snapshot: &Snapshot,
) -> BTreeMap<String, u64> {
    let mut capacity = BTreeMap::new();
    for name in devices {
        let total = match snapshot.device(name) {
            Some(d) => d.total_bytes,
            None => {
                tracing::warn!(device = %name, "configured but not found; models on it cannot load");
                0
            }
        };
        let b = settings.memory.budget(name);
        let cap = b
            .budget
            .unwrap_or(total)
            .min(total.saturating_sub(b.reserve));
        tracing::info!(device = %name, capacity = cap, total, "memory budget");
        capacity.insert(name.clone(), cap);
    }
    capacity
}

/// Slot index by model id, then by alias (an id wins over another model's alias); retired
/// slots have no name.
pub(super) fn names(slots: &[Slot]) -> FxHashMap<String, usize> {
    let live = || slots.iter().enumerate().filter(|(_, s)| !s.retired());
    let mut names = FxHashMap::default();
    for (i, s) in live() {
        for alias in &s.cfg.aliases {
            names.entry(alias.clone()).or_insert(i);
        }
    }
    for (i, s) in live() {
        names.insert(s.cfg.id.clone(), i);
    }
    names
}

/// Whether the change from `old` to `new` needs the model's server restarted: what its command
/// line is made of (`${CONTEXT}`, `${PARALLEL}`, the device it runs on) or how it is reached.
pub(super) fn restart_needed(old: &ModelSettings, new: &ModelSettings) -> bool {
    old.backend != new.backend
        || old.device != new.device
        || old.context_tokens != new.context_tokens
        || old.parallel != new.parallel
}

impl Scheduler {
    /// Serves `settings` from now on (see the module's doc for what changes when); returns
    /// what changed. The caller has validated them; `listen`, `state_dir`, `trace` and the
    /// policy engine's own settings are not the scheduler's to change.
    pub fn reconfigure(&self, settings: Settings) -> Reconfigured {
        let inner = &self.inner;
        let settings = Arc::new(settings);
        let snapshot = inner
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let devices = devices(&settings);
        let capacity = capacities(&settings, &devices, &snapshot);
        let mut report = Reconfigured::default();
        let mut due = Vec::new();
        let mut changed = Vec::new();
        let catalogue = {
            let mut st = inner.lock();
            let mut listed = vec![false; st.slots.len()];
            for m in &settings.models {
                let Some(i) = st.slots.iter().position(|s| s.cfg.id == m.id) else {
                    let i = st.slots.len();
                    st.estimator.add(i, m);
                    let estimate = st.estimator.estimate(i);
                    st.slots.push(Slot::new(m.clone(), estimate));
                    inner.slot_changed_mut().push(Arc::default());
                    inner.ids_mut().push(m.id.clone());
                    report.added.push(m.id.clone());
                    continue;
                };
                listed[i] = true;
                let slot = &mut st.slots[i];
                let was_retired = slot.retired();
                let target = slot.target().clone();
                let same = !restart_needed(&target, m) && same_tuning(&target, m);
                if same && !was_retired {
                    continue;
                }
                let restart = restart_needed(&slot.cfg, m);
                if slot.reconfigure(Arc::new(m.clone()), restart) {
                    report.restarting.push(m.id.clone());
                    if slot.restart_due() {
                        due.push(i);
                    }
                } else if was_retired {
                    report.added.push(m.id.clone());
                } else {
                    report.retuned.push(m.id.clone());
                }
                st.estimator.add(i, m);
                let estimate = st.estimator.estimate(i);
                st.slots[i].set_estimate(estimate);
                changed.push(i);
            }
            for (i, slot) in st.slots.iter_mut().enumerate() {
                if i < listed.len() && !listed[i] && !slot.retired() {
                    slot.retire();
                    report.removed.push(slot.cfg.id.clone());
                    if slot.restart_due() {
                        due.push(i);
                    }
                    changed.push(i);
                }
            }
            *inner.names.write().unwrap_or_else(|e| e.into_inner()) = names(&st.slots);
            *inner.settings.write().unwrap_or_else(|e| e.into_inner()) = settings;
            *inner.capacity.write().unwrap_or_else(|e| e.into_inner()) = capacity;
            let mut room = inner.room.write().unwrap_or_else(|e| e.into_inner());
            for d in &devices {
                room.entry(d.clone()).or_default();
            }
            view::slots_catalogue(&st.slots, &devices)
        };
        inner.hooks.set_catalogue(catalogue);
        for i in changed {
            inner.slot_changed(i);
        }
        inner.room_changed();
        for i in due {
            tokio::spawn(restart(inner.clone(), i));
        }
        if !report.is_empty() {
            tracing::info!(
                added = ?report.added,
                removed = ?report.removed,
                retuned = ?report.retuned,
                restarting = ?report.restarting,
                "models reconfigured"
            );
        }
        report
    }
}

/// Whether nothing that holds at once differs (what [`restart_needed`] does not look at).
fn same_tuning(a: &ModelSettings, b: &ModelSettings) -> bool {
    a.aliases == b.aliases
        && a.tags == b.tags
        && a.priority == b.priority
        && a.pinned == b.pinned
        && a.preload == b.preload
        && a.ttl == b.ttl
        && a.size == b.size
        && a.capabilities == b.capabilities
        && a.translate == b.translate
        && a.context_fallback == b.context_fallback
}

/// Stops model `idx`'s server if a reload waits for that and it is idle (a request that ends
/// calls this too): its queued requests then load it on its new settings; a model that left
/// the config just stops.
pub(super) async fn restart(inner: Arc<Inner>, idx: usize) {
    let (id, retired) = {
        let st = inner.lock();
        let slot = &st.slots[idx];
        if !slot.restart_due() {
            return;
        }
        (slot.cfg.id.clone(), slot.retired())
    };
    let why = if retired {
        "it left the config"
    } else {
        "its config changed; it restarts on the new one"
    };
    let evictor = Evictor::host("the config", EvictionCause::Requested);
    room::evict(&inner, &[id], Authority::Operator, &evictor, why).await;
}
