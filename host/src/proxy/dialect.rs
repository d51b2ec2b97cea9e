//! The error shapes of the APIs the host speaks. Every route answers its errors in its own
//! API's shape with the right status: OpenAI's `{"error":{"message","type","code"}}`,
//! Anthropic's `{"type":"error","error":{"type","message"}}`, Ollama's `{"error":"…"}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use serde_json::{Value, json};

use super::ApiError;

/// An API's conventions for errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
    Ollama,
}

impl Dialect {
    /// The dialect of a request path, for answers made before a route runs (authentication).
    pub fn of_path(path: &str) -> Self {
        if path.starts_with("/v1/messages") {
            Dialect::Anthropic
        } else if path.starts_with("/api/") {
            Dialect::Ollama
        } else {
            Dialect::OpenAi
        }
    }

    /// The error body for `status` and `message`; `kind` and `code` are OpenAI's fields.
    pub fn error_body(self, status: StatusCode, kind: &str, code: &str, message: &str) -> Value {
        match self {
            Dialect::OpenAi => json!({"error": {"message": message, "type": kind, "code": code}}),
            Dialect::Anthropic => json!({
                "type": "error",
                "error": {"type": anthropic_type(status), "message": message},
            }),
            Dialect::Ollama => json!({"error": message}),
        }
    }

    /// A server's error body (`bytes`, answered with `status`) in this dialect; `None` when it
    /// is already in it or is not JSON the host can read.
    pub fn reshape(self, status: StatusCode, bytes: &[u8]) -> Option<Value> {
        let body: Value = serde_json::from_slice(bytes).ok()?;
        let already = match self {
            Dialect::OpenAi => return None,
            Dialect::Anthropic => body["type"] == "error",
            Dialect::Ollama => body["error"].is_string(),
        };
        if already {
            return None;
        }
        let message = match &body["error"] {
            Value::String(s) => s.clone(),
            e => e["message"]
                .as_str()
                .map(str::to_string)
                .or_else(|| body["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| body.to_string()),
        };
        Some(self.error_body(status, "api_error", "backend_error", &message))
    }
}

/// Anthropic's error type for an HTTP status (its API's "Errors" page).
fn anthropic_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

impl ApiError {
    /// The error as a response in `dialect`'s shape, with `Retry-After` where waiting helps.
    pub fn render(self, dialect: Dialect) -> Response {
        let body = dialect.error_body(self.status, self.kind, self.code, &self.message);
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(after) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dialect_has_its_shape() {
        let e = || ApiError::bad_request("invalid_json", "the body is not JSON");
        let body = |d: Dialect| {
            let resp = e().render(d);
            assert_eq!(resp.status(), 400);
            resp
        };
        for d in [Dialect::OpenAi, Dialect::Anthropic, Dialect::Ollama] {
            body(d);
        }
        let s = StatusCode::BAD_REQUEST;
        assert_eq!(
            Dialect::OpenAi.error_body(s, "invalid_request_error", "invalid_json", "m"),
            json!({"error": {"message": "m", "type": "invalid_request_error", "code": "invalid_json"}})
        );
        assert_eq!(
            Dialect::Anthropic.error_body(StatusCode::NOT_FOUND, "x", "y", "m"),
            json!({"type": "error", "error": {"type": "not_found_error", "message": "m"}})
        );
        assert_eq!(
            Dialect::Ollama.error_body(s, "x", "y", "m"),
            json!({"error": "m"})
        );
    }

    #[test]
    fn a_servers_error_is_reshaped_once() {
        let llama =
            br#"{"error":{"code":400,"message":"too long","type":"invalid_request_error"}}"#;
        let s = StatusCode::BAD_REQUEST;
        assert_eq!(
            Dialect::Anthropic.reshape(s, llama),
            Some(
                json!({"type": "error", "error": {"type": "invalid_request_error", "message": "too long"}})
            )
        );
        assert_eq!(
            Dialect::Ollama.reshape(s, llama),
            Some(json!({"error": "too long"}))
        );
        assert_eq!(Dialect::OpenAi.reshape(s, llama), None);
        let anthropic =
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"m"}}"#;
        assert_eq!(Dialect::Anthropic.reshape(s, anthropic), None);
        assert_eq!(Dialect::Anthropic.reshape(s, b"not json"), None);
    }

    #[test]
    fn paths_name_their_dialect() {
        assert_eq!(Dialect::of_path("/v1/messages"), Dialect::Anthropic);
        assert_eq!(
            Dialect::of_path("/v1/messages/count_tokens"),
            Dialect::Anthropic
        );
        assert_eq!(Dialect::of_path("/api/chat"), Dialect::Ollama);
        assert_eq!(Dialect::of_path("/v1/chat/completions"), Dialect::OpenAi);
    }
}
