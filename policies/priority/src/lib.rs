//! Priority: evict the lowest-priority models first, the least recently used among equals.
//!
//! A model whose priority is higher than the priority of the load that needs the room is never
//! evicted for it: a low-priority request cannot push out a model that serves more important
//! work. When what remains cannot free enough, the answer is `wait` or `reject`.

use modelyard_policy::v0_2::helpers::{evict_until_fits, keep_newest_that_fit, last_active_ms};
use modelyard_policy::v0_2::types::{
    CompressionRequest, EvictionDecision, EvictionRequest, Message, Model,
};
use modelyard_policy::v0_2::{CompressionPolicy, EvictionPolicy, Policy};

/// Lowest priority first, then LRU, never above the incoming load's priority.
#[derive(Default)]
pub struct Priority;

impl Policy for Priority {}

impl EvictionPolicy for Priority {
    fn choose_eviction(&mut self, req: EvictionRequest) -> EvictionDecision {
        let mut ranked: Vec<&Model> = req
            .loaded
            .iter()
            .filter(|m| m.priority <= req.priority)
            .collect();
        ranked.sort_by_key(|m| (m.priority, last_active_ms(m), m.index));
        evict_until_fits(&req, ranked)
    }
}

impl CompressionPolicy for Priority {
    fn compress_context(&mut self, req: CompressionRequest) -> Result<Vec<Message>, String> {
        keep_newest_that_fit(&req)
    }
}

modelyard_policy::export_v0_2!(Priority: eviction, compression);
