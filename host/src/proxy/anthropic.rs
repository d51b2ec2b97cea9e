//! Anthropic's Messages API: `/v1/messages` and `/v1/messages/count_tokens`, on the request
//! path ([`super::exchange`]) with Anthropic's error shape. `x-api-key` authenticates as a
//! bearer key does; `anthropic-version` and `anthropic-beta` go on to the server.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;

use super::AppState;
use super::exchange::{Route, handle};

pub async fn messages(State(app): State<Arc<AppState>>, req: Request) -> Response {
    handle(app, req, Route::Messages).await
}

pub async fn count_tokens(State(app): State<Arc<AppState>>, req: Request) -> Response {
    handle(app, req, Route::CountTokens).await
}
