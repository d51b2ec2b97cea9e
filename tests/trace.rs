//! The simulator's trace readers on the shipped public traces
//! (`tests/data/traces`, copied unchanged from the project's shared data) and on JSON lines.

use std::path::PathBuf;

use modelyard::sim::trace::{self, Format};

fn traces() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/traces")
}

fn sorted(t: &trace::Trace) -> bool {
    t.arrivals.windows(2).all(|w| w[0].t_ms <= w[1].t_ms)
}

#[test]
fn the_azure_functions_sample_yields_every_invocation_of_the_day() {
    let inv = traces().join("azure-functions-2019/100_inv.csv");
    // The expected total, counted straight from the file.
    let text = std::fs::read_to_string(&inv).unwrap();
    let expected: u64 = text
        .lines()
        .skip(1)
        .flat_map(|l| l.split(',').skip(3))
        .map(|c| c.trim().parse::<u64>().unwrap())
        .sum();
    let t = trace::read(Format::AzureFunctions, &[inv]).unwrap();
    assert_eq!(t.arrivals.len() as u64, expected);
    assert!(expected > 100_000, "{expected}");
    assert_eq!(t.models.len(), 100);
    assert!(sorted(&t));
    assert!(t.arrivals.last().unwrap().t_ms < 1440 * 60_000);
    let with_memory = t.models.values().filter(|m| m.memory_mb.is_some()).count();
    let with_duration = t
        .models
        .values()
        .filter(|m| m.mean_service_ms.is_some())
        .count();
    assert_eq!(with_memory, 100, "every function's app has a memory row");
    assert_eq!(with_duration, 100);
    // Heavy-tailed: the busiest tenth of the functions carry most calls.
    let mut per_model: Vec<usize> = t
        .models
        .keys()
        .map(|id| t.arrivals.iter().filter(|a| &a.model == id).count())
        .collect();
    per_model.sort_unstable_by(|a, b| b.cmp(a));
    let top: usize = per_model[..10].iter().sum();
    assert!(
        top * 10 > t.arrivals.len() * 8,
        "top 10%: {top} of {}",
        t.arrivals.len()
    );
}

#[test]
fn the_azure_llm_traces_are_two_models_with_real_token_counts() {
    let dir = traces().join("azure-llm-2023");
    let t = trace::read(
        Format::AzureLlm,
        &[
            dir.join("AzureLLMInferenceTrace_code.csv"),
            dir.join("AzureLLMInferenceTrace_conv.csv"),
        ],
    )
    .unwrap();
    let count = |m: &str| t.arrivals.iter().filter(|a| a.model == m).count();
    assert_eq!((count("code"), count("conv")), (8_819, 19_366));
    assert_eq!(t.models.keys().collect::<Vec<_>>(), ["code", "conv"]);
    assert!(sorted(&t));
    assert_eq!(t.arrivals[0].t_ms, 0);
    let span = t.arrivals.last().unwrap().t_ms;
    assert!(
        (3_000_000..7_200_000).contains(&span),
        "about an hour: {span} ms"
    );
    assert!(t.arrivals.iter().all(|a| a.prompt_tokens > 0));
    let code = trace::read(
        Format::AzureLlm,
        &[dir.join("AzureLLMInferenceTrace_code.csv")],
    )
    .unwrap();
    let first = &code.arrivals[0];
    assert_eq!((first.prompt_tokens, first.output_tokens), (4808, 10));
}

#[test]
fn json_lines_are_read_in_time_order_and_a_bad_line_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.jsonl");
    std::fs::write(
        &good,
        "{\"t_ms\": 500, \"model\": \"b\", \"prompt_tokens\": 10, \"output_tokens\": 5}\n\n\
         {\"t_ms\": 100, \"model\": \"a\"}\n",
    )
    .unwrap();
    let t = trace::read(Format::Jsonl, &[good]).unwrap();
    assert_eq!(
        t.arrivals
            .iter()
            .map(|a| (a.t_ms, a.model.as_str(), a.prompt_tokens))
            .collect::<Vec<_>>(),
        [(0, "a", 0), (400, "b", 10)],
        "in time order, from the first request"
    );
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"t_ms\": 1, \"model\": \"a\"}\n{\"t_ms\": \"soon\", \"model\": \"a\"}\n",
    )
    .unwrap();
    let e = format!("{:#}", trace::read(Format::Jsonl, &[bad]).unwrap_err());
    assert!(e.contains("line 2"), "{e}");
    let wrong = format!(
        "{:#}",
        trace::read(
            Format::AzureFunctions,
            &[traces().join("azure-functions-2019/100_mem.csv")]
        )
        .unwrap_err()
    );
    assert!(wrong.contains("N_inv.csv"), "{wrong}");
}

#[tokio::test]
async fn a_recorded_trace_replays_what_reached_the_scheduler() {
    use modelyard::recorder::{Outcome, Record, Recorder, RecorderSettings, Stage};
    let dir = tempfile::tempdir().unwrap();
    let settings = RecorderSettings::new(dir.path().join("trace.jsonl"));
    let rec = Recorder::start(settings.clone()).unwrap();
    let at = |t_ms: u64, model: Option<&str>, stage, outcome| Record {
        t_ms,
        id: format!("req-{t_ms}"),
        route: "chat/completions".into(),
        asked: "auto".into(),
        model: model.map(str::to_string),
        task: Some("code".into()),
        priority: 3,
        client: None,
        prompt_tokens: 50,
        output_tokens: Some(7),
        hit: None,
        wait_ms: None,
        ttft_ms: None,
        latency_ms: 5,
        service_ms: Some(900),
        status: 200,
        outcome,
        stage,
    };
    let t0 = 1_764_000_000_000;
    rec.record(&at(t0, Some("qwen"), Stage::Relay, Outcome::Ok));
    // Bad input, and a request no model was chosen for: never reached the scheduler.
    rec.record(&at(t0 + 10, None, Stage::Parse, Outcome::Rejected));
    rec.record(&at(t0 + 20, Some("qwen"), Stage::Route, Outcome::Rejected));
    // Timed out waiting for its model: it did.
    rec.record(&at(
        t0 + 1500,
        Some("gemma"),
        Stage::Acquire,
        Outcome::TimedOut,
    ));
    rec.flush().await;
    let t = trace::read(Format::Jsonl, &[settings.path]).unwrap();
    assert_eq!(
        t.arrivals
            .iter()
            .map(|a| (a.t_ms, a.model.as_str(), a.priority, a.task.as_deref()))
            .collect::<Vec<_>>(),
        [
            (0, "qwen", 3, Some("code")),
            (1500, "gemma", 3, Some("code"))
        ]
    );
    let first = &t.arrivals[0];
    assert_eq!(
        (first.prompt_tokens, first.output_tokens, first.service_ms),
        (50, 7, Some(900))
    );
}
