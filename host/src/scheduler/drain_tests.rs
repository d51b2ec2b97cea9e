//! Draining, on the stand-in launcher: a load kept out by busy models drains them after its
//! drain time (not before), a drain the load no longer needs ends, pinned models are never
//! drained, and the drained model gets its turn back.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep, timeout};

use super::room::DRAIN_RULE;
use super::tests::{NO_DEMAND, scheduler};
use super::*;

fn events(s: &Scheduler, kind: &str) -> Vec<String> {
    s.status()
        .events
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.model.clone())
        .collect()
}

/// A request for `model` in a task of its own, which gives its lease back at once.
fn spawn_request(
    s: &Arc<Scheduler>,
    model: &'static str,
) -> tokio::task::JoinHandle<Result<(), SchedError>> {
    let s = s.clone();
    tokio::spawn(async move { s.acquire(model, &NO_DEMAND).await.map(drop) })
}

/// Whether a request for `model` gets a lease within 50 ms (and gives it back).
async fn served_at_once(s: &Scheduler, model: &str) -> bool {
    timeout(Duration::from_millis(50), s.acquire(model, &NO_DEMAND))
        .await
        .is_ok_and(|r| r.is_ok())
}

// a and b (600 MiB each) in 1 GiB: one at a time. b's load has never run, so it drains after
// the shortest drain time, a second.

#[tokio::test(start_paused = true)]
async fn drain_wait_obeyed_a_busy_model_serves_on_before_the_drain_time() {
    let (s, _) = scheduler("");
    let s = Arc::new(s);
    let a = s.acquire("a", &NO_DEMAND).await.expect("a");
    let b = spawn_request(&s, "b");
    sleep(Duration::from_millis(900)).await;
    assert!(events(&s, "draining").is_empty());
    assert!(served_at_once(&s, "a").await, "a still takes requests");
    drop(a);
    b.await.expect("joins").expect("b loads once a is idle");
    assert_eq!(
        s.status().eviction.by.get(DRAIN_RULE),
        None,
        "the policy evicted a"
    );
}

#[tokio::test(start_paused = true)]
async fn drain_wait_violated_a_busy_model_is_drained_then_evicted_and_gets_its_turn_back() {
    let (s, _) = scheduler("");
    let s = Arc::new(s);
    let a = s.acquire("a", &NO_DEMAND).await.expect("a");
    let began = Instant::now();
    let b = {
        let s = s.clone();
        tokio::spawn(async move {
            let lease = s.acquire("b", &NO_DEMAND).await.expect("b");
            let at = Instant::now();
            sleep(Duration::from_millis(500)).await;
            drop(lease);
            at
        })
    };
    sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        events(&s, "draining"),
        ["a"],
        "drained after b's drain time"
    );
    // A request for the draining model queues while its request in flight finishes...
    let again = {
        let s = s.clone();
        tokio::spawn(async move {
            let lease = s.acquire("a", &NO_DEMAND).await.expect("a again");
            (Instant::now(), lease.ready_on_arrival)
        })
    };
    sleep(Duration::from_millis(100)).await;
    assert!(
        !again.is_finished(),
        "a takes no new request while it drains"
    );
    // ...then it goes, b loads, and a is drained back in b's place.
    drop(a);
    let b_served = b.await.expect("joins");
    let (a_served, hit) = again.await.expect("joins");
    assert!(!hit);
    assert!(b_served < a_served, "b went first");
    assert_eq!(events(&s, "evicted"), ["a", "b"]);
    assert_eq!(
        s.status().eviction.by.get(DRAIN_RULE),
        Some(&1),
        "a, by the host"
    );
    // b's load waited for its drain time and a's request in flight; a's request waited for
    // b's turn: b's drain time from its load, its requests in flight, and a's load.
    assert!(
        b_served - began < Duration::from_millis(1500),
        "{:?}",
        b_served - began
    );
    assert!(
        a_served - b_served < Duration::from_millis(1800),
        "{:?}",
        a_served - b_served
    );
}

#[tokio::test(start_paused = true)]
async fn a_drain_the_load_no_longer_needs_ends_and_the_model_serves_its_queue() {
    let (s, _) = scheduler("");
    let s = Arc::new(s);
    let a = s.acquire("a", &NO_DEMAND).await.expect("a");
    let b = spawn_request(&s, "b");
    sleep(Duration::from_millis(1100)).await;
    assert_eq!(events(&s, "draining"), ["a"]);
    let again = spawn_request(&s, "a");
    // b's request gives up at the queue timeout (5 s) while a's request in flight runs on.
    assert!(matches!(
        b.await.expect("joins"),
        Err(SchedError::Timeout { .. })
    ));
    timeout(Duration::from_millis(100), again)
        .await
        .expect("a serves its queue as soon as the drain ends")
        .expect("joins")
        .expect("served");
    assert!(served_at_once(&s, "a").await);
    drop(a);
    assert!(events(&s, "evicted").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_pinned_model_is_never_drained() {
    let (s, _) = scheduler(
        "[models.p]\ncmd = \"x ${PORT}\"\nsize = \"400MiB\"\npinned = true\n\
         [models.q]\ncmd = \"x ${PORT}\"\nsize = \"400MiB\"\n",
    );
    let s = Arc::new(s);
    // Both busy; b (600 MiB) needs 376 MiB freed, which either would give.
    let _p = s.acquire("p", &NO_DEMAND).await.expect("p");
    let q = s.acquire("q", &NO_DEMAND).await.expect("q");
    let b = spawn_request(&s, "b");
    sleep(Duration::from_secs(2)).await;
    assert_eq!(events(&s, "draining"), ["q"], "q, never the pinned p");
    assert!(served_at_once(&s, "p").await, "p serves on");
    drop(q);
    b.await.expect("joins").expect("b loads in q's place");
    assert_eq!(events(&s, "evicted"), ["q"]);
}
