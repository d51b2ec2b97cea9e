//! The fleet as the picker last read it: every host's [`Seen`], and the (model, host) pairs a
//! policy chooses among. Each pair is a model record to `select-model`, named `MODEL@HOST`
//! (HOST is the endpoint's name) with the model's id and aliases as its aliases and the host as
//! its device; the pairs' catalogue is handed to the policy again only when the hosts' models
//! change, not on every read. A read ranks its pairs and builds their records once, so that the
//! requests decided on it until the next read build nothing per pair.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use super::endpoints::Endpoint;
use super::hosts::{self, HostModel, HostView, Seen};
use crate::engine::types::{Device, Model, ModelState, Telemetry};
use crate::engine::{Catalogue, Hooks, ModelInfo};

/// How often the hosts are read: the EPP's default metrics refresh.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_millis(50);

/// A model of an up host.
#[derive(Debug, Clone)]
pub struct Pair {
    /// `MODEL@HOST`.
    pub id: String,
    /// The host's index in [`Snapshot::hosts`].
    pub host: usize,
    /// The model's index in that host's models.
    pub model: usize,
}

/// One read of every host.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// In the endpoints file's order.
    pub hosts: Vec<Seen>,
    /// Every model of every up host, host by host.
    pub pairs: Vec<Pair>,
    /// The pairs' indices, best first ([`rank`]).
    pub ranked: Vec<usize>,
    /// Each pair's record, in the `ranked` order.
    pub records: Vec<Model>,
    /// Each host as one device.
    pub telemetry: Telemetry,
    pub read_at: Instant,
}

impl Snapshot {
    /// The view of the host a pair is on, and its model there.
    pub fn pair(&self, p: &Pair) -> (&HostView, &HostModel) {
        match &self.hosts[p.host] {
            Seen::Up(view) => (view, &view.models[p.model]),
            // Pairs are built from up hosts only.
            Seen::Down { .. } => unreachable!("a pair on a host that is down"),
        }
    }

    /// The snapshot of `hosts`, with their pairs ranked and their records built.
    pub fn of(hosts: Vec<Seen>) -> Self {
        let pairs: Vec<Pair> = hosts
            .iter()
            .enumerate()
            .filter_map(|(h, seen)| match seen {
                Seen::Up(view) => Some((h, view)),
                Seen::Down { .. } => None,
            })
            .flat_map(|(h, view)| {
                view.models.iter().enumerate().map(move |(m, model)| Pair {
                    id: pair_id(&model.id, &view.endpoint.name),
                    host: h,
                    model: m,
                })
            })
            .collect();
        let mut snapshot = Self {
            telemetry: telemetry(&hosts),
            hosts,
            pairs,
            ranked: Vec::new(),
            records: Vec::new(),
            read_at: Instant::now(),
        };
        let mut ranked: Vec<(usize, Rank)> = (0..snapshot.pairs.len())
            .map(|i| {
                let (view, model) = snapshot.pair(&snapshot.pairs[i]);
                (i, rank(view, model))
            })
            .collect();
        ranked.sort_by_key(|(_, r)| *r);
        snapshot.ranked = ranked.into_iter().map(|(i, _)| i).collect();
        snapshot.records = snapshot
            .ranked
            .iter()
            .map(|&i| record(&snapshot, &snapshot.pairs[i]))
            .collect();
        snapshot
    }

    /// The catalogue of its pairs: each pair's id, its model's id and aliases as aliases, its
    /// model's tags; the devices are the hosts, in the file's order.
    pub fn catalogue(&self) -> Catalogue {
        let models = self
            .pairs
            .iter()
            .map(|p| {
                let (_, m) = self.pair(p);
                let mut aliases = Vec::with_capacity(m.aliases.len() + 1);
                aliases.push(m.id.clone());
                aliases.extend(m.aliases.iter().cloned());
                ModelInfo {
                    id: p.id.clone(),
                    aliases,
                    tags: m.tags.clone(),
                    context_tokens: 0,
                    parallel: m.parallel,
                }
            })
            .collect();
        let devices = self
            .hosts
            .iter()
            .map(|s| s.endpoint().name.clone())
            .collect();
        Catalogue::new(models, devices)
    }
}

/// A pair's place in the picker's order: lower is better. First the class: the model ready
/// with a free slot, ready, loading, fitting its host's free memory, the rest, failed; then the
/// requests waiting for it and at its host, those running there, and the host's KV-cache use.
pub type Rank = (u8, u64, u64, u64);

pub fn rank(view: &HostView, m: &HostModel) -> Rank {
    let class = match m.state {
        ModelState::Ready if m.in_flight < m.parallel.max(1) => 0,
        ModelState::Ready => 1,
        ModelState::Loading => 2,
        ModelState::Failed => 5,
        _ if view.free_on(&m.device) >= m.size_bytes => 3,
        _ => 4,
    };
    let g = &view.gauges;
    (
        class,
        u64::from(m.queued) + g.waiting as u64,
        g.running as u64,
        (g.kv_cache * 1000.0) as u64,
    )
}

/// A pair as `select-model` sees it: its model on its host, the host as its device. The
/// hosts' clocks are not the picker's: the `*-ms` times are left at 0.
fn record(snapshot: &Snapshot, p: &Pair) -> Model {
    let (view, m) = snapshot.pair(p);
    let mut aliases = Vec::with_capacity(m.aliases.len() + 1);
    aliases.push(m.id.clone());
    aliases.extend(m.aliases.iter().cloned());
    Model {
        id: p.id.clone(),
        aliases,
        state: m.state,
        device: view.endpoint.name.clone(),
        size_bytes: m.size_bytes,
        size_measured: m.size_measured,
        context_tokens: 0,
        tags: m.tags.clone(),
        priority: m.priority,
        pinned: m.pinned,
        last_used_ms: 0,
        loaded_at_ms: 0,
        use_count: m.use_count,
        load_count: m.load_count,
        in_flight: m.in_flight,
        queued: m.queued,
        errors: m.errors,
        mean_load_ms: m.mean_load_ms,
        mean_latency_ms: m.mean_latency_ms,
    }
}

/// Each host as one device: its devices' budgets and free bytes summed (0 for one that is
/// down).
fn telemetry(hosts: &[Seen]) -> Telemetry {
    let devices = hosts
        .iter()
        .map(|s| {
            let (total_bytes, free_bytes) = match s {
                Seen::Up(v) => (
                    v.devices.iter().map(|d| d.total_bytes).sum(),
                    v.devices.iter().map(|d| d.free_bytes).sum(),
                ),
                Seen::Down { .. } => (0, 0),
            };
            Device {
                name: s.endpoint().name.clone(),
                total_bytes,
                free_bytes,
                utilization_percent: None,
            }
        })
        .collect();
    Telemetry {
        now_ms: 0,
        devices,
        cpu_percent: 0.0,
    }
}

/// A pair's id: the model's id and the host's name.
pub fn pair_id(model: &str, host: &str) -> String {
    format!("{model}@{host}")
}

/// The picker's shared view, replaced whole on each read.
pub struct Fleet {
    endpoints: RwLock<Vec<Endpoint>>,
    current: RwLock<Option<Arc<Snapshot>>>,
    hooks: Arc<Hooks>,
    /// The catalogue last handed to the hooks, to hand it again only on a change.
    configured: RwLock<Option<(Vec<ModelInfo>, Vec<String>)>>,
}

impl Fleet {
    pub fn new(endpoints: Vec<Endpoint>, hooks: Arc<Hooks>) -> Self {
        Self {
            endpoints: RwLock::new(endpoints),
            current: RwLock::new(None),
            hooks,
            configured: RwLock::new(None),
        }
    }

    pub fn hooks(&self) -> &Arc<Hooks> {
        &self.hooks
    }

    /// The last read, or `None` before the first.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.endpoints.read().map(|e| e.clone()).unwrap_or_default()
    }

    /// Replaces the hosts read from now on (a changed endpoints file).
    pub fn set_endpoints(&self, endpoints: Vec<Endpoint>) {
        if let Ok(mut e) = self.endpoints.write() {
            *e = endpoints;
        }
    }

    /// Takes a new read of the hosts; the policy is configured again when their models changed.
    pub fn update(&self, hosts: Vec<Seen>) {
        let snapshot = Snapshot::of(hosts);
        let catalogue = snapshot.catalogue();
        let key = (catalogue.models().to_vec(), catalogue.devices().to_vec());
        let changed = self
            .configured
            .read()
            .map(|c| c.as_ref() != Some(&key))
            .unwrap_or(true);
        if changed {
            self.hooks.set_catalogue(catalogue);
            if let Ok(mut c) = self.configured.write() {
                *c = Some(key);
            }
        }
        if let Ok(mut c) = self.current.write() {
            *c = Some(Arc::new(snapshot));
        }
    }
}

/// The hosts' reads over time: each host is read on its own, so that one slow to answer (up to
/// [`hosts::SCRAPE_TIMEOUT`]) holds back neither the others' reads nor the fleet's updates; it
/// keeps its last read until its next one ends.
#[derive(Default)]
pub struct Reads {
    last: std::collections::HashMap<std::net::SocketAddrV4, Seen>,
    pending: std::collections::HashMap<std::net::SocketAddrV4, tokio::task::JoinHandle<Seen>>,
}

impl Reads {
    /// Starts a read of every host that has none under way, takes the reads that ended, and
    /// gives the fleet every host's latest: `None` until each host was read once.
    pub fn tick(
        &mut self,
        http: &reqwest::Client,
        endpoints: &[Endpoint],
        admin_key: Option<&str>,
    ) -> Option<Vec<Seen>> {
        let ended: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, h)| h.is_finished())
            .map(|(a, _)| *a)
            .collect();
        for addr in ended {
            if let Some(handle) = self.pending.remove(&addr)
                && let Some(Ok(seen)) = futures_util::FutureExt::now_or_never(handle)
            {
                self.last.insert(addr, seen);
            }
        }
        for ep in endpoints {
            if let std::collections::hash_map::Entry::Vacant(slot) = self.pending.entry(ep.addr) {
                let (http, ep, key) = (http.clone(), ep.clone(), admin_key.map(String::from));
                slot.insert(tokio::spawn(async move {
                    hosts::look_one(&http, &ep, key.as_deref()).await
                }));
            }
        }
        // A host taken out of the file is forgotten.
        self.last
            .retain(|a, _| endpoints.iter().any(|e| e.addr == *a));
        endpoints
            .iter()
            .map(|ep| {
                self.last.get(&ep.addr).map(|s| match s {
                    // Its name and labels as the file says now.
                    Seen::Up(v) => Seen::Up(HostView {
                        endpoint: ep.clone(),
                        ..v.clone()
                    }),
                    Seen::Down { why, .. } => Seen::Down {
                        endpoint: ep.clone(),
                        why: why.clone(),
                    },
                })
            })
            .collect()
    }
}
