//! `/upstream/{model}/{path…}`: a raw passthrough to one model's own server (its web UI, its
//! `/health`, `/props`, `/slots`, `/metrics`, any route the host does not speak), with the
//! model loaded first and held by a lease while the answer streams, authenticated as `/v1` is
//! and counted in `/metrics` under the route `upstream`. The model is named exactly (an id or
//! an alias); no policy chooses, nothing in the body is read or rewritten.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;

use super::metrics::RequestLabels;
use super::{ApiError, AppState, MODEL_HEADER, PRIORITY_HEADER};
use crate::config::ApiKey;
use crate::scheduler::Demand;

/// Headers that belong to one connection, never passed on (RFC 9110 §7.6.1), and the two the
/// host sets itself.
const NOT_PASSED: [HeaderName; 8] = [
    header::CONNECTION,
    header::HOST,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::AUTHORIZATION,
];

/// `ANY /upstream/{model}` and `/upstream/{model}/{*path}`.
pub async fn passthrough(
    State(app): State<Arc<AppState>>,
    Path(params): Path<Vec<(String, String)>>,
    req: Request,
) -> Response {
    let model = params
        .iter()
        .find(|(k, _)| k == "model")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let path = params
        .iter()
        .find(|(k, _)| k == "path")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    let (resp, served) = match forward(&app, &model, path, req).await {
        Ok(resp) => (resp, Some(model)),
        Err(e) => (e.into_response(), None),
    };
    app.metrics
        .requests
        .get_or_create(&RequestLabels {
            route: "upstream".into(),
            model: served.unwrap_or_default(),
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

async fn forward(
    app: &AppState,
    name: &str,
    path: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let settings = app.scheduler.settings();
    let Some(model) = settings.model(name) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!("the model {name:?} does not exist; GET /v1/models lists them"),
        ));
    };
    let key = req.extensions().get::<ApiKey>().cloned();
    let priority = req
        .headers()
        .get(PRIORITY_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(key.as_ref().map(|k| k.priority))
        .unwrap_or(0);
    let (parts, body) = super::parse::read_within(app, req).await?;
    let demand = Demand {
        priority,
        key: format!("upstream-{name}"),
        ..Demand::default()
    };
    let mut lease = app.scheduler.acquire(&model.id, &demand).await?;
    let endpoint = lease.endpoint();
    let root = endpoint
        .api_base
        .strip_suffix("/v1")
        .unwrap_or(&endpoint.api_base);
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let url = format!("{root}/{path}{query}");
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())
        .map_err(|_| ApiError::bad_request("invalid_method", "an unknown HTTP method"))?;
    let mut upstream = app.http.request(method, &url).body(body);
    for (name, value) in &parts.headers {
        if !NOT_PASSED.contains(name) {
            upstream = upstream.header(name.as_str(), value.as_bytes());
        }
    }
    if let Some(key) = &endpoint.api_key {
        upstream = upstream.bearer_auth(key);
    }
    let timeout = app.scheduler.settings().server.upstream_timeout;
    let answer = match tokio::time::timeout(timeout, upstream.send()).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            lease.fail();
            return Err(ApiError::backend(format!(
                "the server for {} failed: {e}",
                model.id
            )));
        }
        Err(_) => {
            lease.fail();
            return Err(ApiError::upstream_timeout(&model.id, timeout));
        }
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut resp = Response::builder().status(status);
    for (name, value) in answer.headers() {
        if !NOT_PASSED.iter().any(|n| n.as_str() == name.as_str()) {
            resp = resp.header(name.as_str(), value.as_bytes());
        }
    }
    resp = resp.header(MODEL_HEADER, model.id.as_str());
    // The lease rides in the stream: the model stays while its answer does.
    let stream = answer.bytes_stream().map(move |chunk| {
        let _held = &lease;
        chunk
    });
    resp.body(Body::from_stream(stream))
        .map_err(|e| ApiError::backend(format!("could not relay the answer: {e}")))
}
