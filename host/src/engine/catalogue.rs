//! What a 0.2 policy is told once rather than on every call: the configured models, devices and
//! tasks, which records then name by index.

use std::sync::atomic::{AtomicU64, Ordering};

use rustc_hash::FxHashMap;

/// A configured model, as the configuration says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub id: String,
    pub aliases: Vec<String>,
    pub tags: Vec<String>,
    pub context_tokens: u32,
    pub parallel: u32,
}

/// The configured models, devices and tasks, with each one's index. Built once per
/// configuration; a policy instance is configured again when it sees a new one.
#[derive(Debug, Clone)]
pub struct Catalogue {
    models: Vec<ModelInfo>,
    devices: Vec<String>,
    tasks: Vec<String>,
    /// Looked up for every model of every 0.2 call: a fast hash (ids come from the config, so
    /// nobody can pick colliding keys to insert).
    ids: FxHashMap<String, u32>,
    aliases: FxHashMap<String, u32>,
    generation: u64,
}

impl Default for Catalogue {
    fn default() -> Self {
        Self::new(Vec::new(), Vec::new())
    }
}

/// Tells catalogues apart without comparing them.
static GENERATION: AtomicU64 = AtomicU64::new(1);

fn index(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

impl Catalogue {
    /// The catalogue of `models` on `devices` (given in the order telemetry lists them: `cpu`
    /// first). Tasks are every model's tags, sorted; an alias names the first model that has it.
    pub fn new(models: Vec<ModelInfo>, devices: Vec<String>) -> Self {
        let mut tasks: Vec<String> = models.iter().flat_map(|m| m.tags.clone()).collect();
        tasks.sort();
        tasks.dedup();
        let mut aliases = FxHashMap::default();
        for (i, m) in models.iter().enumerate() {
            for a in &m.aliases {
                aliases.entry(a.clone()).or_insert(index(i));
            }
        }
        let ids = models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.clone(), index(i)))
            .collect();
        Self {
            models,
            devices,
            tasks,
            ids,
            aliases,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        }
    }

    pub fn models(&self) -> &[ModelInfo] {
        &self.models
    }

    pub fn devices(&self) -> &[String] {
        &self.devices
    }

    pub fn tasks(&self) -> &[String] {
        &self.tasks
    }

    /// The index of the model with this id.
    pub fn model(&self, id: &str) -> Option<u32> {
        self.ids.get(id).copied()
    }

    /// The index of the model with this alias.
    pub fn alias(&self, alias: &str) -> Option<u32> {
        self.aliases.get(alias).copied()
    }

    /// The model with index `i`.
    pub fn info(&self, i: u32) -> Option<&ModelInfo> {
        self.models.get(usize::try_from(i).ok()?)
    }

    pub fn device(&self, name: &str) -> Option<u32> {
        self.devices.iter().position(|d| d == name).map(index)
    }

    pub fn task(&self, name: &str) -> Option<u32> {
        self.tasks
            .binary_search_by(|t| t.as_str().cmp(name))
            .ok()
            .map(index)
    }

    /// Distinct for every catalogue built.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, aliases: &[&str], tags: &[&str]) -> ModelInfo {
        ModelInfo {
            id: id.into(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            context_tokens: 4096,
            parallel: 1,
        }
    }

    #[test]
    fn indices_follow_the_configuration() {
        let c = Catalogue::new(
            vec![
                info("a", &["small"], &["chat", "code"]),
                info("b", &["small", "big"], &["chat"]),
            ],
            vec!["cpu".into(), "gpu0".into()],
        );
        assert_eq!(
            (c.model("a"), c.model("b"), c.model("c")),
            (Some(0), Some(1), None)
        );
        assert_eq!(c.alias("small"), Some(0), "an alias names its first model");
        assert_eq!(c.alias("big"), Some(1));
        assert_eq!(c.tasks(), ["chat", "code"]);
        assert_eq!((c.task("code"), c.task("summarize")), (Some(1), None));
        assert_eq!((c.device("cpu"), c.device("gpu0")), (Some(0), Some(1)));
        assert_ne!(c.generation(), Catalogue::default().generation());
    }
}
