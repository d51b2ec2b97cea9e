//! LRU: evict the models that have been idle longest.
//!
//! Also the default `compress-context`: the system prompt, the newest user turn, then the
//! newest turns that still fit.

use modelyard_policy::v0_2::helpers::{evict_until_fits, keep_newest_that_fit, last_active_ms};
use modelyard_policy::v0_2::types::{
    CompressionRequest, EvictionDecision, EvictionRequest, Message, Model,
};
use modelyard_policy::v0_2::{CompressionPolicy, EvictionPolicy, Policy};

/// Least recently used first; ties by index (the catalogue's id order), so the answer is
/// deterministic. Stateless: it waits only for a change, never on time.
#[derive(Default)]
pub struct Lru;

impl Policy for Lru {}

impl EvictionPolicy for Lru {
    fn choose_eviction(&mut self, req: EvictionRequest) -> EvictionDecision {
        let mut ranked: Vec<&Model> = req.loaded.iter().collect();
        ranked.sort_by_key(|m| (last_active_ms(m), m.index));
        evict_until_fits(&req, ranked)
    }
}

impl CompressionPolicy for Lru {
    fn compress_context(&mut self, req: CompressionRequest) -> Result<Vec<Message>, String> {
        keep_newest_that_fit(&req)
    }
}

modelyard_policy::export_v0_2!(Lru: eviction, compression);
