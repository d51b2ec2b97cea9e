//! `modelyard import llama-swap FILE`: writes the `modelyard.toml` equivalent of a llama-swap
//! YAML config. Macros are expanded (`${env.X}` from the environment at import), each model's
//! keys map to ours where the meaning carries (see [`MODEL_KEYS`]), and everything that does
//! not carry is returned as a [`Warning`] naming its YAML path, written at the top of the file
//! too: nothing is dropped silently.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use yaml_rust2::{Yaml, YamlLoader};

use crate::config::Settings;

/// Something of the YAML that the TOML does not say, with where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The YAML path, e.g. `models.qwen.cmdStop`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The imported config: its TOML text and what did not carry over.
#[derive(Debug)]
pub struct Imported {
    pub toml: String,
    pub warnings: Vec<Warning>,
}

/// llama-swap's model keys and what becomes of each: `Some(key)` where ours says the same
/// (possibly converted), `None` where nothing does (a warning says why).
pub const MODEL_KEYS: [(&str, Option<&str>); 20] = [
    ("cmd", Some("cmd")),
    ("proxy", None),
    ("checkEndpoint", Some("health")),
    ("ttl", Some("ttl")),
    ("aliases", Some("aliases")),
    ("useModelName", Some("use_model_name")),
    ("env", Some("env")),
    ("concurrencyLimit", Some("parallel")),
    ("unloadTimeout", Some("stop_timeout")),
    ("capabilities", Some("capabilities")),
    ("compat", None),
    ("macros", None),
    ("cmdStop", None),
    ("unlisted", None),
    ("name", None),
    ("description", None),
    ("filters", None),
    ("metadata", None),
    ("sendLoadingState", None),
    ("timeouts", None),
];

/// llama-swap's floor for `healthCheckTimeout`, in seconds.
const MIN_HEALTH_TIMEOUT: i64 = 15;
/// llama-swap's default `healthCheckTimeout`, which is ours too (`start_timeout`).
const DEFAULT_HEALTH_TIMEOUT: i64 = 120;

/// Why an import failed outright.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("not YAML: {0}")]
    Yaml(String),
    #[error("the file is not a llama-swap config: {0}")]
    Shape(String),
    #[error("environment variables the config needs are not set: {}", .0.join(", "))]
    Env(Vec<String>),
}

/// `modelyard import llama-swap FILE --output OUT`: writes the config, prints what did not
/// carry over, then checks the written config as `serve` would (a problem there, such as a
/// model file that is not on this machine, fails the command after writing).
pub fn run(file: &Path, output: &Path, force: bool) -> anyhow::Result<ExitCode> {
    let yaml =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let imported = llama_swap(&yaml, &|v| std::env::var(v).ok())
        .with_context(|| format!("importing {}", file.display()))?;
    if output.exists() && !force {
        anyhow::bail!("{} exists; pass --force to overwrite it", output.display());
    }
    std::fs::write(output, &imported.toml)
        .with_context(|| format!("writing {}", output.display()))?;
    for w in &imported.warnings {
        eprintln!("not carried over: {w}");
    }
    eprintln!(
        "wrote {} ({} not carried over, listed at its top)",
        output.display(),
        imported.warnings.len()
    );
    Ok(check_written(output))
}

/// Checks a written config as `serve` would and says so: success when it holds a model.
pub(super) fn check_written(output: &Path) -> ExitCode {
    match Settings::from_file(output) {
        Ok(s) if s.models.is_empty() => {
            eprintln!("but it holds no model");
            ExitCode::FAILURE
        }
        Ok(s) => {
            eprintln!(
                "it checks: {} models; serve it with `modelyard serve --config {}`",
                s.models.len(),
                output.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "but it does not check yet; fix these in {}:\n{e}",
                output.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// Imports llama-swap's YAML; `env` looks up `${env.X}`.
pub fn llama_swap(
    yaml: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Imported, ImportError> {
    let docs = YamlLoader::load_from_str(yaml).map_err(|e| ImportError::Yaml(e.to_string()))?;
    let root = docs.into_iter().next().unwrap_or(Yaml::Null);
    let Yaml::Hash(root) = root else {
        return Err(ImportError::Shape("its top level is not a mapping".into()));
    };
    let mut im = Importer {
        env,
        warnings: Vec::new(),
        missing_env: Vec::new(),
        macros: BTreeMap::new(),
        models: toml::Table::new(),
    };
    let get = |k: &str| root.get(&Yaml::String(k.into()));
    let Some(Yaml::Hash(models)) = get("models") else {
        return Err(ImportError::Shape("it has no `models` mapping".into()));
    };
    if let Some(Yaml::Hash(macros)) = get("macros") {
        im.macros = im.define(&BTreeMap::new(), macros, "macros");
    }
    let health_timeout = match get("healthCheckTimeout") {
        Some(Yaml::Integer(s)) => Some((*s).max(MIN_HEALTH_TIMEOUT)),
        _ => None,
    };
    let global_ttl = match get("globalTTL") {
        Some(Yaml::Integer(s)) if *s > 0 => Some(*s),
        _ => None,
    };
    let unload_timeout = match get("unloadTimeout") {
        Some(Yaml::Integer(s)) if *s > 0 => Some(*s),
        _ => None,
    };
    for (k, v) in models {
        let id = scalar(k);
        im.model(&id, v, global_ttl, health_timeout, unload_timeout);
    }
    let mut out = toml::Table::new();
    for (k, v) in &root {
        let key = scalar(k);
        match key.as_str() {
            "models" | "macros" | "healthCheckTimeout" | "globalTTL" => {}
            "apiKeys" => {
                if let Some(auth) = im.api_keys(v) {
                    out.insert("auth".into(), auth.into());
                }
            }
            "groups" => im.groups(v, "groups"),
            "matrix" => im.matrix(v, "matrix"),
            "routing" => im.routing(v),
            "unloadTimeout" => {}
            "ui" | "performance" => im.warn(
                &key,
                "not carried: modelyard's own dashboard and /metrics need no settings",
            ),
            "upstream" => im.warn(
                &key,
                "not carried: /upstream/{model}/... passes every path through",
            ),
            "profiles" | "selectors" => im.warn(
                &key,
                "not carried: a select-model policy (e.g. `specialization` with tags) routes requests",
            ),
            "hooks" => im.hooks(v),
            "peers" => im.peers(v),
            "startPort" => im.warn(&key, "modelyard picks a free port for each server itself"),
            "logLevel" | "logTimeFormat" | "logToStdout" => im.warn(
                &key,
                "logging is set with RUST_LOG (e.g. RUST_LOG=info) and goes to stderr",
            ),
            "metricsMaxInMemory" | "captureBuffer" => im.warn(
                &key,
                "not carried: modelyard keeps no request captures; see /metrics and [trace]",
            ),
            "sendLoadingState" => im.warn(
                &key,
                "not carried: modelyard does not stream loading messages into the reasoning field",
            ),
            "includeAliasesInList" => im.warn(
                &key,
                "not carried: /v1/models lists each model once, its aliases alongside",
            ),
            _ => im.warn(&key, "unknown llama-swap key, not carried"),
        }
    }
    if !im.missing_env.is_empty() {
        im.missing_env.sort();
        im.missing_env.dedup();
        return Err(ImportError::Env(im.missing_env));
    }
    out.insert("models".into(), im.models.into());
    let mut text =
        String::from("# Imported from a llama-swap config by `modelyard import llama-swap`.\n");
    if im.warnings.is_empty() {
        text.push_str("# Everything carried over.\n");
    } else {
        text.push_str("# Not carried over (each with its YAML path):\n");
        for w in &im.warnings {
            text.push_str(&format!("# - {w}\n"));
        }
    }
    text.push('\n');
    text.push_str(&toml::to_string(&out).unwrap_or_default());
    Ok(Imported {
        toml: text,
        warnings: im.warnings,
    })
}

struct Importer<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    warnings: Vec<Warning>,
    missing_env: Vec<String>,
    /// The global macros, expanded.
    macros: BTreeMap<String, String>,
    models: toml::Table,
}

impl Importer<'_> {
    fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(Warning {
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Macros defined in order over `outer`, each expanded with those before it.
    fn define(
        &mut self,
        outer: &BTreeMap<String, String>,
        macros: &yaml_rust2::yaml::Hash,
        path: &str,
    ) -> BTreeMap<String, String> {
        let mut out = outer.clone();
        for (k, v) in macros {
            let name = scalar(k);
            if name == "PORT" || name == "MODEL_ID" {
                self.warn(
                    &format!("{path}.{name}"),
                    "a reserved name; ignored as llama-swap does",
                );
                continue;
            }
            let value = self.expand(&scalar(v), &out, &format!("{path}.{name}"));
            out.insert(name, value);
        }
        out
    }

    /// `${env.X}` first, then the macros; `${PORT}` stays (it is ours too) and `${MODEL_ID}`
    /// becomes our `${MODEL}`. An unknown macro is left as written, with a warning.
    fn expand(&mut self, text: &str, macros: &BTreeMap<String, String>, path: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let Some(len) = rest[start..].find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let name = &rest[start + 2..start + len];
            match name.strip_prefix("env.") {
                Some(var) => match (self.env)(var) {
                    Some(v) => out.push_str(&v),
                    None => self.missing_env.push(format!("{var} (at {path})")),
                },
                None => match macros.get(name) {
                    Some(v) => out.push_str(v),
                    None if name == "PORT" => out.push_str("${PORT}"),
                    None if name == "MODEL_ID" => out.push_str("${MODEL}"),
                    None => {
                        self.warn(path, format!("unknown macro ${{{name}}} left as written"));
                        out.push_str(&rest[start..start + len + 1]);
                    }
                },
            }
            rest = &rest[start + len + 1..];
        }
        out.push_str(rest);
        out
    }
}

fn as_list(v: &Yaml) -> Vec<Yaml> {
    match v {
        Yaml::Array(a) => a.clone(),
        Yaml::Null | Yaml::BadValue => Vec::new(),
        other => vec![other.clone()],
    }
}

/// A scalar as text (a number or a bool as written).
fn scalar(v: &Yaml) -> String {
    match v {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        _ => String::new(),
    }
}

mod model;
pub mod ollama;
mod routing;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
