//! Reads a policy template's README for its build commands and its component, and runs the
//! build exactly as documented: the SDK tests and the languages benchmark build what a user
//! following the README would (the benchmark includes this file by path).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use modelyard::cli::sdk::Tools;

/// The build commands a template's README documents: the fenced block after the line that
/// ends with "from this folder:".
pub fn documented_build(readme: &str) -> Vec<String> {
    let mut lines = readme
        .lines()
        .skip_while(|l| !l.ends_with("from this folder:"));
    if lines.next().is_none() {
        return Vec::new();
    }
    lines
        .skip_while(|l| !l.starts_with("```"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .map(str::to_string)
        .collect()
}

/// The component a template's README checks with `modelyard policy check PATH`.
pub fn documented_component(readme: &str) -> Option<&str> {
    readme
        .lines()
        .find_map(|l| l.strip_prefix("modelyard policy check "))
        .map(str::trim)
}

/// Runs the build commands `project`'s README documents, with `tools` in the environment,
/// and returns the component it names and how long the build took.
pub fn build_as_documented(project: &Path, tools: &Tools) -> anyhow::Result<(PathBuf, Duration)> {
    let readme_path = project.join("README.md");
    let readme = std::fs::read_to_string(&readme_path)
        .with_context(|| format!("reading {}", readme_path.display()))?;
    let commands = documented_build(&readme);
    if commands.is_empty() {
        anyhow::bail!("{} documents no build", readme_path.display());
    }
    let began = Instant::now();
    for command in commands {
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", &command])
            .current_dir(project)
            // The README's output path is the project's own target folder.
            .env_remove("CARGO_TARGET_DIR");
        let out = tools
            .apply(&mut cmd)
            .output()
            .with_context(|| format!("running `{command}`"))?;
        if !out.status.success() {
            anyhow::bail!(
                "`{command}` failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let took = began.elapsed();
    let wasm = documented_component(&readme)
        .map(|p| project.join(p))
        .with_context(|| format!("{} names no component to check", readme_path.display()))?;
    if !wasm.is_file() {
        anyhow::bail!("the build did not write {}", wasm.display());
    }
    Ok((wasm, took))
}
