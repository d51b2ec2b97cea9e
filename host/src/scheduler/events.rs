//! Telling policies what happened: requests arriving and finishing, loads, failures and
//! evictions, as 0.2's `events` (for the policies that observe them; nothing is built for
//! others). An event is queued at once and never waits for a policy; a delivery follows within
//! [`EVENT_FLUSH`] on the blocking pool, off the request path. In the simulator (inline calls)
//! events are delivered before each decision instead, so a replay is the same every time.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::slot::millis_since;
use super::{Demand, Inner};
use crate::engine::EVENT_BATCH;
use crate::engine::types::{Event, EventKind};

/// How long events gather before they are delivered, so that they go in batches.
pub(super) const EVENT_FLUSH: Duration = Duration::from_millis(5);

/// Queues the event `kind` builds for every observing policy (call it outside the state lock:
/// in the simulator a full batch is delivered at once).
pub(super) fn emit(inner: &Arc<Inner>, kind: impl FnOnce() -> EventKind) {
    if !inner.hooks.observed() {
        return;
    }
    let event = Event {
        at_ms: millis_since(inner.epoch, Instant::now()),
        kind: kind(),
    };
    inner.hooks.observe(&event);
    if inner.inline {
        if inner.hooks.backlog() >= EVENT_BATCH {
            inner.hooks.deliver();
        }
    } else if let Ok(rt) = tokio::runtime::Handle::try_current()
        && !inner.flushing.swap(true, Ordering::AcqRel)
    {
        // (No runtime: a lease dropped while the host shuts down; nobody is left to tell.)
        rt.spawn(flush(Arc::downgrade(inner)));
    }
}

async fn flush(inner: Weak<Inner>) {
    tokio::time::sleep(EVENT_FLUSH).await;
    let Some(inner) = inner.upgrade() else {
        return;
    };
    // Cleared first: an event queued from here on schedules the next delivery.
    inner.flushing.store(false, Ordering::Release);
    let hooks = inner.hooks.clone();
    drop(inner);
    let _ = tokio::task::spawn_blocking(move || hooks.deliver()).await;
}

/// In the simulator, before a decision: every event so far.
pub(super) fn deliver_before_deciding(inner: &Inner) {
    if inner.inline {
        inner.hooks.deliver();
    }
}

fn id(inner: &Inner, idx: usize) -> String {
    inner.id(idx)
}

pub(super) fn arrived(inner: &Arc<Inner>, idx: usize, demand: &Demand) {
    emit(inner, || EventKind::Arrived {
        model: id(inner, idx),
        task: demand.task.clone(),
        priority: demand.priority,
        prompt_tokens: demand.prompt_tokens,
    });
}

fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// A request that arrived at `arrived` ended now; its first token went out at `first_token`
/// (or, for an answer not streamed, with its end).
pub(super) fn finished(
    inner: &Arc<Inner>,
    idx: usize,
    arrived: Instant,
    first_token: Option<Instant>,
    ok: bool,
) {
    emit(inner, || {
        let now = Instant::now();
        let latency = now.saturating_duration_since(arrived);
        EventKind::Finished {
            model: id(inner, idx),
            latency_ms: ms(latency),
            ttft_ms: first_token.map_or(ms(latency), |t| ms(t.saturating_duration_since(arrived))),
            ok,
        }
    });
}

pub(super) fn load_started(inner: &Arc<Inner>, idx: usize) {
    emit(inner, || EventKind::LoadStarted {
        model: id(inner, idx),
    });
}

pub(super) fn loaded(inner: &Arc<Inner>, idx: usize, took: Duration, bytes: u64) {
    emit(inner, || EventKind::Loaded {
        model: id(inner, idx),
        took_ms: ms(took),
        bytes,
    });
}

pub(super) fn load_failed(inner: &Arc<Inner>, idx: usize) {
    emit(inner, || EventKind::LoadFailed {
        model: id(inner, idx),
    });
}
