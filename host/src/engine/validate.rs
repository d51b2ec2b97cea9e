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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sample;

    fn evict(ids: &[&str]) -> EvictionDecision {
        EvictionDecision::Evict(ids.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn eviction_rules() {
        // sample: m0 pinned, m1 busy, all 1 GiB, 2 GiB needed.
        let req = sample::eviction_request(6);
        assert!(eviction(&req, evict(&["m2", "m3"])).is_ok());
        assert!(eviction(&req, EvictionDecision::Wait).is_ok());
        for (bad, why) in [
            (evict(&["m2", "m2"]), "twice"),
            (evict(&["m2", "ghost"]), "not loaded"),
            (evict(&["m0", "m2"]), "pinned"),
            (evict(&["m1", "m2"]), "in flight"),
            (evict(&["m2"]), "are needed"),
        ] {
            let err = eviction(&req, bad).expect_err(why);
            assert!(err.contains(why), "{err}");
        }
        let mut loading = sample::eviction_request(6);
        loading.loaded[2].state = ModelState::Loading;
        assert!(
            eviction(&loading, evict(&["m2", "m3"]))
                .expect_err("loading")
                .contains("not ready")
        );
    }

    #[test]
    fn selection_must_name_a_candidate() {
        let candidates = sample::loaded(3);
        assert!(selection(&candidates, Selection::Model("m2".into())).is_ok());
        assert!(selection(&candidates, Selection::Reject("no".into())).is_ok());
        assert!(selection(&candidates, Selection::Model("m9".into())).is_err());
    }

    #[test]
    fn compression_is_recounted_against_the_budget() {
        let req = sample::compression_request(2, 60);
        let system = req.messages[0].clone();
        let last = req.messages.last().cloned().expect("messages");
        assert!(compression(&req, vec![system.clone(), last.clone()]).is_ok());
        assert!(compression(&req, vec![]).is_err());
        let wizard = Message {
            role: "wizard".into(),
            ..last.clone()
        };
        assert!(compression(&req, vec![wizard]).is_err());
        // A policy that under-reports a new message's tokens is recounted by the host.
        let liar = Message {
            role: "user".into(),
            content: "x".repeat(1_000),
            tokens: 1,
        };
        let err = compression(&req, vec![system, liar]).expect_err("over budget");
        assert!(err.contains("budget is 60"), "{err}");
    }
}
