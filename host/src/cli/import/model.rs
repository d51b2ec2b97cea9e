//! llama-swap's model keys, one model at a time, and what its command line tells.

use std::path::Path;

use yaml_rust2::Yaml;

use super::{DEFAULT_HEALTH_TIMEOUT, Importer, as_list, scalar};

impl Importer<'_> {
    pub(super) fn model(
        &mut self,
        id: &str,
        v: &Yaml,
        global_ttl: Option<i64>,
        health: Option<i64>,
        unload_timeout: Option<i64>,
    ) {
        let path = format!("models.{id}");
        let Yaml::Hash(keys) = v else {
            self.warn(&path, "not a mapping; not carried");
            return;
        };
        let macros = match keys.get(&Yaml::String("macros".into())) {
            Some(Yaml::Hash(m)) => {
                let global = self.macros.clone();
                self.define(&global, m, &format!("{path}.macros"))
            }
            _ => self.macros.clone(),
        };
        let mut t = toml::Table::new();
        let mut ttl = global_ttl;
        let mut stop = unload_timeout;
        let mut declared_context = None;
        for (k, val) in keys {
            let key = scalar(k);
            let at = format!("{path}.{key}");
            match key.as_str() {
                "cmd" => {
                    // Comments go before expansion (a comment may name a macro), and the
                    // lines a multi-line macro brings in are joined after it.
                    let cmd = one_line(&self.expand(&one_line(&scalar(val)), &macros, &at));
                    derive_from_cmd(&cmd, &mut t);
                    t.insert("cmd".into(), cmd.into());
                }
                "proxy" => {
                    let proxy = self.expand(&scalar(val), &macros, &at);
                    let default = ["http://localhost:${PORT}", "http://127.0.0.1:${PORT}"];
                    if !default.contains(&proxy.trim_end_matches('/')) {
                        self.warn(
                            &at,
                            format!(
                                "{proxy:?} not carried: modelyard reaches each server at \
                                 http://127.0.0.1:${{PORT}}, the port it gives in cmd"
                            ),
                        );
                    }
                }
                "checkEndpoint" => {
                    let endpoint = self.expand(&scalar(val), &macros, &at);
                    if endpoint == "none" {
                        self.warn(&at, "\"none\" not carried: modelyard always waits for /health");
                    } else {
                        t.insert("health".into(), endpoint.into());
                    }
                }
                "ttl" => match val {
                    Yaml::Integer(s) if *s > 0 => ttl = Some(*s),
                    Yaml::Integer(0) => ttl = None,
                    Yaml::Integer(-1) => {}
                    _ => self.warn(&at, "not a number of seconds; not carried"),
                },
                "aliases" => {
                    let aliases = self.aliases(val, &at);
                    if !aliases.is_empty() {
                        t.insert("aliases".into(), aliases.into());
                    }
                }
                "useModelName" => {
                    let name = scalar(val);
                    if !name.is_empty() {
                        t.insert("use_model_name".into(), name.into());
                    }
                }
                "env" => {
                    let mut env = toml::Table::new();
                    for (i, e) in as_list(val).iter().enumerate() {
                        let e = self.expand(&scalar(e), &macros, &format!("{at}[{i}]"));
                        match e.split_once('=') {
                            Some((k, v)) => {
                                env.insert(k.to_string(), v.to_string().into());
                            }
                            None => self.warn(&format!("{at}[{i}]"), "not NAME=value; not carried"),
                        }
                    }
                    t.insert("env".into(), env.into());
                }
                "concurrencyLimit" => match val {
                    Yaml::Integer(n) if *n > 0 => {
                        t.insert("parallel".into(), (*n).into());
                    }
                    Yaml::Integer(0) => {}
                    _ => self.warn(&at, "not a count; not carried"),
                },
                "macros" => {}
                "unloadTimeout" => match val {
                    Yaml::Integer(s) if *s > 0 => stop = Some(*s),
                    _ => self.warn(&at, "not a number of seconds; not carried"),
                },
                "capabilities" => declared_context = self.capabilities(val, &at, &mut t),
                "compat" => self.warn(&at, "not carried: modelyard has no compatibility switches"),
                "cmdStop" => self.warn(
                    &at,
                    "not carried: modelyard stops a server with SIGTERM to its process group, \
                     then SIGKILL after stop_timeout",
                ),
                "unlisted" => {
                    if matches!(val, Yaml::Boolean(true)) {
                        self.warn(&at, "not carried: every model is listed in /v1/models");
                    }
                }
                "name" | "description" | "metadata" => {
                    self.warn(&at, "not carried: /v1/models shows the id, aliases and tags")
                }
                "filters" => self.warn(
                    &at,
                    "not carried: modelyard does not rewrite request parameters",
                ),
                "sendLoadingState" => self.warn(
                    &at,
                    "not carried: modelyard does not stream loading messages",
                ),
                "timeouts" => self.warn(
                    &at,
                    "not carried per model: [server] upstream_timeout bounds every upstream request",
                ),
                _ => self.warn(&at, "unknown llama-swap model key, not carried"),
            }
        }
        if let Some(s) = ttl {
            t.insert("ttl".into(), s.into());
        }
        if let Some(s) = stop {
            t.insert("stop_timeout".into(), s.into());
        }
        if let Some(c) = declared_context
            && !t.contains_key("context_tokens")
        {
            t.insert("context_tokens".into(), c.into());
        }
        if let Some(s) = health.filter(|s| *s != DEFAULT_HEALTH_TIMEOUT) {
            t.insert("start_timeout".into(), s.into());
        }
        match t.get("cmd").and_then(toml::Value::as_str) {
            None => {
                self.warn(&path, "has no cmd; not carried");
                return;
            }
            Some(cmd) if !cmd.contains("${PORT}") => {
                self.warn(
                    &format!("{path}.cmd"),
                    "not carried, nor the model: it never uses ${PORT}, and modelyard gives each \
                     server its port through it",
                );
                return;
            }
            Some(_) => {}
        }
        self.models.insert(id.to_string(), t.into());
    }

    /// llama-swap's declared capabilities: `reranker` carries to ours, `context` to the
    /// window (when the command line does not say it); the media kinds and `tools` do not.
    pub(super) fn capabilities(
        &mut self,
        v: &Yaml,
        path: &str,
        t: &mut toml::Table,
    ) -> Option<i64> {
        let Yaml::Hash(h) = v else {
            self.warn(path, "not a mapping; not carried");
            return None;
        };
        let mut context = None;
        for (k, val) in h {
            let key = scalar(k);
            let at = format!("{path}.{key}");
            match (key.as_str(), val) {
                ("reranker", Yaml::Boolean(true)) => {
                    t.insert("capabilities".into(), vec!["rerank"].into());
                }
                ("reranker", _) => {}
                ("context", Yaml::Integer(n)) if *n > 0 => context = Some(*n),
                ("in" | "out", _) => {
                    let kinds: Vec<String> = as_list(val).iter().map(scalar).collect();
                    if kinds.iter().any(|k| k != "text") {
                        self.warn(
                            &at,
                            format!("{kinds:?} not carried: modelyard routes text only"),
                        );
                    }
                }
                _ => self.warn(&at, "not carried"),
            }
        }
        context
    }

    pub(super) fn aliases(&mut self, v: &Yaml, path: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (i, a) in as_list(v).iter().enumerate() {
            match a {
                Yaml::Hash(h) => {
                    let field = |k: &str| h.get(&Yaml::String(k.into()));
                    match field("id") {
                        Some(id) => out.push(scalar(id)),
                        None => self.warn(&format!("{path}[{i}]"), "has no id; not carried"),
                    }
                    if field("name")
                        .is_some_and(|n| scalar(n) != out.last().cloned().unwrap_or_default())
                    {
                        self.warn(
                            &format!("{path}[{i}].name"),
                            "not carried: an alias is its id",
                        );
                    }
                    if matches!(field("unlisted"), Some(Yaml::Boolean(true))) {
                        self.warn(
                            &format!("{path}[{i}].unlisted"),
                            "not carried: aliases are listed",
                        );
                    }
                }
                other => out.push(scalar(other)),
            }
        }
        out
    }
}

/// llama-swap's multi-line `cmd`: comment lines dropped, continuations and lines joined.
fn one_line(cmd: &str) -> String {
    cmd.lines()
        .map(|l| l.trim().trim_end_matches('\\').trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What llama-server's own flags in `cmd` tell: the model file (when it exists here, for
/// footprint estimates), each slot's window and the slots.
fn derive_from_cmd(cmd: &str, t: &mut toml::Table) {
    let argv = shlex::split(cmd).unwrap_or_default();
    let arg = |names: &[&str]| {
        argv.windows(2)
            .find(|w| names.contains(&w[0].as_str()))
            .map(|w| w[1].clone())
    };
    if let Some(file) = arg(&["-m", "--model"])
        && !file.contains("${")
        && Path::new(&file).is_file()
    {
        t.insert("file".into(), file.into());
    }
    let slots = arg(&["-np", "--parallel"])
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n > 0);
    if let Some(ctx) = arg(&["-c", "--ctx-size"])
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n > 0)
    {
        t.insert("context_tokens".into(), (ctx / slots.unwrap_or(1)).into());
    }
    if let Some(n) = slots {
        t.insert("parallel".into(), n.into());
    }
}
