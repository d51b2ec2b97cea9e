//! `modelyard serve`: wires the configured policies, the scheduler and
//! the proxy together, serves until SIGINT or SIGTERM, then stops every model server.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use crate::backend::RealLauncher;
use crate::config::Settings;
use crate::engine::experiment::Experiment;
use crate::engine::{EngineSettings, Hooks, PolicyEngine, PolicySet};
use crate::proxy::{self, AppState};
use crate::recorder::Recorder;
use crate::reload::{self, ConfigStatus, Reloader};
use crate::scheduler::Scheduler;

/// How long an idle connection to a model server is kept for reuse: below llama-server's 5 s
/// keep-alive (and most servers'), so that a request never goes out on a connection the
/// server is closing, which fails it with "connection closed before message completed".
pub const UPSTREAM_POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

/// A running host: its scheduler and the address it listens on.
#[derive(Debug)]
pub struct Host {
    pub scheduler: Scheduler,
    pub policies: Arc<PolicySet>,
    pub addr: std::net::SocketAddr,
    /// Reloads the config file the settings came from (watched, and on SIGHUP); none for
    /// settings that came from no file.
    pub reloader: Option<Arc<Reloader>>,
}

/// Starts the host on `settings.listen` (port 0 picks a free one) and returns once it
/// listens; it serves until `shutdown` resolves, then stops every model server.
pub async fn start(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(Host, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    if let Some(why) = reload::open_without_keys(settings.listen, &settings) {
        anyhow::bail!(why);
    }
    let engine = PolicyEngine::new(EngineSettings {
        hook_deadline: settings.policies.hook_deadline,
        cache_dir: settings.policies.cache_dir.clone(),
        ..EngineSettings::default()
    })?;
    let hooks = Arc::new(Hooks::new());
    let policies = Arc::new(PolicySet::with_allow(
        engine.clone(),
        hooks.clone(),
        reload::policy_defaults(&engine, &settings)?,
        settings.policies.dir.clone(),
        settings.policies.allow.clone(),
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
        .pool_idle_timeout(UPSTREAM_POOL_IDLE)
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
    let config = Arc::new(ConfigStatus::started(scheduler.settings().as_ref()));
    let reloader = (scheduler.settings().source.clone()).map(|path| {
        Arc::new(Reloader::new(
            path,
            scheduler.clone(),
            policies.clone(),
            config.clone(),
        ))
    });
    let config_watcher = reloader.as_ref().map(Reloader::watch).transpose()?;
    let mut state = AppState::new(scheduler.clone(), policies.clone(), http);
    state.recorder = recorder;
    state.config = config;
    state.reloader = reloader.clone();
    let state = Arc::new(state);
    let app = proxy::router(state.clone());
    let sched = scheduler.clone();
    let grace = scheduler.settings().server.shutdown_grace;
    let task = tokio::spawn(async move {
        let (close, closed) = tokio::sync::oneshot::channel::<()>();
        let mut server = std::pin::pin!(proxy::listen::serve(listener, app, async move {
            let _ = closed.await;
        }));
        tokio::select! {
            () = &mut server => {}
            () = shutdown => {
                // New requests get 503 while those in flight finish, for the grace at most.
                state.close();
                tokio::select! {
                    () = &mut server => {}
                    () = drain(&sched, grace) => {
                        let _ = close.send(());
                        // Idle connections close now; a stream past the grace is cut.
                        let _ = tokio::time::timeout(DRAIN_CUT, &mut server).await;
                    }
                }
            }
        }
        drop(watcher);
        drop(config_watcher);
        sched.shutdown().await;
        Ok(())
    });
    tracing::info!(%addr, "listening");
    preload(&scheduler);
    Ok((
        Host {
            scheduler,
            policies,
            addr,
            reloader,
        },
        task,
    ))
}

/// How long, after the drain, the last connections get to close before they are cut.
const DRAIN_CUT: std::time::Duration = std::time::Duration::from_millis(500);
/// How often the drain looks at what is still in flight.
const DRAIN_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Returns once no request holds or waits for a model, or `grace` has passed.
async fn drain(scheduler: &Scheduler, grace: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let busy: u32 = (scheduler.status().models.iter())
            .map(|m| m.in_flight + m.queued)
            .sum();
        if busy == 0 {
            tracing::info!("drained: no request in flight");
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                in_flight = busy,
                ?grace,
                "shutdown grace over: cutting requests still in flight"
            );
            return;
        }
        tokio::time::sleep(DRAIN_CHECK_EVERY).await;
    }
}

/// Loads the models marked `preload`, one after another in config order, off the caller's
/// path: requests are served meanwhile, and a load that fails is logged, never fatal.
fn preload(scheduler: &Scheduler) {
    let ids: Vec<String> = (scheduler.settings().models.iter())
        .filter(|m| m.preload)
        .map(|m| m.id.clone())
        .collect();
    if ids.is_empty() {
        return;
    }
    let scheduler = scheduler.clone();
    tokio::spawn(async move {
        for id in ids {
            match scheduler.load(&id).await {
                Ok(()) => tracing::info!(model = %id, "preloaded"),
                Err(e) => tracing::warn!(model = %id, error = %e, "preload failed"),
            }
        }
    });
}

/// `modelyard serve`: serves until SIGINT or SIGTERM, then drains for `[server]
/// shutdown_grace`; a second signal stops at once (the kernel stops every model server with
/// the host). `allow_open` is `--allow-open`.
pub async fn serve(config: &Path, allow_open: bool) -> anyhow::Result<()> {
    let mut settings = Settings::from_file(config)?;
    settings.server.allow_open = allow_open;
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
    tracing::info!("shutting down: draining requests in flight (a second signal stops at once)");
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::warn!("a second signal: stopping at once");
        std::process::exit(130);
    });
}
