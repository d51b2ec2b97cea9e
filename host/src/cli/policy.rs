//! `modelyard policy check|list|new`: what a policy author runs before dropping a component
//! into `policies/`. The templates `new` writes belong to the SDKs (`cli/sdk/template.rs`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;

use super::sdk::{self, Lang};
use crate::config::Settings;
use crate::engine::{
    DEFAULT_HOOK_DEADLINE, EngineSettings, LoadError, Policy, PolicyEngine, PolicySource, builtin,
};

/// The config `policy list` reads its policies folder from, unless given `--dir`.
pub const DEFAULT_CONFIG: &str = "modelyard.toml";

/// The deadline of `check`'s sample calls.
const CHECK_DEADLINE: std::time::Duration = std::time::Duration::from_millis(500);

/// Loads `file`, prints its contract and hooks, runs each hook once on a sample. Any problem
/// is printed and gives a non-zero exit.
pub fn check(file: &Path) -> anyhow::Result<ExitCode> {
    // A first call warms the instance up; time it, but judge the policy on its answers, and
    // say when it runs slower than a host would allow.
    let engine = PolicyEngine::new(EngineSettings {
        hook_deadline: CHECK_DEADLINE,
        ..EngineSettings::default()
    })?;
    let policy = match load_file(&engine, file) {
        Ok(p) => p,
        Err(e) => {
            println!("rejected: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("policy:   {}", policy.name());
    if let Ok(bytes) = std::fs::read(file) {
        // What `[policies] allow` pins it by.
        let digest = crate::config::Sha256Digest::of(&bytes);
        println!("digest:   sha256:{}", digest.hex());
    }
    let contract = policy.contract();
    let state = if contract.stateful() {
        "stateful: one instance keeps its memory across calls"
    } else {
        "stateless: each call may run on a fresh instance"
    };
    println!(
        "contract: modelyard:policy@{} ({state})",
        contract.version()
    );
    println!("exports:  {}", hook_list(&policy));
    println!("imports:  {}", policy.imports().join(", "));
    if contract.stateful() {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        println!(
            "also:     catalogue (lifecycle): {}; events: {}",
            yes_no(policy.configurable()),
            yes_no(policy.observes())
        );
    }
    let mut ok = true;
    for hook in policy.hooks() {
        let started = Instant::now();
        let outcome = crate::engine::smoke(&policy, hook);
        let micros = started.elapsed().as_micros();
        let slow = if started.elapsed() > DEFAULT_HOOK_DEADLINE {
            format!("; slower than the default {DEFAULT_HOOK_DEADLINE:?} hook deadline")
        } else {
            String::new()
        };
        match outcome {
            Ok(answer) => println!("{hook}: {answer} ({micros} µs{slow})"),
            Err(e) => {
                ok = false;
                println!("{hook}: FAILED: {e}");
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The folder `policy list` shows: `dir` when given, else the `[policies] dir` of `config`
/// (of the demo's config when `config` is the default and not there). `None`: the config
/// names no folder.
pub fn folder_to_list(dir: Option<&Path>, config: &Path) -> anyhow::Result<Option<PathBuf>> {
    if let Some(d) = dir {
        return Ok(Some(d.to_path_buf()));
    }
    let demo = Path::new(super::setup::DEFAULT_DEMO_DIR).join("modelyard.toml");
    let config = if !config.exists() && config == Path::new(DEFAULT_CONFIG) && demo.is_file() {
        demo
    } else {
        config.to_path_buf()
    };
    if !config.exists() {
        anyhow::bail!(
            "{} does not exist: give --config FILE (the folder is its `[policies] dir`) or --dir DIR",
            config.display()
        );
    }
    Ok(Settings::from_file(&config)?.policies.dir)
}

/// Prints the built-in policies and every `.wasm` in `dir` with its hooks or why it is refused.
pub fn list(dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let engine = PolicyEngine::new(EngineSettings::default())?;
    println!("built-in:");
    for name in builtin::NAMES {
        match engine.builtin(name) {
            Some(Ok(p)) => println!("  {name:<16} {}", hook_list(&p)),
            Some(Err(e)) => println!("  {name:<16} BROKEN: {e}"),
            None => {}
        }
    }
    let Some(dir) = dir else {
        println!("(the config sets no policies folder: `[policies] dir`)");
        return Ok(ExitCode::SUCCESS);
    };
    println!("{}:", dir.display());
    let mut files: Vec<_> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    files.sort();
    if files.is_empty() {
        println!("  (no .wasm files)");
    }
    for path in files {
        let shown = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match load_file(&engine, &path) {
            Ok(p) => println!("  {shown:<16} {}", hook_list(&p)),
            Err(e) => println!("  {shown:<16} rejected: {e}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads a policy file, named after its stem.
pub fn load_file(engine: &PolicyEngine, path: &Path) -> Result<Policy, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    engine.load(&name, PolicySource::File(path.to_path_buf()), &bytes)
}

fn hook_list(policy: &Policy) -> String {
    policy
        .hooks()
        .iter()
        .map(|h| h.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `policy new NAME --lang L`: writes a buildable project from the language's template into
/// `dir/NAME`, with a README that says how to build, check and drop it.
pub fn new(name: &str, lang: Lang, dir: &Path) -> anyhow::Result<ExitCode> {
    let root = sdk::write_project(name, lang, dir)?;
    println!("{}", root.display());
    eprintln!(
        "wrote {}; its README.md says how to build it",
        root.display()
    );
    Ok(ExitCode::SUCCESS)
}
