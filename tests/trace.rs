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
        [(100, "a", 0), (500, "b", 10)]
    );
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"t_ms\": 1, \"model\": \"a\"}\n{\"t_ms\": \"soon\"}\n",
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
