//! Issue 7: policies in Rust, Python, JavaScript and C. For each language, `policy new` writes a
//! project that builds with the commands its README documents (the tools installed by
//! `modelyard setup --sdk LANG` from the public registries), passes `policy check`, and decides
//! exactly as the Rust built-ins on the shared scenarios, through the host's engine.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use modelyard::engine::types::{EvictionDecision, Request};
use modelyard::engine::{Policy, PolicySource, sample};
use modelyard::policy_cmd::Lang;
use modelyard::sdk_tools;

use crate::util::{builtin, engine, relaxed};

/// The fenced block after the README line that ends with "from this folder:".
fn documented_build(readme: &str) -> Vec<String> {
    let mut lines = readme
        .lines()
        .skip_while(|l| !l.ends_with("from this folder:"));
    assert!(
        lines.next().is_some(),
        "the README documents a build:\n{readme}"
    );
    lines
        .skip_while(|l| !l.starts_with("```"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .map(str::to_string)
        .collect()
}

/// Writes a project with `policy new`, builds it as its README says, and returns the component
/// its README's `policy check` line names.
fn new_and_build(lang: Lang, name: &str, dir: &Path) -> PathBuf {
    let demo_dir = crate::demo::demo().dir.clone();
    let tools = sdk_tools::install(&demo_dir, lang).unwrap_or_else(|e| {
        panic!(
            "the {} policy tools could not be installed: {e:#}",
            lang.name()
        )
    });
    let out = Command::new(env!("CARGO_BIN_EXE_modelyard"))
        .args(["policy", "new", name, "--lang", lang.name(), "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let project = dir.join(name);
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    for command in documented_build(&readme) {
        let began = std::time::Instant::now();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &command])
            .current_dir(&project)
            .env_remove("CARGO_TARGET_DIR");
        let out = tools.apply(&mut cmd).output().unwrap();
        assert!(
            out.status.success(),
            "building with `{command}` failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{}: `{command}` took {:?}", lang.name(), began.elapsed());
    }
    let checked = readme
        .lines()
        .find_map(|l| l.strip_prefix("modelyard policy check "))
        .expect("the README says how to check the component");
    let wasm = project.join(checked.trim());
    assert!(wasm.is_file(), "{} was built", wasm.display());
    wasm
}

fn requests() -> Vec<Request> {
    let mut out = Vec::new();
    for task in [
        None,
        Some("code"),
        Some("chat"),
        Some("summarize"),
        Some("translate"),
    ] {
        let mut r = sample::request();
        r.task = task.map(str::to_string);
        out.push(r);
    }
    for text in ["Summarize this thread", "hello there", "fix this SQL query"] {
        let mut r = sample::request();
        r.last_user_message = text.into();
        out.push(r);
    }
    for model in ["m3", "m6", "no-such-model"] {
        let mut r = sample::request();
        r.model = model.into();
        out.push(r);
    }
    out
}

#[test]
fn the_rust_template_builds_checks_and_decides_as_the_built_ins() {
    same_decisions_as_the_built_ins(Lang::Rust);
}

#[test]
fn the_python_template_builds_checks_and_decides_as_the_built_ins() {
    same_decisions_as_the_built_ins(Lang::Python);
}

#[test]
fn the_js_template_builds_checks_and_decides_as_the_built_ins() {
    same_decisions_as_the_built_ins(Lang::Js);
}

#[test]
fn the_c_template_builds_checks_and_decides_as_the_built_ins() {
    same_decisions_as_the_built_ins(Lang::C);
}

fn same_decisions_as_the_built_ins(lang: Lang) {
    // Compiling a 12-18 MB component takes both cores: not while timing-sensitive tests run.
    let _serial = crate::demo::serial();
    let dir = tempfile::tempdir().unwrap();
    let name = format!("{}example", lang.name());
    let wasm = new_and_build(lang, &name, dir.path());

    let check = Command::new(env!("CARGO_BIN_EXE_modelyard"))
        .args(["policy", "check"])
        .arg(&wasm)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{printed}");
    assert!(
        printed.contains("exports:  choose-eviction, select-model, compress-context"),
        "{printed}"
    );

    let engine = engine(relaxed());
    let bytes = std::fs::read(&wasm).unwrap();
    let guest: Arc<Policy> = Arc::new(
        engine
            .load(&name, PolicySource::File(wasm.clone()), &bytes)
            .unwrap(),
    );
    let (lru, spec) = (builtin(&engine, "lru"), builtin(&engine, "specialization"));

    let mut decisions = 0;
    for n in [2, 4, 8, 16, 64] {
        let mut req = sample::eviction_request(n);
        for needed_gib in [1u64, 2, 5, 1000] {
            req.needed_bytes = needed_gib << 30;
            let (got, rs) = (
                guest.choose_eviction(&req).unwrap(),
                lru.choose_eviction(&req).unwrap(),
            );
            assert_eq!(got, rs, "choose-eviction, {n} models, {needed_gib} GiB");
            decisions += 1;
        }
    }
    let (candidates, telemetry) = (sample::loaded(8), sample::telemetry(1, 1 << 34, 1 << 33));
    for req in requests() {
        let got = guest.select_model(&req, &candidates, &telemetry).unwrap();
        let rs = spec.select_model(&req, &candidates, &telemetry).unwrap();
        assert_eq!(got, rs, "select-model for {req:?}");
        decisions += 1;
    }
    for turns in [0, 1, 5, 20] {
        for budget in [10, 40, 120, 400, 100_000] {
            let req = sample::compression_request(turns, budget);
            let (got, rs) = (guest.compress_context(&req), lru.compress_context(&req));
            assert_eq!(
                got.unwrap(),
                rs.unwrap(),
                "compress-context, {turns} turns, budget {budget}"
            );
            decisions += 1;
        }
    }
    assert_eq!(decisions, 20 + 11 + 20);
    assert!(matches!(
        guest.choose_eviction(&sample::eviction_request(8)).unwrap(),
        EvictionDecision::Evict(_)
    ));
}
