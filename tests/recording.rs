//! Recording live traffic and replaying it, end to end: a scripted workload over four real
//! llama-server models with memory for two, recorded by `serve` (`[trace] record`); the trace
//! downloaded from `/admin/trace` holds no message content, and replayed by `simulate` through
//! the same policy on the host's own catalogue (`models --catalogue`) it makes about the loads
//! and evictions that serving made.

use std::process::Command;
use std::time::Duration;

use modelyard::recorder::{Outcome, Record, Stage};
use serde_json::{Value, json};

use crate::demo::{self, TestHost, llama_model, serial, settings};

const MODELS: [&str; 4] = ["a", "b", "c", "d"];
/// Two SmolLM2 servers (about 0.2 GB each, measured) fit; three do not.
const BUDGET: u64 = 500 << 20;
/// Requests each of the two clients sends.
const PER_CLIENT: usize = 30;
/// Words that must never reach the trace.
const SECRET: &str = "PAPAYA-LIGHTHOUSE";

/// Client `k`'s `i`-th request: its model (popularity a > b > c > d, shifting halfway), whether
/// it streams, and the pause before it.
fn script(k: usize, i: usize) -> (&'static str, bool, Duration) {
    // A fixed pseudo-random walk (no clock, no seed from the machine).
    let x = (k * 7919 + i * 104_729 + 13) % 10;
    let rank = match x {
        0..=3 => 0,
        4..=6 => 1,
        7..=8 => 2,
        _ => 3,
    };
    let shifted = if i >= PER_CLIENT / 2 { 3 - rank } else { rank };
    (
        MODELS[shifted],
        (i + k).is_multiple_of(3),
        Duration::from_millis(150 + (x as u64 * 37) % 200),
    )
}

async fn client(host: &TestHost, k: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for i in 0..PER_CLIENT {
        let (model, stream, pause) = script(k, i);
        tokio::time::sleep(pause).await;
        let resp = host
            .http
            .post(host.url("/v1/chat/completions"))
            .header("x-modelyard-priority", "2")
            .json(&json!({
                "model": model,
                "stream": stream,
                "max_tokens": 6,
                "temperature": 0,
                "messages": [{"role": "user", "content": format!("The secret is {SECRET}. Say it.")}],
            }))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
        // Read the whole answer, so that its stream ends.
        let _ = resp.bytes().await;
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_workload_keeps_no_content_and_replays_to_what_serving_did() {
    let _serial = serial();
    let d = demo::demo();
    let dir = tempfile::tempdir().unwrap();
    let trace_path = dir.path().join("trace.jsonl");
    let mut toml = format!(
        "eviction = \"lru\"\n[memory.cpu]\nbudget = {BUDGET}\nreserve = 0\n\
         [trace]\nrecord = \"{}\"\n",
        trace_path.display()
    );
    for m in MODELS {
        toml.push_str(&llama_model(m, &d.smollm2, "parallel = 2"));
    }
    let host = TestHost::start(settings(&toml)).await;

    let (one, two) = tokio::join!(client(&host, 0), client(&host, 1));
    assert!(
        one.iter().chain(&two).all(|&s| s == 200),
        "every scripted request is served: {one:?} {two:?}"
    );
    // Bad input: recorded, never replayed.
    let bad = host
        .http
        .post(host.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(format!("{{\"model\": \"a\", \"messages\": \"{SECRET}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let resp = host
        .http
        .get(host.url("/admin/trace"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let text = resp.text().await.unwrap();
    assert!(!text.contains(SECRET), "the trace holds no content");
    assert!(!text.contains("secret"), "the trace holds no content");
    let records: Vec<Record> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(records.len(), 2 * PER_CLIENT + 1, "one line a request");
    let served: Vec<&Record> = records
        .iter()
        .filter(|r| r.outcome == Outcome::Ok)
        .collect();
    assert_eq!(served.len(), 2 * PER_CLIENT);
    for r in &served {
        assert_eq!(
            (r.stage, r.status, r.priority),
            (Stage::Relay, 200, 2),
            "{r:?}"
        );
        assert!(
            MODELS.contains(&r.model.as_deref().unwrap_or_default()),
            "{r:?}"
        );
        assert!(
            r.prompt_tokens > 0 && r.output_tokens.is_some_and(|n| n > 0),
            "{r:?}"
        );
        let (wait, ttft, service) = (
            r.wait_ms.unwrap(),
            r.ttft_ms.unwrap(),
            r.service_ms.unwrap(),
        );
        assert!(
            wait <= ttft && ttft <= r.latency_ms && service <= r.latency_ms,
            "{r:?}"
        );
    }
    let rejected: Vec<&Record> = records
        .iter()
        .filter(|r| r.outcome == Outcome::Rejected)
        .collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!((rejected[0].stage, rejected[0].status), (Stage::Parse, 400));

    // What serving did, and the host's models as a catalogue.
    let status = host.status();
    let loads: u32 = status.models.iter().map(|m| m.load_count).sum();
    let evictions = status.eviction.evictions;
    let catalogue = dir.path().join("models.toml");
    std::fs::write(&catalogue, modelyard::cli::models::catalogue(&status)).unwrap();
    let recorded = dir.path().join("downloaded.jsonl");
    std::fs::write(&recorded, &text).unwrap();
    host.stop().await;

    let out = Command::new(env!("CARGO_BIN_EXE_modelyard"))
        .args(["simulate", "--format", "jsonl", "--policy", "lru", "--json"])
        .args(["--memory", &BUDGET.to_string()])
        .arg("--trace")
        .arg(&recorded)
        .arg("--models")
        .arg(&catalogue)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["requests"],
        2 * PER_CLIENT,
        "the bad request is not replayed"
    );
    let m = &report["points"][0]["policies"][0];
    let (sim_loads, sim_evictions) = (
        m["loads"].as_u64().unwrap(),
        m["evictions"].as_u64().unwrap(),
    );
    eprintln!(
        "fidelity: served {loads} loads, {evictions} evictions; replayed {sim_loads} loads, \
         {sim_evictions} evictions; {} failed in the replay",
        m["failed"]
    );
    assert_eq!(m["failed"], 0, "{m}");
    // Timing differs (a real server's answer times vary, the replay's are the recorded ones),
    // so decisions near a tie may go the other way; the counts stay close.
    let close = |served: u64, replayed: u64| served.abs_diff(replayed) <= 2.max(served / 5);
    assert!(
        loads >= 4 && evictions >= 2,
        "the workload swaps ({loads} loads, {evictions} evictions)"
    );
    assert!(
        close(u64::from(loads), sim_loads),
        "loads: served {loads}, replayed {sim_loads}"
    );
    assert!(
        close(evictions, sim_evictions),
        "evictions: served {evictions}, replayed {sim_evictions}"
    );
}
