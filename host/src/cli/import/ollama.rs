//! `modelyard import ollama [--store PATH]`: a `[models."NAME:TAG"]` table for each model in
//! Ollama's store, its `file` the blob Ollama keeps (read where it lies, never copied), its
//! window the trained context capped at the default. What cannot be served (a dangling
//! manifest, a blob that is no GGUF) is listed at the top, with its path. For a store that
//! changes, `[discover] ollama = true` finds the same models at every reload instead.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::{DEFAULT_CONTEXT_TOKENS, DEFAULT_DISCOVER_CMD};
use crate::discover;

/// The config text for the models in `store`, started with `cmd`.
pub fn ollama(store: &Path, cmd: &str) -> (String, usize) {
    let found = discover::scan(&[], Some(store));
    let mut toml = format!(
        "# Written by `modelyard import ollama` from {}.\n\
         # Each model's file is a blob in Ollama's store, served where it lies.\n",
        store.display()
    );
    for s in &found.skipped {
        toml.push_str(&format!(
            "# not imported: {}: {}\n",
            s.path.display(),
            s.reason
        ));
    }
    for f in &found.found {
        let window = f
            .trained_context
            .map_or(DEFAULT_CONTEXT_TOKENS, |t| t.min(DEFAULT_CONTEXT_TOKENS));
        let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
        toml.push_str(&format!(
            "\n[models.{}]{}\ncmd = {}\nfile = {}\ncontext_tokens = {window}\n",
            quote(&f.id),
            f.architecture
                .as_ref()
                .map(|a| format!(
                    "  # {a}, trained on {} tokens",
                    f.trained_context.unwrap_or(0)
                ))
                .unwrap_or_default(),
            quote(cmd),
            quote(&f.file.display().to_string()),
        ));
    }
    (toml, found.skipped.len())
}

/// Writes the import to `output` and checks it as `serve` would.
pub fn run(
    store: Option<&Path>,
    cmd: Option<&str>,
    output: &Path,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let store = store.map_or_else(discover::default_store, Path::to_path_buf);
    if output.exists() && !force {
        anyhow::bail!("{} exists; pass --force to overwrite it", output.display());
    }
    let (toml, skipped) = ollama(&store, cmd.unwrap_or(DEFAULT_DISCOVER_CMD));
    std::fs::write(output, &toml).with_context(|| format!("writing {}", output.display()))?;
    eprintln!(
        "wrote {} from {} ({skipped} not imported, listed at its top)",
        output.display(),
        store.display()
    );
    Ok(super::check_written(output))
}
