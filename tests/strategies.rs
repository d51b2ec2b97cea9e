//! Each built-in's decisions match its definition, called through wasm.

use std::time::Duration;

use modelyard::engine::sample::{self, model};
use modelyard::engine::types::{
    CompressionRequest, EvictionDecision, EvictionRequest, Model, ModelState, Request, Selection,
    TaskDemand,
};
use modelyard::engine::{Policy, PolicyEngine};

use crate::util::{builtin, catalogue_of, engine, relaxed};

const GIB: u64 = 1 << 30;

fn loaded(id: &str, last_used_ms: u64) -> Model {
    let mut m = model(id, 1, &["chat"]);
    m.last_used_ms = last_used_ms;
    m
}

fn need(gib: u64, loaded: Vec<Model>) -> EvictionRequest {
    let mut req = sample::eviction_request(0);
    req.needed_bytes = gib * GIB;
    req.priority = 0;
    req.demand = vec![];
    req.loaded = loaded;
    req
}

/// The catalogue of an eviction question's models.
fn catalogue(req: &EvictionRequest) -> modelyard::engine::Catalogue {
    catalogue_of(req.loaded.iter().chain([&req.incoming]))
}

fn decide(policy: &Policy, req: &EvictionRequest) -> EvictionDecision {
    policy
        .choose_eviction(req, &catalogue(req))
        .expect("valid decision")
}

fn evicts(policy: &Policy, req: &EvictionRequest) -> Vec<String> {
    match decide(policy, req) {
        EvictionDecision::Evict(ids) => ids,
        other => panic!("{} answered {other:?}", policy.name()),
    }
}

fn setup(name: &str) -> (PolicyEngine, std::sync::Arc<Policy>) {
    let e = engine(relaxed());
    let p = builtin(&e, name);
    (e, p)
}

#[test]
fn lru_evicts_least_recently_used_just_enough() {
    let (_e, lru) = setup("lru");
    let three = || vec![loaded("a", 100), loaded("b", 300), loaded("c", 200)];
    assert_eq!(evicts(&lru, &need(1, three())), ["a"]);
    assert_eq!(evicts(&lru, &need(2, three())), ["a", "c"]);
    let mut models = three();
    models[0].pinned = true;
    models[2].in_flight = 1;
    assert_eq!(
        evicts(&lru, &need(1, models)),
        ["b"],
        "pinned and busy models are skipped"
    );
}

#[test]
fn lru_waits_for_busy_models_and_rejects_when_nothing_can_free() {
    let (_e, lru) = setup("lru");
    let mut busy = loaded("a", 100);
    busy.in_flight = 2;
    assert_eq!(
        decide(&lru, &need(1, vec![busy])),
        EvictionDecision::Wait(None),
        "nothing but a change can make room: no re-ask on time"
    );
    let mut pinned = loaded("a", 100);
    pinned.pinned = true;
    let decision = decide(&lru, &need(1, vec![pinned]));
    assert!(
        matches!(decision, EvictionDecision::Reject(_)),
        "{decision:?}"
    );
}

#[test]
fn lfu_evicts_least_used_ties_by_recency() {
    let (_e, lfu) = setup("lfu");
    let mut a = loaded("a", 100);
    a.use_count = 10;
    let mut b = loaded("b", 300);
    b.use_count = 2;
    let mut c = loaded("c", 200);
    c.use_count = 2;
    assert_eq!(
        evicts(&lfu, &need(1, vec![a.clone(), b.clone(), c.clone()])),
        ["c"]
    );
    assert_eq!(evicts(&lfu, &need(3, vec![a, b, c])), ["c", "b", "a"]);
}

#[test]
fn priority_evicts_lowest_first_and_never_above_the_request() {
    let (_e, prio) = setup("priority");
    let mut a = loaded("a", 300);
    a.priority = 0;
    let mut b = loaded("b", 100);
    b.priority = 1;
    let mut c = loaded("c", 100);
    c.priority = 0;
    let models = vec![a, b, c];
    assert_eq!(evicts(&prio, &need(1, models.clone())), ["c"]);
    assert_eq!(evicts(&prio, &need(2, models.clone())), ["c", "a"]);
    // A priority-0 load may not push out the priority-1 model, even when short of room.
    let decision = decide(&prio, &need(3, models.clone()));
    assert!(
        matches!(decision, EvictionDecision::Reject(_)),
        "{decision:?}"
    );
    // A priority-1 load may.
    let mut req = need(3, models);
    req.priority = 1;
    assert_eq!(evicts(&prio, &req), ["c", "a", "b"]);
}

fn candidates() -> Vec<Model> {
    let mut coder = model("coder", 1, &["code"]);
    coder.aliases = vec!["c".into()];
    coder.state = ModelState::Unloaded;
    let chat = model("chatter", 1, &["chat"]);
    let general = model("generalist", 1, &["general"]);
    vec![coder, chat, general]
}

fn select(policy: &Policy, model: &str, task: Option<&str>, text: &str) -> Selection {
    let req = Request {
        model: model.into(),
        task: task.map(Into::into),
        last_user_message: text.into(),
        ..sample::request()
    };
    let telemetry = sample::telemetry(1_000, 8 * GIB, 4 * GIB);
    policy
        .select_model(
            &req,
            &candidates(),
            &telemetry,
            &catalogue_of(&candidates()),
        )
        .expect("valid selection")
}

#[test]
fn specialization_scores_tags_and_resolves_names() {
    let (_e, spec) = setup("specialization");
    let pick = |model, task, text| match select(&spec, model, task, text) {
        Selection::Model(id) => id,
        Selection::Reject(why) => panic!("rejected: {why}"),
    };
    assert_eq!(
        pick("auto", Some("code"), "hello"),
        "coder",
        "exact tag scores 1.0"
    );
    assert_eq!(
        pick("auto", Some("summarize"), "hello"),
        "generalist",
        "general scores 0.7"
    );
    assert_eq!(
        pick("auto", None, "Fix this python function please"),
        "coder",
        "task read from text"
    );
    assert_eq!(pick("c", None, "hi"), "coder", "alias");
    assert_eq!(
        pick("chatter", Some("code"), "hi"),
        "chatter",
        "an explicit id wins"
    );
    assert!(matches!(
        select(&spec, "nope", None, "hi"),
        Selection::Reject(_)
    ));
}

#[test]
fn specialization_breaks_ties_toward_the_loaded_model() {
    let (_e, spec) = setup("specialization");
    let mut cold = model("a-cold", 1, &["code"]);
    cold.state = ModelState::Unloaded;
    let warm = model("b-warm", 1, &["code"]);
    let req = Request {
        task: Some("code".into()),
        ..sample::request()
    };
    let telemetry = sample::telemetry(1_000, 8 * GIB, 4 * GIB);
    let chosen = spec
        .select_model(
            &req,
            &[cold.clone(), warm.clone()],
            &telemetry,
            &catalogue_of([&cold, &warm]),
        )
        .unwrap();
    assert_eq!(chosen, Selection::Model("b-warm".into()));
}

#[test]
fn specialization_keeps_models_current_demand_needs() {
    let (_e, spec) = setup("specialization");
    let mut coder = model("coder", 1, &["code"]);
    coder.last_used_ms = 100;
    let mut chat = model("chatter", 1, &["chat"]);
    chat.last_used_ms = 300;
    let mut req = need(1, vec![coder, chat]);
    req.demand = vec![TaskDemand {
        task: "code".into(),
        requests: 10,
    }];
    assert_eq!(evicts(&spec, &req), ["chatter"], "LRU would evict coder");
}

#[test]
fn hybrid_keeps_active_models_over_idle_ones() {
    let (_e, hybrid) = setup("hybrid");
    // a: idle longest but has queued work; b: more recent, no work. Scores (now 10 s):
    // a = 0.3*1.0 + 0.2*0 + 0.4*0 + 0 = 0.30;  b = 0.3*0.5 + 0.2*0 + 0.4*1 + 0 = 0.55.
    let mut a = loaded("a", 0);
    a.queued = 3;
    let b = loaded("b", 5_000);
    let mut req = need(1, vec![a, b]);
    req.telemetry.now_ms = 10_000;
    assert_eq!(evicts(&hybrid, &req), ["b"], "LRU would evict a");
}

#[test]
fn hybrid_prefers_evicting_unreliable_and_rarely_reloaded_models() {
    let (_e, hybrid) = setup("hybrid");
    let mut flaky = loaded("flaky", 1_000);
    flaky.errors = 4;
    let steady = loaded("steady", 1_000);
    let mut req = need(1, vec![steady.clone(), flaky]);
    req.telemetry.now_ms = 2_000;
    assert_eq!(evicts(&hybrid, &req), ["flaky"]);
    let mut thrashed = loaded("thrashed", 1_000);
    thrashed.load_count = 5;
    let mut req = need(1, vec![thrashed, steady]);
    req.telemetry.now_ms = 2_000;
    assert_eq!(
        evicts(&hybrid, &req),
        ["steady"],
        "a model reloaded often is kept"
    );
}

#[test]
fn hybrid_guards_a_model_expected_back_within_half_its_load_time() {
    let (_e, hybrid) = setup("hybrid");
    // 1,000 requests in 100 s: one every 100 ms. Idle for 50 ms, it is due in 50 ms, well
    // within half its 2 s load: evicting it would cost a reload almost at once. The guard
    // lapses once it has been idle for half its load time (1 s): 950 ms from now.
    let mut hot = loaded("hot", 99_950);
    hot.use_count = 1_000;
    let mut req = need(1, vec![hot.clone()]);
    req.telemetry.now_ms = 100_000;
    assert_eq!(
        decide(&hybrid, &req),
        EvictionDecision::Wait(Some(Duration::from_millis(950)))
    );
    let mut later = req.clone();
    later.telemetry.now_ms = 100_400;
    assert_eq!(
        decide(&hybrid, &later),
        EvictionDecision::Wait(Some(Duration::from_millis(550)))
    );
    // The guard yields when the load it holds back has more requests waiting than four times
    // what the guarded model expects during one reload (2 s / 100 ms = 20).
    let mut waited = req.clone();
    waited.incoming.queued = 81;
    assert_eq!(evicts(&hybrid, &waited), ["hot"]);
    waited.incoming.queued = 80;
    assert_eq!(
        decide(&hybrid, &waited),
        EvictionDecision::Wait(Some(Duration::from_millis(950)))
    );
    // Idle for 10 s, far past its usual gap: no longer guarded.
    hot.last_used_ms = 90_000;
    req.loaded = vec![hot];
    assert_eq!(evicts(&hybrid, &req), ["hot"]);
}

#[test]
fn hybrid_still_rejects_what_even_its_guarded_models_could_not_free() {
    let (_e, hybrid) = setup("hybrid");
    let mut hot = loaded("hot", 99_950);
    hot.use_count = 1_000;
    let mut req = need(2, vec![hot]);
    req.telemetry.now_ms = 100_000;
    assert!(matches!(decide(&hybrid, &req), EvictionDecision::Reject(_)));
}

#[test]
fn hybrid_evicts_the_model_that_frees_most_bytes_per_reload_second_until_its_next_use() {
    let (_e, hybrid) = setup("hybrid");
    // Both used every 10 s on average. big (8 GiB) is due in 8 s, small (1 GiB) in 6 s:
    // LRU would evict small, which frees an eighth of the bytes for the same reload time.
    let mut big = model("big", 8, &["chat"]);
    big.last_used_ms = 98_000;
    big.use_count = 10;
    let mut small = loaded("small", 96_000);
    small.use_count = 10;
    let mut req = need(1, vec![small, big]);
    req.telemetry.now_ms = 100_000;
    assert_eq!(evicts(&hybrid, &req), ["big"]);
}

#[test]
fn every_builtin_evicts_just_enough_and_never_pinned_or_busy() {
    let e = engine(relaxed());
    for name in modelyard::engine::builtin::NAMES {
        let policy = builtin(&e, name);
        let req = sample::eviction_request(16);
        let ids = match policy.choose_eviction(&req, &sample::catalogue(16)) {
            Ok(EvictionDecision::Evict(ids)) => ids,
            other => panic!("{name} answered {other:?}"),
        };
        let chosen: Vec<&Model> = ids
            .iter()
            .map(|id| req.loaded.iter().find(|m| &m.id == id).unwrap())
            .collect();
        assert!(
            chosen.iter().all(|m| !m.pinned && m.in_flight == 0),
            "{name}: {ids:?}"
        );
        let freed: u64 = chosen.iter().map(|m| m.size_bytes).sum();
        let smallest = chosen.iter().map(|m| m.size_bytes).min().unwrap_or(0);
        assert!(
            freed >= req.needed_bytes,
            "{name} frees too little: {ids:?}"
        );
        assert!(
            freed - smallest < req.needed_bytes,
            "{name} evicts more than needed: {ids:?}"
        );
    }
}

fn check_compression(name: &str, policy: &Policy, req: &CompressionRequest) {
    let kept = policy
        .compress_context(req, &sample::catalogue(6))
        .expect("valid")
        .expect("fits");
    let total: u32 = kept.iter().map(|m| m.tokens).sum();
    assert!(
        total <= req.budget_tokens,
        "{name}: {total} > {}",
        req.budget_tokens
    );
    assert_eq!(
        kept.first(),
        req.messages.first(),
        "{name} keeps the system prompt"
    );
    assert_eq!(
        kept.last(),
        req.messages.last(),
        "{name} keeps the newest user turn"
    );
    // What is kept besides those is the newest run of turns, in order.
    let tail = &req.messages[req.messages.len() - (kept.len() - 1)..];
    assert_eq!(
        &kept[1..],
        tail,
        "{name} keeps the newest turns, contiguous"
    );
    assert!(kept.len() < req.messages.len(), "{name} dropped something");
}

#[test]
fn every_builtin_compresses_to_the_newest_turns_that_fit() {
    let e = engine(relaxed());
    for name in modelyard::engine::builtin::NAMES {
        let policy = builtin(&e, name);
        check_compression(name, &policy, &sample::compression_request(6, 120));
        let hopeless = sample::compression_request(6, 5);
        let answer = policy
            .compress_context(&hopeless, &sample::catalogue(6))
            .expect("a valid answer");
        assert!(answer.is_err(), "{name} cannot fit 5 tokens: {answer:?}");
    }
}
