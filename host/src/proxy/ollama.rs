//! Ollama's API under `/api`, for the front-ends that speak only it: `version`, `tags`, `ps`
//! and `show` answered from the host's own view; `chat`, `generate`, `embed` and `embeddings`
//! on the one request path, translated to the OpenAI routes ([`super::translate`]); a chat or
//! generate with nothing to say loads the model (or, with `keep_alive: 0`, unloads it), as
//! Ollama's do. Models come from the config, so `pull`, `push`, `create`, `copy` and `delete`
//! answer an error that names it. Errors are Ollama's `{"error": "…"}`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::dialect::Dialect;
use super::exchange::{Route, handle};
use super::translate::keep_alive;
use super::{ApiError, AppState};
use crate::config::{Capability, ModelSettings, Settings};
use crate::scheduler::{KeepAlive, ModelStatus};

/// The Ollama version the host answers `/api/version` with: the API it follows.
pub const OLLAMA_API_VERSION: &str = "0.12.0";

/// A model kept without a TTL "expires" this far ahead, as Ollama shows one kept forever.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    ApiError::new(status, "invalid_request_error", "ollama", message).render(Dialect::Ollama)
}

fn not_found(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("model '{name}' not found; GET /api/tags lists them"),
    )
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A stable digest for a model: SHA-256 over its id and file (not its contents, which the
/// host never reads whole).
fn digest(m: &ModelSettings) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(m.id.as_bytes());
    h.update(
        file_of(m)
            .map(|f| f.display().to_string())
            .unwrap_or_default()
            .as_bytes(),
    );
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn file_of(m: &ModelSettings) -> Option<&std::path::Path> {
    match &m.backend {
        crate::config::BackendSettings::Command(c) => c.file.as_deref(),
        _ => None,
    }
}

fn details(m: &ModelSettings) -> Value {
    let file = file_of(m);
    let format = match file.and_then(|f| f.extension()) {
        Some(e) if e.eq_ignore_ascii_case("gguf") => "gguf",
        _ => "",
    };
    // The quantization as GGUF file names carry it (`…Q4_K_M.gguf`).
    let quant = file
        .and_then(|f| f.file_stem())
        .and_then(|s| s.to_str())
        .and_then(|s| s.rsplit(['.', '-']).next())
        .filter(|q| q.to_ascii_uppercase().starts_with('Q') || q.starts_with("IQ"))
        .map(str::to_ascii_uppercase)
        .unwrap_or_default();
    json!({"parent_model": "", "format": format, "family": "", "families": null,
        "parameter_size": "", "quantization_level": quant})
}

fn modified(m: &ModelSettings) -> String {
    let t = file_of(m)
        .and_then(|f| std::fs::metadata(f).ok())
        .and_then(|md| md.modified().ok())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    rfc3339(t)
}

/// Each name (id and alias) of each model in `settings`, with the model it means.
fn names(settings: &Settings) -> impl Iterator<Item = (&str, &ModelSettings)> {
    settings.models.iter().flat_map(|m| {
        std::iter::once(&m.id)
            .chain(&m.aliases)
            .map(move |n| (n.as_str(), m))
    })
}

fn status_of<'a>(models: &'a [ModelStatus], id: &str) -> Option<&'a ModelStatus> {
    models.iter().find(|s| s.id == id)
}

/// `GET /api/version`.
pub async fn version() -> impl IntoResponse {
    axum::Json(json!({"version": OLLAMA_API_VERSION}))
}

/// `GET /api/tags`: every model name, as Ollama lists pulled models.
pub async fn tags(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    let status = app.scheduler.status();
    let settings = app.scheduler.settings();
    let models: Vec<Value> = names(&settings)
        .map(|(name, m)| {
            json!({
                "name": name, "model": name, "modified_at": modified(m),
                "size": status_of(&status.models, &m.id).map_or(0, |s| s.size_bytes),
                "digest": digest(m), "details": details(m),
            })
        })
        .collect();
    axum::Json(json!({"models": models}))
}

/// `GET /api/ps`: the loaded models, with when each would be unloaded idle.
pub async fn ps(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    let status = app.scheduler.status();
    let settings = app.scheduler.settings();
    let now = SystemTime::now();
    let models: Vec<Value> = status
        .models
        .iter()
        .filter(|s| s.state == "ready")
        .filter_map(|s| Some((s, settings.model(&s.id)?)))
        .map(|(s, m)| {
            let left = match (s.ttl_secs, s.idle_ms) {
                (Some(ttl), idle) => Duration::from_secs(ttl)
                    .saturating_sub(Duration::from_millis(idle.unwrap_or(0))),
                (None, _) => FOREVER,
            };
            json!({
                "name": s.id, "model": s.id, "size": s.size_bytes, "digest": digest(m),
                "details": details(m), "expires_at": rfc3339(now + left),
                "size_vram": s.vram_bytes, "context_length": m.context_tokens,
            })
        })
        .collect();
    axum::Json(json!({"models": models}))
}

/// `POST /api/show`: what the host knows of one model.
pub async fn show(State(app): State<Arc<AppState>>, body: Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not JSON: {e}"),
            );
        }
    };
    let Some(name) = body["model"].as_str().or(body["name"].as_str()) else {
        return error(StatusCode::BAD_REQUEST, "the body has no \"model\" string");
    };
    let settings = app.scheduler.settings();
    let Some(m) = settings.model(name) else {
        return not_found(name);
    };
    let capabilities: Vec<&str> = m
        .capabilities
        .iter()
        .filter_map(|c| match c {
            Capability::Chat => Some("completion"),
            Capability::Embeddings => Some("embedding"),
            _ => None,
        })
        .collect();
    let config = source(&app);
    axum::Json(json!({
        "modelfile": format!("# {} is served by modelyard; its settings are [models.{}] in {config}", name, m.id),
        "parameters": "", "template": "", "details": details(m),
        "model_info": {"general.context_length": m.context_tokens},
        "capabilities": capabilities, "modified_at": modified(m),
    }))
    .into_response()
}

fn source(app: &AppState) -> String {
    app.scheduler
        .settings()
        .source
        .as_ref()
        .map_or("the host's config file".to_string(), |p| {
            p.display().to_string()
        })
}

/// `pull`, `push`, `create`, `copy`, `delete`: models come from the config here.
pub async fn managed(State(app): State<Arc<AppState>>, req: Request) -> Response {
    let verb = req.uri().path().trim_start_matches("/api/").to_string();
    error(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "modelyard does not {verb} models: they are the [models.*] tables of {}; \
             add one (with its `file`) and restart the host",
            source(&app)
        ),
    )
}

/// Reads the body within `server.max_body` and hands the request on, rebuilt.
async fn buffered(app: &AppState, req: Request) -> Result<(Request, Value), Response> {
    let (parts, bytes) = super::parse::read_within(app, req)
        .await
        .map_err(|e| e.render(Dialect::Ollama))?;
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((Request::from_parts(parts, Body::from(bytes)), value))
}

/// A chat or generate request with nothing to say loads or unloads its model.
async fn load_only(app: &AppState, body: &Value, route: Route) -> Option<Response> {
    let said = if route == Route::OllamaChat {
        &body["messages"]
    } else {
        &body["prompt"]
    };
    // Of the wrong type, it is the request path's to refuse.
    let empty = match said {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    let name = body["model"].as_str()?;
    if !empty || !body.is_object() {
        return None;
    }
    if app.scheduler.settings().model(name).is_none() {
        return Some(not_found(name));
    }
    let keep = match keep_alive(body) {
        Ok(k) => k,
        Err(e) => return Some(e.render(Dialect::Ollama)),
    };
    let done = if keep == Some(KeepAlive::Unload) {
        app.scheduler
            .keep_alive(name, KeepAlive::Unload)
            .await
            .map(|()| "unload")
    } else {
        let loaded = app.scheduler.load(name).await;
        match (loaded, keep) {
            (Ok(()), Some(k)) => app.scheduler.keep_alive(name, k).await.map(|()| "load"),
            (r, _) => r.map(|()| "load"),
        }
    };
    let done_reason = match done {
        Ok(r) => r,
        Err(e) => return Some(ApiError::from(e).render(Dialect::Ollama)),
    };
    let mut out = json!({"model": name, "created_at": rfc3339(SystemTime::now()),
        "done": true, "done_reason": done_reason});
    if route == Route::OllamaChat {
        out["message"] = json!({"role": "assistant", "content": ""});
    } else {
        out["response"] = json!("");
    }
    Some(axum::Json(out).into_response())
}

async fn on_path(app: Arc<AppState>, req: Request, route: Route) -> Response {
    let (req, body) = match buffered(&app, req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if matches!(route, Route::OllamaChat | Route::OllamaGenerate)
        && let Some(resp) = load_only(&app, &body, route).await
    {
        return resp;
    }
    handle(app, req, route).await
}

pub async fn chat(State(app): State<Arc<AppState>>, req: Request) -> Response {
    on_path(app, req, Route::OllamaChat).await
}

pub async fn generate(State(app): State<Arc<AppState>>, req: Request) -> Response {
    on_path(app, req, Route::OllamaGenerate).await
}

pub async fn embed(State(app): State<Arc<AppState>>, req: Request) -> Response {
    on_path(app, req, Route::OllamaEmbed).await
}

pub async fn embeddings(State(app): State<Arc<AppState>>, req: Request) -> Response {
    on_path(app, req, Route::OllamaEmbeddings).await
}
