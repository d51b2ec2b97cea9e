//! `modelyard simulate`: replays a trace once per policy and memory size, computes the offline
//! bounds for each size, and prints a table, JSON, or an SVG plot of cost against memory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::bounds::{self, Item, Problem};
use super::catalogue::Catalogue;
use super::oracle;
use super::run::{self, Chooser, Metrics};
use super::trace::{self, Format, Trace};
use crate::engine::{EngineSettings, Hook, PolicyEngine};

/// Traces up to this many requests get FOO's exact flow; longer ones its Lagrangian bound.
const EXACT_FLOW_MAX: usize = 2_000;

/// The engine a replay runs policies in: the serving limits, except a deadline generous
/// enough that a busy machine never makes a call miss it (the replay judges decisions, and a
/// fallback taken for a slow moment would make it depend on the machine). A policy that
/// loops is still stopped.
pub fn engine_settings() -> EngineSettings {
    EngineSettings {
        hook_deadline: std::time::Duration::from_secs(1),
        ..EngineSettings::default()
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Options {
    pub trace: Vec<PathBuf>,
    pub format: Format,
    /// Memory sizes to replay at, in bytes.
    pub memory: Vec<u64>,
    /// Built-in names or `.wasm` paths.
    pub policies: Vec<String>,
    pub models: Option<PathBuf>,
    /// Subgradient rounds of the Lagrangian lower bound.
    pub bound_rounds: usize,
    /// A served request whose first token came within this counts as goodput.
    pub slo: Duration,
}

/// `--slo` unless given.
pub const DEFAULT_SLO: &str = "10s";

/// The offline bounds on the swap cost at one memory size.
#[derive(Debug, Clone, Serialize)]
pub struct Bounds {
    /// Seconds of loading no schedule can avoid (FOO's relaxation).
    pub lower_seconds: f64,
    /// `flow` (exact min-cost flow) or `lagrangian` (its dual, for long traces).
    pub lower_method: String,
    /// The cost-aware Belady schedule's loading seconds: an upper bound on the optimum.
    pub upper_seconds: f64,
    pub upper_loads: usize,
    /// The most memory that schedule held at once (never above the memory).
    pub upper_peak_bytes: u64,
    /// Requests left out of the bounds: their model is larger than the memory.
    pub unservable_requests: usize,
}

/// One policy's replay at one memory size.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyRun {
    pub policy: String,
    #[serde(flatten)]
    pub metrics: Metrics,
    /// Served requests whose first token came within the report's SLO.
    pub goodput: u64,
    /// Its figures over the oracle's at the same memory, when the oracle ran too.
    pub vs_oracle: Option<VsOracle>,
    /// Swap cost ÷ the lower bound.
    pub cost_ratio: f64,
    /// FOO's lower bound on the requests in the order this policy served them (after their
    /// waits). Its schedule is one way to serve that sequence, so this never exceeds its cost,
    /// even when waiting let one load serve requests the trace's bound counts apart.
    pub served_lower_seconds: f64,
}

/// A policy's figures divided by the oracle's (1 where both are 0; `None` where only the
/// oracle's is 0).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct VsOracle {
    pub failed: Option<f64>,
    pub ttft_p99: Option<f64>,
    pub swap_seconds: Option<f64>,
}

impl VsOracle {
    fn of(m: &Metrics, oracle: &Metrics) -> Self {
        let over = |a: f64, b: f64| match (a > 0.0, b > 0.0) {
            (_, true) => Some(a / b),
            (false, false) => Some(1.0),
            (true, false) => None,
        };
        Self {
            failed: over(m.failed as f64, oracle.failed as f64),
            ttft_p99: over(m.ttft_p99_ms as f64, oracle.ttft_p99_ms as f64),
            swap_seconds: over(m.load_seconds, oracle.load_seconds),
        }
    }
}

/// Every policy at one memory size.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub memory_bytes: u64,
    pub bounds: Bounds,
    pub policies: Vec<PolicyRun>,
}

/// The whole simulation.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub trace: String,
    pub format: String,
    pub requests: usize,
    pub models: usize,
    pub span_seconds: f64,
    pub catalogue_bytes: u64,
    /// The time-to-first-token goal goodput counts against.
    pub slo_seconds: f64,
    pub points: Vec<Point>,
}

/// The bounds problem of a trace at `memory`: models as items, load time as cost.
pub fn problem(trace: &Trace, catalogue: &Catalogue, memory: u64) -> (Problem, usize) {
    problem_of(
        trace.arrivals.iter().map(|a| a.model.as_str()),
        catalogue,
        memory,
    )
}

/// The bounds problem of requests for `models`, in that order; also the requests left out
/// because their model is larger than the memory.
fn problem_of<'a>(
    models: impl Iterator<Item = &'a str>,
    catalogue: &Catalogue,
    memory: u64,
) -> (Problem, usize) {
    let ids: Vec<&str> = catalogue.models.keys().map(String::as_str).collect();
    let items = catalogue
        .models
        .values()
        .map(|m| Item {
            size: m.size,
            cost: catalogue.load_time(m).as_secs_f64(),
        })
        .collect::<Vec<_>>();
    let mut left_out = 0;
    let requests = models
        .filter_map(|model| {
            let i = ids.binary_search(&model).ok()?;
            if items[i].size > memory {
                left_out += 1;
                None
            } else {
                Some(i)
            }
        })
        .collect();
    (
        Problem {
            items,
            requests,
            capacity: memory,
        },
        left_out,
    )
}

/// A cost over its lower bound (1 when the bound is 0: nothing had to be paid).
fn ratio(cost: f64, bound: f64) -> f64 {
    if bound > 0.0 { cost / bound } else { 1.0 }
}

/// FOO's lower bound on `p`: the exact flow for short sequences, its Lagrangian dual else.
fn lower_bound(p: &Problem, rounds: usize) -> anyhow::Result<(f64, &'static str)> {
    Ok(if p.requests.len() <= EXACT_FLOW_MAX {
        (bounds::foo_lower_bound(p)?, "flow")
    } else {
        (bounds::foo_lagrangian_bound(p, rounds)?, "lagrangian")
    })
}

/// FOO's lower bound on the swap cost of serving `models` in that order at `memory`.
pub fn served_lower_bound(
    models: &[impl AsRef<str>],
    catalogue: &Catalogue,
    memory: u64,
    rounds: usize,
) -> anyhow::Result<f64> {
    let (p, _) = problem_of(models.iter().map(AsRef::as_ref), catalogue, memory);
    Ok(lower_bound(&p, rounds)?.0)
}

/// The offline bounds of `trace` at `memory`.
pub fn bounds(
    trace: &Trace,
    catalogue: &Catalogue,
    memory: u64,
    rounds: usize,
) -> anyhow::Result<Bounds> {
    let (p, unservable_requests) = problem(trace, catalogue, memory);
    let upper = bounds::belady(&p)?;
    let (lower_seconds, lower_method) = lower_bound(&p, rounds)?;
    Ok(Bounds {
        lower_seconds,
        lower_method: lower_method.into(),
        upper_seconds: upper.cost,
        upper_loads: upper.loads,
        upper_peak_bytes: upper.peak,
        unservable_requests,
    })
}

/// The policies to replay, by name: built-ins, `.wasm` files and the oracle.
pub fn choosers(names: &[String]) -> anyhow::Result<Vec<(String, Chooser)>> {
    let engine = PolicyEngine::new(engine_settings())?;
    let mut policies = Vec::new();
    for name in names {
        if name == oracle::NAME {
            policies.push((name.clone(), Chooser::Oracle));
            continue;
        }
        let policy = engine
            .resolve(name, Path::new("."))
            .map_err(|e| anyhow::anyhow!("policy {name}: {e}"))?;
        if !policy.exports(Hook::ChooseEviction) {
            bail!("policy {name} does not export choose-eviction, which the simulator replays");
        }
        policies.push((name.clone(), Chooser::Policy(Arc::new(policy))));
    }
    Ok(policies)
}

/// Every policy replayed at `memory`, with the bounds (`bound_rounds` of the Lagrangian), its
/// goodput within `slo`, and each divided by the oracle's figures when the oracle is among
/// them.
pub fn point(
    (trace, catalogue): (&Trace, &Catalogue),
    memory: u64,
    policies: &[(String, Chooser)],
    slo: Duration,
    bound_rounds: usize,
) -> anyhow::Result<Point> {
    let bounds = bounds(trace, catalogue, memory, bound_rounds)?;
    let mut runs = Vec::new();
    for (name, chooser) in policies {
        tracing::info!(policy = %name, memory, "replaying");
        let metrics = run::replay_with(trace, catalogue, memory, chooser.clone())
            .with_context(|| format!("replaying with {name}"))?;
        let cost_ratio = ratio(metrics.load_seconds, bounds.lower_seconds);
        let served_lower_seconds =
            served_lower_bound(&metrics.served_order, catalogue, memory, bound_rounds)?;
        runs.push(PolicyRun {
            policy: name.clone(),
            goodput: metrics.goodput(slo),
            vs_oracle: None,
            metrics,
            cost_ratio,
            served_lower_seconds,
        });
    }
    if let Some(o) = runs.iter().find(|r| r.policy == oracle::NAME) {
        let o = o.metrics.clone();
        for r in &mut runs {
            r.vs_oracle = Some(VsOracle::of(&r.metrics, &o));
        }
    }
    Ok(Point {
        memory_bytes: memory,
        bounds,
        policies: runs,
    })
}

/// Runs the whole simulation.
pub fn simulate(opts: &Options) -> anyhow::Result<Report> {
    if opts.policies.is_empty() {
        bail!("name at least one --policy (a built-in such as lru, or a .wasm file)");
    }
    let trace = trace::read(opts.format, &opts.trace)?;
    if trace.arrivals.is_empty() {
        bail!("the trace has no requests");
    }
    let catalogue = Catalogue::build(&trace, opts.models.as_deref())?;
    let policies = choosers(&opts.policies)?;
    let points = opts
        .memory
        .iter()
        .map(|&memory| {
            let replayed = (&trace, &catalogue);
            point(replayed, memory, &policies, opts.slo, opts.bound_rounds)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let first = trace.arrivals.first().map_or(0, |a| a.t_ms);
    let last = trace.arrivals.last().map_or(0, |a| a.t_ms);
    Ok(Report {
        trace: opts
            .trace
            .iter()
            .map(|p| {
                p.file_name()
                    .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
            })
            .collect::<Vec<_>>()
            .join(", "),
        format: format!("{:?}", opts.format),
        requests: trace.arrivals.len(),
        models: catalogue.models.len(),
        span_seconds: (last - first) as f64 / 1000.0,
        catalogue_bytes: catalogue.models.values().map(|m| m.size).sum(),
        slo_seconds: opts.slo.as_secs_f64(),
        points,
    })
}

fn gib(bytes: u64) -> String {
    let g = bytes as f64 / f64::from(1u32 << 30);
    if (g - g.round()).abs() < 0.05 {
        format!("{g:.0} GiB")
    } else {
        format!("{g:.1} GiB")
    }
}

/// Milliseconds as seconds with a unit, e.g. `2.41s`.
fn seconds(ms: u64) -> String {
    format!("{:.2}s", ms as f64 / 1000.0)
}

/// A ratio to the oracle's figure, `-` where the oracle's is 0 and this one's is not.
fn times(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.2}x"))
}

/// `part` of `whole` in percent.
fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// The terminal table: one block per memory size; what users feel first (failed requests,
/// time to first token, goodput within the SLO), then the swap cost.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "trace {}: {} requests over {:.1} h, {} models ({} in all); goodput: first token within {}s",
        r.trace,
        r.requests,
        r.span_seconds / 3600.0,
        r.models,
        gib(r.catalogue_bytes),
        r.slo_seconds
    );
    for p in &r.points {
        let b = &p.bounds;
        let _ = writeln!(
            out,
            "\nmemory {}: swap cost lower bound {:.0} s (FOO, {}), upper bound {:.0} s (cost-aware Belady, {} loads)",
            gib(p.memory_bytes),
            b.lower_seconds,
            b.lower_method,
            b.upper_seconds,
            b.upper_loads
        );
        if b.unservable_requests > 0 {
            let _ = writeln!(
                out,
                "  {} requests are for models larger than the memory",
                b.unservable_requests
            );
        }
        let _ = writeln!(
            out,
            "{:<16} {:>7} {:>9} {:>7} {:>9} {:>9} {:>9} {:>8} {:>7} {:>9} {:>10} {:>7} {:>7} {:>8} {:>7}",
            "policy",
            "failed",
            "timed out",
            "refused",
            "TTFT p50",
            "TTFT p99",
            "TTFT max",
            "goodput",
            "loads",
            "GB loaded",
            "swap s",
            "thrash",
            "cost/LB",
            "hit rate",
            "wall s"
        );
        if p.policies.iter().any(|r| r.vs_oracle.is_some()) {
            out.pop();
            let _ = writeln!(out, " {:>9} {:>9} {:>9}", "÷or fail", "÷or p99", "÷or swap");
        }
        for run in &p.policies {
            let m = &run.metrics;
            let _ = writeln!(
                out,
                "{:<16} {:>7} {:>9} {:>7} {:>9} {:>9} {:>9} {:>7.2}% {:>7} {:>9.1} {:>10.0} {:>7} {:>7.2} {:>7.2}% {:>7.1}",
                run.policy,
                m.failed,
                m.timed_out,
                m.refused,
                seconds(m.ttft_p50_ms),
                seconds(m.ttft_p99_ms),
                seconds(m.ttft_max_ms),
                share(run.goodput, m.requests),
                m.loads,
                m.bytes_loaded as f64 / 1e9,
                m.load_seconds,
                m.thrash,
                run.cost_ratio,
                m.hit_rate() * 100.0,
                m.wall_seconds
            );
            if let Some(v) = run.vs_oracle {
                out.pop();
                let _ = writeln!(
                    out,
                    " {:>9} {:>9} {:>9}",
                    times(v.failed),
                    times(v.ttft_p99),
                    times(v.swap_seconds)
                );
            }
        }
    }
    out
}

/// Parses `80GiB`, or a sweep `40GiB..160GiB` into `steps` evenly spaced sizes.
pub fn memory_sizes(memory: &str, sweep: Option<&str>, steps: usize) -> anyhow::Result<Vec<u64>> {
    let parse = |t: &str| -> anyhow::Result<u64> {
        t.trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|e| anyhow::anyhow!("{t:?} is not a memory size ({e})"))
    };
    let Some(sweep) = sweep else {
        return Ok(vec![parse(memory)?]);
    };
    let Some((a, b)) = sweep.split_once("..") else {
        bail!("--sweep takes FROM..TO, such as 40GiB..160GiB, not {sweep:?}");
    };
    let (a, b) = (parse(a)?, parse(b)?);
    if a == 0 || b < a || steps < 2 {
        bail!("--sweep needs 0 < FROM <= TO and at least 2 steps");
    }
    Ok((0..steps)
        .map(|i| a + ((b - a) as f64 * i as f64 / (steps - 1) as f64) as u64)
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse_one_size_or_a_sweep() {
        assert_eq!(memory_sizes("80GiB", None, 5).unwrap(), vec![80 << 30]);
        assert_eq!(
            memory_sizes("", Some("40GiB..160GiB"), 4).unwrap(),
            vec![40 << 30, 80 << 30, 120 << 30, 160 << 30]
        );
        assert!(memory_sizes("lots", None, 5).is_err());
        assert!(memory_sizes("", Some("40GiB-160GiB"), 5).is_err());
        assert!(memory_sizes("", Some("160GiB..40GiB"), 5).is_err());
    }
}
