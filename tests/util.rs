use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use modelyard::engine::types::Model;
use modelyard::engine::{Catalogue, EngineSettings, ModelInfo, Policy, PolicyEngine, PolicySource};

/// Where the host's build script put the guest components.
pub fn guest_path(crate_name: &str) -> PathBuf {
    PathBuf::from(env!("MODELYARD_GUEST_DIR"))
        .join(format!("{}.wasm", crate_name.replace('-', "_")))
}

/// Settings for tests that check decisions, not limits: a deadline long enough that a loaded
/// CI machine never trips it.
pub fn relaxed() -> EngineSettings {
    EngineSettings {
        hook_deadline: Duration::from_secs(2),
        ..EngineSettings::default()
    }
}

/// The catalogue a direct call to a 0.1 policy passes: 0.1 has none, so any will do.
pub fn no_catalogue() -> Catalogue {
    Catalogue::default()
}

/// The catalogue a configuration of `models` would give (ids, aliases, tags, windows; ordered
/// by id, as the host orders it), on `cpu`: what a direct call to a 0.2 policy needs.
pub fn catalogue_of<'a>(models: impl IntoIterator<Item = &'a Model>) -> Catalogue {
    let mut infos: Vec<ModelInfo> = models
        .into_iter()
        .map(|m| ModelInfo {
            id: m.id.clone(),
            aliases: m.aliases.clone(),
            tags: m.tags.clone(),
            context_tokens: m.context_tokens,
            parallel: 1,
        })
        .collect();
    infos.sort_by(|a, b| a.id.cmp(&b.id));
    infos.dedup_by(|a, b| a.id == b.id);
    Catalogue::new(infos, vec!["cpu".into()])
}

pub fn engine(settings: EngineSettings) -> PolicyEngine {
    PolicyEngine::new(settings).expect("engine")
}

pub fn builtin(engine: &PolicyEngine, name: &str) -> Arc<Policy> {
    Arc::new(
        engine
            .builtin(name)
            .expect("known built-in")
            .expect("built-in loads"),
    )
}

/// A seed built-in as it shipped on contract 0.1 (`policies/testdata/v0_1`): what 0.1
/// templates are compared with.
pub fn seed_v0_1(engine: &PolicyEngine, name: &str) -> Arc<Policy> {
    let path = guest_path(&format!("modelyard-policy-v0-1-{name}"));
    let bytes = std::fs::read(&path).expect("the 0.1 seed is built");
    Arc::new(
        engine
            .load(&format!("{name}-0.1"), PolicySource::File(path), &bytes)
            .expect("the 0.1 seed loads"),
    )
}

pub fn evil(engine: &PolicyEngine) -> Arc<Policy> {
    let path = guest_path("modelyard-policy-evil");
    let bytes = std::fs::read(&path).expect("evil guest built");
    Arc::new(
        engine
            .load("evil", PolicySource::File(path), &bytes)
            .expect("evil guest loads"),
    )
}
