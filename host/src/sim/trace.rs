//! Request traces for the simulator: the Azure Functions 2019 sample (per-minute invocation
//! counts per function), the Azure LLM inference 2023 trace (timestamps with token counts), and
//! a JSON-lines format users write from their own logs.
//!
//! Every reader yields the same [`Trace`]: arrivals sorted by time (milliseconds from the
//! trace's start) and what the trace says about each model.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::recorder::Stage;

/// One request in a trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Arrival {
    /// Milliseconds from the trace's start.
    pub t_ms: u64,
    pub model: String,
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    /// How long serving it took in the original system, when the trace says.
    pub service_ms: Option<u64>,
    /// The request's priority (`x-modelyard-priority`, or its key's).
    pub priority: i32,
    /// The request's task (`x-modelyard-task`).
    pub task: Option<String>,
}

/// What a trace says about one model (for the Azure Functions trace, a function).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelHint {
    /// Memory its app had allocated, on average (Azure Functions: `AverageAllocatedMb`).
    pub memory_mb: Option<u64>,
    /// Mean execution time (Azure Functions: `Average` in the run file).
    pub mean_service_ms: Option<u64>,
}

/// A whole trace: arrivals in time order, and the models they name.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub arrivals: Vec<Arrival>,
    pub models: BTreeMap<String, ModelHint>,
}

/// The formats `simulate --format` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `N_inv.csv` (with `N_mem.csv` and `N_run.csv` beside it, when present).
    AzureFunctions,
    /// One or more `AzureLLMInferenceTrace_*.csv`; the part of the name after the last `_` is
    /// the model (`code`, `conv`).
    AzureLlm,
    /// `{"t_ms": …, "model": …, "prompt_tokens": …, "output_tokens": …}` per line, as users
    /// write them or as `serve` records them (`[trace] record`): requests that never reached
    /// the scheduler (bad input, no model chosen) are left out, and times count from the
    /// first request.
    Jsonl,
}

/// Reads `paths` (one file, or several for `azure-llm`) in `format`.
pub fn read(format: Format, paths: &[PathBuf]) -> anyhow::Result<Trace> {
    read_first(format, paths, None)
}

/// Reads only the requests of the trace's first `span` milliseconds (all with `None`); the
/// Azure Functions reader never builds the rest.
pub fn read_first(format: Format, paths: &[PathBuf], span: Option<u64>) -> anyhow::Result<Trace> {
    read_within(format, paths, span, MAX_ARRIVALS)
}

/// [`read_first`], refusing an Azure Functions trace whose counts ask for more than
/// `max_requests` (the fuzz target keeps its inputs small with it).
pub fn read_within(
    format: Format,
    paths: &[PathBuf],
    span: Option<u64>,
    max_requests: usize,
) -> anyhow::Result<Trace> {
    let minutes = span.map_or(usize::MAX, |ms| {
        usize::try_from(ms.div_ceil(60_000)).unwrap_or(usize::MAX)
    });
    let mut trace = match (format, paths) {
        (_, []) => bail!("no trace file given"),
        (Format::AzureFunctions, [path]) => azure_functions(path, minutes, max_requests)?,
        (Format::AzureLlm, paths) => azure_llm(paths)?,
        (Format::Jsonl, [path]) => jsonl(path)?,
        (_, _) => bail!("this format reads one file"),
    };
    trace.arrivals.sort_by_key(|a| a.t_ms);
    if let (Some(span), Some(first)) = (span, trace.arrivals.first().map(|a| a.t_ms)) {
        trace.arrivals.retain(|a| a.t_ms < first + span);
    }
    for a in &trace.arrivals {
        trace.models.entry(a.model.clone()).or_default();
    }
    Ok(trace)
}

fn csv_reader(path: &Path) -> anyhow::Result<csv::Reader<std::fs::File>> {
    csv::Reader::from_path(path).with_context(|| format!("opening {}", path.display()))
}

/// The model id for a function: its hash, shortened to 12 characters (still unique in the
/// shipped samples).
fn function_id(hash: &str) -> String {
    let short: String = hash.chars().take(12).collect();
    format!("fn-{short}")
}

/// The most calls of one function in one minute a replay takes: more is no count from a real
/// trace (the public one peaks far lower), and each call becomes a request in memory.
const MAX_CALLS_PER_MINUTE: u64 = 1_000_000;
/// The most requests an Azure Functions replay builds (about 13 GB held): counts are the one
/// place a small file can ask for billions (`--span` replays a part). The public
/// 1,000-function sample holds 11.6 million.
const MAX_ARRIVALS: usize = 200_000_000;

/// Each function is a model; its per-minute counts are spread evenly over each minute.
fn azure_functions(inv: &Path, minutes: usize, max_requests: usize) -> anyhow::Result<Trace> {
    let name = inv.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let Some(prefix) = name.strip_suffix("_inv.csv") else {
        bail!(
            "{}: an Azure Functions trace is the N_inv.csv file",
            inv.display()
        );
    };
    let dir = inv.parent().unwrap_or(Path::new("."));

    let mut app_memory: BTreeMap<String, u64> = BTreeMap::new();
    let mem = dir.join(format!("{prefix}_mem.csv"));
    if mem.is_file() {
        let mut r = csv_reader(&mem)?;
        let headers = r.headers()?.clone();
        let col = |name: &str| headers.iter().position(|h| h == name);
        let (Some(app), Some(avg)) = (col("HashApp"), col("AverageAllocatedMb")) else {
            bail!("{}: no HashApp or AverageAllocatedMb column", mem.display());
        };
        for (i, row) in r.records().enumerate() {
            let row = row.with_context(|| format!("{} row {}", mem.display(), i + 2))?;
            if let (Some(a), Some(mb)) = (row.get(app), row.get(avg).and_then(number)) {
                app_memory.insert(a.to_string(), mb);
            }
        }
    }
    let mut durations: BTreeMap<String, u64> = BTreeMap::new();
    let run = dir.join(format!("{prefix}_run.csv"));
    if run.is_file() {
        let mut r = csv_reader(&run)?;
        let headers = r.headers()?.clone();
        let col = |name: &str| headers.iter().position(|h| h == name);
        let (Some(function), Some(avg)) = (col("HashFunction"), col("Average")) else {
            bail!("{}: no HashFunction or Average column", run.display());
        };
        for (i, row) in r.records().enumerate() {
            let row = row.with_context(|| format!("{} row {}", run.display(), i + 2))?;
            if let (Some(f), Some(ms)) = (row.get(function), row.get(avg).and_then(number)) {
                durations.insert(f.to_string(), ms);
            }
        }
    }

    let mut trace = Trace::default();
    let mut r = csv_reader(inv)?;
    let headers = r.headers()?.clone();
    let first_minute = headers
        .iter()
        .position(|h| h == "minute_1")
        .with_context(|| format!("{}: no minute_1 column", inv.display()))?;
    for (i, row) in r.records().enumerate() {
        let row = row.with_context(|| format!("{} row {}", inv.display(), i + 2))?;
        let (Some(function), Some(app)) = (row.get(0), row.get(1)) else {
            bail!("{} row {}: too few columns", inv.display(), i + 2);
        };
        let id = function_id(function);
        let service_ms = durations.get(function).copied();
        trace.models.insert(
            id.clone(),
            ModelHint {
                memory_mb: app_memory.get(app).copied(),
                mean_service_ms: service_ms,
            },
        );
        for (minute, count) in row.iter().skip(first_minute).take(minutes).enumerate() {
            let count = number(count)
                .filter(|&n| n <= MAX_CALLS_PER_MINUTE)
                .with_context(|| {
                    format!(
                        "{} row {}: minute_{} is not a count (at most {MAX_CALLS_PER_MINUTE})",
                        inv.display(),
                        i + 2,
                        minute + 1
                    )
                })?;
            if trace.arrivals.len() + count as usize > max_requests {
                bail!(
                    "{}: more than {max_requests} requests; replay a part with --span",
                    inv.display()
                );
            }
            for k in 0..count {
                // Evenly spread: the k-th of `count` calls sits at the middle of its share.
                let offset = (2 * k + 1) * 30_000 / count;
                trace.arrivals.push(Arrival {
                    t_ms: minute as u64 * 60_000 + offset,
                    model: id.clone(),
                    prompt_tokens: 0,
                    output_tokens: 0,
                    service_ms,
                    ..Default::default()
                });
            }
        }
    }
    Ok(trace)
}

/// A non-negative whole number, allowing a decimal point (`81067.0`).
fn number(text: &str) -> Option<u64> {
    let text = text.trim();
    text.parse::<u64>().ok().or_else(|| {
        text.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| v.round() as u64)
    })
}

/// Milliseconds since the Unix epoch of `2023-11-16 18:17:03.9799600`.
fn timestamp_ms(text: &str) -> Option<u64> {
    let (date, time) = text.trim().split_once(' ')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, min, sec) = (
        t.next()?.parse::<u64>().ok()?,
        t.next()?.parse::<u64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    // A clock's fields in their ranges (a leap second allowed), and a date in one a calendar
    // has: anything else is no timestamp, and would overflow the sums below.
    if h > 23 || min > 59 || !(0.0..61.0).contains(&sec) {
        return None;
    }
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || !(0..=9999).contains(&y) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(days * 86_400_000 + (h * 3600 + min * 60) * 1000 + (sec * 1000.0).round() as u64)
}

/// Each file is one model (named after its suffix); times are from the earliest request.
fn azure_llm(paths: &[PathBuf]) -> anyhow::Result<Trace> {
    let mut raw: Vec<(u64, Arrival)> = Vec::new();
    for path in paths {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
        let model = stem.rsplit('_').next().unwrap_or(stem).to_string();
        let mut r = csv_reader(path)?;
        for (i, row) in r.records().enumerate() {
            let at = || format!("{} row {}", path.display(), i + 2);
            let row = row.with_context(at)?;
            let (Some(ts), Some(context), Some(generated)) = (row.get(0), row.get(1), row.get(2))
            else {
                bail!("{}: want TIMESTAMP,ContextTokens,GeneratedTokens", at());
            };
            let t = timestamp_ms(ts).with_context(|| format!("{}: bad TIMESTAMP {ts:?}", at()))?;
            let tokens = |v: &str| -> anyhow::Result<u32> {
                v.trim()
                    .parse()
                    .with_context(|| format!("{}: {v:?} is not a token count", at()))
            };
            raw.push((
                t,
                Arrival {
                    t_ms: 0,
                    model: model.clone(),
                    prompt_tokens: tokens(context)?,
                    output_tokens: tokens(generated)?,
                    service_ms: None,
                    ..Default::default()
                },
            ));
        }
    }
    let start = raw.iter().map(|(t, _)| *t).min().unwrap_or(0);
    Ok(Trace {
        arrivals: raw
            .into_iter()
            .map(|(t, a)| Arrival {
                t_ms: t - start,
                ..a
            })
            .collect(),
        models: BTreeMap::new(),
    })
}

/// A line of a JSON-lines trace: an [`Arrival`], whose model a recorded request no model was
/// chosen for lacks, and the stage a recorded request ended in (see
/// [`crate::recorder::Record`]).
#[derive(Deserialize)]
struct Line {
    t_ms: u64,
    model: Option<String>,
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    output_tokens: Option<u32>,
    #[serde(default)]
    service_ms: Option<u64>,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    task: Option<String>,
    #[serde(default)]
    stage: Option<Stage>,
}

fn jsonl(path: &Path) -> anyhow::Result<Trace> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut trace = Trace::default();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let a: Line = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}", path.display(), i + 1))?;
        let stage = a.stage;
        let Some(model) = a.model else {
            if stage.is_none() {
                bail!("{} line {}: no `model`", path.display(), i + 1);
            }
            continue;
        };
        if stage.is_some_and(|s| !s.reached_scheduler()) {
            continue;
        }
        trace.arrivals.push(Arrival {
            t_ms: a.t_ms,
            model,
            prompt_tokens: a.prompt_tokens,
            output_tokens: a.output_tokens.unwrap_or(0),
            service_ms: a.service_ms,
            priority: a.priority,
            task: a.task,
        });
    }
    // A recording's times are wall-clock milliseconds: the replay starts at its first request.
    if let Some(first) = trace.arrivals.iter().map(|a| a.t_ms).min() {
        for a in &mut trace.arrivals {
            a.t_ms -= first;
        }
    }
    Ok(trace)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_count_days_and_fractions() {
        let a = timestamp_ms("2023-11-16 18:17:03.9799600").unwrap();
        let b = timestamp_ms("2023-11-17 18:17:04.0319600").unwrap();
        assert_eq!(b - a, 86_400_000 + 52);
        assert_eq!(timestamp_ms("1970-01-01 00:00:01.5"), Some(1500));
        assert_eq!(
            timestamp_ms("2024-03-01 00:00:00").unwrap()
                - timestamp_ms("2024-02-28 00:00:00").unwrap(),
            2 * 86_400_000
        );
        assert_eq!(timestamp_ms("yesterday"), None);
    }

    /// Regression (found by the trace fuzz target in its tenth minute): a minute of
    /// 1999999999999999999 overflowed the sum (a panic with overflow checks, a wrong time
    /// without). Fields outside a clock's or a calendar's ranges are no timestamp.
    #[test]
    fn timestamps_out_of_range_are_refused_not_overflowed() {
        for text in [
            "2023-11-16 18:1999999999999999999:7:0",
            "2023-11-16 24:00:00",
            "2023-11-16 18:60:00",
            "2023-11-16 18:17:61",
            "2023-11-16 18:17:-1",
            "2023-13-16 18:17:03",
            "2023-11-32 18:17:03",
            "99999999999-11-16 18:17:03",
        ] {
            assert_eq!(timestamp_ms(text), None, "{text}");
        }
        assert!(
            timestamp_ms("2023-11-16 23:59:60.5").is_some(),
            "a leap second"
        );
    }

    #[test]
    fn numbers_take_decimals_and_refuse_negatives() {
        assert_eq!(number("81067.0"), Some(81067));
        assert_eq!(number(" 12 "), Some(12));
        assert_eq!(number("-1"), None);
        assert_eq!(number("x"), None);
    }
}
