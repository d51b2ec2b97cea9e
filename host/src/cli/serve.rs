//! `modelyard serve`: wires the configured policies, the scheduler and
//! the proxy together, serves until SIGINT or SIGTERM, then stops every model server.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;

use crate::backend::RealLauncher;
use crate::config::{PolicyRef, Settings};
use crate::engine::experiment::Experiment;
use crate::engine::{EngineSettings, Hook, HookMap, Hooks, Policy, PolicyEngine, PolicySet};
use crate::proxy::{self, AppState};
use crate::recorder::Recorder;
use crate::scheduler::Scheduler;

/// A running host: its scheduler and the address it listens on.
#[derive(Debug)]
pub struct Host {
    pub scheduler: Scheduler,
    pub policies: Arc<PolicySet>,
    pub addr: std::net::SocketAddr,
}

/// Loads the policies the config names for each hook: the defaults a policies folder overrides.
pub fn defaults(
    engine: &PolicyEngine,
    settings: &Settings,
) -> anyhow::Result<HookMap<Option<Arc<Policy>>>> {
    let mut out: HookMap<Option<Arc<Policy>>> = HookMap::default();
    let mut loaded: BTreeMap<String, Arc<Policy>> = BTreeMap::new();
    for (hook, choice) in [
        (Hook::ChooseEviction, &settings.policies.eviction),
        (Hook::SelectModel, &settings.policies.selection),
        (Hook::CompressContext, &settings.policies.compression),
    ] {
        let key = choice.to_string();
        let policy = match choice {
            PolicyRef::Fallback => None,
            _ if loaded.contains_key(&key) => loaded.get(&key).cloned(),
            PolicyRef::Builtin(name) => Some(Arc::new(
                engine
                    .resolve(name, Path::new("."))
                    .map_err(anyhow::Error::msg)?,
            )),
            PolicyRef::File(path) => Some(Arc::new(
                engine
                    .resolve(&path.display().to_string(), Path::new("."))
                    .map_err(anyhow::Error::msg)?,
            )),
        };
        if let Some(p) = &policy {
            if !p.exports(hook) {
                anyhow::bail!("policy {} does not export {hook}", p.name());
            }
            loaded.insert(key, p.clone());
        }
        tracing::info!(hook = %hook, policy = %choice, "configured policy");
        out[hook] = policy;
    }
    Ok(out)
}

/// Starts the host on `settings.listen` (port 0 picks a free one) and returns once it
/// listens; it serves until `shutdown` resolves, then stops every model server.
pub async fn start(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(Host, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let engine = PolicyEngine::new(EngineSettings {
        hook_deadline: settings.policies.hook_deadline,
        cache_dir: settings.policies.cache_dir.clone(),
        ..EngineSettings::default()
    })?;
    let hooks = Arc::new(Hooks::new());
    let policies = Arc::new(PolicySet::new(
        engine.clone(),
        hooks.clone(),
        defaults(&engine, &settings)?,
        settings.policies.dir.clone(),
    ));
    let watcher = policies.watch()?;
    for e in &settings.experiments {
        let candidate = engine
            .resolve(&e.candidate, Path::new("."))
            .map_err(|why| anyhow::anyhow!("experiment on {}: {why}", e.hook))?;
        if !candidate.exports(e.hook) {
            anyhow::bail!(
                "experiment on {}: {} does not export it",
                e.hook,
                candidate.name()
            );
        }
        tracing::info!(hook = %e.hook, candidate = %candidate.name(), weight = e.weight, mode = ?e.mode, "experiment");
        hooks.set_experiment(
            e.hook,
            Some(Arc::new(Experiment::new(
                e.hook,
                Arc::new(candidate),
                e.weight,
                e.mode,
                e.sticky,
            ))),
        );
    }
    let http = reqwest::Client::builder()
        .build()
        .context("building the HTTP client")?;
    let listen = settings.listen;
    let recorder = match &settings.trace {
        Some(t) => {
            tracing::info!(path = %t.path.display(), "recording traffic");
            Some(Arc::new(Recorder::start(t.clone())?))
        }
        None => None,
    };
    let scheduler = Scheduler::new(
        Arc::new(settings),
        hooks,
        Arc::new(RealLauncher::new(http.clone())),
    )?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    // Each chunk of a streamed answer goes out as it comes: without TCP_NODELAY a small chunk
    // waits for the client's delayed acknowledgement of the one before it.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let mut state = AppState::new(scheduler.clone(), policies.clone(), http);
    state.recorder = recorder;
    let app = proxy::router(Arc::new(state));
    let sched = scheduler.clone();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        drop(watcher);
        sched.shutdown().await;
        served.context("serving HTTP")
    });
    tracing::info!(%addr, "listening");
    Ok((
        Host {
            scheduler,
            policies,
            addr,
        },
        task,
    ))
}

/// `modelyard serve`: serves until SIGINT or SIGTERM.
pub async fn serve(config: &Path) -> anyhow::Result<()> {
    let settings = Settings::from_file(config)?;
    let (host, task) = start(settings, shutdown_signal()).await?;
    eprintln!("modelyard: serving on http://{}/v1", host.addr);
    task.await.context("the server task failed")?
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: stopping model servers");
}
