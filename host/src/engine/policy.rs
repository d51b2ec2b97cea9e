//! One compiled policy component: loading and checking it, and calling its hooks in a sandbox.
//!
//! A call runs on an instance taken from a small per-policy pool. An instance serves at most
//! `recycle_after` calls and is discarded after any failure, so a guest that traps or leaks
//! never affects the next call. Every call gets a fresh epoch deadline.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::{compression, eviction, selection};
use super::sandbox::GuestState;
use super::{CONTRACT_VERSION, Hook, HookMap, LoadError, PolicyEngine, PolicyError};

/// Where a policy came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    Builtin,
    File(PathBuf),
}

/// Upper bounds (µs) of the buckets hook latencies are counted in; the last bucket is open.
pub const LATENCY_BUCKETS_US: [u64; 8] = [10, 25, 50, 100, 250, 1_000, 5_000, 25_000];

/// Counters for one hook of one policy.
#[derive(Debug, Default)]
pub struct HookStats {
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    pub consecutive_failures: AtomicU32,
    /// Calls that ran in the guest (not refused before it), by latency bucket; the last one
    /// counts calls above every bound.
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    /// Total time in the guest, µs.
    pub latency_sum_us: AtomicU64,
}

impl HookStats {
    fn record(&self, took: std::time::Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The latency (µs) under which `q` of the calls fell, as a bucket bound; `None` without
    /// calls or when the quantile lies above every bound.
    pub fn latency_quantile_us(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self
            .latency_buckets
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let target = (total as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return LATENCY_BUCKETS_US.get(i).copied();
            }
        }
        None
    }
}

/// A live instance with its exports looked up once.
pub(super) struct Warm {
    pub store: Store<GuestState>,
    pub eviction: Option<eviction::Guest>,
    pub selection: Option<selection::Guest>,
    pub compression: Option<compression::Guest>,
    calls: u32,
}

/// A compiled, checked policy component.
pub struct Policy {
    name: String,
    source: PolicySource,
    engine: PolicyEngine,
    pre: InstancePre<GuestState>,
    eviction: Option<eviction::GuestIndices>,
    selection: Option<selection::GuestIndices>,
    compression: Option<compression::GuestIndices>,
    pool: Mutex<Vec<Warm>>,
    stats: HookMap<HookStats>,
    quarantined: AtomicBool,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("hooks", &self.hooks())
            .finish()
    }
}

/// What kind of WebAssembly binary `bytes` is, from its 8-byte preamble.
fn check_preamble(name: &str, bytes: &[u8]) -> Result<(), LoadError> {
    const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm { name: name.into() });
    }
    if bytes[4..8] == CORE_VERSION {
        return Err(LoadError::CoreModule { name: name.into() });
    }
    Ok(())
}

impl Policy {
    /// Compiles `bytes`, finds which hooks it exports, and instantiates it once to check that
    /// each export matches the contract. Nothing is called yet.
    pub fn load(
        engine: &PolicyEngine,
        name: &str,
        source: PolicySource,
        bytes: &[u8],
    ) -> Result<Policy, LoadError> {
        check_preamble(name, bytes)?;
        let wt = &engine.inner.engine;
        let component = engine.compile(bytes).map_err(|e| LoadError::Compile {
            name: name.into(),
            detail: format!("{e:#}"),
        })?;
        let pre = engine
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Imports {
                name: name.into(),
                detail: format!("{e:#}"),
            })?;

        let policy = Policy {
            name: name.into(),
            source,
            engine: engine.clone(),
            eviction: eviction::GuestIndices::new(&pre).ok(),
            selection: selection::GuestIndices::new(&pre).ok(),
            compression: compression::GuestIndices::new(&pre).ok(),
            pre,
            pool: Mutex::new(Vec::new()),
            stats: Default::default(),
            quarantined: AtomicBool::new(false),
        };
        if policy.hooks().is_empty() {
            let exports: Vec<String> = component
                .component_type()
                .exports(wt)
                .map(|(n, _)| n.to_string())
                .collect();
            return Err(LoadError::NoHooks {
                name: name.into(),
                version: CONTRACT_VERSION,
                exports: if exports.is_empty() {
                    "nothing".into()
                } else {
                    exports.join(", ")
                },
            });
        }
        let warm = policy.instantiate().map_err(|(hook, e)| match hook {
            Some(hook) => LoadError::Contract {
                name: name.into(),
                hook,
                version: CONTRACT_VERSION,
                detail: format!("{e:#}"),
            },
            None => LoadError::Compile {
                name: name.into(),
                detail: format!("{e:#}"),
            },
        })?;
        policy.give_back(warm);
        Ok(policy)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn source(&self) -> &PolicySource {
        &self.source
    }

    /// The hooks this component exports, in contract order.
    pub fn hooks(&self) -> Vec<Hook> {
        Hook::ALL.into_iter().filter(|h| self.exports(*h)).collect()
    }

    pub fn exports(&self, hook: Hook) -> bool {
        match hook {
            Hook::ChooseEviction => self.eviction.is_some(),
            Hook::SelectModel => self.selection.is_some(),
            Hook::CompressContext => self.compression.is_some(),
        }
    }

    pub fn stats(&self, hook: Hook) -> &HookStats {
        &self.stats[hook]
    }

    /// True once repeated failures have taken this policy out of service.
    pub fn is_quarantined(&self) -> bool {
        self.quarantined.load(Ordering::Relaxed)
    }

    /// Records the validation outcome of a call that ran to completion.
    pub(super) fn checked<T>(
        &self,
        hook: Hook,
        result: Result<T, String>,
    ) -> Result<T, PolicyError> {
        match result {
            Ok(value) => {
                self.stats(hook)
                    .consecutive_failures
                    .store(0, Ordering::Relaxed);
                Ok(value)
            }
            Err(reason) => Err(self.failed(
                hook,
                PolicyError::InvalidDecision {
                    policy: self.name.clone(),
                    hook,
                    reason,
                },
            )),
        }
    }

    /// Runs one hook call on a pooled instance under the deadline, classifying any failure.
    pub(super) fn call<R>(
        &self,
        hook: Hook,
        f: impl FnOnce(&mut Warm) -> Option<wasmtime::Result<R>>,
    ) -> Result<R, PolicyError> {
        if !self.exports(hook) {
            return Err(PolicyError::NotExported {
                policy: self.name.clone(),
                hook,
            });
        }
        if self.is_quarantined() {
            return Err(PolicyError::Quarantined {
                policy: self.name.clone(),
                hook,
            });
        }
        let stats = self.stats(hook);
        stats.calls.fetch_add(1, Ordering::Relaxed);
        let mut warm = match self.take_instance() {
            Ok(w) => w,
            Err((_, e)) => return Err(self.failed(hook, self.trap(hook, &e))),
        };
        warm.store
            .set_epoch_deadline(self.engine.settings().deadline_ticks());
        let began = std::time::Instant::now();
        let outcome = f(&mut warm);
        stats.record(began.elapsed());
        match outcome {
            Some(Ok(value)) => {
                warm.calls += 1;
                self.give_back(warm);
                Ok(value)
            }
            Some(Err(e)) => {
                let error = if warm.store.data().hit_memory_cap {
                    PolicyError::OutOfMemory {
                        policy: self.name.clone(),
                        hook,
                    }
                } else if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
                    let deadline_ms =
                        u64::try_from(self.engine.settings().hook_deadline.as_millis())
                            .unwrap_or(u64::MAX);
                    PolicyError::Deadline {
                        policy: self.name.clone(),
                        hook,
                        deadline_ms,
                    }
                } else {
                    self.trap(hook, &e)
                };
                // The instance is dropped here: a failed guest is never reused.
                Err(self.failed(hook, error))
            }
            None => Err(PolicyError::NotExported {
                policy: self.name.clone(),
                hook,
            }),
        }
    }

    fn trap(&self, hook: Hook, e: &wasmtime::Error) -> PolicyError {
        PolicyError::Trap {
            policy: self.name.clone(),
            hook,
            message: format!("{e:#}"),
        }
    }

    /// Counts a failure, quarantines the policy past the threshold, and logs it.
    fn failed(&self, hook: Hook, error: PolicyError) -> PolicyError {
        let stats = self.stats(hook);
        stats.failures.fetch_add(1, Ordering::Relaxed);
        let streak = stats.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(policy = %self.name, hook = %hook, kind = error.kind(), "{error}");
        if streak >= self.engine.settings().quarantine_after
            && !self.quarantined.swap(true, Ordering::Relaxed)
        {
            tracing::error!(
                policy = %self.name, hook = %hook,
                "quarantined after {streak} consecutive failures; replace the policy to lift it"
            );
        }
        error
    }

    fn take_instance(&self) -> Result<Warm, (Option<Hook>, wasmtime::Error)> {
        let pooled = self.pool.lock().ok().and_then(|mut pool| pool.pop());
        match pooled {
            Some(w) => Ok(w),
            None => self.instantiate(),
        }
    }

    /// Returns a healthy instance to the pool, unless it has served its share.
    fn give_back(&self, warm: Warm) {
        let settings = self.engine.settings();
        if warm.calls >= settings.recycle_after {
            return;
        }
        if let Ok(mut pool) = self.pool.lock()
            && pool.len() < settings.warm_instances
        {
            pool.push(warm);
        }
    }

    /// A fresh instance in a fresh store. On error, names the hook whose export failed to load.
    fn instantiate(&self) -> Result<Warm, (Option<Hook>, wasmtime::Error)> {
        let settings = self.engine.settings();
        let mut store = Store::new(
            &self.engine.inner.engine,
            GuestState::new(&self.name, settings.memory_cap),
        );
        store.limiter(|s| s);
        store.epoch_deadline_trap();
        // Instantiating a large guest (an interpreter's heap image) takes longer than a hook
        // call may; each call sets its own deadline.
        store.set_epoch_deadline(settings.deadline_ticks().max(super::instantiate_ticks()));
        let instance = self.pre.instantiate(&mut store).map_err(|e| (None, e))?;
        let eviction = match &self.eviction {
            Some(i) => Some(
                i.load(&mut store, &instance)
                    .map_err(|e| (Some(Hook::ChooseEviction), e))?,
            ),
            None => None,
        };
        let selection = match &self.selection {
            Some(i) => Some(
                i.load(&mut store, &instance)
                    .map_err(|e| (Some(Hook::SelectModel), e))?,
            ),
            None => None,
        };
        let compression = match &self.compression {
            Some(i) => Some(
                i.load(&mut store, &instance)
                    .map_err(|e| (Some(Hook::CompressContext), e))?,
            ),
            None => None,
        };
        Ok(Warm {
            store,
            eviction,
            selection,
            compression,
            calls: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preamble_tells_text_core_modules_and_components_apart() {
        assert!(matches!(
            check_preamble("t", b"hello world"),
            Err(LoadError::NotWasm { .. })
        ));
        assert!(matches!(
            check_preamble("t", b"\0asm"),
            Err(LoadError::NotWasm { .. })
        ));
        assert!(matches!(
            check_preamble("t", b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule { .. })
        ));
        assert!(check_preamble("t", b"\0asm\x0d\0\x01\0").is_ok());
    }
}
