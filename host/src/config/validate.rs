//! The validation step: raw settings in, typed settings out, every problem recorded with its
//! key's path (all of them, not the first).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use super::raw::*;
use super::*;
use crate::engine::Hook;
use crate::engine::builtin;
use crate::engine::experiment::{Mode, Sticky};
use crate::recorder::{DEFAULT_KEEP, DEFAULT_MAX_BYTES, RecorderSettings};

mod discover;
pub use discover::DEFAULT_DISCOVER_CMD;

pub(super) struct Validator<'a> {
    pub(super) base: &'a Path,
    pub(super) problems: Vec<String>,
}

impl Validator<'_> {
    fn problem(&mut self, path: &str, msg: impl fmt::Display) {
        self.problems.push(format!("{path}: {msg}"));
    }

    pub(super) fn settings(&mut self, raw: RawConfig) -> Settings {
        let listen = raw.listen.map_or(DEFAULT_LISTEN, |text| {
            text.parse().unwrap_or_else(|e| {
                self.problem("listen", format_args!("{text:?} is not host:port ({e})"));
                DEFAULT_LISTEN
            })
        });
        let memory = self.memory(raw.memory);
        let policies = self.policies(raw.policies);
        let scheduler = SchedulerSettings {
            max_queue: raw.scheduler.max_queue.unwrap_or(DEFAULT_MAX_QUEUE),
            queue_timeout: self
                .duration("scheduler.queue_timeout", raw.scheduler.queue_timeout)
                .unwrap_or(DEFAULT_QUEUE_TIMEOUT),
            max_loaded: self.count_cap("scheduler.max_loaded", raw.scheduler.max_loaded),
        };
        let server = ServerSettings {
            max_body: self
                .size("server.max_body", raw.server.max_body)
                .unwrap_or(DEFAULT_MAX_BODY),
            body_timeout: self
                .duration("server.body_timeout", raw.server.body_timeout)
                .unwrap_or(DEFAULT_BODY_TIMEOUT),
            upstream_timeout: self
                .duration("server.upstream_timeout", raw.server.upstream_timeout)
                .unwrap_or(DEFAULT_UPSTREAM_TIMEOUT),
            allow_open: false,
            shutdown_grace: self
                .duration("server.shutdown_grace", raw.server.shutdown_grace)
                .unwrap_or(DEFAULT_SHUTDOWN_GRACE),
        };
        let auth = self.auth(raw.auth);
        let trace = self.trace(raw.trace);
        // An empty `state_dir` keeps nothing between runs.
        let state_dir = match raw.state_dir {
            None => default_state_dir(),
            Some(d) if d.is_empty() => None,
            Some(d) => Some(self.base.join(d)),
        };
        let mut models = Vec::new();
        for (id, m) in raw.models {
            if let Some(m) = self.model(&id, m) {
                models.push(m);
            }
        }
        let discovery_skipped = self.discover(raw.discover, &mut models);
        self.names_unique(&models);
        self.fallbacks(&mut models);
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
            trace,
            state_dir,
            models,
            experiments,
            source: None,
            discovery_skipped,
        }
    }

    /// Each `context_fallback` names another model (an alias becomes its id) with a larger
    /// window, so a chain of them always ends.
    fn fallbacks(&mut self, models: &mut [ModelSettings]) {
        let windows: Vec<(String, Vec<String>, u32)> = models
            .iter()
            .map(|m| (m.id.clone(), m.aliases.clone(), m.context_tokens))
            .collect();
        for m in models.iter_mut() {
            let Some(name) = m.context_fallback.take() else {
                continue;
            };
            let path = format!("models.{}.context_fallback", m.id);
            let Some((id, _, window)) = windows
                .iter()
                .find(|(id, aliases, _)| *id == name || aliases.contains(&name))
            else {
                self.problem(&path, format_args!("{name:?} is not a configured model"));
                continue;
            };
            if *window <= m.context_tokens {
                self.problem(
                    &path,
                    format_args!(
                        "{id} has a window of {window} tokens, no larger than {}'s {}: it could take no prompt that does not fit here",
                        m.id, m.context_tokens
                    ),
                );
                continue;
            }
            m.context_fallback = Some(id.clone());
        }
    }

    fn trace(&mut self, raw: RawTrace) -> Option<RecorderSettings> {
        let max_bytes = self.size("trace.max_bytes", raw.max_bytes);
        if max_bytes == Some(0) {
            self.problem("trace.max_bytes", "must be more than 0");
        }
        let Some(path) = raw.record else {
            if max_bytes.is_some() || raw.keep.is_some() {
                self.problem(
                    "trace",
                    "`max_bytes` and `keep` need `record`, the file to write",
                );
            }
            return None;
        };
        if path.trim().is_empty() {
            self.problem("trace.record", "is empty");
            return None;
        }
        Some(RecorderSettings {
            path: self.base.join(path),
            max_bytes: max_bytes.unwrap_or(DEFAULT_MAX_BYTES),
            keep: raw.keep.unwrap_or(DEFAULT_KEEP),
        })
    }

    fn auth(&mut self, raw: RawAuth) -> AuthSettings {
        let mut keys: Vec<ApiKey> = Vec::new();
        for (i, k) in raw.keys.into_iter().enumerate() {
            let path = format!("auth.keys[{i}]");
            let Some(key) = self.key(&path, "key", k.key, k.key_sha256) else {
                continue;
            };
            if keys.iter().any(|o| o.key == key) {
                self.problem(&path, "is the same key as another");
            }
            keys.push(ApiKey {
                name: k.name.unwrap_or_else(|| format!("key{i}")),
                key,
                priority: k.priority,
            });
        }
        let admin_key = match (&raw.admin_key, &raw.admin_key_sha256) {
            (None, None) => None,
            _ => self.key("auth", "admin_key", raw.admin_key, raw.admin_key_sha256),
        };
        AuthSettings { admin_key, keys }
    }

    /// A key given as `NAME` (its text) or `NAME_sha256` (its digest), exactly one of them.
    fn key(
        &mut self,
        path: &str,
        name: &str,
        text: Option<String>,
        sha256: Option<String>,
    ) -> Option<Sha256Digest> {
        let at = |key: &str| {
            if path == "auth" {
                format!("auth.{key}")
            } else {
                format!("{path}.{key}")
            }
        };
        match (text, sha256) {
            (Some(k), None) if k.trim().is_empty() => {
                self.problem(&at(name), "is empty");
                None
            }
            (Some(k), None) => Some(Sha256Digest::of(&k)),
            (None, Some(h)) => {
                let digest = Sha256Digest::from_hex(&h);
                if digest.is_none() {
                    self.problem(
                        &at(&format!("{name}_sha256")),
                        "is not a SHA-256 digest (64 hex digits; `modelyard key hash` prints one)",
                    );
                }
                digest
            }
            (Some(_), Some(_)) => {
                self.problem(
                    &at(&format!("{name}_sha256")),
                    format_args!("give {name} or {name}_sha256, not both"),
                );
                None
            }
            (None, None) => {
                self.problem(
                    &at(name),
                    format_args!("is missing (or give {name}_sha256)"),
                );
                None
            }
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
            let max_loaded = self.count_cap(&format!("{path}.max_loaded"), d.max_loaded);
            devices.insert(
                name,
                DeviceBudget {
                    budget,
                    reserve,
                    max_loaded,
                },
            );
        }
        MemorySettings { pressure, devices }
    }

    /// A cap on models loaded at once: at least one.
    fn count_cap(&mut self, path: &str, cap: Option<u32>) -> Option<u32> {
        if cap == Some(0) {
            self.problem(
                path,
                "0 would let no model load: give 1 or more, or leave it out",
            );
            return None;
        }
        cap
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
            allow: raw.allow.map(|list| {
                (list.iter().enumerate())
                    .filter_map(|(i, d)| {
                        let digest = (d.strip_prefix("sha256:"))
                            .and_then(Sha256Digest::from_hex)
                            .map(|k| k.0);
                        if digest.is_none() {
                            self.problem(
                                &format!("policies.allow[{i}]"),
                                format_args!(
                                    "{d:?} is not \"sha256:\" and 64 hex digits (`modelyard policy check` prints a file's)"
                                ),
                            );
                        }
                        digest
                    })
                    .collect()
            }),
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
        let parallel = m.parallel.unwrap_or(DEFAULT_PARALLEL);
        if parallel == 0 {
            self.problem(
                &format!("{path}.parallel"),
                "must be at least 1: a model that serves no request at once never answers",
            );
        }
        let backend = match (m.cmd, m.url) {
            (Some(cmd), None) => {
                for (key, set) in [
                    ("api_key", m.api_key.is_some()),
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
                .map(|c| self.container(&path, c, m.cmd_stop, m.footprint))
                .map(|c| {
                    BackendSettings::Command(CommandSettings {
                        model_name: m.use_model_name,
                        ..c
                    })
                })
            }
            (None, Some(url)) => {
                for (key, set) in [
                    ("file", m.file.is_some()),
                    ("env", !m.env.is_empty()),
                    ("cmd_stop", m.cmd_stop.is_some()),
                    ("footprint", m.footprint.is_some()),
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
        let capabilities = self.capabilities(&path, m.capabilities, &backend);
        let translate = self.translate(&path, m.translate);
        if self.problems.len() > before {
            return None;
        }
        Some(ModelSettings {
            id: id.to_string(),
            aliases: m.aliases,
            tags: m.tags,
            priority: m.priority,
            pinned: m.pinned,
            preload: m.preload,
            ttl,
            context_tokens: m.context_tokens.unwrap_or(DEFAULT_CONTEXT_TOKENS),
            parallel,
            size,
            device,
            capabilities,
            translate,
            context_fallback: m.context_fallback,
            backend,
            origin: crate::discover::Origin::Config,
        })
    }

    fn capabilities(
        &mut self,
        path: &str,
        raw: Option<Vec<String>>,
        backend: &BackendSettings,
    ) -> Capabilities {
        let Some(names) = raw else {
            return match backend {
                BackendSettings::Command(c) => Capabilities::from_command(&c.argv),
                _ => Capabilities::openai_default(),
            };
        };
        let path = format!("{path}.capabilities");
        if names.is_empty() {
            self.problem(&path, "is empty: a model that serves nothing is never used");
        }
        let mut caps = Vec::new();
        for name in names {
            match Capability::parse(&name) {
                Some(c) => caps.push(c),
                None => self.problem(
                    &path,
                    format_args!(
                        "{name:?} is not one of {}",
                        Capability::ALL.map(Capability::name).join(", ")
                    ),
                ),
            }
        }
        Capabilities::of(caps)
    }

    fn translate(&mut self, path: &str, names: Vec<String>) -> Vec<Api> {
        let mut apis = Vec::new();
        for name in names {
            match Api::parse(&name) {
                Some(a) if !apis.contains(&a) => apis.push(a),
                Some(_) => {}
                None => self.problem(
                    &format!("{path}.translate"),
                    format_args!(
                        "{name:?} is not one of {}",
                        Api::ALL.map(Api::name).join(", ")
                    ),
                ),
            }
        }
        apis
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
            model_name: None,
            stop_argv: None,
            footprint: FootprintSource::Processes,
        })
    }

    /// `cmd_stop` and `footprint`: what a server that runs in a container needs.
    fn container(
        &mut self,
        path: &str,
        mut c: CommandSettings,
        cmd_stop: Option<String>,
        footprint: Option<String>,
    ) -> CommandSettings {
        if let Some(stop) = cmd_stop {
            match shlex::split(&stop) {
                Some(argv) if !argv.is_empty() => c.stop_argv = Some(argv),
                Some(_) => self.problem(&format!("{path}.cmd_stop"), "is empty"),
                None => self.problem(&format!("{path}.cmd_stop"), "has unbalanced quotes"),
            }
        }
        match footprint.as_deref() {
            None | Some("processes") => {}
            Some(f) => match f.strip_prefix("container:").filter(|n| !n.is_empty()) {
                Some(name) => {
                    let program = Path::new(&c.argv[0])
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default();
                    let runtime = match program {
                        "docker" | "podman" => program.to_string(),
                        _ => crate::backend::container::installed_runtime(),
                    };
                    c.footprint = FootprintSource::Container {
                        runtime,
                        name: name.to_string(),
                    };
                }
                None => self.problem(
                    &format!("{path}.footprint"),
                    format_args!("{f:?} is not `processes` or `container:NAME`"),
                ),
            },
        }
        c
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
            Some("lmstudio") => Control::LmStudio,
            Some("vllm-sleep" | "vllm-sleep:1") => Control::VllmSleep { level: 1 },
            Some("vllm-sleep:2") => Control::VllmSleep { level: 2 },
            Some(other) => {
                self.problem(
                    &format!("{path}.control"),
                    format_args!(
                        "{other:?} is not `none`, `ollama`, `llama-router`, `lmstudio`, \
                         `vllm-sleep` (level 1) or `vllm-sleep:2`"
                    ),
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
