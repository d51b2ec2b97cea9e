//! One configured model's lifecycle, queue and statistics.
//!
//! The lifecycle is a private [`Phase`] that changes only through the transition methods
//! below, each of which checks the phase it leaves (as llama-swap's `swapState(expected, new)`
//! does): the rest of the scheduler asks and reads, it never writes lifecycle fields. How a
//! slot is shown lives elsewhere: to policies in [`super::view`], to people in
//! [`super::status`].

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{KeepAlive, MAX_BACKOFF, SchedError};
use crate::backend::Instance;
use crate::config::ModelSettings;
use crate::engine::types::ModelState;
use crate::estimate::Estimate;
use crate::telemetry::Footprint;

/// Where a model is in its life. Richer than the contract's `model-state`, which
/// [`Slot::state`] derives from it: a new phase inside needs no contract change.
#[derive(Debug)]
enum Phase {
    Unloaded,
    /// Its backend is starting. `reserved`: the load has made room, so it counts against its
    /// device's budget.
    Loading {
        reserved: bool,
    },
    /// `draining`: a load waits for its memory, so it starts no new request (they queue)
    /// while those in flight finish; then it goes.
    Ready {
        instance: Arc<dyn Instance>,
        footprint: Option<Footprint>,
        draining: bool,
    },
    /// Being stopped; it holds its memory until the stop ends.
    Unloading {
        footprint: Option<Footprint>,
    },
    /// Its last start failed or its server died; the next load waits until `retry_at`.
    Failed {
        retry_at: Instant,
    },
}

/// A model's live state.
#[derive(Debug)]
pub(super) struct Slot {
    pub cfg: Arc<ModelSettings>,
    phase: Phase,
    /// Increments with every load attempt; a crash or an outcome belongs to one attempt.
    generation: u64,
    /// How the latest finished attempt ended, for the requests that waited on it.
    outcome: Option<(u64, Result<(), SchedError>)>,
    in_flight: u32,
    /// Requests waiting for it, each with what wakes it, in the order they are let in: the
    /// last is first in line
    /// (the highest priority, and the earliest among equals).
    waiting: BTreeMap<Ticket, Arc<Notify>>,
    /// How many of `waiting` have each priority: what a newcomer waits behind is counted by
    /// priority, not by walking the line (a replay's queues reach thousands).
    waiting_by_priority: BTreeMap<i32, u64>,
    /// The number the next request to join the queue gets.
    next_ticket: u64,
    consecutive_failures: u32,
    last_error: Option<String>,
    stats: Stats,
    /// What it is expected to hold on its device until it is measured.
    estimate: Estimate,
    /// This load's idle TTL when a request set one (Ollama's `keep_alive`): `Some(None)` keeps
    /// it; cleared by the next load.
    ttl_override: Option<Option<Duration>>,
    /// The model left the config: no name reaches it, and it goes once idle.
    retired: bool,
    /// Settings from a reload that need its server restarted: taken when it next stops.
    pending: Option<Arc<ModelSettings>>,
    /// Bytes its unloaded server keeps in the machine's RAM ([`ModelSettings::rests_in_ram`]):
    /// set when it goes to sleep, cleared when a load wakes it.
    asleep: u64,
}

/// A request's place in a model's queue: its priority, then its arrival (earlier first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(i32, Reverse<u64>);

/// Requests a model serves before the host trusts its mean request time to refuse a request
/// early.
pub const ESTIMATE_AFTER: u64 = 8;

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

impl Stats {
    pub fn mean_load_ms(&self) -> u32 {
        mean(self.load_ms_total, u64::from(self.load_count))
    }

    pub fn mean_latency_ms(&self) -> u32 {
        mean(self.request_ms_total, self.requests_done)
    }
}

impl Slot {
    pub fn new(cfg: ModelSettings, estimate: Estimate) -> Self {
        Self {
            cfg: Arc::new(cfg),
            phase: Phase::Unloaded,
            generation: 0,
            outcome: None,
            in_flight: 0,
            waiting: BTreeMap::new(),
            waiting_by_priority: BTreeMap::new(),
            next_ticket: 0,
            consecutive_failures: 0,
            last_error: None,
            stats: Stats::default(),
            estimate,
            ttl_override: None,
            retired: false,
            pending: None,
            asleep: 0,
        }
    }

    // ---- reading ----

    /// The phase as the contract names it.
    pub fn state(&self) -> ModelState {
        match self.phase {
            Phase::Unloaded => ModelState::Unloaded,
            Phase::Loading { .. } => ModelState::Loading,
            Phase::Ready { .. } => ModelState::Ready,
            Phase::Unloading { .. } => ModelState::Unloading,
            Phase::Failed { .. } => ModelState::Failed,
        }
    }

    pub fn instance(&self) -> Option<&Arc<dyn Instance>> {
        match &self.phase {
            Phase::Ready { instance, .. } => Some(instance),
            _ => None,
        }
    }

    pub fn footprint(&self) -> Option<&Footprint> {
        match &self.phase {
            Phase::Ready { footprint, .. } | Phase::Unloading { footprint } => footprint.as_ref(),
            _ => None,
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// How attempt `generation`, or a later one, ended, if it has.
    pub fn outcome_since(&self, generation: u64) -> Option<&Result<(), SchedError>> {
        self.outcome
            .as_ref()
            .filter(|(done, _)| *done >= generation)
            .map(|(_, r)| r)
    }

    /// How long until a failed model may be loaded again, if it must wait.
    pub fn backing_off(&self, now: Instant) -> Option<Duration> {
        match self.phase {
            Phase::Failed { retry_at } if retry_at > now => Some(retry_at - now),
            _ => None,
        }
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    pub fn queued(&self) -> u32 {
        u32::try_from(self.waiting.len()).unwrap_or(u32::MAX)
    }

    /// The highest priority among the requests waiting for it.
    pub fn waiting_priority(&self) -> Option<i32> {
        self.waiting.last_key_value().map(|(t, _)| t.0)
    }

    /// Whether a request may start on it now: it is ready (not draining), and one of its
    /// free `parallel` places is the request's: fewer requests are ahead of it in line than
    /// places are free (for a request not yet waiting, those of its priority or higher).
    /// Every request among the first in line may take a place the moment it looks, in
    /// whatever order they look, so a load's whole queue starts on one wake.
    pub fn has_place_for(&self, ticket: Option<Ticket>, priority: i32) -> bool {
        if !matches!(
            self.phase,
            Phase::Ready {
                draining: false,
                ..
            }
        ) {
            return false;
        }
        let free = self.cfg.parallel.saturating_sub(self.in_flight) as usize;
        let ahead = match ticket {
            Some(t) => self
                .waiting
                .range((Bound::Excluded(t), Bound::Unbounded))
                .take(free)
                .count(),
            None => self
                .waiting
                .range(Ticket(priority, Reverse(u64::MAX))..)
                .take(free)
                .count(),
        };
        ahead < free
    }

    /// True when a request waits while a place is free: the first in line should look again.
    pub fn place_free_for_queue(&self) -> bool {
        !self.waiting.is_empty() && self.in_flight < self.cfg.parallel && !self.draining()
    }

    /// What wakes the requests that may take the free places: the first in line, one for each
    /// place. A freed place wakes only these, not the whole queue.
    pub fn first_in_line(&self) -> Vec<Arc<Notify>> {
        if !self.place_free_for_queue() {
            return Vec::new();
        }
        let free = self.cfg.parallel.saturating_sub(self.in_flight) as usize;
        self.waiting.values().rev().take(free).cloned().collect()
    }

    /// Ready, but starting nothing new until it can go ([`Slot::begin_drain`]).
    pub fn draining(&self) -> bool {
        matches!(self.phase, Phase::Ready { draining: true, .. })
    }

    /// A low estimate of how long a request of `priority` that joins its queue now waits to
    /// start: the requests ahead of it (those in flight, and those waiting with at least its
    /// priority) past its places, each taking the mean request time a place,
    /// plus a load if it is not loaded. `None` until it has served [`ESTIMATE_AFTER`]
    /// requests (and loaded once, if a load is needed): the host never turns a request away
    /// on a guess it cannot make.
    pub fn expected_wait(&self, priority: i32) -> Option<Duration> {
        if self.stats.requests_done < ESTIMATE_AFTER {
            return None;
        }
        let ahead: u64 = self
            .waiting_by_priority
            .range(priority..)
            .map(|(_, n)| n)
            .sum();
        let busy = u64::from(self.in_flight) + ahead;
        let rounds = (busy + 1).saturating_sub(u64::from(self.cfg.parallel))
            / u64::from(self.cfg.parallel.max(1));
        let queue = Duration::from_millis(rounds * u64::from(self.stats.mean_latency_ms()));
        match self.phase {
            Phase::Ready { .. } | Phase::Loading { .. } => Some(queue),
            Phase::Unloaded | Phase::Failed { .. } | Phase::Unloading { .. } => {
                (self.stats.load_count > 0)
                    .then(|| queue + Duration::from_millis(self.stats.mean_load_ms().into()))
            }
        }
    }

    /// Bytes it holds (or will hold) on its device: measured once ready, else the estimate.
    pub fn size(&self) -> u64 {
        match self.footprint() {
            Some(f) if !f.pids.is_empty() => f.on(&self.cfg.device),
            _ => self.estimate.bytes,
        }
    }

    /// Where [`Slot::size`] comes from: `measured`, or the estimate's source.
    pub fn size_source(&self) -> String {
        if self.size_measured() {
            "measured".to_string()
        } else {
            self.estimate.source.to_string()
        }
    }

    /// A new estimate, for while it is not measured.
    pub fn set_estimate(&mut self, estimate: Estimate) {
        self.estimate = estimate;
    }

    pub fn size_measured(&self) -> bool {
        self.footprint().is_some_and(|f| !f.pids.is_empty())
    }

    /// Bytes it keeps in RAM while unloaded (vLLM asleep at level 1), counted against the
    /// CPU's budget whatever its device.
    pub fn asleep_bytes(&self) -> u64 {
        self.asleep
    }

    /// True while it counts against its device's budget.
    pub fn holds_memory(&self) -> bool {
        matches!(
            self.phase,
            Phase::Loading { reserved: true } | Phase::Ready { .. } | Phase::Unloading { .. }
        )
    }

    /// Ready, idle and unpinned, with no request waiting for it (unless it drains, when
    /// they wait for its next load): the host would accept evicting it. A model just loaded
    /// is idle for the moment before the requests that waited for it take their places.
    pub fn evictable(&self) -> bool {
        self.idle() && !self.cfg.pinned && (self.waiting.is_empty() || self.draining())
    }

    /// Ready with nothing in flight.
    pub fn idle(&self) -> bool {
        matches!(self.phase, Phase::Ready { .. }) && self.in_flight == 0
    }

    /// When it last finished a request, or became ready if it has served none.
    /// How long it may stay idle before it is offered for eviction: this load's
    /// `keep_alive`, else its config's `ttl`.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl_override.unwrap_or(self.cfg.ttl)
    }

    /// A request's `keep_alive` for this load.
    pub fn keep_alive(&mut self, keep: KeepAlive) {
        self.ttl_override = Some(match keep {
            KeepAlive::Unload => Some(Duration::ZERO),
            KeepAlive::Forever => None,
            KeepAlive::For(d) => Some(d),
        });
    }

    pub fn last_active(&self) -> Option<Instant> {
        self.stats.last_used.or(self.stats.loaded_at)
    }

    // ---- requests ----

    /// Takes a place in its wait queue, behind every request of its priority or higher;
    /// `wake` is notified when a place may be its.
    pub fn join_queue(&mut self, priority: i32, wake: Arc<Notify>) -> Ticket {
        let t = Ticket(priority, Reverse(self.next_ticket));
        self.next_ticket += 1;
        self.waiting.insert(t, wake);
        *self.waiting_by_priority.entry(priority).or_default() += 1;
        t
    }

    /// Gives back a place taken with [`Slot::join_queue`].
    pub fn leave_queue(&mut self, ticket: Ticket) {
        if self.waiting.remove(&ticket).is_none() {
            return;
        }
        let priority = ticket.0;
        if let Some(n) = self.waiting_by_priority.get_mut(&priority) {
            *n -= 1;
            if *n == 0 {
                self.waiting_by_priority.remove(&priority);
            }
        }
    }

    /// A request starts on it, if it is ready: its server.
    pub fn lease(&mut self) -> Option<Arc<dyn Instance>> {
        let instance = self.instance()?.clone();
        self.in_flight += 1;
        self.stats.use_count += 1;
        Some(instance)
    }

    /// A request that took [`Slot::lease`] ends after `took_ms`; true when it is idle now.
    /// Its place is free again: the caller wakes the queue.
    pub fn release(&mut self, now: Instant, took_ms: u64, failed: bool) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.stats.last_used = Some(now);
        self.stats.requests_done += 1;
        self.stats.request_ms_total += took_ms;
        if failed {
            self.stats.errors += 1;
        }
        self.in_flight == 0
    }

    // ---- configuration ----

    /// Whether the model left the config.
    pub fn retired(&self) -> bool {
        self.retired
    }

    /// The settings it is to run on: a reload's that wait for its server to stop, else its
    /// own.
    pub fn target(&self) -> &Arc<ModelSettings> {
        self.pending.as_ref().unwrap_or(&self.cfg)
    }

    /// Ready and idle with a reload waiting for its server to stop (new settings, or none
    /// at all): stop it now.
    pub fn restart_due(&self) -> bool {
        matches!(self.phase, Phase::Ready { .. })
            && self.in_flight == 0
            && (self.pending.is_some() || self.retired)
    }

    /// A reload's settings for it (it is in the config again, if it was retired). Those that
    /// need a new server (`restart`) wait, while a server runs, until it stops: it starts no
    /// new request meanwhile (they queue for the restart) and goes once those in flight end.
    /// True when it waits so.
    pub fn reconfigure(&mut self, cfg: Arc<ModelSettings>, restart: bool) -> bool {
        self.retired = false;
        let running = matches!(
            self.phase,
            Phase::Loading { .. } | Phase::Ready { .. } | Phase::Unloading { .. }
        );
        if restart && running {
            self.pending = Some(cfg);
            self.begin_drain();
            return true;
        }
        self.cfg = cfg;
        // A restart that waited is not needed any more: its queue may start again.
        if self.pending.take().is_some() {
            self.end_drain();
        }
        if restart {
            // A command that failed may work now: no backoff for the new one.
            self.consecutive_failures = 0;
            if let Phase::Failed { .. } = self.phase {
                self.phase = Phase::Unloaded;
            }
        }
        false
    }

    /// The model left the config: it goes once idle (its server, if one runs, is stopped
    /// then).
    pub fn retire(&mut self) {
        self.retired = true;
        self.pending = None;
    }

    /// Its server stopped: settings that waited for that apply now.
    fn settle(&mut self) {
        if let Some(cfg) = self.pending.take() {
            self.cfg = cfg;
            self.consecutive_failures = 0;
        }
    }

    // ---- lifecycle ----

    /// Unloaded or failed → loading: a new attempt, whose generation it returns.
    pub fn begin_load(&mut self) -> u64 {
        debug_assert!(matches!(self.phase, Phase::Unloaded | Phase::Failed { .. }));
        self.settle();
        self.asleep = 0;
        self.phase = Phase::Loading { reserved: false };
        self.generation += 1;
        self.generation
    }

    /// The load has made room: from now on it counts against its device's budget.
    pub fn reserve(&mut self) {
        if let Phase::Loading { reserved } = &mut self.phase {
            *reserved = true;
        }
    }

    /// Loading → ready, `load_ms` after its start. False (and no change) when it is no longer
    /// loading: the host shut down meanwhile.
    pub fn loaded(
        &mut self,
        instance: Arc<dyn Instance>,
        footprint: Option<Footprint>,
        now: Instant,
        load_ms: u64,
    ) -> bool {
        if !matches!(self.phase, Phase::Loading { .. }) {
            return false;
        }
        // A load that began before a reload changed its settings serves nothing new: its
        // queue waits for the restart on them.
        self.phase = Phase::Ready {
            instance,
            footprint,
            draining: self.pending.is_some(),
        };
        self.consecutive_failures = 0;
        self.last_error = None;
        self.ttl_override = None;
        self.stats.loaded_at = Some(now);
        self.stats.load_count += 1;
        self.stats.load_ms_total += load_ms;
        true
    }

    /// Attempt `generation` ended with `outcome`. A start that failed makes it failed, with a
    /// backoff before the next; any other failure (a rejection, a timeout) leaves it unloaded.
    pub fn load_ended(&mut self, generation: u64, outcome: Result<(), SchedError>, now: Instant) {
        match &outcome {
            Ok(()) => {}
            Err(SchedError::LoadFailed { reason, .. }) => {
                self.stats.errors += 1;
                self.fail(reason.clone(), now);
            }
            Err(_) => self.phase = Phase::Unloaded,
        }
        self.outcome = Some((generation, outcome));
    }

    /// Ready → failed because the server of attempt `generation` died: its server, to clean up
    /// after. None (and no change) when that attempt is no longer the one serving.
    pub fn crashed(
        &mut self,
        generation: u64,
        reason: &str,
        now: Instant,
    ) -> Option<Arc<dyn Instance>> {
        if self.generation != generation {
            return None;
        }
        let instance = self.instance()?.clone();
        self.stats.errors += 1;
        self.fail(reason.to_string(), now);
        self.outcome = Some((
            generation,
            Err(SchedError::Crashed {
                model: self.cfg.id.clone(),
                reason: reason.to_string(),
            }),
        ));
        Some(instance)
    }

    fn fail(&mut self, reason: String, now: Instant) {
        self.consecutive_failures += 1;
        self.phase = Phase::Failed {
            retry_at: now + backoff(self.consecutive_failures),
        };
        self.last_error = Some(reason);
    }

    /// Ready → ready and draining: requests that come queue while those in flight finish.
    /// No change unless it is ready.
    pub fn begin_drain(&mut self) {
        if let Phase::Ready { draining, .. } = &mut self.phase {
            *draining = true;
        }
    }

    /// Draining → ready again: the load it drained for no longer needs it. True when it was
    /// draining (its queue may start again).
    pub fn end_drain(&mut self) -> bool {
        match &mut self.phase {
            Phase::Ready { draining, .. } => std::mem::replace(draining, false),
            _ => false,
        }
    }

    /// Ready → unloading: its server, to stop. It keeps its memory until [`Slot::unloaded`].
    pub fn begin_unload(&mut self) -> Option<Arc<dyn Instance>> {
        let Phase::Ready {
            instance,
            footprint,
            ..
        } = std::mem::replace(&mut self.phase, Phase::Unloaded)
        else {
            return None;
        };
        self.phase = Phase::Unloading { footprint };
        self.stats.evictions += 1;
        Some(instance)
    }

    /// Unloading → unloaded: its server has stopped, or (vLLM) gone to sleep keeping its
    /// weights in RAM.
    pub fn unloaded(&mut self) {
        if matches!(self.phase, Phase::Unloading { .. }) {
            if self.cfg.rests_in_ram() {
                self.asleep = self.size();
            }
            self.phase = Phase::Unloaded;
            self.settle();
        }
    }

    /// Any phase → unloaded as the host shuts down: its server, if it had one, to stop.
    pub fn shut_down(&mut self) -> Option<Arc<dyn Instance>> {
        match std::mem::replace(&mut self.phase, Phase::Unloaded) {
            Phase::Ready { instance, .. } => Some(instance),
            _ => None,
        }
    }

    /// A new measurement of the server with process `pid`, kept if that server still serves.
    pub fn measured(&mut self, pid: u32, fp: Footprint) {
        if let Phase::Ready {
            instance,
            footprint,
            ..
        } = &mut self.phase
            && instance.pid() == Some(pid)
            && !fp.pids.is_empty()
        {
            *footprint = Some(fp);
        }
    }
}

/// Backoff before the next load after `n` consecutive failures: none after the first (a crash
/// after a good run restarts at once), then 1 s, 2 s, 4 s, ... up to a minute.
fn backoff(n: u32) -> Duration {
    if n <= 1 {
        Duration::ZERO
    } else {
        Duration::from_secs(1u64 << (n - 2).min(6)).min(MAX_BACKOFF)
    }
}

pub fn millis_since(earlier: Instant, later: Instant) -> u64 {
    u64::try_from(later.saturating_duration_since(earlier).as_millis()).unwrap_or(u64::MAX)
}

fn mean(total: u64, n: u64) -> u32 {
    total
        .checked_div(n)
        .map_or(0, |m| u32::try_from(m).unwrap_or(u32::MAX))
}
