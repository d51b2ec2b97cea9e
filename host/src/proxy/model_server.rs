//! The model-server protocol of the Kubernetes Gateway API Inference Extension, on `/metrics`:
//! the gauges its endpoint picker (the EPP, which llm-d's router runs) scrapes from every model
//! server, under the names its default mapping reads (vLLM's), one series each for the whole
//! host, so that a modelyard host is one model server among others behind it.
//!
//! Where each name comes from: the protocol is
//! `docs/proposals/003-model-server-protocol/README.md` of
//! `kubernetes-sigs/gateway-api-inference-extension`; the names are the defaults of its EPP's
//! metrics extractor (`--total-queued-requests-metric`, `--total-running-requests-metric`,
//! `--kv-cache-usage-percentage-metric`, `--lora-info-metric`), which are vLLM's. The
//! extractor keeps one series per name (the one with the latest timestamp, or for the LoRA
//! info the largest value), so every gauge here is a single series for the host:
//!
//! | protocol | name | here |
//! |---|---|---|
//! | TotalQueuedRequests | `vllm:num_requests_waiting` | requests waiting at the host, summed over its models |
//! | TotalRunningRequests | `vllm:num_requests_running` | requests in flight, summed over its models |
//! | KVCacheUtilization | `vllm:kv_cache_usage_perc` (and `vllm:gpu_cache_usage_perc`, the name older EPPs read) | the fullest ready model's, 0 to 1 ([`kv_usage`]) |
//! | LoRA adapter info | `vllm:lora_requests_info` | its labels name the host's models: `running_lora_adapters` the ready ones, `waiting_lora_adapters` those loading or with requests waiting for a load, `max_lora` how many can be ready at once without an eviction ([`max_models`]); its value is the scrape's Unix time |
//!
//! With the LoRA info, the EPP's LoRA-affinity scorer sends a request to a host that has its
//! model ready (or loading), else to one with room for it, as it does for vLLM's adapters.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use tokio::time::Instant;

use crate::scheduler::{ModelStatus, Scheduler, Status};

/// The protocol's names, as the EPP's default mapping reads them (vLLM's).
pub const WAITING: &str = "vllm:num_requests_waiting";
pub const RUNNING: &str = "vllm:num_requests_running";
pub const KV_CACHE: &str = "vllm:kv_cache_usage_perc";
/// [`KV_CACHE`]'s name before vLLM renamed it, which older EPPs read.
pub const KV_CACHE_OLD: &str = "vllm:gpu_cache_usage_perc";
pub const LORA_INFO: &str = "vllm:lora_requests_info";
/// [`LORA_INFO`]'s labels (the fields of its label set below).
pub const LORA_RUNNING: &str = "running_lora_adapters";
pub const LORA_WAITING: &str = "waiting_lora_adapters";
pub const LORA_MAX: &str = "max_lora";

/// How long a reading of the model servers' own KV-cache gauges stays fresh: the EPP scrapes
/// every 50 ms by default, the servers are asked at most this often.
pub const KV_REFRESH: Duration = Duration::from_secs(1);
/// How long a model server's `/metrics` may take before it counts as reporting nothing.
const KV_TIMEOUT: Duration = Duration::from_millis(250);

/// The KV-cache gauges model servers report on their own `/metrics`, as a fraction: vLLM's
/// (both its names) and llama.cpp's (which newer llama-server builds no longer report).
const KV_GAUGES: [&str; 3] = [KV_CACHE, KV_CACHE_OLD, "llamacpp:kv_cache_usage_ratio"];

/// What the ready models' servers last said of their KV cache, by model id.
#[derive(Debug, Default)]
pub struct KvReadings {
    last: Mutex<Option<(Instant, HashMap<String, f64>)>>,
}

impl KvReadings {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, HashMap<String, f64>)>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn current(&self) -> HashMap<String, f64> {
        self.lock()
            .as_ref()
            .map(|(_, r)| r.clone())
            .unwrap_or_default()
    }

    /// Asks every ready model's server for its KV-cache gauge, unless the last reading is
    /// younger than [`KV_REFRESH`]. A server without one, or too slow, reports nothing.
    pub async fn refresh(&self, scheduler: &Scheduler, http: &reqwest::Client) {
        if self
            .lock()
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < KV_REFRESH)
        {
            return;
        }
        let asks = scheduler
            .status()
            .models
            .into_iter()
            .filter(|m| m.state == "ready")
            .filter_map(|m| Some((m.id, m.endpoint?)))
            .map(|(id, api_base)| async move {
                let root = api_base.strip_suffix("/v1").unwrap_or(&api_base);
                let text = http
                    .get(format!("{root}/metrics"))
                    .timeout(KV_TIMEOUT)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())?
                    .text()
                    .await
                    .ok()?;
                Some((id, kv_gauge(&text)?))
            });
        let readings = futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        *self.lock() = Some((Instant::now(), readings));
    }
}

/// One sample line of a Prometheus text exposition: its name, its labels' text (between the
/// braces, not parsed) and its value's text; `None` for a comment or a line that is no sample.
pub fn sample(line: &str) -> Option<(&str, &str, &str)> {
    if line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    match series.split_once('{') {
        Some((name, labels)) => Some((name, labels.strip_suffix('}')?, value)),
        None => Some((series, "", value)),
    }
}

/// The first of [`KV_GAUGES`] in a Prometheus text exposition, as a fraction in 0..=1.
fn kv_gauge(text: &str) -> Option<f64> {
    KV_GAUGES.iter().find_map(|want| {
        let (_, _, value) = text
            .lines()
            .filter_map(sample)
            .find(|(name, _, _)| name == want)?;
        let v: f64 = value.parse().ok()?;
        v.is_finite().then_some(v.clamp(0.0, 1.0))
    })
}

/// How full the host's KV caches are, for the EPP's KV-cache scorer: the fullest ready
/// model's, as its server reports it; a model whose server reports nothing counts the share
/// of its slots in use (each busy slot holds its part of the cache).
pub fn kv_usage(status: &Status, readings: &HashMap<String, f64>) -> f64 {
    status
        .models
        .iter()
        .filter(|m| m.state == "ready")
        .map(|m| {
            readings
                .get(&m.id)
                .copied()
                .unwrap_or_else(|| f64::from(m.in_flight) / f64::from(m.parallel.max(1)))
        })
        .fold(0.0, f64::max)
        .clamp(0.0, 1.0)
}

/// Whether a model is waiting for a load: loading now, or unloaded with requests queued for
/// it (they wait for room).
fn waiting(m: &ModelStatus) -> bool {
    m.state == "loading" || (m.state != "ready" && m.queued > 0)
}

/// How many models can be ready at once without an eviction: those ready or loading now, and
/// as many of the others, smallest first, as fit in each device's free room for models.
pub fn max_models(status: &Status) -> usize {
    let held = status
        .models
        .iter()
        .filter(|m| m.state == "ready" || m.state == "loading")
        .count();
    let mut free: HashMap<&str, u64> = status
        .devices
        .iter()
        .map(|d| {
            (
                d.name.as_str(),
                d.capacity_bytes.saturating_sub(d.models_bytes),
            )
        })
        .collect();
    let mut others: Vec<&ModelStatus> = status
        .models
        .iter()
        .filter(|m| m.state != "ready" && m.state != "loading")
        .collect();
    others.sort_by_key(|m| m.size_bytes);
    let fitting = others
        .into_iter()
        .filter(|m| match free.get_mut(m.device.as_str()) {
            Some(room) if *room >= m.size_bytes => {
                *room -= m.size_bytes;
                true
            }
            _ => false,
        })
        .count();
    held + fitting
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoraLabels {
    max_lora: String,
    running_lora_adapters: String,
    waiting_lora_adapters: String,
}

/// The protocol's gauges, read at scrape time (with the servers' KV readings of the last
/// [`KvReadings::refresh`]).
#[derive(Debug)]
pub struct Gauges {
    pub scheduler: Scheduler,
    pub kv: std::sync::Arc<KvReadings>,
}

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = self.scheduler.status();
        let sum = |f: fn(&ModelStatus) -> u32| -> i64 {
            status.models.iter().map(|m| i64::from(f(m))).sum()
        };
        gauge(
            &mut encoder,
            WAITING,
            "Requests waiting at the host, over all its models (the protocol's TotalQueuedRequests)",
            ConstGauge::new(sum(|m| m.queued)),
        )?;
        gauge(
            &mut encoder,
            RUNNING,
            "Requests in flight at the host, over all its models (TotalRunningRequests)",
            ConstGauge::new(sum(|m| m.in_flight)),
        )?;
        let kv = kv_usage(&status, &self.kv.current());
        for name in [KV_CACHE, KV_CACHE_OLD] {
            gauge(
                &mut encoder,
                name,
                "The fullest ready model's KV cache, 0 to 1 (KVCacheUtilization)",
                ConstGauge::new(kv),
            )?;
        }
        let names = |keep: &dyn Fn(&ModelStatus) -> bool| {
            status
                .models
                .iter()
                .filter(|m| keep(m))
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        let labels = LoraLabels {
            max_lora: max_models(&status).to_string(),
            running_lora_adapters: names(&|m| m.state == "ready"),
            waiting_lora_adapters: names(&waiting),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64().floor());
        let mut metric = encoder.encode_descriptor(
            LORA_INFO,
            "The host's models as LoRA adapters: running = ready, waiting = waiting for a load, max = how many can be ready at once; the value is when it was read",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(now).encode(metric.encode_family(&labels)?)
    }
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: ConstGauge<N>,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    value.encode(metric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_servers_kv_gauge_is_read_by_its_whole_name() {
        let vllm = "# TYPE vllm:kv_cache_usage_perc gauge\n\
                    vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.25\n";
        assert_eq!(kv_gauge(vllm), Some(0.25));
        assert_eq!(kv_gauge("vllm:gpu_cache_usage_perc 0.5\n"), Some(0.5));
        assert_eq!(kv_gauge("llamacpp:kv_cache_usage_ratio 1.7\n"), Some(1.0));
        assert_eq!(
            kv_gauge("vllm:kv_cache_usage_perc_total 0.9\nllamacpp:requests_processing 1\n"),
            None,
            "a longer name is another gauge"
        );
        assert_eq!(kv_gauge("llamacpp:kv_cache_usage_ratio NaN\n"), None);
    }
}
