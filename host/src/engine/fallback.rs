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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{sample, validate};

    #[test]
    fn fallback_decisions_pass_the_host_rules() {
        for n in [2, 6, 64] {
            let req = sample::eviction_request(n);
            let decision = choose_eviction(&req);
            assert!(
                validate::eviction(&req, decision.clone()).is_ok(),
                "{n}: {decision:?}"
            );
        }
        let req = sample::compression_request(6, 120);
        let kept = compress_context(&req).expect("fits");
        assert!(validate::compression(&req, kept).is_ok());
    }

    #[test]
    fn fallback_eviction_waits_then_rejects() {
        let mut req = sample::eviction_request(2); // m0 pinned, m1 busy
        assert_eq!(choose_eviction(&req), EvictionDecision::Wait);
        req.loaded[1].pinned = true;
        assert!(matches!(choose_eviction(&req), EvictionDecision::Reject(_)));
    }

    #[test]
    fn fallback_selection_resolves_names_and_auto() {
        let mut candidates = sample::loaded(3);
        candidates[2].aliases = vec!["small".into()];
        candidates[0].state = ModelState::Unloaded;
        let ask = |model: &str| {
            select_model(
                &Request {
                    model: model.into(),
                    ..sample::request()
                },
                &candidates,
            )
        };
        assert_eq!(ask("m1"), Selection::Model("m1".into()));
        assert_eq!(ask("small"), Selection::Model("m2".into()));
        assert_eq!(
            ask("auto"),
            Selection::Model("m1".into()),
            "first ready model"
        );
        assert!(matches!(ask("nope"), Selection::Reject(_)));
    }
}
