//! Config reload without a restart: `serve` watches its config file (and reloads on SIGHUP);
//! each change is validated whole, then applied live or rejected whole. Reading the config
//! scans `[discover]`'s folders and Ollama's store, so SIGHUP and `POST /admin/discover` apply
//! the file even when it is unchanged, to pick up models that came or went.
//!
//! What it promises: an invalid file (or a deleted one) changes nothing: the config that
//! serves keeps serving, and the rejection, with every problem's key path, is logged and shown
//! by `/admin/config`. A valid one applies at once: models added, removed and re-tuned as
//! [`Scheduler::reconfigure`] says (a model whose server must change restarts when idle, never
//! mid-request), client and admin keys, the hooks' configured policies and the digests their
//! folder's files must have (`[policies] allow`), budgets, queueing and HTTP limits. A few settings are fixed for the host's life (the address it listens on, its
//! state folder, its trace recording, the policy engine's folder, cache and deadline, the
//! experiments it started with): a change to one is applied with the rest and listed as
//! waiting for a restart. It knows nothing of HTTP: the proxy reads [`ConfigStatus`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use serde::Serialize;

use crate::config::{PolicyRef, Settings};
use crate::engine::{Hook, HookMap, Policy, PolicyEngine, PolicySet};
use crate::scheduler::{Reconfigured, Scheduler};

/// How long the file must be quiet before it is read: an editor's save is several events.
pub const CONFIG_DEBOUNCE: Duration = Duration::from_millis(250);

/// Loads the policies the config names for each hook: the defaults a policies folder overrides.
pub fn policy_defaults(
    engine: &PolicyEngine,
    settings: &Settings,
) -> anyhow::Result<HookMap<Option<Arc<Policy>>>> {
    let mut out: HookMap<Option<Arc<Policy>>> = HookMap::default();
    let mut loaded: BTreeMap<String, Arc<Policy>> = BTreeMap::new();
    for (hook, choice) in [
        (Hook::ChooseEviction, &settings.policies.eviction),
        (Hook::SelectModel, &settings.policies.selection),
        (Hook::CompressContext, &settings.policies.compression),
    ] {
        let key = choice.to_string();
        let policy = match choice {
            PolicyRef::Fallback => None,
            _ if loaded.contains_key(&key) => loaded.get(&key).cloned(),
            PolicyRef::Builtin(name) => Some(Arc::new(
                engine
                    .resolve(name, Path::new("."))
                    .map_err(anyhow::Error::msg)?,
            )),
            PolicyRef::File(path) => Some(Arc::new(
                engine
                    .resolve(&path.display().to_string(), Path::new("."))
                    .map_err(anyhow::Error::msg)?,
            )),
        };
        if let Some(p) = &policy {
            if !p.exports(hook) {
                anyhow::bail!("policy {} does not export {hook}", p.name());
            }
            loaded.insert(key, p.clone());
        }
        tracing::info!(hook = %hook, policy = %choice, "configured policy");
        out[hook] = policy;
    }
    Ok(out)
}

/// What `/admin/config` says: which version of the file serves, what the last reload
/// changed, and the last rejection.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConfigReport {
    /// The file, if the host was started from one.
    pub path: Option<String>,
    /// 1 for the config the host started with, one more for each reload applied.
    pub version: u64,
    /// SHA-256 of the file's text that serves.
    pub sha256: Option<String>,
    /// When that version began to serve (RFC 3339).
    pub applied_at: String,
    /// What the last applied reload changed in the models.
    pub last_change: Option<Reconfigured>,
    /// Keys changed since the start that take effect only at the next restart.
    pub restart_needed: Vec<String>,
    /// The last file that was refused, if it came after the version that serves.
    pub last_rejection: Option<Rejection>,
    /// The models `[discover]` added to the version that serves.
    pub discovered: Vec<Discovered>,
    /// What `[discover]` found but could not serve, with why.
    pub discovery_skipped: Vec<crate::discover::Skipped>,
}

/// A model `[discover]` found.
#[derive(Debug, Clone, Serialize)]
pub struct Discovered {
    pub id: String,
    pub file: Option<String>,
    /// `folder DIR` or `ollama STORE`.
    pub source: String,
}

impl ConfigReport {
    /// Notes what `[discover]` made of `settings`.
    fn discovery(&mut self, settings: &Settings) {
        (self.discovered, self.discovery_skipped) = discovery_of(settings);
    }
}

/// The models `[discover]` added to `settings`, and what it skipped.
fn discovery_of(settings: &Settings) -> (Vec<Discovered>, Vec<crate::discover::Skipped>) {
    use crate::config::BackendSettings;
    use crate::discover::Origin;
    let found = (settings.models.iter())
        .filter(|m| m.origin != Origin::Config)
        .map(|m| Discovered {
            id: m.id.clone(),
            file: match &m.backend {
                BackendSettings::Command(c) => c.file.as_ref().map(|f| f.display().to_string()),
                _ => None,
            },
            source: m.origin.to_string(),
        })
        .collect();
    (found, settings.discovery_skipped.clone())
}

/// A config file that was refused, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    pub at: String,
    /// Every problem, each with its key path.
    pub problems: Vec<String>,
}

/// The config's state, shared by the reloader and `/admin/config`.
#[derive(Debug, Default)]
pub struct ConfigStatus {
    report: Mutex<ConfigReport>,
}

impl ConfigStatus {
    /// Version 1: `settings` as the host starts on them.
    pub fn started(settings: &Settings) -> Self {
        let path = settings.source.as_ref();
        let sha256 = path.and_then(|p| std::fs::read(p).ok()).map(|b| digest(&b));
        let mut report = ConfigReport {
            path: path.map(|p| p.display().to_string()),
            version: 1,
            sha256,
            applied_at: now(),
            ..ConfigReport::default()
        };
        report.discovery(settings);
        Self {
            report: Mutex::new(report),
        }
    }

    /// What `/admin/config` shows.
    pub fn report(&self) -> ConfigReport {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConfigReport> {
        self.report.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What one reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied as this version.
    Applied(u64),
    /// The file is what serves already.
    Unchanged,
    /// Refused: nothing changed.
    Rejected(Vec<String>),
}

/// Reads the config file again and applies it, or refuses it.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    scheduler: Scheduler,
    policies: Arc<PolicySet>,
    status: Arc<ConfigStatus>,
    /// The settings the host started with: what the fixed keys are compared against.
    started: Arc<Settings>,
    /// One reload at a time.
    busy: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// A reloader of `path` for a host that started on `scheduler`'s settings.
    pub fn new(
        path: PathBuf,
        scheduler: Scheduler,
        policies: Arc<PolicySet>,
        status: Arc<ConfigStatus>,
    ) -> Self {
        let started = scheduler.settings();
        Self {
            path,
            scheduler,
            policies,
            status,
            started,
            busy: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads the file and applies it if it is valid and new.
    pub async fn reload(&self) -> Outcome {
        self.read_and_apply(false).await
    }

    /// Reads the file and applies it if it is valid, new or not, so that `[discover]` scans its
    /// folders and Ollama's store again (`POST /admin/discover`, SIGHUP).
    pub async fn rescan(&self) -> Outcome {
        self.read_and_apply(true).await
    }

    async fn read_and_apply(&self, even_unchanged: bool) -> Outcome {
        let _one = self.busy.lock().await;
        let outcome = match std::fs::read(&self.path) {
            Err(e) => Err(vec![format!(
                "{}: cannot read it ({e}); the version that serves keeps serving",
                self.path.display()
            )]),
            Ok(bytes) if !even_unchanged && Some(digest(&bytes)) == self.status.lock().sha256 => {
                return Outcome::Unchanged;
            }
            Ok(bytes) => self.apply(&bytes),
        };
        match outcome {
            Ok(version) => Outcome::Applied(version),
            Err(problems) => {
                tracing::warn!(
                    path = %self.path.display(),
                    problems = %problems.join("; "),
                    "config reload rejected; the old config keeps serving"
                );
                self.status.lock().last_rejection = Some(Rejection {
                    at: now(),
                    problems: problems.clone(),
                });
                Outcome::Rejected(problems)
            }
        }
    }

    /// Validates `bytes` whole, then applies them; every problem otherwise.
    fn apply(&self, bytes: &[u8]) -> Result<u64, Vec<String>> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| vec![format!("{}: not UTF-8 ({e})", self.path.display())])?;
        let base = self.path.parent().unwrap_or(Path::new("."));
        let mut settings = Settings::from_toml(text, base, &self.path.display().to_string())
            .map_err(|e| e.problems)?;
        settings.source = Some(self.path.clone());
        let now_serving = self.scheduler.settings();
        settings.server.allow_open = now_serving.server.allow_open;
        // The address the host listens on stays: the rule that guards it must still hold.
        if let Some(why) = open_without_keys(self.started.listen, &settings) {
            return Err(vec![why]);
        }
        let engine = self.policies.engine();
        let changed_hooks: Vec<Hook> = Hook::ALL
            .into_iter()
            .filter(|&h| policy_ref(&now_serving, h) != policy_ref(&settings, h))
            .collect();
        let defaults = if changed_hooks.is_empty() {
            None
        } else {
            Some(policy_defaults(engine, &settings).map_err(|e| vec![format!("policies: {e:#}")])?)
        };
        let restart_needed = fixed_keys_changed(&self.started, &settings);
        let allow = settings.policies.allow.clone();
        let (discovered, discovery_skipped) = discovery_of(&settings);
        let change = self.scheduler.reconfigure(settings);
        self.policies.set_allow(allow);
        if let Some(defaults) = defaults {
            for hook in changed_hooks {
                self.policies.set_default(hook, defaults[hook].clone());
            }
        }
        let mut report = self.status.lock();
        report.version += 1;
        report.sha256 = Some(digest(bytes));
        report.applied_at = now();
        report.last_change = Some(change);
        report.last_rejection = None;
        report.restart_needed = restart_needed;
        report.discovered = discovered;
        report.discovery_skipped = discovery_skipped;
        tracing::info!(
            version = report.version,
            restart_needed = ?report.restart_needed,
            "config reloaded"
        );
        Ok(report.version)
    }

    /// Reloads whenever the file changes (its folder is watched: editors replace files) and on
    /// SIGHUP, until the returned guard is dropped.
    pub fn watch(
        self: &Arc<Self>,
    ) -> anyhow::Result<Debouncer<notify_debouncer_mini::notify::RecommendedWatcher>> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = self.path.file_name().map(|n| n.to_os_string());
        let rt = tokio::runtime::Handle::current();
        let me = Arc::downgrade(self);
        let mut debouncer = new_debouncer(CONFIG_DEBOUNCE, move |res: DebounceEventResult| {
            let ours = match &res {
                Ok(events) => events.iter().any(|e| e.path.file_name() == name.as_deref()),
                Err(e) => {
                    tracing::warn!(error = %e, "watching the config file");
                    false
                }
            };
            if let (true, Some(me)) = (ours, me.upgrade()) {
                rt.spawn(async move { me.reload().await });
            }
        })?;
        debouncer
            .watcher()
            .watch(&dir, RecursiveMode::NonRecursive)?;
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::warn!("cannot listen for SIGHUP; the config reloads on change only");
                return;
            };
            while hup.recv().await.is_some() {
                let Some(me) = me.upgrade() else { return };
                tracing::info!("SIGHUP: reloading the config and rescanning [discover]");
                me.rescan().await;
            }
        });
        tracing::info!(path = %self.path.display(), "watching the config (and SIGHUP)");
        Ok(debouncer)
    }
}

fn policy_ref(s: &Settings, hook: Hook) -> String {
    match hook {
        Hook::ChooseEviction => s.policies.eviction.to_string(),
        Hook::SelectModel => s.policies.selection.to_string(),
        Hook::CompressContext => s.policies.compression.to_string(),
    }
}

/// The keys fixed for the host's life that differ between the start and `new`.
fn fixed_keys_changed(started: &Settings, new: &Settings) -> Vec<String> {
    let differs = |a: String, b: String| a != b;
    let mut keys = Vec::new();
    for (key, changed) in [
        ("listen", started.listen != new.listen),
        ("state_dir", started.state_dir != new.state_dir),
        (
            "trace",
            differs(format!("{:?}", started.trace), format!("{:?}", new.trace)),
        ),
        ("policies.dir", started.policies.dir != new.policies.dir),
        (
            "policies.cache_dir",
            started.policies.cache_dir != new.policies.cache_dir,
        ),
        (
            "policies.hook_deadline",
            started.policies.hook_deadline != new.policies.hook_deadline,
        ),
        (
            "experiments",
            differs(
                format!("{:?}", started.experiments),
                format!("{:?}", new.experiments),
            ),
        ),
    ] {
        if changed {
            keys.push(key.to_string());
        }
    }
    keys
}

/// Why `settings` may not serve on `listen`, if it may not: an address others can reach needs
/// client and admin keys, unless the host was started with `--allow-open`.
pub fn open_without_keys(listen: std::net::SocketAddr, settings: &Settings) -> Option<String> {
    if listen.ip().is_loopback() || settings.server.allow_open {
        return None;
    }
    let mut missing = Vec::new();
    if settings.auth.keys.is_empty() {
        missing.push("[auth] keys (for /v1 and /api)");
    }
    if settings.auth.admin_key.is_none() {
        missing.push("[auth] admin_key (for /admin and /ui)");
    }
    (!missing.is_empty()).then(|| {
        format!(
            "refusing to serve {listen} without {}: set them, listen on 127.0.0.1, or pass --allow-open",
            missing.join(" or ")
        )
    })
}

fn digest(bytes: &[u8]) -> String {
    crate::config::Sha256Digest::of(bytes).hex()
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Settings {
        Settings::from_toml(text, Path::new("."), "t").expect("valid")
    }

    #[test]
    fn the_keys_fixed_for_the_hosts_life_are_named_and_the_rest_are_not() {
        let start = parse("listen = \"127.0.0.1:8080\"\n[models.a]\ncmd = \"x ${PORT}\"\n");
        let same = parse(
            "listen = \"127.0.0.1:8080\"\n[scheduler]\nmax_queue = 9\n[models.b]\ncmd = \"y ${PORT}\"\n",
        );
        assert!(fixed_keys_changed(&start, &same).is_empty());
        let moved = parse(
            "listen = \"127.0.0.1:9090\"\n[policies]\nhook_deadline = \"20ms\"\n[models.a]\ncmd = \"x ${PORT}\"\n",
        );
        assert_eq!(
            fixed_keys_changed(&start, &moved),
            ["listen", "policies.hook_deadline"]
        );
    }

    #[test]
    fn a_reachable_address_keeps_needing_both_keys() {
        let listen: std::net::SocketAddr = "0.0.0.0:8080".parse().expect("an address");
        let keyed = parse(
            "[auth]\nadmin_key = \"a\"\nkeys = [{ key = \"k\", name = \"n\" }]\n[models.a]\ncmd = \"x ${PORT}\"\n",
        );
        assert_eq!(open_without_keys(listen, &keyed), None);
        let open = parse("[auth]\nadmin_key = \"a\"\n[models.a]\ncmd = \"x ${PORT}\"\n");
        let why = open_without_keys(listen, &open).expect("refused");
        assert!(why.contains("[auth] keys"), "{why}");
        assert_eq!(
            open_without_keys("127.0.0.1:8080".parse().expect("an address"), &open),
            None
        );
        let mut allowed = open;
        allowed.server.allow_open = true;
        assert_eq!(open_without_keys(listen, &allowed), None);
    }
}
