//! The oracle: a native `choose-eviction` that knows, from the trace, when each model is next
//! requested. It evicts by cost-aware Belady (farthest next use, weighted by the bytes an
//! eviction frees per second of reloading them) and never makes a load wait while idle models
//! could make room. It runs through the same scheduler, places and queues as every policy, so
//! its figures are what the best decisions could do with the same machinery: the yardstick the
//! report divides by. It can exist only in the simulator.

use std::collections::HashMap;

use super::catalogue::Catalogue;
use super::trace::Trace;
use crate::engine::NativeEviction;
use crate::engine::types::{EvictionDecision, EvictionRequest, ModelState};

/// The name `--policy` takes.
pub const NAME: &str = "oracle";

#[derive(Debug)]
pub struct Oracle {
    /// Per model: the times of its requests, in milliseconds from the start, ascending.
    arrivals: HashMap<String, Vec<u64>>,
    /// Per model: what loading it costs, in milliseconds.
    load_ms: HashMap<String, f64>,
}

impl Oracle {
    pub fn new(trace: &Trace, catalogue: &Catalogue) -> Self {
        let mut arrivals: HashMap<String, Vec<u64>> = HashMap::new();
        for a in &trace.arrivals {
            arrivals.entry(a.model.clone()).or_default().push(a.t_ms);
        }
        for times in arrivals.values_mut() {
            times.sort_unstable();
        }
        let load_ms = catalogue
            .models
            .values()
            .map(|m| (m.id.clone(), catalogue.load_time(m).as_secs_f64() * 1000.0))
            .collect();
        Self { arrivals, load_ms }
    }

    /// How long after `now_ms` the model is next requested; `None` if never again.
    fn next_use(&self, model: &str, now_ms: u64) -> Option<u64> {
        let times = self.arrivals.get(model)?;
        let i = times.partition_point(|&t| t <= now_ms);
        times.get(i).map(|&t| t - now_ms)
    }

    /// How much keeping `model` loaded is worth giving up: the farther its next use, and the
    /// more bytes per millisecond of reload, the sooner it goes.
    fn score(&self, model: &str, size: u64, now_ms: u64) -> f64 {
        let gap = self
            .next_use(model, now_ms)
            .map_or(f64::INFINITY, |g| g as f64);
        let reload = self.load_ms.get(model).copied().unwrap_or(1.0).max(1.0);
        gap * size as f64 / reload
    }
}

impl NativeEviction for Oracle {
    fn name(&self) -> &str {
        NAME
    }

    fn choose_eviction(&self, req: &EvictionRequest) -> EvictionDecision {
        let now = req.telemetry.now_ms;
        let mut idle: Vec<(f64, &str, u64)> = req
            .loaded
            .iter()
            .filter(|m| m.state == ModelState::Ready && !m.pinned && m.in_flight == 0)
            .map(|m| {
                (
                    self.score(&m.id, m.size_bytes, now),
                    m.id.as_str(),
                    m.size_bytes,
                )
            })
            .collect();
        idle.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.2.cmp(&a.2)));
        let mut freed = 0u64;
        let mut evict = Vec::new();
        for (_, id, size) in idle {
            if freed >= req.needed_bytes {
                break;
            }
            freed += size;
            evict.push(id.to_string());
        }
        if freed >= req.needed_bytes {
            EvictionDecision::Evict(evict)
        } else {
            // Only a model going idle (or unloaded) can make room: wait for that, as the
            // built-ins do, rather than asking again every second.
            EvictionDecision::Wait(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sample;
    use crate::sim::trace::{Arrival, ModelHint};

    const GIB: u64 = 1 << 30;

    /// Models a, b, c, d of 1 GiB; `a` is next requested at 10 s, `b` at 20 s, `c` at 30 s,
    /// `d` never again.
    fn oracle() -> Oracle {
        let mut t = Trace::default();
        for (id, at) in [("a", 10_000), ("b", 20_000), ("c", 30_000), ("d", 0)] {
            t.models.insert(id.into(), ModelHint::default());
            t.arrivals.push(Arrival {
                t_ms: at,
                model: id.into(),
                prompt_tokens: 0,
                output_tokens: 0,
                service_ms: None,
                ..Default::default()
            });
        }
        let mut c = Catalogue::build(&t, None).expect("catalogue");
        for m in c.models.values_mut() {
            m.size = GIB;
        }
        Oracle::new(&t, &c)
    }

    fn request(busy: &[&str], pinned: &[&str], needed: u64) -> EvictionRequest {
        let mut req = sample::eviction_request(0);
        req.telemetry.now_ms = 5_000;
        req.needed_bytes = needed;
        req.loaded = ["a", "b", "c", "d"]
            .iter()
            .map(|id| {
                let mut m = sample::model(id, 1, &[]);
                m.in_flight = u32::from(busy.contains(id));
                m.pinned = pinned.contains(id);
                m
            })
            .collect();
        req
    }

    #[test]
    fn it_evicts_what_is_needed_farthest_in_the_future_first() {
        let o = oracle();
        let d = o.choose_eviction(&request(&[], &[], 2 * GIB));
        assert_eq!(d, EvictionDecision::Evict(vec!["d".into(), "c".into()]));
    }

    #[test]
    fn it_never_names_a_busy_or_pinned_model_and_waits_when_the_rest_cannot_make_room() {
        let o = oracle();
        let d = o.choose_eviction(&request(&["c"], &["d"], GIB));
        assert_eq!(d, EvictionDecision::Evict(vec!["b".into()]));
        let d = o.choose_eviction(&request(&["a", "b", "c"], &["d"], GIB));
        assert_eq!(d, EvictionDecision::Wait(None));
    }
}
