//! `modelyard simulate` replays a real trace through the real scheduler and wasm
//! policies on a virtual clock; the offline bounds bracket what the policies pay.

use std::path::PathBuf;
use std::process::Command;

use modelyard::engine::PolicyEngine;
use modelyard::sim::catalogue::Catalogue;
use modelyard::sim::report;
use modelyard::sim::run::replay;
use modelyard::sim::trace::{self, Format, Trace};

use crate::util::{builtin, engine, guest_path, relaxed};

const GIB: u64 = 1 << 30;

fn traces() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/traces")
}

/// The first `hours` of the 100-function Azure sample.
fn functions_sample(hours: u64) -> Trace {
    let mut t = trace::read(
        Format::AzureFunctions,
        &[traces().join("azure-functions-2019/100_inv.csv")],
    )
    .unwrap();
    t.arrivals.retain(|a| a.t_ms < hours * 3_600_000);
    t
}

/// The default catalogue with so many places per model that no request waits for one: the
/// sample's busiest functions are called hundreds of times a minute, far past the default
/// places at the default service time, and memory, not compute, is what these tests judge.
fn with_places_to_spare(t: &Trace) -> Catalogue {
    let mut c = Catalogue::build(t, None).unwrap();
    for m in c.models.values_mut() {
        m.parallel = 10_000;
    }
    c
}

#[test]
fn on_the_functions_sample_the_lower_bound_is_below_every_policy_and_the_upper_bound_fits() {
    let t = functions_sample(1);
    assert!(t.arrivals.len() > 10_000, "{}", t.arrivals.len());
    let catalogue = with_places_to_spare(&t);
    let memory = 80 * GIB;
    let b = report::bounds(&t, &catalogue, memory, 200).unwrap();
    assert_eq!(b.lower_method, "lagrangian");
    assert!(b.upper_peak_bytes <= memory, "{b:?}");
    assert!(b.lower_seconds <= b.upper_seconds, "{b:?}");
    // Every model's first load is compulsory; the bound must see more than that here.
    let (p, _) = report::problem(&t, &catalogue, memory);
    let mut first = vec![false; p.items.len()];
    let compulsory: f64 = p
        .requests
        .iter()
        .filter_map(|&i| (!std::mem::replace(&mut first[i], true)).then_some(p.items[i].cost))
        .sum();
    assert!(b.lower_seconds > compulsory * 1.5, "{b:?} vs {compulsory}");
    let e: PolicyEngine = engine(relaxed());
    let mut costs = Vec::new();
    for name in ["lru", "hybrid"] {
        let m = replay(&t, &catalogue, memory, builtin(&e, name)).unwrap();
        assert_eq!(m.served + m.failed, m.requests, "{name}: {m:?}");
        assert_eq!(m.failed, 0, "{name}: {m:?}");
        assert!(
            m.loads as usize >= catalogue.models.len() / 2,
            "{name}: {m:?}"
        );
        assert!(m.hits < m.served && m.hits > m.served / 2, "{name}: {m:?}");
        assert!(m.decisions > 0 && m.fallbacks == 0, "{name}: {m:?}");
        // The trace's bound assumes each request is served as it arrives; requests that
        // waited may share a load, so the bound every schedule obeys is the one on the
        // requests in the order this one served them.
        assert_eq!(m.served_order.len() as u64, m.served, "{name}");
        let served = report::served_lower_bound(&m.served_order, &catalogue, memory, 200).unwrap();
        assert!(
            served > compulsory && served <= m.load_seconds,
            "{name} paid {} s; the bound on what it served is {served} s",
            m.load_seconds
        );
        costs.push(m.load_seconds);
    }
    // The cost-aware, thrash-guarded hybrid pays less than LRU.
    assert!(costs[1] < costs[0], "hybrid vs lru: {costs:?}");
}

#[test]
fn with_room_for_every_model_each_loads_once_and_both_bounds_are_the_first_loads() {
    let t = functions_sample(1);
    let catalogue = Catalogue::build(&t, None).unwrap();
    let memory = 2048 * GIB;
    let b = report::bounds(&t, &catalogue, memory, 50).unwrap();
    let e = engine(relaxed());
    let m = replay(&t, &catalogue, memory, builtin(&e, "lru")).unwrap();
    let requested: std::collections::BTreeSet<&str> =
        t.arrivals.iter().map(|a| a.model.as_str()).collect();
    assert_eq!(m.loads as usize, requested.len());
    assert_eq!(m.evictions, 0);
    assert!(
        (m.load_seconds - b.upper_seconds).abs() < 1e-6,
        "{m:?} {b:?}"
    );
    assert!(
        (m.load_seconds - b.lower_seconds).abs() < 1e-6,
        "{m:?} {b:?}"
    );
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_modelyard"))
        .arg("simulate")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_command_prints_a_table_json_and_a_sweep_plot_for_jsonl_and_a_wasm_file() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.jsonl");
    // Three models of 3 GB in 8 GB: a, b, c round robin forces evictions.
    let mut lines = String::new();
    for i in 0..60u64 {
        let model = ["a", "b", "c", "a"][(i % 4) as usize];
        lines.push_str(&format!(
            "{{\"t_ms\": {}, \"model\": \"{model}\", \"prompt_tokens\": 100, \"output_tokens\": 20}}\n",
            i * 30_000
        ));
    }
    std::fs::write(&trace, lines).unwrap();
    let cat = dir.path().join("models.toml");
    std::fs::write(
        &cat,
        "[defaults]\nsize = \"3GB\"\n[models.c]\nsize = \"4GB\"\n",
    )
    .unwrap();
    let trace_arg = trace.to_str().unwrap();
    let cat_arg = cat.to_str().unwrap();
    let lru_file = guest_path("modelyard_policy_lru");
    let (ok, out, err) = run(&[
        "--trace",
        trace_arg,
        "--format",
        "jsonl",
        "--memory",
        "8GB",
        "--models",
        cat_arg,
        "--policy",
        "lfu",
        "--policy",
        lru_file.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("60 requests") && out.contains("3 models"),
        "{out}"
    );
    assert!(
        out.contains("lower bound") && out.contains("(FOO, flow)"),
        "{out}"
    );
    assert!(out.contains("cost/LB"), "{out}");
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("lfu") || l.contains("modelyard_policy_lru"))
        .collect();
    assert_eq!(rows.len(), 2, "{out}");

    let (ok, out, err) = run(&[
        "--trace", trace_arg, "--format", "jsonl", "--memory", "8GB", "--models", cat_arg, "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let point = &v["points"][0];
    let lower = point["bounds"]["lower_seconds"].as_f64().unwrap();
    let policies = point["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 2, "lru and hybrid by default");
    for p in policies {
        assert!(p["load_seconds"].as_f64().unwrap() >= lower - 1e-9, "{p}");
        assert!(p["loads"].as_u64().unwrap() > 3, "{p}");
        assert_eq!(p["served"].as_u64().unwrap(), 60, "{p}");
    }

    let plot = dir.path().join("cost.svg");
    let (ok, out, err) = run(&[
        "--trace",
        trace_arg,
        "--format",
        "jsonl",
        "--models",
        cat_arg,
        "--sweep",
        "8GB..12GB",
        "--steps",
        "3",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.matches("\nmemory ").count(), 3, "{out}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    // Three panels: failed and TTFT p99 with a line per policy, the swap cost with the bounds.
    assert!(svg.starts_with("<svg"), "{svg}");
    assert_eq!(svg.matches("<polyline").count(), 2 + 2 + 4, "{svg}");
    for title in [
        "requests failed vs",
        "time to first token p99 (s) vs",
        "swap cost (load seconds) vs",
    ] {
        assert!(svg.contains(title), "{title}: {svg}");
    }
}

#[test]
fn bad_input_is_named() {
    let missing = traces().join("nope.csv");
    let (ok, _, err) = run(&[
        "--trace",
        missing.to_str().unwrap(),
        "--format",
        "azure-functions",
    ]);
    assert!(!ok && err.contains("nope.csv"), "{err}");
    let inv = traces().join("azure-functions-2019/100_inv.csv");
    let (ok, _, err) = run(&[
        "--trace",
        inv.to_str().unwrap(),
        "--format",
        "azure-functions",
        "--policy",
        "no-such-policy.wasm",
    ]);
    assert!(!ok && err.contains("no-such-policy.wasm"), "{err}");
    let (ok, _, err) = run(&[
        "--trace",
        inv.to_str().unwrap(),
        "--format",
        "azure-functions",
        "--sweep",
        "lots",
    ]);
    assert!(!ok && err.contains("FROM..TO"), "{err}");
}

/// The tuning target for the built-in at the default catalogue, on the sample's first six
/// hours (the whole day, in the README, takes a minute and a half in a test build).
#[test]
fn on_the_functions_sample_hybrid_pays_a_quarter_less_than_lru_and_within_a_tenth_of_the_bound() {
    let t = functions_sample(6);
    let catalogue = with_places_to_spare(&t);
    let memory = 80 * GIB;
    let e: PolicyEngine = engine(relaxed());
    let lru = replay(&t, &catalogue, memory, builtin(&e, "lru")).unwrap();
    let hybrid = replay(&t, &catalogue, memory, builtin(&e, "hybrid")).unwrap();
    for m in [&lru, &hybrid] {
        assert_eq!(m.failed, 0, "{m:?}");
    }
    assert!(
        hybrid.load_seconds <= 0.75 * lru.load_seconds,
        "hybrid {} s, lru {} s",
        hybrid.load_seconds,
        lru.load_seconds
    );
    // Within 1.10x of FOO's bound for the trace.
    let b = report::bounds(&t, &catalogue, memory, 300).unwrap();
    assert!(
        hybrid.load_seconds <= 1.10 * b.lower_seconds,
        "hybrid {} s, lower bound {b:?}",
        hybrid.load_seconds
    );
}

/// At the default places per model the sample's busiest functions are more than their server
/// can take: requests queue for a place and their first token comes late; once a model's
/// mean request time says a new request would wait past the queue timeout, it is refused at
/// once instead of waiting it out. Each failure is counted once.
#[test]
fn at_the_default_places_busy_models_queue_and_the_report_says_what_users_felt() {
    let t = functions_sample(1);
    let catalogue = Catalogue::build(&t, None).unwrap();
    assert!(catalogue.models.values().all(|m| m.parallel == 4));
    let e: PolicyEngine = engine(relaxed());
    let spare = replay(&t, &with_places_to_spare(&t), 80 * GIB, builtin(&e, "lru")).unwrap();
    let m = replay(&t, &catalogue, 80 * GIB, builtin(&e, "lru")).unwrap();
    for m in [&spare, &m] {
        assert_eq!(m.served + m.failed, m.requests, "{m:?}");
        assert_eq!(m.failed, m.timed_out + m.refused, "{m:?}");
        assert_eq!(m.ttfts_ms.len() as u64, m.served);
        assert!(m.ttft_p50_ms <= m.ttft_p99_ms && m.ttft_p99_ms <= m.ttft_max_ms);
        assert!(
            m.ttft_max_ms <= 300_000 + 1,
            "never past the queue timeout: {m:?}"
        );
        assert!(m.goodput(std::time::Duration::from_secs(10)) <= m.served);
    }
    assert_eq!(spare.failed, 0);
    assert!(
        m.refused > m.timed_out,
        "most failures are refused early: {m:?}"
    );
    assert!(m.ttft_p99_ms > spare.ttft_p99_ms, "{m:?} vs {spare:?}");
    let slo = std::time::Duration::from_secs(10);
    assert!(m.goodput(slo) < spare.goodput(slo));
}

/// The Azure LLM pair (code and conversation, two 8 GiB models) at 8 GiB: one fits, and the
/// loaded one always has a request in flight. Without draining, the other never got a turn
/// (8,303 of 28,185 requests timed out, with 2 loads in the hour, under every policy). Now the
/// host drains the busy model once the other's load has waited its load time: every request
/// is served, the models taking turns.
#[test]
fn regression_issue_15_the_two_model_pair_at_8_gib_takes_turns_instead_of_starving_one() {
    use modelyard::sim::run::{Chooser, replay_with};
    let dir = traces().join("azure-llm-2023");
    let t = trace::read(
        Format::AzureLlm,
        &[
            dir.join("AzureLLMInferenceTrace_code.csv"),
            dir.join("AzureLLMInferenceTrace_conv.csv"),
        ],
    )
    .unwrap();
    let catalogue = with_places_to_spare(&t);
    assert!(catalogue.models.values().all(|m| m.size == 8 * GIB));
    let e: PolicyEngine = engine(relaxed());
    let runs = [
        (
            "lru",
            replay(&t, &catalogue, 8 * GIB, builtin(&e, "lru")).unwrap(),
        ),
        (
            "hybrid",
            replay(&t, &catalogue, 8 * GIB, builtin(&e, "hybrid")).unwrap(),
        ),
        (
            "adaptive",
            replay(&t, &catalogue, 8 * GIB, builtin(&e, "adaptive")).unwrap(),
        ),
        (
            "oracle",
            replay_with(&t, &catalogue, 8 * GIB, Chooser::Oracle).unwrap(),
        ),
    ];
    for (name, m) in &runs {
        eprintln!(
            "{name}: {} failed, {} loads, TTFT p99 {} ms",
            m.failed, m.loads, m.ttft_p99_ms
        );
        assert_eq!(m.failed, 0, "{name}: {m:?}");
        assert!(m.loads > 10, "{name} takes turns: {m:?}");
        // A turn is bounded: the waiting model's load time before the drain, the requests
        // in flight, the load; never near the queue timeout.
        assert!(m.ttft_max_ms < 120_000, "{name}: {m:?}");
    }
}

/// Three 40 GiB models in 80 GiB, requested in turn, one every 30 s: LRU evicts exactly the
/// model needed next, every time; the oracle, through the same scheduler, keeps it. Neither
/// fails a request, and the host never had to overrule the oracle.
#[test]
fn where_the_future_is_obvious_the_oracle_does_better_than_lru() {
    use modelyard::sim::run::{Chooser, replay_with};
    use modelyard::sim::trace::Arrival;
    let mut t = Trace::default();
    for (i, m) in ["a", "b", "c"].iter().cycle().take(60).enumerate() {
        t.models.entry((*m).into()).or_default();
        t.arrivals.push(Arrival {
            t_ms: i as u64 * 30_000,
            model: (*m).into(),
            prompt_tokens: 0,
            output_tokens: 0,
            service_ms: None,
            ..Default::default()
        });
    }
    let mut c = Catalogue::build(&t, None).unwrap();
    for m in c.models.values_mut() {
        m.size = 40 * GIB;
    }
    let e: PolicyEngine = engine(relaxed());
    let lru = replay(&t, &c, 80 * GIB, builtin(&e, "lru")).unwrap();
    let oracle = replay_with(&t, &c, 80 * GIB, Chooser::Oracle).unwrap();
    assert_eq!((lru.failed, oracle.failed), (0, 0));
    assert_eq!(lru.loads, 60, "LRU misses every request: {lru:?}");
    assert!(oracle.loads <= 32, "{oracle:?}");
    assert!(oracle.load_seconds < lru.load_seconds);
    assert!(oracle.ttft_p99_ms <= lru.ttft_p99_ms);
    assert!(oracle.decisions > 0 && oracle.fallbacks == 0, "{oracle:?}");
}

/// The suite's matrix has a cell for every workload, size and policy (the oracle added), each
/// with the oracle's ratios; the first minute of each workload keeps it short.
#[test]
fn the_suite_has_every_cell() {
    use modelyard::sim::suite::{self, SuiteOptions};
    let s = suite::run(&SuiteOptions {
        traces: traces(),
        policies: vec!["lru".into(), "hybrid".into()],
        span: Some(std::time::Duration::from_secs(60)),
        seed: suite::SEED,
        slo: std::time::Duration::from_secs(10),
        bound_rounds: 10,
    })
    .unwrap();
    assert_eq!(s.rows.len(), 7 * 3);
    for r in &s.rows {
        let names: Vec<&str> = r.runs.iter().map(|p| p.policy.as_str()).collect();
        assert_eq!(names, ["lru", "hybrid", "oracle"], "{}", r.trace);
        assert!(r.requests > 0, "{} {}", r.trace, r.size);
        for p in &r.runs {
            let m = &p.metrics;
            assert_eq!(m.served + m.failed, m.requests, "{} {}", r.trace, p.policy);
            assert!(p.vs_oracle.is_some());
        }
    }
    let sizes: Vec<&str> = s.rows.iter().take(3).map(|r| r.size).collect();
    assert_eq!(sizes, ["tight", "middle", "roomy"]);
    assert!(
        s.rows
            .windows(2)
            .all(|w| w[0].trace != w[1].trace || w[0].memory_bytes < w[1].memory_bytes)
    );
    let matrix = suite::matrix(&s);
    assert_eq!(
        matrix
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| trace"))
            .count(),
        21
    );
}

/// Loads each policy made replaying `trace` (jsonl) in `memory` with 3 GB models.
fn loads_by_policy(trace: &std::path::Path, memory: &str, policies: &[&str]) -> Vec<(String, u64)> {
    let cat = trace.with_file_name("models.toml");
    std::fs::write(&cat, "[defaults]\nsize = \"3GB\"\n").unwrap();
    let mut args = vec![
        "--trace",
        trace.to_str().unwrap(),
        "--format",
        "jsonl",
        "--memory",
        memory,
        "--models",
        cat.to_str().unwrap(),
        "--json",
    ];
    for p in policies {
        args.extend(["--policy", p]);
    }
    let (ok, out, err) = run(&args);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["points"][0]["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["failed"].as_u64(), Some(0), "{p}");
            (
                p["policy"].as_str().unwrap().to_string(),
                p["loads"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn adaptive_learns_to_keep_the_hot_models_where_lru_thrashes_on_a_scan() {
    // Room for three models. Two hot models alternate with a scan of models asked for once,
    // two at a time: LRU evicts a hot model for each second scan model and reloads it at once
    // (4 loads a round); LFU keeps the hot ones (2 a round, the scan's own). Adaptive's history
    // sees LRU's evictions come straight back and shifts its weight to its frequency expert.
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("scan.jsonl");
    let mut lines = String::new();
    let mut t = 0u64;
    for round in 0..100u64 {
        for model in [
            "hot1".to_string(),
            "hot2".to_string(),
            format!("scan{}", 2 * round),
            format!("scan{}", 2 * round + 1),
        ] {
            lines.push_str(&format!(
                "{{\"t_ms\": {t}, \"model\": \"{model}\", \"prompt_tokens\": 100, \"output_tokens\": 20}}\n"
            ));
            t += 120_000;
        }
    }
    std::fs::write(&trace, lines).unwrap();
    let loads = loads_by_policy(&trace, "9GB", &["lru", "lfu", "adaptive"]);
    let of = |name: &str| loads.iter().find(|(p, _)| p == name).unwrap().1;
    let (lru, lfu, adaptive) = (of("lru"), of("lfu"), of("adaptive"));
    assert!(lru >= 390, "LRU thrashes: {loads:?}");
    assert!(lfu <= 210, "LFU keeps the hot models: {loads:?}");
    assert!(
        adaptive * 10 < lru * 7,
        "adaptive learns from its history: {loads:?}"
    );
}

#[test]
fn adaptive_stays_with_lru_where_frequency_misleads() {
    // The mirror image: two models were hot once and are never asked for again, while the
    // rest cycle through the free room. LFU keeps the stale pair forever and thrashes the rest;
    // LRU does not; adaptive must not do much worse than LRU (its frequencies decay, and its
    // history sees a stale favourite kept while the others come back).
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("stale.jsonl");
    let mut lines = String::new();
    let mut t = 0u64;
    let mut push = |model: &str| {
        lines.push_str(&format!(
            "{{\"t_ms\": {t}, \"model\": \"{model}\", \"prompt_tokens\": 100, \"output_tokens\": 20}}\n"
        ));
        t += 120_000;
    };
    for _ in 0..50 {
        push("old1");
        push("old2");
    }
    for _ in 0..100 {
        for m in ["a", "b", "c"] {
            push(m);
        }
    }
    std::fs::write(&trace, lines).unwrap();
    let loads = loads_by_policy(&trace, "9GB", &["lru", "lfu", "adaptive"]);
    let of = |name: &str| loads.iter().find(|(p, _)| p == name).unwrap().1;
    let (lru, lfu, adaptive) = (of("lru"), of("lfu"), of("adaptive"));
    assert!(lfu > 2 * lru, "LFU clings to the stale pair: {loads:?}");
    assert!(
        adaptive * 10 < lfu * 7,
        "adaptive does not cling to the stale pair: {loads:?}"
    );
}

/// A stateful policy replayed twice from one loaded component makes the same decisions both
/// times: each replay starts its instance afresh. (The 1M-request bench met the second replay
/// inheriting the first one's weights and rates, and so did each row of the suite.)
#[test]
fn regression_a_stateful_policy_replays_the_same_trace_the_same_way_twice() {
    use modelyard::sim::trace::Arrival;
    let mut t = Trace::default();
    for round in 0..60u64 {
        let scan = [
            format!("scan{}", 2 * round),
            format!("scan{}", 2 * round + 1),
        ];
        for (i, m) in ["hot1", "hot2", &scan[0], &scan[1]].iter().enumerate() {
            t.models.entry((*m).into()).or_default();
            t.arrivals.push(Arrival {
                t_ms: (round * 4 + i as u64) * 120_000,
                model: (*m).into(),
                ..Default::default()
            });
        }
    }
    let mut c = Catalogue::build(&t, None).unwrap();
    for m in c.models.values_mut() {
        m.size = 3_000_000_000;
    }
    let e: PolicyEngine = engine(relaxed());
    let adaptive = builtin(&e, "adaptive");
    let first = replay(&t, &c, 9_000_000_000, adaptive.clone()).unwrap();
    let second = replay(&t, &c, 9_000_000_000, adaptive).unwrap();
    assert!(first.evictions > 50, "{first:?}");
    assert_eq!(
        (first.loads, first.evictions, first.decisions),
        (second.loads, second.evictions, second.decisions)
    );
}

/// `--seed` draws the synthetic workloads again and leaves the public traces as they are.
#[test]
fn another_seed_draws_the_synthetic_workloads_again() {
    use modelyard::sim::suite::{self, workloads};
    let minute = Some(60_000);
    let a = workloads(&traces(), minute, suite::SEED).unwrap();
    let b = workloads(&traces(), minute, suite::SEED + 1).unwrap();
    assert_eq!(a.len(), 7);
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        let same = x.arrivals.len() == y.arrivals.len()
            && x.arrivals
                .iter()
                .zip(&y.arrivals)
                .all(|(p, q)| p.t_ms == q.t_ms && p.model == q.model);
        assert_eq!(same, name.starts_with("azure"), "{name}");
    }
}
