//! Loading, making room and unloading: the conversation with the `choose-eviction` policy.
//! Every eviction, for a load, an idle TTL or memory pressure ([`super::housekeeping`]), is
//! the policy's decision, checked again against the live state just before it is carried out,
//! except one: when idle models cannot make room and the policy says wait, the host drains
//! busy models by its own bounded rule ([`start_drain`]) and evicts them once idle. The
//! slot's transitions ([`super::slot`]) do the rest.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::slot::{Slot, millis_since};
use super::view::{self, Incoming};
use super::{Inner, SchedError, State};
use crate::engine::types::{
    EventKind, EvictedBy, EvictionCause, EvictionDecision, EvictionRequest,
};
use crate::engine::{Decided, DecidedBy, PolicyError};

/// How long a load waits before asking again after its eviction lost a race.
const RACE_PAUSE: Duration = Duration::from_millis(20);
/// The shortest a load waits on busy models before the host drains them for it; a model
/// that takes longer to load waits its load time ([`drain_after`]).
const DRAIN_AFTER_MIN: Duration = Duration::from_secs(1);

/// How far a device is from fitting one more model.
enum Shortfall {
    None,
    Bytes(u64),
    Never(String),
}

/// Loads model `idx` for attempt `generation`: makes room, starts the backend, measures it.
pub(super) async fn load(inner: Arc<Inner>, idx: usize, generation: u64, key: String) {
    super::events::load_started(&inner, idx);
    let outcome = match make_room(&inner, idx, &key).await {
        Ok(()) => start(&inner, idx, generation).await,
        Err(e) => Err(e),
    };
    let mut st = inner.lock();
    let event = match &outcome {
        Ok(()) => None,
        Err(e @ SchedError::LoadFailed { .. }) => Some(("failed", e.to_string())),
        Err(e) => Some(("rejected", e.to_string())),
    };
    let failed = matches!(outcome, Err(SchedError::LoadFailed { .. }));
    let slot = &mut st.slots[idx];
    let id = slot.cfg.id.clone();
    slot.load_ended(generation, outcome, Instant::now());
    if let Some((kind, detail)) = event {
        inner.event(&mut st, &id, kind, detail);
    }
    drop(st);
    if failed {
        super::events::load_failed(&inner, idx);
    }
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
        Some(pid) => measure(inner, pid, cfg.footprint_source()).await,
        None => None,
    };
    let now = Instant::now();
    let (ready, bytes, save) = {
        let mut st = inner.lock();
        let load_ms = millis_since(began, now);
        let slot = &mut st.slots[idx];
        let ready = slot.loaded(instance.clone(), footprint, now, load_ms);
        let bytes = slot.size();
        if ready {
            let detail = format!("ready in {load_ms} ms, {bytes} bytes");
            inner.event(&mut st, &cfg.id, "loaded", detail);
        }
        (ready, bytes, st.remember(idx))
    };
    inner.save_memory(save);
    if ready {
        super::events::loaded(inner, idx, now - began, bytes);
    }
    if !ready {
        instance.stop().await;
        return Err(SchedError::ShuttingDown);
    }
    if let Some(exited) = instance.exited() {
        tokio::spawn(watch_crash(Arc::downgrade(inner), idx, generation, exited));
    }
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
pub(super) async fn mark_crashed(inner: &Arc<Inner>, idx: usize, generation: u64, reason: String) {
    let instance = {
        let mut st = inner.lock();
        let slot = &mut st.slots[idx];
        let Some(instance) = slot.crashed(generation, &reason, Instant::now()) else {
            return;
        };
        let id = slot.cfg.id.clone();
        inner.event(&mut st, &id, "crashed", reason);
        instance
    };
    inner.slot_changed(idx);
    inner.room_changed();
    super::events::emit(inner, || EventKind::Evicted {
        model: inner.id(idx),
        by: EvictedBy::Host,
        cause: EvictionCause::Crashed,
    });
    // Whatever the dead server left in its process group.
    instance.stop().await;
}

/// Measures a process tree off the async threads.
async fn measure(
    inner: &Inner,
    pid: u32,
    source: crate::config::FootprintSource,
) -> Option<crate::telemetry::Footprint> {
    let telemetry = inner.telemetry.clone();
    tokio::task::spawn_blocking(move || super::housekeeping::footprint(&telemetry, pid, &source))
        .await
        .ok()
}

/// What keeps model `idx` out of its device: bytes over the budget, or one model too many
/// for the device's `max_loaded`. A count past the cap is asked of the policy as a shortfall of
/// at least one byte, so that it evicts at least one model, by the same rules; the host asks
/// again until both fit.
fn shortfall(inner: &Inner, st: &State, idx: usize) -> Shortfall {
    let slot = &st.slots[idx];
    let device = &slot.cfg.device;
    let need = slot.size();
    let cap = inner.capacity(device);
    if need > cap {
        return Shortfall::Never(format!(
            "it needs {need} bytes and models may use at most {cap} on {device}"
        ));
    }
    // A loading model holds memory once it has reserved room: not counted twice.
    let own = if slot.holds_memory() { need } else { 0 };
    let used = st.held_on(device) - own;
    let bytes = (used + need).saturating_sub(cap);
    let over_count = inner.settings().max_loaded(device).is_some_and(|max| {
        let others = (st.slots.iter().enumerate())
            .filter(|&(i, s)| i != idx && s.holds_memory() && &s.cfg.device == device)
            .count();
        others >= max as usize
    });
    match (bytes, over_count) {
        (0, false) => Shortfall::None,
        (bytes, _) => Shortfall::Bytes(bytes.max(1)),
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
pub(super) fn idle_bytes(st: &State, device: &str) -> u64 {
    st.slots
        .iter()
        .filter(|s| s.evictable() && s.cfg.device == device)
        .map(Slot::size)
        .sum()
}

/// Reserves room for model `idx`, evicting through the policy while it does not fit.
async fn make_room(inner: &Arc<Inner>, idx: usize, key: &str) -> Result<(), SchedError> {
    let device = inner.lock().slots[idx].cfg.device.clone();
    let room = inner.room(&device);
    let room = room.as_deref();
    // Fast path: it fits and no load is waiting for room on this device (one that is keeps
    // its turn: memory it is waiting for is not handed to later, smaller loads).
    let free = room.and_then(|m| m.try_lock().ok());
    if free.is_some() || room.is_none() {
        let mut st = inner.lock();
        if let Shortfall::None = shortfall(inner, &st, idx) {
            st.slots[idx].reserve();
            return Ok(());
        }
    }
    // Held until room is made: this load's turn on the device.
    let _turn = match (free, room) {
        (Some(guard), _) => Some(guard),
        (None, Some(m)) => Some(m.lock().await),
        (None, None) => None,
    };
    ask_for_room(inner, idx, key).await
}

/// With this load's turn on its device: asks the policy until the load fits, is rejected, or
/// has waited `scheduler.queue_timeout`.
///
/// A policy can only evict idle models. When those cannot make the room and the policy says
/// wait, busy models would keep the load out for as long as requests keep coming to them, so
/// after [`drain_after`] the host drains them ([`start_drain`]): they take no new request
/// while those in flight finish, then the host evicts them. A load is kept out by busy models
/// at most its own load time (at least [`DRAIN_AFTER_MIN`]) from when it began waiting or
/// when the newest of them was loaded, whichever is later, plus their requests in flight: a
/// model just loaded serves for that long before it can be drained in turn.
async fn ask_for_room(inner: &Arc<Inner>, idx: usize, key: &str) -> Result<(), SchedError> {
    let began = Instant::now();
    let queue_timeout = inner.settings().scheduler.queue_timeout;
    let deadline = began + queue_timeout;
    let wait = drain_after(&inner.lock().slots[idx]);
    let mut drain = Drain {
        inner,
        models: Vec::new(),
        by: Evictor::host(DRAIN_RULE, EvictionCause::Load(inner.id(idx))),
    };
    let mut rx = inner.room_changes.listen();
    loop {
        // Changes from here on, to the state the policy is about to see, count as new.
        rx.mark_seen();
        let (next, id, drain_at) = {
            let mut st = inner.lock();
            let drain_at = drain_time(&st, idx, began, wait);
            let id = st.slots[idx].cfg.id.clone();
            match shortfall(inner, &st, idx) {
                Shortfall::None => {
                    st.slots[idx].reserve();
                    return Ok(());
                }
                Shortfall::Never(reason) => return Err(SchedError::Rejected { model: id, reason }),
                Shortfall::Bytes(needed) => {
                    let drained: Vec<String> = drain
                        .models
                        .iter()
                        .filter(|&&i| st.slots[i].draining() && st.slots[i].evictable())
                        .map(|&i| st.slots[i].cfg.id.clone())
                        .collect();
                    let next = if drained.is_empty() {
                        Next::Ask(view::eviction_request(
                            inner,
                            &st,
                            Incoming::Load(idx),
                            needed,
                            |_| true,
                        ))
                    } else {
                        Next::EvictDrained(drained)
                    };
                    (next, id, drain_at)
                }
            }
        };
        let req = match next {
            Next::Ask(req) => req,
            Next::EvictDrained(drained) => {
                // Whoever drained them (the host's rule or the policy) evicts them.
                let why = format!("drained to make room for {id}");
                if !evict(inner, &drained, Authority::Policy, &drain.by, &why).await {
                    tokio::time::sleep(RACE_PAUSE).await;
                }
                continue;
            }
        };
        let decided = decide(inner, req, key).await;
        // Until when the load waits for a change before it asks again.
        let wait_until = match decided.value {
            EvictionDecision::Evict(ids) => {
                let why = format!("to make room for {id}");
                let by = Evictor::decided(&decided.by, EvictionCause::Load(id.clone()));
                if !evict(inner, &ids, Authority::Policy, &by, &why).await {
                    tokio::time::sleep(RACE_PAUSE).await;
                }
                continue;
            }
            EvictionDecision::Drain(ids) => {
                tracing::debug!(model = %id, drain = ?ids, "eviction policy drains");
                drain.by = Evictor::decided(&decided.by, EvictionCause::Load(id.clone()));
                drain_named(inner, &id, &ids, &mut drain.models);
                deadline
            }
            EvictionDecision::Wait(after) => {
                tracing::debug!(model = %id, ?after, "eviction policy says wait");
                if drain.models.is_empty() && Instant::now() >= drain_at {
                    start_drain(inner, idx, &mut drain.models);
                }
                // Ask again when a change lets the load fit by evicting idle models, after the
                // pause the policy asked for (a policy may wait on time alone: a model it
                // guards grows colder while nothing happens), and when the time to drain comes.
                let mut recheck = after.map_or(deadline, |a| (Instant::now() + a).min(deadline));
                if drain.models.is_empty() && drain_at > Instant::now() {
                    recheck = recheck.min(drain_at);
                }
                recheck
            }
            EvictionDecision::Reject(reason) => {
                let reason = reason + &asleep_note(&inner.lock(), idx);
                return Err(SchedError::Rejected { model: id, reason });
            }
        };
        wait_for_room(inner, idx, &mut rx, wait_until).await;
        if Instant::now() >= deadline {
            return Err(SchedError::Timeout {
                model: id,
                waited: queue_timeout,
            });
        }
    }
}

/// What a load waiting for room does next.
// A local value, made and matched once per decision: boxing the request would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
enum Next {
    /// Asks the policy with this request.
    Ask(EvictionRequest),
    /// Evicts the models drained for it, idle now.
    EvictDrained(Vec<String>),
}

/// Who evicts a drained model, in events and `/metrics`.
pub(super) const DRAIN_RULE: &str = "host drain rule";

/// When the load may drain the busy models: `wait` after it began waiting, and after the
/// newest of them was loaded, so that a model just loaded serves for a while before it can
/// be drained in turn.
fn drain_time(st: &State, idx: usize, began: Instant, wait: Duration) -> Instant {
    let device = &st.slots[idx].cfg.device;
    let newest = st
        .slots
        .iter()
        .filter(|s| &s.cfg.device == device && !s.idle())
        .filter_map(|s| s.stats().loaded_at)
        .filter(|&t| t > began)
        .max();
    newest.unwrap_or(began) + wait
}

/// How long a load waits on busy models before the host drains them: its expected load time
/// (a load that waits as long as it takes has paid for it twice), at least
/// [`DRAIN_AFTER_MIN`].
fn drain_after(slot: &Slot) -> Duration {
    let load = match (slot.stats().load_count, &slot.cfg.backend) {
        (n, _) if n > 0 => Duration::from_millis(slot.stats().mean_load_ms().into()),
        (_, crate::config::BackendSettings::Simulated { load_time }) => *load_time,
        _ => Duration::ZERO,
    };
    load.max(DRAIN_AFTER_MIN)
}

/// Waits until a change lets the load fit by evicting idle models (drained ones among them), or
/// until `until`.
async fn wait_for_room(
    inner: &Inner,
    idx: usize,
    rx: &mut super::signal::Listener,
    until: Instant,
) {
    while let Ok(()) = tokio::time::timeout_at(until, rx.changed()).await {
        if could_fit(inner, idx) {
            break;
        }
    }
}

/// Drains the models a policy named for `incoming`'s load (checked against the rules when it
/// answered), adding those not drained yet to `drained`.
fn drain_named(inner: &Inner, incoming: &str, ids: &[String], drained: &mut Vec<usize>) {
    let mut st = inner.lock();
    for id in ids {
        let Ok(i) = inner.index(id) else {
            continue;
        };
        if drained.contains(&i) || st.slots[i].cfg.id != *id {
            continue;
        }
        st.slots[i].begin_drain();
        if st.slots[i].draining() {
            drained.push(i);
            inner.event(
                &mut st,
                id,
                "draining",
                format!("to make room for {incoming}"),
            );
        }
    }
}

/// Drains, for model `idx`'s load, the fewest busy models that make room with the idle ones:
/// those with the fewest requests waiting for them first (the fewest kept waiting), then the
/// least recently used. Drains nothing when even all of them would not make room (pinned
/// models hold the rest).
fn start_drain(inner: &Inner, idx: usize, drained: &mut Vec<usize>) {
    let mut st = inner.lock();
    let Shortfall::Bytes(needed) = shortfall(inner, &st, idx) else {
        return;
    };
    let device = st.slots[idx].cfg.device.clone();
    let mut room = idle_bytes(&st, &device);
    let mut busy: Vec<usize> = (0..st.slots.len())
        .filter(|&i| {
            let s = &st.slots[i];
            i != idx
                && s.cfg.device == device
                && !s.cfg.pinned
                && s.state() == crate::engine::types::ModelState::Ready
                && !s.idle()
        })
        .collect();
    busy.sort_by_key(|&i| (st.slots[i].queued(), st.slots[i].last_active()));
    let mut chosen = Vec::new();
    for i in busy {
        if room >= needed {
            break;
        }
        room += st.slots[i].size();
        chosen.push(i);
    }
    if room < needed {
        return;
    }
    let incoming = st.slots[idx].cfg.id.clone();
    for &i in &chosen {
        st.slots[i].begin_drain();
        let id = st.slots[i].cfg.id.clone();
        inner.event(
            &mut st,
            &id,
            "draining",
            format!("to make room for {incoming}"),
        );
    }
    drained.extend(chosen);
}

/// The models drained for one load, and who drained them; dropping it gives back those still
/// serving, whose queues then start again.
struct Drain<'a> {
    inner: &'a Inner,
    models: Vec<usize>,
    by: Evictor,
}

impl Drop for Drain<'_> {
    fn drop(&mut self) {
        if self.models.is_empty() {
            return;
        }
        let undrained: Vec<usize> = {
            let mut st = self.inner.lock();
            self.models
                .iter()
                .copied()
                .filter(|&i| st.slots[i].end_drain())
                .collect()
        };
        for i in undrained {
            self.inner.slot_changed(i);
        }
    }
}

/// Asks the hook (off the async threads: a guest may run to its deadline) and counts the answer.
pub(super) async fn decide(
    inner: &Arc<Inner>,
    req: EvictionRequest,
    key: &str,
) -> Decided<EvictionDecision> {
    super::events::deliver_before_deciding(inner);
    let hooks = inner.hooks.clone();
    let key = key.to_string();
    let decided = if inner.inline {
        hooks.choose_eviction_for(&key, &req)
    } else {
        tokio::task::spawn_blocking(move || hooks.choose_eviction_for(&key, &req))
            .await
            .unwrap_or_else(|e| Decided {
                value: EvictionDecision::Wait(Some(crate::engine::types::WAIT_RECHECK)),
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

pub(super) fn decided_by(by: &DecidedBy) -> String {
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

/// Who evicts, as `/metrics` counts it (`label`) and as policies are told.
#[derive(Debug, Clone)]
pub(super) struct Evictor {
    pub label: String,
    pub by: EvictedBy,
    pub cause: EvictionCause,
}

impl Evictor {
    /// A rule of the host's own, or an operator.
    pub fn host(label: &str, cause: EvictionCause) -> Self {
        Self {
            label: label.to_string(),
            by: EvictedBy::Host,
            cause,
        }
    }

    /// Whoever made a `choose-eviction` decision.
    pub fn decided(by: &DecidedBy, cause: EvictionCause) -> Self {
        Self {
            label: decided_by(by),
            by: match by {
                DecidedBy::Policy(name) => EvictedBy::Policy(name.clone()),
                DecidedBy::Fallback(_) => EvictedBy::Fallback,
            },
            cause,
        }
    }
}

/// Stops the named models if each is still ready and idle (and, for a policy, unpinned);
/// false, with nothing stopped, otherwise.
pub(super) async fn evict(
    inner: &Arc<Inner>,
    ids: &[String],
    authority: Authority,
    evictor: &Evictor,
    why: &str,
) -> bool {
    let by = evictor.label.as_str();
    let victims = {
        let mut st = inner.lock();
        let mut found = Vec::new();
        for id in ids {
            let ok = |s: &Slot| match authority {
                Authority::Policy => s.evictable(),
                Authority::Operator => s.idle(),
            };
            match st.slots.iter().position(|s| &s.cfg.id == id) {
                Some(i) if ok(&st.slots[i]) => found.push(i),
                _ => return false,
            }
        }
        let mut victims = Vec::new();
        for &i in &found {
            let slot = &mut st.slots[i];
            let instance = slot.begin_unload();
            let id = slot.cfg.id.clone();
            victims.push((i, instance));
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
            st.slots[*i].unloaded();
        }
    }
    for (i, _) in &victims {
        inner.slot_changed(*i);
        super::events::emit(inner, || EventKind::Evicted {
            model: inner.id(*i),
            by: evictor.by.clone(),
            cause: evictor.cause.clone(),
        });
    }
    inner.room_changed();
    true
}

/// For a load refused on the CPU: what sleeping servers keep in RAM, which no eviction frees
/// (empty when none does).
fn asleep_note(st: &State, idx: usize) -> String {
    if st.slots[idx].cfg.device != crate::config::CPU_DEVICE {
        return String::new();
    }
    let asleep: Vec<&Slot> = (st.slots.iter()).filter(|s| s.asleep_bytes() > 0).collect();
    if asleep.is_empty() {
        return String::new();
    }
    let bytes: u64 = asleep.iter().map(|s| s.asleep_bytes()).sum();
    let ids: Vec<&str> = asleep.iter().map(|s| s.cfg.id.as_str()).collect();
    format!(
        "; sleeping vLLM servers keep {bytes} bytes of RAM ({}), which only waking them frees \
         (`control = \"vllm-sleep:2\"` drops their weights instead)",
        ids.join(", ")
    )
}
