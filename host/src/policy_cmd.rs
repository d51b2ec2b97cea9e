//! `modelyard policy check|list|new`: what a policy author runs before dropping a component
//! into `policies/`, and the per-language templates `new` writes, with the helpers that read a
//! template's README for its build commands and its component (the SDK tests and the
//! languages benchmark build exactly what the README documents).

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;

use crate::engine::{
    CONTRACT_VERSION, DEFAULT_HOOK_DEADLINE, EngineSettings, LoadError, Policy, PolicyEngine,
    PolicySource, builtin,
};

/// Where users drop their policies.
pub const DEFAULT_POLICY_DIR: &str = "policies";

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
    println!("contract: modelyard:policy@{CONTRACT_VERSION}");
    println!("exports:  {}", hook_list(&policy));
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

/// The languages `policy new` writes projects for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
    C,
}

impl Lang {
    pub const ALL: [Lang; 4] = [Lang::Rust, Lang::Python, Lang::Js, Lang::C];

    /// The name `--lang` takes.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
            Lang::C => "c",
        }
    }
}

const CONTRACT: &str = include_str!("../../wit/policy.wit");
const PY_APP: &str = include_str!("../../sdk/python/template/app.py");
const PY_README: &str = include_str!("../../sdk/python/template/README.md");
const PY_HELPERS: &str = include_str!("../../sdk/python/modelyard_policy.py");
const JS_APP: &str = include_str!("../../sdk/js/template/app.js");
const JS_PACKAGE: &str = include_str!("../../sdk/js/template/package.json");
const JS_CONFIG: &str = include_str!("../../sdk/js/template/jsconfig.json");
const JS_README: &str = include_str!("../../sdk/js/template/README.md");
const JS_HELPERS: &str = include_str!("../../sdk/js/modelyard_policy.js");
const C_APP: &str = include_str!("../../sdk/c/template/app.c");
const C_MAKEFILE: &str = include_str!("../../sdk/c/template/Makefile");
const C_README: &str = include_str!("../../sdk/c/template/README.md");
const C_HEADER: &str = include_str!("../../sdk/c/modelyard_policy.h");
const C_HELPERS: &str = include_str!("../../sdk/c/modelyard_policy.c");
const RS_MANIFEST: &str = include_str!("../../sdk/rust/template/Cargo.toml");
const RS_LIB: &str = include_str!("../../sdk/rust/template/src/lib.rs");
const RS_README: &str = include_str!("../../sdk/rust/template/README.md");
const RS_SDK_BUILD: &str = include_str!("../../sdk/rust/build.rs");
const RS_SDK_LIB: &str = include_str!("../../sdk/rust/src/lib.rs");
const RS_SDK_HELPERS: &str = include_str!("../../sdk/rust/src/helpers.rs");
/// The workspace's manifest: the one place the SDK crate's version, edition, licence and
/// wit-bindgen requirement are written.
const WORKSPACE_MANIFEST: &str = include_str!("../../Cargo.toml");

/// The SDK crate's manifest outside this workspace, with the fields the workspace's own
/// inherits filled in from the workspace's manifest.
fn rs_sdk_manifest() -> String {
    let root: toml::Table = toml::from_str(WORKSPACE_MANIFEST).unwrap_or_default();
    let ws = &root["workspace"];
    let package = |key: &str| ws["package"][key].as_str().unwrap_or_default().to_string();
    let bindgen = &ws["dependencies"]["wit-bindgen"];
    let features: Vec<String> = bindgen["features"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(toml::Value::as_str)
                .map(|v| format!("{v:?}"))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "[package]\nname = \"modelyard-policy\"\n\
         description = \"Write modelyard policies in Rust: typed bindings, one trait per hook, helpers, export macro\"\n\
         version = \"{}\"\nedition = \"{}\"\nlicense = \"{}\"\npublish = false\n\n\
         [dependencies]\nwit-bindgen = {{ version = {:?}, default-features = {}, features = [{}] }}\n",
        package("version"),
        package("edition"),
        package("license"),
        bindgen["version"].as_str().unwrap_or_default(),
        bindgen["default-features"].as_bool().unwrap_or(true),
        features.join(", ")
    )
}
const IGNORE: &str = "*.wasm\ntarget/\nnode_modules/\ntypes/\ngen/\n";

/// The files of a new `lang` project named `name`, by path within its folder.
fn template(lang: Lang, name: &str) -> Vec<(&'static str, String)> {
    let fill = |t: &str| {
        t.replace("{{NAME}}", name)
            .replace("{{CRATE}}", &name.replace('-', "_"))
    };
    let mut files = vec![(".gitignore", IGNORE.to_string())];
    files.extend(match lang {
        Lang::Rust => vec![
            ("Cargo.toml", fill(RS_MANIFEST)),
            ("src/lib.rs", RS_LIB.to_string()),
            ("README.md", fill(RS_README)),
            ("modelyard-policy/Cargo.toml", rs_sdk_manifest()),
            ("modelyard-policy/build.rs", RS_SDK_BUILD.to_string()),
            ("modelyard-policy/src/lib.rs", RS_SDK_LIB.to_string()),
            (
                "modelyard-policy/src/helpers.rs",
                RS_SDK_HELPERS.to_string(),
            ),
            ("modelyard-policy/wit/policy.wit", CONTRACT.to_string()),
        ],
        Lang::Python => vec![
            ("app.py", PY_APP.to_string()),
            ("modelyard_policy.py", PY_HELPERS.to_string()),
            ("wit/policy.wit", CONTRACT.to_string()),
            ("README.md", fill(PY_README)),
        ],
        Lang::Js => vec![
            ("app.js", JS_APP.to_string()),
            ("modelyard_policy.js", JS_HELPERS.to_string()),
            ("package.json", fill(JS_PACKAGE)),
            ("jsconfig.json", JS_CONFIG.to_string()),
            ("wit/policy.wit", CONTRACT.to_string()),
            ("README.md", fill(JS_README)),
        ],
        Lang::C => vec![
            ("app.c", C_APP.to_string()),
            ("modelyard_policy.h", C_HEADER.to_string()),
            ("modelyard_policy.c", C_HELPERS.to_string()),
            ("Makefile", fill(C_MAKEFILE)),
            ("wit/policy.wit", CONTRACT.to_string()),
            ("README.md", fill(C_README)),
        ],
    });
    files
}

/// `policy new NAME --lang L`: writes a buildable project from the language's template into
/// `dir/NAME`, with a README that says how to build, check and drop it.
pub fn new(name: &str, lang: Lang, dir: &Path) -> anyhow::Result<ExitCode> {
    let root = write_project(name, lang, dir)?;
    println!("{}", root.display());
    eprintln!(
        "wrote {}; its README.md says how to build it",
        root.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes the `lang` template as project `name` into `dir/name` and returns that folder.
pub fn write_project(name: &str, lang: Lang, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    if !name.starts_with(|c: char| c.is_ascii_alphabetic())
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        anyhow::bail!(
            "{name:?}: a policy name starts with a letter and holds letters, digits, `-` and `_`"
        );
    }
    let root = dir.join(name);
    if root.exists() {
        anyhow::bail!("{} exists already", root.display());
    }
    for (path, text) in template(lang, name) {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(root)
}

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
pub fn build_as_documented(
    project: &Path,
    tools: &crate::sdk_tools::Tools,
) -> anyhow::Result<(std::path::PathBuf, std::time::Duration)> {
    let readme_path = project.join("README.md");
    let readme = std::fs::read_to_string(&readme_path)
        .with_context(|| format!("reading {}", readme_path.display()))?;
    let commands = documented_build(&readme);
    if commands.is_empty() {
        anyhow::bail!("{} documents no build", readme_path.display());
    }
    let began = std::time::Instant::now();
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_rust_sdk_manifest_takes_its_versions_from_the_workspace() {
        let manifest: toml::Table = toml::from_str(&rs_sdk_manifest()).expect("valid TOML");
        let root: toml::Table = toml::from_str(WORKSPACE_MANIFEST).expect("valid TOML");
        let ws = &root["workspace"];
        assert_eq!(manifest["package"]["version"], ws["package"]["version"]);
        assert_eq!(manifest["package"]["edition"], ws["package"]["edition"]);
        assert_eq!(
            manifest["dependencies"]["wit-bindgen"],
            ws["dependencies"]["wit-bindgen"]
        );
    }

    #[test]
    fn every_template_documents_its_build_and_its_component() {
        for lang in Lang::ALL {
            let files = template(lang, "my-policy");
            let readme = &files.iter().find(|(p, _)| *p == "README.md").unwrap().1;
            assert!(
                !readme.contains("{{"),
                "{}: unfilled placeholder",
                lang.name()
            );
            assert!(
                !documented_build(readme).is_empty(),
                "{}: no build block",
                lang.name()
            );
            let wasm = documented_component(readme).unwrap();
            assert!(wasm.ends_with(".wasm"), "{}: {wasm}", lang.name());
        }
        assert!(documented_build("no build here").is_empty());
    }

    #[test]
    fn policy_names_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "1st", "a b", "../up", "x/y"] {
            assert!(write_project(bad, Lang::C, dir.path()).is_err(), "{bad:?}");
        }
        let made = write_project("ok_name-2", Lang::C, dir.path()).unwrap();
        assert!(made.join("Makefile").is_file());
        let again = write_project("ok_name-2", Lang::C, dir.path()).unwrap_err();
        assert!(again.to_string().contains("exists already"), "{again}");
    }
}
