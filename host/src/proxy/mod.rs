//! The HTTP face: OpenAI-compatible routes that forward to the model's backend, and the admin
//! routes. Every request takes a [`Lease`](crate::scheduler::Lease) on its model for as long as
//! its response streams, so a model is never evicted under a request; a client that goes away
//! drops the response stream, which drops the lease and cancels the upstream request.

mod error;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt as _;
use serde_json::{Value, json};

pub use error::ApiError;

use crate::scheduler::{Demand, Scheduler};

/// Header naming the request's task (`code`, `chat`, ...), read by select-model and demand.
pub const TASK_HEADER: &str = "x-modelyard-task";
/// Header giving the request's priority (an integer; higher matters more).
pub const PRIORITY_HEADER: &str = "x-modelyard-priority";

/// What the routes share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub scheduler: Scheduler,
    pub http: reqwest::Client,
}

/// The router for `serve`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(list_models))
        .route(
            "/v1/chat/completions",
            post(|s, h, b| forward(s, h, b, "/chat/completions")),
        )
        .route(
            "/v1/completions",
            post(|s, h, b| forward(s, h, b, "/completions")),
        )
        .route(
            "/v1/embeddings",
            post(|s, h, b| forward(s, h, b, "/embeddings")),
        )
        .route("/admin/models", get(admin_models))
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state)
}

async fn health() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn list_models(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    let mut data = Vec::new();
    for m in &app.scheduler.settings().models {
        for name in std::iter::once(&m.id).chain(&m.aliases) {
            data.push(json!({
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "modelyard",
                "context_length": m.context_tokens,
                "tags": m.tags,
                "alias_of": (name != &m.id).then_some(&m.id),
            }));
        }
    }
    axum::Json(json!({"object": "list", "data": data}))
}

async fn admin_models(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    axum::Json(app.scheduler.status())
}

fn demand(headers: &HeaderMap) -> Result<Demand, ApiError> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let priority = match text(PRIORITY_HEADER) {
        None => 0,
        Some(p) => p.trim().parse().map_err(|_| {
            ApiError::bad_request(
                "invalid_priority",
                format!("{PRIORITY_HEADER} must be an integer, not {p:?}"),
            )
        })?,
    };
    Ok(Demand {
        priority,
        task: text(TASK_HEADER),
    })
}

async fn forward(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
    path: &'static str,
) -> Result<Response, ApiError> {
    let mut json: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not JSON: {e}")))?;
    let Some(model) = json
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return Err(ApiError::bad_request(
            "missing_model",
            "the body has no \"model\" string",
        ));
    };
    let demand = demand(&headers)?;
    let mut lease = app.scheduler.acquire(&model, &demand).await?;
    let endpoint = lease.endpoint().clone();
    json["model"] = Value::String(endpoint.model_name.clone());
    let mut req = app
        .http
        .post(format!("{}{path}", endpoint.api_base))
        .json(&json);
    if let Some(key) = &endpoint.api_key {
        req = req.bearer_auth(key);
    }
    let upstream = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            lease.backend_failed().await;
            return Err(ApiError::backend(format!(
                "the server for {} failed: {}",
                lease.model(),
                error_chain(&e)
            )));
        }
    };
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = upstream
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .cloned();
    if status.is_server_error() {
        lease.fail();
    }
    // The lease lives in the stream: it ends when the body is sent or the client goes away.
    let stream = upstream.bytes_stream().map(move |chunk| {
        if let Err(e) = &chunk {
            tracing::warn!(model = %lease.model(), error = %e, "the server broke off its answer");
            lease.fail();
        }
        chunk
    });
    let mut resp = Response::builder().status(status);
    if let Some(ct) = content_type {
        resp = resp.header(header::CONTENT_TYPE, ct.as_bytes());
    }
    resp.body(Body::from_stream(stream))
        .map_err(|e| ApiError::backend(format!("could not relay the answer: {e}")))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
