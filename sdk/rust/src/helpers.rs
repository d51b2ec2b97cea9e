//! Small pieces every strategy needs, so a policy states only its ranking.
//!
//! These mirror the rules the host enforces (a decision that breaks them is rejected and the
//! host's fallback decides), so a policy built on them never has its decision thrown away.

use crate::types::{
    CompressionRequest, EvictionDecision, EvictionRequest, Message, Model, ModelState, Request,
};

/// True when the host would accept evicting `m`: ready, unpinned and serving no request.
pub fn is_evictable(m: &Model) -> bool {
    !m.pinned && m.in_flight == 0 && m.state == ModelState::Ready
}

/// Total size of the models in `loaded` named by `ids`.
pub fn bytes_freed(ids: &[String], loaded: &[Model]) -> u64 {
    loaded
        .iter()
        .filter(|m| ids.contains(&m.id))
        .map(|m| m.size_bytes)
        .sum()
}

/// When `m` last did anything: its last request, or its load if it has served none since.
pub fn last_active_ms(m: &Model) -> u64 {
    m.last_used_ms.max(m.loaded_at_ms)
}

/// Milliseconds since `m` last did anything.
pub fn idle_ms(m: &Model, now_ms: u64) -> u64 {
    now_ms.saturating_sub(last_active_ms(m))
}

/// Walks `ranked` (most evictable first), skipping models the host would refuse, and evicts
/// just enough to free `req.needed_bytes`.
///
/// When the ranked models cannot free enough, answers `wait` if one of them is busy or loading
/// (it may become evictable), else `reject` with the numbers.
pub fn evict_until_fits<'a>(
    req: &EvictionRequest,
    ranked: impl IntoIterator<Item = &'a Model>,
) -> EvictionDecision {
    let mut chosen = Vec::new();
    let mut freed = 0u64;
    let mut may_free_later = false;
    for m in ranked {
        if freed >= req.needed_bytes {
            break;
        }
        if is_evictable(m) {
            if !chosen.contains(&m.id) {
                freed += m.size_bytes;
                chosen.push(m.id.clone());
            }
        } else if !m.pinned && matches!(m.state, ModelState::Ready | ModelState::Loading) {
            may_free_later = true;
        }
    }
    if freed >= req.needed_bytes {
        EvictionDecision::Evict(chosen)
    } else if may_free_later {
        EvictionDecision::Wait
    } else {
        EvictionDecision::Reject(format!(
            "{} needs {} bytes freed on {}, but the models this policy may evict hold only {}",
            req.incoming.id, req.needed_bytes, req.device, freed
        ))
    }
}

/// The model a request names by id or alias, if any.
pub fn named_model<'a>(req: &Request, candidates: &'a [Model]) -> Option<&'a Model> {
    candidates
        .iter()
        .find(|m| m.id == req.model)
        .or_else(|| candidates.iter().find(|m| m.aliases.contains(&req.model)))
}

/// Keeps every system message and the newest user message, then the newest other turns that
/// still fit `req.budget_tokens`, in their original order.
pub fn keep_newest_that_fit(req: &CompressionRequest) -> Result<Vec<Message>, String> {
    keep_newest(&req.messages, req.budget_tokens, |m| {
        (m.role.as_str(), m.tokens)
    })
}

/// [`keep_newest_that_fit`] for either contract's messages; `part` gives a message's role and
/// token count.
pub(crate) fn keep_newest<M: Clone>(
    messages: &[M],
    budget: u32,
    part: impl Fn(&M) -> (&str, u32),
) -> Result<Vec<M>, String> {
    let newest_user = messages.iter().rposition(|m| part(m).0 == "user");
    let mut keep = vec![false; messages.len()];
    let mut used: u64 = 0;
    for (i, m) in messages.iter().enumerate() {
        let (role, tokens) = part(m);
        if role == "system" || Some(i) == newest_user {
            keep[i] = true;
            used += u64::from(tokens);
        }
    }
    let budget = u64::from(budget);
    if used > budget {
        return Err(format!(
            "the system prompt and the newest user turn need {used} tokens; the budget is {budget}"
        ));
    }
    for i in (0..messages.len()).rev() {
        if keep[i] {
            continue;
        }
        let cost = u64::from(part(&messages[i]).1);
        if used + cost > budget {
            break;
        }
        used += cost;
        keep[i] = true;
    }
    Ok(messages
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(m, _)| m.clone())
        .collect())
}
