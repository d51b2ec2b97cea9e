//! The scheduler's housekeeping, once a [`HOUSEKEEPING_INTERVAL`]: fresh telemetry and
//! footprints, then idle models past their TTL and memory pressure, both offered to the
//! `choose-eviction` policy as [`room`] offers a load's shortfall.

use std::sync::{Arc, Weak};

use tokio::time::Instant;

use super::room::{self, Authority};
use super::slot::Slot;
use super::view::{self, Incoming};
use super::{HOUSEKEEPING_INTERVAL, Inner};
use crate::config::FootprintSource;
use crate::engine::types::{EvictionCause, EvictionDecision, EvictionReason};

/// The sticky key of evictions no request asked for (TTL, pressure).
const HOUSEKEEPING_KEY: &str = "modelyard:housekeeping";

/// Every [`HOUSEKEEPING_INTERVAL`]: refresh telemetry and footprints, then unload idle models
/// past their TTL and relieve memory pressure, both through the policy.
pub(super) async fn run(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.lock().shutting_down {
            return;
        }
        refresh(&inner).await;
        restart_changed(&inner).await;
        expire_ttl(&inner).await;
        relieve_pressure(&inner).await;
    }
}

/// What a model's server holds: its process tree, plus its container's memory when its
/// `footprint` says so (the tree then holds only the runtime's client). A container that
/// cannot be read counts the tree alone, and says why in the log. The runtime's stats take a
/// process's run, so they are read without holding the telemetry.
pub(super) fn footprint(
    telemetry: &std::sync::Mutex<crate::telemetry::Telemetry>,
    pid: u32,
    source: &FootprintSource,
) -> crate::telemetry::Footprint {
    let mut fp = (telemetry.lock().unwrap_or_else(|e| e.into_inner())).footprint(pid);
    if let FootprintSource::Container { runtime, name } = source {
        match crate::backend::container::memory(runtime, name) {
            Ok(bytes) => fp.ram_bytes += bytes,
            Err(e) => tracing::warn!(container = %name, "reading its memory: {e}"),
        }
    }
    fp
}

async fn refresh(inner: &Arc<Inner>) {
    let pids: Vec<(usize, u32, FootprintSource)> = inner
        .lock()
        .slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((i, s.instance()?.pid()?, s.cfg.footprint_source())))
        .collect();
    let telemetry = inner.telemetry.clone();
    let read = move || {
        let snapshot = telemetry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot();
        let footprints: Vec<_> = pids
            .into_iter()
            .map(|(i, pid, source)| (i, pid, footprint(&telemetry, pid, &source)))
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
    let save = {
        let mut st = inner.lock();
        let mut save = None;
        for (i, pid, fp) in footprints {
            st.slots[i].measured(pid, fp);
            save = st.remember(i).or(save);
        }
        save
    };
    inner.save_memory(save);
}

/// Models a reload changed or removed that have gone idle since (a model ready when its
/// load ended, say): their servers stop now.
async fn restart_changed(inner: &Arc<Inner>) {
    let due: Vec<usize> = (inner.lock().slots.iter().enumerate())
        .filter(|(_, s)| s.restart_due())
        .map(|(i, _)| i)
        .collect();
    for i in due {
        super::reconfigure::restart(inner.clone(), i).await;
    }
}

/// Idle models past their TTL, offered to the policy (which may keep them with `wait`).
async fn expire_ttl(inner: &Arc<Inner>) {
    let now = Instant::now();
    let expired = |s: &Slot| {
        s.evictable()
            && s.ttl()
                .is_some_and(|ttl| s.last_active().is_some_and(|t| now - t >= ttl))
    };
    let devices = inner.capacities();
    for (device, _) in devices {
        let Some(room) = inner.room(&device) else {
            continue;
        };
        let Ok(_room) = room.try_lock() else { continue };
        let req = {
            let st = inner.lock();
            let needed: u64 = st
                .slots
                .iter()
                .filter(|s| expired(s) && s.cfg.device == device)
                .map(Slot::size)
                .sum::<u64>()
                .max(1);
            if !st
                .slots
                .iter()
                .any(|s| expired(s) && s.cfg.device == device)
            {
                continue;
            }
            let incoming = Incoming::Housekeeping {
                reason: EvictionReason::IdleTtl,
                device: &device,
            };
            view::eviction_request(inner, &st, incoming, needed, expired)
        };
        let decided = room::decide(inner, req, HOUSEKEEPING_KEY).await;
        if let EvictionDecision::Evict(ids) = &decided.value {
            room::evict(
                inner,
                ids,
                Authority::Policy,
                &room::Evictor::decided(&decided.by, EvictionCause::IdleTtl),
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
    let devices = inner.capacities();
    let pressure = inner.settings().memory.pressure;
    for (device, cap) in devices {
        let Some(room) = inner.room(&device) else {
            continue;
        };
        let Ok(_room) = room.try_lock() else { continue };
        let req = {
            let st = inner.lock();
            let over_budget = st.held_on(&device).saturating_sub(cap);
            let over_pressure = latest.device(&device).map_or(0, |d| {
                let limit = (d.total_bytes as f64 * pressure) as u64;
                d.used_bytes.saturating_sub(limit)
            });
            // Ask for no more than idle models could give back, so that a policy can answer.
            let needed = over_budget
                .max(over_pressure)
                .min(room::idle_bytes(&st, &device));
            if needed == 0 {
                continue;
            }
            let incoming = Incoming::Housekeeping {
                reason: EvictionReason::Pressure,
                device: &device,
            };
            view::eviction_request(inner, &st, incoming, needed, |_| true)
        };
        let needed = req.needed_bytes;
        let decided = room::decide(inner, req, HOUSEKEEPING_KEY).await;
        if let EvictionDecision::Evict(ids) = &decided.value {
            let why = format!("memory pressure on {device} ({needed} bytes over)");
            room::evict(
                inner,
                ids,
                Authority::Policy,
                &room::Evictor::decided(&decided.by, EvictionCause::Pressure),
                &why,
            )
            .await;
        }
    }
}
