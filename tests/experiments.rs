//! Experiments: sticky live splits, weight changes that move only the keys they must,
//! shadow mode, and per-arm results over HTTP on real traffic.

use std::sync::Arc;

use modelyard::engine::experiment::{Arm, Experiment, Mode, Sticky};
use modelyard::engine::types::EvictionDecision;
use modelyard::engine::{Hook, Hooks, sample};
use serde_json::{Value, json};

use crate::demo::{self, TestHost, llama_model, serial, settings};
use crate::util::{builtin, engine, evil, relaxed};

#[test]
fn a_live_split_is_even_sticky_and_a_weight_change_moves_only_the_keys_it_must() {
    let engine = engine(relaxed());
    let hooks = Hooks::new();
    hooks.set(Hook::SelectModel, Some(builtin(&engine, "specialization")));
    let e = Arc::new(Experiment::new(
        Hook::SelectModel,
        evil(&engine),
        0.5,
        Mode::Live,
        Sticky::Client,
    ));
    hooks.set_experiment(Hook::SelectModel, Some(e.clone()));

    let (req, candidates, telemetry) = (
        sample::request(),
        sample::loaded(8),
        sample::telemetry(1, 1 << 34, 1 << 33),
    );
    let clients: Vec<String> = (0..1000).map(|i| format!("client-{i}")).collect();
    let mut before = Vec::new();
    for c in &clients {
        let arm = e.arm(c);
        for _ in 0..3 {
            hooks.select_model_for(c, &req, &candidates, &telemetry);
            assert_eq!(e.arm(c), arm, "{c} stays on its arm");
        }
        before.push(arm);
    }
    let on_candidate = before.iter().filter(|a| **a == Arm::Candidate).count();
    assert!(
        (450..=550).contains(&on_candidate),
        "{on_candidate} of 1000 on the candidate"
    );
    let r = e.report();
    assert_eq!(
        r.candidate_arm.hook_calls,
        3 * on_candidate as u64,
        "each call went to its client's arm"
    );
    assert_eq!(r.incumbent_arm.hook_calls, 3 * (1000 - on_candidate) as u64);

    // 90/10: only candidate clients may move, and only as many as the weight says.
    e.set_weight(0.1);
    let after: Vec<Arm> = clients.iter().map(|c| e.arm(c)).collect();
    let moved: Vec<_> = before.iter().zip(&after).filter(|(b, a)| b != a).collect();
    assert!(
        moved
            .iter()
            .all(|(b, a)| **b == Arm::Candidate && **a == Arm::Incumbent)
    );
    let still = after.iter().filter(|a| **a == Arm::Candidate).count();
    assert_eq!(moved.len(), on_candidate - still);
    assert!(
        (60..=140).contains(&still),
        "{still} of 1000 stay on the candidate"
    );
}

#[test]
fn shadow_mode_acts_on_the_incumbent_and_reports_the_candidate_that_disagrees() {
    let engine = engine(relaxed());
    let hooks = Hooks::new();
    hooks.set(Hook::ChooseEviction, Some(builtin(&engine, "lru")));
    let e = Arc::new(Experiment::new(
        Hook::ChooseEviction,
        builtin(&engine, "lfu"),
        1.0,
        Mode::Shadow,
        Sticky::Request,
    ));
    hooks.set_experiment(Hook::ChooseEviction, Some(e.clone()));
    // Two idle models: `old` used long ago but often, `fresh` used just now, once. LRU evicts
    // `old`; LFU would evict `fresh`, which the incumbent keeps.
    let mut req = sample::eviction_request(0);
    let mut old = sample::model("old", 1, &["chat"]);
    (old.last_used_ms, old.use_count) = (1_000, 90);
    let mut fresh = sample::model("fresh", 1, &["chat"]);
    (fresh.last_used_ms, fresh.use_count) = (90_000, 1);
    req.loaded = vec![old, fresh];
    req.needed_bytes = 1 << 30;
    hooks.set_catalogue(crate::util::catalogue_of(
        req.loaded.iter().chain([&req.incoming]),
    ));
    let d = hooks.choose_eviction_for("r1", &req);
    assert!(
        matches!(&d.value, EvictionDecision::Evict(ids) if ids == &["old"]),
        "the incumbent's decision is acted on: {:?}",
        d.value
    );
    let r = e.report();
    let shadow = r.shadow.expect("shadow results");
    assert_eq!((shadow.compared, shadow.agreed), (1, 0));
    assert!(
        shadow.differed[0].candidate.contains(r#"Evict(["fresh"])"#),
        "{:?}",
        shadow.differed
    );
    assert!(shadow.differed[0].incumbent.contains(r#"Evict(["old"])"#));
    assert_eq!(
        r.candidate_arm.hook_calls, 1,
        "the candidate ran on the same input"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiment_runs_on_live_traffic_through_the_admin_api() {
    let _serial = serial();
    let d = demo::demo();
    let host = TestHost::start(settings(&llama_model(
        "m",
        &d.smollm2,
        "aliases = [\"small\"]",
    )))
    .await;
    let evil = crate::util::guest_path("modelyard-policy-evil");
    let admin = |path: &str| host.url(&format!("/admin/experiments{path}"));
    let started: Value = host
        .http
        .post(admin(""))
        .json(&json!({"hook": "select-model", "candidate": evil.display().to_string(), "weight": 0.5, "sticky": "user"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(started["candidate"], "modelyard_policy_evil", "{started}");
    // Half of them streamed: each answered request counts its time to first token.
    for i in 0..16 {
        let resp = host
            .http
            .post(host.url("/v1/chat/completions"))
            .json(
                &json!({"model": "small", "user": format!("user-{i}"), "max_tokens": 1,
                "stream": i % 2 == 0, "messages": [{"role": "user", "content": "hi"}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(!resp.text().await.unwrap().is_empty());
    }
    // An outcome is recorded as its answer's stream is dropped, just after the client has read
    // the end of it.
    let mut report = Value::Null;
    for _ in 0..40 {
        report = host.get_json("/admin/experiments").await;
        let arms = &report["experiments"][0];
        let total = arms["incumbent_arm"]["requests"].as_u64().unwrap()
            + arms["candidate_arm"]["requests"].as_u64().unwrap();
        if total == 16 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let e = &report["experiments"][0];
    let (inc, cand) = (&e["incumbent_arm"], &e["candidate_arm"]);
    assert_eq!(
        inc["requests"].as_u64().unwrap() + cand["requests"].as_u64().unwrap(),
        16,
        "{report}"
    );
    assert!(
        inc["requests"].as_u64().unwrap() > 0 && cand["requests"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert_eq!(inc["hook_calls"], inc["requests"]);
    assert_eq!(
        inc["ttft_ms"]["n"].as_u64().unwrap() + cand["ttft_ms"]["n"].as_u64().unwrap(),
        16,
        "time to first token for every answered request: {report}"
    );
    assert_eq!(
        inc["loads"].as_u64().unwrap() + cand["loads"].as_u64().unwrap(),
        1,
        "one request loaded the model"
    );
    assert!(
        e["differences"]["latency_ms"]["low"].is_number(),
        "a confidence interval: {report}"
    );

    let metrics = host
        .http
        .get(host.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "modelyard_experiment_requests_total{hook=\"select-model\",arm=\"candidate\"}"
        ),
        "{metrics}"
    );

    let moved: Value = host
        .http
        .post(admin("/select-model/weight"))
        .json(&json!({"weight": 0.1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(moved["weight"], 0.1);
    let promoted = host
        .http
        .post(admin("/select-model/promote"))
        .send()
        .await
        .unwrap();
    assert_eq!(promoted.status(), 200);
    let policies = host.get_json("/admin/policies").await;
    assert_eq!(
        policies["hooks"][1]["policy"], "modelyard_policy_evil",
        "{policies}"
    );
    let none: Value = host
        .http
        .get(admin(""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(none["experiments"], json!([]));
    host.stop().await;
}
