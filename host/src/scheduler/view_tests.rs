//! Each field of the contract's records as `wit/policy.wit` documents it, built from a
//! scheduler on a stand-in launcher and an imagined machine (4 GiB of RAM, one 8 GiB GPU).

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::Settings;
use crate::engine::Hooks;
use crate::scheduler::tests::Fake;
use crate::scheduler::{Demand, Scheduler, SchedulerOptions};
use crate::telemetry::{DeviceUsage, Snapshot, Telemetry};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn machine() -> Telemetry {
    let device = |name: &str, total: u64, utilization| DeviceUsage {
        name: name.to_string(),
        product: String::new(),
        total_bytes: total,
        used_bytes: total / 2,
        free_bytes: total / 2,
        utilization_percent: utilization,
    };
    Telemetry::fixed(Snapshot {
        // The GPU first: the contract still lists `cpu` first.
        devices: vec![
            device("gpu0", 8 * GIB, Some(40)),
            device("cpu", 4 * GIB, None),
        ],
        cpu_percent: 12.5,
    })
    .expect("telemetry")
}

/// `a` and `b` (600 MiB each) on a 1 GiB RAM budget, `g` on the GPU, whose 8 GiB budget is capped by its size less a 1 GiB reserve.
fn scheduler() -> Scheduler {
    let text = "[scheduler]\nqueue_timeout = 5\n\
        [memory.cpu]\nbudget = \"1GiB\"\nreserve = 0\n\
        [memory.gpu0]\nbudget = \"8GiB\"\nreserve = \"1GiB\"\n\
        [models.a]\ncmd = \"x ${PORT}\"\nsize = \"600MiB\"\naliases = [\"first\"]\n\
        tags = [\"code\"]\npriority = 3\ncontext_tokens = 4096\n\
        [models.b]\ncmd = \"x ${PORT}\"\nsize = \"600MiB\"\npinned = true\n\
        [models.g]\ncmd = \"x ${PORT}\"\nsize = \"2GiB\"\ndevice = \"gpu0\"\n";
    let settings = Settings::from_toml(text, std::path::Path::new("."), "t").expect("valid");
    Scheduler::with_telemetry(
        Arc::new(settings),
        Arc::new(Hooks::new()),
        Arc::new(Arc::new(Fake::default())),
        machine(),
        SchedulerOptions::simulated(),
    )
    .expect("scheduler")
}

fn record(s: &Scheduler, id: &str) -> Model {
    s.selection_view()
        .0
        .into_iter()
        .find(|m| m.id == id)
        .expect("configured")
}

#[tokio::test(start_paused = true)]
async fn a_model_record_carries_its_configuration() {
    let s = scheduler();
    let a = record(&s, "a");
    assert_eq!(a.aliases, ["first"]);
    assert_eq!(a.device, "cpu");
    assert_eq!(a.context_tokens, 4096);
    assert_eq!(a.tags, ["code"]);
    assert_eq!(a.priority, 3);
    assert!(!a.pinned);
    assert!(record(&s, "b").pinned);
    assert_eq!(record(&s, "g").device, "gpu0");
}

#[tokio::test(start_paused = true)]
async fn a_model_record_follows_the_lifecycle_and_counts_its_use() {
    let s = scheduler();
    let a = record(&s, "a");
    assert_eq!(a.state, ModelState::Unloaded);
    assert_eq!((a.last_used_ms, a.loaded_at_ms), (0, 0), "0: never");
    assert_eq!((a.use_count, a.load_count, a.mean_load_ms), (0, 0, 0));
    // Not measured (the stand-in has no process): the configured estimate.
    assert_eq!((a.size_bytes, a.size_measured), (600 * MIB, false));

    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut lease = s.acquire("first", &Demand::default()).await.expect("loads");
    let a = record(&s, "a");
    assert_eq!(a.state, ModelState::Ready);
    assert_eq!((a.in_flight, a.use_count, a.load_count), (1, 1, 1));
    assert_eq!(a.mean_load_ms, 200, "the stand-in starts in 200 ms");
    assert_eq!(a.loaded_at_ms, 250);
    assert_eq!(a.last_used_ms, 0, "no request has finished");

    tokio::time::sleep(Duration::from_millis(100)).await;
    lease.fail();
    drop(lease);
    let a = record(&s, "a");
    assert_eq!((a.in_flight, a.errors), (0, 1));
    assert_eq!(a.last_used_ms, 350);
    assert_eq!(a.mean_latency_ms, 100);

    s.unload("a").await.expect("idle");
    assert_eq!(record(&s, "a").state, ModelState::Unloaded);
}

#[tokio::test(start_paused = true)]
async fn queued_counts_the_requests_waiting_for_a_model() {
    let s = Arc::new(scheduler());
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.acquire("a", &Demand::default()).await.map(drop) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let a = record(&s, "a");
    assert_eq!((a.state, a.queued), (ModelState::Loading, 3));
    for w in waiting {
        w.await.expect("joins").expect("served");
    }
    assert_eq!(record(&s, "a").queued, 0);
}

#[tokio::test(start_paused = true)]
async fn telemetry_lists_every_budgeted_device_cpu_first_with_the_budget_and_what_is_free() {
    let s = scheduler();
    let t = s.selection_view().1;
    let names: Vec<&str> = t.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["cpu", "gpu0"]);
    assert_eq!(t.cpu_percent, 12.5);
    // The budget after the reserve, not the hardware's total; free: none of it is held.
    assert_eq!(
        (t.devices[0].total_bytes, t.devices[0].free_bytes),
        (GIB, GIB)
    );
    assert_eq!(t.devices[1].total_bytes, 7 * GIB);
    assert_eq!(t.devices[1].utilization_percent, Some(40));

    let _g = s.acquire("g", &Demand::default()).await.expect("loads");
    let gpu = s.selection_view().1.devices[1].clone();
    assert_eq!(
        gpu.free_bytes,
        5 * GIB,
        "what the loaded model does not hold"
    );
    assert_eq!(
        s.selection_view().1.devices[0].free_bytes,
        GIB,
        "other devices untouched"
    );
}

#[tokio::test(start_paused = true)]
async fn telemetry_now_ms_counts_from_the_host_start() {
    let s = scheduler();
    tokio::time::sleep(Duration::from_millis(1234)).await;
    assert_eq!(s.selection_view().1.now_ms, 1234);
}

#[tokio::test(start_paused = true)]
async fn an_eviction_request_for_a_load_names_the_load_its_device_and_every_resident_model() {
    let s = scheduler();
    let _b = s.acquire("b", &Demand::default()).await.expect("b loads");
    let _g = s.acquire("g", &Demand::default()).await.expect("g loads");
    let inner = &s.inner;
    let req = eviction_request(inner, &inner.lock(), Incoming::Load(0), 200 * MIB, |_| true);
    assert_eq!(req.incoming.id, "a");
    assert_eq!((req.device.as_str(), req.needed_bytes), ("cpu", 200 * MIB));
    // b is pinned and busy and still listed; g lives on another device.
    let loaded: Vec<&str> = req.loaded.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(loaded, ["b"]);
    assert_eq!(req.telemetry.devices[0].free_bytes, GIB - 600 * MIB);
}

#[tokio::test(start_paused = true)]
async fn an_eviction_request_carries_the_highest_priority_among_the_requests_waiting() {
    let s = Arc::new(scheduler());
    let inner = &s.inner;
    let priority =
        || eviction_request(inner, &inner.lock(), Incoming::Load(0), 1, |_| true).priority;
    assert_eq!(priority(), 0, "none waits: the default priority");
    let waiting: Vec<_> = [2, 9, -1]
        .into_iter()
        .map(|priority| {
            let s = s.clone();
            tokio::spawn(async move {
                let demand = Demand {
                    priority,
                    ..Demand::default()
                };
                s.acquire("a", &demand).await.map(drop)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(priority(), 9, "not a's configured priority (3)");
    for w in waiting {
        w.await.expect("joins").expect("served");
    }
    assert_eq!(priority(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_eviction_request_lists_demand_most_requested_first() {
    let s = scheduler();
    for task in ["chat", "code", "code", "summarize", "code", "chat"] {
        let demand = Demand {
            task: Some(task.to_string()),
            ..Demand::default()
        };
        drop(s.acquire("a", &demand).await.expect("a"));
    }
    let inner = &s.inner;
    let req = eviction_request(inner, &inner.lock(), Incoming::Load(1), 1, |_| true);
    let demand: Vec<(&str, u32)> = req
        .demand
        .iter()
        .map(|d| (d.task.as_str(), d.requests))
        .collect();
    assert_eq!(demand, [("code", 3), ("chat", 2), ("summarize", 1)]);
}

#[tokio::test(start_paused = true)]
async fn housekeeping_stands_in_for_the_incoming_model_with_its_reason() {
    let s = scheduler();
    let _a = s.acquire("a", &Demand::default()).await.expect("a");
    let inner = &s.inner;
    let incoming = Incoming::Housekeeping {
        reason: EvictionReason::IdleTtl,
        device: "cpu",
    };
    let req = eviction_request(inner, &inner.lock(), incoming, 600 * MIB, |_| true);
    assert_eq!(req.reason, EvictionReason::IdleTtl);
    assert_eq!(req.incoming.id, "modelyard:ttl");
    assert_eq!(req.incoming.state, ModelState::Unloaded);
    assert_eq!(req.incoming.size_bytes, 600 * MIB);
    assert_eq!((req.priority, req.incoming.priority), (i32::MAX, i32::MAX));
    assert_eq!(req.loaded.len(), 1, "a");
}

#[test]
fn the_catalogue_lists_models_by_id_and_devices_as_telemetry_does() {
    let text = "[models.z]\ncmd = \"x ${PORT}\"\ntags = [\"code\", \"chat\"]\naliases = [\"last\"]\n\
                [models.a]\ncmd = \"x ${PORT}\"\ndevice = \"gpu0\"\ntags = [\"chat\"]\nparallel = 2\n";
    let settings = Settings::from_toml(text, std::path::Path::new("."), "t").expect("valid");
    let devices = ["gpu0".to_string(), "cpu".to_string()];
    let c = catalogue(&settings.models, &devices);
    let ids: Vec<&str> = c.models().iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["a", "z"], "by id, as the scheduler holds them");
    assert_eq!(c.devices(), ["cpu", "gpu0"]);
    assert_eq!(c.tasks(), ["chat", "code"]);
    assert_eq!(c.alias("last"), Some(1));
    assert_eq!(c.models()[0].parallel, 2);
}
