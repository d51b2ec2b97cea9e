//! `modelyard policy check` accepts the built-ins and names the problem with anything else.

use std::path::Path;
use std::process::Command;

use crate::util::guest_path;

fn check(file: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_modelyard"))
        .args(["policy", "check"])
        .arg(file)
        .output()
        .expect("run modelyard");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn check_accepts_every_builtin() {
    let expected = [
        ("lru", "choose-eviction, compress-context"),
        ("lfu", "choose-eviction, compress-context"),
        ("priority", "choose-eviction, compress-context"),
        (
            "specialization",
            "choose-eviction, select-model, compress-context",
        ),
        ("hybrid", "choose-eviction, compress-context"),
        ("adaptive", "choose-eviction, compress-context"),
    ];
    for (name, hooks) in expected {
        let (ok, out) = check(&guest_path(&format!("modelyard-policy-{name}")));
        assert!(ok, "{name}: {out}");
        assert!(out.contains("contract: modelyard:policy@0.2.0"), "{out}");
        assert!(out.contains(&format!("exports:  {hooks}")), "{name}: {out}");
        assert!(out.contains("choose-eviction: evict"), "{name}: {out}");
        assert!(!out.contains("FAILED"), "{out}");
    }
}

#[test]
fn check_reports_a_0_2_component_as_stateful_with_its_exports() {
    let (ok, out) = check(&guest_path("modelyard-policy-stateful"));
    assert!(ok, "{out}");
    assert!(
        out.contains("contract: modelyard:policy@0.2.0 (stateful"),
        "{out}"
    );
    assert!(
        out.contains("exports:  choose-eviction, select-model"),
        "{out}"
    );
    assert!(
        out.contains("catalogue (lifecycle): yes; events: yes"),
        "{out}"
    );
    assert!(out.contains("choose-eviction: evict"), "{out}");
    let (_, old) = check(&guest_path("modelyard-policy-v0-1-lru"));
    assert!(old.contains("(stateless"), "{old}");
}

#[test]
fn check_rejects_a_file_that_is_not_wasm() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.wasm");
    std::fs::write(&file, "just text").unwrap();
    let (ok, out) = check(&file);
    assert!(!ok);
    assert!(out.contains("not a WebAssembly file"), "{out}");
}

#[test]
fn check_rejects_a_core_module() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("core.wasm");
    std::fs::write(&file, b"\0asm\x01\0\0\0").unwrap();
    let (ok, out) = check(&file);
    assert!(!ok);
    assert!(
        out.contains("core WebAssembly module, not a component"),
        "{out}"
    );
}

#[test]
fn check_rejects_a_component_built_against_another_contract() {
    let (ok, out) = check(&guest_path("modelyard-policy-foreign"));
    assert!(!ok);
    assert!(
        out.contains("does not match contract modelyard:policy@0.1.0"),
        "{out}"
    );
    assert!(out.contains("choose-eviction"), "{out}");
}

#[test]
fn check_rejects_a_missing_file() {
    let (ok, out) = check(Path::new("no/such/policy.wasm"));
    assert!(!ok);
    assert!(out.contains("cannot read"), "{out}");
}

#[test]
fn check_accepts_the_evil_guest_on_plain_input() {
    // Its failure modes are driven by input the sample does not contain: it answers like LRU.
    let (ok, out) = check(&guest_path("modelyard-policy-evil"));
    assert!(ok, "{out}");
    assert!(
        out.contains("exports:  choose-eviction, select-model, compress-context"),
        "{out}"
    );
}

#[test]
fn list_shows_builtins_and_rejects_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        guest_path("modelyard-policy-lru"),
        dir.path().join("mine.wasm"),
    )
    .unwrap();
    std::fs::write(dir.path().join("broken.wasm"), "nope").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_modelyard"))
        .args(["policy", "list", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["lru", "lfu", "priority", "specialization", "hybrid"] {
        assert!(text.contains(name), "{text}");
    }
    assert!(
        text.contains("mine.wasm") && text.contains("broken.wasm"),
        "{text}"
    );
    assert!(
        text.contains("rejected: broken: not a WebAssembly file"),
        "{text}"
    );
}

#[test]
fn test_replays_a_trace_through_one_0_2_policy() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.jsonl");
    // Three 3 GB models in 8 GB, round robin: the policy decides every eviction.
    let lines: String = (0..40u64)
        .map(|i| {
            let model = ["a", "b", "c"][(i % 3) as usize];
            format!(
                "{{\"t_ms\": {}, \"model\": \"{model}\", \"prompt_tokens\": 100, \"output_tokens\": 20}}\n",
                i * 30_000
            )
        })
        .collect();
    std::fs::write(&trace, lines).unwrap();
    let cat = dir.path().join("models.toml");
    std::fs::write(&cat, "[defaults]\nsize = \"3GB\"\n").unwrap();
    let wasm = guest_path("modelyard-policy-stateful");
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_modelyard"))
            .args(["policy", "test"])
            .arg(&wasm)
            .arg("--trace")
            .arg(&trace)
            .args(["--memory", "8GB", "--models"])
            .arg(&cat)
            .args(extra)
            .output()
            .expect("run modelyard");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let v: serde_json::Value = serde_json::from_str(&run(&["--json"])).unwrap();
    let policies = v["points"][0]["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 1, "one policy: {v}");
    let p = &policies[0];
    assert!(p["policy"].as_str().unwrap().contains("stateful"), "{p}");
    assert_eq!(p["served"].as_u64().unwrap(), 40, "{p}");
    assert!(
        p["loads"].as_u64().unwrap() >= 40,
        "every request reloads: {p}"
    );
    let table = run(&[]);
    assert!(table.contains("modelyard_policy_stateful"), "{table}");
}

/// Regressions from the front-door issue: `policy list` listed the built-ins' source folder
/// (always "(no .wasm files)"), and `policy list | head` panicked on the closed pipe.
#[test]
fn policy_list_shows_the_configs_folder_and_ends_quietly_on_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("mine")).unwrap();
    std::fs::copy(
        guest_path("modelyard-policy-lru"),
        dir.path().join("mine/lru-copy.wasm"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("modelyard.toml"),
        "[policies]\ndir = \"mine\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_modelyard"))
        .args(["policy", "list"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("lru-copy.wasm"), "{text}");

    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} policy list --config modelyard.toml | head -1",
            env!("CARGO_BIN_EXE_modelyard")
        ))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "built-in:\n");

    let out = Command::new(env!("CARGO_BIN_EXE_modelyard"))
        .args(["policy", "list", "--config", "missing.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dir"));
}
