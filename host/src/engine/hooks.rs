//! Which policy serves each hook, and the one entry point per hook that always answers:
//! the policy's decision when it gives a valid one, the native fallback otherwise.

use std::sync::{Arc, RwLock};

use super::types::{
    CompressionRequest, EvictionDecision, EvictionRequest, Message, Model, Request, Selection,
    Telemetry,
};
use std::time::Instant;

use super::experiment::{Arm, Experiment, Mode};
use super::{Hook, HookMap, Policy, PolicyError, fallback};

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

/// The policy serving each hook, and the experiment running on it, if any. Slots can be
/// replaced while calls are in flight: a call keeps the `Arc` it started with.
#[derive(Debug, Default)]
pub struct Hooks {
    slots: HookMap<RwLock<Option<Arc<Policy>>>>,
    experiments: HookMap<RwLock<Option<Arc<Experiment>>>>,
}

impl Hooks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `policy` serve `hook` (or the fallback, with `None`). Returns the previous one.
    pub fn set(&self, hook: Hook, policy: Option<Arc<Policy>>) -> Option<Arc<Policy>> {
        let mut slot = self.slots[hook].write().unwrap_or_else(|e| e.into_inner());
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
        self.slots[hook]
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Starts (or, with `None`, stops) the experiment on `hook`. Returns the previous one.
    pub fn set_experiment(
        &self,
        hook: Hook,
        experiment: Option<Arc<Experiment>>,
    ) -> Option<Arc<Experiment>> {
        let mut slot = self.experiments[hook]
            .write()
            .unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *slot, experiment)
    }

    /// The experiment running on `hook`, if any.
    pub fn experiment(&self, hook: Hook) -> Option<Arc<Experiment>> {
        self.experiments[hook]
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn choose_eviction(&self, req: &EvictionRequest) -> Decided<EvictionDecision> {
        self.choose_eviction_for("", req)
    }

    /// `choose-eviction` for the request whose sticky key is `key` (it picks the arm of a
    /// running experiment).
    pub fn choose_eviction_for(
        &self,
        key: &str,
        req: &EvictionRequest,
    ) -> Decided<EvictionDecision> {
        self.run(
            Hook::ChooseEviction,
            key,
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
        self.select_model_for("", req, candidates, telemetry)
    }

    pub fn select_model_for(
        &self,
        key: &str,
        req: &Request,
        candidates: &[Model],
        telemetry: &Telemetry,
    ) -> Decided<Selection> {
        self.run(
            Hook::SelectModel,
            key,
            |p| p.select_model(req, candidates, telemetry),
            || fallback::select_model(req, candidates),
        )
    }

    pub fn compress_context(
        &self,
        req: &CompressionRequest,
    ) -> Decided<Result<Vec<Message>, String>> {
        self.compress_context_for("", req)
    }

    pub fn compress_context_for(
        &self,
        key: &str,
        req: &CompressionRequest,
    ) -> Decided<Result<Vec<Message>, String>> {
        self.run(
            Hook::CompressContext,
            key,
            |p| p.compress_context(req),
            || fallback::compress_context(req),
        )
    }

    /// One decision, through the experiment when one runs: a live one asks the key's arm; a
    /// shadow one asks both, records both, and answers with the incumbent's.
    fn run<T: std::fmt::Debug>(
        &self,
        hook: Hook,
        key: &str,
        call: impl Fn(&Policy) -> Result<T, PolicyError>,
        fallback: impl Fn() -> T,
    ) -> Decided<T> {
        let Some(e) = self.experiment(hook) else {
            return decide(self.get(hook), &call, &fallback);
        };
        let began = Instant::now();
        match e.mode {
            Mode::Live => {
                let arm = e.arm(key);
                let policy = match arm {
                    Arm::Incumbent => self.get(hook),
                    Arm::Candidate => Some(e.candidate.clone()),
                };
                let d = decide(policy, &call, &fallback);
                e.record_call(arm, &d, began.elapsed());
                d
            }
            Mode::Shadow => {
                let d = decide(self.get(hook), &call, &fallback);
                e.record_call(Arm::Incumbent, &d, began.elapsed());
                let began = Instant::now();
                let c = decide(Some(e.candidate.clone()), &call, &fallback);
                e.record_call(Arm::Candidate, &c, began.elapsed());
                e.compare(key, format!("{:?}", d.value), format!("{:?}", c.value));
                d
            }
        }
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
