//! Policies in Rust, Python, JavaScript and C. For each language, `policy new` writes a
//! project that builds with the commands its README documents (the tools installed by
//! `modelyard setup --sdk LANG` from the public registries), passes `policy check`, and decides
//! exactly as the Rust built-ins on the shared scenarios, through the host's engine.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use modelyard::cli::sdk::{self, Lang, Tools};
use modelyard::engine::types::{EvictionDecision, Request, Selection};
use modelyard::engine::{Contract, Policy, PolicyEngine, PolicySource, sample};

use crate::documented::{build_as_documented, documented_build, documented_component};
use crate::util::{builtin, engine, relaxed, seed_v0_1};

/// The built-in a project on `guest`'s contract decides as: the shipped one for 0.2, the seed as
/// it shipped on 0.1 (`policies/testdata/v0_1`) for 0.1.
fn reference(engine: &PolicyEngine, guest: &Policy, name: &str) -> Arc<Policy> {
    if guest.contract() == Contract::V0_2 {
        builtin(engine, name)
    } else {
        seed_v0_1(engine, name)
    }
}

/// Writes a project with `policy new`, builds it as its README says, and returns the component
/// its README's `policy check` line names, with the tools that built it.
fn new_and_build(lang: Lang, name: &str, dir: &Path) -> (PathBuf, Tools) {
    let demo_dir = crate::demo::demo().dir.clone();
    let tools = sdk::install(&demo_dir, lang).unwrap_or_else(|e| {
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
    let (wasm, took) = build_as_documented(&project, &tools)
        .unwrap_or_else(|e| panic!("building {} as documented: {e:#}", project.display()));
    eprintln!("{}: built {} in {took:?}", lang.name(), wasm.display());
    (wasm, tools)
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
    let (wasm, tools) = new_and_build(lang, &name, dir.path());
    template_decides_as_the_built_ins(&name, &wasm);
    the_host_serves_with_it(&name, &wasm);
    the_documented_example_builds_and_decides_as_it_says(lang, &dir.path().join(&name), &tools);
}

/// A real host with the component as its `select-model` policy routes real requests by it.
fn the_host_serves_with_it(name: &str, wasm: &Path) {
    let d = crate::demo::demo();
    let coder_file = d.smollm2_q4_0.clone().unwrap_or_else(|| d.gemma3.clone());
    let settings = crate::demo::settings(&format!(
        "selection = \"{}\"\n{}{}",
        wasm.display(),
        crate::demo::llama_model(
            "chatty",
            &d.smollm2,
            "aliases = [\"small\"]\ntags = [\"chat\"]"
        ),
        crate::demo::llama_model("coder", &coder_file, "tags = [\"code\"]"),
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let host = crate::demo::TestHost::start(settings).await;
        let ask = |model: &str, task: Option<&str>| {
            let mut req = host.http.post(host.url("/v1/chat/completions")).json(&serde_json::json!({
                "model": model, "max_tokens": 2,
                "messages": [{"role": "user", "content": "Why does this function not compile?"}],
            }));
            if let Some(task) = task {
                req = req.header("x-modelyard-task", task);
            }
            req.send()
        };
        for (model, task, want) in [
            ("auto", None, "coder"),
            ("auto", Some("chat"), "chatty"),
            ("small", None, "chatty"),
        ] {
            let resp = ask(model, task).await.unwrap();
            assert_eq!(resp.status(), 200, "{name}: {model} {task:?}");
            assert_eq!(
                resp.headers()["x-modelyard-model"],
                want,
                "{name}: {model} {task:?}"
            );
        }
        let refused = ask("no-such-model", None).await.unwrap();
        assert_eq!(refused.status(), 404, "{name}: an unknown model is refused");
        let policies = host.get_json("/admin/policies").await;
        let select = &policies["hooks"][1];
        assert_eq!(select["hook"], "select-model");
        assert_eq!(select["policy"], name, "{policies}");
        // A 0.1 policy is asked about all four; a 0.2 template only about the two `auto` ones
        // (the host routes names itself).
        let calls = select["calls"].as_u64().unwrap_or(0);
        if select["contract"] == "0.2.0" {
            assert_eq!(calls, 2, "{policies}");
        } else {
            assert!(calls >= 4, "{policies}");
        }
        assert_eq!(select["failures"].as_u64(), Some(0), "{policies}");
        host.stop().await;
    });
}

/// The language page's "complete small policy", put in place of the template's source and built
/// the same way: LFU eviction, `auto` to the most used model, the newest turns that fit.
fn the_documented_example_builds_and_decides_as_it_says(lang: Lang, project: &Path, tools: &Tools) {
    let page = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sdk")
        .join(lang.name())
        .join("README.md");
    let page = std::fs::read_to_string(&page).unwrap();
    let example: String = page
        .lines()
        .skip_while(|l| *l != "## A complete small policy")
        .skip_while(|l| !l.starts_with("```"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(example.len() > 200, "the page has its example");
    let source = match lang {
        Lang::Rust => "src/lib.rs",
        Lang::Python => "app.py",
        Lang::Js => "app.js",
        Lang::C => "app.c",
    };
    std::fs::write(project.join(source), example).unwrap();
    let (wasm, _) = build_as_documented(project, tools)
        .unwrap_or_else(|e| panic!("building the {} page's example: {e:#}", lang.name()));

    let engine = engine(relaxed());
    let bytes = std::fs::read(&wasm).unwrap();
    let example = engine
        .load("example", PolicySource::File(wasm.clone()), &bytes)
        .unwrap();
    let (lfu, lru) = (
        reference(&engine, &example, "lfu"),
        reference(&engine, &example, "lru"),
    );
    let spec = reference(&engine, &example, "specialization");
    for n in [2, 8, 16] {
        let mut req = sample::eviction_request(n);
        for needed_gib in [1u64, 3, 1000] {
            req.needed_bytes = needed_gib << 30;
            assert_eq!(
                example
                    .choose_eviction(&req, &sample::catalogue(n))
                    .unwrap(),
                lfu.choose_eviction(&req, &sample::catalogue(n)).unwrap(),
                "{}: choose-eviction, {n} models, {needed_gib} GiB",
                lang.name()
            );
        }
    }
    let (candidates, telemetry) = (sample::loaded(8), sample::telemetry(1, 1 << 34, 1 << 33));
    let most_used = candidates
        .iter()
        .max_by(|a, b| a.use_count.cmp(&b.use_count).then(b.id.cmp(&a.id)))
        .unwrap();
    for req in requests() {
        let want = if req.model == "auto" {
            Selection::Model(most_used.id.clone())
        } else {
            spec.select_model(&req, &candidates, &telemetry, &sample::catalogue(8))
                .unwrap()
        };
        assert_eq!(
            example
                .select_model(&req, &candidates, &telemetry, &sample::catalogue(8))
                .unwrap(),
            want,
            "{}: select-model for {req:?}",
            lang.name()
        );
    }
    for (turns, budget) in [(5, 40), (20, 400), (20, 10)] {
        let req = sample::compression_request(turns, budget);
        assert_eq!(
            example
                .compress_context(&req, &sample::catalogue(8))
                .unwrap(),
            lru.compress_context(&req, &sample::catalogue(8)).unwrap()
        );
    }
}

fn template_decides_as_the_built_ins(name: &str, wasm: &Path) {
    let check = Command::new(env!("CARGO_BIN_EXE_modelyard"))
        .args(["policy", "check"])
        .arg(wasm)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{printed}");
    assert!(
        printed.contains("exports:  choose-eviction, select-model, compress-context"),
        "{printed}"
    );

    let engine = engine(relaxed());
    let bytes = std::fs::read(wasm).unwrap();
    let guest: Arc<Policy> = Arc::new(
        engine
            .load(name, PolicySource::File(wasm.to_path_buf()), &bytes)
            .unwrap(),
    );
    let (lru, spec) = (
        reference(&engine, &guest, "lru"),
        reference(&engine, &guest, "specialization"),
    );

    let mut decisions = 0;
    for n in [2, 4, 8, 16, 64] {
        let mut req = sample::eviction_request(n);
        for needed_gib in [1u64, 2, 5, 1000] {
            req.needed_bytes = needed_gib << 30;
            let (got, rs) = (
                guest.choose_eviction(&req, &sample::catalogue(n)).unwrap(),
                lru.choose_eviction(&req, &sample::catalogue(n)).unwrap(),
            );
            assert_eq!(got, rs, "choose-eviction, {n} models, {needed_gib} GiB");
            decisions += 1;
        }
    }
    let (candidates, telemetry) = (sample::loaded(8), sample::telemetry(1, 1 << 34, 1 << 33));
    for req in requests() {
        let got = guest
            .select_model(&req, &candidates, &telemetry, &sample::catalogue(8))
            .unwrap();
        let rs = spec
            .select_model(&req, &candidates, &telemetry, &sample::catalogue(8))
            .unwrap();
        assert_eq!(got, rs, "select-model for {req:?}");
        decisions += 1;
    }
    for turns in [0, 1, 5, 20] {
        for budget in [10, 40, 120, 400, 100_000] {
            let req = sample::compression_request(turns, budget);
            let (got, rs) = (
                guest.compress_context(&req, &sample::catalogue(8)),
                lru.compress_context(&req, &sample::catalogue(8)),
            );
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
        guest
            .choose_eviction(&sample::eviction_request(8), &sample::catalogue(8))
            .unwrap(),
        EvictionDecision::Evict(_)
    ));
}

#[test]
fn a_toolchain_that_cannot_be_installed_fails_naming_the_step() {
    let dir = tempfile::tempdir().unwrap();
    for (lang, step) in [
        ("rust", "adding the wasm32-wasip2 target"),
        ("python", "creating a Python virtual environment"),
        (
            "js",
            "`npm install` failed (are Node.js and npm installed?)",
        ),
        ("c", "`apt-get download` failed"),
    ] {
        // No installer can be found on this PATH.
        let out = Command::new(env!("CARGO_BIN_EXE_modelyard"))
            .args(["setup", "--sdk", lang, "--dir"])
            .arg(dir.path())
            .env("PATH", dir.path().join("nothing-here"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{lang}: {stderr}");
        assert!(
            stderr.contains(&format!("installing the {lang} policy tools"))
                && stderr.contains(step),
            "{lang}: {stderr}"
        );
    }
}

/// Every template's README documents a build and names the component `policy check` takes.
#[test]
fn every_template_documents_its_build_and_its_component() {
    let dir = tempfile::tempdir().unwrap();
    for lang in Lang::ALL {
        let root = sdk::write_project("my-policy", lang, dir.path()).unwrap();
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        assert!(
            !readme.contains("{{"),
            "{}: unfilled placeholder",
            lang.name()
        );
        assert!(
            !documented_build(&readme).is_empty(),
            "{}: no build block",
            lang.name()
        );
        let wasm = documented_component(&readme).unwrap();
        assert!(wasm.ends_with(".wasm"), "{}: {wasm}", lang.name());
        std::fs::remove_dir_all(root).unwrap();
    }
    assert!(documented_build("no build here").is_empty());
}
