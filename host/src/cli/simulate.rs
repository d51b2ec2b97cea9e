//! `modelyard simulate`: replays a trace through the scheduler for each policy and memory size,
//! and prints the report as a table or JSON (with an SVG plot for a sweep).

use std::path::Path;
use std::process::ExitCode;

use crate::sim::{report, suite};

/// Runs the report for `opts` at the memory sizes `memory`, `sweep` and `steps` name.
pub fn simulate(
    mut opts: report::Options,
    (memory, sweep, steps): (&str, Option<&str>, usize),
    json: bool,
    plot: &Path,
) -> anyhow::Result<ExitCode> {
    opts.memory = report::memory_sizes(memory, sweep, steps)?;
    let r = report::simulate(&opts)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", report::table(&r));
    }
    if sweep.is_some() {
        std::fs::write(plot, crate::sim::plot::svg(&r))
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", plot.display()))?;
        eprintln!("plot written to {}", plot.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `simulate --suite`: the matrix, or the whole suite as JSON.
pub fn suite(opts: &suite::SuiteOptions, json: bool) -> anyhow::Result<ExitCode> {
    let s = suite::run(opts)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", suite::matrix(&s));
    }
    Ok(ExitCode::SUCCESS)
}
