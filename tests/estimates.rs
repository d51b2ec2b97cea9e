//! Footprint estimates before a load, end to end on real llama-server processes: the GGUF
//! header's count against each demo model's measured RSS, the footprint remembered across a
//! restart, and a load that makes room before it starts because its estimate holds.

use std::path::Path;
use std::time::Duration;

use modelyard::config::Settings;
use modelyard::scheduler::ModelStatus;

use crate::demo::{self, TestHost, llama_model, serial, settings, state_of};

/// The status of model `id`.
fn model(host: &TestHost, id: &str) -> ModelStatus {
    host.status()
        .models
        .into_iter()
        .find(|m| m.id == id)
        .unwrap_or_else(|| panic!("no model {id}"))
}

fn with_state(mut s: Settings, dir: &Path) -> Settings {
    s.state_dir = Some(dir.to_path_buf());
    s
}

/// Loads `id` with a short chat and waits for housekeeping to measure it again.
async fn load(host: &TestHost, id: &str) -> ModelStatus {
    let (code, body) = host.chat(id, 4).await;
    assert_eq!(code, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = model(host, id);
    assert_eq!(m.size_source, "measured", "{m:?}");
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_estimate_is_within_a_quarter_of_each_demo_models_rss_and_is_remembered() {
    let _serial = serial();
    let d = demo::demo();
    let state = tempfile::tempdir().unwrap();
    let mut models = vec![("smollm2", &d.smollm2), ("gemma3", &d.gemma3)];
    if let Some(q4_0) = &d.smollm2_q4_0 {
        models.push(("smollm2-q4_0", q4_0));
    }
    let toml: String = models
        .iter()
        .map(|(id, file)| llama_model(id, file, ""))
        .collect();
    let host = TestHost::start(with_state(settings(&toml), state.path())).await;
    // Every estimate is read before anything loads: the header and the default overhead.
    let before: Vec<ModelStatus> = models.iter().map(|(id, _)| model(&host, id)).collect();
    let mut measured = Vec::new();
    for (m, (id, _)) in before.iter().zip(&models) {
        assert_eq!(m.size_source, "gguf header", "{m:?}");
        let after = load(&host, id).await;
        let ratio = m.size_bytes as f64 / after.size_bytes as f64;
        eprintln!(
            "{id}: estimated {} MiB, measured {} MiB ({ratio:.2})",
            m.size_bytes >> 20,
            after.size_bytes >> 20
        );
        assert!(
            (0.75..=1.25).contains(&ratio),
            "{id}: estimated {} against {} measured",
            m.size_bytes,
            after.size_bytes
        );
        measured.push(after.size_bytes);
    }
    host.stop().await;

    // A restart remembers each model's own footprint (its load's peak, rewritten when it
    // moves by more than a MiB) and says so.
    let host = TestHost::start(with_state(settings(&toml), state.path())).await;
    for ((id, _), last) in models.iter().zip(measured) {
        let m = model(&host, id);
        assert_eq!(m.size_source, "remembered", "{m:?}");
        assert!(
            m.size_bytes.abs_diff(last) <= last / 20,
            "{id}: remembered {} after a last reading of {last}",
            m.size_bytes
        );
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_file_model_is_estimated_by_the_measured_one_and_room_is_made_before_it_starts() {
    let _serial = serial();
    let d = demo::demo();
    let state = tempfile::tempdir().unwrap();
    // First learn what the model holds.
    let one = llama_model("a", &d.smollm2, "");
    let host = TestHost::start(with_state(settings(&one), state.path())).await;
    let footprint = load(&host, "a").await.size_bytes;
    host.stop().await;

    // Room for not quite two: a and b share the file and flags, so b's estimate is a's
    // footprint, and loading b evicts a before b starts. An estimate 10% low would have
    // started b beside a, over the budget (pressure is off: only the estimate decides).
    let budget = footprint * 19 / 10;
    let toml = format!(
        "eviction = \"lru\"\n[memory]\npressure = 1.0\n[memory.cpu]\nbudget = {budget}\nreserve = 0\n{one}{}",
        llama_model("b", &d.smollm2, "tags = [\"code\"]")
    );
    let host = TestHost::start(with_state(settings(&toml), state.path())).await;
    let b = model(&host, "b");
    assert_eq!(b.size_source, "same file as a", "{b:?}");
    assert!(b.size_bytes.abs_diff(footprint) <= footprint / 20, "{b:?}");
    load(&host, "a").await;
    load(&host, "b").await;
    let s = host.status();
    assert_eq!(state_of(&s, "a"), "unloaded");
    let kinds: Vec<(&str, &str)> = s
        .events
        .iter()
        .map(|e| (e.model.as_str(), e.kind.as_str()))
        .collect();
    let evicted = kinds.iter().position(|k| *k == ("a", "evicted"));
    let loaded = kinds.iter().position(|k| *k == ("b", "loaded"));
    assert!(
        evicted.is_some() && evicted < loaded,
        "a goes before b starts: {:?}",
        s.events
    );
    host.stop().await;
}
