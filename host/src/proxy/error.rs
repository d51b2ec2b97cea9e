//! Errors as clients see them: OpenAI-shaped JSON (`{"error":{"message","type","code"}}`)
//! with the right HTTP status and, where waiting helps, `Retry-After`.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

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
    fn into_response(self) -> Response {
        let body =
            json!({"error": {"message": self.message, "type": self.kind, "code": self.code}});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(after) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
