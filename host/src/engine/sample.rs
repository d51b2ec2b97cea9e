//! Sample inputs for every hook: what `policy check` runs a policy on, and what the benchmark
//! scales up. The scenario is small but exercises the rules: one pinned model, one busy one.

use super::types::{
    CompressionRequest, Device, EvictionReason, EvictionRecord, EvictionRequest, Message, Model,
    ModelState, Request, TaskDemand, Telemetry,
};
use super::{Catalogue, ModelInfo};

const GIB: u64 = 1 << 30;

/// A model with everything zeroed but what identifies it.
pub fn model(id: &str, size_gib: u64, tags: &[&str]) -> Model {
    Model {
        id: id.into(),
        aliases: vec![],
        state: ModelState::Ready,
        device: "cpu".into(),
        size_bytes: size_gib * GIB,
        size_measured: true,
        context_tokens: 8192,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        priority: 0,
        pinned: false,
        last_used_ms: 0,
        loaded_at_ms: 0,
        use_count: 0,
        load_count: 1,
        in_flight: 0,
        queued: 0,
        errors: 0,
        mean_load_ms: 2000,
        mean_latency_ms: 300,
    }
}

pub fn telemetry(now_ms: u64, total: u64, free: u64) -> Telemetry {
    Telemetry {
        now_ms,
        devices: vec![Device {
            name: "cpu".into(),
            total_bytes: total,
            free_bytes: free,
            utilization_percent: None,
        }],
        cpu_percent: 12.5,
    }
}

/// The catalogue of the sample's `n` models (`m0`..) and the incoming one (last), on `cpu`.
pub fn catalogue(n: usize) -> Catalogue {
    let info = |id: String, tag: &str| ModelInfo {
        id,
        aliases: vec![],
        tags: vec![tag.to_string()],
        context_tokens: 8192,
        parallel: 1,
    };
    let mut models: Vec<ModelInfo> = (0..n)
        .map(|i| info(format!("m{i}"), TAGS[i % TAGS.len()]))
        .collect();
    models.push(info("incoming".into(), "code"));
    Catalogue::new(models, vec!["cpu".into()])
}

const TAGS: [&str; 4] = ["chat", "code", "summarize", "general"];

/// `n` ready 1 GiB models with varied recency and use; `m0` is pinned and `m1` busy.
pub fn loaded(n: usize) -> Vec<Model> {
    (0..n)
        .map(|i| {
            let k = i as u64;
            let mut m = model(&format!("m{i}"), 1, &[TAGS[i % TAGS.len()]]);
            m.last_used_ms = 1_000 + (k * 7_919) % 100_000;
            m.loaded_at_ms = 500;
            m.use_count = (k * 31) % 97;
            m.load_count = 1 + (i % 3) as u32;
            m.priority = (i % 3) as i32;
            m.pinned = i == 0;
            m.in_flight = u32::from(i == 1);
            m
        })
        .collect()
}

/// Room for a 2 GiB model among `n` loaded models, with memory full.
pub fn eviction_request(n: usize) -> EvictionRequest {
    let mut incoming = model("incoming", 2, &["code"]);
    incoming.state = ModelState::Unloaded;
    incoming.load_count = 0;
    EvictionRequest {
        reason: EvictionReason::Load,
        record: EvictionRecord {
            incoming,
            needed_bytes: 2 * GIB,
            device: "cpu".into(),
            priority: 1,
            loaded: loaded(n),
            demand: vec![
                TaskDemand {
                    task: "code".into(),
                    requests: 12,
                },
                TaskDemand {
                    task: "chat".into(),
                    requests: 5,
                },
            ],
            telemetry: telemetry(120_000, n as u64 * GIB, 0),
        },
    }
}

/// An `auto` request for a coding task.
pub fn request() -> Request {
    Request {
        id: "req-1".into(),
        model: "auto".into(),
        task: None,
        priority: 0,
        client: None,
        prompt_tokens: 40,
        max_tokens: Some(128),
        last_user_message: "Why does this Rust function not compile?".into(),
    }
}

pub fn message(role: &str, content: &str) -> Message {
    Message {
        role: role.into(),
        content: content.into(),
        tokens: super::tokens::estimate_message(content),
    }
}

/// A conversation of `turns` exchanges that does not fit `budget` tokens.
pub fn compression_request(turns: usize, budget: u32) -> CompressionRequest {
    let mut messages = vec![message("system", "You are a helpful assistant.")];
    for i in 0..turns {
        messages.push(message(
            "user",
            &format!("Question {i}: {}", "tell me more. ".repeat(8)),
        ));
        messages.push(message(
            "assistant",
            &format!("Answer {i}: {}", "here is more. ".repeat(8)),
        ));
    }
    messages.push(message("user", "And finally, sum it all up?"));
    CompressionRequest {
        messages,
        budget_tokens: budget,
        model: model("m2", 1, &["chat"]),
    }
}
