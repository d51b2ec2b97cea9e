//! What a new user meets first: the prebuilt llama-server that `setup` installs when no other
//! is there (one real model served through the host on it), and the demo's own config, whose
//! budget makes the demo swap.

use std::process::Command;
use std::time::Duration;

use modelyard::cli::setup;
use modelyard::config::Settings;

use crate::demo::{TestHost, demo, eventually, llama_model, serial, settings, state_of};

/// The launcher installed by `setup` (the `xllamacpp` wheel behind llama-server's flags).
fn prebuilt() -> std::path::PathBuf {
    let d = demo();
    setup::install_prebuilt(&d.dir, &d.python)
        .unwrap_or_else(|e| panic!("installing the prebuilt llama-server failed: {e:#}"))
}

#[test]
fn the_prebuilt_launcher_refuses_a_flag_it_does_not_know_and_names_the_fix() {
    let out = Command::new(prebuilt())
        .args(["-m", "x.gguf", "--models-dir", "models"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--models-dir") && err.contains("setup --from-source"),
        "{err}"
    );
    let out = Command::new(prebuilt()).args(["--port"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--port needs a value"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_on_the_prebuilt_llama_server_answers_through_the_host_and_stops_with_it() {
    let _serial = serial();
    let launcher = prebuilt();
    let source = &demo().llama_server;
    let model = llama_model("pre", &demo().smollm2, "parallel = 2").replace(
        &source.display().to_string(),
        &launcher.display().to_string(),
    );
    assert!(model.contains("bin/llama-server"), "{model}");
    let host = TestHost::start(settings(&model)).await;

    let (status, body) = host.chat("pre", 8).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    let m = host
        .status()
        .models
        .into_iter()
        .find(|m| m.id == "pre")
        .unwrap();
    assert_eq!(m.state, "ready");
    assert!(m.size_measured && m.ram_bytes > 50 << 20, "{m:?}");
    let pids = m.pids.clone();
    host.host.scheduler.unload("pre").await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || pids
            .iter()
            .all(|p| !crate::demo::alive(*p)))
        .await,
        "the launcher's process outlived its unload"
    );
    host.stop().await;
}

/// Regression for the front-door issue: the demo never evicted anything (no budget). Its
/// config, as `setup` writes it, holds two of its four models; Gemma then evicts one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_config_swaps_when_a_third_model_is_asked_for() {
    let _serial = serial();
    let mut s = Settings::from_file(&demo().config).unwrap_or_else(|e| panic!("{e}"));
    s.listen = "127.0.0.1:0".parse().unwrap();
    s.state_dir = None;
    let budget = s
        .memory
        .budget("cpu")
        .budget
        .expect("the demo sets a budget");
    let host = TestHost::start(s).await;

    for id in ["small", "smollm2-q4_0"] {
        let (status, body) = host.chat(id, 2).await;
        assert_eq!(status, 200, "{id}: {body}");
    }
    let st = host.status();
    assert_eq!(state_of(&st, "smollm2"), "ready");
    assert_eq!(
        state_of(&st, "smollm2-q4_0"),
        "ready",
        "two of the four fit"
    );
    let pair: u64 = (st.models.iter())
        .filter(|m| m.state == "ready")
        .map(|m| m.size_bytes)
        .sum();
    assert!(pair <= budget, "{pair} > {budget}");
    assert_eq!(st.eviction.evictions, 0);

    let (status, body) = host.chat("gemma3", 2).await;
    assert_eq!(status, 200, "{body}");
    let st = host.status();
    let ready: Vec<&str> = st
        .models
        .iter()
        .filter(|m| m.state == "ready")
        .map(|m| m.id.as_str())
        .collect();
    assert!(ready.contains(&"gemma3"), "{ready:?}");
    assert_eq!(ready.len(), 2, "gemma3 does not fit beside two: {ready:?}");
    assert_eq!(st.eviction.evictions, 1, "{:?}", st.eviction);
    assert!(
        st.events.iter().any(|e| e.kind == "evicted"),
        "{:?}",
        st.events
    );
    host.stop().await;
}

/// `preload = true` (llama-swap's `hooks.on_startup.preload`): loaded at start, unasked; a
/// model without it stays unloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preloaded_model_is_ready_without_a_request_and_the_others_wait() {
    let _serial = serial();
    let d = demo();
    let host = TestHost::start(settings(&format!(
        "{}{}",
        llama_model("early", &d.smollm2, "preload = true"),
        llama_model("late", &d.smollm2, "")
    )))
    .await;
    assert!(
        eventually(Duration::from_secs(60), || state_of(
            &host.status(),
            "early"
        ) == "ready")
        .await,
        "{:?}",
        host.status().models
    );
    assert_eq!(state_of(&host.status(), "late"), "unloaded");
    host.stop().await;
}
