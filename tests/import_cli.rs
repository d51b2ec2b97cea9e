//! `modelyard import llama-swap` as a user runs it: on llama-swap's own example, an existing
//! output kept unless `--force`, and a result that does not check failing after writing.

use std::path::Path;
use std::process::{Command, Output};

fn import(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_modelyard"))
        .args(["import", "llama-swap"])
        .args(args)
        .current_dir(dir)
        .env("API_KEY_1", "k1")
        .env("API_KEY_2", "k2")
        .env("OPENROUTER_API_KEY", "k3")
        .output()
        .unwrap()
}

#[test]
fn the_example_imports_keeps_an_existing_file_and_says_what_did_not_carry() {
    let tmp = tempfile::tempdir().unwrap();
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/llama-swap/config.example.yaml");
    let example = example.to_str().unwrap();
    let out = import(&[example], tmp.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("not carried over: models.docker-llama.cmdStop"),
        "{err}"
    );
    assert!(err.contains("it checks: 5 models"), "{err}");
    let written = std::fs::read_to_string(tmp.path().join("modelyard.toml")).unwrap();
    assert!(written.contains("[models.gpt-oss-120b]"), "{written}");

    std::fs::write(tmp.path().join("modelyard.toml"), "# mine\n").unwrap();
    let out = import(&[example], tmp.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("modelyard.toml")).unwrap(),
        "# mine\n",
        "an existing config is never overwritten unasked"
    );
    assert!(import(&[example, "--force"], tmp.path()).status.success());
}

#[test]
fn an_import_that_does_not_check_is_written_and_fails_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("swap.yaml"),
        "models:\n  a:\n    cmd: s --port ${PORT}\n    aliases: [x]\n  b:\n    cmd: s --port ${PORT}\n    aliases: [x]\n",
    )
    .unwrap();
    let out = import(&["swap.yaml", "-o", "out.toml"], tmp.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("does not check yet") && err.contains("aliases"),
        "{err}"
    );
    assert!(tmp.path().join("out.toml").is_file());

    std::fs::write(tmp.path().join("bad.yaml"), "models: [").unwrap();
    let out = import(&["bad.yaml", "-o", "bad.toml"], tmp.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not YAML"));
    assert!(
        !tmp.path().join("bad.toml").exists(),
        "nothing written for a file it cannot read"
    );
}
