//! A/B experiments between two policies for one hook, on live traffic.
//!
//! Each experiment has an incumbent (whatever serves the hook) and a candidate, a weight (the
//! candidate's share), a sticky key hashed to an arm, and a mode: `live` acts on the arm's
//! decision; `shadow` runs the candidate on the same input, records its decision beside the
//! incumbent's, and acts on the incumbent's only. The hash is fixed per key, and a key is on
//! the candidate arm exactly when its hash falls below the weight, so changing the weight moves
//! only the keys between the old and the new weight.
//!
//! Results per arm: hook calls, fallbacks, failures and hook latency, and the outcomes the
//! proxy reports per request (hit rate, loads caused and their seconds, request latency, time to
//! first token, tokens removed by compression); for shadow, the agreement rate and the latest
//! decisions that differed. Differences of means come with a 95% confidence interval.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::{Decided, DecidedBy, Hook, Policy};

/// Disagreements kept per shadow experiment.
const DIFFS_KEPT: usize = 20;

/// What an experiment acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Live,
    Shadow,
}

/// Which policy a key is assigned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arm {
    Incumbent,
    Candidate,
}

/// What a request's sticky key is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sticky {
    /// The API key's name (or, without keys, the body's `user`), so a client stays on one arm.
    Client,
    /// The body's `user` field.
    User,
    /// Each request on its own.
    Request,
}

/// A running mean and variance (Welford).
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Running {
    pub n: u64,
    pub mean: f64,
    #[serde(skip)]
    m2: f64,
}

impl Running {
    pub fn add(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    pub fn variance(&self) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            self.m2 / (self.n - 1) as f64
        }
    }
}

/// Candidate mean − incumbent mean, with a 95% confidence interval (Welch's normal
/// approximation); `None` until both arms have two samples.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Difference {
    pub difference: f64,
    pub low: f64,
    pub high: f64,
    /// True when the interval excludes zero.
    pub significant: bool,
}

pub fn difference(incumbent: &Running, candidate: &Running) -> Option<Difference> {
    if incumbent.n < 2 || candidate.n < 2 {
        return None;
    }
    let d = candidate.mean - incumbent.mean;
    let se = (candidate.variance() / candidate.n as f64
        + incumbent.variance() / incumbent.n as f64)
        .sqrt();
    let (low, high) = (d - 1.96 * se, d + 1.96 * se);
    Some(Difference {
        difference: d,
        low,
        high,
        significant: low > 0.0 || high < 0.0,
    })
}

/// One request's outcome, as the proxy saw it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    /// The model was ready when the request arrived.
    pub hit: bool,
    /// The request started a load, and how long it took.
    pub load_seconds: Option<f64>,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub tokens_removed: u32,
}

/// Everything counted for one arm.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ArmStats {
    pub hook_calls: u64,
    pub fallbacks: u64,
    pub failures: u64,
    pub hook_latency_us: Running,
    pub requests: u64,
    pub hit_rate: Running,
    pub loads: u64,
    pub load_seconds: f64,
    pub latency_ms: Running,
    pub ttft_ms: Running,
    pub tokens_removed: Running,
}

/// Two decisions that differed in shadow mode.
#[derive(Debug, Clone, Serialize)]
pub struct Disagreement {
    pub key: String,
    pub incumbent: String,
    pub candidate: String,
}

#[derive(Debug, Default)]
struct Ledger {
    arms: [ArmStats; 2],
    compared: u64,
    agreed: u64,
    diffs: VecDeque<Disagreement>,
}

/// A running experiment.
#[derive(Debug)]
pub struct Experiment {
    pub hook: Hook,
    pub candidate: Arc<Policy>,
    pub mode: Mode,
    pub sticky: Sticky,
    weight_bits: AtomicU64,
    ledger: Mutex<Ledger>,
}

/// Where a key falls in [0, 1): fixed for the key and the hook.
pub fn position(hook: Hook, key: &str) -> f64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    hook.name().hash(&mut h);
    key.hash(&mut h);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

impl Experiment {
    pub fn new(
        hook: Hook,
        candidate: Arc<Policy>,
        weight: f64,
        mode: Mode,
        sticky: Sticky,
    ) -> Self {
        Self {
            hook,
            candidate,
            mode,
            sticky,
            weight_bits: AtomicU64::new(weight.clamp(0.0, 1.0).to_bits()),
            ledger: Mutex::new(Ledger::default()),
        }
    }

    /// The candidate's share of keys.
    pub fn weight(&self) -> f64 {
        f64::from_bits(self.weight_bits.load(Ordering::Relaxed))
    }

    pub fn set_weight(&self, weight: f64) {
        self.weight_bits
            .store(weight.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }

    /// The arm `key` is on now. In shadow mode every key acts on the incumbent.
    pub fn arm(&self, key: &str) -> Arm {
        if self.mode == Mode::Live && position(self.hook, key) < self.weight() {
            Arm::Candidate
        } else {
            Arm::Incumbent
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn record_call<T>(&self, arm: Arm, d: &Decided<T>, took: std::time::Duration) {
        let mut l = self.ledger();
        let a = &mut l.arms[arm as usize];
        a.hook_calls += 1;
        a.hook_latency_us.add(took.as_secs_f64() * 1e6);
        if let DecidedBy::Fallback(e) = &d.by {
            a.fallbacks += 1;
            if e.is_some() {
                a.failures += 1;
            }
        }
    }

    pub(super) fn compare(&self, key: &str, incumbent: String, candidate: String) {
        let mut l = self.ledger();
        l.compared += 1;
        if incumbent == candidate {
            l.agreed += 1;
        } else {
            if l.diffs.len() == DIFFS_KEPT {
                l.diffs.pop_front();
            }
            l.diffs.push_back(Disagreement {
                key: key.to_string(),
                incumbent,
                candidate,
            });
        }
    }

    /// Records a request's outcome on the arm its key is on.
    pub fn record_outcome(&self, key: &str, o: Outcome) {
        let arm = self.arm(key);
        let mut l = self.ledger();
        let a = &mut l.arms[arm as usize];
        a.requests += 1;
        a.hit_rate.add(if o.hit { 1.0 } else { 0.0 });
        if let Some(s) = o.load_seconds {
            a.loads += 1;
            a.load_seconds += s;
        }
        a.latency_ms.add(o.latency_ms);
        if let Some(t) = o.ttft_ms {
            a.ttft_ms.add(t);
        }
        a.tokens_removed.add(f64::from(o.tokens_removed));
    }

    /// The experiment's results.
    pub fn report(&self) -> ExperimentReport {
        let l = self.ledger();
        let [inc, cand] = &l.arms;
        ExperimentReport {
            hook: self.hook.name(),
            candidate: self.candidate.name().to_string(),
            mode: self.mode,
            sticky: self.sticky,
            weight: self.weight(),
            incumbent_arm: inc.clone(),
            candidate_arm: cand.clone(),
            differences: Differences {
                hook_latency_us: difference(&inc.hook_latency_us, &cand.hook_latency_us),
                hit_rate: difference(&inc.hit_rate, &cand.hit_rate),
                latency_ms: difference(&inc.latency_ms, &cand.latency_ms),
                ttft_ms: difference(&inc.ttft_ms, &cand.ttft_ms),
                tokens_removed: difference(&inc.tokens_removed, &cand.tokens_removed),
            },
            shadow: (self.mode == Mode::Shadow).then(|| ShadowReport {
                compared: l.compared,
                agreed: l.agreed,
                agreement_rate: if l.compared == 0 {
                    None
                } else {
                    Some(l.agreed as f64 / l.compared as f64)
                },
                differed: l.diffs.iter().cloned().collect(),
            }),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Differences {
    pub hook_latency_us: Option<Difference>,
    pub hit_rate: Option<Difference>,
    pub latency_ms: Option<Difference>,
    pub ttft_ms: Option<Difference>,
    pub tokens_removed: Option<Difference>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShadowReport {
    pub compared: u64,
    pub agreed: u64,
    pub agreement_rate: Option<f64>,
    pub differed: Vec<Disagreement>,
}

/// What `/admin/experiments` shows for one experiment.
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentReport {
    pub hook: &'static str,
    pub candidate: String,
    pub mode: Mode,
    pub sticky: Sticky,
    pub weight: f64,
    pub incumbent_arm: ArmStats,
    pub candidate_arm: ArmStats,
    /// Candidate minus incumbent, with 95% confidence intervals.
    pub differences: Differences,
    pub shadow: Option<ShadowReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_difference_is_significant_and_noise_is_not() {
        let (mut a, mut b, mut c) = (Running::default(), Running::default(), Running::default());
        for i in 0..200 {
            let noise = f64::from(i % 10);
            a.add(100.0 + noise);
            b.add(120.0 + noise);
            c.add(100.0 + f64::from((i + 5) % 10));
        }
        let d = difference(&a, &b).expect("enough samples");
        assert!((d.difference - 20.0).abs() < 1e-9 && d.significant && d.low > 19.0);
        assert!(!difference(&a, &c).expect("enough").significant);
        assert!(difference(&Running::default(), &b).is_none());
    }
}
