//! Every sandbox limit has an obeyed/violated pair; every way the evil guest misbehaves is
//! contained, falls back, is counted, and leaves the next call working.

use std::sync::atomic::Ordering;
use std::time::Duration;

use modelyard::engine::sample;
use modelyard::engine::types::{
    CompressionRequest, EvictionDecision, EvictionRequest, Request, Selection,
};
use modelyard::engine::{
    Decided, DecidedBy, EngineSettings, Hook, Hooks, Policy, PolicyError, fallback,
};

use crate::util::{builtin, engine, evil, no_catalogue, relaxed};

fn evict_request(mode: &str) -> EvictionRequest {
    let mut req = sample::eviction_request(8);
    req.incoming.id = format!("evil:{mode}");
    req
}

fn select_request(mode: &str) -> Request {
    Request {
        model: format!("evil:{mode}"),
        ..sample::request()
    }
}

fn compress_request(mode: &str) -> CompressionRequest {
    let mut req = sample::compression_request(6, 120);
    let last = req.messages.last_mut().expect("a user turn");
    last.content = format!("evil:{mode}");
    last.tokens = 8;
    req
}

fn with_deadline(ms: u64) -> EngineSettings {
    EngineSettings {
        hook_deadline: Duration::from_millis(ms),
        ..relaxed()
    }
}

fn with_memory_cap(bytes: usize) -> EngineSettings {
    EngineSettings {
        memory_cap: bytes,
        ..relaxed()
    }
}

#[test]
fn deadline_obeyed() {
    let e = engine(with_deadline(5_000));
    let decision = evil(&e).choose_eviction(&evict_request("work"), &no_catalogue());
    assert!(
        matches!(decision, Ok(EvictionDecision::Evict(_))),
        "{decision:?}"
    );
}

#[test]
fn deadline_violated() {
    let e = engine(with_deadline(2));
    let decision = evil(&e).choose_eviction(&evict_request("work"), &no_catalogue());
    assert!(
        matches!(decision, Err(PolicyError::Deadline { .. })),
        "{decision:?}"
    );
}

#[test]
fn memory_cap_obeyed() {
    let e = engine(with_memory_cap(64 << 20));
    let decision = evil(&e).choose_eviction(&evict_request("alloc"), &no_catalogue());
    assert!(
        matches!(decision, Ok(EvictionDecision::Evict(_))),
        "{decision:?}"
    );
}

#[test]
fn memory_cap_violated() {
    let e = engine(with_memory_cap(8 << 20));
    let decision = evil(&e).choose_eviction(&evict_request("alloc"), &no_catalogue());
    assert!(
        matches!(decision, Err(PolicyError::OutOfMemory { .. })),
        "{decision:?}"
    );
}

#[test]
fn evil_eviction_modes_are_contained_and_fall_back() {
    let e = engine(EngineSettings {
        hook_deadline: Duration::from_millis(50),
        memory_cap: 32 << 20,
        quarantine_after: 1_000,
        ..EngineSettings::default()
    });
    let evil = evil(&e);
    let hooks = Hooks::new();
    hooks.set_all(&evil);
    let cases = [
        ("loop", "deadline"),
        ("oom", "out_of_memory"),
        ("trap", "trap"),
        ("garbage", "invalid_decision"),
        ("pinned", "invalid_decision"),
        ("busy", "invalid_decision"),
        ("short", "invalid_decision"),
    ];
    for (i, (mode, kind)) in cases.into_iter().enumerate() {
        let req = evict_request(mode);
        let decided = hooks.choose_eviction(&req);
        let DecidedBy::Fallback(Some(error)) = &decided.by else {
            panic!("{mode}: not a fallback: {decided:?}");
        };
        assert_eq!(error.kind(), kind, "{mode}: {error}");
        assert_eq!(
            decided.value,
            fallback::choose_eviction(&req),
            "{mode}: fallback decides"
        );
        let stats = evil.stats(Hook::ChooseEviction);
        assert_eq!(
            stats.failures.load(Ordering::Relaxed),
            i as u64 + 1,
            "{mode} counted"
        );
        // The same policy, on good input, still works: no poisoned instance is reused.
        let good = hooks.choose_eviction(&sample::eviction_request(8));
        assert!(
            matches!(good.by, DecidedBy::Policy(_)),
            "{mode}: next call {good:?}"
        );
    }
}

#[test]
fn evil_selection_and_compression_modes_are_contained() {
    let e = engine(EngineSettings {
        hook_deadline: Duration::from_millis(50),
        memory_cap: 32 << 20,
        quarantine_after: 1_000,
        ..EngineSettings::default()
    });
    let evil = evil(&e);
    let hooks = Hooks::new();
    hooks.set_all(&evil);
    let candidates = sample::loaded(4);
    let telemetry = sample::telemetry(1_000, 4 << 30, 0);
    for (mode, kind) in [
        ("loop", "deadline"),
        ("trap", "trap"),
        ("garbage", "invalid_decision"),
    ] {
        let req = select_request(mode);
        let decided = hooks.select_model(&req, &candidates, &telemetry);
        let DecidedBy::Fallback(Some(error)) = &decided.by else {
            panic!("select {mode}: {decided:?}");
        };
        assert_eq!(error.kind(), kind, "select {mode}");
        assert_eq!(
            decided.value,
            fallback::select_model(&req, &candidates),
            "select {mode}"
        );
    }
    for (mode, kind) in [
        ("oom", "out_of_memory"),
        ("bloat", "invalid_decision"),
        ("empty", "invalid_decision"),
        ("garbage", "invalid_decision"),
    ] {
        let req = compress_request(mode);
        let decided = hooks.compress_context(&req);
        let DecidedBy::Fallback(Some(error)) = &decided.by else {
            panic!("compress {mode}: {decided:?}");
        };
        assert_eq!(error.kind(), kind, "compress {mode}");
        assert_eq!(decided.value, fallback::compress_context(&req));
    }
    assert_eq!(
        evil.stats(Hook::SelectModel)
            .failures
            .load(Ordering::Relaxed),
        3
    );
    assert_eq!(
        evil.stats(Hook::CompressContext)
            .failures
            .load(Ordering::Relaxed),
        4
    );
}

#[test]
fn a_good_policy_keeps_working_beside_a_failing_one() {
    let e = engine(EngineSettings {
        hook_deadline: Duration::from_millis(50),
        ..relaxed()
    });
    let evil = evil(&e);
    let lru = builtin(&e, "lru");
    for mode in ["loop", "trap", "oom"] {
        assert!(
            evil.choose_eviction(&evict_request(mode), &no_catalogue())
                .is_err()
        );
        let decision = lru.choose_eviction(&sample::eviction_request(8), &sample::catalogue(8));
        assert!(
            matches!(decision, Ok(EvictionDecision::Evict(_))),
            "after {mode}: {decision:?}"
        );
    }
}

#[test]
fn repeated_failures_quarantine_until_replaced() {
    let settings = EngineSettings {
        quarantine_after: 3,
        ..relaxed()
    };
    let e = engine(settings);
    let first = evil(&e);
    for _ in 0..3 {
        assert!(
            first
                .choose_eviction(&evict_request("trap"), &no_catalogue())
                .is_err()
        );
    }
    assert!(first.is_quarantined());
    let good = first.choose_eviction(&sample::eviction_request(8), &no_catalogue());
    assert!(
        matches!(good, Err(PolicyError::Quarantined { .. })),
        "{good:?}"
    );
    let hooks = Hooks::new();
    hooks.set(Hook::ChooseEviction, Some(first));
    assert!(
        hooks
            .choose_eviction(&sample::eviction_request(8))
            .fell_back()
    );
    // Replacing the policy lifts it.
    let replacement = evil(&e);
    hooks.set(Hook::ChooseEviction, Some(replacement));
    assert!(
        !hooks
            .choose_eviction(&sample::eviction_request(8))
            .fell_back()
    );
}

#[test]
fn a_success_resets_the_failure_streak() {
    let e = engine(EngineSettings {
        quarantine_after: 3,
        ..relaxed()
    });
    let p: std::sync::Arc<Policy> = evil(&e);
    for _ in 0..5 {
        assert!(
            p.choose_eviction(&evict_request("trap"), &no_catalogue())
                .is_err()
        );
        assert!(
            p.choose_eviction(&evict_request("trap"), &no_catalogue())
                .is_err()
        );
        assert!(
            p.choose_eviction(&sample::eviction_request(8), &no_catalogue())
                .is_ok()
        );
    }
    assert!(!p.is_quarantined());
}

#[test]
fn no_policy_means_the_native_default_decides() {
    let hooks = Hooks::new();
    let req = sample::eviction_request(8);
    let decided = hooks.choose_eviction(&req);
    assert!(matches!(decided.by, DecidedBy::Fallback(None)));
    assert_eq!(decided.value, fallback::choose_eviction(&req));
}

fn with_inline_limit(limit: Duration) -> EngineSettings {
    EngineSettings {
        inline_limit: limit,
        ..relaxed()
    }
}

/// Asks `select-model` on `hooks` for a request carrying `mode`, or a plain one.
fn select(hooks: &Hooks, mode: Option<&str>) -> Decided<Selection> {
    let req = mode.map_or_else(sample::request, select_request);
    hooks.select_model(
        &req,
        &sample::loaded(4),
        &sample::telemetry(1_000, 4 << 30, 0),
    )
}

/// A policy whose calls have all been fast is asked on the request's own thread.
#[test]
fn inline_limit_obeyed() {
    // Generous, so that the test judges the rule, not this machine's speed.
    let e = engine(with_inline_limit(Duration::from_secs(1)));
    let hooks = Hooks::new();
    assert!(
        hooks.selects_inline(),
        "no policy: the native default answers"
    );
    hooks.set(Hook::SelectModel, Some(evil(&e)));
    assert!(!hooks.selects_inline(), "never asked: its speed is unknown");
    assert!(!select(&hooks, None).fell_back());
    assert!(hooks.selects_inline());
}

/// More than one call in a hundred over the limit, or a failed last call, sends the policy to
/// the blocking pool; enough fast calls since bring it back.
#[test]
fn inline_limit_violated() {
    // `work` spins 30 M iterations, then answers well: over 2 ms anywhere (`deadline_violated`).
    let e = engine(with_inline_limit(Duration::from_millis(1)));
    let hooks = Hooks::new();
    hooks.set(Hook::SelectModel, Some(evil(&e)));
    assert!(!select(&hooks, Some("work")).fell_back());
    assert!(!hooks.selects_inline(), "a slow call");
    assert!(!select(&hooks, None).fell_back());
    assert!(!hooks.selects_inline(), "one slow call in two");
    // A hundred fast calls for the slow one (a busy machine may stretch one more).
    let calls = (0..1_000)
        .take_while(|_| {
            assert!(!select(&hooks, None).fell_back());
            !hooks.selects_inline()
        })
        .count();
    assert!(
        (97..1_000).contains(&calls),
        "inline again after {calls} more calls"
    );

    let e = engine(with_inline_limit(Duration::from_secs(1)));
    hooks.set(Hook::SelectModel, Some(evil(&e)));
    assert!(!select(&hooks, None).fell_back());
    assert!(hooks.selects_inline());
    assert!(select(&hooks, Some("trap")).fell_back());
    assert!(!hooks.selects_inline(), "its last call failed");
    assert!(!select(&hooks, None).fell_back());
    assert!(hooks.selects_inline(), "a good answer since");
}
