//! The load run's short form (`cargo bench --bench load` is the long one): 200 clients for 30
//! seconds over four real llama-server models with memory for two, streamed and plain. Every
//! request is answered whole or refused with a bounded status and `Retry-After`; none is lost;
//! nothing is left holding a model afterwards (no deadlock), and the host still serves.

use std::time::Duration;

use modelyard::cli::setup;

use crate::demo::{TestHost, demo, serial, settings};

#[path = "../host/benches/common/load.rs"]
mod generator;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_over_four_models_with_room_for_two_lose_nothing() {
    let _serial = serial();
    let d = demo();
    let q4_0 = d.smollm2_q4_0.as_ref().expect("the demo's third model");
    let text = generator::config(
        &setup::llama_server_cmd(&d.llama_server),
        &d.smollm2.display().to_string(),
        &d.gemma3.display().to_string(),
        &q4_0.display().to_string(),
        "127.0.0.1:0",
    );
    // `settings` adds its own listen, state_dir and deadline.
    let tables = text.split_once("[scheduler]").expect("tables").1;
    let host = TestHost::start(settings(&format!("[scheduler]{tables}"))).await;
    let plan = generator::Plan {
        clients: 200,
        duration: Duration::from_secs(30),
        models: generator::MODELS.map(String::from).to_vec(),
        max_tokens: 4,
        timeout: Duration::from_secs(90),
        progress: None,
    };
    let base = host.url("");
    let tally = generator::drive(base.trim_end_matches('/'), &plan).await;
    eprintln!(
        "load: {} requests, {} answered ({} streamed), {} 429, {} 503, other {:?}, {} lost; p50 {:.0} ms, p99 {:.0} ms",
        tally.total(),
        tally.answered,
        tally.streamed,
        tally.too_many,
        tally.unavailable,
        tally.other,
        tally.lost,
        tally.quantile(0.5),
        tally.quantile(0.99)
    );
    assert_eq!(tally.lost, 0, "lost: {:?}", tally.lost_why);
    assert!(
        tally.other.is_empty(),
        "unbounded statuses: {:?}",
        tally.other
    );
    assert_eq!(tally.no_retry_after, 0, "a refusal without Retry-After");
    assert!(tally.answered >= 50, "{tally:?}");
    assert!(tally.streamed > 0);
    let st = host.status();
    for m in &st.models {
        assert_eq!(
            (m.in_flight, m.queued),
            (0, 0),
            "{} still held: {m:?}",
            m.id
        );
    }
    let (status, body) = host.chat("smollm2", 2).await;
    assert_eq!(status, 200, "{body}");
    host.stop().await;
}
