//! Which policy serves each hook, and the one entry point per hook that always answers:
//! the policy's decision when it gives a valid one, the native fallback otherwise.

use std::sync::{Arc, RwLock};

use super::types::{
    CompressionRequest, EvictionDecision, EvictionRequest, Message, Model, Request, Selection,
    Telemetry,
};
use super::{Hook, Policy, PolicyError, fallback};

/// Who made a decision.
#[derive(Debug, Clone)]
pub enum DecidedBy {
    /// The named policy's own, valid answer.
    Policy(String),
    /// The native default: no policy serves the hook (`None`), or its call failed.
    Fallback(Option<PolicyError>),
}

/// A decision and who made it.
#[derive(Debug, Clone)]
pub struct Decided<T> {
    pub value: T,
    pub by: DecidedBy,
}

impl<T> Decided<T> {
    /// True when the native fallback decided because the policy failed.
    pub fn fell_back(&self) -> bool {
        matches!(self.by, DecidedBy::Fallback(Some(_)))
    }
}

/// The policy serving each hook. Slots can be replaced while calls are in flight: a call
/// keeps the `Arc` it started with.
#[derive(Debug, Default)]
pub struct Hooks {
    slots: [RwLock<Option<Arc<Policy>>>; 3],
}

impl Hooks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `policy` serve `hook` (or the fallback, with `None`). Returns the previous one.
    pub fn set(&self, hook: Hook, policy: Option<Arc<Policy>>) -> Option<Arc<Policy>> {
        let mut slot = self.slots[hook.index()]
            .write()
            .unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *slot, policy)
    }

    /// Makes `policy` serve every hook it exports.
    pub fn set_all(&self, policy: &Arc<Policy>) {
        for hook in policy.hooks() {
            self.set(hook, Some(policy.clone()));
        }
    }

    /// The policy serving `hook`, if any.
    pub fn get(&self, hook: Hook) -> Option<Arc<Policy>> {
        self.slots[hook.index()]
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn choose_eviction(&self, req: &EvictionRequest) -> Decided<EvictionDecision> {
        decide(
            self.get(Hook::ChooseEviction),
            |p| p.choose_eviction(req),
            || fallback::choose_eviction(req),
        )
    }

    pub fn select_model(
        &self,
        req: &Request,
        candidates: &[Model],
        telemetry: &Telemetry,
    ) -> Decided<Selection> {
        decide(
            self.get(Hook::SelectModel),
            |p| p.select_model(req, candidates, telemetry),
            || fallback::select_model(req, candidates),
        )
    }

    pub fn compress_context(
        &self,
        req: &CompressionRequest,
    ) -> Decided<Result<Vec<Message>, String>> {
        decide(
            self.get(Hook::CompressContext),
            |p| p.compress_context(req),
            || fallback::compress_context(req),
        )
    }
}

fn decide<T>(
    policy: Option<Arc<Policy>>,
    call: impl FnOnce(&Policy) -> Result<T, PolicyError>,
    fallback: impl FnOnce() -> T,
) -> Decided<T> {
    let Some(policy) = policy else {
        return Decided {
            value: fallback(),
            by: DecidedBy::Fallback(None),
        };
    };
    match call(&policy) {
        Ok(value) => Decided {
            value,
            by: DecidedBy::Policy(policy.name().to_string()),
        },
        Err(error) => Decided {
            value: fallback(),
            by: DecidedBy::Fallback(Some(error)),
        },
    }
}
