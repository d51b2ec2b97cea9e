//! The picker's server: the `ext_proc` service and gRPC health on one listener, and the loop
//! that reads the hosts (and the endpoints file, when it changes) on an interval, each host on
//! its own ([`Reads`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;
use tonic_health::ServingStatus;

use super::decide::Shedding;
use super::endpoints;
use super::ext_proc::Picker;
use super::fleet::{DEFAULT_SCRAPE_INTERVAL, Fleet, Reads};
use super::hosts::Seen;
use super::metrics::PickMetrics;
use crate::engine::Hooks;

/// The picker's gRPC port in the inference extension's manifests.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9002";
/// The health services the protocol names; all but `liveness` serve once the hosts were read.
pub const READINESS: &str = "readiness";
pub const LIVENESS: &str = "liveness";
pub const EXT_PROC_SERVICE: &str = "envoy.service.ext_proc.v3.ExternalProcessor";

/// How long a stop waits for open streams.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// How a picker runs.
#[derive(Debug, Clone)]
pub struct PickSettings {
    pub listen: SocketAddr,
    /// The endpoints file, read again when it changes.
    pub endpoints: PathBuf,
    pub interval: Duration,
    /// Sent to the hosts' `/admin/models`.
    pub admin_key: Option<String>,
    pub shedding: Shedding,
    /// Where `GET /metrics` is served, if anywhere.
    pub metrics: Option<SocketAddr>,
}

impl PickSettings {
    pub fn new(listen: SocketAddr, endpoints: PathBuf) -> Self {
        Self {
            listen,
            endpoints,
            interval: DEFAULT_SCRAPE_INTERVAL,
            admin_key: None,
            shedding: Shedding::default(),
            metrics: None,
        }
    }
}

/// A running picker.
pub struct Running {
    pub addr: SocketAddr,
    /// Where `GET /metrics` is served.
    pub metrics_addr: Option<SocketAddr>,
    pub fleet: Arc<Fleet>,
    pub metrics: Arc<PickMetrics>,
    metrics_server: Option<tokio::task::JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    scraper: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops reading and serving: streams in progress get [`STOP_GRACE`] to end (Envoy keeps
    /// its gRPC connections open, so a graceful stop alone may never come).
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.scraper.abort();
        if let Some(m) = &self.metrics_server {
            m.abort();
        }
        let mut server = self.server;
        match tokio::time::timeout(STOP_GRACE, &mut server).await {
            Ok(ended) => ended??,
            Err(_) => server.abort(),
        }
        Ok(())
    }

    /// Serves until the task is cancelled or the server fails.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.server.await??;
        Ok(())
    }
}

/// Reads the endpoints file, binds the listener and starts serving with `hooks` deciding.
pub async fn start(settings: PickSettings, hooks: Arc<Hooks>) -> anyhow::Result<Running> {
    let mut seen = None;
    let list = read_endpoints(&settings.endpoints, &mut seen)?
        .ok_or_else(|| anyhow::anyhow!("{} could not be read", settings.endpoints.display()))?;
    let fleet = Arc::new(Fleet::new(list, hooks));
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding {}: {e}", settings.listen))?;
    let addr = listener.local_addr()?;
    let metrics = Arc::new(PickMetrics::default());
    let (metrics_addr, metrics_server) = match settings.metrics {
        Some(at) => {
            let l = super::metrics::bind(at).await?;
            let bound = l.local_addr()?;
            (
                Some(bound),
                Some(tokio::spawn(super::metrics::serve(l, metrics.clone()))),
            )
        }
        None => (None, None),
    };
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    for service in [READINESS, EXT_PROC_SERVICE, ""] {
        reporter
            .set_service_status(service, ServingStatus::NotServing)
            .await;
    }

    let scraper = {
        let fleet = fleet.clone();
        let settings = settings.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut tick = tokio::time::interval(settings.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut ready = false;
            let mut reads = Reads::default();
            loop {
                tick.tick().await;
                match read_endpoints(&settings.endpoints, &mut seen) {
                    Ok(Some(list)) => {
                        tracing::info!(hosts = list.len(), "endpoints file read again");
                        fleet.set_endpoints(list);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!("endpoints file refused, the old list serves: {e}"),
                }
                let Some(hosts) =
                    reads.tick(&http, &fleet.endpoints(), settings.admin_key.as_deref())
                else {
                    continue;
                };
                let up = hosts.iter().filter(|h| matches!(h, Seen::Up(_))).count();
                metrics.hosts(up, hosts.len() - up);
                fleet.update(hosts);
                if !ready {
                    ready = true;
                    for service in [READINESS, EXT_PROC_SERVICE, ""] {
                        reporter
                            .set_service_status(service, ServingStatus::Serving)
                            .await;
                    }
                }
            }
        })
    };

    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let picker = Picker::with_metrics(fleet.clone(), settings.shedding, metrics.clone());
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(ExternalProcessorServer::new(picker))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            ),
    );
    Ok(Running {
        addr,
        metrics_addr,
        fleet,
        metrics,
        metrics_server,
        stop,
        server,
        scraper,
    })
}

/// The endpoints file when it changed since `seen` (its modification time, updated here):
/// `Ok(None)` when it did not; an error names every problem of a file that does not parse, once
/// for each change.
fn read_endpoints(
    path: &std::path::Path,
    seen: &mut Option<SystemTime>,
) -> anyhow::Result<Option<Vec<endpoints::Endpoint>>> {
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if *seen == Some(modified) {
        return Ok(None);
    }
    *seen = Some(modified);
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let list = endpoints::parse(&text)
        .map_err(|problems| anyhow::anyhow!("{}: {}", path.display(), problems.join("; ")))?;
    Ok(Some(list))
}
