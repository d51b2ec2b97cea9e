//! The raw layer: the file as written, as serde reads it. Nothing here is checked; the
//! validator (`validate.rs`) turns it into the typed settings.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::engine::experiment::{Mode, Sticky};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) listen: Option<String>,
    #[serde(default)]
    pub(super) memory: RawMemory,
    #[serde(default)]
    pub(super) policies: RawPolicies,
    #[serde(default)]
    pub(super) scheduler: RawScheduler,
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) auth: RawAuth,
    #[serde(default)]
    pub(super) trace: RawTrace,
    pub(super) state_dir: Option<String>,
    #[serde(default)]
    pub(super) models: BTreeMap<String, RawModel>,
    #[serde(default)]
    pub(super) experiments: Vec<RawExperiment>,
    #[serde(default)]
    pub(super) discover: RawDiscover,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDiscover {
    #[serde(default)]
    pub(super) dirs: Vec<String>,
    /// `true` for Ollama's own store, or its path.
    pub(super) ollama: Option<RawStore>,
    pub(super) cmd: Option<String>,
    pub(super) context_tokens: Option<u32>,
    pub(super) parallel: Option<u32>,
    pub(super) ttl: Option<RawDuration>,
    pub(super) device: Option<String>,
}

/// `true`/`false`, or a path.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawStore {
    On(bool),
    At(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExperiment {
    pub(super) hook: String,
    pub(super) candidate: String,
    pub(super) weight: Option<f64>,
    pub(super) mode: Option<Mode>,
    pub(super) sticky: Option<Sticky>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) max_body: Option<RawSize>,
    pub(super) body_timeout: Option<RawDuration>,
    pub(super) upstream_timeout: Option<RawDuration>,
    pub(super) shutdown_grace: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrace {
    pub(super) record: Option<String>,
    pub(super) max_bytes: Option<RawSize>,
    pub(super) keep: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) admin_key: Option<String>,
    pub(super) admin_key_sha256: Option<String>,
    #[serde(default)]
    pub(super) keys: Vec<RawKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    pub(super) key: Option<String>,
    pub(super) key_sha256: Option<String>,
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) priority: i32,
}

// No `deny_unknown_fields`: serde cannot combine it with `flatten`; every other key is a
// device table, whose own keys are checked.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawMemory {
    pub(super) pressure: Option<f64>,
    #[serde(flatten)]
    pub(super) devices: BTreeMap<String, RawDevice>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDevice {
    pub(super) budget: Option<RawSize>,
    pub(super) reserve: Option<RawSize>,
    pub(super) max_loaded: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicies {
    pub(super) eviction: Option<String>,
    pub(super) selection: Option<String>,
    pub(super) compression: Option<String>,
    pub(super) hook_deadline: Option<RawDuration>,
    pub(super) dir: Option<String>,
    pub(super) cache: Option<String>,
    pub(super) allow: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScheduler {
    pub(super) max_queue: Option<u32>,
    pub(super) queue_timeout: Option<RawDuration>,
    pub(super) max_loaded: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModel {
    #[serde(default)]
    pub(super) aliases: Vec<String>,
    #[serde(default)]
    pub(super) tags: Vec<String>,
    #[serde(default)]
    pub(super) priority: i32,
    #[serde(default)]
    pub(super) pinned: bool,
    #[serde(default)]
    pub(super) preload: bool,
    pub(super) ttl: Option<RawDuration>,
    pub(super) context_tokens: Option<u32>,
    pub(super) parallel: Option<u32>,
    pub(super) size: Option<RawSize>,
    pub(super) device: Option<String>,
    pub(super) capabilities: Option<Vec<String>>,
    #[serde(default)]
    pub(super) translate: Vec<String>,
    pub(super) context_fallback: Option<String>,
    // command backend
    pub(super) cmd: Option<String>,
    pub(super) file: Option<String>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    pub(super) health: Option<String>,
    pub(super) start_timeout: Option<RawDuration>,
    pub(super) stop_timeout: Option<RawDuration>,
    pub(super) cmd_stop: Option<String>,
    pub(super) footprint: Option<String>,
    // openai backend
    pub(super) url: Option<String>,
    pub(super) api_key: Option<String>,
    pub(super) use_model_name: Option<String>,
    pub(super) control: Option<String>,
}

/// A size as bytes or text such as `"512MiB"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawSize {
    Bytes(u64),
    Text(String),
}

/// A duration as seconds or text such as `"90s"`, `"10m"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawDuration {
    Secs(u64),
    Text(String),
}
