//! The TOML configuration, read in two phases: a raw serde layer that mirrors the file, then one
//! validation step that builds the typed [`Settings`] the rest of the host runs on. Every problem
//! is reported with the key path it sits at, all of them at once; nothing downstream re-validates.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//!
//! [memory]
//! pressure = 0.95                 # unload when a device is fuller than this
//! [memory.cpu]
//! budget = "8GiB"                 # what models may use; default: all of it
//! reserve = "2GiB"                # kept free for everything else
//!
//! [policies]
//! eviction = "hybrid"             # a built-in name or a path to a .wasm
//!
//! [models.smollm2]
//! cmd = "llama-server -m ${FILE} --port ${PORT} -t 1"
//! file = "models/smollm2.gguf"
//! aliases = ["small"]
//! ttl = "10m"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::engine::Hook;
use crate::engine::builtin;
use crate::engine::experiment::{Mode, Sticky};

/// Where `serve` listens unless the config says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The context window assumed for a model that does not state one.
pub const DEFAULT_CONTEXT_TOKENS: u32 = 4096;
/// How long a started server has to answer its health check.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a server has to exit after SIGTERM before it gets SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The health path of llama-server (and of most OpenAI-compatible servers).
pub const DEFAULT_HEALTH_PATH: &str = "/health";
/// Fraction of a device in use (measured) above which idle models are unloaded.
pub const DEFAULT_PRESSURE: f64 = 0.95;
/// RAM kept free for the system and the host when no reserve is configured.
pub const DEFAULT_RAM_RESERVE: u64 = 1 << 30;
/// Requests that may wait for one model before more are turned away.
pub const DEFAULT_MAX_QUEUE: u32 = 64;
/// How long a request waits for its model before it is turned away.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(300);
/// Added to a model file's size to estimate a server's footprint before it is measured:
/// the runtime, its buffers and a small KV cache.
pub const DEFAULT_RUNTIME_OVERHEAD: u64 = 128 << 20;
/// The policy that serves `choose-eviction` unless the config names another.
pub const DEFAULT_EVICTION_POLICY: &str = "lru";
/// The policy that serves `select-model` unless the config names another.
pub const DEFAULT_SELECTION_POLICY: &str = "specialization";
/// The policy that serves `compress-context` unless the config names another.
pub const DEFAULT_COMPRESSION_POLICY: &str = "lru";

/// The largest request body accepted; larger ones get 413 before they are read.
pub const DEFAULT_MAX_BODY: u64 = 8 << 20;
/// How long a backend may take to start answering (the first byte; streams then run freely).
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(600);

/// The name of the host's RAM as a device.
pub const CPU_DEVICE: &str = "cpu";

// ---------------------------------------------------------------------------------------------
// Raw layer: the file as written.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    #[serde(default)]
    memory: RawMemory,
    #[serde(default)]
    policies: RawPolicies,
    #[serde(default)]
    scheduler: RawScheduler,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    models: BTreeMap<String, RawModel>,
    #[serde(default)]
    experiments: Vec<RawExperiment>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExperiment {
    hook: String,
    candidate: String,
    weight: Option<f64>,
    mode: Option<Mode>,
    sticky: Option<Sticky>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    max_body: Option<RawSize>,
    upstream_timeout: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    admin_key: Option<String>,
    #[serde(default)]
    keys: Vec<RawKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    key: String,
    name: Option<String>,
    #[serde(default)]
    priority: i32,
}

// No `deny_unknown_fields`: serde cannot combine it with `flatten`; every other key is a
// device table, whose own keys are checked.
#[derive(Debug, Default, Deserialize)]
struct RawMemory {
    pressure: Option<f64>,
    #[serde(flatten)]
    devices: BTreeMap<String, RawDevice>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    budget: Option<RawSize>,
    reserve: Option<RawSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicies {
    eviction: Option<String>,
    selection: Option<String>,
    compression: Option<String>,
    hook_deadline: Option<RawDuration>,
    dir: Option<String>,
    cache: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScheduler {
    max_queue: Option<u32>,
    queue_timeout: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    pinned: bool,
    ttl: Option<RawDuration>,
    context_tokens: Option<u32>,
    size: Option<RawSize>,
    device: Option<String>,
    // command backend
    cmd: Option<String>,
    file: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    health: Option<String>,
    start_timeout: Option<RawDuration>,
    stop_timeout: Option<RawDuration>,
    // openai backend
    url: Option<String>,
    api_key: Option<String>,
    use_model_name: Option<String>,
    control: Option<String>,
}

/// A size as bytes or text such as `"512MiB"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(u64),
    Text(String),
}

/// A duration as seconds or text such as `"90s"`, `"10m"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Secs(u64),
    Text(String),
}

// ---------------------------------------------------------------------------------------------
// Typed layer: what the host runs on.

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub memory: MemorySettings,
    pub policies: PolicySettings,
    pub scheduler: SchedulerSettings,
    pub server: ServerSettings,
    pub auth: AuthSettings,
    pub models: Vec<ModelSettings>,
    pub experiments: Vec<ExperimentSettings>,
}

/// An experiment to start with the host.
#[derive(Debug, Clone)]
pub struct ExperimentSettings {
    pub hook: Hook,
    /// A built-in name or a component path (relative to the config's folder, resolved).
    pub candidate: String,
    pub weight: f64,
    pub mode: Mode,
    pub sticky: Sticky,
}

/// HTTP limits.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub max_body: u64,
    pub upstream_timeout: Duration,
}

/// Who may call the host. With no keys, `/v1` is open; with no admin key, `/admin` is open
/// (the host binds to loopback unless told otherwise).
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    pub admin_key: Option<String>,
    pub keys: Vec<ApiKey>,
}

/// A client's key for `/v1`.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub key: String,
    /// Shown to policies as `request.client` and used as the A/B sticky key.
    pub name: String,
    /// The priority of this client's requests unless a header says otherwise.
    pub priority: i32,
}

/// Memory budgets per device.
#[derive(Debug, Clone)]
pub struct MemorySettings {
    /// Fraction of a device in use above which idle models are unloaded.
    pub pressure: f64,
    /// Budgets by device name (`cpu`, `gpu0`, ...). A device not listed gets its whole memory
    /// less the default reserve.
    pub devices: BTreeMap<String, DeviceBudget>,
}

/// What models may use of one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceBudget {
    /// Bytes models may use; `None` means the device's total.
    pub budget: Option<u64>,
    /// Bytes kept free whatever the budget says.
    pub reserve: u64,
}

impl MemorySettings {
    /// The budget for `device`, with the defaults filled in.
    pub fn budget(&self, device: &str) -> DeviceBudget {
        self.devices.get(device).copied().unwrap_or(DeviceBudget {
            budget: None,
            reserve: if device == CPU_DEVICE {
                DEFAULT_RAM_RESERVE
            } else {
                0
            },
        })
    }
}

/// Which component serves a hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyRef {
    /// One of the built-in strategies, by name.
    Builtin(String),
    /// A component file.
    File(PathBuf),
    /// No policy: the host's native default decides.
    Fallback,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyRef::Builtin(name) => write!(f, "{name} (built-in)"),
            PolicyRef::File(path) => write!(f, "{}", path.display()),
            PolicyRef::Fallback => f.write_str("native default"),
        }
    }
}

/// The policy for each hook and the limits they run under.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    pub eviction: PolicyRef,
    pub selection: PolicyRef,
    pub compression: PolicyRef,
    pub hook_deadline: Duration,
    /// A folder whose `.wasm` files serve the hooks they export, hot-reloaded.
    pub dir: Option<PathBuf>,
    /// Where compiled policies are cached (default: `.cache` in `dir`).
    pub cache_dir: Option<PathBuf>,
}

/// Queueing rules.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    pub max_queue: u32,
    pub queue_timeout: Duration,
}

/// One configured model.
#[derive(Debug, Clone)]
pub struct ModelSettings {
    pub id: String,
    pub aliases: Vec<String>,
    pub tags: Vec<String>,
    pub priority: i32,
    pub pinned: bool,
    /// Unload after this long idle; `None` keeps the model until it is evicted.
    pub ttl: Option<Duration>,
    pub context_tokens: u32,
    /// The configured size, or one estimated from the model file; replaced by the measured
    /// footprint once the model is ready.
    pub size_estimate: u64,
    pub device: String,
    pub backend: BackendSettings,
}

/// How a model is served.
#[derive(Debug, Clone)]
pub enum BackendSettings {
    Command(CommandSettings),
    OpenAi(OpenAiSettings),
}

/// A server process the host starts per model.
#[derive(Debug, Clone)]
pub struct CommandSettings {
    /// The command line, split into words, with placeholders still in it.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub file: Option<PathBuf>,
    pub health_path: String,
    pub start_timeout: Duration,
    pub stop_timeout: Duration,
}

/// An OpenAI-compatible server that already runs.
#[derive(Debug, Clone)]
pub struct OpenAiSettings {
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:11434/v1`.
    pub url: String,
    pub api_key: Option<String>,
    /// The model name the server knows, if not the id.
    pub model_name: String,
    pub control: Control,
}

/// A server's native API for loading and unloading, if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Load and unload are no-ops: the server manages its own memory.
    None,
    /// Ollama: a request with `keep_alive: -1` loads, `keep_alive: 0` unloads.
    Ollama,
    /// llama-server in router mode: `POST /models/load` and `/models/unload`.
    LlamaRouter,
}

/// Every problem found in a config, each with its key path.
#[derive(Debug)]
pub struct ConfigError {
    pub source_name: String,
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not a valid config:", self.source_name)?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Settings {
    /// Reads and validates a config file. Relative paths in it are relative to its folder.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: path.display().to_string(),
            problems: vec![format!("cannot read it: {e}")],
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, base, &path.display().to_string())
    }

    /// Validates config text; `base` is the folder relative paths start from.
    pub fn from_toml(text: &str, base: &Path, source_name: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            source_name: source_name.to_string(),
            problems: vec![e.to_string().trim_end().to_string()],
        })?;
        let mut v = Validator {
            base,
            problems: Vec::new(),
        };
        let settings = v.settings(raw);
        if v.problems.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigError {
                source_name: source_name.to_string(),
                problems: v.problems,
            })
        }
    }

    /// The model with this id or alias.
    pub fn model(&self, name: &str) -> Option<&ModelSettings> {
        self.models.iter().find(|m| m.id == name).or_else(|| {
            self.models
                .iter()
                .find(|m| m.aliases.iter().any(|a| a == name))
        })
    }
}

struct Validator<'a> {
    base: &'a Path,
    problems: Vec<String>,
}

impl Validator<'_> {
    fn problem(&mut self, path: &str, msg: impl fmt::Display) {
        self.problems.push(format!("{path}: {msg}"));
    }

    fn settings(&mut self, raw: RawConfig) -> Settings {
        let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = listen_text.parse().unwrap_or_else(|e| {
            self.problem(
                "listen",
                format_args!("{listen_text:?} is not host:port ({e})"),
            );
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
        let memory = self.memory(raw.memory);
        let policies = self.policies(raw.policies);
        let scheduler = SchedulerSettings {
            max_queue: raw.scheduler.max_queue.unwrap_or(DEFAULT_MAX_QUEUE),
            queue_timeout: self
                .duration("scheduler.queue_timeout", raw.scheduler.queue_timeout)
                .unwrap_or(DEFAULT_QUEUE_TIMEOUT),
        };
        let server = ServerSettings {
            max_body: self
                .size("server.max_body", raw.server.max_body)
                .unwrap_or(DEFAULT_MAX_BODY),
            upstream_timeout: self
                .duration("server.upstream_timeout", raw.server.upstream_timeout)
                .unwrap_or(DEFAULT_UPSTREAM_TIMEOUT),
        };
        let auth = self.auth(raw.auth);
        let mut models = Vec::new();
        for (id, m) in raw.models {
            if let Some(m) = self.model(&id, m) {
                models.push(m);
            }
        }
        self.names_unique(&models);
        let mut experiments: Vec<ExperimentSettings> = Vec::new();
        for (i, e) in raw.experiments.into_iter().enumerate() {
            let path = format!("experiments[{i}]");
            let Some(hook) = Hook::parse(&e.hook) else {
                self.problem(
                    &format!("{path}.hook"),
                    format_args!(
                        "{:?} is not choose-eviction, select-model or compress-context",
                        e.hook
                    ),
                );
                continue;
            };
            if experiments.iter().any(|o| o.hook == hook) {
                self.problem(
                    &format!("{path}.hook"),
                    format_args!("{hook} already has an experiment"),
                );
            }
            let weight = e.weight.unwrap_or(0.5);
            if !(0.0..=1.0).contains(&weight) {
                self.problem(
                    &format!("{path}.weight"),
                    format_args!("{weight} is not in [0, 1]"),
                );
            }
            let candidate = if builtin::NAMES.contains(&e.candidate.as_str()) {
                e.candidate
            } else {
                let file = self.base.join(&e.candidate);
                if !file.is_file() {
                    self.problem(
                        &format!("{path}.candidate"),
                        format_args!("{:?} is neither a built-in nor a file", e.candidate),
                    );
                }
                file.display().to_string()
            };
            experiments.push(ExperimentSettings {
                hook,
                candidate,
                weight,
                mode: e.mode.unwrap_or(Mode::Live),
                sticky: e.sticky.unwrap_or(Sticky::Client),
            });
        }
        Settings {
            listen,
            memory,
            policies,
            scheduler,
            server,
            auth,
            models,
            experiments,
        }
    }

    fn auth(&mut self, raw: RawAuth) -> AuthSettings {
        let mut keys: Vec<ApiKey> = Vec::new();
        for (i, k) in raw.keys.into_iter().enumerate() {
            let path = format!("auth.keys[{i}]");
            if k.key.trim().is_empty() {
                self.problem(&format!("{path}.key"), "is empty");
            }
            if keys.iter().any(|o| o.key == k.key) {
                self.problem(&format!("{path}.key"), "is given twice");
            }
            keys.push(ApiKey {
                name: k.name.unwrap_or_else(|| format!("key{i}")),
                key: k.key,
                priority: k.priority,
            });
        }
        if raw
            .admin_key
            .as_deref()
            .is_some_and(|k| k.trim().is_empty())
        {
            self.problem("auth.admin_key", "is empty");
        }
        AuthSettings {
            admin_key: raw.admin_key,
            keys,
        }
    }

    fn memory(&mut self, raw: RawMemory) -> MemorySettings {
        let pressure = raw.pressure.unwrap_or(DEFAULT_PRESSURE);
        if !(pressure > 0.0 && pressure <= 1.0) {
            self.problem(
                "memory.pressure",
                format_args!("{pressure} is not a fraction in (0, 1]"),
            );
        }
        let mut devices = BTreeMap::new();
        for (name, d) in raw.devices {
            let path = format!("memory.{name}");
            if !is_device_name(&name) {
                self.problem(&path, "is not a device: use `cpu` or `gpu0`, `gpu1`, ...");
                continue;
            }
            let budget = self.size(&format!("{path}.budget"), d.budget);
            let default_reserve = if name == CPU_DEVICE {
                DEFAULT_RAM_RESERVE
            } else {
                0
            };
            let reserve = self
                .size(&format!("{path}.reserve"), d.reserve)
                .unwrap_or(default_reserve);
            devices.insert(name, DeviceBudget { budget, reserve });
        }
        MemorySettings { pressure, devices }
    }

    fn policies(&mut self, raw: RawPolicies) -> PolicySettings {
        let dir = raw.dir.map(|d| self.base.join(d));
        if let Some(d) = &dir
            && !d.is_dir()
        {
            self.problem(
                "policies.dir",
                format_args!("{} is not a folder", d.display()),
            );
        }
        PolicySettings {
            eviction: self.policy(
                "policies.eviction",
                raw.eviction.as_deref(),
                DEFAULT_EVICTION_POLICY,
            ),
            selection: self.policy(
                "policies.selection",
                raw.selection.as_deref(),
                DEFAULT_SELECTION_POLICY,
            ),
            compression: self.policy(
                "policies.compression",
                raw.compression.as_deref(),
                DEFAULT_COMPRESSION_POLICY,
            ),
            hook_deadline: self
                .duration("policies.hook_deadline", raw.hook_deadline)
                .unwrap_or(crate::engine::DEFAULT_HOOK_DEADLINE),
            dir: dir.clone(),
            cache_dir: raw
                .cache
                .map(|c| self.base.join(c))
                .or_else(|| dir.map(|d| d.join(".cache"))),
        }
    }

    fn policy(&mut self, path: &str, raw: Option<&str>, default: &str) -> PolicyRef {
        let name = raw.unwrap_or(default);
        if name == "none" {
            return PolicyRef::Fallback;
        }
        if builtin::NAMES.contains(&name) {
            return PolicyRef::Builtin(name.to_string());
        }
        if name.ends_with(".wasm") {
            let file = self.base.join(name);
            if !file.is_file() {
                self.problem(path, format_args!("{} does not exist", file.display()));
            }
            return PolicyRef::File(file);
        }
        self.problem(
            path,
            format_args!(
                "{name:?} is neither a built-in ({}), `none`, nor a path to a .wasm",
                builtin::NAMES.join(", ")
            ),
        );
        PolicyRef::Fallback
    }

    fn model(&mut self, id: &str, m: RawModel) -> Option<ModelSettings> {
        let path = format!("models.{id}");
        let before = self.problems.len();
        if id.trim().is_empty() || id == "auto" {
            self.problem(&path, "is not a usable model id");
        }
        let device = m.device.unwrap_or_else(|| CPU_DEVICE.to_string());
        if !is_device_name(&device) {
            self.problem(
                &format!("{path}.device"),
                format_args!("{device:?} is not `cpu` or `gpuN`"),
            );
        }
        let ttl = self
            .duration(&format!("{path}.ttl"), m.ttl)
            .filter(|d| !d.is_zero());
        let size = self.size(&format!("{path}.size"), m.size);
        let backend = match (m.cmd, m.url) {
            (Some(cmd), None) => {
                for (key, set) in [
                    ("api_key", m.api_key.is_some()),
                    ("use_model_name", m.use_model_name.is_some()),
                    ("control", m.control.is_some()),
                ] {
                    if set {
                        self.problem(&format!("{path}.{key}"), "applies only to `url` models");
                    }
                }
                self.command(
                    &path,
                    cmd,
                    m.file,
                    m.env,
                    m.health,
                    m.start_timeout,
                    m.stop_timeout,
                )
                .map(BackendSettings::Command)
            }
            (None, Some(url)) => {
                for (key, set) in [
                    ("file", m.file.is_some()),
                    ("env", !m.env.is_empty()),
                    ("health", m.health.is_some()),
                    ("start_timeout", m.start_timeout.is_some()),
                    ("stop_timeout", m.stop_timeout.is_some()),
                ] {
                    if set {
                        self.problem(&format!("{path}.{key}"), "applies only to `cmd` models");
                    }
                }
                self.openai(&path, id, url, m.api_key, m.use_model_name, m.control)
                    .map(BackendSettings::OpenAi)
            }
            (Some(_), Some(_)) => {
                self.problem(&path, "has both `cmd` and `url`; give one");
                None
            }
            (None, None) => {
                self.problem(
                    &path,
                    "needs `cmd` (a server to start) or `url` (one that already runs)",
                );
                None
            }
        };
        let backend = backend?;
        if self.problems.len() > before {
            return None;
        }
        let size_estimate = size.unwrap_or_else(|| match &backend {
            BackendSettings::Command(c) => c
                .file
                .as_ref()
                .and_then(|f| std::fs::metadata(f).ok())
                .map_or(DEFAULT_RUNTIME_OVERHEAD, |md| {
                    md.len() + DEFAULT_RUNTIME_OVERHEAD
                }),
            // A server that already runs spends its own memory, not ours.
            BackendSettings::OpenAi(_) => 0,
        });
        Some(ModelSettings {
            id: id.to_string(),
            aliases: m.aliases,
            tags: m.tags,
            priority: m.priority,
            pinned: m.pinned,
            ttl,
            context_tokens: m.context_tokens.unwrap_or(DEFAULT_CONTEXT_TOKENS),
            size_estimate,
            device,
            backend,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn command(
        &mut self,
        path: &str,
        cmd: String,
        file: Option<String>,
        env: BTreeMap<String, String>,
        health: Option<String>,
        start_timeout: Option<RawDuration>,
        stop_timeout: Option<RawDuration>,
    ) -> Option<CommandSettings> {
        let Some(mut argv) = shlex::split(&cmd) else {
            self.problem(&format!("{path}.cmd"), "has unbalanced quotes");
            return None;
        };
        if argv.is_empty() {
            self.problem(&format!("{path}.cmd"), "is empty");
            return None;
        }
        if !argv.iter().any(|a| a.contains("${PORT}")) {
            self.problem(
                &format!("{path}.cmd"),
                "never uses ${PORT}: the host picks each server's port",
            );
        }
        // A relative program path (`venv/bin/llama-server`) is relative to the config's folder;
        // a bare name is looked up on PATH.
        if argv[0].contains('/') && Path::new(&argv[0]).is_relative() {
            argv[0] = self.base.join(&argv[0]).display().to_string();
        }
        let file = file.map(|f| self.base.join(f));
        if let Some(f) = &file
            && !f.is_file()
        {
            self.problem(
                &format!("{path}.file"),
                format_args!("{} does not exist", f.display()),
            );
        }
        if file.is_none() && argv.iter().any(|a| a.contains("${FILE}")) {
            self.problem(&format!("{path}.cmd"), "uses ${FILE} but `file` is not set");
        }
        let health_path = health.unwrap_or_else(|| DEFAULT_HEALTH_PATH.to_string());
        if !health_path.starts_with('/') {
            self.problem(&format!("{path}.health"), "must start with `/`");
        }
        Some(CommandSettings {
            argv,
            env: env.into_iter().collect(),
            file,
            health_path,
            start_timeout: self
                .duration(&format!("{path}.start_timeout"), start_timeout)
                .unwrap_or(DEFAULT_START_TIMEOUT),
            stop_timeout: self
                .duration(&format!("{path}.stop_timeout"), stop_timeout)
                .unwrap_or(DEFAULT_STOP_TIMEOUT),
        })
    }

    fn openai(
        &mut self,
        path: &str,
        id: &str,
        url: String,
        api_key: Option<String>,
        use_model_name: Option<String>,
        control: Option<String>,
    ) -> Option<OpenAiSettings> {
        let url = url.trim_end_matches('/').to_string();
        if !url.starts_with("http://") {
            self.problem(
                &format!("{path}.url"),
                format_args!("{url:?} is not an http:// URL (TLS to backends is not built in)"),
            );
        }
        let control = match control.as_deref() {
            None | Some("none") => Control::None,
            Some("ollama") => Control::Ollama,
            Some("llama-router") => Control::LlamaRouter,
            Some(other) => {
                self.problem(
                    &format!("{path}.control"),
                    format_args!("{other:?} is not `none`, `ollama` or `llama-router`"),
                );
                Control::None
            }
        };
        Some(OpenAiSettings {
            url,
            api_key,
            model_name: use_model_name.unwrap_or_else(|| id.to_string()),
            control,
        })
    }

    fn names_unique(&mut self, models: &[ModelSettings]) {
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for m in models {
            for alias in &m.aliases {
                if alias == "auto" {
                    self.problem(
                        &format!("models.{}.aliases", m.id),
                        "`auto` is reserved for select-model",
                    );
                }
                if let Some(owner) = seen.insert(alias, &m.id) {
                    self.problem(
                        &format!("models.{}.aliases", m.id),
                        format_args!("{alias:?} is already a name of models.{owner}"),
                    );
                }
            }
        }
        for m in models {
            if let Some(owner) = seen.get(m.id.as_str()) {
                self.problem(
                    &format!("models.{owner}.aliases"),
                    format_args!("{:?} is the id of another model", m.id),
                );
            }
        }
    }

    fn size(&mut self, path: &str, raw: Option<RawSize>) -> Option<u64> {
        match raw? {
            RawSize::Bytes(n) => Some(n),
            RawSize::Text(t) => match t.trim().parse::<bytesize::ByteSize>() {
                Ok(b) => Some(b.as_u64()),
                Err(e) => {
                    self.problem(
                        path,
                        format_args!("{t:?} is not a size like \"512MiB\" ({e})"),
                    );
                    None
                }
            },
        }
    }

    fn duration(&mut self, path: &str, raw: Option<RawDuration>) -> Option<Duration> {
        match raw? {
            RawDuration::Secs(n) => Some(Duration::from_secs(n)),
            RawDuration::Text(t) => match humantime::parse_duration(t.trim()) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.problem(
                        path,
                        format_args!("{t:?} is not a duration like \"90s\" ({e})"),
                    );
                    None
                }
            },
        }
    }
}

fn is_device_name(name: &str) -> bool {
    name == CPU_DEVICE
        || name
            .strip_prefix("gpu")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_toml(text, Path::new("."), "test.toml")
    }

    #[test]
    fn a_minimal_config_gets_the_documented_defaults() {
        let s = parse(
            r#"
            [models.a]
            cmd = "server --port ${PORT}"
            ttl = 30
            "#,
        )
        .expect("valid");
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        let a = &s.models[0];
        assert_eq!(a.ttl, Some(Duration::from_secs(30)));
        assert_eq!(a.context_tokens, DEFAULT_CONTEXT_TOKENS);
        assert_eq!(a.size_estimate, DEFAULT_RUNTIME_OVERHEAD);
        assert_eq!(s.policies.eviction, PolicyRef::Builtin("lru".into()));
        assert_eq!(s.memory.budget("cpu").reserve, DEFAULT_RAM_RESERVE);
    }

    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let err = parse(
            r#"
            listen = "nowhere"
            [memory]
            pressure = 1.5
            [memory.cpu]
            budget = "lots"
            [policies]
            eviction = "fifo"
            [models.a]
            cmd = "server"
            ttl = "soon"
            [models.d]
            cmd = "s ${PORT}"
            aliases = ["e"]
            [models.e]
            cmd = "s ${PORT}"
            [models.b]
            url = "https://example.com/v1"
            control = "magic"
            [models.c]
            "#,
        )
        .expect_err("invalid");
        let all = err.problems.join("\n");
        for needle in [
            "listen:",
            "memory.pressure:",
            "memory.cpu.budget:",
            "policies.eviction:",
            "models.a.cmd: never uses ${PORT}",
            "models.a.ttl:",
            "models.b.url:",
            "models.b.control:",
            "models.c: needs `cmd`",
            "models.d.aliases: \"e\" is the id of another model",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = parse("[models.a]\ncmd = \"s ${PORT}\"\nttll = 5\n").expect_err("typo");
        assert!(err.to_string().contains("ttll"), "{err}");
    }
}
