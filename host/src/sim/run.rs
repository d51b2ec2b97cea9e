//! One replay: a trace through the real [`Scheduler`] and a real wasm eviction policy, on
//! tokio's paused clock (time jumps to the next timer whenever every task waits, so a day of
//! traffic replays in seconds), with simulated backends that take the catalogue's load time to
//! start and record every load and stop.

use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures_util::future::BoxFuture;
use rustc_hash::FxHashMap;
use serde::Serialize;
use tokio::time::Instant;

use super::catalogue::Catalogue;
use super::oracle::Oracle;
use super::trace::Trace;
use crate::backend::{BackendError, Endpoint, Instance, Launcher};
use crate::config::{BackendSettings, CPU_DEVICE, DeviceBudget, ModelSettings, Settings};
use crate::engine::{Hook, Hooks, Policy};
use crate::scheduler::{Demand, Lease, SchedError, Scheduler, SchedulerOptions};
use crate::telemetry::{DeviceUsage, Snapshot, Telemetry};

/// A model reloaded within this long of its eviction counts as thrash.
pub const THRASH_WINDOW: Duration = Duration::from_secs(60);

/// What one policy did with one trace at one memory size.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Metrics {
    pub requests: u64,
    pub served: u64,
    /// Requests that got no answer: `timed_out` + `refused`.
    pub failed: u64,
    /// Requests that waited the whole queue timeout and then failed.
    pub timed_out: u64,
    /// Requests turned away without waiting it out: refused early (their wait would pass the
    /// queue timeout), rejected, or failed loads.
    pub refused: u64,
    /// Time to first token of served requests (queue, load and prefill), in milliseconds.
    pub ttft_p50_ms: u64,
    pub ttft_p99_ms: u64,
    pub ttft_max_ms: u64,
    /// Served requests whose model was ready when they arrived.
    pub hits: u64,
    pub loads: u64,
    pub bytes_loaded: u64,
    /// The swap cost: seconds spent loading, summed over loads.
    pub load_seconds: f64,
    pub evictions: u64,
    /// Loads of a model within [`THRASH_WINDOW`] of its eviction.
    pub thrash: u64,
    /// Wait added to served requests (arrival to ready), in milliseconds.
    pub wait_p50_ms: u64,
    pub wait_p99_ms: u64,
    pub wait_mean_ms: f64,
    /// `choose-eviction` calls, and those the native default answered for a failing policy.
    pub decisions: u64,
    pub fallbacks: u64,
    /// Real time the replay took.
    pub wall_seconds: f64,
    /// The models of the served requests, in the order they were served (after their waits).
    #[serde(skip)]
    pub served_order: Vec<Arc<str>>,
    /// Every served request's time to first token in milliseconds, sorted.
    #[serde(skip)]
    pub ttfts_ms: Vec<u32>,
}

impl Metrics {
    /// Served requests whose first token came within `slo`.
    pub fn goodput(&self, slo: Duration) -> u64 {
        let slo = u32::try_from(slo.as_millis()).unwrap_or(u32::MAX);
        self.ttfts_ms.partition_point(|&t| t <= slo) as u64
    }

    pub fn hit_rate(&self) -> f64 {
        if self.served == 0 {
            0.0
        } else {
            self.hits as f64 / self.served as f64
        }
    }
}

#[derive(Debug, Default)]
struct SwapLog {
    loads: u64,
    bytes: u64,
    load_seconds: f64,
    thrash: u64,
    stopped_at: HashMap<String, Instant>,
}

/// Backends that cost only virtual time: a start sleeps the model's load time.
#[derive(Debug)]
struct SimLauncher {
    log: Arc<Mutex<SwapLog>>,
}

#[derive(Debug)]
struct SimInstance {
    endpoint: Endpoint,
    log: Arc<Mutex<SwapLog>>,
}

fn lock(log: &Mutex<SwapLog>) -> std::sync::MutexGuard<'_, SwapLog> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

impl Launcher for SimLauncher {
    fn start(
        &self,
        model: &ModelSettings,
    ) -> BoxFuture<'static, Result<Arc<dyn Instance>, BackendError>> {
        let id = model.id.clone();
        let found = match model.backend {
            BackendSettings::Simulated { load_time } => Some((load_time, model.size.unwrap_or(0))),
            _ => None,
        };
        let log = self.log.clone();
        Box::pin(async move {
            let Some((load, size)) = found else {
                return Err(BackendError::Spawn {
                    program: "simulated".into(),
                    reason: format!("{id} is not a simulated model"),
                });
            };
            {
                let mut l = lock(&log);
                l.loads += 1;
                l.bytes += size;
                l.load_seconds += load.as_secs_f64();
                if l.stopped_at
                    .get(&id)
                    .is_some_and(|t| t.elapsed() <= THRASH_WINDOW)
                {
                    l.thrash += 1;
                }
            }
            tokio::time::sleep(load).await;
            Ok(Arc::new(SimInstance {
                endpoint: Endpoint {
                    api_base: "sim://".into(),
                    api_key: None,
                    model_name: id,
                },
                log,
            }) as Arc<dyn Instance>)
        })
    }
}

impl Instance for SimInstance {
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
    fn pid(&self) -> Option<u32> {
        None
    }
    fn stop(&self) -> BoxFuture<'_, ()> {
        lock(&self.log)
            .stopped_at
            .insert(self.endpoint.model_name.clone(), Instant::now());
        Box::pin(async {})
    }
    fn exited(&self) -> Option<BoxFuture<'static, String>> {
        None
    }
}

/// The host settings a replay runs on: every catalogue model on one device of `memory` bytes,
/// queues deep enough that only the timeout turns a request away.
fn settings(catalogue: &Catalogue, memory: u64) -> Settings {
    let mut settings = Settings::default();
    // Every request waits as long as it must: the replay measures waiting, it does not refuse.
    settings.scheduler.max_queue = u32::MAX;
    settings.memory.pressure = 1.0;
    settings.memory.devices.insert(
        CPU_DEVICE.to_string(),
        DeviceBudget {
            budget: Some(memory),
            reserve: 0,
            max_loaded: None,
        },
    );
    settings.models = catalogue
        .models
        .values()
        .map(|m| ModelSettings {
            size: Some(m.size),
            pinned: m.pinned,
            priority: m.priority,
            tags: m.tags.clone(),
            parallel: m.parallel,
            ..ModelSettings::new(
                &m.id,
                BackendSettings::Simulated {
                    load_time: catalogue.load_time(m),
                },
            )
        })
        .collect();
    settings
}

/// What answers `choose-eviction` in a replay.
#[derive(Debug, Clone)]
pub enum Chooser {
    Policy(Arc<Policy>),
    /// The oracle, which reads the trace's future ([`super::oracle`]).
    Oracle,
}

/// Replays `trace` with `policy` serving `choose-eviction` on a device of `memory` bytes.
pub fn replay(
    trace: &Trace,
    catalogue: &Catalogue,
    memory: u64,
    policy: Arc<Policy>,
) -> anyhow::Result<Metrics> {
    replay_with(trace, catalogue, memory, Chooser::Policy(policy))
}

/// Replays `trace` with `chooser` deciding evictions on a device of `memory` bytes.
pub fn replay_with(
    trace: &Trace,
    catalogue: &Catalogue,
    memory: u64,
    chooser: Chooser,
) -> anyhow::Result<Metrics> {
    let wall = std::time::Instant::now();
    let settings = Arc::new(settings(catalogue, memory));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    let mut metrics = rt.block_on(async {
        let hooks = Arc::new(Hooks::new());
        match chooser {
            Chooser::Policy(policy) => {
                // Each replay is a host of its own: a stateful policy starts it fresh.
                policy.start_afresh();
                hooks.set(Hook::ChooseEviction, Some(policy));
            }
            Chooser::Oracle => {
                hooks.set_native_eviction(Some(Arc::new(Oracle::new(trace, catalogue))));
            }
        }
        let log = Arc::new(Mutex::new(SwapLog::default()));
        let launcher = SimLauncher { log: log.clone() };
        let telemetry = Telemetry::fixed(Snapshot {
            devices: vec![DeviceUsage {
                name: CPU_DEVICE.to_string(),
                product: "simulated".into(),
                total_bytes: memory,
                used_bytes: 0,
                free_bytes: memory,
                utilization_percent: None,
            }],
            cpu_percent: 0.0,
        })?;
        let sched = Scheduler::with_telemetry(
            settings,
            hooks,
            Arc::new(launcher),
            telemetry,
            SchedulerOptions::simulated(),
        )?;
        let outcomes: Arc<Mutex<Outcomes>> = Arc::default();
        let observed = sched.hooks().observed();
        let start = Instant::now();
        // Requests whose model was ready take their lease at once and wait here, ordered by
        // when they finish; only those that queue get a task of their own.
        let mut serving: BinaryHeap<Serving> = BinaryHeap::new();
        // Each queued request's task holds a sender; the replay ends when all are dropped.
        let (queued, mut all_served) = tokio::sync::mpsc::channel::<()>(1);
        // One demand per (priority, task) the trace names: most traces name one. Looked up
        // once an arrival: FxHash, as the keys come from the trace, not from a client.
        let mut demands: FxHashMap<(i32, Option<&str>), Arc<Demand>> = FxHashMap::default();
        let mut names: FxHashMap<&str, Arc<str>> = FxHashMap::default();
        let mut seq = 0u64;
        for a in &trace.arrivals {
            let at = start + Duration::from_millis(a.t_ms);
            finish(&mut serving, Some(at)).await;
            if Instant::now() < at {
                tokio::time::sleep_until(at).await;
            }
            let demand = if observed {
                // A policy that observes is told each request's prompt.
                Arc::new(Demand {
                    priority: a.priority,
                    task: a.task.clone(),
                    key: String::new(),
                    prompt_tokens: a.prompt_tokens,
                })
            } else {
                demands
                    .entry((a.priority, a.task.as_deref()))
                    .or_insert_with(|| {
                        Arc::new(Demand {
                            priority: a.priority,
                            task: a.task.clone(),
                            ..Demand::default()
                        })
                    })
                    .clone()
            };
            let (sched, outcomes) = (sched.clone(), outcomes.clone());
            let model = names
                .entry(a.model.as_str())
                .or_insert_with(|| Arc::from(a.model.as_str()))
                .clone();
            let service = catalogue.service_time(a);
            let first_token = catalogue.first_token_time(a);
            let mut request = Box::pin(async move {
                let arrived = Instant::now();
                let lease = sched.acquire(&model, &demand).await;
                let waited = arrived.elapsed();
                let mut o = outcomes.lock().unwrap_or_else(|e| e.into_inner());
                match lease {
                    Ok(mut l) => {
                        l.first_token_at(Instant::now() + first_token);
                        o.served_order.push(model);
                        o.waits_ms.push(millis(waited));
                        o.ttfts_ms.push(millis(waited + first_token));
                        o.hits += u64::from(l.ready_on_arrival);
                        Some(l)
                    }
                    Err(e) => {
                        match e {
                            SchedError::Timeout { .. } => o.timed_out += 1,
                            _ => o.refused += 1,
                        }
                        tracing::debug!(error = %e, "simulated request failed");
                        None
                    }
                }
            });
            // One look now: a ready model answers without a task; the request's wakers are
            // registered again when its task first polls it.
            let mut look = std::task::Context::from_waker(std::task::Waker::noop());
            match request.as_mut().poll(&mut look) {
                Poll::Ready(Some(lease)) => {
                    seq += 1;
                    serving.push(Serving {
                        until: Instant::now() + service,
                        seq,
                        _lease: lease,
                    });
                }
                Poll::Ready(None) => {}
                Poll::Pending => {
                    let queued = queued.clone();
                    tokio::spawn(async move {
                        if let Some(lease) = request.await {
                            tokio::time::sleep(service).await;
                            drop(lease);
                        }
                        drop(queued);
                    });
                }
            }
        }
        finish(&mut serving, None).await;
        drop(queued);
        let _ = all_served.recv().await;
        let status = sched.status();
        sched.shutdown().await;
        let mut o = std::mem::take(&mut *outcomes.lock().unwrap_or_else(|e| e.into_inner()));
        let log = lock(&log);
        o.waits_ms.sort_unstable();
        o.ttfts_ms.sort_unstable();
        let served = o.waits_ms.len() as u64;
        anyhow::Ok(Metrics {
            requests: trace.arrivals.len() as u64,
            served,
            failed: o.timed_out + o.refused,
            timed_out: o.timed_out,
            refused: o.refused,
            ttft_p50_ms: percentile(&o.ttfts_ms, 50),
            ttft_p99_ms: percentile(&o.ttfts_ms, 99),
            ttft_max_ms: o.ttfts_ms.last().map_or(0, |&t| u64::from(t)),
            hits: o.hits,
            loads: log.loads,
            bytes_loaded: log.bytes,
            load_seconds: log.load_seconds,
            evictions: status.eviction.evictions,
            thrash: log.thrash,
            wait_p50_ms: percentile(&o.waits_ms, 50),
            wait_p99_ms: percentile(&o.waits_ms, 99),
            wait_mean_ms: if served == 0 {
                0.0
            } else {
                o.waits_ms.iter().map(|&w| f64::from(w)).sum::<f64>() / served as f64
            },
            decisions: status.eviction.decisions,
            fallbacks: status.eviction.fallbacks,
            wall_seconds: 0.0,
            served_order: std::mem::take(&mut o.served_order),
            ttfts_ms: std::mem::take(&mut o.ttfts_ms),
        })
    })?;
    metrics.wall_seconds = wall.elapsed().as_secs_f64();
    Ok(metrics)
}

/// A request being served: its lease is dropped at `until`.
struct Serving {
    until: Instant,
    /// Arrival order, so that requests finishing together finish in it.
    seq: u64,
    /// Held, so the model stays leased, until `until`.
    _lease: Lease,
}

impl PartialEq for Serving {
    fn eq(&self, other: &Self) -> bool {
        (self.until, self.seq) == (other.until, other.seq)
    }
}

impl Eq for Serving {}

impl PartialOrd for Serving {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Serving {
    /// Reversed, so that [`BinaryHeap`] pops the earliest first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.until, other.seq).cmp(&(self.until, self.seq))
    }
}

/// Ends, each at its time, the requests being served that finish before `until` (all of them
/// for `None`).
async fn finish(serving: &mut BinaryHeap<Serving>, until: Option<Instant>) {
    while let Some(next) = serving.peek().map(|s| s.until) {
        if until.is_some_and(|u| next >= u) {
            break;
        }
        if Instant::now() < next {
            tokio::time::sleep_until(next).await;
        }
        while serving.peek().is_some_and(|s| s.until <= next) {
            serving.pop();
        }
    }
}

#[derive(Debug, Default)]
struct Outcomes {
    waits_ms: Vec<u32>,
    ttfts_ms: Vec<u32>,
    served_order: Vec<Arc<str>>,
    hits: u64,
    timed_out: u64,
    refused: u64,
}

/// The value at percentile `p` of `sorted`, 0 when empty.
fn percentile(sorted: &[u32], p: usize) -> u64 {
    sorted
        .get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1)))
        .map_or(0, |&v| u64::from(v))
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}
