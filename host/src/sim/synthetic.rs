//! Seeded synthetic workloads for the trace suite: shapes the public traces lack, each
//! documented with what it stresses. The same seed gives the same trace on every machine.
//! Requests carry no token counts, so each keeps its model busy for the catalogue's service
//! time (1 s by default). Model sizes come from the generator: 2, 4, 8 or 16 GiB.

use std::collections::BTreeMap;

use super::trace::{Arrival, ModelHint, Trace};

const HOUR_MS: f64 = 3_600_000.0;
/// The catalogue's default `memory_scale`: a hint of `mb` megabytes is a model of `4 × mb` MB.
const MEMORY_SCALE: f64 = 4.0;
const SIZES_GIB: [u64; 4] = [2, 4, 8, 16];

/// SplitMix64: small, seedable, the same everywhere (the tests draw their scenarios with it too).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponential with this mean: the gap between Poisson arrivals.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }

    /// Uniform in 0..n (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }
}

/// Models `m00`, `m01`, ... with sizes drawn from [`SIZES_GIB`].
fn models(n: usize, rng: &mut Rng) -> (Vec<String>, BTreeMap<String, ModelHint>) {
    let ids: Vec<String> = (0..n).map(|i| format!("m{i:02}")).collect();
    let hints = ids
        .iter()
        .map(|id| {
            let gib = SIZES_GIB[rng.below(SIZES_GIB.len())];
            let mb = (gib << 30) as f64 / 1e6 / MEMORY_SCALE;
            (
                id.clone(),
                ModelHint {
                    memory_mb: Some(mb.round() as u64),
                    mean_service_ms: None,
                },
            )
        })
        .collect();
    (ids, hints)
}

fn arrival(t_ms: f64, model: &str) -> Arrival {
    Arrival {
        t_ms: t_ms as u64,
        model: model.to_string(),
        prompt_tokens: 0,
        output_tokens: 0,
        service_ms: None,
        ..Default::default()
    }
}

/// A Zipf(`s`) pick among `n` ranks (0 is the most popular).
fn zipf(rng: &mut Rng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.unit() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

fn zipf_weights(n: usize, s: f64) -> Vec<f64> {
    (1..=n).map(|r| 1.0 / (r as f64).powf(s)).collect()
}

fn finish(mut arrivals: Vec<Arrival>, models: BTreeMap<String, ModelHint>) -> Trace {
    arrivals.sort_by_key(|a| a.t_ms);
    Trace { arrivals, models }
}

/// 40 models, Zipf(1.0) popularity, 6 requests/s (Poisson) for 4 h; every 30 minutes the
/// popularity ranks are dealt again. Stresses: adapting when yesterday's hot models go cold.
pub fn zipf_shifts(seed: u64) -> Trace {
    let mut rng = Rng(seed);
    let (ids, hints) = models(40, &mut rng);
    let weights = zipf_weights(ids.len(), 1.0);
    let mut order: Vec<usize> = (0..ids.len()).collect();
    let (mut t, mut epoch, mut out) = (0.0, -1i64, Vec::new());
    while t < 4.0 * HOUR_MS {
        let now_epoch = (t / (HOUR_MS / 2.0)) as i64;
        if now_epoch != epoch {
            epoch = now_epoch;
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i + 1));
            }
        }
        out.push(arrival(t, &ids[order[zipf(&mut rng, &weights)]]));
        t += rng.exp(1000.0 / 6.0);
    }
    finish(out, hints)
}

/// 30 models, Zipf(0.8), a day compressed into 6 h: the rate swings from 1 to 6 requests/s
/// and back. Stresses: holding the right models through the trough without thrashing at the
/// peak.
pub fn diurnal(seed: u64) -> Trace {
    let mut rng = Rng(seed);
    let (ids, hints) = models(30, &mut rng);
    let weights = zipf_weights(ids.len(), 0.8);
    let (peak, span) = (6.0, 6.0 * HOUR_MS);
    let (mut t, mut out) = (0.0, Vec::new());
    while t < span {
        let phase = (2.0 * std::f64::consts::PI * t / span).cos();
        let rate = 1.0 + (peak - 1.0) * (1.0 - phase) / 2.0;
        if rng.unit() < rate / peak {
            out.push(arrival(t, &ids[zipf(&mut rng, &weights)]));
        }
        t += rng.exp(1000.0 / peak);
    }
    finish(out, hints)
}

/// 20 tenants, each its own model, switching on (about 5 minutes, 2 requests/s) and off
/// (about 20 minutes) at random for 4 h. Stresses: a model that was busy a moment ago and
/// is now idle for long; bursts that arrive together.
pub fn bursty_tenants(seed: u64) -> Trace {
    let mut rng = Rng(seed);
    let (ids, hints) = models(20, &mut rng);
    let mut out = Vec::new();
    for id in &ids {
        let mut t = rng.exp(20.0 * 60_000.0);
        while t < 4.0 * HOUR_MS {
            let until = t + rng.exp(5.0 * 60_000.0);
            while t < until.min(4.0 * HOUR_MS) {
                out.push(arrival(t, id));
                t += rng.exp(500.0);
            }
            t = until + rng.exp(20.0 * 60_000.0);
        }
    }
    finish(out, hints)
}

/// 8 hot models with steady traffic (3 requests/s among them) and, every 10 minutes, a scan:
/// 24 cold models requested once each, 2 s apart, for 4 h. Stresses: not letting one-off
/// requests push out the working set.
pub fn cold_scan(seed: u64) -> Trace {
    let mut rng = Rng(seed);
    let (ids, hints) = models(32, &mut rng);
    let (hot, cold) = ids.split_at(8);
    let mut out = Vec::new();
    let mut t = 0.0;
    while t < 4.0 * HOUR_MS {
        out.push(arrival(t, &hot[rng.below(hot.len())]));
        t += rng.exp(1000.0 / 3.0);
    }
    let mut scan = 5.0 * 60_000.0;
    while scan < 4.0 * HOUR_MS {
        for (i, id) in cold.iter().enumerate() {
            out.push(arrival(scan + i as f64 * 2000.0, id));
        }
        scan += 10.0 * 60_000.0;
    }
    finish(out, hints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_trace_and_another_seed_another() {
        for make in [zipf_shifts, diurnal, bursty_tenants, cold_scan] {
            let (a, b, c) = (make(1), make(1), make(2));
            assert!(a.arrivals.len() > 1000, "{}", a.arrivals.len());
            assert_eq!(a.arrivals.len(), b.arrivals.len());
            assert!(
                a.arrivals
                    .iter()
                    .zip(&b.arrivals)
                    .all(|(x, y)| x.t_ms == y.t_ms && x.model == y.model)
            );
            assert_ne!(a.arrivals.len(), c.arrivals.len());
            assert!(a.arrivals.windows(2).all(|w| w[0].t_ms <= w[1].t_ms));
            assert!(a.arrivals.iter().all(|x| a.models.contains_key(&x.model)));
        }
    }

    #[test]
    fn each_generator_has_the_shape_it_documents() {
        let t = cold_scan(1);
        let once = t
            .models
            .keys()
            .filter(|m| t.arrivals.iter().filter(|a| &a.model == *m).count() <= 24)
            .count();
        assert_eq!(once, 24, "24 cold models, requested once per scan");
        let d = diurnal(1);
        let in_hour = |h: u64| {
            d.arrivals
                .iter()
                .filter(|a| a.t_ms / 3_600_000 == h)
                .count()
        };
        assert!(
            in_hour(3) > 3 * in_hour(0),
            "the peak is busier than the trough"
        );
    }
}
