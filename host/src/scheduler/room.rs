//! Loading, making room and unloading: the scheduler's background work. Every eviction, for a
//! load, an idle TTL or memory pressure, is the `choose-eviction` policy's decision, checked
//! again against the live state just before it is carried out.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::slot::millis_since;
use super::{HOUSEKEEPING_INTERVAL, Inner, SchedError, State, backoff};
use crate::engine::types::{
    Device, EvictionDecision, EvictionRequest, Model, ModelState, TaskDemand, Telemetry,
};
use crate::engine::{Decided, DecidedBy, PolicyError};

/// The sticky key of evictions no request asked for (TTL, pressure).
const HOUSEKEEPING_KEY: &str = "modelyard:housekeeping";
/// How long a load waits before asking again after its eviction lost a race.
const RACE_PAUSE: Duration = Duration::from_millis(20);
/// How long a load the policy told to wait waits before asking again when nothing changes.
const WAIT_RECHECK: Duration = Duration::from_secs(1);

/// How far a device is from fitting one more model.
enum Shortfall {
    None,
    Bytes(u64),
    Never(String),
}

/// Loads model `idx` for attempt `generation`: makes room, starts the backend, measures it.
pub(super) async fn load(inner: Arc<Inner>, idx: usize, generation: u64, key: String) {
    let outcome = match make_room(&inner, idx, &key).await {
        Ok(()) => start(&inner, idx, generation).await,
        Err(e) => Err(e),
    };
    let mut st = inner.lock();
    let slot = &mut st.slots[idx];
    let id = slot.cfg.id.clone();
    let (kind, detail) = match &outcome {
        Ok(()) => {
            slot.outcome = Some((generation, Ok(())));
            drop(st);
            inner.slot_changed(idx);
            inner.room_changed();
            return;
        }
        Err(e @ SchedError::LoadFailed { reason, .. }) => {
            slot.state = ModelState::Failed;
            slot.consecutive_failures += 1;
            slot.retry_at = Some(Instant::now() + backoff(slot.consecutive_failures));
            slot.stats.errors += 1;
            slot.last_error = Some(reason.clone());
            ("failed", e.to_string())
        }
        Err(e) => {
            slot.state = ModelState::Unloaded;
            ("rejected", e.to_string())
        }
    };
    slot.reserved = false;
    slot.outcome = Some((generation, outcome));
    inner.event(&mut st, &id, kind, detail);
    drop(st);
    inner.slot_changed(idx);
    inner.room_changed();
}

async fn start(inner: &Arc<Inner>, idx: usize, generation: u64) -> Result<(), SchedError> {
    let cfg = inner.lock().slots[idx].cfg.clone();
    let began = Instant::now();
    let instance = inner
        .launcher
        .start(&cfg)
        .await
        .map_err(|e| SchedError::LoadFailed {
            model: cfg.id.clone(),
            reason: e.to_string(),
        })?;
    let footprint = match instance.pid() {
        Some(pid) => measure(inner, pid).await,
        None => None,
    };
    let now = Instant::now();
    let ready = {
        let mut st = inner.lock();
        if st.shutting_down {
            false
        } else {
            let slot = &mut st.slots[idx];
            slot.state = ModelState::Ready;
            slot.instance = Some(instance.clone());
            slot.footprint = footprint;
            slot.consecutive_failures = 0;
            slot.retry_at = None;
            slot.last_error = None;
            slot.stats.loaded_at = Some(now);
            slot.stats.load_count += 1;
            let load_ms = millis_since(began, now);
            slot.stats.load_ms_total += load_ms;
            let detail = format!("ready in {load_ms} ms, {} bytes", slot.size());
            inner.event(&mut st, &cfg.id, "loaded", detail);
            true
        }
    };
    if !ready {
        instance.stop().await;
        return Err(SchedError::ShuttingDown);
    }
    tokio::spawn(watch_crash(
        Arc::downgrade(inner),
        idx,
        generation,
        instance.exited(),
    ));
    Ok(())
}

/// Marks the model failed if its server dies while it is loaded.
async fn watch_crash(
    inner: Weak<Inner>,
    idx: usize,
    generation: u64,
    exited: futures_util::future::BoxFuture<'static, String>,
) {
    let reason = exited.await;
    if let Some(inner) = inner.upgrade() {
        mark_crashed(&inner, idx, generation, reason).await;
    }
}

/// Marks attempt `generation` of model `idx` failed because its server died, unless that was
/// already noted or the server was stopped on purpose. The next request restarts it.
pub(super) async fn mark_crashed(inner: &Inner, idx: usize, generation: u64, reason: String) {
    let instance = {
        let mut st = inner.lock();
        let slot = &mut st.slots[idx];
        if slot.generation != generation || slot.state != ModelState::Ready {
            return;
        }
        slot.state = ModelState::Failed;
        slot.reserved = false;
        slot.footprint = None;
        slot.stats.errors += 1;
        slot.consecutive_failures += 1;
        slot.retry_at = Some(Instant::now() + backoff(slot.consecutive_failures));
        slot.last_error = Some(reason.clone());
        slot.outcome = Some((
            generation,
            Err(SchedError::Crashed {
                model: slot.cfg.id.clone(),
                reason: reason.clone(),
            }),
        ));
        let id = slot.cfg.id.clone();
        let instance = slot.instance.take();
        inner.event(&mut st, &id, "crashed", reason);
        instance
    };
    inner.slot_changed(idx);
    inner.room_changed();
    // Whatever the dead server left in its process group.
    if let Some(i) = instance {
        i.stop().await;
    }
}

/// Measures a process tree off the async threads.
async fn measure(inner: &Inner, pid: u32) -> Option<crate::telemetry::Footprint> {
    let telemetry = inner.telemetry.clone();
    tokio::task::spawn_blocking(move || {
        telemetry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .footprint(pid)
    })
    .await
    .ok()
}

fn shortfall(inner: &Inner, st: &State, idx: usize) -> Shortfall {
    let slot = &st.slots[idx];
    let device = &slot.cfg.device;
    let need = slot.size();
    let cap = inner.capacity.get(device).copied().unwrap_or(0);
    if need > cap {
        return Shortfall::Never(format!(
            "it needs {need} bytes and models may use at most {cap} on {device}"
        ));
    }
    let used: u64 = st
        .slots
        .iter()
        .enumerate()
        .filter(|(i, s)| *i != idx && s.holds_memory() && &s.cfg.device == device)
        .map(|(_, s)| s.size())
        .sum();
    if used + need <= cap {
        Shortfall::None
    } else {
        Shortfall::Bytes(used + need - cap)
    }
}

/// True when model `idx` fits, or would if every idle model on its device were evicted.
fn could_fit(inner: &Inner, idx: usize) -> bool {
    let st = inner.lock();
    match shortfall(inner, &st, idx) {
        Shortfall::Bytes(needed) => idle_bytes(&st, &st.slots[idx].cfg.device) >= needed,
        Shortfall::None | Shortfall::Never(_) => true,
    }
}

/// What the models a policy may evict (ready, idle, unpinned) hold on `device`.
fn idle_bytes(st: &State, device: &str) -> u64 {
    st.slots
        .iter()
        .filter(|s| s.evictable() && s.cfg.device == device)
        .map(super::Slot::size)
        .sum()
}

/// Reserves room for model `idx`, evicting through the policy while it does not fit.
async fn make_room(inner: &Arc<Inner>, idx: usize, key: &str) -> Result<(), SchedError> {
    let device = inner.lock().slots[idx].cfg.device.clone();
    let room = inner.room.get(&device);
    // Fast path: it fits and no load is waiting for room on this device (one that is keeps
    // its turn: memory it is waiting for is not handed to later, smaller loads).
    let free = room.and_then(|m| m.try_lock().ok());
    if free.is_some() || room.is_none() {
        let mut st = inner.lock();
        if let Shortfall::None = shortfall(inner, &st, idx) {
            st.slots[idx].reserved = true;
            return Ok(());
        }
    }
    // Held until room is made: this load's turn on the device.
    let _turn = match (free, room) {
        (Some(guard), _) => Some(guard),
        (None, Some(m)) => Some(m.lock().await),
        (None, None) => None,
    };
    let deadline = Instant::now() + inner.settings.scheduler.queue_timeout;
    let mut rx = inner.room_changes.subscribe();
    loop {
        // Changes from here on, to the state the policy is about to see, count as new.
        rx.borrow_and_update();
        let (req, id) = {
            let mut st = inner.lock();
            let id = st.slots[idx].cfg.id.clone();
            match shortfall(inner, &st, idx) {
                Shortfall::None => {
                    st.slots[idx].reserved = true;
                    return Ok(());
                }
                Shortfall::Never(reason) => return Err(SchedError::Rejected { model: id, reason }),
                Shortfall::Bytes(needed) => {
                    let incoming = st.slots[idx].to_wit(inner.epoch);
                    let priority = incoming.priority;
                    (
                        eviction_request(inner, &st, incoming, needed, priority, |_| true),
                        id,
                    )
                }
            }
        };
        let decided = decide(inner, req, key).await;
        match decided.value {
            EvictionDecision::Evict(ids) => {
                let why = format!("to make room for {id}");
                if !evict(
                    inner,
                    &ids,
                    Authority::Policy,
                    &decided_by(&decided.by),
                    &why,
                )
                .await
                {
                    tokio::time::sleep(RACE_PAUSE).await;
                }
            }
            EvictionDecision::Wait => {
                tracing::debug!(model = %id, "eviction policy says wait");
                // Ask again when a change lets the load fit by evicting idle models, or after a
                // pause whatever happened: a policy may wait on time alone (a model it guards
                // grows colder while nothing happens), or give up waiting.
                let recheck = (Instant::now() + WAIT_RECHECK).min(deadline);
                while let Ok(Ok(())) = tokio::time::timeout_at(recheck, rx.changed()).await {
                    if could_fit(inner, idx) {
                        break;
                    }
                }
                if Instant::now() >= deadline {
                    return Err(SchedError::Timeout {
                        model: id,
                        waited: inner.settings.scheduler.queue_timeout,
                    });
                }
            }
            EvictionDecision::Reject(reason) => {
                return Err(SchedError::Rejected { model: id, reason });
            }
        }
    }
}

/// The request a policy sees: the models on the incoming model's device that `include` keeps.
fn eviction_request(
    inner: &Inner,
    st: &State,
    incoming: Model,
    needed_bytes: u64,
    priority: i32,
    include: impl Fn(&super::Slot) -> bool,
) -> EvictionRequest {
    let device = incoming.device.clone();
    let loaded = st
        .slots
        .iter()
        .filter(|s| s.holds_memory() && s.cfg.device == device && s.cfg.id != incoming.id)
        .filter(|s| include(s))
        .map(|s| s.to_wit(inner.epoch))
        .collect();
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
    EvictionRequest {
        incoming,
        needed_bytes,
        device,
        priority,
        loaded,
        demand,
        telemetry: wit_telemetry(inner),
    }
}

pub(super) fn wit_telemetry(inner: &Inner) -> Telemetry {
    let latest = inner.latest.lock().unwrap_or_else(|e| e.into_inner());
    Telemetry {
        now_ms: millis_since(inner.epoch, Instant::now()),
        devices: latest
            .devices
            .iter()
            .map(|d| Device {
                name: d.name.clone(),
                total_bytes: d.total_bytes,
                free_bytes: d.free_bytes,
                utilization_percent: d.utilization_percent,
            })
            .collect(),
        cpu_percent: latest.cpu_percent,
    }
}

/// Asks the hook (off the async threads: a guest may run to its deadline) and counts the answer.
async fn decide(inner: &Arc<Inner>, req: EvictionRequest, key: &str) -> Decided<EvictionDecision> {
    let hooks = inner.hooks.clone();
    let key = key.to_string();
    let decided = if inner.inline {
        hooks.choose_eviction_for(&key, &req)
    } else {
        tokio::task::spawn_blocking(move || hooks.choose_eviction_for(&key, &req))
            .await
            .unwrap_or_else(|e| Decided {
                value: EvictionDecision::Wait,
                by: DecidedBy::Fallback(Some(PolicyError::Trap {
                    policy: "?".into(),
                    hook: crate::engine::Hook::ChooseEviction,
                    message: e.to_string(),
                })),
            })
    };
    let mut st = inner.lock();
    st.eviction.decisions += 1;
    if let DecidedBy::Fallback(Some(err)) = &decided.by {
        st.eviction.fallbacks += 1;
        if matches!(err, PolicyError::InvalidDecision { .. }) {
            st.eviction.refused += 1;
        }
        tracing::warn!(error = %err, "choose-eviction fell back to the native default");
    }
    decided
}

fn decided_by(by: &DecidedBy) -> String {
    match by {
        DecidedBy::Policy(name) => format!("policy {name}"),
        DecidedBy::Fallback(None) => "native default".into(),
        DecidedBy::Fallback(Some(e)) => format!("native default ({})", e.kind()),
    }
}

/// Who may stop a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Authority {
    /// A policy's decision: never a pinned model.
    Policy,
    /// An operator's explicit unload: pinned models too.
    Operator,
}

/// Stops the named models if each is still ready and idle (and, for a policy, unpinned);
/// false, with nothing stopped, otherwise.
pub(super) async fn evict(
    inner: &Arc<Inner>,
    ids: &[String],
    authority: Authority,
    by: &str,
    why: &str,
) -> bool {
    let victims = {
        let mut st = inner.lock();
        let mut found = Vec::new();
        for id in ids {
            let ok = |s: &super::Slot| match authority {
                Authority::Policy => s.evictable(),
                Authority::Operator => s.state == ModelState::Ready && s.in_flight == 0,
            };
            match st.slots.iter().position(|s| &s.cfg.id == id) {
                Some(i) if ok(&st.slots[i]) => found.push(i),
                _ => return false,
            }
        }
        let mut victims = Vec::new();
        for &i in &found {
            let slot = &mut st.slots[i];
            slot.state = ModelState::Unloading;
            slot.stats.evictions += 1;
            let id = slot.cfg.id.clone();
            victims.push((i, slot.instance.take()));
            inner.event(&mut st, &id, "evicted", format!("by {by}, {why}"));
        }
        st.eviction.evictions += victims.len() as u64;
        *st.eviction.by.entry(by.to_string()).or_default() += victims.len() as u64;
        victims
    };
    futures_util::future::join_all(
        victims
            .iter()
            .filter_map(|(_, i)| i.as_ref())
            .map(|i| i.stop()),
    )
    .await;
    {
        let mut st = inner.lock();
        for (i, _) in &victims {
            let slot = &mut st.slots[*i];
            slot.state = ModelState::Unloaded;
            slot.reserved = false;
            slot.footprint = None;
        }
    }
    for (i, _) in &victims {
        inner.slot_changed(*i);
    }
    inner.room_changed();
    true
}

/// Every [`HOUSEKEEPING_INTERVAL`]: refresh telemetry and footprints, then unload idle models
/// past their TTL and relieve memory pressure, both through the policy.
pub(super) async fn housekeeping(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.lock().shutting_down {
            return;
        }
        refresh(&inner).await;
        expire_ttl(&inner).await;
        relieve_pressure(&inner).await;
    }
}

async fn refresh(inner: &Arc<Inner>) {
    let pids: Vec<(usize, u32)> = inner
        .lock()
        .slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.state == ModelState::Ready)
        .filter_map(|(i, s)| Some((i, s.instance.as_ref()?.pid()?)))
        .collect();
    let telemetry = inner.telemetry.clone();
    let read = move || {
        let mut t = telemetry.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = t.snapshot();
        let footprints: Vec<_> = pids
            .into_iter()
            .map(|(i, pid)| (i, pid, t.footprint(pid)))
            .collect();
        (snapshot, footprints)
    };
    let (snapshot, footprints) = if inner.inline {
        read()
    } else {
        let Ok(read) = tokio::task::spawn_blocking(read).await else {
            return;
        };
        read
    };
    *inner.latest.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
    let mut st = inner.lock();
    for (i, pid, fp) in footprints {
        let slot = &mut st.slots[i];
        let same = slot.state == ModelState::Ready
            && slot.instance.as_ref().and_then(|i| i.pid()) == Some(pid);
        if same && !fp.pids.is_empty() {
            slot.footprint = Some(fp);
        }
    }
}

/// A record standing for housekeeping in `eviction-request.incoming`: nothing is loading, the
/// host wants `needed` bytes back on `device`.
fn housekeeping_incoming(reason: &str, device: &str, needed: u64) -> Model {
    Model {
        id: format!("modelyard:{reason}"),
        aliases: Vec::new(),
        state: ModelState::Unloaded,
        device: device.to_string(),
        size_bytes: needed,
        size_measured: false,
        context_tokens: 0,
        tags: Vec::new(),
        priority: i32::MAX,
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

/// Idle models past their TTL, offered to the policy (which may keep them with `wait`).
async fn expire_ttl(inner: &Arc<Inner>) {
    let now = Instant::now();
    let expired = |s: &super::Slot| {
        s.evictable()
            && s.cfg.ttl.is_some_and(|ttl| {
                s.stats
                    .last_used
                    .or(s.stats.loaded_at)
                    .is_some_and(|t| now - t >= ttl)
            })
    };
    let devices: Vec<String> = inner.capacity.keys().cloned().collect();
    for device in devices {
        let Some(room) = inner.room.get(&device) else {
            continue;
        };
        let Ok(_room) = room.try_lock() else { continue };
        let req = {
            let st = inner.lock();
            let needed: u64 = st
                .slots
                .iter()
                .filter(|s| expired(s) && s.cfg.device == device)
                .map(super::Slot::size)
                .sum::<u64>()
                .max(1);
            if !st
                .slots
                .iter()
                .any(|s| expired(s) && s.cfg.device == device)
            {
                continue;
            }
            let incoming = housekeeping_incoming("ttl", &device, needed);
            eviction_request(inner, &st, incoming, needed, i32::MAX, |s| expired(s))
        };
        let decided = decide(inner, req, HOUSEKEEPING_KEY).await;
        if let EvictionDecision::Evict(ids) = &decided.value {
            evict(
                inner,
                ids,
                Authority::Policy,
                &decided_by(&decided.by),
                "idle past its ttl",
            )
            .await;
        }
    }
}

/// Unloads through the policy while a device is fuller than `memory.pressure` (measured), or
/// its models hold more than its capacity (they grow as they serve).
async fn relieve_pressure(inner: &Arc<Inner>) {
    let latest = inner
        .latest
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let devices: Vec<(String, u64)> = inner
        .capacity
        .iter()
        .map(|(d, c)| (d.clone(), *c))
        .collect();
    for (device, cap) in devices {
        let Some(room) = inner.room.get(&device) else {
            continue;
        };
        let Ok(_room) = room.try_lock() else { continue };
        let req = {
            let st = inner.lock();
            let held: u64 = st
                .slots
                .iter()
                .filter(|s| s.holds_memory() && s.cfg.device == device)
                .map(super::Slot::size)
                .sum();
            let over_budget = held.saturating_sub(cap);
            let over_pressure = latest.device(&device).map_or(0, |d| {
                let limit = (d.total_bytes as f64 * inner.settings.memory.pressure) as u64;
                d.used_bytes.saturating_sub(limit)
            });
            // Ask for no more than idle models could give back, so that a policy can answer.
            let needed = over_budget.max(over_pressure).min(idle_bytes(&st, &device));
            if needed == 0 {
                continue;
            }
            let incoming = housekeeping_incoming("pressure", &device, needed);
            eviction_request(inner, &st, incoming, needed, i32::MAX, |_| true)
        };
        let needed = req.needed_bytes;
        let decided = decide(inner, req, HOUSEKEEPING_KEY).await;
        if let EvictionDecision::Evict(ids) = &decided.value {
            let why = format!("memory pressure on {device} ({needed} bytes over)");
            evict(
                inner,
                ids,
                Authority::Policy,
                &decided_by(&decided.by),
                &why,
            )
            .await;
        }
    }
}
