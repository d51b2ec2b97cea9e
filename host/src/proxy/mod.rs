//! The HTTP face: OpenAI-compatible routes under `/v1` (with Anthropic's Messages), Ollama's
//! under `/api`, the raw `/upstream/{model}/…`, the admin routes under `/admin` and the
//! dashboard at `/ui` (both behind the admin key), `/metrics` and `/health`; served by
//! [`listen`]'s accept loop, and answered 503 by every route once the host begins to shut down.
//!
//! A request flows one way, as stages over one exchange ([`exchange`] names them): parse →
//! route (`select-model`) → acquire (the scheduler's [`Lease`](crate::scheduler::Lease)) → fit
//! (`compress-context` when the prompt does not fit) → forward → relay the answer chunk by
//! chunk. The lease lives in the relayed stream, so a model is never evicted under a request,
//! and a client that goes away drops the stream, which drops the lease and the upstream
//! request. Every error takes its route's API shape (`dialect`) with the right status.

mod acquire;
mod admin;
mod anthropic;
mod dashboard;
mod dialect;
mod error;
mod exchange;
mod fit;
mod forward;
pub mod listen;
mod metrics;
pub mod model_server;
mod ollama;
mod openai;
mod parse;
mod record;
mod relay;
mod route;
mod translate;

#[doc(hidden)]
pub use translate::fuzz;
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
    /// A client that keeps no connection: a request sent again after a pooled connection
    /// broke goes out on a new one, never on another idle one that may be closing too.
    pub http_fresh: reqwest::Client,
    pub metrics: Metrics,
    /// What the ready models' servers last said of their KV caches, for `/metrics`.
    pub kv: Arc<model_server::KvReadings>,
    /// Where each request's record goes, when `[trace] record` says.
    pub recorder: Option<Arc<Recorder>>,
    /// Which version of the config file serves, for `/admin/config`.
    pub config: Arc<crate::reload::ConfigStatus>,
    /// Reloads the config on `POST /admin/config/reload`, when it came from a file.
    pub reloader: Option<Arc<crate::reload::Reloader>>,
    next_id: std::sync::atomic::AtomicU64,
    /// Models whose servers answered 404 on an API's route: the host translates it for them.
    lacking: std::sync::Mutex<std::collections::HashSet<(String, Api)>>,
    /// Turns true when the host begins to shut down: streams that never end by themselves
    /// (the dashboard's events) end then, so that the graceful shutdown does not wait on them.
    closing: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    pub fn new(scheduler: Scheduler, policies: Arc<PolicySet>, http: reqwest::Client) -> Self {
        let kv = Arc::new(model_server::KvReadings::default());
        Self {
            policies,
            metrics: Metrics::new(scheduler.clone(), kv.clone()),
            kv,
            scheduler,
            http,
            http_fresh: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap_or_default(),
            recorder: None,
            config: Arc::default(),
            reloader: None,
            next_id: std::sync::atomic::AtomicU64::new(1),
            lacking: std::sync::Mutex::default(),
            closing: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Says the host is shutting down: new requests get 503, endless streams end.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Whether the host is shutting down.
    pub fn is_closing(&self) -> bool {
        *self.closing.borrow()
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
        .route("/admin/config", get(admin::config))
        .route("/admin/config/reload", post(admin::reload_config))
        .route("/admin/discover", post(admin::discover))
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
        .route("/admin/events", get(dashboard::events))
        .route("/ui", get(dashboard::index))
        .route("/ui/", get(dashboard::index))
        .route("/ui/app.js", get(dashboard::script))
        .route("/ui/app.css", get(dashboard::style))
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
        .layer(middleware::from_fn_with_state(state.clone(), closing_gate))
        .with_state(state)
}

/// While the host shuts down, every new request gets a 503 in its route's shape (so that a
/// client retries elsewhere or later), and the requests already in flight finish.
async fn closing_gate(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if !app.is_closing() {
        return next.run(req).await;
    }
    let mut e = ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        "shutting_down",
        "the host is shutting down; retry on another host or after it restarts",
    );
    e.retry_after = Some(CLOSING_RETRY_AFTER);
    e.render(Dialect::of_path(req.uri().path()))
}

/// The `Retry-After` of a request refused while the host shuts down.
const CLOSING_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

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
    // Every key is compared, each in the same time, so that timing tells nothing of them.
    let found: Option<ApiKey> = bearer(&req).and_then(|sent| {
        keys.iter()
            .fold(
                None,
                |found, c| {
                    if c.key.matches(sent) { Some(c) } else { found }
                },
            )
            .cloned()
    });
    match found {
        Some(key) => {
            req.extensions_mut().insert(key);
            next.run(req).await
        }
        None => unauthorized(&req, "missing or unknown API key"),
    }
}

/// The password of `Authorization: Basic …` (any user name): how a browser sends the admin
/// key to `/ui` and, from the page, to `/admin`, after asking for it once.
fn basic_password(req: &Request) -> Option<String> {
    use base64::Engine as _;
    let encoded = req
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_string())
}

/// With an admin key configured, `/admin` and `/ui` need it: as a bearer token (or
/// `x-api-key`), or as the password of HTTP Basic auth, which a browser asks for when `/ui`
/// answers 401.
async fn admin_auth(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(key) = &app.scheduler.settings().auth.admin_key else {
        return next.run(req).await;
    };
    let sent = bearer(&req)
        .map(str::to_string)
        .or_else(|| basic_password(&req));
    if sent.is_some_and(|s| key.matches(&s)) {
        return next.run(req).await;
    }
    let mut resp = unauthorized(&req, "missing or wrong admin key");
    if req.uri().path().starts_with("/ui") {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static(
                "Basic realm=\"modelyard admin\", charset=\"UTF-8\"",
            ),
        );
    }
    resp
}
