//! What a picker knows of each host: its models as `/admin/models` lists them, and the
//! model-server protocol's gauges from its `/metrics` ([`crate::proxy::model_server`]), read
//! together, each host at once, within [`SCRAPE_TIMEOUT`]. A host that cannot be read is
//! [`Seen::Down`], with why.

use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::endpoints::Endpoint;
use crate::engine::types::ModelState;
use crate::proxy::model_server;
use crate::scheduler::state_of_name;

/// How long one host's two reads may take.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// A model on a host, as its `/admin/models` says (the fields a picker decides on).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HostModel {
    pub id: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// A state this version does not know reads as `unloaded`.
    #[serde(deserialize_with = "state")]
    pub state: ModelState,
    pub device: String,
    pub size_bytes: u64,
    #[serde(default)]
    pub tags: Vec<String>,
    pub parallel: u32,
    pub in_flight: u32,
    pub queued: u32,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub pinned: bool,
    #[serde(default)]
    pub size_measured: bool,
    #[serde(default)]
    pub use_count: u64,
    #[serde(default)]
    pub load_count: u32,
    #[serde(default)]
    pub errors: u32,
    #[serde(default)]
    pub mean_load_ms: u32,
    #[serde(default)]
    pub mean_latency_ms: u32,
}

fn state<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ModelState, D::Error> {
    let name = String::deserialize(d)?;
    Ok(state_of_name(&name).unwrap_or(ModelState::Unloaded))
}

/// A device of a host, as its `/admin/models` says.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HostDevice {
    pub name: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
    #[serde(default)]
    pub utilization_percent: Option<u8>,
}

#[derive(Debug, Deserialize)]
struct ModelsPage {
    models: Vec<HostModel>,
    #[serde(default)]
    devices: Vec<HostDevice>,
}

/// The protocol's gauges, as a host exposes them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gauges {
    /// `vllm:num_requests_waiting`.
    pub waiting: f64,
    /// `vllm:num_requests_running`.
    pub running: f64,
    /// `vllm:kv_cache_usage_perc`, 0 to 1.
    pub kv_cache: f64,
    /// `vllm:lora_requests_info`'s `running_lora_adapters`: the ready models.
    pub ready_models: Vec<String>,
    /// Its `waiting_lora_adapters`: the models waiting for a load.
    pub waiting_models: Vec<String>,
    /// Its `max_lora`: how many models can be ready at once without an eviction.
    pub max_models: usize,
}

/// One host as last read.
#[derive(Debug, Clone)]
pub struct HostView {
    pub endpoint: Endpoint,
    pub models: Vec<HostModel>,
    pub devices: Vec<HostDevice>,
    pub gauges: Gauges,
    pub read_at: Instant,
}

impl HostView {
    /// Bytes free on the device a model of this host lives on.
    pub fn free_on(&self, device: &str) -> u64 {
        self.devices
            .iter()
            .find(|d| d.name == device)
            .map_or(0, |d| d.free_bytes)
    }
}

/// What a look at a host found.
#[derive(Debug, Clone)]
pub enum Seen {
    Up(HostView),
    Down { endpoint: Endpoint, why: String },
}

impl Seen {
    pub fn endpoint(&self) -> &Endpoint {
        match self {
            Seen::Up(v) => &v.endpoint,
            Seen::Down { endpoint, .. } => endpoint,
        }
    }
}

/// Reads every host at once; `admin_key` is sent to `/admin/models` when the hosts have one.
pub async fn look(
    http: &reqwest::Client,
    endpoints: &[Endpoint],
    admin_key: Option<&str>,
) -> Vec<Seen> {
    let looks = endpoints.iter().map(|ep| look_one(http, ep, admin_key));
    futures_util::future::join_all(looks).await
}

/// Reads one host, within [`SCRAPE_TIMEOUT`].
pub async fn look_one(http: &reqwest::Client, ep: &Endpoint, admin_key: Option<&str>) -> Seen {
    match tokio::time::timeout(SCRAPE_TIMEOUT, read(http, ep, admin_key)).await {
        Ok(Ok(view)) => Seen::Up(view),
        Ok(Err(why)) => Seen::Down {
            endpoint: ep.clone(),
            why,
        },
        Err(_) => Seen::Down {
            endpoint: ep.clone(),
            why: format!("no answer within {SCRAPE_TIMEOUT:?}"),
        },
    }
}

async fn read(
    http: &reqwest::Client,
    ep: &Endpoint,
    admin_key: Option<&str>,
) -> Result<HostView, String> {
    let root = ep.url();
    let mut models = http.get(format!("{root}/admin/models"));
    if let Some(key) = admin_key {
        models = models.bearer_auth(key);
    }
    let (models, metrics) = tokio::join!(models.send(), http.get(format!("{root}/metrics")).send());
    let page = models
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("GET /admin/models: {e}"))?
        .json::<ModelsPage>()
        .await
        .map_err(|e| format!("GET /admin/models: {e}"))?;
    let text = metrics
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("GET /metrics: {e}"))?
        .text()
        .await
        .map_err(|e| format!("GET /metrics: {e}"))?;
    Ok(HostView {
        endpoint: ep.clone(),
        models: page.models,
        devices: page.devices,
        gauges: gauges(&text).map_err(|e| format!("GET /metrics: {e}"))?,
        read_at: Instant::now(),
    })
}

/// The protocol's gauges in a Prometheus text exposition; a missing one is an error (the
/// host is not a conformant model server, or not a modelyard host).
pub fn gauges(text: &str) -> Result<Gauges, String> {
    let mut g = Gauges::default();
    let mut seen = [false; 4];
    for (name, labels, value) in text.lines().filter_map(model_server::sample) {
        let number = || {
            value
                .parse::<f64>()
                .map_err(|_| format!("{name}: {value:?}"))
        };
        match name {
            model_server::WAITING => (g.waiting, seen[0]) = (number()?, true),
            model_server::RUNNING => (g.running, seen[1]) = (number()?, true),
            model_server::KV_CACHE => (g.kv_cache, seen[2]) = (number()?, true),
            model_server::LORA_INFO => {
                for (k, v) in label_pairs(labels)? {
                    let list = || {
                        v.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    };
                    match k.as_str() {
                        model_server::LORA_RUNNING => g.ready_models = list(),
                        model_server::LORA_WAITING => g.waiting_models = list(),
                        model_server::LORA_MAX => {
                            g.max_models = v.parse().map_err(|_| format!("max_lora {v:?}"))?;
                        }
                        _ => {}
                    }
                }
                seen[3] = true;
            }
            _ => {}
        }
    }
    let names = [
        model_server::WAITING,
        model_server::RUNNING,
        model_server::KV_CACHE,
        model_server::LORA_INFO,
    ];
    match names.iter().zip(seen).find(|(_, s)| !s) {
        Some((missing, _)) => Err(format!("no {missing}")),
        None => Ok(g),
    }
}

/// `key="value",…` with the text format's escapes (`\\`, `\"`, `\n`).
fn label_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once("=\"")
            .ok_or_else(|| format!("labels {text:?}"))?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("labels {text:?}")),
                },
                Some((_, c)) => value.push(c),
                None => return Err(format!("labels {text:?}")),
            }
        };
        out.push((key.trim().to_string(), value));
        rest = after[end + 1..].trim_start_matches(',').trim();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hosts_gauges_are_read() {
        let text = "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 3\n\
            vllm:num_requests_running 2\nvllm:kv_cache_usage_perc 0.5\n\
            vllm:gpu_cache_usage_perc 0.5\n\
            vllm:lora_requests_info{max_lora=\"3\",running_lora_adapters=\"a,b\",waiting_lora_adapters=\"c\"} 1.7e9\n\
            modelyard_model_loads_total{model=\"a\"} 1\n# EOF\n";
        assert_eq!(
            gauges(text),
            Ok(Gauges {
                waiting: 3.0,
                running: 2.0,
                kv_cache: 0.5,
                ready_models: vec!["a".into(), "b".into()],
                waiting_models: vec!["c".into()],
                max_models: 3,
            })
        );
    }

    #[test]
    fn a_server_without_the_protocol_is_refused_by_name() {
        let text = "vllm:num_requests_waiting 0\nvllm:num_requests_running 0\n";
        assert_eq!(gauges(text), Err("no vllm:kv_cache_usage_perc".into()));
    }

    #[test]
    fn a_models_state_is_read_by_name_and_an_unknown_one_as_unloaded() {
        let page: ModelsPage = serde_json::from_str(
            r#"{"models": [
                {"id": "a", "state": "ready", "device": "cpu", "size_bytes": 1, "parallel": 1,
                 "in_flight": 0, "queued": 0},
                {"id": "b", "state": "hibernating", "device": "cpu", "size_bytes": 1,
                 "parallel": 1, "in_flight": 0, "queued": 0}]}"#,
        )
        .expect("a page");
        let states: Vec<ModelState> = page.models.iter().map(|m| m.state).collect();
        assert_eq!(states, [ModelState::Ready, ModelState::Unloaded]);
        for s in [
            ModelState::Unloaded,
            ModelState::Loading,
            ModelState::Ready,
            ModelState::Unloading,
            ModelState::Failed,
        ] {
            assert_eq!(state_of_name(&crate::scheduler::state_name(s)), Some(s));
        }
    }

    #[test]
    fn escaped_label_values_read_whole() {
        assert_eq!(
            label_pairs(r#"a="x\"y",b="1\\2""#),
            Ok(vec![
                ("a".into(), "x\"y".into()),
                ("b".into(), "1\\2".into())
            ])
        );
        assert!(label_pairs(r#"a="open"#).is_err());
    }
}
