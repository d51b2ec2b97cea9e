//! A 0.2 policy driving the scheduler (the stateful test guest, on the stand-in launcher): its
//! `wait(after)` sets when a waiting load asks again, a TTL eviction tells it `idle-ttl`, and
//! it is told what happened, in order.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::sleep;

use super::events::EVENT_FLUSH;
use super::tests::{NO_DEMAND, scheduler_with};
use super::*;
use crate::engine::types::{Request, Selection};
use crate::engine::{EngineSettings, Policy, PolicyEngine, PolicySource, sample};

fn stateful() -> Arc<Policy> {
    let engine = PolicyEngine::new(EngineSettings {
        hook_deadline: Duration::from_secs(2),
        ..EngineSettings::default()
    })
    .expect("engine");
    let path = std::path::PathBuf::from(env!("MODELYARD_GUEST_DIR"))
        .join("modelyard_policy_stateful.wasm");
    let bytes = std::fs::read(&path).expect("the stateful guest is built with the host");
    Arc::new(
        engine
            .load("stateful", PolicySource::File(path), &bytes)
            .expect("loads"),
    )
}

/// Tells the guest `command` through `select-model` (an `auto` request's text); returns its
/// state line.
fn tell(hooks: &Hooks, command: &str) -> String {
    let req = Request {
        last_user_message: command.into(),
        ..sample::request()
    };
    let decided = hooks.select_model(&req, &[], &sample::telemetry(0, 0, 0));
    match decided.value {
        Selection::Reject(line) => line,
        other => panic!("{other:?} from {:?}", decided.by),
    }
}

fn decisions(s: &Scheduler) -> u64 {
    s.status().eviction.decisions
}

/// a is busy; b waits for room, asked again as the policy says; after 950 ms (before the
/// host's drain time, 1 s), how many times was the policy asked?
async fn asks_in_950_ms(command: &str) -> u64 {
    let policy = stateful();
    let (s, _) = scheduler_with("", |hooks| {
        hooks.set_all(&policy);
    });
    tell(s.hooks(), command);
    let s = Arc::new(s);
    let a = s.acquire("a", &NO_DEMAND).await.expect("a");
    let b = {
        let s = s.clone();
        tokio::spawn(async move { s.acquire("b", &NO_DEMAND).await.map(drop) })
    };
    sleep(Duration::from_millis(950)).await;
    let asked = decisions(&s);
    drop(a);
    b.await.expect("joins").expect("b loads once a is idle");
    asked
}

#[tokio::test(start_paused = true)]
async fn wait_after_obeyed_the_load_asks_again_when_the_policy_said() {
    // Asked at 0, 300, 600 and 900 ms.
    assert_eq!(asks_in_950_ms("stateful:wait 300").await, 4);
}

#[tokio::test(start_paused = true)]
async fn wait_after_violated_a_wait_without_a_time_is_not_asked_again_on_time() {
    // Nothing changes before the drain time: asked once.
    assert_eq!(asks_in_950_ms("stateful:wait never").await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_ttl_eviction_tells_a_0_2_policy_its_reason() {
    let policy = stateful();
    let (s, _) = scheduler_with("ttl = \"1s\"\n", |hooks| {
        hooks.set_all(&policy);
    });
    drop(s.acquire("b", &NO_DEMAND).await.expect("b"));
    sleep(Duration::from_secs(5)).await;
    let b = s
        .status()
        .models
        .into_iter()
        .find(|m| m.id == "b")
        .expect("b");
    assert_eq!(b.state, "unloaded", "b outlived its ttl");
    let line = tell(s.hooks(), "hello");
    assert!(line.contains("reason=idle-ttl"), "{line}");
}

#[tokio::test(start_paused = true)]
async fn a_0_2_policy_is_told_what_happened_in_order() {
    let policy = stateful();
    let (s, _) = scheduler_with("", |hooks| {
        hooks.set_all(&policy);
    });
    drop(s.acquire("a", &NO_DEMAND).await.expect("a"));
    sleep(EVENT_FLUSH * 4).await;
    // a arrived, began loading, loaded, finished.
    let line = tell(s.hooks(), "hello");
    assert!(
        line.contains("events=4 disorder=0 last-event=finished:0:true"),
        "{line}"
    );
    // b's load evicts a: b arrived, began loading, a evicted, b loaded, b finished.
    drop(s.acquire("b", &NO_DEMAND).await.expect("b"));
    sleep(EVENT_FLUSH * 4).await;
    let line = tell(s.hooks(), "hello");
    assert!(
        line.contains("events=9 disorder=0 last-event=finished:1:true"),
        "{line}"
    );
    let counts = policy.event_counts();
    assert_eq!((counts.delivered, counts.dropped), (9, 0));
}
