//! The model catalogue of a simulation: each model's size, what loading it costs and how long a
//! request keeps it busy. Defaults come from the trace (Azure Functions: the app's memory,
//! scaled; its mean run time) and [`Defaults`]; a TOML file (`--models`) overrides any of it:
//!
//! ```toml
//! [defaults]
//! startup = "2s"          # a server's fixed start-up time
//! bandwidth = "2GB"       # bytes read per second while loading
//! size = "8GiB"           # models the trace says nothing of
//! memory_scale = 4        # Azure Functions: model size = the app's memory × this
//! prefill = 2000          # prompt tokens per second
//! decode = 50             # output tokens per second
//! service = "1s"          # a request with no tokens and no run time
//! run_times = false       # Azure Functions: serve calls for their function's mean run time
//! parallel = 4            # requests a model serves at once (as `parallel` in `serve`)
//!
//! [models.code]
//! size = "16GiB"
//! pinned = true
//! parallel = 8
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;

use super::trace::{Arrival, Trace};

/// What every model gets unless the trace or the catalogue file says otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    pub startup: Duration,
    /// Bytes per second read while loading.
    pub bandwidth: u64,
    pub size: u64,
    /// Azure Functions: a model's size is its app's memory times this.
    pub memory_scale: f64,
    /// Prompt tokens per second.
    pub prefill: f64,
    /// Output tokens per second.
    pub decode: f64,
    pub service: Duration,
    /// Azure Functions: serve each call for its function's mean run time (most of these are
    /// batch jobs of seconds to minutes, far from an LLM request) instead of `service`.
    pub run_times: bool,
    /// Requests a model serves at once; the rest queue, as in `serve`.
    pub parallel: u32,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            startup: Duration::from_secs(2),
            bandwidth: 2_000_000_000,
            size: 8 << 30,
            memory_scale: 4.0,
            prefill: 2000.0,
            decode: 50.0,
            service: Duration::from_secs(1),
            run_times: false,
            parallel: crate::config::DEFAULT_PARALLEL,
        }
    }
}

/// One model as the simulator runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub id: String,
    pub size: u64,
    pub startup: Duration,
    /// A request's service time when the trace gives neither tokens nor a run time.
    pub service: Duration,
    pub pinned: bool,
    pub priority: i32,
    pub tags: Vec<String>,
    pub parallel: u32,
}

/// Every model of a simulation, and the defaults they were built from.
#[derive(Debug, Clone)]
pub struct Catalogue {
    pub defaults: Defaults,
    pub models: BTreeMap<String, ModelSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    models: BTreeMap<String, RawModel>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    startup: Option<String>,
    bandwidth: Option<String>,
    size: Option<String>,
    memory_scale: Option<f64>,
    prefill: Option<f64>,
    decode: Option<f64>,
    service: Option<String>,
    run_times: Option<bool>,
    parallel: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    size: Option<String>,
    startup: Option<String>,
    service: Option<String>,
    #[serde(default)]
    pinned: bool,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    tags: Vec<String>,
    parallel: Option<u32>,
}

fn size(key: &str, text: &str) -> anyhow::Result<u64> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| anyhow::anyhow!("{key}: {text:?} is not a size ({e})"))
}

fn duration(key: &str, text: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(text.trim())
        .map_err(|e| anyhow::anyhow!("{key}: {text:?} is not a duration ({e})"))
}

fn places(key: &str, value: u32) -> anyhow::Result<u32> {
    if value == 0 {
        bail!("{key}: must be at least 1");
    }
    Ok(value)
}

fn rate(key: &str, value: f64) -> anyhow::Result<f64> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        bail!("{key}: must be a positive number, not {value}")
    }
}

impl Catalogue {
    /// The catalogue for `trace`: its models with sizes and service times from the trace's
    /// hints and the defaults, then whatever `file` (TOML) sets. A model the file names but the
    /// trace never requests is left out with a warning, not silently: a catalogue written from
    /// a host (`modelyard models --catalogue`) names models a recording may not reach.
    pub fn build(trace: &Trace, file: Option<&Path>) -> anyhow::Result<Self> {
        let raw = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str::<RawFile>(&text)
                    .with_context(|| format!("{} is not a model catalogue", path.display()))?
            }
            None => RawFile::default(),
        };
        let mut d = Defaults::default();
        let r = &raw.defaults;
        if let Some(t) = &r.startup {
            d.startup = duration("defaults.startup", t)?;
        }
        if let Some(t) = &r.bandwidth {
            d.bandwidth = size("defaults.bandwidth", t)?.max(1);
        }
        if let Some(t) = &r.size {
            d.size = size("defaults.size", t)?;
        }
        if let Some(v) = r.memory_scale {
            d.memory_scale = rate("defaults.memory_scale", v)?;
        }
        if let Some(v) = r.prefill {
            d.prefill = rate("defaults.prefill", v)?;
        }
        if let Some(v) = r.decode {
            d.decode = rate("defaults.decode", v)?;
        }
        if let Some(t) = &r.service {
            d.service = duration("defaults.service", t)?;
        }
        if let Some(v) = r.run_times {
            d.run_times = v;
        }
        if let Some(v) = r.parallel {
            d.parallel = places("defaults.parallel", v)?;
        }
        let mut models = BTreeMap::new();
        for (id, hint) in &trace.models {
            let size = hint
                .memory_mb
                .map_or(d.size, |mb| (mb as f64 * d.memory_scale * 1e6) as u64);
            let service = match hint.mean_service_ms {
                Some(ms) if d.run_times => Duration::from_millis(ms),
                _ => d.service,
            };
            models.insert(
                id.clone(),
                ModelSpec {
                    id: id.clone(),
                    size: size.max(1),
                    startup: d.startup,
                    service,
                    pinned: false,
                    priority: 0,
                    tags: Vec::new(),
                    parallel: d.parallel,
                },
            );
        }
        for (id, m) in raw.models {
            let Some(spec) = models.get_mut(&id) else {
                tracing::warn!(model = %id, "the catalogue names a model the trace never requests; left out");
                continue;
            };
            if let Some(t) = &m.size {
                spec.size = size(&format!("models.{id}.size"), t)?.max(1);
            }
            if let Some(t) = &m.startup {
                spec.startup = duration(&format!("models.{id}.startup"), t)?;
            }
            if let Some(t) = &m.service {
                spec.service = duration(&format!("models.{id}.service"), t)?;
            }
            if let Some(v) = m.parallel {
                spec.parallel = places(&format!("models.{id}.parallel"), v)?;
            }
            spec.pinned = m.pinned;
            spec.priority = m.priority;
            spec.tags = m.tags;
        }
        Ok(Self {
            defaults: d,
            models,
        })
    }

    /// What loading `model` costs: start-up plus its size read at the bandwidth.
    pub fn load_time(&self, model: &ModelSpec) -> Duration {
        model.startup + Duration::from_secs_f64(model.size as f64 / self.defaults.bandwidth as f64)
    }

    /// How long after its server takes `a` the first token comes: its prompt at the prefill
    /// rate (nothing for a trace without token counts).
    pub fn first_token_time(&self, a: &Arrival) -> Duration {
        Duration::from_secs_f64(f64::from(a.prompt_tokens) / self.defaults.prefill)
    }

    /// How long serving `a` keeps its model busy: its run time if the trace has one, else its
    /// tokens at the prefill and decode rates, else the model's service time.
    pub fn service_time(&self, a: &Arrival) -> Duration {
        if let Some(ms) = a.service_ms {
            return Duration::from_millis(ms);
        }
        if a.prompt_tokens > 0 || a.output_tokens > 0 {
            let secs = f64::from(a.prompt_tokens) / self.defaults.prefill
                + f64::from(a.output_tokens) / self.defaults.decode;
            return Duration::from_secs_f64(secs);
        }
        self.models
            .get(&a.model)
            .map_or(self.defaults.service, |m| m.service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::trace::ModelHint;

    fn trace() -> Trace {
        let mut t = Trace::default();
        t.models.insert(
            "f".into(),
            ModelHint {
                memory_mb: Some(1000),
                mean_service_ms: Some(250),
            },
        );
        t.models.insert("g".into(), ModelHint::default());
        t
    }

    #[test]
    fn defaults_scale_app_memory_and_price_loads_by_size() {
        let c = Catalogue::build(&trace(), None).expect("builds");
        let f = &c.models["f"];
        assert_eq!(f.size, 4_000_000_000);
        assert_eq!(c.load_time(f), Duration::from_secs(4));
        assert_eq!(c.models["g"].size, 8 << 30);
        let a = |p, o| Arrival {
            t_ms: 0,
            model: "f".into(),
            prompt_tokens: p,
            output_tokens: o,
            service_ms: None,
            ..Default::default()
        };
        assert_eq!(c.service_time(&a(0, 0)), Duration::from_secs(1));
        assert_eq!(c.service_time(&a(2000, 100)), Duration::from_secs(3));
    }

    #[test]
    fn a_file_overrides_defaults_and_models_and_names_its_mistakes_but_not_unrequested_models() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[defaults]\nstartup = \"1s\"\nbandwidth = \"1GB\"\n[models.g]\nsize = \"3GB\"\npinned = true\n",
        )
        .expect("write");
        let c = Catalogue::build(&trace(), Some(&path)).expect("builds");
        assert_eq!(c.load_time(&c.models["g"]), Duration::from_secs(4));
        assert!(c.models["g"].pinned);
        std::fs::write(&path, "[models.nope]\nsize = \"3GB\"\n").expect("write");
        let c = Catalogue::build(&trace(), Some(&path)).expect("an unrequested model is no error");
        assert!(!c.models.contains_key("nope"), "and is left out");
        std::fs::write(&path, "[models.g]\nparallel = 0\n").expect("write");
        let e = Catalogue::build(&trace(), Some(&path)).expect_err("no places");
        assert!(e.to_string().contains("models.g.parallel"), "{e}");
        std::fs::write(&path, "[defaults]\nbandwidth = \"fast\"\n").expect("write");
        let e = format!(
            "{:#}",
            Catalogue::build(&trace(), Some(&path)).expect_err("bad")
        );
        assert!(e.contains("defaults.bandwidth"), "{e}");
    }
}
