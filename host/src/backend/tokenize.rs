//! Counting tokens with a model server's own tokenizer: llama-server's `POST /tokenize`
//! (`{"content": text}` → `{"tokens": [...]}`), at the server's root beside `/v1`.
//!
//! A server that answers 404 has no tokenizer, and is not asked again. A call that fails
//! otherwise (a timeout, a refused or dropped connection, a 5xx) is retried once; if it fails
//! again the count is unavailable and the caller must use a bound that never undercounts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

/// How long one count may take.
const TOKENIZE_TIMEOUT: Duration = Duration::from_secs(10);
/// Counts in flight at once to one server: a long conversation must not open a connection per
/// message (a one-slot server drops some of a hundred at once).
const CONCURRENT_COUNTS: usize = 8;
/// Retries of a count that failed for a reason other than a missing tokenizer.
const RETRIES: u32 = 1;
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Why a server could not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CountError {
    #[error("the server has no tokenizer")]
    Unsupported,
    #[error("the server's tokenizer did not answer: {0}")]
    Unavailable(String),
}

/// One server's tokenizer.
#[derive(Debug)]
pub struct Tokenizer {
    http: reqwest::Client,
    url: String,
    missing: AtomicBool,
}

impl Tokenizer {
    /// The tokenizer of the server whose OpenAI API root is `api_base` (`…/v1`).
    pub fn new(http: reqwest::Client, api_base: &str) -> Self {
        let root = api_base.strip_suffix("/v1").unwrap_or(api_base);
        Self {
            http,
            url: format!("{root}/tokenize"),
            missing: AtomicBool::new(false),
        }
    }

    /// The token count of each text, in order.
    pub async fn count(&self, texts: &[String]) -> Result<Vec<u32>, CountError> {
        if self.missing.load(Ordering::Relaxed) {
            return Err(CountError::Unsupported);
        }
        let mut counts = Vec::with_capacity(texts.len());
        for batch in texts.chunks(CONCURRENT_COUNTS) {
            let mut calls = Vec::with_capacity(batch.len());
            for text in batch {
                calls.push(self.count_one(text));
            }
            for count in futures_util::future::join_all(calls).await {
                counts.push(count?);
            }
        }
        Ok(counts)
    }

    async fn count_one(&self, text: &str) -> Result<u32, CountError> {
        let mut tries = 0;
        loop {
            match self.ask(text).await {
                Err(CountError::Unavailable(why)) if tries < RETRIES => {
                    tracing::debug!(url = %self.url, "counting tokens failed ({why}); retrying");
                    tries += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                other => return other,
            }
        }
    }

    async fn ask(&self, text: &str) -> Result<u32, CountError> {
        let resp = self
            .http
            .post(&self.url)
            .timeout(TOKENIZE_TIMEOUT)
            .json(&json!({"content": text}))
            .send()
            .await
            .map_err(|e| CountError::Unavailable(e.to_string()))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            self.missing.store(true, Ordering::Relaxed);
            return Err(CountError::Unsupported);
        }
        if !resp.status().is_success() {
            return Err(CountError::Unavailable(format!("status {}", resp.status())));
        }
        let body: Value = resp
            .json()
            .await
            .map_err(|e| CountError::Unavailable(e.to_string()))?;
        body["tokens"]
            .as_array()
            .map(|a| u32::try_from(a.len()).unwrap_or(u32::MAX))
            .ok_or_else(|| CountError::Unavailable("the answer has no \"tokens\" list".into()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    use axum::Json;
    use axum::http::StatusCode;
    use axum::routing::post;

    use super::*;

    /// A stand-in `/tokenize` (one token per word) that fails its first `failures` calls.
    async fn server(failures: u32, status: StatusCode) -> (String, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        let app = axum::Router::new().route(
            "/tokenize",
            post(move |Json(body): Json<Value>| {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < failures {
                        return Err(status);
                    }
                    let words = body["content"].as_str().unwrap_or("").split_whitespace();
                    Ok(Json(
                        json!({"tokens": words.map(|_| 1).collect::<Vec<_>>()}),
                    ))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/v1"), calls)
    }

    fn texts() -> Vec<String> {
        vec!["one two three".into(), "four".into()]
    }

    #[tokio::test]
    async fn a_count_that_fails_once_is_retried_and_exact() {
        let (base, calls) = server(1, StatusCode::SERVICE_UNAVAILABLE).await;
        let t = Tokenizer::new(reqwest::Client::new(), &base);
        assert_eq!(t.count(&texts()).await, Ok(vec![3, 1]));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_count_that_keeps_failing_is_unavailable() {
        let (base, _) = server(u32::MAX, StatusCode::SERVICE_UNAVAILABLE).await;
        let t = Tokenizer::new(reqwest::Client::new(), &base);
        assert!(matches!(
            t.count(&texts()).await,
            Err(CountError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn a_server_without_a_tokenizer_is_asked_once() {
        let (base, calls) = server(u32::MAX, StatusCode::NOT_FOUND).await;
        let t = Tokenizer::new(reqwest::Client::new(), &base);
        assert_eq!(t.count(&texts()).await, Err(CountError::Unsupported));
        let asked = calls.load(Ordering::SeqCst);
        assert_eq!(t.count(&texts()).await, Err(CountError::Unsupported));
        assert_eq!(calls.load(Ordering::SeqCst), asked, "not asked again");
    }
}
