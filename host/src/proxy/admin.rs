//! `/admin/*` and `/metrics`: what runs, and operator actions on models.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::engine::experiment::{Experiment, Mode, Sticky};
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

/// `GET /admin/config`: which version of the config file serves, what its last reload
/// changed, the keys that wait for a restart, and the last file refused.
pub async fn config(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    axum::Json(app.config.report())
}

/// `POST /admin/config/reload`: reads the config file again now (as a change to it does): 200
/// with the version that serves, or 422 with every problem of a file refused.
pub async fn reload_config(State(app): State<Arc<AppState>>) -> Response {
    reload_with(&app, false).await
}

/// `POST /admin/discover`: scans `[discover]`'s folders and Ollama's store again (the config is
/// read again too, changed or not, as SIGHUP does): 200 with the version that serves, the
/// models found and what was skipped, or 422 as for a reload.
pub async fn discover(State(app): State<Arc<AppState>>) -> Response {
    reload_with(&app, true).await
}

async fn reload_with(app: &AppState, rescan: bool) -> Response {
    use crate::reload::Outcome;
    let Some(reloader) = &app.reloader else {
        return ApiError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            "no_config_file",
            "this host was not started from a config file",
        )
        .into_response();
    };
    let outcome = if rescan {
        reloader.rescan().await
    } else {
        reloader.reload().await
    };
    let report = app.config.report();
    match outcome {
        Outcome::Applied(v) if rescan => axum::Json(json!({
            "status": "applied",
            "version": v,
            "discovered": report.discovered,
            "discovery_skipped": report.discovery_skipped,
        }))
        .into_response(),
        Outcome::Applied(v) => axum::Json(json!({"status": "applied", "version": v})).into_response(),
        Outcome::Unchanged => axum::Json(json!({"status": "unchanged", "version": report.version})).into_response(),
        Outcome::Rejected(problems) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"error": {
                "message": format!("the config was refused; the old one keeps serving: {}", problems.join("; ")),
                "type": "invalid_request_error",
                "code": "invalid_config",
                "problems": problems,
            }})),
        )
            .into_response(),
    }
}

/// `GET /admin/policies`: which component serves each hook, its exports and its counters.
pub async fn policies(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    axum::Json(policies_report(&app))
}

/// What `/admin/policies` says.
pub(super) fn policies_report(app: &AppState) -> Value {
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
                let resets = p.resets();
                json!({
                    "hook": hook.name(),
                    "policy": p.name(),
                    "source": match p.source() {
                        PolicySource::Builtin => "built-in".to_string(),
                        PolicySource::File(path) => path.display().to_string(),
                    },
                    "exports": p.hooks().iter().map(|h| h.name()).collect::<Vec<_>>(),
                    "contract": p.contract().version(),
                    "stateful": p.contract().stateful(),
                    // A stateful instance thrown away (with its state) after a failure.
                    "instance_resets": resets.count,
                    "last_reset": resets.last,
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
    json!({
        "hook_deadline_us": deadline_us,
        "hooks": rows,
        "files": app.policies.report(),
        "reloads": app.policies.events(),
        "compiles": {"compiled": compiled, "from_cache": cached},
    })
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    app.kv.refresh(&app.scheduler, &app.http).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
}

/// `GET /admin/experiments`: every running experiment and its per-arm results.
pub async fn experiments(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    axum::Json(experiments_report(&app))
}

/// What `/admin/experiments` says.
pub(super) fn experiments_report(app: &AppState) -> Value {
    let hooks = app.scheduler.hooks();
    let list: Vec<_> = Hook::ALL
        .into_iter()
        .filter_map(|h| hooks.experiment(h))
        .map(|e| e.report())
        .collect();
    json!({"experiments": list})
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartExperiment {
    hook: String,
    /// A built-in name or a component path.
    candidate: String,
    #[serde(default = "half")]
    weight: f64,
    #[serde(default = "live")]
    mode: Mode,
    #[serde(default = "client")]
    sticky: Sticky,
}

fn half() -> f64 {
    0.5
}
fn live() -> Mode {
    Mode::Live
}
fn client() -> Sticky {
    Sticky::Client
}

fn hook_of(name: &str) -> Result<Hook, ApiError> {
    Hook::parse(name).ok_or_else(|| {
        ApiError::bad_request(
            "unknown_hook",
            format!("{name:?} is not choose-eviction, select-model or compress-context"),
        )
    })
}

fn weight_of(w: f64) -> Result<f64, ApiError> {
    if (0.0..=1.0).contains(&w) {
        Ok(w)
    } else {
        Err(ApiError::bad_request(
            "invalid_weight",
            format!("weight {w} is not in [0, 1]"),
        ))
    }
}

/// `POST /admin/experiments`: starts (or replaces) the experiment on a hook.
pub async fn start_experiment(
    State(app): State<Arc<AppState>>,
    axum::Json(req): axum::Json<StartExperiment>,
) -> Result<impl IntoResponse, ApiError> {
    let hook = hook_of(&req.hook)?;
    let weight = weight_of(req.weight)?;
    let engine = app.policies.engine().clone();
    let candidate_name = req.candidate.clone();
    let candidate = tokio::task::spawn_blocking(move || {
        engine.resolve(&candidate_name, std::path::Path::new("."))
    })
    .await
    .map_err(|e| ApiError::backend(e.to_string()))?
    .map_err(|why| ApiError::bad_request("invalid_candidate", why))?;
    if !candidate.exports(hook) {
        return Err(ApiError::bad_request(
            "invalid_candidate",
            format!("{} does not export {hook}", candidate.name()),
        ));
    }
    let e = Arc::new(Experiment::new(
        hook,
        Arc::new(candidate),
        weight,
        req.mode,
        req.sticky,
    ));
    app.scheduler.hooks().set_experiment(hook, Some(e.clone()));
    tracing::info!(hook = %hook, candidate = %e.candidate.name(), weight, "experiment started");
    Ok(axum::Json(e.report()))
}

#[derive(Debug, serde::Deserialize)]
pub struct Weight {
    weight: f64,
}

fn running(app: &AppState, hook: Hook) -> Result<Arc<Experiment>, ApiError> {
    app.scheduler
        .hooks()
        .experiment(hook)
        .ok_or_else(|| ApiError::not_found(format!("no experiment runs on {hook}")))
}

/// `POST /admin/experiments/{hook}/weight`: changes the candidate's share.
pub async fn set_weight(
    State(app): State<Arc<AppState>>,
    Path(hook): Path<String>,
    axum::Json(w): axum::Json<Weight>,
) -> Result<impl IntoResponse, ApiError> {
    let e = running(&app, hook_of(&hook)?)?;
    e.set_weight(weight_of(w.weight)?);
    Ok(axum::Json(e.report()))
}

/// `POST /admin/experiments/{hook}/stop`: ends it; the incumbent serves. Returns the results.
pub async fn stop_experiment(
    State(app): State<Arc<AppState>>,
    Path(hook): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let e = end(&app, hook_of(&hook)?)?;
    Ok(axum::Json(e.report()))
}

/// Ends the experiment on `hook`, returning it.
fn end(app: &AppState, hook: Hook) -> Result<Arc<Experiment>, ApiError> {
    let e = running(app, hook)?;
    app.scheduler.hooks().set_experiment(hook, None);
    Ok(e)
}

/// `POST /admin/experiments/{hook}/promote`: the candidate becomes the hook's default policy
/// (a file in the policies folder that exports the hook still wins), and the experiment ends.
pub async fn promote(
    State(app): State<Arc<AppState>>,
    Path(hook): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let hook = hook_of(&hook)?;
    let e = end(&app, hook)?;
    let set = app.policies.clone();
    let candidate = e.candidate.clone();
    tokio::task::spawn_blocking(move || set.set_default(hook, Some(candidate)))
        .await
        .map_err(|e| ApiError::backend(e.to_string()))?;
    Ok(axum::Json(e.report()))
}

/// `GET /admin/trace`: the recorded traffic, every kept file oldest first, as one JSON-lines
/// download that `simulate --format jsonl` replays.
pub async fn trace(State(app): State<Arc<AppState>>) -> Result<impl IntoResponse, ApiError> {
    let Some(rec) = &app.recorder else {
        return Err(ApiError::not_found(
            "this host records no traffic: set `[trace] record = \"trace.jsonl\"` in its config",
        ));
    };
    rec.flush().await;
    let files = rec.settings().files();
    let body = futures_util::stream::iter(files).then(|path| async move {
        match tokio::fs::read(&path).await {
            // Rotated away since the listing: its lines are in the next file.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(axum::body::Bytes::new()),
            read => read.map(axum::body::Bytes::from),
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"trace.jsonl\"",
            ),
        ],
        axum::body::Body::from_stream(body),
    ))
}
