//! Hot reload: policies replaced under live traffic, broken files rejected while the
//! old policy serves, and a restart that compiles nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use modelyard::engine::{EngineSettings, Hook, Hooks, PolicyEngine, PolicySet};
use sha2::{Digest, Sha256};

use crate::demo::{self, TestHost, llama_model, serial, settings};
use crate::util::guest_path;

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The hash of the version serving `hook` from `file`, if that file serves it.
fn serving(set: &PolicySet, file: &str, hook: Hook) -> Option<String> {
    set.report()
        .into_iter()
        .find(|f| f.path.ends_with(file) && f.serving.contains(&hook.name()))
        .and_then(|f| f.loaded_sha256)
}

/// Polls until `check` holds; returns how long it took.
async fn within(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let began = Instant::now();
    while began.elapsed() < limit {
        if check() {
            return Some(began.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    check().then(|| began.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_replacements_under_traffic_drop_nothing_and_broken_files_are_ignored() {
    let _serial = serial();
    let d = demo::demo();
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(settings(&format!(
        "dir = \"{}\"\n{}",
        dir.path().display(),
        llama_model("m", &d.smollm2, ""),
    )))
    .await;
    assert_eq!(host.chat("m", 1).await.0, 200);

    // A steady stream of real requests for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let traffic = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let url = host.url("/v1/chat/completions");
        let http = host.http.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let resp = http
                    .post(&url)
                    .json(&serde_json::json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };

    let lfu = std::fs::read(guest_path("modelyard-policy-lfu")).unwrap();
    let priority = std::fs::read(guest_path("modelyard-policy-priority")).unwrap();
    let file = dir.path().join("eviction.wasm");
    let set = host.host.policies.clone();
    let mut took = Vec::new();
    let mut current: Option<String> = None;
    for i in 0..20 {
        if i % 5 == 4 {
            std::fs::write(&file, b"\0asm but not really a component").unwrap();
            let rejected = within(Duration::from_secs(2), || {
                set.report()
                    .iter()
                    .any(|f| f.path.ends_with("eviction.wasm") && f.state == "rejected")
            })
            .await;
            assert!(rejected.is_some(), "write {i}: the broken file is reported");
            assert_eq!(
                serving(&set, "eviction.wasm", Hook::ChooseEviction),
                current,
                "write {i}: the old version serves"
            );
            assert!(set.hooks().get(Hook::ChooseEviction).is_some());
        } else {
            let bytes = if i % 2 == 0 { &lfu } else { &priority };
            std::fs::write(&file, bytes).unwrap();
            let want = sha(bytes);
            let t = within(Duration::from_secs(1), || {
                serving(&set, "eviction.wasm", Hook::ChooseEviction).as_deref() == Some(&want)
            })
            .await;
            took.push(t.unwrap_or_else(|| {
                panic!("write {i}: not serving within 1 s: {:?}", set.report())
            }));
            current = Some(want);
        }
    }
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{ok} requests answered, {failed} failed");
    assert!(ok >= 20, "traffic flowed: {ok}");
    took.sort();
    eprintln!(
        "write → serving, {} valid writes: median {:?}, max {:?}",
        took.len(),
        took[took.len() / 2],
        took[took.len() - 1]
    );
    let s = host.status();
    assert_eq!(
        s.models[0].load_count, 1,
        "the model stayed loaded through every reload"
    );
    let events = set.events();
    let rejected: Vec<_> = events.iter().filter(|e| e.kind == "rejected").collect();
    assert_eq!(rejected.len(), 4, "only the broken writes: {rejected:#?}");

    // Removing the file falls back to the configured default.
    std::fs::remove_file(&file).unwrap();
    let back = within(Duration::from_secs(2), || {
        set.hooks()
            .get(Hook::ChooseEviction)
            .is_some_and(|p| p.name() == modelyard::config::DEFAULT_EVICTION_POLICY)
    })
    .await;
    assert!(back.is_some(), "{:?}", set.report());
    host.stop().await;
}

#[test]
fn a_restart_with_unchanged_policies_loads_them_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::copy(
        guest_path("modelyard-policy-hybrid"),
        policies.join("mine.wasm"),
    )
    .unwrap();
    let settings = EngineSettings {
        cache_dir: Some(policies.join(".cache")),
        ..crate::util::relaxed()
    };
    let start = || {
        let engine = PolicyEngine::new(settings.clone()).unwrap();
        let set = PolicySet::new(
            engine.clone(),
            Arc::new(Hooks::new()),
            Default::default(),
            Some(policies.clone()),
        );
        assert_eq!(
            set.hooks()
                .get(Hook::ChooseEviction)
                .map(|p| p.name().to_string())
                .as_deref(),
            Some("mine")
        );
        engine.compile_counts()
    };
    assert_eq!(
        start(),
        (1, 0),
        "first start: compiled once, into the cache"
    );
    assert_eq!(
        start(),
        (0, 1),
        "restart: nothing compiled, read from the cache"
    );
    // A tampered artifact is never used: it is compiled again.
    let artifact = std::fs::read_dir(policies.join(".cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .unwrap();
    let mut bytes = std::fs::read(&artifact).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&artifact, bytes).unwrap();
    assert_eq!(start(), (1, 0), "tampered: recompiled");
    assert_eq!(start(), (0, 1));
}
