//! `modelyard pick`: serves the endpoint picker over the hosts of an endpoints file, with a
//! `select-model` policy (a built-in's name or a `.wasm` file) deciding, until interrupted.

use std::sync::Arc;

use anyhow::Context;

use crate::engine::{EngineSettings, Hook, Hooks, PolicyEngine};
use crate::pick::serve::{self, PickSettings};

/// The environment variable whose value is sent to the hosts' `/admin/models` as a bearer key.
pub const ADMIN_KEY_ENV: &str = "MODELYARD_ADMIN_KEY";

/// Serves until Ctrl-C.
pub async fn pick(mut settings: PickSettings, policy: Option<&str>) -> anyhow::Result<()> {
    let hooks = Arc::new(Hooks::new());
    if let Some(name) = policy {
        let engine = PolicyEngine::new(EngineSettings::default())?;
        let policy = engine
            .resolve(name, std::path::Path::new("."))
            .map_err(|e| anyhow::anyhow!("policy {name}: {e}"))?;
        if !policy.exports(Hook::SelectModel) {
            anyhow::bail!("policy {name} does not export select-model, which the picker asks");
        }
        hooks.set(Hook::SelectModel, Some(Arc::new(policy)));
    }
    settings.admin_key = std::env::var(ADMIN_KEY_ENV).ok().filter(|k| !k.is_empty());
    let running = serve::start(settings, hooks).await?;
    tracing::info!(addr = %running.addr, policy = policy.unwrap_or("(native default)"), "picking");
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        r = running.wait() => return r,
    }
    Ok(())
}
