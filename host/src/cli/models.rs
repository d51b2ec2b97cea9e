//! `modelyard models`: a running host's models, devices and recent events, as a table or JSON.

use std::path::Path;

use anyhow::Context as _;

use crate::config::Settings;
use crate::scheduler::Status;

/// How `modelyard models` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Table,
    Json,
    /// A model catalogue for `simulate --models`.
    Catalogue,
}

/// `modelyard models`: asks a running host for its status and prints it.
pub async fn models(config: &Path, view: View) -> anyhow::Result<()> {
    let settings = Settings::from_file(config)?;
    let url = format!("http://{}/admin/models", settings.listen);
    let status: Status = reqwest::get(&url)
        .await
        .with_context(|| format!("asking {url}; is `modelyard serve` running?"))?
        .error_for_status()?
        .json()
        .await
        .context("reading the status")?;
    match view {
        View::Table => print!("{}", render(&status)),
        View::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        View::Catalogue => print!("{}", catalogue(&status)),
    }
    Ok(())
}

/// The host's models as a simulation catalogue (`simulate --models`), so that a recorded
/// trace replays on the models that served it: each one's size (measured where it has been
/// loaded), its mean load time as its start-up (loading is timed whole, so the catalogue's
/// bandwidth is set so high that size adds nothing), its places, pin, priority and tags.
pub fn catalogue(s: &Status) -> String {
    let mut out = String::from(
        "# Written by `modelyard models --catalogue` from a running host: replay its recorded\n\
         # traffic with `modelyard simulate --format jsonl --trace trace.jsonl --models <this>`.\n\
         [defaults]\nbandwidth = \"1000TB\"\n",
    );
    for m in &s.models {
        out.push_str(&format!(
            "\n[models.{}]\nsize = \"{}\"{}\nparallel = {}\npinned = {}\npriority = {}\ntags = {}\n",
            toml_key(&m.id),
            m.size_bytes,
            if m.size_measured {
                String::new()
            } else {
                format!("  # estimated ({}): never loaded", m.size_source)
            },
            m.parallel.max(1),
            m.pinned,
            m.priority,
            serde_json::to_string(&m.tags).unwrap_or_else(|_| "[]".into()),
        ));
        if m.load_count > 0 {
            out.push_str(&format!("startup = \"{}ms\"\n", m.mean_load_ms));
        }
    }
    out
}

/// `id` as a TOML key: bare when it can be, quoted otherwise.
fn toml_key(id: &str) -> String {
    if !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        id.to_string()
    } else {
        serde_json::to_string(id).unwrap_or_default()
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / f64::from(1 << 20))
}

/// The status as a table.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<20} {:<10} {:<6} {:>10} {:<18} {:>9} {:>7} {:>10} {:>6} {:>6}  {}\n",
        "MODEL",
        "STATE",
        "DEVICE",
        "MEMORY",
        "FROM",
        "IN-FLIGHT",
        "QUEUED",
        "IDLE",
        "USES",
        "LOADS",
        "SOURCE"
    ));
    for m in &s.models {
        let idle = m
            .idle_ms
            .map_or_else(|| "-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
        out.push_str(&format!(
            "{:<20} {:<10} {:<6} {:>10} {:<18} {:>9} {:>7} {:>10} {:>6} {:>6}  {}\n",
            m.id,
            m.state,
            m.device,
            mib(m.size_bytes),
            m.size_source,
            m.in_flight,
            m.queued,
            idle,
            m.use_count,
            m.load_count,
            m.source
        ));
    }
    out.push('\n');
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
    if !s.events.is_empty() {
        out.push_str("latest events, newest first (seconds since the host started):\n");
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sim::catalogue::Catalogue;
    use crate::sim::trace::{Arrival, Trace};

    #[test]
    fn the_catalogue_reads_back_as_the_host_measured_it() {
        let model = |id: &str, loads: u32| -> crate::scheduler::ModelStatus {
            serde_json::from_value(serde_json::json!({
                "id": id, "aliases": [], "state": "unloaded", "backend": "command",
                "device": "cpu", "size_bytes": 209_715_200u64, "size_measured": loads > 0,
                "parallel": 2, "tags": ["chat"], "ram_bytes": 0, "vram_bytes": 0, "pids": [],
                "endpoint": null, "pinned": id == "b.v2", "priority": 3, "ttl_secs": null,
                "in_flight": 0, "queued": 0, "idle_ms": null, "use_count": 1,
                "load_count": loads, "evictions": 0, "errors": 0, "mean_load_ms": 640,
                "mean_latency_ms": 0, "last_error": null
            }))
            .unwrap()
        };
        let status = Status {
            uptime_ms: 0,
            models: vec![model("a", 2), model("b.v2", 0)],
            devices: Vec::new(),
            eviction: Default::default(),
            events: Vec::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("models.toml");
        std::fs::write(&path, catalogue(&status)).unwrap();
        let mut trace = Trace::default();
        for id in ["a", "b.v2"] {
            trace.arrivals.push(Arrival {
                model: id.into(),
                ..Default::default()
            });
            trace.models.insert(id.into(), Default::default());
        }
        let c = Catalogue::build(&trace, Some(&path)).unwrap();
        let (a, b) = (&c.models["a"], &c.models["b.v2"]);
        assert_eq!((a.size, a.parallel, a.priority), (209_715_200, 2, 3));
        assert_eq!(a.tags, ["chat"]);
        assert_eq!(
            c.load_time(a).as_millis(),
            640,
            "the mean load time, size adding nothing"
        );
        assert!(b.pinned && !a.pinned);
        assert_eq!(
            b.startup, c.defaults.startup,
            "never loaded: the default start-up"
        );
    }
}
