//! The policy engine: narrows wasmtime to what modelyard's policies need and makes every hook
//! call safe to make on the request path.
//!
//! It owns one wasmtime `Engine` (component model, pooling allocator, epoch interruption), the
//! only `bindgen!` ([`bindings`]), and the compiled [`Policy`] components. It promises that a
//! hook call always returns a usable decision: a guest that traps, runs past its deadline,
//! exceeds its memory cap or answers something the host's rules forbid is contained, counted,
//! and replaced by a native default ([`fallback`]); repeated failures quarantine the policy.
//! It knows nothing of HTTP, processes or models' real state: callers hand it plain records.

mod bindings;
pub mod builtin;
mod cache;
mod catalogue;
mod error;
pub mod experiment;
#[doc(hidden)]
pub mod fuzz;
mod hooks;
mod imports;
mod policy;
pub mod sample;
mod sandbox;
pub mod set;
pub mod tokens;
pub mod types;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::component::Linker;

pub use cache::CacheStats;
pub use catalogue::{Catalogue, ModelInfo};
pub use error::{LoadError, PolicyError};
pub use hooks::{Decided, DecidedBy, Hooks, NativeEviction, smoke};

/// The native defaults, one per hook (each lives in its hook's file under `hooks/`).
pub mod fallback {
    pub use super::hooks::compression::fallback as compress_context;
    pub use super::hooks::eviction::fallback as choose_eviction;
    pub use super::hooks::selection::fallback as select_model;
}
pub use policy::{
    Contract, EVENT_BATCH, EventCounts, HookStats, INLINE_SLOW_SHARE, LATENCY_BUCKETS_US,
    MAX_PENDING_EVENTS, Policy, PolicySource, Resets,
};
use sandbox::GuestState;
pub use set::PolicySet;

/// How long one hook call may run before it is stopped.
pub const DEFAULT_HOOK_DEADLINE: Duration = Duration::from_millis(5);

/// A hook call longer than this is slow: a policy with more than one slow call in
/// [`INLINE_SLOW_SHARE`] is not called on the request's own async thread
/// ([`Policy::runs_inline`]). Tokio asks a task to block for at most 10 to 100 µs between
/// awaits; a fast `select-model` takes about 10 µs, a hop to the blocking pool and back about
/// 40 µs on a 2-core machine.
pub const DEFAULT_INLINE_LIMIT: Duration = Duration::from_micros(250);
/// Linear memory one guest instance may grow to.
pub const DEFAULT_MEMORY_CAP: usize = 256 << 20;
/// Consecutive failed calls after which a policy is quarantined until it is replaced.
pub const DEFAULT_QUARANTINE_AFTER: u32 = 5;
/// Calls one instance serves before it is discarded for a fresh one (any failure discards it
/// at once), so that state a guest leaks cannot build up.
pub const DEFAULT_RECYCLE_AFTER: u32 = 256;
/// Idle instances kept ready per policy.
pub const DEFAULT_WARM_INSTANCES: usize = 4;
/// How long instantiating a policy may take (large guests, e.g. Python's, map a heap image).
pub const INSTANTIATE_DEADLINE: Duration = Duration::from_secs(2);

fn instantiate_ticks() -> u64 {
    u64::try_from(INSTANTIATE_DEADLINE.as_micros() / EPOCH_TICK.as_micros().max(1))
        .unwrap_or(u64::MAX)
}

/// The period of the epoch ticker that enforces deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Guest instances alive at once across all policies (in calls and kept warm).
const MAX_INSTANCES: u32 = 128;

/// The three decisions a policy can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    ChooseEviction,
    SelectModel,
    CompressContext,
}

impl Hook {
    /// How many hooks there are: the last one's index, plus one.
    pub const COUNT: usize = Hook::CompressContext as usize + 1;

    pub const ALL: [Hook; Hook::COUNT] = [
        Hook::ChooseEviction,
        Hook::SelectModel,
        Hook::CompressContext,
    ];

    /// The hook's name in the contract.
    /// The hook named `name` (`choose-eviction`, or `eviction`; and so on).
    pub fn parse(name: &str) -> Option<Hook> {
        match name {
            "choose-eviction" | "eviction" => Some(Hook::ChooseEviction),
            "select-model" | "selection" => Some(Hook::SelectModel),
            "compress-context" | "compression" => Some(Hook::CompressContext),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Hook::ChooseEviction => "choose-eviction",
            Hook::SelectModel => "select-model",
            Hook::CompressContext => "compress-context",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One `T` per hook, indexed by [`Hook`]: what each hook has of something (its policy, its
/// experiment, its counters), without arrays indexed by number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookMap<T>([T; Hook::COUNT]);

impl<T> HookMap<T> {
    /// Each hook's value from `f`.
    pub fn from_fn(f: impl FnMut(Hook) -> T) -> Self {
        Self(Hook::ALL.map(f))
    }

    /// Every hook with its value, in [`Hook::ALL`]'s order.
    pub fn iter(&self) -> impl Iterator<Item = (Hook, &T)> {
        Hook::ALL.into_iter().zip(&self.0)
    }
}

impl<T: Default> Default for HookMap<T> {
    fn default() -> Self {
        Self::from_fn(|_| T::default())
    }
}

impl<T> std::ops::Index<Hook> for HookMap<T> {
    type Output = T;
    fn index(&self, hook: Hook) -> &T {
        &self.0[hook.index()]
    }
}

impl<T> std::ops::IndexMut<Hook> for HookMap<T> {
    fn index_mut(&mut self, hook: Hook) -> &mut T {
        &mut self.0[hook.index()]
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The limits every guest runs under.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub hook_deadline: Duration,
    pub memory_cap: usize,
    pub quarantine_after: u32,
    pub recycle_after: u32,
    pub warm_instances: usize,
    /// See [`DEFAULT_INLINE_LIMIT`].
    pub inline_limit: Duration,
    /// Where compiled policies are cached; `None` compiles every time.
    pub cache_dir: Option<std::path::PathBuf>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            hook_deadline: DEFAULT_HOOK_DEADLINE,
            memory_cap: DEFAULT_MEMORY_CAP,
            quarantine_after: DEFAULT_QUARANTINE_AFTER,
            recycle_after: DEFAULT_RECYCLE_AFTER,
            warm_instances: DEFAULT_WARM_INSTANCES,
            inline_limit: DEFAULT_INLINE_LIMIT,
            cache_dir: None,
        }
    }
}

impl EngineSettings {
    /// Epoch ticks a call may run: at least the deadline, at most one tick more.
    fn deadline_ticks(&self) -> u64 {
        let tick = EPOCH_TICK.as_micros().max(1);
        u64::try_from(self.hook_deadline.as_micros().div_ceil(tick))
            .unwrap_or(u64::MAX)
            .max(1)
            + 1
    }
}

/// wasmtime 48 has its own error type, which is not a `std::error::Error`.
fn from_wasmtime(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

/// One wasmtime engine and linker, configured once, shared by every policy.
#[derive(Clone)]
pub struct PolicyEngine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    engine: wasmtime::Engine,
    linker: Linker<GuestState>,
    settings: EngineSettings,
    cache: Option<cache::ArtifactCache>,
    compiled: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("settings", &self.inner.settings)
            .finish()
    }
}

impl PolicyEngine {
    /// Builds the engine and starts its epoch ticker (a thread that ends with the engine).
    pub fn new(settings: EngineSettings) -> anyhow::Result<Self> {
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_component_instances(MAX_INSTANCES)
            .total_core_instances(MAX_INSTANCES * 8)
            .total_memories(MAX_INSTANCES * 2)
            .total_tables(MAX_INSTANCES * 8)
            .max_core_instances_per_component(64)
            .max_memories_per_component(8)
            .max_tables_per_component(64)
            .max_memory_size(settings.memory_cap);
        let mut config = wasmtime::Config::new();
        config
            .wasm_component_model(true)
            .concurrency_support(false)
            .epoch_interruption(true)
            .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = wasmtime::Engine::new(&config)
            .map_err(from_wasmtime)
            .context("configuring wasmtime")?;

        let mut linker = Linker::<GuestState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(from_wasmtime)?;
        bindings::add_to_linker(&mut linker).map_err(from_wasmtime)?;

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("modelyard-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .context("starting the epoch ticker")?;

        let cache = settings.cache_dir.clone().map(cache::ArtifactCache::new);
        Ok(Self {
            inner: Arc::new(EngineInner {
                engine,
                linker,
                settings,
                cache,
                compiled: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.inner.settings
    }

    /// Components compiled by this engine (cache misses included), and ones read from the cache.
    pub fn compile_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let cached = self
            .inner
            .cache
            .as_ref()
            .map_or(0, |c| c.stats().loaded.load(Relaxed));
        (self.inner.compiled.load(Relaxed), cached)
    }

    /// Compiles a component, through the on-disk cache when one is configured.
    fn compile(&self, bytes: &[u8]) -> wasmtime::Result<wasmtime::component::Component> {
        let wt = &self.inner.engine;
        let Some(cache) = &self.inner.cache else {
            self.inner
                .compiled
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return wasmtime::component::Component::new(wt, bytes);
        };
        let s = &self.inner.settings;
        let tag = format!("memory_cap={}", s.memory_cap);
        let before = cache
            .stats()
            .compiled
            .load(std::sync::atomic::Ordering::Relaxed);
        let component = cache.get_or_compile(wt, &tag, bytes)?;
        let after = cache
            .stats()
            .compiled
            .load(std::sync::atomic::Ordering::Relaxed);
        self.inner
            .compiled
            .fetch_add(after - before, std::sync::atomic::Ordering::Relaxed);
        Ok(component)
    }

    /// Compiles and checks a policy component; see [`Policy::load`].
    pub fn load(
        &self,
        name: &str,
        source: PolicySource,
        bytes: &[u8],
    ) -> Result<Policy, LoadError> {
        Policy::load(self, name, source, bytes)
    }

    /// Loads a built-in by name, or a component file by path (relative to `base`).
    pub fn resolve(&self, name_or_path: &str, base: &std::path::Path) -> Result<Policy, String> {
        if let Some(loaded) = self.builtin(name_or_path) {
            return loaded.map_err(|e| e.to_string());
        }
        let path = base.join(name_or_path);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let name = path.file_stem().map_or_else(
            || name_or_path.to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        self.load(&name, PolicySource::File(path), &bytes)
            .map_err(|e| e.to_string())
    }

    /// Loads a built-in policy by name (`lru`, `lfu`, `priority`, `specialization`, `hybrid`).
    pub fn builtin(&self, name: &str) -> Option<Result<Policy, LoadError>> {
        builtin::bytes(name).map(|bytes| self.load(name, PolicySource::Builtin, bytes))
    }
}
