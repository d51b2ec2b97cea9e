//! `modelyard policy check|list`: what a policy author runs before dropping a component into
//! `policies/`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;

use crate::engine::types::{EvictionDecision, Selection};
use crate::engine::{
    CONTRACT_VERSION, DEFAULT_HOOK_DEADLINE, EngineSettings, Hook, LoadError, Policy, PolicyEngine,
    PolicyError, PolicySource, builtin, sample,
};

/// Where users drop their policies.
pub const DEFAULT_POLICY_DIR: &str = "policies";

/// The deadline of `check`'s sample calls.
const CHECK_DEADLINE: std::time::Duration = std::time::Duration::from_millis(500);

/// Models in the sample scenario `check` runs.
const SAMPLE_MODELS: usize = 6;

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
    println!("contract: modelyard:policy@{CONTRACT_VERSION}");
    println!("exports:  {}", hook_list(&policy));
    let mut ok = true;
    for hook in policy.hooks() {
        let started = Instant::now();
        let outcome = run_sample(&policy, hook);
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

/// Prints the built-in policies and every `.wasm` in `dir` with its hooks or why it is refused.
pub fn list(dir: &Path) -> anyhow::Result<ExitCode> {
    let engine = PolicyEngine::new(EngineSettings::default())?;
    println!("built-in:");
    for name in builtin::NAMES {
        match engine.builtin(name) {
            Some(Ok(p)) => println!("  {name:<16} {}", hook_list(&p)),
            Some(Err(e)) => println!("  {name:<16} BROKEN: {e}"),
            None => {}
        }
    }
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

/// Runs `hook` on the sample scenario and describes the answer.
fn run_sample(policy: &Policy, hook: Hook) -> Result<String, PolicyError> {
    Ok(match hook {
        Hook::ChooseEviction => {
            let req = sample::eviction_request(SAMPLE_MODELS);
            match policy.choose_eviction(&req)? {
                EvictionDecision::Evict(ids) => format!("evict {ids:?}"),
                EvictionDecision::Wait => "wait".into(),
                EvictionDecision::Reject(why) => format!("reject: {why}"),
            }
        }
        Hook::SelectModel => {
            let candidates = sample::loaded(SAMPLE_MODELS);
            let telemetry = sample::telemetry(120_000, 8 << 30, 2 << 30);
            match policy.select_model(&sample::request(), &candidates, &telemetry)? {
                Selection::Model(id) => format!("model {id:?}"),
                Selection::Reject(why) => format!("reject: {why}"),
            }
        }
        Hook::CompressContext => {
            let req = sample::compression_request(6, 120);
            let before: u32 = req.messages.iter().map(|m| m.tokens).sum();
            match policy.compress_context(&req)? {
                Ok(kept) => {
                    let after: u32 = kept.iter().map(|m| m.tokens).sum();
                    format!(
                        "kept {} of {} messages, {after} of {before} tokens (budget {})",
                        kept.len(),
                        req.messages.len(),
                        req.budget_tokens
                    )
                }
                Err(why) => format!("cannot fit: {why}"),
            }
        }
    })
}

/// The languages `policy new` writes projects for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Python,
}

const PY_APP: &str = include_str!("../../sdk/python/template/app.py");
const PY_README: &str = include_str!("../../sdk/python/template/README.md");
const PY_HELPERS: &str = include_str!("../../sdk/python/modelyard_policy.py");
const CONTRACT: &str = include_str!("../../wit/policy.wit");

/// `policy new NAME --lang L`: writes a buildable project from the language's template into
/// `dir/NAME`, with a README that says how to build, check and drop it.
pub fn new(name: &str, lang: Lang, dir: &Path) -> anyhow::Result<ExitCode> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        anyhow::bail!("{name:?}: use letters, digits, `-` and `_` for a policy name");
    }
    let root = dir.join(name);
    if root.exists() {
        anyhow::bail!("{} exists already", root.display());
    }
    let files: Vec<(&str, String)> = match lang {
        Lang::Python => vec![
            ("app.py", PY_APP.to_string()),
            ("modelyard_policy.py", PY_HELPERS.to_string()),
            ("wit/policy.wit", CONTRACT.to_string()),
            ("README.md", PY_README.replace("{{NAME}}", name)),
        ],
    };
    for (path, text) in files {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{}", root.display());
    eprintln!(
        "wrote {}; its README.md says how to build it",
        root.display()
    );
    Ok(ExitCode::SUCCESS)
}
