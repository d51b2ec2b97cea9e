//! What llama-swap says beside its models: API keys, groups, the matrix, routing, startup
//! hooks and peers, each carried onto the imported models where the meaning does.

use std::collections::BTreeMap;

use yaml_rust2::Yaml;

use super::{Importer, as_list, scalar};

impl Importer<'_> {
    pub(super) fn api_keys(&mut self, v: &Yaml) -> Option<toml::Table> {
        let mut keys = Vec::new();
        for (i, k) in as_list(v).iter().enumerate() {
            let at = format!("apiKeys[{i}]");
            let key = self.expand(&scalar(k), &BTreeMap::new(), &at);
            if key.is_empty() {
                continue;
            }
            if scalar(k).contains("${env.") {
                self.warn(
                    &at,
                    "taken from the environment at import: the key is now written in the file",
                );
            }
            let mut t = toml::Table::new();
            t.insert("key".into(), key.into());
            t.insert("name".into(), format!("llama-swap {at}").into());
            keys.push(toml::Value::Table(t));
        }
        if keys.is_empty() {
            return None;
        }
        let mut auth = toml::Table::new();
        auth.insert("keys".into(), keys.into());
        Some(auth)
    }

    /// llama-swap's legacy groups: `persistent` becomes `pinned` (never evicted, as a
    /// persistent group is never unloaded by another); `swap` and `exclusive` have no
    /// equivalent: memory and `choose-eviction` decide what runs together.
    pub(super) fn groups(&mut self, v: &Yaml, at: &str) {
        let Yaml::Hash(groups) = v else {
            self.warn(at, "not a mapping; not carried");
            return;
        };
        for (name, g) in groups {
            let path = format!("{at}.{}", scalar(name));
            let field = |k: &str| match g {
                Yaml::Hash(h) => h.get(&Yaml::String(k.into())).cloned(),
                _ => None,
            };
            let members: Vec<String> = field("members")
                .map(|m| as_list(&m).iter().map(scalar).collect())
                .unwrap_or_default();
            let swap = !matches!(field("swap"), Some(Yaml::Boolean(false)));
            let exclusive = !matches!(field("exclusive"), Some(Yaml::Boolean(false)));
            let persistent = matches!(field("persistent"), Some(Yaml::Boolean(true)));
            if swap && members.len() > 1 {
                self.warn(
                    &format!("{path}.swap"),
                    "not carried: one member at a time; in modelyard the memory budget decides how many run",
                );
            }
            if exclusive {
                self.warn(
                    &format!("{path}.exclusive"),
                    "not carried: a load evicts only what it needs room for, chosen by choose-eviction",
                );
            }
            for m in &members {
                match self.models.get_mut(m).and_then(toml::Value::as_table_mut) {
                    Some(t) if persistent => {
                        t.insert("pinned".into(), true.into());
                    }
                    Some(_) => {}
                    None => self.warn(&format!("{path}.members"), format!("{m} is not a model")),
                }
            }
        }
    }

    /// The solver DSL has no equivalent; its `evict_costs` carry as priorities (the
    /// `priority` policy evicts the lowest first).
    pub(super) fn matrix(&mut self, v: &Yaml, at: &str) {
        let Yaml::Hash(m) = v else {
            self.warn(at, "not a mapping; not carried");
            return;
        };
        let field = |k: &str| m.get(&Yaml::String(k.into()));
        let mut vars = BTreeMap::new();
        if let Some(Yaml::Hash(h)) = field("vars") {
            for (k, v) in h {
                vars.insert(scalar(k), scalar(v));
            }
        }
        if field("sets").is_some() {
            self.warn(
                &format!("{at}.sets"),
                "not carried: which models run together is decided by memory and choose-eviction, not a solver",
            );
        }
        if let Some(Yaml::Hash(costs)) = field("evict_costs") {
            let mut carried = false;
            for (k, c) in costs {
                let var = scalar(k);
                let path = format!("{at}.evict_costs.{var}");
                let model = vars.get(&var).cloned().unwrap_or(var);
                match (
                    self.models
                        .get_mut(&model)
                        .and_then(toml::Value::as_table_mut),
                    c,
                ) {
                    (Some(t), Yaml::Integer(cost)) => {
                        t.insert("priority".into(), (*cost).into());
                        carried = true;
                    }
                    _ => self.warn(&path, format!("{model} is not a model; not carried")),
                }
            }
            if carried {
                self.warn(
                    &format!("{at}.evict_costs"),
                    "carried as each model's priority, which only the `priority` eviction policy \
                     honours (set [policies] eviction = \"priority\")",
                );
            }
        }
    }

    /// llama-swap's `routing`: the router's groups and matrix as above (whichever `use`
    /// names), the FIFO scheduler's priorities as each model's priority.
    pub(super) fn routing(&mut self, v: &Yaml) {
        let get = |v: &Yaml, k: &str| match v {
            Yaml::Hash(h) => h.get(&Yaml::String(k.into())).cloned(),
            _ => None,
        };
        let router = get(v, "router");
        let settings = router.as_ref().and_then(|r| get(r, "settings"));
        if let Some(g) = settings.as_ref().and_then(|s| get(s, "groups")) {
            self.groups(&g, "routing.router.settings.groups");
        }
        if let Some(m) = settings.as_ref().and_then(|s| get(s, "matrix")) {
            self.matrix(&m, "routing.router.settings.matrix");
        }
        let scheduler = get(v, "scheduler");
        let priorities = (scheduler.as_ref().and_then(|s| get(s, "settings")))
            .and_then(|s| get(&s, "fifo"))
            .and_then(|f| get(&f, "priority"));
        if let Some(Yaml::Hash(p)) = priorities {
            for (k, val) in &p {
                let id = scalar(k);
                let at = format!("routing.scheduler.settings.fifo.priority.{id}");
                match (
                    self.models.get_mut(&id).and_then(toml::Value::as_table_mut),
                    val,
                ) {
                    (Some(t), Yaml::Integer(n)) => {
                        t.insert("priority".into(), (*n).into());
                    }
                    _ => self.warn(&at, format!("{id} is not a model; not carried")),
                }
            }
        }
        if let Yaml::Hash(h) = v {
            for k in h.keys() {
                let key = scalar(k);
                if key != "router" && key != "scheduler" {
                    self.warn(
                        &format!("routing.{key}"),
                        "unknown llama-swap key, not carried",
                    );
                }
            }
        }
    }

    pub(super) fn hooks(&mut self, v: &Yaml) {
        let preload = match v {
            Yaml::Hash(h) => match h.get(&Yaml::String("on_startup".into())) {
                Some(Yaml::Hash(s)) => s.get(&Yaml::String("preload".into())).cloned(),
                _ => None,
            },
            _ => None,
        };
        for (i, id) in preload
            .map(|p| as_list(&p))
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let id = scalar(id);
            match self.models.get_mut(&id).and_then(toml::Value::as_table_mut) {
                Some(t) => {
                    t.insert("preload".into(), true.into());
                }
                None => self.warn(
                    &format!("hooks.on_startup.preload[{i}]"),
                    format!("{id} is not a model; not carried"),
                ),
            }
        }
    }

    /// Each peer's models become models on a server that already runs (`url`).
    pub(super) fn peers(&mut self, v: &Yaml) {
        let Yaml::Hash(peers) = v else {
            self.warn("peers", "not a mapping; not carried");
            return;
        };
        for (name, p) in peers {
            let path = format!("peers.{}", scalar(name));
            let Yaml::Hash(p) = p else {
                self.warn(&path, "not a mapping; not carried");
                continue;
            };
            let field = |k: &str| p.get(&Yaml::String(k.into()));
            let macros = self.macros.clone();
            let proxy = field("proxy").map(scalar).unwrap_or_default();
            let proxy = self.expand(&proxy, &macros, &format!("{path}.proxy"));
            let key = field("apiKey").map(scalar).filter(|k| !k.is_empty());
            let key = key.map(|k| self.expand(&k, &macros, &format!("{path}.apiKey")));
            if field("filters").is_some() {
                self.warn(
                    &format!("{path}.filters"),
                    "not carried: modelyard does not rewrite request parameters",
                );
            }
            if field("timeouts").is_some() {
                self.warn(&format!("{path}.timeouts"), "not carried per server: [server] upstream_timeout bounds every upstream request");
            }
            if !proxy.starts_with("http://") {
                self.warn(
                    &format!("{path}.proxy"),
                    format!("{proxy:?} not carried, nor its models: modelyard reaches servers over plain http:// only"),
                );
                continue;
            }
            let url = format!("{}/v1", proxy.trim_end_matches('/'));
            for m in field("models").map(as_list).unwrap_or_default() {
                let id = scalar(&m);
                let mut t = toml::Table::new();
                t.insert("url".into(), url.clone().into());
                if let Some(k) = &key {
                    t.insert("api_key".into(), k.clone().into());
                }
                self.models.insert(id, t.into());
            }
        }
    }
}
