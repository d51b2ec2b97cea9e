//! `/admin/*` and `/metrics`: what runs, and operator actions on models.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::engine::{Hook, PolicySource};

/// `GET /admin/models`: the same data as `modelyard models`.
pub async fn models(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    axum::Json(app.scheduler.status())
}

/// `POST /admin/models/{id}/load`: loads it (through the eviction policy) and waits until ready.
pub async fn load(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    app.scheduler.load(&id).await?;
    Ok(axum::Json(json!({"model": id, "state": "ready"})))
}

/// `POST /admin/models/{id}/unload`: unloads it now, unless requests are in flight.
pub async fn unload(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    app.scheduler.unload(&id).await?;
    Ok(axum::Json(json!({"model": id, "state": "unloaded"})))
}

/// `GET /admin/policies`: which component serves each hook, its exports and its counters.
pub async fn policies(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    let hooks = app.scheduler.hooks();
    let deadline_us = u64::try_from(app.scheduler.settings().policies.hook_deadline.as_micros())
        .unwrap_or(u64::MAX);
    let rows: Vec<Value> = Hook::ALL
        .into_iter()
        .map(|hook| match hooks.get(hook) {
            None => json!({"hook": hook.name(), "policy": null, "served_by": "native default"}),
            Some(p) => {
                let s = p.stats(hook);
                let p99 = s.latency_quantile_us(0.99);
                json!({
                    "hook": hook.name(),
                    "policy": p.name(),
                    "source": match p.source() {
                        PolicySource::Builtin => "built-in".to_string(),
                        PolicySource::File(path) => path.display().to_string(),
                    },
                    "exports": p.hooks().iter().map(|h| h.name()).collect::<Vec<_>>(),
                    "calls": s.calls.load(Relaxed),
                    "failures": s.failures.load(Relaxed),
                    "quarantined": p.is_quarantined(),
                    "latency_p50_us_at_most": s.latency_quantile_us(0.5),
                    "latency_p99_us_at_most": p99,
                    // A p99 past the deadline means many calls end in the fallback.
                    "p99_over_deadline": p99.is_none_or(|v| v > deadline_us) && s.calls.load(Relaxed) > 0,
                })
            }
        })
        .collect();
    let (compiled, cached) = app.policies.engine().compile_counts();
    axum::Json(json!({
        "hook_deadline_us": deadline_us,
        "hooks": rows,
        "files": app.policies.report(),
        "reloads": app.policies.events(),
        "compiles": {"compiled": compiled, "from_cache": cached},
    }))
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
}
