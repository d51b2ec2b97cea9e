//! The OpenAI-compatible routes: the request path from body to relayed answer.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::context::{self, Compressed};
use super::metrics::{ModelLabels, RequestLabels};
use super::{ApiError, AppState, CONTEXT_HEADER, MODEL_HEADER, PRIORITY_HEADER, TASK_HEADER};
use crate::config::ApiKey;
use crate::engine::Hook;
use crate::engine::experiment::{Experiment, Outcome, Sticky};
use crate::engine::tokens;
use crate::engine::types::{self, Selection};
use crate::scheduler::Demand;

/// `GET /v1/models`: every id and alias, in OpenAI's shape plus our fields.
pub async fn list_models(State(app): State<Arc<AppState>>) -> impl IntoResponse {
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Chat,
    Completions,
    Embeddings,
}

impl Route {
    fn path(self) -> &'static str {
        match self {
            Route::Chat => "/chat/completions",
            Route::Completions => "/completions",
            Route::Embeddings => "/embeddings",
        }
    }
}

pub async fn chat(State(app): State<Arc<AppState>>, req: Request) -> Response {
    handle(app, req, Route::Chat).await
}

pub async fn completions(State(app): State<Arc<AppState>>, req: Request) -> Response {
    handle(app, req, Route::Completions).await
}

pub async fn embeddings(State(app): State<Arc<AppState>>, req: Request) -> Response {
    handle(app, req, Route::Embeddings).await
}

async fn handle(app: Arc<AppState>, req: Request, route: Route) -> Response {
    let began = Instant::now();
    let (model, resp) = match serve(&app, req, route, began).await {
        Ok(ok) => ok,
        Err((model, e)) => (model, e.into_response()),
    };
    app.metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route.path().trim_start_matches('/').to_string(),
            model: model.unwrap_or_default(),
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

type Failed = (Option<String>, ApiError);

/// Reads the body, refusing one over the limit before any of it is buffered.
async fn read_body(
    app: &AppState,
    req: Request,
) -> Result<(HeaderMap, Option<ApiKey>, Bytes), ApiError> {
    let limit = app.scheduler.settings().server.max_body;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("the body is over the limit of {limit} bytes (server.max_body)"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let key = req.extensions().get::<ApiKey>().cloned();
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .await
        .map_err(|_| too_large())?;
    Ok((parts.headers, key, bytes))
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `request.client`: the first 16 hex digits of SHA-256 over the client's name, stable across
/// requests and never the name itself.
fn client_hash(name: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(name.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn last_user_message(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|ms| ms.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| match &m["content"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .or_else(|| body["prompt"].as_str().map(str::to_string))
        .unwrap_or_default()
}

async fn serve(
    app: &Arc<AppState>,
    req: Request,
    route: Route,
    began: Instant,
) -> Result<(Option<String>, Response), Failed> {
    let (headers, key, bytes) = read_body(app, req).await.map_err(|e| (None, e))?;
    let mut body: Value = serde_json::from_slice(&bytes).map_err(|e| {
        (
            None,
            ApiError::bad_request("invalid_json", format!("the body is not JSON: {e}")),
        )
    })?;
    if !body.is_object() {
        return Err((
            None,
            ApiError::bad_request("invalid_json", "the body must be a JSON object"),
        ));
    }
    let Some(asked) = body["model"].as_str().map(str::to_string) else {
        return Err((
            None,
            ApiError::bad_request("missing_model", "the body has no \"model\" string"),
        ));
    };
    let priority = match header_text(&headers, PRIORITY_HEADER) {
        None => key.as_ref().map_or(0, |k| k.priority),
        Some(p) => p.trim().parse().map_err(|_| {
            (
                None,
                ApiError::bad_request(
                    "invalid_priority",
                    format!("{PRIORITY_HEADER} must be an integer, not {p:?}"),
                ),
            )
        })?,
    };
    let task = header_text(&headers, TASK_HEADER)
        .or_else(|| body["metadata"]["task"].as_str().map(str::to_string));
    let client = key
        .as_ref()
        .map(|k| k.name.as_str())
        .or_else(|| body["user"].as_str())
        .map(client_hash);
    let last_user = last_user_message(&body);
    let request = types::Request {
        id: format!("req-{}", app.next_id.fetch_add(1, Ordering::Relaxed)),
        model: asked.clone(),
        task: task.clone(),
        priority,
        client,
        prompt_tokens: tokens::estimate(&String::from_utf8_lossy(&bytes)),
        max_tokens: context::requested_output(&body),
        last_user_message: last_user,
    };

    // Each experiment running now, with this request's sticky key for it.
    let user = body["user"].as_str().map(str::to_string);
    let experiments: Vec<(Hook, Arc<Experiment>, String)> = Hook::ALL
        .into_iter()
        .filter_map(|h| app.scheduler.hooks().experiment(h).map(|e| (h, e)))
        .map(|(h, e)| {
            let key = match e.sticky {
                Sticky::Client => request.client.clone(),
                Sticky::User => user.clone(),
                Sticky::Request => None,
            }
            .unwrap_or_else(|| request.id.clone());
            (h, e, key)
        })
        .collect();
    let key_for = |hook: Hook| {
        experiments
            .iter()
            .find(|(h, _, _)| *h == hook)
            .map_or_else(|| request.id.clone(), |(_, _, k)| k.clone())
    };

    // select-model
    let candidates = app.scheduler.candidates();
    let telemetry = app.scheduler.telemetry();
    let hooks = app.scheduler.hooks().clone();
    let select_req = request.clone();
    let select_candidates = candidates.clone();
    let select_key = key_for(Hook::SelectModel);
    let decided = tokio::task::spawn_blocking(move || {
        hooks.select_model_for(&select_key, &select_req, &select_candidates, &telemetry)
    })
    .await
    .map_err(|e| {
        (
            None,
            ApiError::backend(format!("select-model did not run: {e}")),
        )
    })?;
    let chosen = match decided.value {
        Selection::Model(id) => id,
        Selection::Reject(reason) => {
            let known = asked == "auto" || app.scheduler.settings().model(&asked).is_some();
            let e = if known {
                ApiError::bad_request(
                    "model_rejected",
                    format!("no model can serve this request: {reason}"),
                )
            } else {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    "model_not_found",
                    format!("the model {asked:?} does not exist; GET /v1/models lists them"),
                )
            };
            return Err((None, e));
        }
    };
    let fail = |e: ApiError| (Some(chosen.clone()), e);
    let wit_model = candidates
        .iter()
        .find(|m| m.id == chosen)
        .cloned()
        .ok_or_else(|| {
            fail(ApiError::backend(
                "select-model chose a model that vanished",
            ))
        })?;

    let demand = Demand {
        priority,
        task,
        key: key_for(Hook::ChooseEviction),
    };
    let mut lease = app
        .scheduler
        .acquire(&chosen, &demand)
        .await
        .map_err(|e| fail(e.into()))?;
    let endpoint = lease.endpoint().clone();

    // compress-context, only when the prompt does not fit
    let mut compressed: Option<Compressed> = None;
    let prompt_tokens = match route {
        Route::Chat => {
            let (c, n) = context::fit_chat(
                &key_for(Hook::CompressContext),
                &app.counter,
                &app.http,
                app.scheduler.hooks(),
                &endpoint,
                &wit_model,
                &mut body,
            )
            .await
            .map_err(fail)?;
            compressed = c;
            n
        }
        Route::Completions => {
            context::check_prompt(&app.counter, &app.http, &endpoint, &wit_model, &body)
                .await
                .map_err(fail)?
        }
        Route::Embeddings => request.prompt_tokens,
    };
    let labels = ModelLabels {
        model: chosen.clone(),
    };
    app.metrics
        .prompt_tokens
        .get_or_create(&labels)
        .inc_by(u64::from(prompt_tokens));
    if let Some(c) = &compressed {
        tracing::info!(model = %chosen, before = c.before, after = c.after, dropped = c.dropped_messages, "compressed the conversation");
        app.metrics
            .compressed_tokens
            .get_or_create(&labels)
            .inc_by(u64::from(c.before.saturating_sub(c.after)));
    }

    body["model"] = Value::String(endpoint.model_name.clone());
    let mut upstream = app
        .http
        .post(format!("{}{}", endpoint.api_base, route.path()))
        .json(&body);
    if let Some(key) = &endpoint.api_key {
        upstream = upstream.bearer_auth(key);
    }
    let timeout = app.scheduler.settings().server.upstream_timeout;
    let answer = match tokio::time::timeout(timeout, upstream.send()).await {
        Err(_) => {
            lease.fail();
            return Err(fail(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "api_error",
                "backend_timeout",
                format!(
                    "the server for {chosen} did not start answering within {}s (server.upstream_timeout)",
                    timeout.as_secs()
                ),
            )));
        }
        Ok(Err(e)) => {
            lease.backend_failed().await;
            return Err(fail(ApiError::backend(format!(
                "the server for {chosen} failed: {}",
                error_chain(&e)
            ))));
        }
        Ok(Ok(r)) => r,
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer.headers().get(reqwest::header::CONTENT_TYPE).cloned();
    if status.is_server_error() {
        lease.fail();
    }
    // The lease and the latency timer live in the stream: they end when the answer is sent or
    // the client goes away (which drops the stream and, with it, the upstream request).
    let latency = app.metrics.latency.get_or_create(&labels).clone();
    let mut done = Finish {
        latency,
        began,
        first_chunk: None,
        hit: lease.ready_on_arrival,
        load_seconds: lease.load_seconds,
        tokens_removed: compressed
            .as_ref()
            .map_or(0, |c| c.before.saturating_sub(c.after)),
        experiments: experiments.into_iter().map(|(_, e, k)| (e, k)).collect(),
    };
    let model = chosen.clone();
    let stream = answer.bytes_stream().map(move |chunk| {
        done.first_chunk.get_or_insert_with(Instant::now);
        if let Err(e) = &chunk {
            tracing::warn!(model = %model, error = %e, "the server broke off its answer");
            lease.fail();
        }
        chunk
    });
    let mut resp = Response::builder().status(status);
    if let Some(ct) = content_type {
        resp = resp.header(header::CONTENT_TYPE, ct.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_str(&chosen) {
        resp = resp.header(MODEL_HEADER, v);
    }
    if let Some(c) = &compressed
        && let Ok(v) = HeaderValue::from_str(&c.header())
    {
        resp = resp.header(CONTEXT_HEADER, v);
    }
    let resp = resp.body(Body::from_stream(stream)).map_err(|e| {
        fail(ApiError::backend(format!(
            "could not relay the answer: {e}"
        )))
    })?;
    Ok((Some(chosen), resp))
}

/// Records the request's duration, and its outcome on each experiment's arm, when the
/// answer's stream ends or is dropped.
struct Finish {
    latency: prometheus_client::metrics::histogram::Histogram,
    began: Instant,
    first_chunk: Option<Instant>,
    hit: bool,
    load_seconds: Option<f64>,
    tokens_removed: u32,
    experiments: Vec<(Arc<Experiment>, String)>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let took = self.began.elapsed();
        self.latency.observe(took.as_secs_f64());
        let outcome = Outcome {
            hit: self.hit,
            load_seconds: self.load_seconds,
            latency_ms: took.as_secs_f64() * 1e3,
            ttft_ms: self
                .first_chunk
                .map(|t| (t - self.began).as_secs_f64() * 1e3),
            tokens_removed: self.tokens_removed,
        };
        for (e, key) in &self.experiments {
            e.record_outcome(key, outcome);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_client_is_a_stable_hash_of_the_name_never_the_name() {
        let a = client_hash("team-a");
        assert_eq!(a, client_hash("team-a"), "stable");
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!a.contains("team"));
        assert_ne!(a, client_hash("team-b"));
        // SHA-256("team-a"), first 8 bytes.
        assert_eq!(a, "96c2886c51d1dfb4");
    }
}
