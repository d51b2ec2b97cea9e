//! The model scheduler: makes models ready for requests and decides nothing it can delegate.
//!
//! It owns each model's lifecycle (unloaded → loading → ready → unloading, or failed), the
//! per-model statistics the contract exposes, and these promises:
//! - **single flight**: concurrent requests for a cold model share one load;
//! - **bounded waits**: each model has a wait queue of `scheduler.max_queue`; past it a request
//!   is turned away at once ([`SchedError::QueueFull`]), and so is one whose expected wait
//!   (the requests ahead of it past the model's places, at its mean request time, and a load
//!   if it needs one) is longer than `scheduler.queue_timeout` ([`SchedError::Overloaded`]);
//!   no request waits longer than that timeout;
//! - **room through the policy**: a load that does not fit its device's budget asks
//!   `choose-eviction`, and so do idle-TTL and memory-pressure unloads; whatever a policy says,
//!   a pinned model or one with requests in flight is never stopped;
//! - **failures stay local**: a server that fails to start or dies marks its model failed, its
//!   waiters get the reason, and the next request retries after a backoff;
//! - **reloads in place** ([`Scheduler::reconfigure`]): models are added, retired and re-tuned
//!   without touching the others, and one whose server must change restarts only when idle.
//!   Slots are only ever added, so a slot index means one model for the host's life.
//!
//! It knows nothing of HTTP: the proxy holds a [`Lease`] for each request it forwards.

mod events;
mod housekeeping;
mod lease;
mod reconfigure;
mod room;
mod signal;
mod slot;
mod status;
mod view;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::time::Instant;

use signal::Signal;

pub use lease::Lease;
use lease::Waiter;
pub use reconfigure::Reconfigured;
pub use slot::ESTIMATE_AFTER;
use slot::{Slot, millis_since};
pub use status::{
    DeviceStatus, Event, EvictionStats, ModelStatus, Status, state_name, state_of_name,
};

use crate::backend::{Instance, Launcher};
use crate::config::{CPU_DEVICE, Settings};
use crate::engine::Hooks;
use crate::engine::types::{EvictionCause, ModelState};
use crate::estimate::{Estimator, memory};
use crate::telemetry::{Snapshot, Telemetry};

/// How often TTLs, memory pressure and footprints are checked.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// Events kept for `modelyard models` and `/admin/models`.
const EVENTS_KEPT: usize = 64;
/// Recent requests whose task is counted as demand for `choose-eviction`.
const DEMAND_WINDOW: usize = 256;
/// How long a request whose server broke off waits to learn whether the server died.
const CRASH_CONFIRM: Duration = Duration::from_secs(1);
/// The longest a failing model waits between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Why a request could not get its model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchedError {
    #[error("no model is named {0:?}")]
    UnknownModel(String),
    #[error("{model} has {queued} requests waiting already; retry in {}s", retry_after.as_secs())]
    QueueFull {
        model: String,
        queued: u32,
        retry_after: Duration,
    },
    #[error(
        "{model} is overloaded: a new request would wait about {}s, more than the queue timeout",
        expected.as_secs()
    )]
    Overloaded { model: String, expected: Duration },
    #[error("{model} could not take the request within {}s", waited.as_secs())]
    Timeout { model: String, waited: Duration },
    #[error("{model} failed to load: {reason}")]
    LoadFailed { model: String, reason: String },
    #[error("{model} failed ({reason}); retrying in {}s", retry_after.as_secs())]
    BackingOff {
        model: String,
        reason: String,
        retry_after: Duration,
    },
    #[error("{model} cannot be loaded now: {reason}")]
    Rejected { model: String, reason: String },
    #[error("{model} crashed: {reason}")]
    Crashed { model: String, reason: String },
    #[error("{model} has {in_flight} requests in flight; unload it when they finish")]
    Busy { model: String, in_flight: u32 },
    #[error("the host is shutting down")]
    ShuttingDown,
}

impl SchedError {
    /// How long a client should wait before trying again, where that is known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SchedError::QueueFull { retry_after, .. }
            | SchedError::BackingOff { retry_after, .. }
            | SchedError::Overloaded {
                expected: retry_after,
                ..
            } => Some((*retry_after).max(Duration::from_secs(1))),
            SchedError::Timeout { .. } | SchedError::Rejected { .. } => {
                Some(Duration::from_secs(5))
            }
            _ => None,
        }
    }
}

/// What the scheduler knows of a request besides its model.
#[derive(Debug, Clone, Default)]
pub struct Demand {
    /// The request's priority: a load it waits for is made with the highest waiting priority.
    pub priority: i32,
    pub task: Option<String>,
    /// The request's sticky key for an experiment on `choose-eviction`.
    pub key: String,
    /// The host's count of its prompt, for policies that observe events.
    pub prompt_tokens: u32,
}

/// How long a model stays loaded after a request, as the request says (Ollama's
/// `keep_alive`); it holds for the model's current load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Unload once no request is in flight on it.
    Unload,
    /// Keep it until it is evicted (no idle TTL).
    Forever,
    /// Offer it for eviction after this long idle.
    For(Duration),
}

/// How the scheduler runs. The default is a real machine; the simulator says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerOptions {
    /// Telemetry reads and policy calls run on the async thread itself instead of the blocking
    /// pool: on the simulator's imagined machine, where nothing happens in real time, this keeps
    /// a replay fast and deterministic.
    pub inline_calls: bool,
    /// Keep house (telemetry, footprints, TTLs, memory pressure) once a second even when no
    /// model has a TTL. An imagined machine's readings never change, so a replay turns this off:
    /// two days would otherwise wake 172,800 times for nothing.
    pub always_keep_house: bool,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            inline_calls: false,
            always_keep_house: true,
        }
    }
}

impl SchedulerOptions {
    /// The simulator's: inline calls, housekeeping only for TTLs.
    pub fn simulated() -> Self {
        Self {
            inline_calls: true,
            always_keep_house: false,
        }
    }
}

/// Makes models ready for requests. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Replaced whole by [`Scheduler::reconfigure`]; read with [`Inner::settings`].
    settings: RwLock<Arc<Settings>>,
    hooks: Arc<Hooks>,
    launcher: Arc<dyn Launcher>,
    telemetry: Arc<Mutex<Telemetry>>,
    latest: Mutex<Snapshot>,
    /// What models may hold on each device (its budget after the reserve).
    capacity: RwLock<BTreeMap<String, u64>>,
    state: Mutex<State>,
    /// Per slot: bumped when its state changes, which is all its waiting requests wait for.
    /// Slots are only ever added (a model removed from the config keeps its slot, retired).
    slot_changed: RwLock<Vec<Arc<Signal>>>,
    /// Per slot: its model's id, readable without the state lock (events name models by it).
    ids: RwLock<Vec<String>>,
    /// Bumped by each change that can make room (a model goes idle, one stops, a load ends)
    /// while a load waiting for room listens; with no listener nothing is sent.
    room_changes: Arc<Signal>,
    /// One eviction conversation at a time per device.
    room: RwLock<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    epoch: Instant,
    /// Slot index by model id, then by alias (an id wins over another model's alias); retired
    /// slots have no name.
    /// FxHash, looked up on every request: the table is made from the config and only read, so
    /// a client's name can be looked up but never inserted (it cannot grow a collision chain).
    names: RwLock<FxHashMap<String, usize>>,
    /// [`SchedulerOptions::inline_calls`].
    inline: bool,
    /// A delivery of policy events is due ([`events`]).
    flushing: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct State {
    slots: Vec<Slot>,
    /// Each model's footprint before it is measured, and what measurements taught.
    estimator: Estimator,
    events: VecDeque<Event>,
    demand: VecDeque<String>,
    eviction: EvictionStats,
    shutting_down: bool,
}

impl Scheduler {
    /// Builds the scheduler on this machine's telemetry and starts its housekeeping. Must run
    /// inside a tokio runtime.
    pub fn new(
        settings: Arc<Settings>,
        hooks: Arc<Hooks>,
        launcher: Arc<dyn Launcher>,
    ) -> anyhow::Result<Self> {
        Self::with_telemetry(
            settings,
            hooks,
            launcher,
            Telemetry::new()?,
            SchedulerOptions::default(),
        )
    }

    /// Builds the scheduler on the given telemetry (the simulator's imagined machine), run as
    /// `options` say.
    pub fn with_telemetry(
        settings: Arc<Settings>,
        hooks: Arc<Hooks>,
        launcher: Arc<dyn Launcher>,
        mut telemetry: Telemetry,
        options: SchedulerOptions,
    ) -> anyhow::Result<Self> {
        let snapshot = telemetry.snapshot();
        let devices = reconfigure::devices(&settings);
        let capacity = reconfigure::capacities(&settings, &devices, &snapshot);
        hooks.set_catalogue(view::catalogue(&settings.models, &devices));
        let estimator = Estimator::new(&settings.models, settings.state_dir.clone());
        let state = State {
            slots: (settings.models.iter().cloned().enumerate())
                .map(|(i, m)| Slot::new(m, estimator.estimate(i)))
                .collect(),
            estimator,
            events: VecDeque::new(),
            demand: VecDeque::new(),
            eviction: EvictionStats::default(),
            shutting_down: false,
        };
        let names = reconfigure::names(&state.slots);
        let slot_changed = settings.models.iter().map(|_| Arc::default()).collect();
        let ids = settings.models.iter().map(|m| m.id.clone()).collect();
        let ttls = settings.models.iter().any(|m| m.ttl.is_some());
        let inner = Arc::new(Inner {
            room: RwLock::new(
                devices
                    .iter()
                    .map(|d| (d.clone(), Arc::default()))
                    .collect(),
            ),
            settings: RwLock::new(settings),
            hooks,
            launcher,
            telemetry: Arc::new(Mutex::new(telemetry)),
            latest: Mutex::new(snapshot),
            capacity: RwLock::new(capacity),
            state: Mutex::new(state),
            slot_changed: RwLock::new(slot_changed),
            ids: RwLock::new(ids),
            room_changes: Arc::default(),
            epoch: Instant::now(),
            names: RwLock::new(names),
            inline: options.inline_calls,
            flushing: std::sync::atomic::AtomicBool::new(false),
        });
        if options.always_keep_house || ttls {
            tokio::spawn(housekeeping::run(Arc::downgrade(&inner)));
        }
        Ok(Self { inner })
    }

    /// The settings it runs on now (a reload replaces them: hold the `Arc` for one request's
    /// consistent view, not longer).
    pub fn settings(&self) -> Arc<Settings> {
        self.inner.settings()
    }

    /// The hooks it asks.
    pub fn hooks(&self) -> &Arc<Hooks> {
        &self.inner.hooks
    }

    /// Waits until `model` (an id or alias) is ready and takes a lease on it. While any lease
    /// is held the model is never evicted. Dropping the future leaves the queue cleanly.
    pub async fn acquire(&self, model: &str, demand: &Demand) -> Result<Lease, SchedError> {
        let inner = &self.inner;
        let idx = inner.index(model)?;
        events::arrived(inner, idx, demand);
        let mut waiter = Waiter::new(inner, idx);
        let queue_timeout = waiter.rules.queue_timeout;
        let deadline = waiter.arrived + queue_timeout;
        if let Some(task) = &demand.task {
            inner.lock().note_demand(task);
        }
        // Made when the request first waits, under the state lock: a change after the state it
        // saw is sent after that lock is released, so it is not missed.
        let mut rx: Option<signal::Listener> = None;
        loop {
            let rx = {
                let mut st = inner.lock();
                if let Some(lease) = waiter.look(&mut st, demand)? {
                    return Ok(lease);
                }
                rx.get_or_insert_with(|| inner.signal(idx).listen())
            };
            // A change of the model's state wakes every request waiting for it; a freed
            // place only those first in line.
            let woken = async {
                // Biased: always in this order, so a replay is the same from run to run.
                tokio::select! {
                    biased;
                    () = rx.changed() => {}
                    () = waiter.woken() => {}
                }
            };
            match tokio::time::timeout_at(deadline, woken).await {
                Ok(()) => {}
                Err(_) => {
                    return Err(SchedError::Timeout {
                        model: inner.lock().slots[idx].cfg.id.clone(),
                        waited: queue_timeout,
                    });
                }
            }
        }
    }

    /// What `select-model` is given: every configured model and the telemetry, read under one
    /// look at the state.
    pub fn selection_view(
        &self,
    ) -> (
        Vec<crate::engine::types::Model>,
        crate::engine::types::Telemetry,
    ) {
        let st = self.inner.lock();
        (
            view::candidates(&self.inner, &st),
            view::telemetry(&self.inner, &st),
        )
    }

    /// The model a name (an id, or an alias) means, as the contract shows it.
    pub fn named_view(&self, name: &str) -> Option<crate::engine::types::Model> {
        let idx = self.inner.index(name).ok()?;
        let st = self.inner.lock();
        Some(view::model(&st.slots[idx], self.inner.epoch))
    }

    /// Loads `model` (an id or alias) if it is not loaded, and waits until it is ready.
    pub async fn load(&self, model: &str) -> Result<(), SchedError> {
        self.acquire(model, &Demand::default()).await.map(drop)
    }

    /// Sets how long `model`'s current load stays ([`KeepAlive`]); `Unload` unloads it now
    /// unless requests are in flight on it (then it goes when they are done).
    pub async fn keep_alive(&self, model: &str, keep: KeepAlive) -> Result<(), SchedError> {
        let idx = self.inner.index(model)?;
        let idle = {
            let mut st = self.inner.lock();
            let slot = &mut st.slots[idx];
            slot.keep_alive(keep);
            slot.in_flight() == 0
        };
        if keep == KeepAlive::Unload && idle {
            let id = self.inner.id(idx);
            match self.unload(&id).await {
                Err(SchedError::Busy { .. }) | Ok(()) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Unloads `model` now, pinned or not, unless requests are in flight on it.
    pub async fn unload(&self, model: &str) -> Result<(), SchedError> {
        let idx = self.inner.index(model)?;
        let (id, state, in_flight) = {
            let st = self.inner.lock();
            let s = &st.slots[idx];
            (s.cfg.id.clone(), s.state(), s.in_flight())
        };
        if in_flight > 0 {
            return Err(SchedError::Busy {
                model: id,
                in_flight,
            });
        }
        if state != ModelState::Ready {
            return Ok(()); // nothing loaded to unload
        }
        let ids = [id.clone()];
        if room::evict(
            &self.inner,
            &ids,
            room::Authority::Operator,
            &room::Evictor::host("an operator", EvictionCause::Requested),
            "on request",
        )
        .await
        {
            Ok(())
        } else {
            let in_flight = self.inner.lock().slots[idx].in_flight();
            Err(SchedError::Busy {
                model: id,
                in_flight,
            })
        }
    }

    /// A snapshot of every model, device and recent event.
    pub fn status(&self) -> Status {
        let inner = &self.inner;
        let latest = inner
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let st = inner.lock();
        let now = Instant::now();
        let devices = (inner.capacities().into_iter())
            .map(|(name, cap)| {
                let d = latest.device(&name);
                DeviceStatus {
                    capacity_bytes: cap,
                    models_bytes: st.held_on(&name),
                    total_bytes: d.map_or(0, |d| d.total_bytes),
                    used_bytes: d.map_or(0, |d| d.used_bytes),
                    free_bytes: d.map_or(0, |d| d.free_bytes),
                    utilization_percent: d.and_then(|d| d.utilization_percent),
                    name,
                }
            })
            .collect();
        let mut eviction = st.eviction.clone();
        eviction.policy = inner
            .hooks
            .get(crate::engine::Hook::ChooseEviction)
            .map_or_else(|| "none".to_string(), |p| p.name().to_string());
        Status {
            uptime_ms: millis_since(inner.epoch, now),
            models: (st.slots.iter())
                .filter(|s| !s.retired())
                .map(|s| status::model(s, now))
                .collect(),
            devices,
            eviction,
            events: st.events.iter().cloned().collect(),
        }
    }

    /// Stops every server and turns away new requests.
    pub async fn shutdown(&self) {
        let instances: Vec<Arc<dyn Instance>> = {
            let mut st = self.inner.lock();
            st.shutting_down = true;
            st.slots.iter_mut().filter_map(Slot::shut_down).collect()
        };
        for signal in self.inner.signals() {
            signal.bump();
        }
        self.inner.room_changed();
        futures_util::future::join_all(instances.iter().map(|i| i.stop())).await;
    }
}

impl State {
    /// Tells the estimator what model `idx` measures now, if it is measured, and gives every
    /// model the estimate that changes; the memory to write, when it changed.
    fn remember(&mut self, idx: usize) -> Option<(std::path::PathBuf, Vec<u8>)> {
        let slot = &self.slots[idx];
        if slot.size_measured() && self.estimator.observe(idx, slot.generation(), slot.size()) {
            for (i, s) in self.slots.iter_mut().enumerate() {
                s.set_estimate(self.estimator.estimate(i));
            }
        }
        self.estimator.take_save()
    }

    /// Bytes models hold on `device`: those loaded there, and on the CPU also what sleeping
    /// servers keep in RAM.
    fn held_on(&self, device: &str) -> u64 {
        // One pass: this runs for every room check, over every slot.
        let cpu = device == CPU_DEVICE;
        (self.slots.iter())
            .map(|s| {
                let loaded = if s.holds_memory() && s.cfg.device == device {
                    s.size()
                } else {
                    0
                };
                if cpu {
                    loaded + s.asleep_bytes()
                } else {
                    loaded
                }
            })
            .sum()
    }

    /// Counts a request for `task` in the recent window.
    fn note_demand(&mut self, task: &str) {
        self.demand.push_back(task.to_string());
        if self.demand.len() > DEMAND_WINDOW {
            self.demand.pop_front();
        }
    }
}

impl Inner {
    /// Writes remembered footprints off the async threads (inline on the simulator's machine).
    fn save_memory(&self, save: Option<(std::path::PathBuf, Vec<u8>)>) {
        let Some((dir, bytes)) = save else { return };
        if self.inline {
            memory::save(&dir, &bytes);
        } else {
            tokio::task::spawn_blocking(move || memory::save(&dir, &bytes));
        }
    }

    /// The settings now.
    fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Model `idx`'s id.
    fn id(&self, idx: usize) -> String {
        let ids = self.ids.read().unwrap_or_else(|e| e.into_inner());
        ids.get(idx).cloned().unwrap_or_default()
    }

    /// What model `idx`'s waiting requests listen on.
    fn signal(&self, idx: usize) -> Arc<Signal> {
        let signals = self.slot_changed.read().unwrap_or_else(|e| e.into_inner());
        signals.get(idx).cloned().unwrap_or_default()
    }

    fn slot_changed_mut(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<Signal>>> {
        self.slot_changed.write().unwrap_or_else(|e| e.into_inner())
    }

    fn ids_mut(&self) -> std::sync::RwLockWriteGuard<'_, Vec<String>> {
        self.ids.write().unwrap_or_else(|e| e.into_inner())
    }

    fn signals(&self) -> Vec<Arc<Signal>> {
        (self.slot_changed.read().unwrap_or_else(|e| e.into_inner())).clone()
    }

    /// What models may hold on `device` (0 for a device it does not know).
    fn capacity(&self, device: &str) -> u64 {
        let capacity = self.capacity.read().unwrap_or_else(|e| e.into_inner());
        capacity.get(device).copied().unwrap_or(0)
    }

    /// Every device with its capacity.
    fn capacities(&self) -> Vec<(String, u64)> {
        let capacity = self.capacity.read().unwrap_or_else(|e| e.into_inner());
        capacity.iter().map(|(d, c)| (d.clone(), *c)).collect()
    }

    /// The turn to make room on `device`.
    fn room(&self, device: &str) -> Option<Arc<tokio::sync::Mutex<()>>> {
        let room = self.room.read().unwrap_or_else(|e| e.into_inner());
        room.get(device).cloned()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A change that can make room: a loaded model goes idle, a model stops, a load ends.
    /// Wakes the loads waiting for room, if any (this runs as each request ends); a load that
    /// starts listening just after the check reads the state after this change.
    fn room_changed(&self) {
        self.room_changes.bump();
    }

    /// Wakes the requests waiting for model `idx`.
    fn slot_changed(&self, idx: usize) {
        let signals = self.slot_changed.read().unwrap_or_else(|e| e.into_inner());
        if let Some(signal) = signals.get(idx) {
            signal.bump();
        }
    }

    fn index(&self, name: &str) -> Result<usize, SchedError> {
        (self.names.read().unwrap_or_else(|e| e.into_inner()))
            .get(name)
            .copied()
            .ok_or_else(|| SchedError::UnknownModel(name.to_string()))
    }

    fn event(&self, st: &mut State, model: &str, kind: &str, detail: String) {
        match kind {
            "failed" | "crashed" | "rejected" => {
                tracing::warn!(model, event = kind, "{detail}");
            }
            _ => tracing::info!(model, event = kind, "{detail}"),
        }
        if st.events.len() == EVENTS_KEPT {
            st.events.pop_front();
        }
        st.events.push_back(Event {
            at_ms: millis_since(self.epoch, Instant::now()),
            model: model.to_string(),
            kind: kind.to_string(),
            detail,
        });
    }
}

#[cfg(test)]
mod contract_tests;
#[cfg(test)]
mod drain_tests;
#[cfg(test)]
mod reconfigure_tests;
#[cfg(test)]
mod tests;
