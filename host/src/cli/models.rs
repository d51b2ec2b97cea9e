//! `modelyard models`: a running host's models, devices and recent events, as a table or JSON.

use std::path::Path;

use anyhow::Context as _;

use crate::config::Settings;
use crate::scheduler::Status;

/// `modelyard models`: asks a running host for its status and prints it.
pub async fn models(config: &Path, json: bool) -> anyhow::Result<()> {
    let settings = Settings::from_file(config)?;
    let url = format!("http://{}/admin/models", settings.listen);
    let status: Status = reqwest::get(&url)
        .await
        .with_context(|| format!("asking {url}; is `modelyard serve` running?"))?
        .error_for_status()?
        .json()
        .await
        .context("reading the status")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / f64::from(1 << 20))
}

/// The status as a table.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<20} {:<10} {:<6} {:>12} {:>9} {:>7} {:>10} {:>6} {:>6}\n",
        "MODEL", "STATE", "DEVICE", "MEMORY", "IN-FLIGHT", "QUEUED", "IDLE", "USES", "LOADS"
    ));
    for m in &s.models {
        let memory = format!(
            "{}{}",
            mib(m.size_bytes),
            if m.size_measured { "" } else { "*" }
        );
        let idle = m
            .idle_ms
            .map_or_else(|| "-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
        out.push_str(&format!(
            "{:<20} {:<10} {:<6} {:>12} {:>9} {:>7} {:>10} {:>6} {:>6}\n",
            m.id, m.state, m.device, memory, m.in_flight, m.queued, idle, m.use_count, m.load_count
        ));
    }
    out.push_str("(* estimated: not loaded, so not measured)\n\n");
    out.push_str(&format!(
        "{:<6} {:>12} {:>12} {:>12} {:>12}\n",
        "DEVICE", "MODELS", "CAPACITY", "USED", "TOTAL"
    ));
    for d in &s.devices {
        out.push_str(&format!(
            "{:<6} {:>12} {:>12} {:>12} {:>12}\n",
            d.name,
            mib(d.models_bytes),
            mib(d.capacity_bytes),
            mib(d.used_bytes),
            mib(d.total_bytes)
        ));
    }
    let e = &s.eviction;
    out.push_str(&format!(
        "\neviction policy {}: {} decisions, {} evictions, {} fallbacks ({} refused)\n",
        e.policy, e.decisions, e.evictions, e.fallbacks, e.refused
    ));
    for ev in s.events.iter().rev().take(5) {
        out.push_str(&format!(
            "  {:>8.1}s {} {}: {}\n",
            ev.at_ms as f64 / 1000.0,
            ev.model,
            ev.kind,
            ev.detail
        ));
    }
    out
}
