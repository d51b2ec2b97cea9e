//! Contract 0.2 beside 0.1: a 0.2 component's one instance keeps its state across calls, is
//! configured with the catalogue, is discarded (and says so) after a trap or its lifetime
//! memory cap, is asked about only the requests it wants, and its indices come back as names.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use modelyard::engine::sample;
use modelyard::engine::types::{
    Event, EventKind, EvictionDecision, EvictionReason, Request, Selection,
};
use modelyard::engine::{
    Contract, DecidedBy, EVENT_BATCH, EngineSettings, Hook, Hooks, MAX_PENDING_EVENTS, Policy,
    PolicyEngine, PolicySource,
};

use crate::util::{builtin, engine, guest_path, relaxed, seed_v0_1};

const MODELS: usize = 6;

fn stateful(engine: &PolicyEngine) -> Arc<Policy> {
    let path = guest_path("modelyard-policy-stateful");
    let bytes = std::fs::read(&path).expect("stateful guest built");
    Arc::new(
        engine
            .load("stateful", PolicySource::File(path), &bytes)
            .expect("stateful guest loads"),
    )
}

/// Hooks with `policy` on every hook it exports, and the sample's catalogue.
fn hooks_with(policy: &Arc<Policy>) -> Hooks {
    let hooks = Hooks::new();
    hooks.set_catalogue(sample::catalogue(MODELS));
    hooks.set_all(policy);
    hooks
}

/// An `auto` request carrying `text` as its newest user message.
fn auto(text: &str) -> Request {
    Request {
        last_user_message: text.into(),
        ..sample::request()
    }
}

/// Asks `select-model` and returns the guest's state line (it always rejects with it).
fn state(hooks: &Hooks, text: &str) -> Result<String, DecidedBy> {
    let decided = hooks.select_model(
        &auto(text),
        &sample::loaded(MODELS),
        &sample::telemetry(1_000, 8 << 30, 1 << 30),
    );
    match (decided.value, decided.by) {
        (Selection::Reject(line), DecidedBy::Policy(_)) => Ok(line),
        (_, by) => Err(by),
    }
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

#[test]
fn a_0_1_and_a_0_2_component_serve_side_by_side() {
    let e = engine(relaxed());
    let (lru, v2) = (seed_v0_1(&e, "lru"), stateful(&e));
    assert_eq!(lru.contract(), Contract::V0_1);
    assert_eq!(v2.contract(), Contract::V0_2);
    assert!(v2.contract().stateful() && v2.configurable() && v2.observes());
    let hooks = Hooks::new();
    hooks.set_catalogue(sample::catalogue(MODELS));
    hooks.set(Hook::ChooseEviction, Some(lru.clone()));
    hooks.set(Hook::SelectModel, Some(v2.clone()));
    let evicted = hooks.choose_eviction(&sample::eviction_request(MODELS));
    assert!(
        matches!(&evicted.by, DecidedBy::Policy(p) if p == "lru-0.1"),
        "{evicted:?}"
    );
    let line = state(&hooks, "hello").expect("the 0.2 policy answers");
    assert_eq!(field(&line, "calls"), "1");
    // The same eviction from the 0.2 guest's LRU, named back from its indices.
    hooks.set(Hook::ChooseEviction, Some(v2));
    let v2_evicted = hooks.choose_eviction(&sample::eviction_request(MODELS));
    assert!(matches!(&v2_evicted.by, DecidedBy::Policy(p) if p == "stateful"));
    assert_eq!(v2_evicted.value, evicted.value);
}

#[test]
fn state_survives_calls_and_a_trap_discards_it() {
    let e = engine(relaxed());
    let policy = stateful(&e);
    let hooks = hooks_with(&policy);
    for n in 1..=3 {
        let line = state(&hooks, "hello").expect("answers");
        assert_eq!(field(&line, "calls"), n.to_string(), "{line}");
        assert_eq!(field(&line, "configured"), "1", "configured once: {line}");
        assert_eq!(field(&line, "models"), (MODELS + 1).to_string());
    }
    assert_eq!(policy.resets().count, 0);
    let trapped = state(&hooks, "stateful:trap").expect_err("falls back");
    assert!(
        matches!(&trapped, DecidedBy::Fallback(Some(e)) if e.kind() == "trap"),
        "{trapped:?}"
    );
    let resets = policy.resets();
    assert_eq!(resets.count, 1);
    assert!(resets.last.expect("why").contains("trap"));
    // A fresh instance: its state starts again, configured with the catalogue first.
    let line = state(&hooks, "hello").expect("answers again");
    assert_eq!(
        (field(&line, "calls"), field(&line, "configured")),
        ("1", "1")
    );
}

#[test]
fn a_new_catalogue_configures_the_instance_again_and_keeps_its_state() {
    let e = engine(relaxed());
    let policy = stateful(&e);
    let hooks = hooks_with(&policy);
    state(&hooks, "hello").expect("answers");
    hooks.set_catalogue(sample::catalogue(MODELS + 2));
    let line = state(&hooks, "hello").expect("answers");
    assert_eq!(field(&line, "calls"), "2");
    assert_eq!(field(&line, "configured"), "2");
    assert_eq!(field(&line, "models"), (MODELS + 3).to_string());
}

#[test]
fn requests_naming_a_model_make_no_select_model_call() {
    let e = engine(relaxed());
    let policy = stateful(&e);
    let hooks = hooks_with(&policy);
    state(&hooks, "hello").expect("auto is wanted");
    let calls = || {
        policy
            .stats(Hook::SelectModel)
            .calls
            .load(Ordering::Relaxed)
    };
    assert_eq!(calls(), 1);
    let candidates = sample::loaded(MODELS);
    let telemetry = sample::telemetry(1_000, 8 << 30, 1 << 30);
    let exact = Request {
        model: "m3".into(),
        ..sample::request()
    };
    let decided = hooks.select_model(&exact, &candidates, &telemetry);
    assert_eq!(decided.value, Selection::Model("m3".into()));
    assert!(
        matches!(decided.by, DecidedBy::Fallback(None)),
        "{decided:?}"
    );
    assert_eq!(calls(), 1, "no guest call for an exact id");
    // An unknown name is wanted: the guest is asked.
    let unknown = Request {
        model: "nope".into(),
        ..sample::request()
    };
    hooks.select_model(&unknown, &candidates, &telemetry);
    assert_eq!(calls(), 2);
}

fn with_memory_cap(bytes: usize) -> EngineSettings {
    EngineSettings {
        memory_cap: bytes,
        ..relaxed()
    }
}

#[test]
fn lifetime_memory_cap_obeyed() {
    // 16 MiB a call, freed each time: ten calls stay under a 48 MiB cap.
    let e = engine(with_memory_cap(48 << 20));
    let policy = stateful(&e);
    let hooks = hooks_with(&policy);
    for n in 1..=10 {
        let line = state(&hooks, "stateful:churn 16").expect("under the cap");
        assert_eq!(field(&line, "calls"), n.to_string());
    }
    assert_eq!(policy.resets().count, 0);
}

#[test]
fn lifetime_memory_cap_violated() {
    // 16 MiB a call, kept: each call alone fits the 48 MiB cap, their sum does not.
    let e = engine(with_memory_cap(48 << 20));
    let policy = stateful(&e);
    let hooks = hooks_with(&policy);
    let mut kept = 0;
    let failed = loop {
        match state(&hooks, "stateful:keep 16") {
            Ok(line) => kept = field(&line, "kept").parse::<u32>().expect("a number"),
            Err(by) => break by,
        }
        assert!(kept < 48, "the cap did not hold: {kept} MiB kept");
    };
    assert!(kept >= 16, "at least one call fits alone");
    assert!(
        matches!(&failed, DecidedBy::Fallback(Some(e)) if e.kind() == "out_of_memory"),
        "{failed:?}"
    );
    assert_eq!(policy.resets().count, 1);
    let line = state(&hooks, "hello").expect("a fresh instance");
    assert_eq!(field(&line, "kept"), "0");
}

#[test]
fn wait_after_drain_and_the_reason_reach_the_host() {
    let e = engine(relaxed());
    let policy = stateful(&e);
    let hooks = hooks_with(&policy);
    state(&hooks, "stateful:wait 250").expect("answers");
    // m0 pinned, m1 busy: its LRU must wait, and says when to ask again.
    let decided = hooks.choose_eviction(&sample::eviction_request(2));
    assert_eq!(
        decided.value,
        EvictionDecision::Wait(Some(Duration::from_millis(250)))
    );
    // m1 is the sample's busy model: drained, it frees enough with the idle ones.
    state(&hooks, "stateful:drain").expect("answers");
    let req = sample::eviction_request(MODELS);
    let decided = hooks.choose_eviction(&req);
    assert_eq!(decided.value, EvictionDecision::Drain(vec!["m1".into()]));
    assert!(matches!(decided.by, DecidedBy::Policy(_)));
    // Housekeeping names its reason; a drain is not an answer to it, so LRU answers.
    let mut ttl = sample::eviction_request(MODELS);
    ttl.reason = EvictionReason::IdleTtl;
    ttl.needed_bytes = 1 << 30;
    let decided = hooks.choose_eviction(&ttl);
    assert!(
        matches!(decided.value, EvictionDecision::Evict(_)),
        "{decided:?}"
    );
    let line = state(&hooks, "hello").expect("answers");
    assert_eq!(field(&line, "reason"), "idle-ttl");
}

#[test]
fn an_index_outside_the_catalogue_is_an_invalid_decision() {
    let e = engine(relaxed());
    let policy = stateful(&e);
    let hooks = hooks_with(&policy);
    state(&hooks, "stateful:garbage").expect("answers");
    let decided = hooks.choose_eviction(&sample::eviction_request(MODELS));
    assert!(
        matches!(&decided.by, DecidedBy::Fallback(Some(e))
            if e.kind() == "invalid_decision" && e.to_string().contains("catalogue")),
        "{decided:?}"
    );
    assert_eq!(
        policy
            .stats(Hook::ChooseEviction)
            .failures
            .load(Ordering::Relaxed),
        1
    );
}

#[test]
fn a_call_the_host_cannot_describe_is_not_the_policys_failure() {
    // The host's catalogue lacks models its request names: the host's fault, not counted.
    let e = engine(relaxed());
    let policy = stateful(&e);
    let hooks = Hooks::new();
    hooks.set_catalogue(sample::catalogue(1));
    hooks.set_all(&policy);
    let decided = hooks.choose_eviction(&sample::eviction_request(MODELS));
    assert!(
        matches!(&decided.by, DecidedBy::Fallback(Some(e)) if e.kind() == "undescribable"),
        "{decided:?}"
    );
    let stats = policy.stats(Hook::ChooseEviction);
    assert_eq!(stats.failures.load(Ordering::Relaxed), 0);
    assert_eq!(stats.calls.load(Ordering::Relaxed), 0, "no guest call");
    assert_eq!(policy.resets().count, 0);
}

fn arrival(at_ms: u64, model: &str) -> Event {
    Event {
        at_ms,
        kind: EventKind::Arrived {
            model: model.into(),
            task: Some("code".into()),
            priority: 0,
            prompt_tokens: 10,
        },
    }
}

#[test]
fn events_arrive_in_order_in_batches() {
    let e = engine(relaxed());
    let policy = stateful(&e);
    let hooks = hooks_with(&policy);
    assert!(hooks.observed());
    let n = EVENT_BATCH as u64 * 2 + 7;
    for i in 0..n {
        hooks.observe(&arrival(i, &format!("m{}", i % 6)));
    }
    assert_eq!(policy.event_counts().pending, n as usize);
    assert_eq!(hooks.deliver(), n);
    let line = state(&hooks, "hello").expect("answers");
    assert_eq!(field(&line, "events"), n.to_string());
    assert_eq!(field(&line, "disorder"), "0");
    assert_eq!(
        field(&line, "last-event"),
        format!("arrived:{}", (n - 1) % 6)
    );
    let counts = policy.event_counts();
    assert_eq!(
        (counts.delivered, counts.dropped, counts.pending),
        (n, 0, 0)
    );
}

#[test]
fn events_past_the_bound_are_dropped_and_counted_never_waited_for() {
    let e = engine(relaxed());
    let policy = stateful(&e);
    let hooks = hooks_with(&policy);
    for i in 0..(MAX_PENDING_EVENTS as u64 + 10) {
        hooks.observe(&arrival(i, "m1"));
    }
    let counts = policy.event_counts();
    assert_eq!((counts.pending, counts.dropped), (MAX_PENDING_EVENTS, 10));
    assert_eq!(hooks.deliver(), MAX_PENDING_EVENTS as u64);
}

#[test]
fn a_0_1_policy_is_told_no_events() {
    let e = engine(relaxed());
    let lru = seed_v0_1(&e, "lru");
    let hooks = hooks_with(&lru);
    assert!(!hooks.observed());
    hooks.observe(&arrival(1, "m1"));
    assert_eq!(lru.event_counts().pending, 0);
    // Replacing the policy with one that observes is seen at once; taking it away too.
    let v2 = stateful(&e);
    hooks.set(Hook::SelectModel, Some(v2));
    assert!(hooks.observed());
    hooks.set(Hook::SelectModel, None);
    assert!(!hooks.observed());
}

#[test]
fn only_wanted_requests_go_to_the_selection_hook() {
    let e = engine(relaxed());
    let hooks = Hooks::new();
    hooks.set_catalogue(sample::catalogue(MODELS));
    assert!(!hooks.wants_selection("m1"), "no policy: the name decides");
    hooks.set(Hook::SelectModel, Some(seed_v0_1(&e, "specialization")));
    assert!(
        hooks.wants_selection("m1"),
        "a 0.1 policy sees every request"
    );
    // The shipped specialization (0.2) is asked only about `auto`: the host routes names.
    hooks.set(Hook::SelectModel, Some(builtin(&e, "specialization")));
    assert!(hooks.wants_selection("auto"));
    assert!(!hooks.wants_selection("m1") && !hooks.wants_selection("nope"));
    let v2 = stateful(&e);
    hooks.set(Hook::SelectModel, Some(v2));
    assert!(!hooks.wants_selection("m1"));
    assert!(hooks.wants_selection("auto"));
    assert!(
        hooks.wants_selection("nope"),
        "it asked for unknown names too"
    );
}
