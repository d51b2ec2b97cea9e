//! The five seed built-ins moved to contract 0.2 decide as they did on 0.1: each shipped 0.2
//! build and its 0.1 build (`policies/testdata/v0_1`) answer the same generated questions
//! through the real wasm path, decision by decision. A `wait` may now say when to ask again
//! (0.1 always meant a second) and a `reject` words its reason anew; the models evicted, the
//! model selected and the messages kept must be the same.

use std::sync::Arc;

use modelyard::engine::sample;
use modelyard::engine::types::{
    CompressionRequest, EvictionDecision, EvictionReason, EvictionRecord, EvictionRequest, Model,
    ModelState, Request, Selection, TaskDemand,
};
use modelyard::engine::{Catalogue, Contract, Policy};
use modelyard::sim::synthetic::Rng;

use crate::util::{builtin, catalogue_of, engine, relaxed, seed_v0_1};

const GIB: u64 = 1 << 30;
const SEEDS: u64 = 300;
const TAGS: [&str; 4] = ["chat", "code", "general", "summarize"];
const TEXTS: [&str; 4] = [
    "hello there",
    "Why does this Rust function not compile?",
    "tl;dr of the meeting notes please",
    "what is a regex for dates",
];

/// The scenarios' draws: the same on every run.
trait Draw {
    fn int(&mut self, n: u64) -> u64;
    fn chance(&mut self, percent: u64) -> bool {
        self.int(100) < percent
    }
}

impl Draw for Rng {
    fn int(&mut self, n: u64) -> u64 {
        self.below(n as usize) as u64
    }
}

/// `n` models with every field varied, ids in catalogue order, at time `now`.
fn models(rng: &mut Rng, now: u64) -> Vec<Model> {
    let n = 1 + rng.int(10) as usize;
    (0..n)
        .map(|i| {
            let mut tags = vec![TAGS[rng.int(4) as usize]];
            if rng.chance(30) {
                tags.push(TAGS[rng.int(4) as usize]);
            }
            let mut m = sample::model(&format!("m{i:02}"), 1 + rng.int(8), &tags);
            if rng.chance(30) {
                m.aliases = vec![format!("alias{i}")];
            }
            m.state = match rng.int(10) {
                0 => ModelState::Loading,
                1 => ModelState::Unloaded,
                _ => ModelState::Ready,
            };
            m.priority = rng.int(4) as i32 - 1;
            m.pinned = rng.chance(10);
            m.in_flight = if rng.chance(25) {
                1 + rng.int(2) as u32
            } else {
                0
            };
            m.queued = if rng.chance(25) { rng.int(4) as u32 } else { 0 };
            m.use_count = if rng.chance(30) {
                500 + rng.int(1500)
            } else {
                rng.int(200)
            };
            m.load_count = rng.int(6) as u32;
            m.errors = if rng.chance(15) {
                1 + rng.int(4) as u32
            } else {
                0
            };
            m.loaded_at_ms = rng.int(now / 2);
            m.last_used_ms = if rng.chance(40) {
                now - rng.int(200)
            } else {
                rng.int(now)
            };
            m.mean_load_ms = if rng.chance(20) {
                0
            } else {
                500 + rng.int(8_000) as u32
            };
            m
        })
        .collect()
}

fn demand(rng: &mut Rng) -> Vec<TaskDemand> {
    // `translate` is a task no model has: 0.2 cannot name it, and no model counts it.
    let mut demand = Vec::new();
    for task in ["chat", "code", "summarize", "translate"] {
        if rng.chance(60) {
            demand.push(TaskDemand {
                task: task.into(),
                requests: rng.int(20) as u32,
            });
        }
    }
    demand
}

/// A question for `choose-eviction` on the world `all`: a load of an unloaded model, or a
/// housekeeping one with 0.1's stand-in for the incoming model (`wit/CONTRACT.md`).
fn eviction(rng: &mut Rng, all: &[Model], now: u64) -> EvictionRequest {
    let resident: Vec<Model> = all
        .iter()
        .filter(|m| m.state != ModelState::Unloaded)
        .cloned()
        .collect();
    let needed_bytes = (1 + rng.int(12)) * GIB / 2;
    let cold = all.iter().find(|m| m.state == ModelState::Unloaded);
    let (reason, incoming, priority) = match (rng.int(4), cold) {
        (0, _) => (EvictionReason::IdleTtl, None, i32::MAX),
        (1, _) => (EvictionReason::Pressure, None, i32::MAX),
        (_, Some(m)) => (EvictionReason::Load, Some(m.clone()), rng.int(4) as i32 - 1),
        (_, None) => (EvictionReason::Pressure, None, i32::MAX),
    };
    let incoming = incoming.unwrap_or_else(|| {
        let name = if reason == EvictionReason::IdleTtl {
            "ttl"
        } else {
            "pressure"
        };
        let mut m = sample::model(&format!("modelyard:{name}"), 0, &[]);
        m.state = ModelState::Unloaded;
        m.size_bytes = needed_bytes;
        m.size_measured = false;
        m.context_tokens = 0;
        m.priority = i32::MAX;
        m.load_count = 0;
        m.mean_load_ms = 0;
        m.mean_latency_ms = 0;
        m
    });
    EvictionRequest {
        reason,
        record: EvictionRecord {
            incoming,
            needed_bytes,
            device: "cpu".into(),
            priority,
            loaded: resident,
            demand: demand(rng),
            telemetry: sample::telemetry(now, 64 * GIB, 0),
        },
    }
}

fn request(rng: &mut Rng, all: &[Model]) -> Request {
    let pick = &all[rng.int(all.len() as u64) as usize];
    let model = match rng.int(6) {
        0 => pick.id.clone(),
        1 => pick
            .aliases
            .first()
            .cloned()
            .unwrap_or_else(|| "auto".into()),
        2 => "nope".into(),
        _ => "auto".into(),
    };
    let task = match rng.int(4) {
        0 => Some(TAGS[rng.int(4) as usize].to_string()),
        1 => Some("translate".into()),
        _ => None,
    };
    Request {
        model,
        task,
        priority: rng.int(3) as i32,
        last_user_message: TEXTS[rng.int(4) as usize].into(),
        ..sample::request()
    }
}

/// The same decision, allowing a `wait` its new timing and a `reject` its new wording.
fn same_eviction(a: &EvictionDecision, b: &EvictionDecision) -> bool {
    use EvictionDecision::{Reject, Wait};
    matches!((a, b), (Wait(_), Wait(_)) | (Reject(_), Reject(_))) || a == b
}

fn same_selection(a: &Selection, b: &Selection) -> bool {
    matches!((a, b), (Selection::Reject(_), Selection::Reject(_))) || a == b
}

fn pair(name: &str) -> (Arc<Policy>, Arc<Policy>) {
    let e = engine(relaxed());
    let ported = builtin(&e, name);
    assert_eq!(ported.contract(), Contract::V0_2, "{name} ships on 0.2");
    let old = seed_v0_1(&e, name);
    assert_eq!(old.contract(), Contract::V0_1);
    (ported, old)
}

#[derive(Default, Debug)]
struct Seen {
    evict: u32,
    wait: u32,
    reject: u32,
    selected: u32,
    refused: u32,
    compressed: u32,
}

/// Asks both builds of `name` every generated question its hooks serve.
fn compare(name: &str, selects: bool) {
    let (ported, old) = pair(name);
    let mut seen = Seen::default();
    for seed in 0..SEEDS {
        let mut rng = Rng(seed);
        let now = 60_000 + rng.int(600_000);
        let all = models(&mut rng, now);
        // One world per seed: a 0.2 instance is configured once per catalogue.
        let catalogue: Catalogue = catalogue_of(&all);
        for _ in 0..3 {
            let req = eviction(&mut rng, &all, now);
            let (new, was) = (
                ported.choose_eviction(&req, &catalogue).unwrap(),
                old.choose_eviction(&req, &catalogue).unwrap(),
            );
            assert!(
                same_eviction(&new, &was),
                "{name}, seed {seed}: 0.2 {new:?}, 0.1 {was:?} for {req:#?}"
            );
            match new {
                EvictionDecision::Evict(_) => seen.evict += 1,
                EvictionDecision::Wait(_) => seen.wait += 1,
                _ => seen.reject += 1,
            }
        }
        if selects {
            let telemetry = sample::telemetry(now, 64 * GIB, 8 * GIB);
            for _ in 0..4 {
                let req = request(&mut rng, &all);
                let (new, was) = (
                    ported
                        .select_model(&req, &all, &telemetry, &catalogue)
                        .unwrap(),
                    old.select_model(&req, &all, &telemetry, &catalogue)
                        .unwrap(),
                );
                assert!(
                    same_selection(&new, &was),
                    "{name}, seed {seed}: 0.2 {new:?}, 0.1 {was:?} for {req:?} among {all:#?}"
                );
                match new {
                    Selection::Model(_) => seen.selected += 1,
                    Selection::Reject(_) => seen.refused += 1,
                }
            }
        }
        let mut req: CompressionRequest =
            sample::compression_request(rng.int(12) as usize, 10 + rng.int(400) as u32);
        req.model = all[0].clone();
        let (new, was) = (
            ported.compress_context(&req, &catalogue).unwrap(),
            old.compress_context(&req, &catalogue).unwrap(),
        );
        assert_eq!(new.is_ok(), was.is_ok(), "{name}, seed {seed}");
        if let (Ok(new), Ok(was)) = (&new, &was) {
            assert_eq!(new, was, "{name}, seed {seed}: compress-context");
            seen.compressed += 1;
        }
    }
    // The scenarios reach every kind of answer, or the comparison proves little.
    assert!(
        seen.evict > 100 && seen.wait > 10 && seen.reject > 10 && seen.compressed > 50,
        "{name}: {seen:?}"
    );
    if selects {
        assert!(seen.selected > 500 && seen.refused > 50, "{name}: {seen:?}");
    }
}

#[test]
fn lru_on_0_2_decides_as_on_0_1() {
    compare("lru", false);
}

#[test]
fn lfu_on_0_2_decides_as_on_0_1() {
    compare("lfu", false);
}

#[test]
fn priority_on_0_2_decides_as_on_0_1() {
    compare("priority", false);
}

#[test]
fn specialization_on_0_2_decides_as_on_0_1() {
    compare("specialization", true);
}

#[test]
fn hybrid_on_0_2_decides_as_on_0_1() {
    compare("hybrid", false);
}
