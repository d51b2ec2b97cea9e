//! The picker's own `GET /metrics` (Prometheus text, on its own port as the EPP's): requests
//! routed by the host chosen and by who chose (the policy, or the native rule), responses by
//! the host that served them as Envoy tells (a fallback or not), requests refused
//! by status, the decision's time, and the hosts up and down at the last read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Where the EPP serves its metrics.
pub const DEFAULT_METRICS: &str = "0.0.0.0:9090";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoutedLabels {
    host: String,
    by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServedLabels {
    host: String,
    fallback: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostStateLabels {
    state: &'static str,
}

/// What the picker counts.
#[derive(Debug)]
pub struct PickMetrics {
    registry: Registry,
    routed: Family<RoutedLabels, Counter>,
    served: Family<ServedLabels, Counter>,
    refused: Family<StatusLabels, Counter>,
    decision: Histogram,
    hosts: Family<HostStateLabels, Gauge>,
}

impl Default for PickMetrics {
    fn default() -> Self {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("modelyard_pick");
        let routed = Family::<RoutedLabels, Counter>::default();
        registry.register(
            "routed",
            "Requests routed, by the host chosen first and by who chose (policy or native)",
            routed.clone(),
        );
        let served = Family::<ServedLabels, Counter>::default();
        registry.register(
            "served",
            "Responses by the host that served them, as Envoy tells, and whether it was a \
             fallback (not the host listed first)",
            served.clone(),
        );
        let refused = Family::<StatusLabels, Counter>::default();
        registry.register(
            "refused",
            "Requests answered by the picker itself, by HTTP status",
            refused.clone(),
        );
        // 1 µs to about 16 ms.
        let decision = Histogram::new(exponential_buckets(1e-6, 2.0, 15));
        registry.register(
            "decision_seconds",
            "Time to decide one request, select-model included",
            decision.clone(),
        );
        let hosts = Family::<HostStateLabels, Gauge>::default();
        registry.register("hosts", "Hosts up and down at the last read", hosts.clone());
        Self {
            registry: root,
            routed,
            served,
            refused,
            decision,
            hosts,
        }
    }
}

impl PickMetrics {
    pub fn routed(&self, host: &str, by_policy: bool, took: Duration) {
        self.routed
            .get_or_create(&RoutedLabels {
                host: host.to_string(),
                by: if by_policy { "policy" } else { "native" },
            })
            .inc();
        self.decision.observe(took.as_secs_f64());
    }

    pub fn served(&self, host: &str, fallback: bool) {
        self.served
            .get_or_create(&ServedLabels {
                host: host.to_string(),
                fallback: if fallback { "true" } else { "false" },
            })
            .inc();
    }

    pub fn refused(&self, status: u16, took: Duration) {
        self.refused.get_or_create(&StatusLabels { status }).inc();
        self.decision.observe(took.as_secs_f64());
    }

    pub fn hosts(&self, up: usize, down: usize) {
        for (state, n) in [("up", up), ("down", down)] {
            self.hosts
                .get_or_create(&HostStateLabels { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!("encoding the picker's metrics: {e}");
        }
        out
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<PickMetrics>) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!("the picker's metrics stopped: {e}");
    }
}

/// Binds the metrics listener (reported as an error before serving anything).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the metrics port {addr}: {e}"))
}
