//! The OpenAI-compatible routes: `/v1/models`, and the routes that take the request path
//! ([`super::exchange`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::exchange::{Route, handle};

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

pub async fn chat(State(app): State<Arc<AppState>>, req: Request) -> Response {
    handle(app, req, Route::Chat).await
}

pub async fn completions(State(app): State<Arc<AppState>>, req: Request) -> Response {
    handle(app, req, Route::Completions).await
}

pub async fn embeddings(State(app): State<Arc<AppState>>, req: Request) -> Response {
    handle(app, req, Route::Embeddings).await
}

pub async fn responses(State(app): State<Arc<AppState>>, req: Request) -> Response {
    handle(app, req, Route::Responses).await
}

pub async fn rerank(State(app): State<Arc<AppState>>, req: Request) -> Response {
    handle(app, req, Route::Rerank).await
}
