//! Adaptive: LeCaR (Vietri et al., "Driving Cache Replacement with ML-based LeCaR", HotStorage
//! 2018) for models. Two experts rank the loaded models, LRU (least recently active first) and
//! LFU (fewest uses first, then least recently active); each eviction follows one of them,
//! drawn by their weights. Every model an expert evicts enters that expert's ghost history;
//! when a model in the history loads again, the expert that evicted it pays for it (its weight
//! shrinks by `exp(-LEARNING_RATE * DISCOUNT^age)`, where `age` counts the evictions since), so
//! the policy drifts towards whichever expert the workload punishes less.
//!
//! This needs contract 0.2: the weights and histories live across calls, and loads are learnt
//! from the host's events. The draw uses a seeded generator kept in the state, so a replay of
//! the same trace makes the same decisions.

use modelyard_policy::v0_2::helpers::{evict_until_fits, keep_newest_that_fit, last_active_ms};
use modelyard_policy::v0_2::types::{
    Catalogue, CompressionRequest, Event, EventKind, EvictionDecision, EvictionRequest, Interests,
    Message, Model, SelectionInterest,
};
use modelyard_policy::v0_2::{CompressionPolicy, EvictionPolicy, Policy};

/// LeCaR's learning rate.
pub const LEARNING_RATE: f64 = 0.45;
/// The paper's discount reaches 0.005 after as many evictions as the cache holds; a model
/// host holds few, so the horizon is counted in configured models, at least this many.
const MIN_HORIZON: usize = 8;
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expert {
    Lru,
    Lfu,
}

#[derive(Debug, Clone)]
pub struct Adaptive {
    /// LRU's weight; LFU's is `1 - w_lru`.
    w_lru: f64,
    discount: f64,
    /// Per model: the expert that evicted it and the eviction count then, until it loads.
    ghost: Vec<Option<(Expert, u64)>>,
    evictions: u64,
    rng: u64,
}

impl Default for Adaptive {
    fn default() -> Self {
        Self {
            w_lru: 0.5,
            discount: discount(MIN_HORIZON),
            ghost: Vec::new(),
            evictions: 0,
            rng: SEED,
        }
    }
}

fn discount(models: usize) -> f64 {
    0.005f64.powf(1.0 / models.max(MIN_HORIZON) as f64)
}

impl Adaptive {
    /// LRU's weight now.
    pub fn lru_weight(&self) -> f64 {
        self.w_lru
    }

    /// A uniform draw in [0, 1) (splitmix64).
    fn draw(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as f64 / (u64::MAX as f64 + 1.0)
    }

    /// `model` loads again: the expert that evicted it, if it is in a history, pays.
    pub fn loaded(&mut self, model: u32) {
        let Some((expert, at)) = self.ghost.get_mut(model as usize).and_then(Option::take) else {
            return;
        };
        let age = self.evictions.saturating_sub(at);
        let regret = (-LEARNING_RATE * self.discount.powf(age as f64)).exp();
        let (mut lru, mut lfu) = (self.w_lru, 1.0 - self.w_lru);
        match expert {
            Expert::Lru => lru *= regret,
            Expert::Lfu => lfu *= regret,
        }
        // Neither expert's weight reaches 0, so either can always win back the workload.
        self.w_lru = (lru / (lru + lfu)).clamp(0.01, 0.99);
    }

    pub fn choose(&mut self, req: &EvictionRequest) -> (Expert, EvictionDecision) {
        let expert = if self.draw() < self.w_lru {
            Expert::Lru
        } else {
            Expert::Lfu
        };
        let mut ranked: Vec<&Model> = req.loaded.iter().collect();
        match expert {
            Expert::Lru => ranked.sort_by_key(|m| (last_active_ms(m), m.index)),
            Expert::Lfu => ranked.sort_by_key(|m| (m.use_count, last_active_ms(m), m.index)),
        }
        let decision = evict_until_fits(req, ranked);
        if let EvictionDecision::Evict(ids) = &decision {
            for &i in ids {
                self.evictions += 1;
                if let Some(g) = self.ghost.get_mut(i as usize) {
                    *g = Some((expert, self.evictions));
                }
            }
        }
        (expert, decision)
    }
}

impl Policy for Adaptive {
    fn configure(&mut self, catalogue: Catalogue) -> Interests {
        // A new configuration keeps the weights (what the workload taught) and starts the
        // histories again: indices may name other models now.
        self.ghost = vec![None; catalogue.models.len()];
        self.discount = discount(catalogue.models.len());
        Interests {
            selection: SelectionInterest::empty(),
            text: false,
        }
    }

    fn observe(&mut self, events: Vec<Event>) {
        for e in events {
            if let EventKind::LoadStarted(m) = e.kind {
                self.loaded(m);
            }
        }
    }
}

impl EvictionPolicy for Adaptive {
    fn choose_eviction(&mut self, req: EvictionRequest) -> EvictionDecision {
        self.choose(&req).1
    }
}

impl CompressionPolicy for Adaptive {
    fn compress_context(&mut self, req: CompressionRequest) -> Result<Vec<Message>, String> {
        keep_newest_that_fit(&req)
    }
}

modelyard_policy::export_v0_2!(Adaptive: events, eviction, compression);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_that_comes_back_costs_the_expert_that_evicted_it() {
        let mut a = Adaptive {
            ghost: vec![None; 4],
            ..Adaptive::default()
        };
        a.evictions = 1;
        a.ghost[2] = Some((Expert::Lru, 1));
        a.loaded(2);
        assert!(a.lru_weight() < 0.5, "{}", a.lru_weight());
        let after_lru = a.lru_weight();
        a.ghost[3] = Some((Expert::Lfu, 1));
        a.loaded(3);
        assert!(a.lru_weight() > after_lru, "LFU's regret moves it back");
        // A model that was never evicted, or an index past the catalogue, teaches nothing.
        let w = a.lru_weight();
        a.loaded(1);
        a.loaded(99);
        assert_eq!(a.lru_weight(), w);
    }

    #[test]
    fn an_old_regret_costs_less_than_a_fresh_one() {
        let fresh = {
            let mut a = Adaptive {
                ghost: vec![Some((Expert::Lru, 10))],
                evictions: 10,
                ..Adaptive::default()
            };
            a.loaded(0);
            a.lru_weight()
        };
        let after = |evictions| {
            let mut a = Adaptive {
                ghost: vec![Some((Expert::Lru, 10))],
                evictions,
                ..Adaptive::default()
            };
            a.loaded(0);
            a.lru_weight()
        };
        let old = after(14);
        assert!(fresh < old && old < 0.5, "fresh {fresh}, old {old}");
        // Far past the horizon (as many evictions as models, at least 8): no regret at all.
        assert_eq!(after(1_000), 0.5);
    }
}
