//! `[discover]`: each GGUF found in its folders or Ollama's store becomes a model as if a
//! `[models.ID]` table gave its `cmd` (the section's template), `file`, window and places.
//! Explicit tables win: a find with a configured model's id, alias or file is skipped, and
//! says which. A find that would not validate as a model is skipped too, never a problem that
//! stops the config: the folder is the user's, not the config's.

use std::path::PathBuf;

use super::Validator;
use crate::config::raw::{RawDiscover, RawModel, RawStore};
use crate::config::{BackendSettings, DEFAULT_CONTEXT_TOKENS, ModelSettings};
use crate::discover::{self, Skipped};

/// How a discovered model is started unless `[discover] cmd` says otherwise: llama-server from
/// PATH with the model's window and places.
pub const DEFAULT_DISCOVER_CMD: &str =
    "llama-server -m ${FILE} --port ${PORT} -c ${CONTEXT_TOTAL} -np ${PARALLEL}";

impl Validator<'_> {
    /// Adds what `raw` finds to `models`; returns what it skipped.
    pub(super) fn discover(
        &mut self,
        raw: RawDiscover,
        models: &mut Vec<ModelSettings>,
    ) -> Vec<Skipped> {
        let store = match raw.ollama {
            None | Some(RawStore::On(false)) => None,
            Some(RawStore::On(true)) => Some(discover::default_store()),
            Some(RawStore::At(path)) => Some(self.base.join(path)),
        };
        if raw.dirs.is_empty() && store.is_none() {
            return Vec::new();
        }
        let cmd = raw.cmd.unwrap_or_else(|| DEFAULT_DISCOVER_CMD.to_string());
        if !cmd.contains("${FILE}") {
            self.problem(
                "discover.cmd",
                "never uses ${FILE}: each discovered model's file goes there",
            );
        }
        let window = raw.context_tokens.unwrap_or(DEFAULT_CONTEXT_TOKENS);
        if window == 0 {
            self.problem("discover.context_tokens", "must be at least 1");
        }
        let ttl = self
            .duration("discover.ttl", raw.ttl)
            .filter(|d| !d.is_zero());
        let dirs: Vec<PathBuf> = raw.dirs.iter().map(|d| self.base.join(d)).collect();
        let found = discover::scan(&dirs, store.as_deref());
        let mut skipped = found.skipped;
        for f in found.found {
            if let Some(owner) = owner_of(models, &f.id, &f.file) {
                skipped.push(Skipped {
                    reason: format!("[models.{owner}] names it; the table wins"),
                    path: f.file,
                });
                continue;
            }
            let model = RawModel {
                cmd: Some(cmd.clone()),
                file: Some(f.file.display().to_string()),
                context_tokens: Some(f.trained_context.map_or(window, |t| t.min(window))),
                parallel: raw.parallel,
                device: raw.device.clone(),
                ..RawModel::default()
            };
            // Checked on its own: its problems skip it, they do not stop the config.
            let mut one = Validator {
                base: self.base,
                problems: Vec::new(),
            };
            match one.model(&f.id, model) {
                Some(mut m) if one.problems.is_empty() => {
                    m.origin = f.origin;
                    m.ttl = ttl;
                    models.push(m);
                }
                _ => skipped.push(Skipped {
                    reason: format!("{}: {}", f.id, one.problems.join("; ")),
                    path: f.file,
                }),
            }
        }
        for s in &skipped {
            tracing::warn!(path = %s.path.display(), "discover: skipped: {}", s.reason);
        }
        skipped
    }
}

/// The configured model that has `id` as its id or alias, or serves `file`.
fn owner_of<'m>(models: &'m [ModelSettings], id: &str, file: &std::path::Path) -> Option<&'m str> {
    models
        .iter()
        .find(|m| {
            m.id == id
                || m.aliases.iter().any(|a| a == id)
                || matches!(&m.backend, BackendSettings::Command(c) if c.file.as_deref() == Some(file))
        })
        .map(|m| m.id.as_str())
}
