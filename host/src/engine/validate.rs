//! The host's rules for a decision, whatever the policy says. A decision that breaks one is
//! refused with the reason, and the hook falls back.

use super::tokens;
use super::types::{
    CompressionRequest, EvictionDecision, EvictionRequest, Message, Model, ModelState, Selection,
};

/// Roles a chat message may have.
pub const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

/// An eviction must name distinct, loaded, ready, unpinned, idle models that free enough.
pub fn eviction(req: &EvictionRequest, d: EvictionDecision) -> Result<EvictionDecision, String> {
    let EvictionDecision::Evict(ids) = &d else {
        return Ok(d);
    };
    let mut freed = 0u64;
    for (i, id) in ids.iter().enumerate() {
        if ids[..i].contains(id) {
            return Err(format!("names {id:?} twice"));
        }
        let Some(m) = req.loaded.iter().find(|m| &m.id == id) else {
            return Err(format!(
                "names {id:?}, which is not loaded on {}",
                req.device
            ));
        };
        if m.pinned {
            return Err(format!("names pinned model {id:?}"));
        }
        if m.in_flight > 0 {
            return Err(format!(
                "names {id:?}, which has {} requests in flight",
                m.in_flight
            ));
        }
        if m.state != ModelState::Ready {
            return Err(format!("names {id:?}, which is {:?}, not ready", m.state));
        }
        freed += m.size_bytes;
    }
    if freed < req.needed_bytes {
        return Err(format!(
            "frees {freed} bytes; {} are needed",
            req.needed_bytes
        ));
    }
    Ok(d)
}

/// A selection must name one of the candidates.
pub fn selection(candidates: &[Model], s: Selection) -> Result<Selection, String> {
    match &s {
        Selection::Model(id) if !candidates.iter().any(|m| &m.id == id) => {
            Err(format!("selects {id:?}, which is not a configured model"))
        }
        _ => Ok(s),
    }
}

/// Compressed messages must be non-empty, have known roles, and fit the budget once recounted.
/// A message returned unchanged keeps the host's count; any other is estimated.
pub fn compression(
    req: &CompressionRequest,
    mut messages: Vec<Message>,
) -> Result<Vec<Message>, String> {
    if messages.is_empty() {
        return Err("returns no messages".into());
    }
    let mut total = 0u64;
    for m in &mut messages {
        if !ROLES.contains(&m.role.as_str()) {
            return Err(format!("returns a message with unknown role {:?}", m.role));
        }
        m.tokens = req
            .messages
            .iter()
            .find(|o| o.role == m.role && o.content == m.content)
            .map_or_else(|| tokens::estimate_message(&m.content), |o| o.tokens);
        total += u64::from(m.tokens);
    }
    if total > u64::from(req.budget_tokens) {
        return Err(format!(
            "returns {total} tokens; the budget is {}",
            req.budget_tokens
        ));
    }
    Ok(messages)
}
