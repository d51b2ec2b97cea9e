//! A request's hold on its model: a place in the model's wait queue while it waits, then a
//! [`Lease`] while it is served. Both give their place back when dropped, however the request
//! ends.

use std::sync::Arc;

use tokio::time::Instant;

use super::slot::{Slot, millis_since};
use super::{CRASH_CONFIRM, Inner, room};
use crate::backend::{CountError, Endpoint, Instance};

/// A place in a model's wait queue; leaving it (or dropping it) frees the place.
pub(super) struct Queued<'a> {
    inner: &'a Inner,
    idx: usize,
    /// The priority it waits with, while it waits.
    place: Option<i32>,
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

    pub fn join(&mut self, slot: &mut Slot, priority: i32) {
        if self.place.is_none() {
            slot.join_queue(priority);
            self.place = Some(priority);
        }
    }

    pub fn leave(&mut self, slot: &mut Slot) {
        if let Some(priority) = self.place.take() {
            slot.leave_queue(priority);
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
        if idle {
            self.inner.room_changed();
        }
    }
}
