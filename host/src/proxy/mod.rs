//! The HTTP face: OpenAI-compatible routes under `/v1`, the admin routes under `/admin`,
//! `/metrics` and `/health`.
//!
//! A request flows one way, as stages over one exchange ([`exchange`] names them): parse →
//! route (`select-model`) → acquire (the scheduler's [`Lease`](crate::scheduler::Lease)) → fit
//! (`compress-context` when the prompt does not fit) → forward → relay the answer chunk by
//! chunk. The lease lives in the relayed stream, so a model is never evicted under a request,
//! and a client that goes away drops the stream, which drops the lease and the upstream
//! request. Every error is OpenAI-shaped JSON with the right status.

mod acquire;
mod admin;
mod anthropic;
mod dialect;
mod error;
mod exchange;
mod fit;
mod forward;
mod metrics;
mod ollama;
mod openai;
mod parse;
mod record;
mod relay;
mod route;
mod translate;
mod upstream;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post};
use serde_json::json;

use dialect::Dialect;
pub use error::ApiError;
pub use fit::{Compressed, DEFAULT_OUTPUT_RESERVE};
pub use metrics::Metrics;

use crate::config::{Api, ApiKey};
use crate::engine::PolicySet;
use crate::recorder::Recorder;
use crate::scheduler::Scheduler;

/// Anthropic's API key header, accepted beside `Authorization: Bearer`.
const API_KEY_HEADER: &str = "x-api-key";
/// Header naming the request's task (`code`, `chat`, ...), read by select-model and demand.
pub const TASK_HEADER: &str = "x-modelyard-task";
/// Header giving the request's priority (an integer; higher matters more).
pub const PRIORITY_HEADER: &str = "x-modelyard-priority";
/// Response header: what compress-context did.
pub const CONTEXT_HEADER: &str = "x-modelyard-context";
/// Response header: the OpenAI route the request was translated to for its model's server
/// (`chat/completions`, say), when it was.
pub const TRANSLATED_HEADER: &str = "x-modelyard-translated";
/// Response header: the model that served the request.
pub const MODEL_HEADER: &str = "x-modelyard-model";

/// What the routes share.
#[derive(Debug)]
pub struct AppState {
    pub scheduler: Scheduler,
    pub policies: Arc<PolicySet>,
    pub http: reqwest::Client,
    pub metrics: Metrics,
    /// Where each request's record goes, when `[trace] record` says.
    pub recorder: Option<Arc<Recorder>>,
    next_id: std::sync::atomic::AtomicU64,
    /// Models whose servers answered 404 on an API's route: the host translates it for them.
    lacking: std::sync::Mutex<std::collections::HashSet<(String, Api)>>,
}

impl AppState {
    pub fn new(scheduler: Scheduler, policies: Arc<PolicySet>, http: reqwest::Client) -> Self {
        Self {
            policies,
            metrics: Metrics::new(scheduler.clone()),
            scheduler,
            http,
            recorder: None,
            next_id: std::sync::atomic::AtomicU64::new(1),
            lacking: std::sync::Mutex::default(),
        }
    }

    fn lacking(&self, model: &str, api: Api) -> bool {
        let lacking = self.lacking.lock().unwrap_or_else(|e| e.into_inner());
        !lacking.is_empty() && lacking.contains(&(model.to_string(), api))
    }

    fn lacks(&self, model: &str, api: Api) {
        self.lacking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((model.to_string(), api));
    }
}

/// The router for `serve`.
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/v1/models", get(openai::list_models))
        .route("/v1/chat/completions", post(openai::chat))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/responses", post(openai::responses))
        .route("/v1/rerank", post(openai::rerank))
        .route("/v1/reranking", post(openai::rerank))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/api/version", get(ollama::version))
        .route("/api/tags", get(ollama::tags))
        .route("/api/ps", get(ollama::ps))
        .route("/api/show", post(ollama::show))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embeddings))
        .route("/api/pull", post(ollama::managed))
        .route("/api/push", post(ollama::managed))
        .route("/api/create", post(ollama::managed))
        .route("/api/copy", post(ollama::managed))
        .route("/api/delete", axum::routing::delete(ollama::managed))
        .route("/upstream/{model}", any(upstream::passthrough))
        .route("/upstream/{model}/{*path}", any(upstream::passthrough))
        .route_layer(middleware::from_fn_with_state(state.clone(), client_auth));
    let admin = Router::new()
        .route("/admin/models", get(admin::models))
        .route("/admin/models/{id}/load", post(admin::load))
        .route("/admin/models/{id}/unload", post(admin::unload))
        .route("/admin/policies", get(admin::policies))
        .route("/admin/trace", get(admin::trace))
        .route(
            "/admin/experiments",
            get(admin::experiments).post(admin::start_experiment),
        )
        .route("/admin/experiments/{hook}/weight", post(admin::set_weight))
        .route(
            "/admin/experiments/{hook}/stop",
            post(admin::stop_experiment),
        )
        .route("/admin/experiments/{hook}/promote", post(admin::promote))
        .route_layer(middleware::from_fn_with_state(state.clone(), admin_auth));
    Router::new()
        .merge(v1)
        .merge(admin)
        .route("/metrics", get(admin::metrics))
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state)
}

/// The key a client sent: `Authorization: Bearer <key>`, or Anthropic's `x-api-key`.
fn bearer(req: &Request) -> Option<&str> {
    let headers = req.headers();
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get(API_KEY_HEADER).and_then(|v| v.to_str().ok()))
        .map(str::trim)
}

fn unauthorized(req: &Request, what: &str) -> Response {
    ApiError::new(
        axum::http::StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        "invalid_api_key",
        format!("{what}: send `Authorization: Bearer <key>` (or `x-api-key: <key>`) with a configured key"),
    )
    .render(Dialect::of_path(req.uri().path()))
}

/// With keys configured, `/v1` needs one; the key's entry rides along as an extension.
async fn client_auth(State(app): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let keys = &app.scheduler.settings().auth.keys;
    if keys.is_empty() {
        return next.run(req).await;
    }
    let found: Option<ApiKey> =
        bearer(&req).and_then(|k| keys.iter().find(|c| c.key == k).cloned());
    match found {
        Some(key) => {
            req.extensions_mut().insert(key);
            next.run(req).await
        }
        None => unauthorized(&req, "missing or unknown API key"),
    }
}

/// With an admin key configured, `/admin` needs it.
async fn admin_auth(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match &app.scheduler.settings().auth.admin_key {
        Some(key) if bearer(&req) != Some(key.as_str()) => {
            unauthorized(&req, "missing or wrong admin key")
        }
        _ => next.run(req).await,
    }
}
