//! LRU: evict the models that have been idle longest.
//!
//! This is the built-in as it shipped on contract 0.1, kept so that `tests/ported.rs` can check
//! that its 0.2 port in `policies/` makes exactly the same decisions.

use modelyard_policy::helpers::{evict_until_fits, keep_newest_that_fit, last_active_ms};
use modelyard_policy::types::{
    CompressionRequest, EvictionDecision, EvictionRequest, Message, Model,
};
use modelyard_policy::{CompressionPolicy, EvictionPolicy};

/// Least recently used first; ties by id so the answer is deterministic.
pub struct Lru;

impl EvictionPolicy for Lru {
    fn choose_eviction(req: EvictionRequest) -> EvictionDecision {
        let mut ranked: Vec<&Model> = req.loaded.iter().collect();
        ranked.sort_by(|a, b| {
            last_active_ms(a)
                .cmp(&last_active_ms(b))
                .then(a.id.cmp(&b.id))
        });
        evict_until_fits(&req, ranked)
    }
}

impl CompressionPolicy for Lru {
    fn compress_context(req: CompressionRequest) -> Result<Vec<Message>, String> {
        keep_newest_that_fit(&req)
    }
}

modelyard_policy::export!(Lru: eviction, compression);
