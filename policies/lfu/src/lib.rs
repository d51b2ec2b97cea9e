//! LFU: evict the models that have served the fewest requests, the least recent first on ties.

use modelyard_policy::v0_2::helpers::{evict_until_fits, keep_newest_that_fit, last_active_ms};
use modelyard_policy::v0_2::types::{
    CompressionRequest, EvictionDecision, EvictionRequest, Message, Model,
};
use modelyard_policy::v0_2::{CompressionPolicy, EvictionPolicy, Policy};

/// Fewest uses first, then least recently used, then index (the catalogue's id order).
#[derive(Default)]
pub struct Lfu;

impl Policy for Lfu {}

impl EvictionPolicy for Lfu {
    fn choose_eviction(&mut self, req: EvictionRequest) -> EvictionDecision {
        let mut ranked: Vec<&Model> = req.loaded.iter().collect();
        ranked.sort_by_key(|m| (m.use_count, last_active_ms(m), m.index));
        evict_until_fits(&req, ranked)
    }
}

impl CompressionPolicy for Lfu {
    fn compress_context(&mut self, req: CompressionRequest) -> Result<Vec<Message>, String> {
        keep_newest_that_fit(&req)
    }
}

modelyard_policy::export_v0_2!(Lfu: eviction, compression);
