//! Errors as clients see them: a status, OpenAI's type and code, a message and, where waiting
//! helps, `Retry-After`; [`super::dialect`] renders them in each route's API shape.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::recorder::Outcome;
use crate::scheduler::SchedError;

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// How the trace counts it: a refusal, a timeout, the request's fault or the server's.
    pub outcome: Outcome,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            retry_after: None,
            outcome: if status.is_client_error() {
                Outcome::Rejected
            } else {
                Outcome::Error
            },
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message,
        )
    }

    pub fn backend(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "api_error",
            "backend_error",
            message,
        )
    }

    /// A body over `server.max_body` (`limit` bytes).
    pub fn too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("the body is over the limit of {limit} bytes (server.max_body)"),
        )
    }

    /// The client did not send its whole body within `server.body_timeout`.
    pub fn body_timeout(timeout: Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "body_timeout",
            format!(
                "the body did not arrive within {} s (server.body_timeout)",
                timeout.as_secs_f64()
            ),
        )
    }

    /// `model`'s server did not start answering within `server.upstream_timeout`.
    pub fn upstream_timeout(model: &str, timeout: Duration) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "api_error",
            "backend_timeout",
            format!(
                "the server for {model} did not start answering within {}s (server.upstream_timeout)",
                timeout.as_secs()
            ),
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            message,
        )
    }
}

impl From<SchedError> for ApiError {
    fn from(e: SchedError) -> Self {
        let (status, kind, code) = match &e {
            SchedError::UnknownModel(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
            ),
            SchedError::QueueFull { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "queue_full",
            ),
            SchedError::LoadFailed { .. } => {
                (StatusCode::BAD_GATEWAY, "api_error", "model_load_failed")
            }
            SchedError::Crashed { .. } => (StatusCode::BAD_GATEWAY, "api_error", "model_crashed"),
            SchedError::Overloaded { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "model_overloaded",
            ),
            SchedError::Timeout { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "model_not_ready",
            ),
            SchedError::BackingOff { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "model_backing_off",
            ),
            SchedError::Rejected { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "model_rejected",
            ),
            SchedError::Busy { .. } => {
                (StatusCode::CONFLICT, "invalid_request_error", "model_busy")
            }
            SchedError::ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "shutting_down",
            ),
        };
        let outcome = match &e {
            SchedError::Timeout { .. } => Outcome::TimedOut,
            SchedError::QueueFull { .. }
            | SchedError::Overloaded { .. }
            | SchedError::BackingOff { .. }
            | SchedError::Rejected { .. }
            | SchedError::ShuttingDown => Outcome::Refused,
            SchedError::LoadFailed { .. } | SchedError::Crashed { .. } => Outcome::Error,
            SchedError::UnknownModel(_) | SchedError::Busy { .. } => Outcome::Rejected,
        };
        Self {
            status,
            kind,
            code,
            outcome,
            retry_after: e.retry_after(),
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    /// In OpenAI's shape; [`ApiError::render`] answers in a route's own.
    fn into_response(self) -> Response {
        self.render(super::dialect::Dialect::OpenAi)
    }
}
