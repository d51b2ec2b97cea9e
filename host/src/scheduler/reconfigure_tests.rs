//! A reload's rules on the stand-in launcher: what changes at once, what waits for a request
//! in flight, what a removed model does. Real servers: `tests/reload.rs`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::tests::{NO_DEMAND, scheduler};
use super::*;

/// Settings as [`scheduler`] makes them, with `models` instead of its a and b.
fn reloaded(models: &str) -> Settings {
    let text = format!(
        "[scheduler]\nmax_queue = 3\nqueue_timeout = 5\n[memory.cpu]\nbudget = \"1GiB\"\nreserve = 0\n{models}"
    );
    Settings::from_toml(&text, std::path::Path::new("."), "t").expect("valid")
}

fn ids(s: &Scheduler) -> Vec<String> {
    s.status().models.into_iter().map(|m| m.id).collect()
}

async fn until(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn a_reload_adds_retunes_and_removes_leaving_the_rest_running() {
    let (s, fake) = scheduler("");
    drop(s.acquire("a", &NO_DEMAND).await.expect("a loads"));
    let change = s.reconfigure(reloaded(
        "[models.a]\ncmd = \"x ${PORT}\"\nsize = \"600MiB\"\npriority = 3\naliases = [\"alpha\"]\n\
         [models.c]\ncmd = \"x ${PORT}\"\nsize = \"100MiB\"\n",
    ));
    assert_eq!(change.added, ["c"]);
    assert_eq!(change.removed, ["b"]);
    assert_eq!(change.retuned, ["a"]);
    assert!(change.restarting.is_empty());
    assert_eq!(ids(&s), ["a", "c"]);
    let lease = s.acquire("alpha", &NO_DEMAND).await.expect("the new alias");
    assert_eq!(lease.model(), "a");
    assert_eq!(
        fake.starts.load(Ordering::SeqCst),
        1,
        "a re-tune restarts nothing"
    );
    assert_eq!(s.named_view("a").map(|m| m.priority), Some(3));
    assert!(matches!(
        s.acquire("b", &NO_DEMAND).await,
        Err(SchedError::UnknownModel(_))
    ));
    drop(s.acquire("c", &NO_DEMAND).await.expect("c loads"));
    assert_eq!(fake.starts.load(Ordering::SeqCst), 2);
    drop(lease);

    // The same text again changes nothing; b back in the config is b again.
    let same = "[models.a]\ncmd = \"x ${PORT}\"\nsize = \"600MiB\"\npriority = 3\naliases = [\"alpha\"]\n\
                [models.c]\ncmd = \"x ${PORT}\"\nsize = \"100MiB\"\n";
    assert!(s.reconfigure(reloaded(same)).is_empty());
    let back = s.reconfigure(reloaded(&format!(
        "{same}[models.b]\ncmd = \"x ${{PORT}}\"\nsize = \"100MiB\"\n"
    )));
    assert_eq!(back.added, ["b"]);
    assert_eq!(ids(&s), ["a", "b", "c"]);
    drop(s.acquire("b", &NO_DEMAND).await.expect("b is served again"));
}

#[tokio::test]
async fn a_changed_command_waits_for_the_request_in_flight_then_restarts() {
    let (s, fake) = scheduler("");
    let lease = s.acquire("a", &NO_DEMAND).await.expect("a loads");
    let change = s.reconfigure(reloaded(
        "[models.a]\ncmd = \"y ${PORT}\"\nsize = \"600MiB\"\n[models.b]\ncmd = \"x ${PORT}\"\nsize = \"600MiB\"\n",
    ));
    assert_eq!(change.restarting, ["a"]);
    assert_eq!(s.status().models[0].state, "ready", "never mid-request");
    // A request that comes now queues for the restart instead of starting on the old server.
    let next = s.acquire("a", &NO_DEMAND);
    tokio::pin!(next);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut next)
            .await
            .is_err(),
        "it waits for the restart"
    );
    assert_eq!(fake.starts.load(Ordering::SeqCst), 1);
    drop(lease);
    let after = next.await.expect("served after the restart");
    assert_eq!(fake.starts.load(Ordering::SeqCst), 2, "restarted once");
    let st = s.status();
    assert!(
        st.events
            .iter()
            .any(|e| e.kind == "evicted" && e.detail.contains("the config")),
        "{:?}",
        st.events
    );
    let crate::config::BackendSettings::Command(c) = &after.model.backend else {
        panic!("a command model")
    };
    assert_eq!(c.argv[0], "y", "it runs the new command");
}

#[tokio::test]
async fn a_removed_model_serves_its_request_in_flight_then_stops() {
    let (s, fake) = scheduler("");
    let lease = s.acquire("a", &NO_DEMAND).await.expect("a loads");
    let change = s.reconfigure(reloaded("[models.b]\ncmd = \"x ${PORT}\"\n"));
    assert_eq!(change.removed, ["a"]);
    assert!(matches!(
        s.acquire("a", &NO_DEMAND).await,
        Err(SchedError::UnknownModel(_))
    ));
    assert_eq!(lease.model(), "a");
    let held = |s: &Scheduler| s.inner.lock().slots[0].holds_memory();
    assert!(held(&s), "it still serves the request in flight");
    drop(lease);
    assert!(until(|| !held(&s)).await, "a stopped once idle");
    assert_eq!(fake.starts.load(Ordering::SeqCst), 1);
    assert_eq!(ids(&s), ["b"]);
}

#[tokio::test]
async fn an_unloaded_model_takes_a_new_command_at_once_and_a_failed_one_retries_at_once() {
    let (s, fake) = scheduler("");
    fake.fail.store(true, Ordering::SeqCst);
    assert!(s.acquire("a", &NO_DEMAND).await.is_err());
    assert!(s.acquire("a", &NO_DEMAND).await.is_err());
    assert!(
        matches!(
            s.acquire("a", &NO_DEMAND).await,
            Err(SchedError::BackingOff { .. })
        ),
        "a second failure backs off"
    );
    fake.fail.store(false, Ordering::SeqCst);
    let change = s.reconfigure(reloaded(
        "[models.a]\ncmd = \"fixed ${PORT}\"\nsize = \"600MiB\"\n",
    ));
    assert!(change.restarting.is_empty() && change.retuned == ["a"]);
    drop(
        s.acquire("a", &NO_DEMAND)
            .await
            .expect("the fixed command loads at once"),
    );
}

#[tokio::test]
async fn a_command_changed_during_its_load_serves_its_queue_on_the_new_one() {
    let (s, fake) = scheduler("");
    let first = tokio::spawn({
        let s = s.clone();
        async move { s.acquire("a", &NO_DEMAND).await }
    });
    assert!(until(|| s.status().models[0].state == "loading").await);
    let change = s.reconfigure(reloaded(
        "[models.a]\ncmd = \"y ${PORT}\"\nsize = \"600MiB\"\n[models.b]\ncmd = \"x ${PORT}\"\nsize = \"600MiB\"\n",
    ));
    assert_eq!(change.restarting, ["a"]);
    let lease = first
        .await
        .expect("joined")
        .expect("served after the restart");
    let crate::config::BackendSettings::Command(c) = &lease.model.backend else {
        panic!("a command model")
    };
    assert_eq!(
        c.argv[0], "y",
        "the request waiting for the load runs on the new command"
    );
    assert_eq!(fake.starts.load(Ordering::SeqCst), 2);
}
