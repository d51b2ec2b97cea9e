//! Priority: evict the lowest-priority models first, the least recently used among equals.
//!
//! A model whose priority is higher than the priority of the load that needs the room is never
//! evicted for it: a low-priority request cannot push out a model that serves more important
//! work. When what remains cannot free enough, the answer is `wait` or `reject`.
//!
//! This is the built-in as it shipped on contract 0.1, kept so that `tests/ported.rs` can check
//! that its 0.2 port in `policies/` makes exactly the same decisions.

use modelyard_policy::helpers::{evict_until_fits, keep_newest_that_fit, last_active_ms};
use modelyard_policy::types::{
    CompressionRequest, EvictionDecision, EvictionRequest, Message, Model,
};
use modelyard_policy::{CompressionPolicy, EvictionPolicy};

/// Lowest priority first, then LRU, never above the incoming load's priority.
pub struct Priority;

impl EvictionPolicy for Priority {
    fn choose_eviction(req: EvictionRequest) -> EvictionDecision {
        let mut ranked: Vec<&Model> = req
            .loaded
            .iter()
            .filter(|m| m.priority <= req.priority)
            .collect();
        ranked.sort_by(|a, b| {
            a.priority
                .cmp(&b.priority)
                .then(last_active_ms(a).cmp(&last_active_ms(b)))
                .then(a.id.cmp(&b.id))
        });
        evict_until_fits(&req, ranked)
    }
}

impl CompressionPolicy for Priority {
    fn compress_context(req: CompressionRequest) -> Result<Vec<Message>, String> {
        keep_newest_that_fit(&req)
    }
}

modelyard_policy::export!(Priority: eviction, compression);
