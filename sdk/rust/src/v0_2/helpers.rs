//! Small pieces every 0.2 strategy needs, so a policy states only its ranking.
//!
//! These mirror the rules the host enforces (a decision that breaks them is rejected and the
//! host's fallback decides), so a policy built on them never has its decision thrown away.

use super::types::{
    Asked, Catalogue, CompressionRequest, EvictionDecision, EvictionReason, EvictionRequest,
    Message, Model, ModelState,
};

/// True when the host would accept evicting `m`: ready, unpinned and serving no request.
pub fn is_evictable(m: &Model) -> bool {
    !m.pinned && m.in_flight == 0 && m.state == ModelState::Ready
}

/// When `m` last did anything: its last request, or its load if it has served none since.
pub fn last_active_ms(m: &Model) -> u64 {
    m.last_used_ms.max(m.loaded_at_ms)
}

/// Milliseconds since `m` last did anything.
pub fn idle_ms(m: &Model, now_ms: u64) -> u64 {
    now_ms.saturating_sub(last_active_ms(m))
}

/// Milliseconds a load of `m` costs: its mean so far, or, before its first, a guess from its
/// size (2 s plus the bytes at 2 GB/s, the simulator's default).
pub fn load_ms(m: &Model) -> f64 {
    if m.mean_load_ms > 0 {
        f64::from(m.mean_load_ms)
    } else {
        2_000.0 + m.size_bytes as f64 / 2e6
    }
}

/// The model being loaded, when the eviction is for a load.
pub fn incoming(req: &EvictionRequest) -> Option<&Model> {
    match &req.reason {
        EvictionReason::Load(m) => Some(m),
        EvictionReason::IdleTtl | EvictionReason::Pressure => None,
    }
}

/// Walks `ranked` (most evictable first), skipping models the host would refuse, and evicts
/// just enough to free `req.needed_bytes`.
///
/// When the ranked models cannot free enough, answers `wait` (asked again when one goes idle)
/// if one of them is busy or loading, else `reject` with the numbers.
pub fn evict_until_fits<'a>(
    req: &EvictionRequest,
    ranked: impl IntoIterator<Item = &'a Model>,
) -> EvictionDecision {
    let mut chosen: Vec<u32> = Vec::new();
    let mut freed = 0u64;
    let mut may_free_later = false;
    for m in ranked {
        if freed >= req.needed_bytes {
            break;
        }
        if is_evictable(m) {
            if !chosen.contains(&m.index) {
                freed += m.size_bytes;
                chosen.push(m.index);
            }
        } else if !m.pinned && matches!(m.state, ModelState::Ready | ModelState::Loading) {
            may_free_later = true;
        }
    }
    if freed >= req.needed_bytes {
        EvictionDecision::Evict(chosen)
    } else if may_free_later {
        EvictionDecision::Wait(None)
    } else {
        EvictionDecision::Reject(format!(
            "{} bytes must be freed, but the models this policy may evict hold only {freed}",
            req.needed_bytes
        ))
    }
}

/// The id of model `index`, or `?` when the catalogue has no such model.
pub fn id(catalogue: &Catalogue, index: u32) -> &str {
    catalogue
        .models
        .get(index as usize)
        .map_or("?", |m| m.id.as_str())
}

/// The model a request names by id or alias, if any.
pub fn named(asked: &Asked) -> Option<u32> {
    match asked {
        Asked::Model(i) | Asked::Alias(i) => Some(*i),
        Asked::Auto | Asked::Unknown(_) => None,
    }
}

/// Keeps every system message and the newest user message, then the newest other turns that
/// still fit `req.budget_tokens`, in their original order.
pub fn keep_newest_that_fit(req: &CompressionRequest) -> Result<Vec<Message>, String> {
    crate::helpers::keep_newest(&req.messages, req.budget_tokens, |m| {
        (m.role.as_str(), m.tokens)
    })
}
