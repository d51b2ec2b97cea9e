use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use modelyard::engine::{Catalogue, EngineSettings, Policy, PolicyEngine, PolicySource};

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

pub fn evil(engine: &PolicyEngine) -> Arc<Policy> {
    let path = guest_path("modelyard-policy-evil");
    let bytes = std::fs::read(&path).expect("evil guest built");
    Arc::new(
        engine
            .load("evil", PolicySource::File(path), &bytes)
            .expect("evil guest loads"),
    )
}
