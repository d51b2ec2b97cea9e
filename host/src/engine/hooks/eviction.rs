//! `choose-eviction`: which loaded models to unload so that a new one fits. Its entry point,
//! the guest call, the host's rules for an answer, the native fallback (LRU) and the smoke
//! sample.

use std::sync::Arc;

use super::{Decided, DecidedBy, Hooks};
use crate::engine::bindings::{v1, v2};
use crate::engine::policy::{Guest, V2Guest};
use crate::engine::types::{
    EvictionDecision, EvictionReason, EvictionRequest, Model, ModelState, WAIT_RECHECK,
};
use crate::engine::{Catalogue, Contract, Hook, Policy, PolicyError, sample};

/// Models in the smoke sample.
const SMOKE_MODELS: usize = 6;

/// A `choose-eviction` written in Rust, held to the same rules as a policy's answers.
pub trait NativeEviction: Send + Sync + std::fmt::Debug {
    /// Its name, as decisions report it.
    fn name(&self) -> &str;
    fn choose_eviction(&self, req: &EvictionRequest) -> EvictionDecision;
}

impl Hooks {
    pub fn choose_eviction(&self, req: &EvictionRequest) -> Decided<EvictionDecision> {
        self.choose_eviction_for("", req)
    }

    /// Makes `native` answer `choose-eviction` in place of any policy or experiment.
    pub fn set_native_eviction(&self, native: Option<Arc<dyn NativeEviction>>) {
        *self
            .native_eviction
            .write()
            .unwrap_or_else(|e| e.into_inner()) = native;
    }

    /// `choose-eviction` for the request whose sticky key is `key` (it picks the arm of a
    /// running experiment).
    pub fn choose_eviction_for(
        &self,
        key: &str,
        req: &EvictionRequest,
    ) -> Decided<EvictionDecision> {
        let native = self
            .native_eviction
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(native) = native {
            let name = native.name().to_string();
            return match validate(req, native.choose_eviction(req)) {
                Ok(value) => Decided {
                    value,
                    by: DecidedBy::Policy(name),
                },
                Err(reason) => Decided {
                    value: fallback(req),
                    by: DecidedBy::Fallback(Some(PolicyError::InvalidDecision {
                        policy: name,
                        hook: Hook::ChooseEviction,
                        reason,
                    })),
                },
            };
        }
        let catalogue = self.catalogue();
        self.run(
            Hook::ChooseEviction,
            key,
            |p| p.choose_eviction(req, &catalogue),
            || fallback(req),
        )
    }
}

impl Policy {
    /// Asks the policy which models to evict; the answer is checked against the host's rules.
    /// A 0.2 policy sees `req` through `catalogue`.
    pub fn choose_eviction(
        &self,
        req: &EvictionRequest,
        catalogue: &Catalogue,
    ) -> Result<EvictionDecision, PolicyError> {
        let hook = Hook::ChooseEviction;
        let decision = match self.contract() {
            Contract::V0_1 => self.call(hook, catalogue, |w| match &w.guest {
                Guest::V1 {
                    eviction: Some(g), ..
                } => Some(
                    g.call_choose_eviction(&mut w.store, &req.record)
                        .map(|d| Ok(v1::eviction_decision(d))),
                ),
                _ => None,
            })?,
            Contract::V0_2 => {
                let req = v2::eviction_request(req, catalogue)
                    .map_err(|why| self.undescribable(hook, why))?;
                self.call(hook, catalogue, |w| match &w.guest {
                    Guest::V2(V2Guest {
                        eviction: Some(g), ..
                    }) => Some(
                        g.call(&mut w.store, (req,))
                            .map(|(d,)| v2::eviction_decision(d, catalogue)),
                    ),
                    _ => None,
                })?
            }
        };
        self.checked(hook, decision.and_then(|d| validate(req, d)))
    }
}

/// An eviction must name distinct, loaded, ready, unpinned, idle models that free enough; a
/// drain, for a load only, distinct, loaded, ready, unpinned ones that free enough with the idle
/// models it does not name.
pub fn validate(req: &EvictionRequest, d: EvictionDecision) -> Result<EvictionDecision, String> {
    let (ids, draining) = match &d {
        EvictionDecision::Evict(ids) => (ids, false),
        EvictionDecision::Drain(ids) => (ids, true),
        EvictionDecision::Wait(_) | EvictionDecision::Reject(_) => return Ok(d),
    };
    if draining && req.reason != EvictionReason::Load {
        return Err("drains models, which only a waiting load may ask for".into());
    }
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
        if m.in_flight > 0 && !draining {
            return Err(format!(
                "names {id:?}, which has {} requests in flight",
                m.in_flight
            ));
        }
        if m.state != ModelState::Ready {
            return Err(format!("names {id:?}, which is {:?}, not ready", m.state));
        }
        // Sizes are the host's own readings, but a sum must not wrap into "enough" (found by
        // the decision fuzz target).
        freed = freed.saturating_add(m.size_bytes);
    }
    if draining {
        freed = (req.loaded.iter())
            .filter(|m| evictable(m) && !ids.contains(&m.id))
            .fold(freed, |sum, m| sum.saturating_add(m.size_bytes));
    }
    if freed < req.needed_bytes {
        return Err(format!(
            "frees {freed} bytes; {} are needed",
            req.needed_bytes
        ));
    }
    Ok(d)
}

fn evictable(m: &Model) -> bool {
    !m.pinned && m.in_flight == 0 && m.state == ModelState::Ready
}

/// The native default: least recently used first, just enough to free the bytes needed;
/// `wait` while a busy model may still go idle, `reject` when nothing could ever free enough.
pub fn fallback(req: &EvictionRequest) -> EvictionDecision {
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
        EvictionDecision::Wait(Some(WAIT_RECHECK))
    } else {
        EvictionDecision::Reject(format!(
            "{} needs {} bytes freed on {}; unpinned idle models hold only {freed}",
            req.incoming.id, req.needed_bytes, req.device
        ))
    }
}

/// The policy's answer on the sample scenario, described.
pub fn smoke(policy: &Policy) -> Result<String, PolicyError> {
    let req = sample::eviction_request(SMOKE_MODELS);
    let catalogue = sample::catalogue(SMOKE_MODELS);
    Ok(match policy.choose_eviction(&req, &catalogue)? {
        EvictionDecision::Evict(ids) => format!("evict {ids:?}"),
        EvictionDecision::Drain(ids) => format!("drain {ids:?}"),
        EvictionDecision::Wait(None) => "wait".into(),
        EvictionDecision::Wait(Some(after)) => format!("wait, ask again in {after:?}"),
        EvictionDecision::Reject(why) => format!("reject: {why}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evict(ids: &[&str]) -> EvictionDecision {
        EvictionDecision::Evict(ids.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn eviction_rules() {
        // sample: m0 pinned, m1 busy, all 1 GiB, 2 GiB needed.
        let req = sample::eviction_request(6);
        assert!(validate(&req, evict(&["m2", "m3"])).is_ok());
        assert!(validate(&req, EvictionDecision::Wait(None)).is_ok());
        for (bad, why) in [
            (evict(&["m2", "m2"]), "twice"),
            (evict(&["m2", "ghost"]), "not loaded"),
            (evict(&["m0", "m2"]), "pinned"),
            (evict(&["m1", "m2"]), "in flight"),
            (evict(&["m2"]), "are needed"),
        ] {
            let err = validate(&req, bad).expect_err(why);
            assert!(err.contains(why), "{err}");
        }
        let mut loading = sample::eviction_request(6);
        loading.loaded[2].state = ModelState::Loading;
        assert!(
            validate(&loading, evict(&["m2", "m3"]))
                .expect_err("loading")
                .contains("not ready")
        );
    }

    #[test]
    fn drain_rules() {
        // m1 is busy; m2.. idle. A drain may name busy models, only for a load, and frees
        // enough with the idle models it leaves out.
        let drain =
            |ids: &[&str]| EvictionDecision::Drain(ids.iter().map(|s| s.to_string()).collect());
        let mut req = sample::eviction_request(3);
        req.needed_bytes = 2 << 30;
        assert!(
            validate(&req, drain(&["m1"])).is_ok(),
            "m1 drained with m2 idle"
        );
        assert!(validate(&req, drain(&["m1", "m2"])).is_ok());
        for (bad, why) in [
            (drain(&["m0"]), "pinned"),
            (drain(&["m1", "m1"]), "twice"),
            (drain(&["ghost"]), "not loaded"),
        ] {
            let err = validate(&req, bad).expect_err(why);
            assert!(err.contains(why), "{err}");
        }
        req.needed_bytes = 3 << 30;
        assert!(
            validate(&req, drain(&["m1"]))
                .expect_err("short")
                .contains("are needed")
        );
        req.needed_bytes = 1 << 30;
        req.reason = EvictionReason::Pressure;
        assert!(
            validate(&req, drain(&["m1"]))
                .expect_err("pressure")
                .contains("only a waiting load")
        );
    }

    #[test]
    fn fallback_decisions_pass_the_host_rules() {
        for n in [2, 6, 64] {
            let req = sample::eviction_request(n);
            let decision = fallback(&req);
            assert!(
                validate(&req, decision.clone()).is_ok(),
                "{n}: {decision:?}"
            );
        }
    }

    #[test]
    fn fallback_eviction_waits_then_rejects() {
        let mut req = sample::eviction_request(2); // m0 pinned, m1 busy
        assert_eq!(fallback(&req), EvictionDecision::Wait(Some(WAIT_RECHECK)));
        req.loaded[1].pinned = true;
        assert!(matches!(fallback(&req), EvictionDecision::Reject(_)));
    }
}
