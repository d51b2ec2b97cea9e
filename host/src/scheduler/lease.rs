//! A request's hold on its model: a place in the model's wait queue while it waits, then a
//! [`Lease`] while it is served. Both give their place back when dropped, however the request
//! ends.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::slot::{Slot, Ticket, millis_since};
use super::{CRASH_CONFIRM, Demand, Inner, SchedError, State, room};
use crate::backend::{CountError, Endpoint, Instance};
use crate::engine::types::ModelState;

/// A request waiting for its model, from one look at the model's slot to the next.
pub(super) struct Waiter<'a> {
    inner: &'a Arc<Inner>,
    idx: usize,
    pub arrived: Instant,
    /// The queueing rules when it arrived (a reload applies to later requests).
    pub rules: crate::config::SchedulerSettings,
    queued: Queued<'a>,
    /// The load attempt it waits on, and whether it started that attempt.
    joined: Option<u64>,
    started_load: Option<u64>,
    first_look: bool,
}

impl<'a> Waiter<'a> {
    pub fn new(inner: &'a Arc<Inner>, idx: usize) -> Self {
        Self {
            inner,
            idx,
            arrived: Instant::now(),
            rules: inner.settings().scheduler.clone(),
            queued: Queued::new(inner, idx),
            joined: None,
            started_load: None,
            first_look: true,
        }
    }

    /// Returns when a place may be this request's.
    pub async fn woken(&self) {
        self.queued.wake.notified().await;
    }

    /// One look, under the state lock: a lease if the model is ready, an error if the request
    /// must give up, `None` (with its place in the queue taken) if it must wait. A model that
    /// is not loaded starts loading here.
    pub fn look(&mut self, st: &mut State, demand: &Demand) -> Result<Option<Lease>, SchedError> {
        let now = if self.first_look {
            self.arrived
        } else {
            Instant::now()
        };
        let shutting_down = st.shutting_down;
        let slot = &mut st.slots[self.idx];
        let found = if shutting_down {
            Err(SchedError::ShuttingDown)
        } else {
            self.found(slot, demand, now)
        };
        self.first_look = false;
        match found {
            Ok(None) => {}
            done => {
                let gave_up = done.is_err() && self.queued.waiting();
                self.queued.leave(slot);
                // One that leaves the line without a place moves those behind it up: one may
                // have looked before and may take a place now. (Taking a place moves them
                // up by one and the free places down by one: nothing changes for them.)
                if gave_up {
                    wake(slot.first_in_line());
                }
                return done;
            }
        }
        if !self.queued.waiting() {
            let limit = self.rules.queue_timeout;
            if let Some(expected) = slot.expected_wait(demand.priority).filter(|&w| w > limit) {
                return Err(SchedError::Overloaded {
                    model: slot.cfg.id.clone(),
                    expected,
                });
            }
            if slot.queued() >= self.rules.max_queue {
                let mean = slot.stats().mean_load_ms();
                return Err(SchedError::QueueFull {
                    model: slot.cfg.id.clone(),
                    queued: slot.queued(),
                    retry_after: std::time::Duration::from_millis(u64::from(mean).max(1000)),
                });
            }
            self.queued.join(slot, demand.priority);
        }
        Ok(None)
    }

    /// What the slot's phase means for the request.
    fn found(
        &mut self,
        slot: &mut Slot,
        demand: &Demand,
        now: Instant,
    ) -> Result<Option<Lease>, SchedError> {
        match slot.state() {
            ModelState::Ready if !slot.has_place_for(self.queued.ticket(), demand.priority) => {
                Ok(None)
            }
            ModelState::Ready => {
                let instance = slot.lease().ok_or(SchedError::ShuttingDown)?;
                let generation = slot.generation();
                let load_seconds = (self.started_load == Some(generation))
                    .then(|| {
                        let loaded = slot.stats().loaded_at?;
                        Some((loaded - self.arrived).as_secs_f64())
                    })
                    .flatten();
                Ok(Some(Lease {
                    model: slot.cfg.clone(),
                    ready_on_arrival: self.first_look,
                    load_seconds,
                    inner: self.inner.clone(),
                    idx: self.idx,
                    generation,
                    instance,
                    started: now,
                    arrived: self.arrived,
                    first_token: None,
                    failed: false,
                    keep: None,
                }))
            }
            ModelState::Unloaded | ModelState::Failed => {
                if let Some(Err(e)) = self.joined.and_then(|g| slot.outcome_since(g)) {
                    return Err(e.clone());
                }
                if let Some(retry_after) = slot.backing_off(now) {
                    return Err(SchedError::BackingOff {
                        model: slot.cfg.id.clone(),
                        reason: slot.last_error().unwrap_or_default().to_string(),
                        retry_after,
                    });
                }
                let generation = slot.begin_load();
                self.joined = Some(generation);
                self.started_load = Some(generation);
                let (inner, idx, key) = (self.inner.clone(), self.idx, demand.key.clone());
                tokio::spawn(room::load(inner, idx, generation, key));
                Ok(None)
            }
            ModelState::Loading => {
                self.joined.get_or_insert(slot.generation());
                Ok(None)
            }
            ModelState::Unloading => Ok(None),
        }
    }
}

/// A place in a model's wait queue; leaving it (or dropping it) frees the place.
struct Queued<'a> {
    inner: &'a Inner,
    idx: usize,
    /// Its place in line, while it waits.
    place: Option<Ticket>,
    /// Notified when a place may be its.
    pub wake: Arc<Notify>,
}

impl<'a> Queued<'a> {
    pub fn new(inner: &'a Inner, idx: usize) -> Self {
        Self {
            inner,
            idx,
            place: None,
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn waiting(&self) -> bool {
        self.place.is_some()
    }

    pub fn ticket(&self) -> Option<Ticket> {
        self.place
    }

    pub fn join(&mut self, slot: &mut Slot, priority: i32) {
        if self.place.is_none() {
            self.place = Some(slot.join_queue(priority, self.wake.clone()));
        }
    }

    pub fn leave(&mut self, slot: &mut Slot) {
        if let Some(ticket) = self.place.take() {
            slot.leave_queue(ticket);
        }
    }
}

impl Drop for Queued<'_> {
    /// A request that goes away while it waits moves those behind it up.
    fn drop(&mut self) {
        if self.place.is_some() {
            let next = {
                let mut st = self.inner.lock();
                let slot = &mut st.slots[self.idx];
                self.leave(slot);
                slot.first_in_line()
            };
            wake(next);
        }
    }
}

/// A request's hold on a ready model: while it lives the model is never evicted. Dropping it
/// records the request's time.
#[derive(Debug)]
pub struct Lease {
    /// The model was ready when the request arrived.
    pub ready_on_arrival: bool,
    /// The request started the model's load, which took this long (from its arrival).
    pub load_seconds: Option<f64>,
    /// The model's settings as it was loaded with them.
    pub(super) model: Arc<crate::config::ModelSettings>,
    pub(super) inner: Arc<Inner>,
    pub(super) idx: usize,
    pub(super) generation: u64,
    pub(super) instance: Arc<dyn Instance>,
    pub(super) started: Instant,
    /// When the request arrived, and when its first token went out (if it has).
    pub(super) arrived: Instant,
    pub(super) first_token: Option<Instant>,
    pub(super) failed: bool,
    /// What the request said of the model's stay, applied when it is done.
    pub(super) keep: Option<super::KeepAlive>,
}

impl Lease {
    /// Where to send the request.
    pub fn endpoint(&self) -> &Endpoint {
        self.instance.endpoint()
    }

    /// The model's id.
    pub fn model(&self) -> &str {
        &self.model.id
    }

    /// The token count of each text with the model server's own tokenizer.
    pub async fn count_tokens(&self, texts: &[String]) -> Result<Vec<u32>, CountError> {
        self.instance.count_tokens(texts).await
    }

    /// The answer's first token went out now (the first is kept).
    pub fn first_token(&mut self) {
        self.first_token_at(Instant::now());
    }

    /// The answer's first token went out at `at` (the simulator's clock; the first is kept).
    pub fn first_token_at(&mut self, at: Instant) {
        self.first_token.get_or_insert(at);
    }

    /// How long the model stays after this request ([`super::KeepAlive`]), applied when the
    /// lease is dropped.
    pub fn keep_alive(&mut self, keep: super::KeepAlive) {
        self.keep = Some(keep);
    }

    /// Counts the request as an error of the model.
    pub fn fail(&mut self) {
        self.failed = true;
    }

    /// The server could not be reached or broke off: counts the error and, if the server has
    /// died, marks the model failed before returning, so that the next request restarts it
    /// instead of meeting the dead server.
    pub async fn backend_failed(&mut self) {
        self.failed = true;
        let Some(exited) = self.instance.exited() else {
            return;
        };
        if let Ok(reason) = tokio::time::timeout(CRASH_CONFIRM, exited).await {
            room::mark_crashed(&self.inner, self.idx, self.generation, reason).await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let now = Instant::now();
        let took = millis_since(self.started, now);
        let (idle, next, restart) = {
            let mut st = self.inner.lock();
            let slot = &mut st.slots[self.idx];
            if let Some(keep) = self.keep {
                slot.keep_alive(keep);
            }
            let idle = slot.release(now, took, self.failed);
            (idle, slot.first_in_line(), idle && slot.restart_due())
        };
        // Its config changed while it served: it restarts now that it is idle.
        if restart && let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(super::reconfigure::restart(self.inner.clone(), self.idx));
        }
        // `keep_alive: 0`: the model goes once its last request is done.
        if idle
            && self.keep == Some(super::KeepAlive::Unload)
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let scheduler = super::Scheduler {
                inner: self.inner.clone(),
            };
            let id = self.model().to_string();
            rt.spawn(async move {
                if let Err(e) = scheduler.unload(&id).await {
                    tracing::debug!(model = %id, error = %e, "keep_alive 0: not unloaded now");
                }
            });
        }
        // Its place is free: the first in line may take it. (A draining model's queue waits
        // for its next load instead.)
        wake(next);
        if idle {
            self.inner.room_changed();
        }
        let first_token = self.first_token.map(|t| t.min(now));
        super::events::finished(
            &self.inner,
            self.idx,
            self.arrived,
            first_token,
            !self.failed,
        );
    }
}

/// Wakes each of `first`, the requests first in line for free places (a permit is kept for
/// one not yet waiting, so none is missed).
fn wake(first: Vec<Arc<Notify>>) {
    for n in first {
        n.notify_one();
    }
}
