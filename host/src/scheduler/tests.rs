//! The scheduler's rules on a stand-in launcher (no processes): single flight, the queue
//! bound, failures and backoff, rejections. The real servers are exercised in `tests/serving.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::watch;

use super::*;
use crate::backend::{BackendError, Endpoint, Instance, Launcher};
use crate::config::{ModelSettings, Settings};

#[derive(Debug, Default)]
pub(super) struct Fake {
    pub(super) starts: AtomicU32,
    pub(super) fail: AtomicBool,
    /// Its instances run on a server the host does not own: they cannot exit on their own.
    pub(super) unowned: AtomicBool,
}

#[derive(Debug)]
struct FakeInstance {
    endpoint: Endpoint,
    /// `None` for an instance on a server the host does not own.
    exit: Option<watch::Sender<bool>>,
}

impl Instance for FakeInstance {
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
    fn pid(&self) -> Option<u32> {
        None
    }
    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn exited(&self) -> Option<BoxFuture<'static, String>> {
        let mut rx = self.exit.as_ref()?.subscribe();
        Some(Box::pin(async move {
            let _ = rx.wait_for(|dead| *dead).await;
            "killed".to_string()
        }))
    }
}

impl Launcher for Arc<Fake> {
    fn start(
        &self,
        model: &ModelSettings,
    ) -> BoxFuture<'static, Result<Arc<dyn Instance>, BackendError>> {
        let me = self.clone();
        let id = model.id.clone();
        Box::pin(async move {
            me.starts.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            if me.fail.load(Ordering::SeqCst) {
                return Err(BackendError::Spawn {
                    program: "fake".into(),
                    reason: "told to fail".into(),
                });
            }
            Ok(Arc::new(FakeInstance {
                endpoint: Endpoint {
                    api_base: "http://fake/v1".into(),
                    api_key: None,
                    model_name: id,
                },
                exit: (!me.unowned.load(Ordering::SeqCst)).then(|| watch::channel(false).0),
            }) as Arc<dyn Instance>)
        })
    }
}

pub(super) static NO_DEMAND: Demand = Demand {
    priority: 0,
    task: None,
    key: String::new(),
    prompt_tokens: 0,
};

pub(super) fn scheduler(toml: &str) -> (Scheduler, Arc<Fake>) {
    scheduler_with(toml, |_| {})
}

/// [`scheduler`], with `setup` choosing the policies first.
pub(super) fn scheduler_with(toml: &str, setup: impl FnOnce(&Hooks)) -> (Scheduler, Arc<Fake>) {
    let text = format!(
        "[scheduler]\nmax_queue = 3\nqueue_timeout = 5\n[memory.cpu]\nbudget = \"1GiB\"\nreserve = 0\n\
         [models.a]\ncmd = \"x ${{PORT}}\"\nsize = \"600MiB\"\n\
         [models.b]\ncmd = \"x ${{PORT}}\"\nsize = \"600MiB\"\n{toml}"
    );
    let settings = Settings::from_toml(&text, std::path::Path::new("."), "t").expect("valid");
    let fake = Arc::new(Fake::default());
    let hooks = Arc::new(Hooks::new());
    setup(&hooks);
    let s = Scheduler::new(Arc::new(settings), hooks, Arc::new(fake.clone())).expect("scheduler");
    (s, fake)
}

#[tokio::test]
async fn concurrent_cold_requests_share_one_load() {
    let (s, fake) = scheduler("");
    let all = futures_util::future::join_all((0..3).map(|_| s.acquire("a", &NO_DEMAND))).await;
    assert!(all.iter().all(Result::is_ok));
    assert_eq!(fake.starts.load(Ordering::SeqCst), 1);
    assert_eq!(s.status().models[0].in_flight, 3);
    drop(all);
    assert_eq!(s.status().models[0].in_flight, 0);
}

#[tokio::test]
async fn an_instance_that_cannot_exit_on_its_own_leaves_no_watcher_behind() {
    let (s, fake) = scheduler("");
    fake.unowned.store(true, Ordering::SeqCst);
    let alive = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    drop(s.acquire("a", &NO_DEMAND).await.expect("a loads"));
    let before = alive();
    // a and b do not fit together: each load evicts the other.
    for model in ["b", "a", "b", "a"] {
        drop(s.acquire(model, &NO_DEMAND).await.expect("loads"));
    }
    assert_eq!(s.status().eviction.evictions, 4);
    assert_eq!(
        alive(),
        before,
        "a task was left watching an evicted instance"
    );
}

#[tokio::test]
async fn past_the_queue_bound_requests_are_turned_away_with_a_retry_time() {
    let (s, _) = scheduler("");
    let all = futures_util::future::join_all((0..5).map(|_| s.acquire("a", &NO_DEMAND))).await;
    let full: Vec<_> = all.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(full.len(), 2, "{all:?}");
    assert!(matches!(full[0], SchedError::QueueFull { queued: 3, .. }));
    assert!(full[0].retry_after().is_some());
}

#[tokio::test]
async fn a_failed_start_fails_its_waiters_then_retries_with_backoff() {
    let (s, fake) = scheduler("");
    fake.fail.store(true, Ordering::SeqCst);
    let e = s.acquire("a", &Demand::default()).await.expect_err("fails");
    assert!(matches!(e, SchedError::LoadFailed { .. }), "{e}");
    assert_eq!(s.status().models[0].state, "failed");
    // The first retry is immediate...
    let e = s
        .acquire("a", &Demand::default())
        .await
        .expect_err("fails again");
    assert!(matches!(e, SchedError::LoadFailed { .. }), "{e}");
    // ...the next one waits out a backoff.
    let e = s
        .acquire("a", &Demand::default())
        .await
        .expect_err("backing off");
    assert!(matches!(e, SchedError::BackingOff { .. }), "{e}");
    assert_eq!(fake.starts.load(Ordering::SeqCst), 2);
    fake.fail.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(s.acquire("a", &Demand::default()).await.is_ok());
}

#[tokio::test]
async fn a_model_too_big_for_its_device_is_rejected_without_asking() {
    let (s, fake) = scheduler("[models.huge]\ncmd = \"x ${PORT}\"\nsize = \"2GiB\"\n");
    let e = s
        .acquire("huge", &Demand::default())
        .await
        .expect_err("too big");
    assert!(matches!(e, SchedError::Rejected { .. }), "{e}");
    assert_eq!(fake.starts.load(Ordering::SeqCst), 0);
    assert_eq!(s.status().eviction.decisions, 0);
}

#[tokio::test]
async fn a_pinned_model_is_kept_and_the_load_is_rejected() {
    let (s, _) = scheduler("[models.p]\ncmd = \"x ${PORT}\"\nsize = \"600MiB\"\npinned = true\n");
    drop(s.acquire("p", &Demand::default()).await.expect("p loads"));
    let e = s
        .acquire("a", &Demand::default())
        .await
        .expect_err("no room");
    assert!(matches!(e, SchedError::Rejected { .. }), "{e}");
    assert_eq!(
        s.status()
            .models
            .iter()
            .find(|m| m.id == "p")
            .map(|m| m.state.clone())
            .as_deref(),
        Some("ready")
    );
}

#[tokio::test]
async fn a_busy_model_makes_the_load_wait_until_it_is_idle() {
    let (s, _) = scheduler("");
    let lease = s.acquire("a", &Demand::default()).await.expect("a");
    let s2 = s.clone();
    let b = tokio::spawn(async move {
        s2.acquire("b", &Demand::default())
            .await
            .map(|l| l.model().to_string())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        s.status().models[0].state,
        "ready",
        "a is not evicted under its request"
    );
    assert!(!b.is_finished());
    drop(lease);
    assert_eq!(b.await.expect("join").as_deref(), Ok("b"));
    let st = s.status();
    assert_eq!(st.models[0].state, "unloaded");
    assert_eq!(st.eviction.evictions, 1);
}

#[tokio::test]
async fn a_shadow_candidate_is_compared_but_never_acted_on() {
    use crate::engine::experiment::{Experiment, Mode, Sticky};
    use crate::engine::{EngineSettings, Hook, PolicyEngine};
    let engine = PolicyEngine::new(EngineSettings {
        hook_deadline: Duration::from_secs(2),
        ..EngineSettings::default()
    })
    .expect("engine");
    let load = |name: &str| Arc::new(engine.builtin(name).expect("built-in").expect("loads"));
    let hooks = Arc::new(Hooks::new());
    hooks.set(Hook::ChooseEviction, Some(load("lru")));
    let shadow = Arc::new(Experiment::new(
        Hook::ChooseEviction,
        load("lfu"),
        1.0,
        Mode::Shadow,
        Sticky::Request,
    ));
    hooks.set_experiment(Hook::ChooseEviction, Some(shadow.clone()));
    let text = "[memory.cpu]\nbudget = \"1GiB\"\nreserve = 0\n\
                [models.a]\ncmd = \"x ${PORT}\"\nsize = \"400MiB\"\n\
                [models.b]\ncmd = \"x ${PORT}\"\nsize = \"400MiB\"\n\
                [models.c]\ncmd = \"x ${PORT}\"\nsize = \"400MiB\"\n";
    let settings = Settings::from_toml(text, std::path::Path::new("."), "t").expect("valid");
    let fake = Arc::new(Fake::default());
    let s = Scheduler::new(Arc::new(settings), hooks, Arc::new(fake)).expect("scheduler");
    // `a`: used often, long ago; `b`: used once, just now. LRU evicts `a`, LFU would evict `b`.
    for _ in 0..5 {
        drop(s.acquire("a", &NO_DEMAND).await.expect("a"));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(s.acquire("b", &NO_DEMAND).await.expect("b"));
    drop(s.acquire("c", &NO_DEMAND).await.expect("c"));
    let st = s.status();
    let state = |id: &str| {
        st.models
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.state.clone())
    };
    assert_eq!(
        state("a").as_deref(),
        Some("unloaded"),
        "the incumbent (LRU) acted"
    );
    assert_eq!(
        state("b").as_deref(),
        Some("ready"),
        "the candidate's choice was not acted on"
    );
    let report = shadow.report().shadow.expect("shadow");
    assert_eq!((report.compared, report.agreed), (1, 0));
    assert!(
        report.differed[0].candidate.contains("\"b\""),
        "{:?}",
        report.differed
    );
}

#[tokio::test(start_paused = true)]
async fn a_load_waiting_for_room_keeps_its_turn_over_later_loads_that_fit() {
    let (s, _) = scheduler(
        "[models.c]\ncmd = \"x ${PORT}\"\nsize = \"300MiB\"\n[models.d]\ncmd = \"x ${PORT}\"\nsize = \"300MiB\"\n",
    );
    let s = Arc::new(s);
    // a is loaded and busy: b (600 MiB) must wait for it to finish.
    let a = s.acquire("a", &NO_DEMAND).await.expect("a");
    let (tx, mut order) = tokio::sync::mpsc::unbounded_channel();
    let spawn = |model: &'static str| {
        let (s, tx) = (s.clone(), tx.clone());
        tokio::spawn(async move {
            let lease = s.acquire(model, &NO_DEMAND).await.expect(model);
            tx.send(model).expect("the test listens");
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(lease);
        })
    };
    let b = spawn("b");
    tokio::time::sleep(Duration::from_millis(10)).await;
    // c (300 MiB) fits beside a right now, but taking that room would leave b nothing.
    let c = spawn("c");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        order.try_recv().is_err(),
        "c went ahead of b, which waits for room"
    );
    drop(a);
    let _ = tokio::join!(b, c);
    assert_eq!(order.recv().await, Some("b"));
    assert_eq!(order.recv().await, Some("c"));
}

#[tokio::test(start_paused = true)]
async fn with_no_load_waiting_for_room_a_load_that_fits_starts_at_once() {
    let (s, fake) = scheduler("[models.c]\ncmd = \"x ${PORT}\"\nsize = \"300MiB\"\n");
    let _a = s.acquire("a", &NO_DEMAND).await.expect("a");
    let began = tokio::time::Instant::now();
    let _c = s.acquire("c", &NO_DEMAND).await.expect("c fits beside a");
    assert!(
        began.elapsed() < Duration::from_millis(300),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(fake.starts.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_parked_load_is_asked_again_when_idle_models_could_make_room_or_after_a_second() {
    let (s, _) = scheduler("[models.c]\ncmd = \"x ${PORT}\"\nsize = \"300MiB\"\n");
    let s = Arc::new(s);
    let a = s.acquire("a", &NO_DEMAND).await.expect("a");
    let c = s.acquire("c", &NO_DEMAND).await.expect("c");
    let decisions = || s.status().eviction.decisions;
    // b (600 MiB) needs 476 MiB of the 900 that a and c hold, and both are busy.
    let b = {
        let s = s.clone();
        tokio::spawn(async move { s.acquire("b", &NO_DEMAND).await.map(drop) })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(decisions(), 1, "b was told to wait");
    // c going idle gives back 300 MiB: not enough, so the policy is not asked again...
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        decisions(),
        1,
        "asked again on a change that could not make room"
    );
    // ...until a second has passed with nothing better; b has now waited its drain time, so
    // the host drains a, the busy model that makes room with c.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(decisions(), 2, "not asked again after a second");
    // a going idle makes room: b loads at once, not at the next second, and the host evicts
    // the model it drained without asking the policy again.
    let idle = tokio::time::Instant::now();
    drop(a);
    b.await.expect("joins").expect("b loads");
    assert_eq!(decisions(), 2);
    assert_eq!(s.status().eviction.by.get(room::DRAIN_RULE), Some(&1));
    assert!(
        idle.elapsed() < Duration::from_millis(500),
        "b loaded {:?} after a went idle",
        idle.elapsed()
    );
}

#[tokio::test]
async fn eviction_priority_is_the_waiting_requests_not_the_incoming_models() {
    use crate::engine::{EngineSettings, Hook, PolicyEngine};
    let engine = PolicyEngine::new(EngineSettings {
        hook_deadline: Duration::from_secs(2),
        ..EngineSettings::default()
    })
    .expect("engine");
    let priority = engine
        .builtin("priority")
        .expect("built-in")
        .expect("loads");
    let hooks = Arc::new(Hooks::new());
    hooks.set(Hook::ChooseEviction, Some(Arc::new(priority)));
    // `a` serves priority-9 work; `b`, configured at 0, can only fit in its place.
    let text = "[memory.cpu]\nbudget = \"1GiB\"\nreserve = 0\n\
                [models.a]\ncmd = \"x ${PORT}\"\nsize = \"600MiB\"\npriority = 9\n\
                [models.b]\ncmd = \"x ${PORT}\"\nsize = \"600MiB\"\n";
    let settings = Settings::from_toml(text, std::path::Path::new("."), "t").expect("valid");
    let s = Scheduler::new(
        Arc::new(settings),
        hooks,
        Arc::new(Arc::new(Fake::default())),
    )
    .expect("scheduler");
    let at = |priority| Demand {
        priority,
        ..Demand::default()
    };
    drop(s.acquire("a", &at(9)).await.expect("a loads"));
    // A priority-0 request's load may not push out a model above its priority...
    let e = s.acquire("b", &at(0)).await.expect_err("a is kept");
    assert!(matches!(e, SchedError::Rejected { .. }), "{e}");
    assert_eq!(s.status().models[0].state, "ready");
    // ...a priority-9 request's load may.
    drop(s.acquire("b", &at(9)).await.expect("b replaces a"));
    assert_eq!(s.status().models[0].state, "unloaded");
}

/// Model `c` with `parallel` places (a and b as in [`scheduler`]).
fn with_places(parallel: u32) -> Scheduler {
    scheduler(&format!(
        "[models.c]\ncmd = \"x ${{PORT}}\"\nsize = \"100MiB\"\nparallel = {parallel}\n"
    ))
    .0
}

/// Polls `fut` once: `Some` if it finished at once.
fn now_or_never<F: std::future::Future>(fut: std::pin::Pin<&mut F>) -> Option<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

#[tokio::test(start_paused = true)]
async fn requests_within_a_models_places_start_at_once() {
    let s = with_places(3);
    s.load("c").await.expect("loads");
    let leases: Vec<Lease> =
        futures_util::future::join_all((0..3).map(|_| s.acquire("c", &NO_DEMAND)))
            .await
            .into_iter()
            .map(|l| l.expect("a place"))
            .collect();
    let m = &s.status().models[2];
    assert_eq!((m.in_flight, m.queued), (3, 0));
    drop(leases);
}

#[tokio::test(start_paused = true)]
async fn a_request_past_a_models_places_queues_until_one_frees() {
    let s = with_places(2);
    s.load("c").await.expect("loads");
    let first = s.acquire("c", &NO_DEMAND).await.expect("a place");
    let _second = s.acquire("c", &NO_DEMAND).await.expect("a place");
    let third = s.acquire("c", &NO_DEMAND);
    tokio::pin!(third);
    assert!(
        now_or_never(third.as_mut()).is_none(),
        "the third must wait"
    );
    let m = &s.status().models[2];
    assert_eq!((m.in_flight, m.queued), (2, 1));
    drop(first);
    let third = tokio::time::timeout(Duration::from_secs(1), third)
        .await
        .expect("a freed place is taken")
        .expect("a lease");
    let m = &s.status().models[2];
    assert_eq!((m.in_flight, m.queued), (2, 0));
    drop(third);
}

#[tokio::test(start_paused = true)]
async fn a_freed_place_goes_to_the_highest_priority_waiter() {
    let s = with_places(1);
    s.load("c").await.expect("loads");
    let held = s.acquire("c", &NO_DEMAND).await.expect("a place");
    let low = Demand::default();
    let high = Demand {
        priority: 5,
        ..Demand::default()
    };
    let low = s.acquire("c", &low);
    let high = s.acquire("c", &high);
    tokio::pin!(low, high);
    assert!(now_or_never(low.as_mut()).is_none());
    assert!(now_or_never(high.as_mut()).is_none());
    drop(held);
    // Both wake; only the high-priority request may take the place.
    let lease = tokio::select! {
        biased;
        l = low.as_mut() => panic!("the low-priority request went first: {l:?}"),
        l = high.as_mut() => l.expect("a lease"),
    };
    let m = &s.status().models[2];
    assert_eq!((m.in_flight, m.queued), (1, 1));
    drop(lease);
    tokio::time::timeout(Duration::from_secs(1), low)
        .await
        .expect("then the low one")
        .expect("a lease");
}

/// Serves `n` requests on `model` that each take `took`, one after another.
async fn serve_for(s: &Scheduler, model: &str, n: u64, took: Duration) {
    for _ in 0..n {
        let lease = s.acquire(model, &NO_DEMAND).await.expect("a place");
        tokio::time::sleep(took).await;
        drop(lease);
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_whose_expected_wait_fits_the_timeout_queues_and_one_past_it_is_refused_at_once()
{
    // One place, 2 s a request, a 5 s queue timeout.
    let s = with_places(1);
    serve_for(&s, "c", ESTIMATE_AFTER, Duration::from_secs(2)).await;
    let _held = s.acquire("c", &NO_DEMAND).await.expect("a place");
    // About 2 s, then 4 s ahead: both within the timeout, so both wait.
    let first = s.acquire("c", &NO_DEMAND);
    let second = s.acquire("c", &NO_DEMAND);
    tokio::pin!(first, second);
    assert!(now_or_never(first.as_mut()).is_none());
    assert!(now_or_never(second.as_mut()).is_none());
    // About 6 s: refused at once, with that as the time to come back.
    let began = tokio::time::Instant::now();
    let e = s.acquire("c", &NO_DEMAND).await.expect_err("overloaded");
    assert_eq!(began.elapsed(), Duration::ZERO);
    assert!(
        matches!(e, SchedError::Overloaded { expected, .. } if expected == Duration::from_secs(6)),
        "{e}"
    );
    assert_eq!(e.retry_after(), Some(Duration::from_secs(6)));
    // A request above the waiting ones' priority has only the one in flight ahead of it.
    let urgent = Demand {
        priority: 5,
        ..Demand::default()
    };
    let urgent = s.acquire("c", &urgent);
    tokio::pin!(urgent);
    assert!(
        now_or_never(urgent.as_mut()).is_none(),
        "it waits, first in line"
    );
    assert_eq!(s.status().models[2].queued, 3);
}

#[tokio::test(start_paused = true)]
async fn before_a_model_has_served_enough_requests_no_request_is_refused_on_a_guess() {
    let s = with_places(1);
    serve_for(&s, "c", ESTIMATE_AFTER - 1, Duration::from_secs(10)).await;
    let _held = s.acquire("c", &NO_DEMAND).await.expect("a place");
    let waiting = s.acquire("c", &NO_DEMAND);
    tokio::pin!(waiting);
    assert!(now_or_never(waiting.as_mut()).is_none(), "it waits");
}

#[tokio::test(start_paused = true)]
async fn among_equal_priorities_a_freed_place_goes_to_the_request_that_waited_longest() {
    let s = with_places(1);
    s.load("c").await.expect("loads");
    let held = s.acquire("c", &NO_DEMAND).await.expect("a place");
    let first = s.acquire("c", &NO_DEMAND);
    let second = s.acquire("c", &NO_DEMAND);
    tokio::pin!(first, second);
    assert!(now_or_never(first.as_mut()).is_none());
    assert!(now_or_never(second.as_mut()).is_none());
    drop(held);
    let lease = tokio::select! {
        biased;
        l = second.as_mut() => panic!("the later request went first: {l:?}"),
        l = first.as_mut() => l.expect("a lease"),
    };
    drop(lease);
    tokio::time::timeout(Duration::from_secs(1), second)
        .await
        .expect("then the second")
        .expect("a lease");
}

#[tokio::test(start_paused = true)]
async fn when_several_places_free_at_once_every_waiter_that_fits_starts() {
    let s = with_places(3);
    s.load("c").await.expect("loads");
    let held: Vec<Lease> =
        futures_util::future::join_all((0..3).map(|_| s.acquire("c", &NO_DEMAND)))
            .await
            .into_iter()
            .map(|l| l.expect("a place"))
            .collect();
    let waiting = futures_util::future::join_all((0..3).map(|_| s.acquire("c", &NO_DEMAND)));
    tokio::pin!(waiting);
    assert!(now_or_never(waiting.as_mut()).is_none());
    assert_eq!(s.status().models[2].queued, 3);
    drop(held);
    let all = tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("all three start");
    assert!(all.iter().all(Result::is_ok));
}

/// Three 100 MiB models on a 1 GiB budget, `max_loaded` as given (TOML), each loaded in turn
/// with a request that ends at once. Returns the scheduler and which were ready at the end.
async fn three_small_models(caps: &str) -> (Scheduler, Vec<String>) {
    let text = format!(
        "[scheduler]\nqueue_timeout = 5\n{caps}\n\
         [models.c]\ncmd = \"x ${{PORT}}\"\nsize = \"100MiB\"\n\
         [models.d]\ncmd = \"x ${{PORT}}\"\nsize = \"100MiB\"\n\
         [models.e]\ncmd = \"x ${{PORT}}\"\nsize = \"100MiB\"\n"
    );
    let settings = Settings::from_toml(&text, std::path::Path::new("."), "t").expect("valid");
    let fake = Arc::new(Fake::default());
    let s = Scheduler::new(Arc::new(settings), Arc::new(Hooks::new()), Arc::new(fake))
        .expect("scheduler");
    for m in ["c", "d", "e"] {
        drop(s.acquire(m, &Demand::default()).await.expect(m));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ready = (s.status().models.iter())
        .filter(|m| m.state == "ready")
        .map(|m| m.id.clone())
        .collect();
    (s, ready)
}

/// `max_loaded` obeyed: under the cap, every model that fits in memory stays loaded, and
/// nothing is asked of the eviction policy.
#[tokio::test]
async fn max_loaded_obeyed() {
    let (s, ready) =
        three_small_models("max_loaded = 3\n[memory.cpu]\nbudget = \"1GiB\"\nreserve = 0").await;
    assert_eq!(ready, ["c", "d", "e"]);
    assert_eq!(s.status().eviction.decisions, 0);
}

/// `max_loaded` reached: a load past the count asks `choose-eviction` as a memory shortfall
/// does (LRU, the native default here, evicts the least recently used), though memory has
/// room; a device's own cap wins over the scheduler's.
#[tokio::test]
async fn max_loaded_violated() {
    let (s, ready) =
        three_small_models("max_loaded = 2\n[memory.cpu]\nbudget = \"1GiB\"\nreserve = 0").await;
    assert_eq!(ready, ["d", "e"]);
    assert_eq!(s.status().eviction.evictions, 1);
    let (s, ready) = three_small_models(
        "max_loaded = 3\n[memory.cpu]\nbudget = \"1GiB\"\nreserve = 0\nmax_loaded = 1",
    )
    .await;
    assert_eq!(ready, ["e"]);
    assert_eq!(s.status().eviction.evictions, 2);
}

/// A vLLM model on `gpu0` (`control = CONTROL`, loaded then evicted) beside a CPU model, on a
/// machine with 1 GiB of each; both 600 MiB.
async fn vllm_asleep(control: &str) -> Scheduler {
    let text = format!(
        "[scheduler]\nqueue_timeout = 1\n\
         [memory.cpu]\nbudget = \"1GiB\"\nreserve = 0\n\
         [memory.gpu0]\nbudget = \"1GiB\"\nreserve = 0\n\
         [models.v]\nurl = \"http://fake/v1\"\ncontrol = \"{control}\"\ndevice = \"gpu0\"\n\
         size = \"600MiB\"\n\
         [models.c]\ncmd = \"x ${{PORT}}\"\nsize = \"600MiB\"\n"
    );
    let settings = Settings::from_toml(&text, std::path::Path::new("."), "t").expect("valid");
    let device = |name: &str| crate::telemetry::DeviceUsage {
        name: name.into(),
        product: String::new(),
        total_bytes: 1 << 30,
        used_bytes: 0,
        free_bytes: 1 << 30,
        utilization_percent: None,
    };
    let telemetry = crate::telemetry::Telemetry::fixed(crate::telemetry::Snapshot {
        devices: vec![device("cpu"), device("gpu0")],
        cpu_percent: 0.0,
    })
    .expect("telemetry");
    let s = Scheduler::with_telemetry(
        Arc::new(settings),
        Arc::new(Hooks::new()),
        Arc::new(Arc::new(Fake::default())),
        telemetry,
        SchedulerOptions::default(),
    )
    .expect("scheduler");
    drop(s.acquire("v", &NO_DEMAND).await.expect("v loads"));
    s.unload("v").await.expect("v goes to sleep");
    s
}

fn models_bytes(s: &Scheduler, device: &str) -> u64 {
    let status = s.status();
    let d = status
        .devices
        .iter()
        .find(|d| d.name == device)
        .expect("a device");
    d.models_bytes
}

/// vLLM asleep at level 1 keeps its weights in RAM: they count against `[memory.cpu]` (a CPU
/// model that would need them is refused) until a load wakes it; its GPU is free.
#[tokio::test]
async fn a_vllm_model_asleep_at_level_1_holds_ram_until_it_wakes() {
    let s = vllm_asleep("vllm-sleep").await;
    assert_eq!(models_bytes(&s, "cpu"), 600 << 20);
    assert_eq!(models_bytes(&s, "gpu0"), 0);
    let v = s
        .status()
        .models
        .into_iter()
        .find(|m| m.id == "v")
        .expect("v");
    assert_eq!((v.state.as_str(), v.asleep_bytes), ("unloaded", 600 << 20));
    let e =
        (s.acquire("c", &NO_DEMAND).await).expect_err("no room in RAM beside the sleeping weights");
    assert!(
        e.to_string().contains("keep 629145600 bytes of RAM (v)"),
        "{e}"
    );
    drop(s.acquire("v", &NO_DEMAND).await.expect("v wakes"));
    assert_eq!(models_bytes(&s, "cpu"), 0);
    drop(s.acquire("c", &NO_DEMAND).await.expect("RAM is free again"));
}

/// At level 2 the weights are dropped: the RAM stays free for the CPU model.
#[tokio::test]
async fn a_vllm_model_asleep_at_level_2_holds_nothing() {
    let s = vllm_asleep("vllm-sleep:2").await;
    assert_eq!((models_bytes(&s, "cpu"), models_bytes(&s, "gpu0")), (0, 0));
    drop(s.acquire("c", &NO_DEMAND).await.expect("c loads"));
}
