//! One compiled policy component: loading and checking it, and calling its hooks in a sandbox.
//!
//! A 0.1 component's call runs on an instance taken from a small per-policy pool; an instance
//! serves at most `recycle_after` calls and is discarded after any failure, so a guest that
//! traps or leaks never affects the next call. A 0.2 component is stateful: one instance lives
//! across calls, which are serialised on it; it is configured with the catalogue before its
//! first call and whenever the catalogue changes, and discarded (for a fresh one at the next
//! call) after a trap, a deadline or its memory cap, which holds over its whole life. Every
//! call gets a fresh epoch deadline.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use wasmtime::Store;
use wasmtime::component::{ComponentExportIndex, InstancePre};

use super::bindings::{lowered, v1, v2};
use super::sandbox::GuestState;
use super::types::Event;
use super::{Catalogue, Hook, HookMap, LoadError, PolicyEngine, PolicyError};

/// A contract version the host serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    V0_1,
    V0_2,
}

impl Contract {
    pub fn version(self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1.0",
            Contract::V0_2 => "0.2.0",
        }
    }

    /// Whether an instance lives across calls.
    pub fn stateful(self) -> bool {
        self == Contract::V0_2
    }
}

/// Where a policy came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    Builtin,
    File(PathBuf),
}

/// Upper bounds (µs) of the buckets hook latencies are counted in; the last bucket is open.
pub const LATENCY_BUCKETS_US: [u64; 8] = [10, 25, 50, 100, 250, 1_000, 5_000, 25_000];

/// A policy runs on the caller's thread while at most one of this many of its calls on a
/// hook took longer than the engine's `inline_limit` ([`Policy::runs_inline`]).
pub const INLINE_SLOW_SHARE: u64 = 100;

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
    /// Calls that took longer than the engine's `inline_limit`.
    pub slow_calls: AtomicU64,
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
    pub guest: Guest,
    calls: u32,
}

/// An instance's exports, by contract version.
pub(super) enum Guest {
    V1 {
        eviction: Option<v1::eviction::Guest>,
        selection: Option<v1::selection::Guest>,
        compression: Option<v1::compression::Guest>,
    },
    V2(V2Guest),
}

/// A 0.2 instance's exports, and which catalogue it was configured with.
pub(super) struct V2Guest {
    pub lifecycle: Option<v2::lifecycle::Guest>,
    pub events: Option<v2::events::Guest>,
    pub eviction: Option<lowered::ChooseEviction>,
    pub selection: Option<lowered::SelectModel>,
    pub compression: Option<v2::compression::Guest>,
    /// The generation of the catalogue it was configured with.
    configured: Option<u64>,
}

/// A component's exports, found once at load.
enum Exports {
    V1 {
        eviction: Option<v1::eviction::GuestIndices>,
        selection: Option<v1::selection::GuestIndices>,
        compression: Option<v1::compression::GuestIndices>,
    },
    V2 {
        lifecycle: Option<v2::lifecycle::GuestIndices>,
        events: Option<v2::events::GuestIndices>,
        /// The two hot functions, called through [`lowered`]'s types.
        eviction: Option<ComponentExportIndex>,
        selection: Option<ComponentExportIndex>,
        compression: Option<v2::compression::GuestIndices>,
    },
}

/// The index of function `name` in the exported interface `interface`.
fn export(
    pre: &InstancePre<GuestState>,
    interface: &str,
    name: &str,
) -> Option<ComponentExportIndex> {
    let component = pre.component();
    let (_, instance) = component.get_export(None, interface)?;
    let (_, func) = component.get_export(Some(&instance), name)?;
    Some(func)
}

impl Exports {
    /// The newest version whose hooks the component exports.
    fn find(pre: &InstancePre<GuestState>) -> Exports {
        let v2 = Exports::V2 {
            lifecycle: v2::lifecycle::GuestIndices::new(pre).ok(),
            events: v2::events::GuestIndices::new(pre).ok(),
            eviction: export(pre, v2::EVICTION, "choose-eviction"),
            selection: export(pre, v2::SELECTION, "select-model"),
            compression: v2::compression::GuestIndices::new(pre).ok(),
        };
        if Hook::ALL.iter().any(|&h| v2.has(h)) {
            return v2;
        }
        Exports::V1 {
            eviction: v1::eviction::GuestIndices::new(pre).ok(),
            selection: v1::selection::GuestIndices::new(pre).ok(),
            compression: v1::compression::GuestIndices::new(pre).ok(),
        }
    }

    fn contract(&self) -> Contract {
        match self {
            Exports::V1 { .. } => Contract::V0_1,
            Exports::V2 { .. } => Contract::V0_2,
        }
    }

    fn has(&self, hook: Hook) -> bool {
        match (self, hook) {
            (Exports::V1 { eviction, .. }, Hook::ChooseEviction) => eviction.is_some(),
            (Exports::V1 { selection, .. }, Hook::SelectModel) => selection.is_some(),
            (Exports::V1 { compression, .. }, Hook::CompressContext) => compression.is_some(),
            (Exports::V2 { eviction, .. }, Hook::ChooseEviction) => eviction.is_some(),
            (Exports::V2 { selection, .. }, Hook::SelectModel) => selection.is_some(),
            (Exports::V2 { compression, .. }, Hook::CompressContext) => compression.is_some(),
        }
    }
}

/// Events a policy keeps waiting at most; more are dropped (and counted).
pub const MAX_PENDING_EVENTS: usize = 4096;
/// Events told in one `observe` call at most.
pub const EVENT_BATCH: usize = 1024;

/// Events an observing policy has not been told yet, and what became of the others.
#[derive(Debug, Default)]
struct Inbox {
    pending: std::collections::VecDeque<Event>,
    delivered: u64,
    dropped: u64,
}

/// A policy's events so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EventCounts {
    pub delivered: u64,
    pub dropped: u64,
    pub pending: usize,
}

/// How a guest call failed, before it is attributed to a hook.
enum Failure {
    OutOfMemory,
    Deadline(u64),
    Trap(String),
}

impl Failure {
    fn error(self, policy: &str, hook: Hook) -> PolicyError {
        let policy = policy.to_string();
        match self {
            Failure::OutOfMemory => PolicyError::OutOfMemory { policy, hook },
            Failure::Deadline(deadline_ms) => PolicyError::Deadline {
                policy,
                hook,
                deadline_ms,
            },
            Failure::Trap(message) => PolicyError::Trap {
                policy,
                hook,
                message,
            },
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::OutOfMemory => f.write_str("exceeded its memory cap"),
            Failure::Deadline(ms) => write!(f, "ran past its {ms} ms deadline"),
            Failure::Trap(message) => write!(f, "trapped: {message}"),
        }
    }
}

/// Why a stateful instance was last discarded, and how often.
#[derive(Debug, Default, Clone)]
pub struct Resets {
    pub count: u64,
    /// The failure that discarded the last one.
    pub last: Option<String>,
}

/// A compiled, checked policy component.
pub struct Policy {
    name: String,
    source: PolicySource,
    engine: PolicyEngine,
    pre: InstancePre<GuestState>,
    exports: Exports,
    /// The interfaces it imports, by name.
    imports: Vec<String>,
    /// 0.1: idle instances ready for a call.
    pool: Mutex<Vec<Warm>>,
    /// 0.2: the one instance, held for the length of each call.
    stateful: Mutex<Option<Warm>>,
    resets: Mutex<Resets>,
    inbox: Mutex<Inbox>,
    /// 0.2: the requests `select-model` wants, as its instance last said.
    selection_interest: AtomicU32,
    wants_text: AtomicBool,
    stats: HookMap<HookStats>,
    quarantined: AtomicBool,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("contract", &self.contract().version())
            .field("hooks", &self.hooks())
            .finish()
    }
}

fn interest_bits(f: v2::types::SelectionInterest) -> u32 {
    f.as_array()[0]
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
        let imports: Vec<String> = component
            .component_type()
            .imports(wt)
            .map(|(n, _)| n.to_string())
            .collect();
        let forbidden = super::imports::forbidden(imports.iter().map(String::as_str));
        if !forbidden.is_empty() {
            let list: Vec<String> = forbidden.iter().map(ToString::to_string).collect();
            return Err(LoadError::Forbidden {
                name: name.into(),
                forbidden: list.join(", "),
            });
        }
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
            exports: Exports::find(&pre),
            imports,
            pre,
            pool: Mutex::new(Vec::new()),
            stateful: Mutex::new(None),
            resets: Mutex::new(Resets::default()),
            inbox: Mutex::new(Inbox::default()),
            selection_interest: AtomicU32::new(interest_bits(v2::types::SelectionInterest::all())),
            wants_text: AtomicBool::new(true),
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
                version: "0.1.0 or 0.2.0",
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
                version: policy.contract().version(),
                detail: format!("{e:#}"),
            },
            None => LoadError::Compile {
                name: name.into(),
                detail: format!("{e:#}"),
            },
        })?;
        match policy.contract() {
            Contract::V0_1 => policy.give_back(warm),
            Contract::V0_2 => *lock(&policy.stateful) = Some(warm),
        }
        Ok(policy)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn source(&self) -> &PolicySource {
        &self.source
    }

    /// The interfaces it imports (`wasi:io/streams@0.2.6`, `modelyard:policy/host@0.2.0`, …).
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// The hooks this component exports, in contract order.
    pub fn hooks(&self) -> Vec<Hook> {
        Hook::ALL.into_iter().filter(|h| self.exports(*h)).collect()
    }

    pub fn exports(&self, hook: Hook) -> bool {
        self.exports.has(hook)
    }

    /// The contract version it was built against.
    pub fn contract(&self) -> Contract {
        self.exports.contract()
    }

    /// Whether it exports `events` (0.2).
    pub fn observes(&self) -> bool {
        matches!(
            &self.exports,
            Exports::V2 {
                events: Some(_),
                ..
            }
        )
    }

    /// Whether it exports `lifecycle` (0.2): it is configured with the catalogue.
    pub fn configurable(&self) -> bool {
        matches!(
            &self.exports,
            Exports::V2 {
                lifecycle: Some(_),
                ..
            }
        )
    }

    /// How often its stateful instance was discarded, and why the last time.
    pub fn resets(&self) -> Resets {
        lock(&self.resets).clone()
    }

    /// The error for a call the host could not put in 0.2's terms; logged, not counted.
    pub(super) fn undescribable(&self, hook: Hook, reason: String) -> PolicyError {
        let error = PolicyError::Undescribable {
            policy: self.name.clone(),
            hook,
            reason,
        };
        tracing::error!(policy = %self.name, hook = %hook, "{error}");
        error
    }

    /// Whether its instance last said it wants each request's text.
    pub(super) fn wants_text(&self) -> bool {
        self.wants_text.load(Ordering::Relaxed)
    }

    /// Whether its instance last said it wants to be asked about requests of this kind.
    pub(super) fn wants_selection(&self, kind: v2::types::SelectionInterest) -> bool {
        self.selection_interest.load(Ordering::Relaxed) & interest_bits(kind) != 0
    }

    pub fn stats(&self, hook: Hook) -> &HookStats {
        &self.stats[hook]
    }

    /// Whether a call on `hook` may run on the caller's async thread instead of the blocking
    /// pool: it has answered on the hook before, at most one call in [`INLINE_SLOW_SHARE`]
    /// took longer than the engine's `inline_limit` (a deadline hit among them: a busy
    /// machine may stretch any one call, a slow policy stretches many), its last call did not
    /// fail, and a 0.2 instance is made and not in another call now. After a failure, the
    /// call that makes a fresh instance runs on the pool.
    pub fn runs_inline(&self, hook: Hook) -> bool {
        let stats = self.stats(hook);
        let answered: u64 = stats
            .latency_buckets
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        let slow = stats.slow_calls.load(Ordering::Relaxed);
        if answered == 0
            || slow.saturating_mul(INLINE_SLOW_SHARE) > answered
            || stats.consecutive_failures.load(Ordering::Relaxed) > 0
        {
            return false;
        }
        // Racy by nature: a call that begins just after this look is waited for, for one fast
        // call's length.
        !self.contract().stateful() || self.stateful.try_lock().is_ok_and(|s| s.is_some())
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

    /// Runs one hook call under the deadline, classifying any failure: on a pooled instance
    /// (0.1), or on the policy's one instance, configured with `catalogue` first (0.2).
    pub(super) fn call<R>(
        &self,
        hook: Hook,
        catalogue: &Catalogue,
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
        self.stats(hook).calls.fetch_add(1, Ordering::Relaxed);
        if self.contract() == Contract::V0_1 {
            let mut warm = match self.take_instance() {
                Ok(w) => w,
                Err((_, e)) => return Err(self.failed(hook, self.trap(hook, &e))),
            };
            let value = self
                .run_on(&mut warm, hook, f)
                .map_err(|e| self.failed(hook, e))?;
            // A failed instance was dropped above: it is never reused.
            warm.calls += 1;
            self.give_back(warm);
            return Ok(value);
        }
        let mut slot = lock(&self.stateful);
        let warm = self
            .stateful_instance(&mut slot)
            .map_err(|e| self.failed(hook, self.trap(hook, &e)))?;
        let outcome = self
            .configure(warm, hook, catalogue)
            .and_then(|()| self.run_on(warm, hook, f));
        outcome.map_err(|e| {
            *slot = None;
            self.discarded(&e);
            self.failed(hook, e)
        })
    }

    /// The 0.2 instance in `slot` (the locked `stateful`), made first if there is none.
    fn stateful_instance<'a>(
        &self,
        slot: &'a mut Option<Warm>,
    ) -> Result<&'a mut Warm, wasmtime::Error> {
        match slot {
            Some(w) => Ok(w),
            empty => Ok(empty.insert(self.instantiate().map_err(|(_, e)| e)?)),
        }
    }

    /// Calls `f` on `warm` under the hook's deadline and counts its time.
    fn run_on<R>(
        &self,
        warm: &mut Warm,
        hook: Hook,
        f: impl FnOnce(&mut Warm) -> Option<wasmtime::Result<R>>,
    ) -> Result<R, PolicyError> {
        warm.store
            .set_epoch_deadline(self.engine.settings().deadline_ticks());
        let began = std::time::Instant::now();
        let outcome = f(warm);
        let took = began.elapsed();
        let stats = self.stats(hook);
        stats.record(took);
        if took > self.engine.settings().inline_limit {
            stats.slow_calls.fetch_add(1, Ordering::Relaxed);
        }
        match outcome {
            Some(Ok(value)) => Ok(value),
            Some(Err(e)) => Err(self.classify(hook, &warm.store, &e)),
            None => Err(PolicyError::NotExported {
                policy: self.name.clone(),
                hook,
            }),
        }
    }

    /// Hands a 0.2 instance the catalogue when it has not seen this one, and keeps what it
    /// wants. A failure counts against `hook`, the call that needed it.
    fn configure(
        &self,
        warm: &mut Warm,
        hook: Hook,
        catalogue: &Catalogue,
    ) -> Result<(), PolicyError> {
        let Warm { store, guest, .. } = warm;
        let Guest::V2(g) = guest else {
            return Ok(());
        };
        if g.configured == Some(catalogue.generation()) {
            return Ok(());
        }
        if let Some(lifecycle) = &g.lifecycle {
            // Configuring may build the policy's tables: it gets the time instantiating does.
            let settings = self.engine.settings();
            store.set_epoch_deadline(settings.deadline_ticks().max(super::instantiate_ticks()));
            let interests = lifecycle
                .call_configure(&mut *store, &v2::catalogue(catalogue))
                .map_err(|e| self.classify(hook, store, &e))?;
            self.selection_interest
                .store(interest_bits(interests.selection), Ordering::Relaxed);
            self.wants_text.store(interests.text, Ordering::Relaxed);
        }
        g.configured = Some(catalogue.generation());
        Ok(())
    }

    /// What a failed guest call was: its memory cap, its deadline, or a trap.
    fn classify(&self, hook: Hook, store: &Store<GuestState>, e: &wasmtime::Error) -> PolicyError {
        self.failure(store, e).error(&self.name, hook)
    }

    fn failure(&self, store: &Store<GuestState>, e: &wasmtime::Error) -> Failure {
        if store.data().hit_memory_cap {
            Failure::OutOfMemory
        } else if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
            Failure::Deadline(
                u64::try_from(self.engine.settings().hook_deadline.as_millis()).unwrap_or(u64::MAX),
            )
        } else {
            Failure::Trap(format!("{e:#}"))
        }
    }

    /// Notes that a stateful instance, and its state, was thrown away after `error`.
    fn discarded(&self, error: &PolicyError) {
        self.discarded_after(error.kind(), error.to_string());
    }

    fn discarded_after(&self, kind: &str, why: String) {
        let mut resets = lock(&self.resets);
        resets.count += 1;
        resets.last = Some(why);
        tracing::warn!(
            policy = %self.name, kind,
            "discarded its instance and the state it kept; the next call gets a fresh one"
        );
    }

    /// Configures a 0.2 instance with `catalogue` now (making it if needed), so that its
    /// interests hold from its first request; a failure discards the instance (the next call
    /// tries again). Nothing for 0.1.
    pub fn prepare(&self, catalogue: &Catalogue) {
        if !self.contract().stateful() || self.is_quarantined() {
            return;
        }
        let Some(&hook) = self.hooks().first() else {
            return;
        };
        let mut slot = lock(&self.stateful);
        let warm = match self.stateful_instance(&mut slot) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(policy = %self.name, "cannot instantiate: {e:#}");
                return;
            }
        };
        if let Err(e) = self.configure(warm, hook, catalogue) {
            *slot = None;
            self.discarded(&e);
        }
    }

    /// Throws away its 0.2 instance and any events not yet told, so that the next call starts
    /// from a fresh one, as after a reload: a replay is one host's life, and must not inherit
    /// what an earlier replay taught. Not a reset of the counters; nothing for 0.1.
    pub fn start_afresh(&self) {
        if !self.contract().stateful() {
            return;
        }
        *lock(&self.stateful) = None;
        lock(&self.inbox).pending.clear();
    }

    /// Queues `event` for the policy if it observes; past [`MAX_PENDING_EVENTS`] it is dropped
    /// and counted, never waited for.
    pub fn enqueue(&self, event: &Event) {
        if !self.observes() {
            return;
        }
        let mut inbox = lock(&self.inbox);
        if inbox.pending.len() >= MAX_PENDING_EVENTS {
            inbox.dropped += 1;
        } else {
            inbox.pending.push_back(event.clone());
        }
    }

    /// Its events: told, dropped (the policy too slow, or a failed batch) and waiting.
    pub fn event_counts(&self) -> EventCounts {
        let inbox = lock(&self.inbox);
        EventCounts {
            delivered: inbox.delivered,
            dropped: inbox.dropped,
            pending: inbox.pending.len(),
        }
    }

    /// Tells the instance every pending event, in order, in batches of at most
    /// [`EVENT_BATCH`], each under the hook deadline. Returns how many it was told. A batch
    /// that fails is dropped (and counted) and discards the instance.
    pub fn deliver(&self, catalogue: &Catalogue) -> u64 {
        if !self.observes() || self.is_quarantined() {
            return 0;
        }
        let mut told = 0;
        loop {
            // The instance first: a batch taken is told before any other delivery takes the
            // next one, so events stay in order.
            let mut slot = lock(&self.stateful);
            let batch: Vec<Event> = {
                let mut inbox = lock(&self.inbox);
                let n = inbox.pending.len().min(EVENT_BATCH);
                inbox.pending.drain(..n).collect()
            };
            if batch.is_empty() {
                return told;
            }
            let n = batch.len() as u64;
            let lean: Vec<v2::types::Event> = batch
                .iter()
                .filter_map(|e| v2::event(e, catalogue, &self.name))
                .collect();
            match self.observe(&mut slot, &lean, catalogue) {
                Ok(()) => {
                    lock(&self.inbox).delivered += n;
                    told += n;
                }
                Err(()) => {
                    lock(&self.inbox).dropped += n;
                    return told;
                }
            }
        }
    }

    /// One `observe` call on the stateful instance; a failure discards it.
    fn observe(
        &self,
        slot: &mut Option<Warm>,
        events: &[v2::types::Event],
        catalogue: &Catalogue,
    ) -> Result<(), ()> {
        let warm = self.stateful_instance(slot).map_err(|e| {
            tracing::warn!(policy = %self.name, "cannot instantiate to observe: {e:#}");
        })?;
        let outcome = match self.hooks().first() {
            Some(&hook) => self
                .configure(warm, hook, catalogue)
                .map_err(|e| e.to_string()),
            None => Ok(()),
        }
        .and_then(|()| {
            let Warm { store, guest, .. } = &mut *warm;
            let Guest::V2(V2Guest {
                events: Some(g), ..
            }) = guest
            else {
                return Ok(());
            };
            store.set_epoch_deadline(self.engine.settings().deadline_ticks());
            g.call_observe(&mut *store, events).map_err(|e| {
                let f = self.failure(store, &e);
                format!("policy {} {f} in observe", self.name)
            })
        });
        outcome.map_err(|why| {
            *slot = None;
            tracing::warn!(policy = %self.name, "{why}");
            self.discarded_after("observe", why);
        })
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
        fn get<I, G>(
            hook: Option<Hook>,
            indices: &Option<I>,
            load: impl FnOnce(&I) -> wasmtime::Result<G>,
        ) -> Result<Option<G>, (Option<Hook>, wasmtime::Error)> {
            indices
                .as_ref()
                .map(load)
                .transpose()
                .map_err(|e| (hook, e))
        }
        let (evict, select, compress) = (
            Some(Hook::ChooseEviction),
            Some(Hook::SelectModel),
            Some(Hook::CompressContext),
        );
        let s = &mut store;
        let guest = match &self.exports {
            Exports::V1 {
                eviction,
                selection,
                compression,
            } => Guest::V1 {
                eviction: get(evict, eviction, |i| i.load(&mut *s, &instance))?,
                selection: get(select, selection, |i| i.load(&mut *s, &instance))?,
                compression: get(compress, compression, |i| i.load(&mut *s, &instance))?,
            },
            Exports::V2 {
                lifecycle,
                events,
                eviction,
                selection,
                compression,
            } => Guest::V2(V2Guest {
                lifecycle: get(None, lifecycle, |i| i.load(&mut *s, &instance))?,
                events: get(None, events, |i| i.load(&mut *s, &instance))?,
                eviction: get(evict, eviction, |i| instance.get_typed_func(&mut *s, i))?,
                selection: get(select, selection, |i| instance.get_typed_func(&mut *s, i))?,
                compression: get(compress, compression, |i| i.load(&mut *s, &instance))?,
                configured: None,
            }),
        };
        Ok(Warm {
            store,
            guest,
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
