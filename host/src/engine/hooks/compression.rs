//! `compress-context`: fit an over-long conversation into a model's window. Its entry point,
//! the guest call, the host's rules for an answer (recounted against the budget), the native
//! fallback (keep the system messages, the newest user turn and the newest turns that fit) and
//! the smoke sample.

use super::{Decided, Hooks};
use crate::engine::bindings::v2;
use crate::engine::policy::{Guest, V2Guest};
use crate::engine::types::{CompressionRequest, Message};
use crate::engine::{Catalogue, Contract, Hook, Policy, PolicyError, sample, tokens};

/// Roles a chat message may have.
pub const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

impl Hooks {
    pub fn compress_context(
        &self,
        req: &CompressionRequest,
    ) -> Decided<Result<Vec<Message>, String>> {
        self.compress_context_for("", req)
    }

    /// `compress-context` for the request whose sticky key is `key`.
    pub fn compress_context_for(
        &self,
        key: &str,
        req: &CompressionRequest,
    ) -> Decided<Result<Vec<Message>, String>> {
        let catalogue = self.catalogue();
        self.run(
            Hook::CompressContext,
            key,
            |p| p.compress_context(req, &catalogue),
            || fallback(req),
        )
    }
}

impl Policy {
    /// Asks the policy to fit the messages into the budget. `Ok(Err(reason))` is the policy
    /// saying it cannot; a returned list is recounted and must fit.
    pub fn compress_context(
        &self,
        req: &CompressionRequest,
        catalogue: &Catalogue,
    ) -> Result<Result<Vec<Message>, String>, PolicyError> {
        let hook = Hook::CompressContext;
        let answer = match self.contract() {
            Contract::V0_1 => self.call(hook, catalogue, |w| match &w.guest {
                Guest::V1 {
                    compression: Some(g),
                    ..
                } => Some(g.call_compress_context(&mut w.store, req)),
                _ => None,
            })?,
            Contract::V0_2 => {
                let lean = v2::compression_request(req, catalogue)
                    .map_err(|why| self.undescribable(hook, why))?;
                self.call(hook, catalogue, |w| match &w.guest {
                    Guest::V2(V2Guest {
                        compression: Some(g),
                        ..
                    }) => Some(
                        g.call_compress_context(&mut w.store, &lean)
                            .map(|a| a.map(v2::messages)),
                    ),
                    _ => None,
                })?
            }
        };
        match answer {
            Ok(messages) => self.checked(hook, validate(req, messages).map(Ok)),
            Err(reason) => self.checked(hook, Ok(Err(reason))),
        }
    }
}

/// Compressed messages must be non-empty, have known roles, and fit the budget once recounted.
/// A message returned unchanged keeps the host's count; any other is estimated.
pub fn validate(
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

/// The native default: keeps the system messages and the newest user message, then the newest
/// turns that fit.
pub fn fallback(req: &CompressionRequest) -> Result<Vec<Message>, String> {
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

/// The policy's answer on the sample scenario, described.
pub fn smoke(policy: &Policy) -> Result<String, PolicyError> {
    let req = sample::compression_request(6, 120);
    let before: u32 = req.messages.iter().map(|m| m.tokens).sum();
    Ok(
        match policy.compress_context(&req, &sample::catalogue(6))? {
            Ok(kept) => {
                let after: u32 = kept.iter().map(|m| m.tokens).sum();
                format!(
                    "kept {} of {} messages, {after} of {before} tokens (budget {})",
                    kept.len(),
                    req.messages.len(),
                    req.budget_tokens
                )
            }
            Err(why) => format!("cannot fit: {why}"),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_is_recounted_against_the_budget() {
        let req = sample::compression_request(2, 60);
        let system = req.messages[0].clone();
        let last = req.messages.last().cloned().expect("messages");
        assert!(validate(&req, vec![system.clone(), last.clone()]).is_ok());
        assert!(validate(&req, vec![]).is_err());
        let wizard = Message {
            role: "wizard".into(),
            ..last.clone()
        };
        assert!(validate(&req, vec![wizard]).is_err());
        // A policy that under-reports a new message's tokens is recounted by the host.
        let liar = Message {
            role: "user".into(),
            content: "x".repeat(1_000),
            tokens: 1,
        };
        let err = validate(&req, vec![system, liar]).expect_err("over budget");
        assert!(err.contains("budget is 60"), "{err}");
    }

    #[test]
    fn fallback_compression_passes_the_host_rules() {
        let req = sample::compression_request(6, 120);
        let kept = fallback(&req).expect("fits");
        assert!(validate(&req, kept).is_ok());
    }
}
