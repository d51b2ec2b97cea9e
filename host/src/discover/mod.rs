//! Models the user already has: every GGUF in the folders of `[discover] dirs`, and every model
//! Ollama has pulled into its store (`[discover] ollama`), found when the config is read (so a
//! reload, SIGHUP or `POST /admin/discover` rescans). It only reads: GGUF headers (bounded, see
//! [`crate::estimate::gguf`]) and Ollama's manifests; Ollama's blobs are served where they lie,
//! never copied. A file or manifest that cannot be read is reported with its path and skipped;
//! nothing else is affected. The config turns each find into a model (`config/validate.rs`).

mod folder;
mod ollama;

use std::path::{Path, PathBuf};

pub use ollama::default_store;

/// Where a model came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Origin {
    /// A `[models.*]` table.
    #[default]
    Config,
    /// A GGUF found in this `[discover] dirs` folder.
    Folder(PathBuf),
    /// A model in this Ollama store.
    Ollama(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Config => f.write_str("config"),
            Origin::Folder(dir) => write!(f, "folder {}", dir.display()),
            Origin::Ollama(store) => write!(f, "ollama {}", store.display()),
        }
    }
}

/// One model found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The file's name without `.gguf`, or Ollama's `name:tag` (with its namespace when it is
    /// not `library`, and its registry when it is not Ollama's).
    pub id: String,
    pub file: PathBuf,
    /// `general.architecture` from the header.
    pub architecture: Option<String>,
    /// The context the model was trained with (`{arch}.context_length`).
    pub trained_context: Option<u32>,
    pub origin: Origin,
}

/// Something found that could not become a model, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    pub found: Vec<Found>,
    pub skipped: Vec<Skipped>,
}

impl Discovery {
    fn skip(&mut self, path: &Path, reason: impl Into<String>) {
        self.skipped.push(Skipped {
            path: path.to_path_buf(),
            reason: reason.into(),
        });
    }

    /// Adds `found` unless an earlier find took its id (then it is skipped, saying which).
    fn add(&mut self, found: Found) {
        if let Some(first) = self.found.iter().find(|f| f.id == found.id) {
            let reason = format!(
                "the id {} is taken by {} ({})",
                found.id,
                first.file.display(),
                first.origin
            );
            self.skip(&found.file, reason);
        } else {
            self.found.push(found);
        }
    }
}

/// Scans `dirs` (in order) and then the Ollama store, if any.
pub fn scan(dirs: &[PathBuf], ollama_store: Option<&Path>) -> Discovery {
    let mut d = Discovery::default();
    for dir in dirs {
        folder::scan(dir, &mut d);
    }
    if let Some(store) = ollama_store {
        ollama::scan(store, &mut d);
    }
    d
}

/// Reads what a discovered file's header says; `Err` says why it is no model.
fn header(file: &Path) -> Result<(Option<String>, Option<u32>), String> {
    let h = crate::estimate::gguf::read(file).map_err(|e| format!("{e:#}"))?;
    if h.tensors.is_empty() {
        return Err("a GGUF without tensors (a vocabulary or adapter file, not a model)".into());
    }
    let context = h
        .arch_number("context_length")
        .and_then(|n| u32::try_from(n).ok());
    Ok((h.architecture().map(str::to_string), context))
}

#[cfg(test)]
mod tests;
