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
//! eviction = "adaptive"           # a built-in name or a path to a .wasm
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

use crate::engine::Hook;
use crate::engine::experiment::{Mode, Sticky};

mod capability;
mod raw;
#[cfg(test)]
mod tests;
mod validate;

pub use capability::{Api, Capabilities, Capability};
use raw::RawConfig;
pub use validate::DEFAULT_DISCOVER_CMD;
use validate::Validator;

/// Where `serve` listens unless the config says otherwise.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    8080,
));
/// The context window assumed for a model that does not state one.
pub const DEFAULT_CONTEXT_TOKENS: u32 = 4096;
/// How many requests a model serves at once unless its config says otherwise (llama-server's
/// `-np`, llama-swap's `concurrencyLimit`, Ollama's `NUM_PARALLEL`).
pub const DEFAULT_PARALLEL: u32 = 4;
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
/// Where the host keeps its state unless `state_dir` says otherwise: `modelyard` under the XDG
/// state folder (`$XDG_STATE_HOME`, else `~/.local/state`); `None` without a home.
pub fn default_state_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|h| PathBuf::from(h).join(".local").join("state"))
        })?;
    Some(base.join("modelyard"))
}
/// The policy that serves `choose-eviction` unless the config names another.
pub const DEFAULT_EVICTION_POLICY: &str = "adaptive";
/// The policy that serves `select-model` unless the config names another.
pub const DEFAULT_SELECTION_POLICY: &str = "specialization";
/// The policy that serves `compress-context` unless the config names another.
pub const DEFAULT_COMPRESSION_POLICY: &str = "lru";

/// The largest request body accepted; larger ones get 413 before they are read.
pub const DEFAULT_MAX_BODY: u64 = 8 << 20;
/// How long a backend may take to start answering (the first byte; streams then run freely).
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a client may take to send a request's whole body, once its head has come.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a shutdown waits for requests in flight (Kubernetes' default termination grace).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The name of the host's RAM as a device.
pub const CPU_DEVICE: &str = "cpu";

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub memory: MemorySettings,
    pub policies: PolicySettings,
    pub scheduler: SchedulerSettings,
    pub server: ServerSettings,
    pub auth: AuthSettings,
    /// Where `serve` records its traffic, when it does (`[trace]`).
    pub trace: Option<crate::recorder::RecorderSettings>,
    /// Where the host keeps what it learns across restarts (each model's measured footprint);
    /// `None` keeps nothing.
    pub state_dir: Option<PathBuf>,
    pub models: Vec<ModelSettings>,
    pub experiments: Vec<ExperimentSettings>,
    /// The file it was read from, for messages that send users to it.
    pub source: Option<PathBuf>,
    /// What `[discover]` found but could not serve (a file that is no model, a dangling
    /// manifest, an id a `[models.*]` table already has), each with its path.
    pub discovery_skipped: Vec<crate::discover::Skipped>,
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
    /// How long a client may take to send a body (`body_timeout`); a slower one gets 408.
    pub body_timeout: Duration,
    pub upstream_timeout: Duration,
    /// Serve a non-loopback address without client and admin keys (`serve --allow-open`);
    /// otherwise the host refuses to start there.
    pub allow_open: bool,
    /// On SIGTERM, how long requests in flight may finish while new ones get 503
    /// (`shutdown_grace`); then the rest are cut and every server stops.
    pub shutdown_grace: Duration,
}

/// Who may call the host. With no keys, `/v1` is open; with no admin key, `/admin` is open
/// (the host binds to loopback unless told otherwise).
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    pub admin_key: Option<Sha256Digest>,
    pub keys: Vec<ApiKey>,
}

/// A SHA-256 digest: how the host keeps a key (from `key`, or given as such with `key_sha256`,
/// which `modelyard key hash` prints, so that a config need not hold the key) and how it names
/// a file's bytes (`[policies] allow`, the config version in `/admin/config`).
#[derive(Clone, PartialEq, Eq)]
pub struct Sha256Digest([u8; 32]);

impl Sha256Digest {
    /// The digest of `bytes` (a key's text, a file's contents).
    pub fn of(bytes: impl AsRef<[u8]>) -> Self {
        use sha2::{Digest as _, Sha256};
        Self(Sha256::digest(bytes.as_ref()).into())
    }

    /// A digest written as 64 hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let hex = hex.trim();
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(out))
    }

    /// The digest as 64 lower-case hex digits.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `sent` is this key, in time that depends on neither (every byte of the two
    /// digests is compared).
    pub fn matches(&self, sent: &str) -> bool {
        let sent = Self::of(sent);
        sent.0
            .iter()
            .zip(self.0.iter())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
    }
}

impl fmt::Debug for Sha256Digest {
    /// Never the whole digest in a log: enough to tell keys apart.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest(sha256:{}…)", &self.hex()[..8])
    }
}

/// A client's key for `/v1`.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub key: Sha256Digest,
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
    /// The most models loaded at once on it, over `[scheduler] max_loaded`.
    pub max_loaded: Option<u32>,
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
            max_loaded: None,
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
    /// The SHA-256 digests a file in `dir` must have to be loaded (`allow`); `None` loads any.
    pub allow: Option<Vec<[u8; 32]>>,
}

/// Queueing rules.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    pub max_queue: u32,
    pub queue_timeout: Duration,
    /// The most models loaded at once on each device (`max_loaded`, llama.cpp's
    /// `--models-max`); `[memory.DEVICE] max_loaded` sets one device's. `None`: memory alone
    /// decides.
    pub max_loaded: Option<u32>,
}

/// One configured model.
#[derive(Debug, Clone)]
pub struct ModelSettings {
    pub id: String,
    pub aliases: Vec<String>,
    pub tags: Vec<String>,
    pub priority: i32,
    pub pinned: bool,
    /// Loaded when the host starts (`preload`; llama-swap's `hooks.on_startup.preload`).
    pub preload: bool,
    /// Unload after this long idle; `None` keeps the model until it is evicted.
    pub ttl: Option<Duration>,
    pub context_tokens: u32,
    /// How many requests it serves at once (`${PARALLEL}` in `cmd`); the rest wait in its
    /// queue.
    pub parallel: u32,
    /// The configured `size`: it overrides every estimate until the model is measured.
    pub size: Option<u64>,
    pub device: String,
    /// What it serves: its `capabilities`, else read from its command line.
    pub capabilities: Capabilities,
    /// Front-door APIs its server lacks, which the host translates to chat completions
    /// (`translate`; a server that answers 404 on one is added at run time).
    pub translate: Vec<Api>,
    /// The model a prompt too long for this one goes to before any compression
    /// (`context_fallback`, an id), if it fits there.
    pub context_fallback: Option<String>,
    pub backend: BackendSettings,
    /// A `[models.*]` table, or what `[discover]` found it in.
    pub origin: crate::discover::Origin,
}

/// How a model is served.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendSettings {
    Command(CommandSettings),
    OpenAi(OpenAiSettings),
    /// A server that exists only in `simulate`'s virtual time: it takes this long to load.
    /// No config file can name it; a real host refuses to start one.
    Simulated {
        load_time: Duration,
    },
}

/// A server process the host starts per model.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSettings {
    /// The command line, split into words, with placeholders still in it.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub file: Option<PathBuf>,
    pub health_path: String,
    pub start_timeout: Duration,
    pub stop_timeout: Duration,
    /// The model name sent to the server (`use_model_name`; llama-swap's `useModelName`),
    /// else the id.
    pub model_name: Option<String>,
    /// How to stop the server instead of SIGTERM (`cmd_stop`, llama-swap's `cmdStop`; with
    /// `${PID}`, `${MODEL}`, `${PORT}`), split into words.
    pub stop_argv: Option<Vec<String>>,
    /// Where its memory is read: its process tree, or a container its command runs.
    pub footprint: FootprintSource,
}

/// Where a command model's memory is measured.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FootprintSource {
    /// The server's process and its descendants.
    #[default]
    Processes,
    /// A container (`footprint = "container:NAME"`): its runtime's stats, read with this
    /// program (`podman` or `docker`, from the command or whichever is installed).
    Container { runtime: String, name: String },
}

/// An OpenAI-compatible server that already runs.
#[derive(Debug, Clone, PartialEq)]
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
    /// LM Studio's REST API (0.4+): `POST /api/v1/models/load` with the model's window,
    /// `/api/v1/models/unload` with the instance it made.
    LmStudio,
    /// vLLM's sleep mode (`--enable-sleep-mode`, `VLLM_SERVER_DEV_MODE=1`): an eviction puts
    /// the engine to sleep at this level (`POST /sleep?level=N`: 1 keeps the weights in RAM,
    /// 2 drops them), a load wakes it (`POST /wake_up`).
    VllmSleep { level: u8 },
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

impl Default for Settings {
    /// Every key at its documented default, no models, and no state kept between runs (a
    /// file's default `state_dir` comes from the environment: [`default_state_dir`]).
    fn default() -> Self {
        Settings {
            listen: DEFAULT_LISTEN,
            memory: MemorySettings::default(),
            policies: PolicySettings::default(),
            scheduler: SchedulerSettings::default(),
            server: ServerSettings::default(),
            auth: AuthSettings::default(),
            trace: None,
            state_dir: None,
            models: Vec::new(),
            experiments: Vec::new(),
            source: None,
            discovery_skipped: Vec::new(),
        }
    }
}

impl Default for MemorySettings {
    fn default() -> Self {
        MemorySettings {
            pressure: DEFAULT_PRESSURE,
            devices: BTreeMap::new(),
        }
    }
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            eviction: PolicyRef::Builtin(DEFAULT_EVICTION_POLICY.into()),
            selection: PolicyRef::Builtin(DEFAULT_SELECTION_POLICY.into()),
            compression: PolicyRef::Builtin(DEFAULT_COMPRESSION_POLICY.into()),
            hook_deadline: crate::engine::DEFAULT_HOOK_DEADLINE,
            dir: None,
            cache_dir: None,
            allow: None,
        }
    }
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            max_queue: DEFAULT_MAX_QUEUE,
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
            max_loaded: None,
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            max_body: DEFAULT_MAX_BODY,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
            allow_open: false,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

impl ModelSettings {
    /// A model served by `backend`, every other key at its documented default (no aliases or
    /// tags, priority 0, no TTL, the default context window and parallel slots, on the CPU,
    /// no configured size).
    pub fn new(id: impl Into<String>, backend: BackendSettings) -> Self {
        ModelSettings {
            id: id.into(),
            aliases: Vec::new(),
            tags: Vec::new(),
            priority: 0,
            pinned: false,
            preload: false,
            ttl: None,
            context_tokens: DEFAULT_CONTEXT_TOKENS,
            parallel: DEFAULT_PARALLEL,
            size: None,
            device: CPU_DEVICE.to_string(),
            capabilities: match &backend {
                BackendSettings::Command(c) => Capabilities::from_command(&c.argv),
                _ => Capabilities::openai_default(),
            },
            translate: Vec::new(),
            context_fallback: None,
            backend,
            origin: crate::discover::Origin::Config,
        }
    }

    /// Where its server's memory is read: its process tree, or its container's stats.
    pub fn footprint_source(&self) -> FootprintSource {
        match &self.backend {
            BackendSettings::Command(c) => c.footprint.clone(),
            _ => FootprintSource::Processes,
        }
    }

    /// True when an eviction leaves its weights in the machine's RAM: vLLM asleep at level 1
    /// (its server keeps running and wakes from them), so they count against `[memory.cpu]`
    /// until it wakes.
    pub fn rests_in_ram(&self) -> bool {
        matches!(
            &self.backend,
            BackendSettings::OpenAi(o) if o.control == Control::VllmSleep { level: 1 }
        )
    }
}

impl Settings {
    /// The most models loaded at once on `device`: its own `max_loaded`, else the scheduler's.
    pub fn max_loaded(&self, device: &str) -> Option<u32> {
        self.memory
            .devices
            .get(device)
            .and_then(|d| d.max_loaded)
            .or(self.scheduler.max_loaded)
    }

    /// Reads and validates a config file. Relative paths in it are relative to its folder.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: path.display().to_string(),
            problems: vec![format!("cannot read it: {e}")],
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut settings = Self::from_toml(&text, base, &path.display().to_string())?;
        settings.source = Some(path.to_path_buf());
        Ok(settings)
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
