//! Hybrid: one weighted evictability score over five normalised signals, and a guard against
//! thrash.
//!
//! For each loaded model, each signal is scaled to 0..=1 against the largest value among the
//! loaded models, and the score is
//!
//! ```text
//! score = 0.3 * idle + 0.2 * (1 - loads) + 0.4 * (1 - active) + 0.1 * errors + 1.0 * reuse
//! ```
//!
//! - `idle`: time since last use; idle models go first.
//! - `loads`: times loaded; a model that keeps being reloaded is costly to evict again.
//! - `active`: requests in flight or queued; a model with active tasks is the least evictable.
//! - `errors`: failed loads and requests; an unreliable model goes first.
//! - `reuse`: the bytes an eviction frees per second of reloading, weighted by how long until
//!   the model is likely needed again: `next_use × size ÷ load_time`, as in GreedyDual-Size and
//!   cost-aware Belady. The next use is estimated from the model's mean gap between requests
//!   (time since the host started ÷ requests served) less its idle time; a model idle for
//!   longer than its mean gap is taken to be as far from its next use as it is from its last.
//!
//! The highest score is evicted first (ties: least recently used, then id), just enough models
//! to free the bytes needed.
//!
//! **Thrash guard.** An idle model expected back within half its own load time
//! ([`PROTECT_LOAD_FRACTION`]) is not evicted: evicting it would almost surely cost a reload
//! before the room pays off. When only such models could make room, the answer is `wait`: a
//! colder model finishes its request, or the guarded one's estimate runs out: the answer says
//! when that is (at most a second, so that a growing queue is seen), and the host asks again.
//! The guard yields when the incoming model has more requests waiting than four times
//! ([`GUARD_YIELD_FACTOR`]) what the guarded model is expected to get during one reload: then
//! the wait costs more than the reload would.
//!
//! The weights were tuned with `modelyard simulate` on the Azure Functions 2019 sample before
//! models had places: at 80 GiB the guard and the reuse term together cut the swap cost by 27%
//! against LRU, with no request timed out; the guard does most of it. On the whole trace suite
//! (README, "How the default was chosen") the guard's waits cost time to first token when memory
//! is tight, which is why `adaptive`, not this policy, is the default.

use modelyard_policy::v0_2::helpers::{
    evict_until_fits, idle_ms, incoming, keep_newest_that_fit, last_active_ms, load_ms,
};
use modelyard_policy::v0_2::types::{
    CompressionRequest, EvictionDecision, EvictionRequest, Message, Model, ModelState,
};
use modelyard_policy::v0_2::{CompressionPolicy, EvictionPolicy, Policy};

/// Weight of time since last use.
pub const W_IDLE: f64 = 0.3;
/// Weight of the load count (inverted: frequently reloaded models are kept).
pub const W_LOADS: f64 = 0.2;
/// Weight of active tasks (inverted: busy models are kept).
pub const W_ACTIVE: f64 = 0.4;
/// Weight of errors.
pub const W_ERRORS: f64 = 0.1;
/// Weight of the cost-aware reuse distance.
pub const W_REUSE: f64 = 1.0;
/// An idle model expected back within this fraction of its load time is kept.
pub const PROTECT_LOAD_FRACTION: f64 = 0.5;
/// ...unless more requests wait for the incoming model than this many times the guarded
/// model's requests expected during one reload of it.
pub const GUARD_YIELD_FACTOR: f64 = 4.0;
/// The longest a guarded wait lasts before the policy is asked again: the incoming model's
/// queue may grow past the guard's yield meanwhile, which is no change the host waits on.
pub const GUARD_RECHECK_MS: u32 = 1_000;

#[derive(Default)]
pub struct Hybrid;

fn ratio(x: u64, max: u64) -> f64 {
    if max == 0 { 0.0 } else { x as f64 / max as f64 }
}

/// Mean milliseconds between `m`'s requests since the host started.
fn gap_ms(m: &Model, now: u64) -> f64 {
    now as f64 / f64::from(m.use_count.clamp(1, u32::MAX as u64) as u32)
}

/// Milliseconds until `m` is likely needed again (0 when requests wait for it now).
pub fn next_use_ms(m: &Model, now: u64) -> f64 {
    if m.queued > 0 {
        return 0.0;
    }
    let gap = gap_ms(m, now);
    if m.in_flight > 0 {
        return gap;
    }
    let idle = idle_ms(m, now) as f64;
    if idle < gap { gap - idle } else { idle }
}

/// True when the thrash guard keeps `m`.
/// (`waiting`: the requests queued for the model that needs the room.)
pub fn guarded(m: &Model, now: u64, waiting: u32) -> bool {
    let expected_during_reload = load_ms(m) / gap_ms(m, now).max(1.0);
    next_use_ms(m, now) < PROTECT_LOAD_FRACTION * load_ms(m)
        && f64::from(waiting) <= GUARD_YIELD_FACTOR * expected_during_reload
}

/// Milliseconds until the guard on idle `m` lapses, if nothing happens: once it has been idle
/// as long as its mean gap, its next use is as far as its idle time, which must reach the
/// protected fraction of its load time.
pub fn guard_lapses_in_ms(m: &Model, now: u64) -> f64 {
    let lapse_at = gap_ms(m, now).max(PROTECT_LOAD_FRACTION * load_ms(m));
    (lapse_at - idle_ms(m, now) as f64).max(1.0)
}

/// Each loaded model's evictability score, in `loaded` order.
pub fn scores(req: &EvictionRequest) -> Vec<f64> {
    let now = req.telemetry.now_ms;
    let active = |m: &Model| u64::from(m.in_flight) + u64::from(m.queued);
    let reuse = |m: &Model| next_use_ms(m, now) * m.size_bytes as f64 / load_ms(m);
    let max_of = |f: &dyn Fn(&Model) -> u64| req.loaded.iter().map(f).max().unwrap_or(0);
    let max_idle = max_of(&|m| idle_ms(m, now));
    let max_loads = max_of(&|m| u64::from(m.load_count));
    let max_active = max_of(&active);
    let max_errors = max_of(&|m| u64::from(m.errors));
    let max_reuse = req.loaded.iter().map(reuse).fold(0.0, f64::max);
    req.loaded
        .iter()
        .map(|m| {
            W_IDLE * ratio(idle_ms(m, now), max_idle)
                + W_LOADS * (1.0 - ratio(u64::from(m.load_count), max_loads))
                + W_ACTIVE * (1.0 - ratio(active(m), max_active))
                + W_ERRORS * ratio(u64::from(m.errors), max_errors)
                + W_REUSE
                    * if max_reuse > 0.0 {
                        reuse(m) / max_reuse
                    } else {
                        0.0
                    }
        })
        .collect()
}

impl Policy for Hybrid {}

impl EvictionPolicy for Hybrid {
    fn choose_eviction(&mut self, req: EvictionRequest) -> EvictionDecision {
        let now = req.telemetry.now_ms;
        let waiting = incoming(&req).map_or(0, |m| m.queued);
        let mut ranked: Vec<(&Model, f64)> = req.loaded.iter().zip(scores(&req)).collect();
        ranked.sort_by(|(a, sa), (b, sb)| {
            sb.total_cmp(sa)
                .then(last_active_ms(a).cmp(&last_active_ms(b)))
                .then(a.index.cmp(&b.index))
        });
        let idle_guarded = |m: &Model| {
            m.state == ModelState::Ready
                && m.in_flight == 0
                && !m.pinned
                && guarded(m, now, waiting)
        };
        // When a guarded model lapses (at most GUARD_RECHECK_MS away), if any is guarded.
        let guard_wait = || {
            req.loaded
                .iter()
                .filter(|m| idle_guarded(m))
                .map(|m| guard_lapses_in_ms(m, now))
                .reduce(f64::min)
                .map(|ms| ms.min(f64::from(GUARD_RECHECK_MS)).ceil() as u32)
        };
        let decision = evict_until_fits(
            &req,
            ranked.iter().map(|(m, _)| *m).filter(|m| !idle_guarded(m)),
        );
        match decision {
            // The guarded models could make room later: wait for them, unless even they could
            // not (then the unfiltered answer says why).
            EvictionDecision::Reject(_) => {
                match evict_until_fits(&req, ranked.iter().map(|(m, _)| *m)) {
                    EvictionDecision::Reject(reason) => EvictionDecision::Reject(reason),
                    _ => EvictionDecision::Wait(guard_wait()),
                }
            }
            EvictionDecision::Wait(_) => EvictionDecision::Wait(guard_wait()),
            d => d,
        }
    }
}

impl CompressionPolicy for Hybrid {
    fn compress_context(&mut self, req: CompressionRequest) -> Result<Vec<Message>, String> {
        keep_newest_that_fit(&req)
    }
}

modelyard_policy::export_v0_2!(Hybrid: eviction, compression);
