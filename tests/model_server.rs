//! Every host is a model server of the Gateway API Inference Extension: two real hosts on
//! loopback, each with another model loaded, expose on `/metrics` every name and label the
//! protocol's endpoint picker reads, parsed by Prometheus's own Python parser, with values
//! that follow each host's state (a load moves a model from waiting to running; a request in
//! flight is counted running); and what `modelyard pick` reads of them from an endpoints file in
//! llm-d's file-discovery format.

use std::time::Duration;

use serde_json::Value;

use modelyard::engine::types::ModelState;
use modelyard::pick::{self, hosts::Seen};

use crate::demo::{TestHost, demo, free_port, llama_model, serial, settings};

/// Parses the host's `/metrics` with `prometheus_client`'s text parser and prints, for each
/// family, its type and samples.
const PARSE_METRICS: &str = r#"
import json, os, urllib.request
from prometheus_client.parser import text_string_to_metric_families
root = os.environ["OPENAI_BASE_URL"].removesuffix("/v1")
text = urllib.request.urlopen(root + "/metrics").read().decode()
out = {}
for f in text_string_to_metric_families(text):
    out[f.name] = {"type": f.type,
                   "samples": [{"labels": s.labels, "value": s.value} for s in f.samples]}
print(json.dumps(out))
"#;

/// The names (and the LoRA info's labels) the endpoint picker's default mapping reads.
const GAUGES: [&str; 4] = [
    "vllm:num_requests_waiting",
    "vllm:num_requests_running",
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
];
const LORA_INFO: &str = "vllm:lora_requests_info";
const LORA_LABELS: [&str; 3] = ["running_lora_adapters", "waiting_lora_adapters", "max_lora"];

fn host_settings() -> modelyard::config::Settings {
    let d = demo();
    settings(&format!(
        "[memory.cpu]\nbudget = \"{}\"\n{}{}",
        modelyard::cli::setup::DEMO_BUDGET,
        llama_model("smol", &d.smollm2, ""),
        llama_model("gemma", &d.gemma3, ""),
    ))
}

/// The one sample of `name` in parsed metrics, checked to be a gauge.
fn sample<'a>(metrics: &'a Value, name: &str) -> &'a Value {
    let family = &metrics[name];
    assert_eq!(family["type"], "gauge", "{name} in {metrics}");
    let samples = family["samples"].as_array().expect("samples");
    assert_eq!(
        samples.len(),
        1,
        "one series for the host: {name} {samples:?}"
    );
    &samples[0]
}

fn value(metrics: &Value, name: &str) -> f64 {
    sample(metrics, name)["value"].as_f64().expect("a number")
}

fn label<'a>(metrics: &'a Value, name: &str) -> &'a str {
    sample(metrics, LORA_INFO)["labels"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

/// Every name and label the protocol needs, with values in range.
fn conformant(metrics: &Value) {
    for name in GAUGES {
        let v = value(metrics, name);
        assert!(v >= 0.0, "{name} = {v}");
    }
    for name in ["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"] {
        assert!(value(metrics, name) <= 1.0, "a fraction");
    }
    for name in LORA_LABELS {
        label(metrics, name);
    }
    let max: usize = label(metrics, "max_lora")
        .parse()
        .expect("max_lora is a count");
    let running = label(metrics, "running_lora_adapters");
    assert!(
        max >= running.split(',').filter(|s| !s.is_empty()).count(),
        "{metrics}"
    );
    // The LoRA info's value is when it was read: the picker keeps the latest series.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    assert!((now - value(metrics, LORA_INFO)).abs() < 60.0);
}

/// The LoRA info's labels as the host's raw text has them, for polling without Python.
async fn lora_line(host: &TestHost) -> String {
    host.get_text("/metrics")
        .await
        .lines()
        .find(|l| l.starts_with(LORA_INFO))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_speak_the_model_server_protocol_and_follow_their_state() {
    let _one = serial();
    let a = TestHost::start(host_settings()).await;
    let b = TestHost::start(host_settings()).await;
    a.load("smol").await;
    b.load("gemma").await;
    let (ma, mb) = (a.python(PARSE_METRICS).await, b.python(PARSE_METRICS).await);
    for m in [&ma, &mb] {
        conformant(m);
        assert_eq!(value(m, "vllm:num_requests_waiting"), 0.0);
        assert_eq!(value(m, "vllm:num_requests_running"), 0.0);
        assert_eq!(label(m, "waiting_lora_adapters"), "");
    }
    assert_eq!(label(&ma, "running_lora_adapters"), "smol");
    assert_eq!(label(&mb, "running_lora_adapters"), "gemma");

    // A load on A: gemma waits while it loads, then runs beside smol.
    let load = {
        let (http, url) = (a.http.clone(), a.url("/admin/models/gemma/load"));
        tokio::spawn(async move { http.post(url).send().await })
    };
    let mut seen_waiting = false;
    let watched = tokio::time::timeout(Duration::from_secs(120), async {
        while !load.is_finished() {
            seen_waiting |= lora_line(&a)
                .await
                .contains("waiting_lora_adapters=\"gemma\"");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(watched.is_ok(), "the load never ended");
    let loaded = load.await.expect("joins").expect("answers");
    assert!(loaded.status().is_success());
    let ma = a.python(PARSE_METRICS).await;
    conformant(&ma);
    let mut running: Vec<&str> = label(&ma, "running_lora_adapters").split(',').collect();
    running.sort_unstable();
    assert_eq!(running, ["gemma", "smol"]);
    assert_eq!(label(&ma, "waiting_lora_adapters"), "");
    assert!(seen_waiting, "gemma was listed as waiting while it loaded");

    // A request in flight on B counts as running, and fills its model's slots. It runs for
    // its whole length (llama-server's `ignore_eos`), seconds on two cores: long enough for
    // several looks, each a Python start.
    let chat = {
        let (http, url) = (b.http.clone(), b.url("/v1/chat/completions"));
        tokio::spawn(async move {
            http.post(url)
                .json(
                    &serde_json::json!({"model": "gemma", "max_tokens": 400, "ignore_eos": true,
                    "messages": [{"role": "user", "content": "Count to a hundred."}]}),
                )
                .send()
                .await
        })
    };
    let mut during = Value::Null;
    for _ in 0..200 {
        let m = b.python(PARSE_METRICS).await;
        if value(&m, "vllm:num_requests_running") >= 1.0 {
            during = m;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!during.is_null(), "the request was never seen running");
    conformant(&during);
    assert!(value(&during, "vllm:kv_cache_usage_perc") > 0.0, "{during}");
    let answer: Value = chat
        .await
        .expect("joins")
        .expect("answers")
        .json()
        .await
        .expect("a JSON answer");
    assert_eq!(
        answer["usage"]["completion_tokens"], 400,
        "it ran its whole length: {answer}"
    );

    // What `modelyard pick` sees of the two, from an endpoints file in llm-d's format, and of a
    // third address where nothing listens.
    let file = format!(
        "endpoints:\n  - name: a\n    address: \"127.0.0.1\"\n    port: \"{}\"\n\
         \x20 - name: b\n    address: \"127.0.0.1\"\n    port: \"{}\"\n\
         \x20 - name: gone\n    address: \"127.0.0.1\"\n    port: \"{}\"\n",
        a.host.addr.port(),
        b.host.addr.port(),
        free_port()
    );
    let endpoints = pick::endpoints::parse(&file).expect("a valid endpoints file");
    let seen = pick::hosts::look(&a.http, &endpoints, None).await;
    let (Seen::Up(va), Seen::Up(vb)) = (&seen[0], &seen[1]) else {
        panic!("{seen:?}");
    };
    let mut ready = va.gauges.ready_models.clone();
    ready.sort_unstable();
    assert_eq!(ready, ["gemma", "smol"]);
    assert_eq!(vb.gauges.ready_models, ["gemma"]);
    let state =
        |v: &pick::hosts::HostView, id: &str| v.models.iter().find(|m| m.id == id).map(|m| m.state);
    assert_eq!(state(va, "gemma"), Some(ModelState::Ready));
    assert_eq!(state(vb, "smol"), Some(ModelState::Unloaded));
    assert!(
        matches!(&seen[2], Seen::Down { why, .. } if why.contains("/admin/models")),
        "{:?}",
        seen[2]
    );
    a.stop().await;
    b.stop().await;
}
