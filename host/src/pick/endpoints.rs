//! The endpoints file: the modelyard hosts a picker chooses among, in the format of llm-d's
//! file discovery (`docs/discovery.md` of `llm-d/llm-d-router`, plugin `file-discovery`), so
//! that one file serves both the EPP and `modelyard pick`:
//!
//! ```yaml
//! endpoints:
//!   - name: modelyard-a        # required, unique within its namespace
//!     namespace: local         # optional, "default"
//!     address: "10.0.0.1"      # required, an IPv4 literal
//!     port: "8000"             # required, 1 to 65535, as a string
//!     labels: { zone: a }      # optional
//! ```
//!
//! YAML or JSON (JSON is YAML). The rules are the EPP's: an IPv4 address, a port in range, at
//! most [`MAX_FILE_BYTES`]; a name repeated in one namespace keeps its last entry. Every
//! problem is reported with the entry it is in.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use yaml_rust2::{Yaml, YamlLoader};

/// The largest endpoints file read (the EPP's bound).
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// The namespace of an entry that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// One modelyard host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub namespace: String,
    pub addr: SocketAddrV4,
    pub labels: BTreeMap<String, String>,
}

impl Endpoint {
    /// Its root URL, `http://ADDRESS:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Reads an endpoints file's text; `Err` lists every problem found.
pub fn parse(text: &str) -> Result<Vec<Endpoint>, Vec<String>> {
    if text.len() > MAX_FILE_BYTES {
        return Err(vec![format!(
            "the file has {} bytes; at most {MAX_FILE_BYTES} are read",
            text.len()
        )]);
    }
    let docs = YamlLoader::load_from_str(text).map_err(|e| vec![format!("not YAML: {e}")])?;
    let Some(list) = docs.first().map(|d| &d["endpoints"]) else {
        return Err(vec!["the file is empty; it needs `endpoints:`".into()]);
    };
    let Yaml::Array(entries) = list else {
        return Err(vec!["`endpoints` must be a list".into()]);
    };
    let mut problems = Vec::new();
    let mut found: Vec<Endpoint> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        match entry(e) {
            Ok(ep) => {
                // A name repeated in one namespace: the last entry wins, as in the EPP.
                found.retain(|f| (&f.namespace, &f.name) != (&ep.namespace, &ep.name));
                found.push(ep);
            }
            Err(why) => problems.extend(why.into_iter().map(|w| format!("endpoints[{i}]: {w}"))),
        }
    }
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(problems)
    }
}

fn entry(e: &Yaml) -> Result<Endpoint, Vec<String>> {
    let mut problems = Vec::new();
    let text = |key: &str| match &e[key] {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Integer(n) => Some(n.to_string()),
        _ => None,
    };
    let name = text("name").filter(|n| !n.is_empty());
    if name.is_none() {
        problems.push("`name` is required".to_string());
    }
    let address = match text("address") {
        None => {
            problems.push("`address` is required".to_string());
            None
        }
        Some(a) => a.parse::<Ipv4Addr>().ok().or_else(|| {
            problems.push(format!("`address` {a:?} is not an IPv4 address"));
            None
        }),
    };
    let port = match text("port") {
        None => {
            problems.push("`port` is required".to_string());
            None
        }
        Some(p) => p.parse::<u16>().ok().filter(|&p| p > 0).or_else(|| {
            problems.push(format!("`port` {p:?} is not a port (1 to 65535)"));
            None
        }),
    };
    let labels = match &e["labels"] {
        Yaml::BadValue | Yaml::Null => BTreeMap::new(),
        Yaml::Hash(h) => h
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), scalar(v)?)))
            .collect(),
        _ => {
            problems.push("`labels` must be a map".to_string());
            BTreeMap::new()
        }
    };
    match (name, address, port) {
        (Some(name), Some(ip), Some(port)) if problems.is_empty() => Ok(Endpoint {
            name,
            namespace: text("namespace").unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
            addr: SocketAddrV4::new(ip, port),
            labels,
        }),
        _ => Err(problems),
    }
}

fn scalar(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(n) => Some(n.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_llm_d_example_reads() {
        let eps = parse(
            "endpoints:\n  - name: vllm-0\n    address: \"10.0.0.1\"\n    port: \"8000\"\n    labels:\n      model: llama-3-8b\n  - name: vllm-1\n    namespace: inference\n    address: \"10.0.0.2\"\n    port: 8001\n",
        )
        .expect("valid");
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].url(), "http://10.0.0.1:8000");
        assert_eq!(eps[0].namespace, DEFAULT_NAMESPACE);
        assert_eq!(eps[0].labels["model"], "llama-3-8b");
        assert_eq!(
            (eps[1].namespace.as_str(), eps[1].addr.port()),
            ("inference", 8001)
        );
    }

    #[test]
    fn json_reads_too_and_a_repeated_name_keeps_its_last_entry() {
        let eps = parse(
            r#"{"endpoints": [{"name": "a", "address": "127.0.0.1", "port": "1"},
                              {"name": "a", "address": "127.0.0.2", "port": "2"}]}"#,
        )
        .expect("valid");
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].url(), "http://127.0.0.2:2");
    }

    #[test]
    fn every_bad_entry_is_reported_with_its_place() {
        let problems = parse(
            "endpoints:\n  - name: ok\n    address: \"10.0.0.1\"\n    port: \"80\"\n  - address: \"::1\"\n    port: \"0\"\n  - name: b\n    address: \"10.0.0.3\"\n",
        )
        .expect_err("invalid");
        assert_eq!(
            problems,
            [
                "endpoints[1]: `name` is required",
                "endpoints[1]: `address` \"::1\" is not an IPv4 address",
                "endpoints[1]: `port` \"0\" is not a port (1 to 65535)",
                "endpoints[2]: `port` is required",
            ]
        );
    }

    #[test]
    fn the_size_bound_holds() {
        let entry = "  - name: a\n    address: \"10.0.0.1\"\n    port: \"80\"\n";
        let within = format!("endpoints:\n{entry}");
        assert!(parse(&within).is_ok());
        let over = format!("{within}#{}\n", "x".repeat(MAX_FILE_BYTES));
        assert!(parse(&over).expect_err("too big")[0].contains("at most"));
    }

    #[test]
    fn a_file_without_a_list_is_refused() {
        assert!(parse("").is_err());
        assert!(parse("endpoints: 3\n").is_err());
        assert!(parse("endpoints: [\n").is_err());
    }
}
