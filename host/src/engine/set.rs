//! The policy set: which component serves each hook, kept in step with a folder of `.wasm`
//! files while the host runs.
//!
//! Every valid component in the folder serves the hooks it exports; when several export one
//! hook, the most recently written wins. A hook no file serves falls back to the configured
//! default. A new or changed file is compiled and checked off the request path (on the
//! watcher's thread) and swapped in atomically: calls in flight finish on the policy they
//! started with. A file that fails (not wasm, another contract, a failing smoke call) is
//! rejected with its reason, and whatever it replaced keeps serving. Models are never touched.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Hook, HookMap, Hooks, Policy, PolicyEngine, PolicySource};

/// How long the folder must be quiet before it is rescanned: editors and `cp` write in steps.
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(50);
/// Reload events kept for `/admin/policies`.
const EVENTS_KEPT: usize = 64;

#[derive(Debug)]
struct FileEntry {
    hash: [u8; 32],
    modified: SystemTime,
    /// The last component this file held that loaded; it keeps serving through a bad rewrite.
    good: Option<Arc<Policy>>,
    good_hash: Option<[u8; 32]>,
    /// Why the file's current bytes were refused, if they were.
    error: Option<String>,
}

impl FileEntry {
    /// The entry of `path`, made if new, now at `hash` as of `modified`.
    fn seen<'a>(
        files: &'a mut BTreeMap<PathBuf, FileEntry>,
        path: &Path,
        hash: [u8; 32],
        modified: SystemTime,
    ) -> &'a mut FileEntry {
        let entry = files.entry(path.to_path_buf()).or_insert(FileEntry {
            hash,
            modified,
            good: None,
            good_hash: None,
            error: None,
        });
        entry.hash = hash;
        entry.modified = modified;
        entry
    }
}

/// One file as `/admin/policies` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub path: String,
    /// `serving`, `loaded` (valid, but other files win its hooks), or `rejected`.
    pub state: &'static str,
    pub exports: Vec<&'static str>,
    pub serving: Vec<&'static str>,
    /// SHA-256 of the bytes of the version that loaded (and serves, if any hook is served).
    pub loaded_sha256: Option<String>,
    pub error: Option<String>,
}

/// Something the set did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadEvent {
    pub at: String,
    pub file: String,
    /// `loaded`, `rejected`, `removed`, `serving`.
    pub kind: &'static str,
    pub detail: String,
}

/// The hooks' policies, with a folder watched for changes.
#[derive(Debug)]
pub struct PolicySet {
    engine: PolicyEngine,
    hooks: Arc<Hooks>,
    defaults: Mutex<HookMap<Option<Arc<Policy>>>>,
    dir: Option<PathBuf>,
    files: Mutex<BTreeMap<PathBuf, FileEntry>>,
    events: Mutex<VecDeque<ReloadEvent>>,
    /// The digests a file must have to be loaded (`[policies] allow`); `None` loads any.
    allow: Mutex<Option<Vec<[u8; 32]>>>,
}

impl PolicySet {
    /// A set serving `defaults` (by hook), overridden by the components in `dir`.
    pub fn new(
        engine: PolicyEngine,
        hooks: Arc<Hooks>,
        defaults: HookMap<Option<Arc<Policy>>>,
        dir: Option<PathBuf>,
    ) -> Self {
        Self::with_allow(engine, hooks, defaults, dir, None)
    }

    /// [`PolicySet::new`], loading from `dir` only files whose SHA-256 is in `allow` (when
    /// given): any other is rejected, its digest in the message, before it is compiled.
    pub fn with_allow(
        engine: PolicyEngine,
        hooks: Arc<Hooks>,
        defaults: HookMap<Option<Arc<Policy>>>,
        dir: Option<PathBuf>,
        allow: Option<Vec<[u8; 32]>>,
    ) -> Self {
        let set = Self {
            engine,
            hooks,
            defaults: Mutex::new(defaults),
            dir,
            files: Mutex::new(BTreeMap::new()),
            events: Mutex::new(VecDeque::new()),
            allow: Mutex::new(allow),
        };
        set.rescan();
        set
    }

    /// Loads only files with these digests from now on (a config reload): every file is
    /// judged again.
    pub fn set_allow(&self, allow: Option<Vec<[u8; 32]>>) {
        let mut current = self.allow.lock().unwrap_or_else(|e| e.into_inner());
        if *current == allow {
            return;
        }
        *current = allow;
        drop(current);
        self.files.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.rescan();
    }

    pub fn hooks(&self) -> &Arc<Hooks> {
        &self.hooks
    }

    pub fn engine(&self) -> &PolicyEngine {
        &self.engine
    }

    fn event(&self, file: &Path, kind: &'static str, detail: String) {
        match kind {
            "rejected" => tracing::warn!(file = %file.display(), "policy rejected: {detail}"),
            _ => tracing::info!(file = %file.display(), event = kind, "{detail}"),
        }
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() == EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back(ReloadEvent {
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            file: file.display().to_string(),
            kind,
            detail,
        });
    }

    /// Brings the set in step with the folder: loads new and changed files, forgets removed
    /// ones, and points each hook at its winner. Safe to call at any time.
    pub fn rescan(&self) {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let present: Vec<PathBuf> = self.dir.as_deref().map(wasm_files).unwrap_or_default();
        let gone: Vec<PathBuf> = files
            .keys()
            .filter(|p| !present.contains(p))
            .cloned()
            .collect();
        for path in gone {
            files.remove(&path);
            self.event(&path, "removed", "no longer serves".into());
        }
        for path in present {
            // A file vanishing or being rewritten mid-read is seen again at the next event.
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            if bytes.is_empty() {
                continue; // being written: truncated, not yet filled
            }
            let hash: [u8; 32] = Sha256::digest(&bytes).into();
            if files.get(&path).is_some_and(|e| e.hash == hash) {
                continue;
            }
            let modified = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .unwrap_or_else(|_| SystemTime::now());
            let allowed = (self.allow.lock().unwrap_or_else(|e| e.into_inner()))
                .as_ref()
                .is_none_or(|a| a.contains(&hash));
            if !allowed {
                let entry = FileEntry::seen(&mut files, &path, hash, modified);
                let digest = super::cache::hex(&hash);
                let keeps = if entry.good.is_some() {
                    "; its previous version keeps serving"
                } else {
                    ""
                };
                let why = format!("sha256:{digest} is not in [policies] allow{keeps}");
                entry.error = Some(why.clone());
                self.event(&path, "rejected", why);
                continue;
            }
            let name = path.file_stem().map_or_else(
                || "policy".to_string(),
                |s| s.to_string_lossy().into_owned(),
            );
            let began = std::time::Instant::now();
            let loaded = self
                .engine
                .load(&name, PolicySource::File(path.clone()), &bytes);
            // Bytes that change under the read (a writer not done yet) are not judged: the
            // writer's next event brings the rest. A partly written file can fail to parse in
            // microseconds, before its size moves, so a failure is only judged once the bytes
            // have stayed the same for a debounce period.
            if loaded.is_err() && !settled(&path, &bytes) {
                continue;
            }
            let entry = FileEntry::seen(&mut files, &path, hash, modified);
            match loaded {
                Ok(p) => {
                    let hooks: Vec<&str> = p.hooks().iter().map(|h| h.name()).collect();
                    entry.good = Some(Arc::new(p));
                    entry.good_hash = Some(hash);
                    entry.error = None;
                    let detail = format!(
                        "exports {} ({} ms)",
                        hooks.join(", "),
                        began.elapsed().as_millis()
                    );
                    self.event(&path, "loaded", detail);
                }
                Err(e) => {
                    let keeps = if entry.good.is_some() {
                        "; its previous version keeps serving"
                    } else {
                        ""
                    };
                    entry.error = Some(e.to_string());
                    self.event(&path, "rejected", format!("{e}{keeps}"));
                }
            }
        }
        for hook in Hook::ALL {
            let winner = files
                .iter()
                .filter_map(|(path, e)| Some((path, e.modified, e.good.as_ref()?)))
                .filter(|(_, _, p)| p.exports(hook))
                .max_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)));
            let chosen = match winner {
                Some((_, _, p)) => Some(p.clone()),
                None => self.defaults.lock().unwrap_or_else(|e| e.into_inner())[hook].clone(),
            };
            let current = self.hooks.get(hook);
            let same = match (&current, &chosen) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if !same {
                let name = chosen.as_ref().map_or_else(
                    || "the native default".to_string(),
                    |p| p.name().to_string(),
                );
                self.hooks.set(hook, chosen);
                tracing::info!(hook = %hook, policy = %name, "now serving");
            }
        }
    }

    /// Makes `policy` the default for `hook` (what serves it when no file does), at once.
    pub fn set_default(&self, hook: Hook, policy: Option<Arc<Policy>>) {
        self.defaults.lock().unwrap_or_else(|e| e.into_inner())[hook] = policy;
        self.rescan();
    }

    /// Watches the folder (if any) until the returned guard is dropped.
    pub fn watch(
        self: &Arc<Self>,
    ) -> anyhow::Result<Option<Debouncer<notify_debouncer_mini::notify::RecommendedWatcher>>> {
        let Some(dir) = self.dir.clone() else {
            return Ok(None);
        };
        let set = Arc::downgrade(self);
        let mut debouncer = new_debouncer(RELOAD_DEBOUNCE, move |res: DebounceEventResult| {
            if let Err(e) = &res {
                tracing::warn!(error = %e, "watching the policies folder");
            }
            if let Some(set) = set.upgrade() {
                set.rescan();
            }
        })?;
        debouncer
            .watcher()
            .watch(&dir, RecursiveMode::NonRecursive)?;
        tracing::info!(dir = %dir.display(), "watching for policies");
        Ok(Some(debouncer))
    }

    /// Every file, what it exports and serves, or why it was refused.
    pub fn report(&self) -> Vec<FileReport> {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files
            .iter()
            .map(|(path, e)| {
                let exports: Vec<&'static str> = e
                    .good
                    .as_ref()
                    .map(|p| p.hooks().iter().map(|h| h.name()).collect())
                    .unwrap_or_default();
                let serving: Vec<&'static str> = Hook::ALL
                    .into_iter()
                    .filter(|h| match (self.hooks.get(*h), &e.good) {
                        (Some(a), Some(b)) => Arc::ptr_eq(&a, b),
                        _ => false,
                    })
                    .map(Hook::name)
                    .collect();
                let state = if e.error.is_some() {
                    "rejected"
                } else if serving.is_empty() {
                    "loaded"
                } else {
                    "serving"
                };
                FileReport {
                    path: path.display().to_string(),
                    state,
                    exports,
                    serving,
                    loaded_sha256: e.good_hash.map(|h| super::cache::hex(&h)),
                    error: e.error.clone(),
                }
            })
            .collect()
    }

    /// Recent loads, rejections and removals.
    pub fn events(&self) -> Vec<ReloadEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// The `.wasm` files directly in `dir`, hidden ones left out.
fn wasm_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "wasm")
                && p.file_name()
                    .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
                && p.is_file()
        })
        .collect();
    out.sort();
    out
}

/// Whether `path` still holds exactly `bytes` after a quiet period (one debounce).
fn settled(path: &Path, bytes: &[u8]) -> bool {
    std::thread::sleep(RELOAD_DEBOUNCE);
    std::fs::read(path).is_ok_and(|now| now == bytes)
}
