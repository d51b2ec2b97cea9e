//! `simulate --suite`: the policies, and the oracle, over a fixed set of workloads, each at a
//! tight, a middle and a roomy memory size, printed as one matrix. Tuning on one trace
//! overfits it; a policy is judged here on all of them at once, including shapes the public
//! traces lack ([`super::synthetic`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use super::catalogue::Catalogue;
use super::report::{self, PolicyRun};
use super::trace::{self, Format, Trace};
use super::{oracle, synthetic};

/// The seed of every synthetic workload, unless `--seed` names another.
pub const SEED: u64 = 2019;

/// What to run.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// The folder holding `azure-functions-2019/` and `azure-llm-2023/`.
    pub traces: PathBuf,
    /// Policies to compare; the oracle is always added.
    pub policies: Vec<String>,
    /// Keep only each workload's first stretch this long (`None`: all of it).
    pub span: Option<Duration>,
    /// The synthetic workloads' seed ([`SEED`] by default).
    pub seed: u64,
    pub slo: Duration,
    pub bound_rounds: usize,
}

/// One workload at one memory size.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub trace: String,
    /// `tight`, `middle` or `roomy`.
    pub size: &'static str,
    pub memory_bytes: u64,
    pub requests: usize,
    pub runs: Vec<PolicyRun>,
}

/// The whole matrix.
#[derive(Debug, Clone, Serialize)]
pub struct Suite {
    pub slo_seconds: f64,
    /// The synthetic workloads' seed.
    pub seed: u64,
    pub rows: Vec<Row>,
}

/// The workloads, by name, each cut to its first `span` milliseconds when one is given; the
/// synthetic ones drawn from `seed`.
pub fn workloads(
    traces: &Path,
    span: Option<u64>,
    seed: u64,
) -> anyhow::Result<Vec<(String, Trace)>> {
    let functions = |n: &str, span: Option<u64>| {
        trace::read_first(
            Format::AzureFunctions,
            &[traces.join(format!("azure-functions-2019/{n}_inv.csv"))],
            span,
        )
    };
    // The 1,000-function day is 11.6 million calls; its first hour is a million.
    let hour = Some(span.unwrap_or(u64::MAX).min(3_600_000));
    let llm = [
        traces.join("azure-llm-2023/AzureLLMInferenceTrace_code.csv"),
        traces.join("azure-llm-2023/AzureLLMInferenceTrace_conv.csv"),
    ];
    let mut synthetic = vec![
        ("zipf-shifts".to_string(), synthetic::zipf_shifts(seed)),
        ("diurnal".into(), synthetic::diurnal(seed)),
        ("bursty-tenants".into(), synthetic::bursty_tenants(seed)),
        ("cold-scan".into(), synthetic::cold_scan(seed)),
    ];
    if let Some(span) = span {
        for (_, t) in &mut synthetic {
            let first = t.arrivals.first().map_or(0, |a| a.t_ms);
            t.arrivals.retain(|a| a.t_ms < first + span);
        }
    }
    let mut all = vec![
        ("azure-functions-100".into(), functions("100", span)?),
        (
            "azure-functions-1000 (1 h)".into(),
            functions("1000", hour)?,
        ),
        (
            "azure-llm code+conv".into(),
            trace::read_first(Format::AzureLlm, &llm, span)?,
        ),
    ];
    all.append(&mut synthetic);
    Ok(all)
}

/// The three memory sizes of a catalogue, in whole GiB: tight (the largest model, or 15% of
/// all of them), middle (1.5× the largest, or 30%) and roomy (2.5× the largest, or 60%).
pub fn sizes(catalogue: &Catalogue) -> [(&'static str, u64); 3] {
    let total: u64 = catalogue.models.values().map(|m| m.size).sum();
    let largest = catalogue.models.values().map(|m| m.size).max().unwrap_or(0);
    let gib = |bytes: f64| ((bytes / f64::from(1u32 << 30)).ceil() as u64) << 30;
    let at = |times: f64, share: f64| gib((largest as f64 * times).max(total as f64 * share));
    [
        ("tight", at(1.0, 0.15)),
        ("middle", at(1.5, 0.30)),
        ("roomy", at(2.5, 0.60)),
    ]
}

/// Runs every policy and the oracle over every workload at its three sizes.
pub fn run(opts: &SuiteOptions) -> anyhow::Result<Suite> {
    let mut names = opts.policies.clone();
    if !names.iter().any(|n| n == oracle::NAME) {
        names.push(oracle::NAME.into());
    }
    let policies = report::choosers(&names)?;
    let mut rows = Vec::new();
    let span = opts
        .span
        .map(|s| u64::try_from(s.as_millis()).unwrap_or(u64::MAX));
    for (name, trace) in workloads(&opts.traces, span, opts.seed)? {
        let catalogue = Catalogue::build(&trace, None)?;
        for (size, memory) in sizes(&catalogue) {
            tracing::info!(trace = %name, size, memory, "suite");
            let point = report::point(
                (&trace, &catalogue),
                memory,
                &policies,
                opts.slo,
                opts.bound_rounds,
            )
            .with_context(|| format!("{name} at {size} memory"))?;
            rows.push(Row {
                trace: name.clone(),
                size,
                memory_bytes: memory,
                requests: trace.arrivals.len(),
                runs: point.policies,
            });
        }
    }
    Ok(Suite {
        slo_seconds: opts.slo.as_secs_f64(),
        seed: opts.seed,
        rows,
    })
}

/// One cell: failed requests, TTFT p99, swap seconds, and the swap over the oracle's.
fn cell(run: &PolicyRun) -> String {
    let m = &run.metrics;
    let swap_vs = run
        .vs_oracle
        .and_then(|v| v.swap_seconds)
        .map_or_else(|| "-".into(), |r| format!("{r:.2}×"));
    format!(
        "{} failed · p99 {:.1} s · swap {:.0} s ({swap_vs})",
        m.failed,
        m.ttft_p99_ms as f64 / 1000.0,
        m.load_seconds
    )
}

/// The matrix as a Markdown table: rows trace × memory, a column per policy.
pub fn matrix(s: &Suite) -> String {
    let mut out = String::new();
    let policies: Vec<&str> = s
        .rows
        .first()
        .map(|r| r.runs.iter().map(|p| p.policy.as_str()).collect())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "| trace | requests | memory | {} |",
        policies.join(" | ")
    );
    let _ = writeln!(out, "|---|---:|---|{}", "---|".repeat(policies.len()));
    for r in &s.rows {
        let cells: Vec<String> = r.runs.iter().map(cell).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} {} GiB | {} |",
            r.trace,
            r.requests,
            r.size,
            r.memory_bytes >> 30,
            cells.join(" | ")
        );
    }
    let _ = writeln!(
        out,
        "\nEach cell: requests failed · time to first token p99 · swap seconds (÷ the oracle's)."
    );
    out
}
