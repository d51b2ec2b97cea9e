//! Issue 7, Python: `policy new --lang python` writes a project that builds with the command
//! its README documents (componentize-py, installed by `modelyard setup`), passes `policy
//! check`, and decides exactly as the Rust built-ins on the shared scenarios, through the host.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use modelyard::engine::types::{EvictionDecision, Request};
use modelyard::engine::{Policy, PolicySource, sample};

use crate::util::{builtin, engine, relaxed};

/// The build command from the README `policy new` wrote, run in the project.
fn build_as_documented(project: &Path) {
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    let command = readme
        .lines()
        .find(|l| l.starts_with("componentize-py "))
        .expect("the README documents the build command");
    let venv_bin = crate::demo::demo().python.parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("sh")
        .args(["-c", command])
        .current_dir(project)
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building with `{command}` failed (is componentize-py installed? `modelyard setup` installs it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
fn the_python_template_builds_checks_and_decides_as_the_rust_built_ins() {
    // Compiling an 18 MB component takes both cores: not while timing-sensitive tests run.
    let _serial = crate::demo::serial();
    let _ = crate::demo::demo(); // componentize-py comes with the demo's set-up
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_modelyard"))
        .args(["policy", "new", "pyexample", "--lang", "python", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let project = dir.path().join("pyexample");
    build_as_documented(&project);
    let wasm = project.join("pyexample.wasm");

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
    let python: Arc<Policy> = Arc::new(
        engine
            .load("pyexample", PolicySource::File(wasm.clone()), &bytes)
            .unwrap(),
    );
    let (lru, spec) = (builtin(&engine, "lru"), builtin(&engine, "specialization"));

    let mut decisions = 0;
    for n in [2, 4, 8, 16, 64] {
        let mut req = sample::eviction_request(n);
        for needed_gib in [1u64, 2, 5, 1000] {
            req.needed_bytes = needed_gib << 30;
            let (py, rs) = (
                python.choose_eviction(&req).unwrap(),
                lru.choose_eviction(&req).unwrap(),
            );
            assert_eq!(py, rs, "choose-eviction, {n} models, {needed_gib} GiB");
            decisions += 1;
        }
    }
    let (candidates, telemetry) = (sample::loaded(8), sample::telemetry(1, 1 << 34, 1 << 33));
    for req in requests() {
        let py = python.select_model(&req, &candidates, &telemetry).unwrap();
        let rs = spec.select_model(&req, &candidates, &telemetry).unwrap();
        assert_eq!(py, rs, "select-model for {req:?}");
        decisions += 1;
    }
    for turns in [0, 1, 5, 20] {
        for budget in [10, 40, 120, 400, 100_000] {
            let req = sample::compression_request(turns, budget);
            let (py, rs) = (python.compress_context(&req), lru.compress_context(&req));
            assert_eq!(
                py.unwrap(),
                rs.unwrap(),
                "compress-context, {turns} turns, budget {budget}"
            );
            decisions += 1;
        }
    }
    assert_eq!(decisions, 20 + 11 + 20);
    assert!(matches!(
        python
            .choose_eviction(&sample::eviction_request(8))
            .unwrap(),
        EvictionDecision::Evict(_)
    ));
}
