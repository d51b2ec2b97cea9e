//! Native defaults that cannot fail, used when no policy serves a hook or the policy's call
//! failed: LRU eviction, exact-or-alias selection, and keep-the-newest compression.

use super::types::{
    CompressionRequest, EvictionDecision, EvictionRequest, Message, Model, ModelState, Request,
    Selection,
};

fn evictable(m: &Model) -> bool {
    !m.pinned && m.in_flight == 0 && m.state == ModelState::Ready
}

/// Least recently used first, just enough to free the bytes needed; `wait` while a busy model
/// may still go idle, `reject` when nothing could ever free enough.
pub fn choose_eviction(req: &EvictionRequest) -> EvictionDecision {
    let mut ranked: Vec<&Model> = req.loaded.iter().filter(|m| evictable(m)).collect();
    ranked.sort_by(|a, b| {
        let (la, lb) = (
            a.last_used_ms.max(a.loaded_at_ms),
            b.last_used_ms.max(b.loaded_at_ms),
        );
        la.cmp(&lb).then(a.id.cmp(&b.id))
    });
    let mut freed = 0u64;
    let mut ids = Vec::new();
    for m in ranked {
        if freed >= req.needed_bytes {
            break;
        }
        freed += m.size_bytes;
        ids.push(m.id.clone());
    }
    if freed >= req.needed_bytes {
        EvictionDecision::Evict(ids)
    } else if req.loaded.iter().any(|m| !m.pinned && !evictable(m)) {
        EvictionDecision::Wait
    } else {
        EvictionDecision::Reject(format!(
            "{} needs {} bytes freed on {}; unpinned idle models hold only {freed}",
            req.incoming.id, req.needed_bytes, req.device
        ))
    }
}

/// The model named by id or alias; for `auto`, the first ready model, else the first one.
pub fn select_model(req: &Request, candidates: &[Model]) -> Selection {
    let named = candidates
        .iter()
        .find(|m| m.id == req.model)
        .or_else(|| candidates.iter().find(|m| m.aliases.contains(&req.model)));
    let chosen = match named {
        Some(m) => Some(m),
        None if req.model == "auto" => candidates
            .iter()
            .find(|m| m.state == ModelState::Ready)
            .or_else(|| candidates.first()),
        None => return Selection::Reject(format!("no model is named {:?}", req.model)),
    };
    match chosen {
        Some(m) => Selection::Model(m.id.clone()),
        None => Selection::Reject("no model is configured".into()),
    }
}

/// Keeps the system messages and the newest user message, then the newest turns that fit.
pub fn compress_context(req: &CompressionRequest) -> Result<Vec<Message>, String> {
    let newest_user = req.messages.iter().rposition(|m| m.role == "user");
    let must = |i: usize, m: &Message| m.role == "system" || Some(i) == newest_user;
    let mut keep: Vec<bool> = req
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| must(i, m))
        .collect();
    let mut used: u64 = req
        .messages
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(m, _)| u64::from(m.tokens))
        .sum();
    let budget = u64::from(req.budget_tokens);
    if used > budget {
        return Err(format!(
            "the system prompt and the newest user turn need {used} tokens; the budget is {budget}"
        ));
    }
    for i in (0..req.messages.len()).rev() {
        if keep[i] {
            continue;
        }
        let cost = u64::from(req.messages[i].tokens);
        if used + cost > budget {
            break;
        }
        used += cost;
        keep[i] = true;
    }
    Ok(req
        .messages
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(m, _)| m.clone())
        .collect())
}
