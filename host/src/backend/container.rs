//! The memory of a model server that runs in a container (`footprint = "container:NAME"`): the
//! host's own process tree holds only the runtime's client, so the container's use is read from
//! its runtime, `podman stats --no-stream --format json NAME` (a JSON array of objects with
//! `mem_usage`) or `docker stats --no-stream --format '{{json .}}' NAME` (one JSON object a
//! line, with `MemUsage`). Both give the usage as text, "1.5MiB / 7.7GiB": the part before the
//! slash is what counts.

use std::process::Command;

use serde_json::Value;

/// `podman` if it is on PATH, else `docker` (the name is kept for the message when neither is).
pub fn installed_runtime() -> String {
    let on_path = |p: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()))
    };
    if on_path("podman") || !on_path("docker") {
        "podman".into()
    } else {
        "docker".into()
    }
}

/// The bytes container `name` uses, as `runtime` reports them now.
pub fn memory(runtime: &str, name: &str) -> Result<u64, String> {
    let mut cmd = Command::new(runtime);
    cmd.args(["stats", "--no-stream", "--format"]);
    if runtime == "docker" {
        cmd.arg("{{json .}}");
    } else {
        cmd.arg("json");
    }
    let out = cmd
        .arg(name)
        .output()
        .map_err(|e| format!("running `{runtime} stats`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{runtime} stats {name}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_stats(&String::from_utf8_lossy(&out.stdout), name)
}

/// The memory of container `name` in either runtime's stats output.
pub fn parse_stats(text: &str, name: &str) -> Result<u64, String> {
    let text = text.trim();
    let rows: Vec<Value> = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(rows)) => rows,
        Ok(row @ Value::Object(_)) => vec![row],
        _ => text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
    };
    let field = |row: &Value, keys: &[&str]| {
        keys.iter()
            .find_map(|k| row[*k].as_str().map(str::to_string))
    };
    let row = rows
        .iter()
        .find(|r| field(r, &["name", "Name"]).is_some_and(|n| n.trim_start_matches('/') == name))
        .or_else(|| rows.first().filter(|_| rows.len() == 1))
        .ok_or_else(|| format!("the stats name no container {name}"))?;
    let usage = field(row, &["mem_usage", "MemUsage"])
        .ok_or_else(|| format!("the stats of {name} have no memory usage: {row}"))?;
    let used = usage.split('/').next().unwrap_or_default();
    size(used).ok_or_else(|| format!("{used:?} is not a size"))
}

/// "1.5MiB", "120.3MB", "2GB", "512kB", "0B" as bytes.
fn size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((number * scale).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `podman stats --no-stream --format json` (podman 5), as it prints it.
    const PODMAN: &str = r#"[
 {
  "id": "9b3c1e7f2a44",
  "name": "qwen",
  "cpu_time": "1m2.3s",
  "cpu_percent": "12.50%",
  "avg_cpu": "3.10%",
  "mem_usage": "1.234GB / 33.6GB",
  "mem_percent": "3.67%",
  "net_io": "1.2kB / 3.4kB",
  "block_io": "0B / 0B",
  "pids": "17"
 }
]"#;

    /// `docker stats --no-stream --format '{{json .}}'`, one object a line.
    const DOCKER: &str = concat!(
        r#"{"BlockIO":"0B / 0B","CPUPerc":"0.02%","Container":"a1b2","ID":"a1b2","MemPerc":"1.02%","MemUsage":"78.5MiB / 7.66GiB","Name":"other","NetIO":"1kB / 0B","PIDs":"3"}"#,
        "\n",
        r#"{"BlockIO":"0B / 0B","CPUPerc":"0.10%","Container":"c3d4","ID":"c3d4","MemPerc":"5.02%","MemUsage":"393.2MiB / 7.66GiB","Name":"qwen","NetIO":"1kB / 0B","PIDs":"9"}"#,
        "\n"
    );

    #[test]
    fn podman_and_docker_stats_give_the_containers_memory() {
        assert_eq!(parse_stats(PODMAN, "qwen"), Ok(1_234_000_000));
        assert_eq!(
            parse_stats(DOCKER, "qwen"),
            Ok((393.2f64 * 1024.0 * 1024.0).round() as u64)
        );
        assert!(parse_stats(DOCKER, "missing").is_err_and(|e| e.contains("no container missing")));
        assert!(parse_stats("Error: no such container", "qwen").is_err());
    }

    #[test]
    fn sizes_in_both_unit_families() {
        assert_eq!(size("0B"), Some(0));
        assert_eq!(size("512kB"), Some(512_000));
        assert_eq!(size("1.5MiB"), Some(1_572_864));
        assert_eq!(size(" 2GB "), Some(2_000_000_000));
        assert_eq!(size("3 parsecs"), None);
    }
}
