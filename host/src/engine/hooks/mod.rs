//! Which policy serves each hook, and the one entry point per hook that always answers:
//! the policy's decision when it gives a valid one, the native fallback otherwise.
//!
//! Each hook has one file here holding everything about it (mini-redis's `cmd/` pattern): its
//! entry point on [`Hooks`], the guest call on [`Policy`], the host's rules for its answer,
//! its native fallback and the smoke sample `policy check` runs. Adding a hook means the WIT,
//! one file here, its SDK helpers, and the match arms the compiler asks for.

pub mod compression;
pub mod eviction;
pub mod selection;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use super::experiment::{Arm, Experiment, Mode};
use super::{Catalogue, Hook, HookMap, Policy, PolicyError};

/// Who made a decision.
#[derive(Debug, Clone)]
pub enum DecidedBy {
    /// The named policy's own, valid answer.
    Policy(String),
    /// The native default: no policy serves the hook (`None`), or its call failed.
    Fallback(Option<PolicyError>),
}

pub use eviction::NativeEviction;

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
    /// A native `choose-eviction` that answers instead of any policy: only the simulator's
    /// oracle, which knows the trace's future and so cannot be a policy.
    native_eviction: RwLock<Option<Arc<dyn eviction::NativeEviction>>>,
    /// What 0.2 policies are configured with: the configured models, devices and tasks.
    catalogue: RwLock<Arc<Catalogue>>,
    /// Whether a serving policy observes events, kept with the slots so that the request path
    /// reads a flag rather than every slot.
    observing: AtomicBool,
}

impl Hooks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the catalogue 0.2 policies see, and configures the serving ones with it now.
    pub fn set_catalogue(&self, catalogue: Catalogue) {
        let catalogue = Arc::new(catalogue);
        *self.catalogue.write().unwrap_or_else(|e| e.into_inner()) = catalogue.clone();
        for p in self.serving() {
            p.prepare(&catalogue);
        }
    }

    /// Every policy serving a hook or an experiment's candidate, each once.
    fn serving(&self) -> Vec<Arc<Policy>> {
        let mut all: Vec<Arc<Policy>> = Vec::new();
        for hook in Hook::ALL {
            let candidate = self.experiment(hook).map(|e| e.candidate.clone());
            for p in [self.get(hook), candidate].into_iter().flatten() {
                if !all.iter().any(|q| Arc::ptr_eq(q, &p)) {
                    all.push(p);
                }
            }
        }
        all
    }

    /// The catalogue 0.2 policies see.
    pub fn catalogue(&self) -> Arc<Catalogue> {
        self.catalogue
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The policies serving a hook or a running experiment that observe events, each once.
    fn observers(&self) -> Vec<Arc<Policy>> {
        let mut all = self.serving();
        all.retain(|p| p.observes());
        all
    }

    /// Whether any policy wants events: without one, an event need not be built.
    pub fn observed(&self) -> bool {
        self.observing.load(Ordering::Relaxed)
    }

    fn refresh_observing(&self) {
        let any = self.serving().iter().any(|p| p.observes());
        self.observing.store(any, Ordering::Relaxed);
    }

    /// Queues `event` for every observing policy; never waits for one.
    pub fn observe(&self, event: &super::types::Event) {
        for p in self.observers() {
            p.enqueue(event);
        }
    }

    /// The most events waiting for one observing policy.
    pub fn backlog(&self) -> usize {
        self.observers()
            .iter()
            .map(|p| p.event_counts().pending)
            .max()
            .unwrap_or(0)
    }

    /// Tells every observing policy its pending events (off the request path: the caller's
    /// thread runs the guests). Returns how many events were told.
    pub fn deliver(&self) -> u64 {
        let catalogue = self.catalogue();
        self.observers().iter().map(|p| p.deliver(&catalogue)).sum()
    }

    /// Makes `policy` serve `hook` (or the fallback, with `None`). Returns the previous one.
    pub fn set(&self, hook: Hook, policy: Option<Arc<Policy>>) -> Option<Arc<Policy>> {
        if let Some(p) = &policy {
            p.prepare(&self.catalogue());
        }
        let previous = {
            let mut slot = self.slots[hook].write().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *slot, policy)
        };
        self.refresh_observing();
        previous
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
        if let Some(e) = &experiment {
            e.candidate.prepare(&self.catalogue());
        }
        let previous = {
            let mut slot = self.experiments[hook]
                .write()
                .unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *slot, experiment)
        };
        self.refresh_observing();
        previous
    }

    /// The experiment running on `hook`, if any.
    pub fn experiment(&self, hook: Hook) -> Option<Arc<Experiment>> {
        self.experiments[hook]
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One decision, through the experiment when one runs: a live one asks the key's arm; a
    /// shadow one asks both, records both, and answers with the incumbent's.
    pub(super) fn run<T: std::fmt::Debug>(
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

/// Runs `hook` on its smoke sample and describes the answer, for `policy check`.
pub fn smoke(policy: &Policy, hook: Hook) -> Result<String, PolicyError> {
    match hook {
        Hook::ChooseEviction => eviction::smoke(policy),
        Hook::SelectModel => selection::smoke(policy),
        Hook::CompressContext => compression::smoke(policy),
    }
}
