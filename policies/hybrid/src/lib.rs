//! Hybrid: one weighted evictability score over four normalised signals.
//!
//! For each loaded model, each signal is scaled to 0..=1 against the largest value among the
//! loaded models, and the score is
//!
//! ```text
//! score = 0.3 * idle + 0.2 * (1 - loads) + 0.4 * (1 - active) + 0.1 * errors
//! ```
//!
//! - `idle`: time since last use; idle models go first.
//! - `loads`: times loaded; a model that keeps being reloaded is costly to evict again.
//! - `active`: requests in flight or queued; a model with active tasks is the least evictable.
//! - `errors`: failed loads and requests; an unreliable model goes first.
//!
//! The highest score is evicted first (ties: least recently used, then id), just enough models
//! to free the bytes needed.

use modelyard_policy::helpers::{evict_until_fits, idle_ms, keep_newest_that_fit, last_active_ms};
use modelyard_policy::types::{
    CompressionRequest, EvictionDecision, EvictionRequest, Message, Model,
};
use modelyard_policy::{CompressionPolicy, EvictionPolicy};

/// Weight of time since last use.
pub const W_IDLE: f64 = 0.3;
/// Weight of the load count (inverted: frequently reloaded models are kept).
pub const W_LOADS: f64 = 0.2;
/// Weight of active tasks (inverted: busy models are kept).
pub const W_ACTIVE: f64 = 0.4;
/// Weight of errors.
pub const W_ERRORS: f64 = 0.1;

pub struct Hybrid;

fn ratio(x: u64, max: u64) -> f64 {
    if max == 0 { 0.0 } else { x as f64 / max as f64 }
}

/// Each loaded model's evictability score, in `loaded` order.
pub fn scores(req: &EvictionRequest) -> Vec<f64> {
    let now = req.telemetry.now_ms;
    let active = |m: &Model| u64::from(m.in_flight) + u64::from(m.queued);
    let max_idle = req
        .loaded
        .iter()
        .map(|m| idle_ms(m, now))
        .max()
        .unwrap_or(0);
    let max_loads = req
        .loaded
        .iter()
        .map(|m| u64::from(m.load_count))
        .max()
        .unwrap_or(0);
    let max_active = req.loaded.iter().map(active).max().unwrap_or(0);
    let max_errors = req
        .loaded
        .iter()
        .map(|m| u64::from(m.errors))
        .max()
        .unwrap_or(0);
    req.loaded
        .iter()
        .map(|m| {
            W_IDLE * ratio(idle_ms(m, now), max_idle)
                + W_LOADS * (1.0 - ratio(u64::from(m.load_count), max_loads))
                + W_ACTIVE * (1.0 - ratio(active(m), max_active))
                + W_ERRORS * ratio(u64::from(m.errors), max_errors)
        })
        .collect()
}

impl EvictionPolicy for Hybrid {
    fn choose_eviction(req: EvictionRequest) -> EvictionDecision {
        let mut ranked: Vec<(&Model, f64)> = req.loaded.iter().zip(scores(&req)).collect();
        ranked.sort_by(|(a, sa), (b, sb)| {
            sb.total_cmp(sa)
                .then(last_active_ms(a).cmp(&last_active_ms(b)))
                .then(a.id.cmp(&b.id))
        });
        evict_until_fits(&req, ranked.into_iter().map(|(m, _)| m))
    }
}

impl CompressionPolicy for Hybrid {
    fn compress_context(req: CompressionRequest) -> Result<Vec<Message>, String> {
        keep_newest_that_fit(&req)
    }
}

modelyard_policy::export!(Hybrid: eviction, compression);
