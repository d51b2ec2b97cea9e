//! The forward stage: the request, with `model` rewritten to the name the server expects, sent
//! to the leased model's server; its answer's head comes back within
//! `server.upstream_timeout`.

use serde_json::Value;

use super::exchange::Exchange;
use super::{ApiError, AppState};
use crate::scheduler::Lease;

/// Sends the request and waits for the answer's head. A server that cannot be reached or
/// breaks off (twice: once may be a connection it had just closed) counts against its model
/// (and, if it died, marks the model failed).
pub async fn forward(
    app: &AppState,
    ex: &mut Exchange,
    lease: &mut Lease,
) -> Result<reqwest::Response, ApiError> {
    let endpoint = lease.endpoint();
    ex.body["model"] = Value::String(endpoint.model_name.clone());
    let url = format!("{}{}", endpoint.api_base, ex.upstream().upstream_path());
    let send = |lease: &Lease, http: &reqwest::Client| {
        let mut upstream = http.post(&url).json(&ex.body);
        for (name, value) in &ex.passed_headers {
            upstream = upstream.header(name, value);
        }
        if let Some(key) = &lease.endpoint().api_key {
            upstream = upstream.bearer_auth(key);
        }
        upstream.send()
    };
    let model = lease.model().to_string();
    let timeout = app.scheduler.settings().server.upstream_timeout;
    let mut sent = tokio::time::timeout(timeout, send(lease, &app.http)).await;
    // A server may close a kept-alive connection just as the next request goes out on it
    // (llama-server does after a streamed answer): that request never reached it, so it goes
    // once more, on a new connection (the pool could hand out another one that is closing:
    // the 1,000-client run met three such 502s when the retry used it).
    if let Ok(Err(e)) = &sent
        && !e.is_timeout()
    {
        tracing::debug!(model = %model, error = %error_chain(e), "sending again on a fresh connection");
        sent = tokio::time::timeout(timeout, send(lease, &app.http_fresh)).await;
    }
    match sent {
        Err(_) => {
            lease.fail();
            Err(ApiError::upstream_timeout(&model, timeout))
        }
        Ok(Err(e)) => {
            lease.backend_failed().await;
            Err(ApiError::backend(format!(
                "the server for {model} failed: {}",
                error_chain(&e)
            )))
        }
        Ok(Ok(answer)) => Ok(answer),
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
