//! A request's hold on its model: a place in the model's wait queue while it waits, then a
//! [`Lease`] while it is served. Both give their place back when dropped, however the request
//! ends.

use std::sync::Arc;

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
            queued: Queued::new(inner, idx),
            joined: None,
            started_load: None,
            first_look: true,
        }
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
                self.queued.leave(slot);
                // The next in line may have looked before this one left: it looks again.
                if slot.place_free_for_queue() {
                    self.inner.slot_changed(self.idx);
                }
                return done;
            }
        }
        if !self.queued.waiting() {
            let limit = self.inner.settings.scheduler.queue_timeout;
            if let Some(expected) = slot.expected_wait(demand.priority).filter(|&w| w > limit) {
                return Err(SchedError::Overloaded {
                    model: slot.cfg.id.clone(),
                    expected,
                });
            }
            if slot.queued() >= self.inner.settings.scheduler.max_queue {
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
                    ready_on_arrival: self.first_look,
                    load_seconds,
                    inner: self.inner.clone(),
                    idx: self.idx,
                    generation,
                    instance,
                    started: now,
                    failed: false,
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
}

impl<'a> Queued<'a> {
    pub fn new(inner: &'a Inner, idx: usize) -> Self {
        Self {
            inner,
            idx,
            place: None,
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
            self.place = Some(slot.join_queue(priority));
        }
    }

    pub fn leave(&mut self, slot: &mut Slot) {
        if let Some(ticket) = self.place.take() {
            slot.leave_queue(ticket);
        }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.place.is_some() {
            let mut st = self.inner.lock();
            self.leave(&mut st.slots[self.idx]);
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
    pub(super) inner: Arc<Inner>,
    pub(super) idx: usize,
    pub(super) generation: u64,
    pub(super) instance: Arc<dyn Instance>,
    pub(super) started: Instant,
    pub(super) failed: bool,
}

impl Lease {
    /// Where to send the request.
    pub fn endpoint(&self) -> &Endpoint {
        self.instance.endpoint()
    }

    /// The model's id.
    pub fn model(&self) -> &str {
        &self.inner.settings.models[self.idx].id
    }

    /// The token count of each text with the model server's own tokenizer.
    pub async fn count_tokens(&self, texts: &[String]) -> Result<Vec<u32>, CountError> {
        self.instance.count_tokens(texts).await
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
        if let Ok(reason) = tokio::time::timeout(CRASH_CONFIRM, self.instance.exited()).await {
            room::mark_crashed(&self.inner, self.idx, self.generation, reason).await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let now = Instant::now();
        let took = millis_since(self.started, now);
        let idle = self.inner.lock().slots[self.idx].release(now, took, self.failed);
        // Its place is free: the first in line may take it (no one listens, nothing is sent).
        self.inner.slot_changed(self.idx);
        if idle {
            self.inner.room_changed();
        }
    }
}
