//! `GET /metrics`: Prometheus text. Request counters and latencies are recorded as requests
//! finish; everything the scheduler and the policies already count (loads, evictions by who
//! decided, memory per device, hook calls, failures and latency) is read at scrape time, as
//! are the model-server protocol's gauges ([`super::model_server`]), which keep the names the
//! Gateway API Inference Extension reads; the host's own carry the prefix `modelyard_`.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::engine::{Hook, Hooks, LATENCY_BUCKETS_US};
use crate::scheduler::Scheduler;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub model: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

/// The host's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<ModelLabels, Histogram>,
    pub prompt_tokens: Family<ModelLabels, Counter>,
    pub compressed_tokens: Family<ModelLabels, Counter>,
}

impl Metrics {
    pub fn new(scheduler: Scheduler, kv: Arc<super::model_server::KvReadings>) -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(super::model_server::Gauges {
            scheduler: scheduler.clone(),
            kv,
        }));
        let registry = root.sub_registry_with_prefix("modelyard");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route, model and status",
            requests.clone(),
        );
        let latency = Family::<ModelLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.01, 2.0, 14))
        });
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to the end of its answer",
            latency.clone(),
        );
        let prompt_tokens = Family::<ModelLabels, Counter>::default();
        registry.register(
            "prompt_tokens",
            "Prompt tokens as the host counted them",
            prompt_tokens.clone(),
        );
        let compressed_tokens = Family::<ModelLabels, Counter>::default();
        registry.register(
            "compressed_tokens",
            "Prompt tokens removed by compress-context",
            compressed_tokens.clone(),
        );
        registry.register_collector(Box::new(Live { scheduler }));
        Self {
            registry: root,
            requests,
            latency,
            prompt_tokens,
            compressed_tokens,
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// What is read at scrape time.
#[derive(Debug)]
struct Live {
    scheduler: Scheduler,
}

fn family<L: EncodeLabelSet, M: prometheus_client::encoding::EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl IntoIterator<Item = (L, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in rows {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabels {
    device: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecidedLabels {
    decided_by: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    hook: String,
    policy: String,
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = self.scheduler.status();
        let by_model = |f: &dyn Fn(&crate::scheduler::ModelStatus) -> u64| {
            status
                .models
                .iter()
                .map(|m| {
                    (
                        ModelLabels {
                            model: m.id.clone(),
                        },
                        f(m),
                    )
                })
                .collect::<Vec<_>>()
        };
        family(
            &mut encoder,
            "model_loads",
            "Loads of each model",
            MetricType::Counter,
            by_model(&|m| u64::from(m.load_count))
                .into_iter()
                .map(|(l, v)| (l, ConstCounter::new(v))),
        )?;
        family(
            &mut encoder,
            "model_in_flight",
            "Requests in flight per model",
            MetricType::Gauge,
            by_model(&|m| u64::from(m.in_flight))
                .into_iter()
                .map(|(l, v)| (l, ConstGauge::new(v as i64))),
        )?;
        family(
            &mut encoder,
            "model_queued",
            "Requests waiting per model",
            MetricType::Gauge,
            by_model(&|m| u64::from(m.queued))
                .into_iter()
                .map(|(l, v)| (l, ConstGauge::new(v as i64))),
        )?;
        family(
            &mut encoder,
            "model_memory_bytes",
            "What each model counts against its device (0 when unloaded)",
            MetricType::Gauge,
            by_model(&|m| {
                if m.state == "unloaded" {
                    0
                } else {
                    m.size_bytes
                }
            })
            .into_iter()
            .map(|(l, v)| (l, ConstGauge::new(v as i64))),
        )?;
        family(
            &mut encoder,
            "evictions",
            "Models evicted, by who decided",
            MetricType::Counter,
            status.eviction.by.iter().map(|(k, v)| {
                (
                    DecidedLabels {
                        decided_by: k.clone(),
                    },
                    ConstCounter::new(*v),
                )
            }),
        )?;
        let devices = status.devices.iter().flat_map(|d| {
            [
                ("total", d.total_bytes),
                ("used", d.used_bytes),
                ("models", d.models_bytes),
                ("capacity", d.capacity_bytes),
            ]
            .map(|(kind, v)| {
                (
                    DeviceLabels {
                        device: d.name.clone(),
                        kind: kind.into(),
                    },
                    ConstGauge::new(v as i64),
                )
            })
        });
        family(
            &mut encoder,
            "device_memory_bytes",
            "Memory per device: total, used, held by models, capacity for models",
            MetricType::Gauge,
            devices,
        )?;
        encode_hooks(&mut encoder, self.scheduler.hooks())?;
        encode_experiments(&mut encoder, self.scheduler.hooks())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ArmLabels {
    hook: String,
    arm: String,
}

fn encode_experiments(
    encoder: &mut DescriptorEncoder,
    hooks: &Arc<Hooks>,
) -> Result<(), std::fmt::Error> {
    let reports: Vec<_> = Hook::ALL
        .into_iter()
        .filter_map(|h| hooks.experiment(h))
        .map(|e| e.report())
        .collect();
    let rows = |f: &dyn Fn(&crate::engine::experiment::ArmStats) -> u64| {
        reports
            .iter()
            .flat_map(|r| {
                [
                    ("incumbent", &r.incumbent_arm),
                    ("candidate", &r.candidate_arm),
                ]
                .map(|(arm, a)| {
                    (
                        ArmLabels {
                            hook: r.hook.into(),
                            arm: arm.into(),
                        },
                        ConstCounter::new(f(a)),
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    family(
        encoder,
        "experiment_requests",
        "Requests per experiment arm",
        MetricType::Counter,
        rows(&|a| a.requests),
    )?;
    family(
        encoder,
        "experiment_hook_calls",
        "Hook calls per experiment arm",
        MetricType::Counter,
        rows(&|a| a.hook_calls),
    )?;
    family(
        encoder,
        "experiment_fallbacks",
        "Fallback decisions per experiment arm",
        MetricType::Counter,
        rows(&|a| a.fallbacks),
    )?;
    family(
        encoder,
        "experiment_failures",
        "Failed hook calls per experiment arm",
        MetricType::Counter,
        rows(&|a| a.failures),
    )?;
    family(
        encoder,
        "experiment_loads",
        "Model loads caused per experiment arm",
        MetricType::Counter,
        rows(&|a| a.loads),
    )
}

fn encode_hooks(
    encoder: &mut DescriptorEncoder,
    hooks: &Arc<Hooks>,
) -> Result<(), std::fmt::Error> {
    use std::sync::atomic::Ordering::Relaxed;
    let served: Vec<_> = Hook::ALL
        .into_iter()
        .filter_map(|h| hooks.get(h).map(|p| (h, p)))
        .collect();
    let labels = |h: Hook, p: &crate::engine::Policy| HookLabels {
        hook: h.name().into(),
        policy: p.name().into(),
    };
    family(
        encoder,
        "hook_calls",
        "Hook calls made to each policy",
        MetricType::Counter,
        served.iter().map(|(h, p)| {
            (
                labels(*h, p),
                ConstCounter::new(p.stats(*h).calls.load(Relaxed)),
            )
        }),
    )?;
    family(
        encoder,
        "hook_failures",
        "Hook calls that failed (trap, deadline, memory, invalid answer)",
        MetricType::Counter,
        served.iter().map(|(h, p)| {
            (
                labels(*h, p),
                ConstCounter::new(p.stats(*h).failures.load(Relaxed)),
            )
        }),
    )?;
    let mut metric = encoder.encode_descriptor(
        "hook_duration_seconds",
        "Time spent in the guest per hook call",
        None,
        MetricType::Histogram,
    )?;
    for (h, p) in &served {
        let s = p.stats(*h);
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_US
            .iter()
            .zip(&s.latency_buckets)
            .map(|(b, c)| (*b as f64 / 1e6, c.load(Relaxed)))
            .collect();
        buckets.push((
            f64::INFINITY,
            s.latency_buckets[LATENCY_BUCKETS_US.len()].load(Relaxed),
        ));
        let count = buckets.iter().map(|(_, c)| c).sum();
        let sum = s.latency_sum_us.load(Relaxed) as f64 / 1e6;
        let l = labels(*h, p);
        metric
            .encode_family(&l)?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                sum, count, &buckets, None,
            )?;
    }
    Ok(())
}
