//! The relay stage: the server's answer streamed back chunk by chunk. The lease and the
//! request's timers live in the stream, so a model is never evicted under its answer, and a
//! client that goes away drops the stream, the lease and the upstream request with it.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt as _;
use tokio::time::Instant;

use super::exchange::Exchange;
use super::metrics::ModelLabels;
use super::record::Answer;
use super::translate::Translator;
use super::{ApiError, AppState, CONTEXT_HEADER, MODEL_HEADER, TRANSLATED_HEADER};
use crate::engine::experiment::{Experiment, Outcome};
use crate::scheduler::Lease;

/// The most of a server's error body that is read to put it in the route's shape.
const MAX_ERROR_BODY: usize = 64 << 10;

/// An answer's body, chunk by chunk.
type Chunks = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<axum::body::Bytes, reqwest::Error>> + Send>,
>;

/// Relays `answer` to the client with the host's headers. A server's error on a route of
/// another API than OpenAI's is put in that API's shape.
pub async fn relay(
    app: &AppState,
    ex: &mut Exchange,
    mut lease: Lease,
    answer: reqwest::Response,
) -> Result<Response, ApiError> {
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut content_type = answer.headers().get(reqwest::header::CONTENT_TYPE).cloned();
    let dialect = ex.route.dialect();
    let body: Chunks = if status.is_client_error() || status.is_server_error() {
        let bytes = read_limited(answer).await;
        match dialect.reshape(status, &bytes) {
            Some(shaped) => {
                content_type = Some(HeaderValue::from_static("application/json"));
                Box::pin(futures_util::stream::iter([Ok(shaped.to_string().into())]))
            }
            None => Box::pin(futures_util::stream::iter([Ok(bytes)])),
        }
    } else {
        Box::pin(answer.bytes_stream())
    };
    // A translated request's answer goes back in the client's API; its errors took the
    // dialect's shape above.
    let translated = ex.translation.as_ref().map(|t| t.upstream.name());
    let translator = ex
        .translation
        .take()
        .filter(|_| status.is_success())
        .map(|t| {
            content_type = Some(HeaderValue::from_static(t.content_type()));
            t.translator(lease.load_seconds)
        });
    if status.is_server_error() {
        lease.fail();
    }
    let model = lease.model().to_string();
    let labels = ModelLabels {
        model: model.clone(),
    };
    let finish = Finish {
        latency: app.metrics.latency.get_or_create(&labels).clone(),
        began: ex.began,
        first_chunk: None,
        hit: lease.ready_on_arrival,
        load_seconds: lease.load_seconds,
        tokens_removed: ex.fitted.tokens_removed(),
        experiments: std::mem::take(&mut ex.arms)
            .into_iter()
            .map(|a| (a.experiment, a.key))
            .collect(),
        answer: Answer::start(app, ex, status.as_u16()),
        ended: false,
    };
    let mut resp = Response::builder().status(status);
    if let Some(ct) = content_type {
        resp = resp.header(header::CONTENT_TYPE, ct.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_str(&model) {
        resp = resp.header(MODEL_HEADER, v);
    }
    if let Some(route) = translated {
        resp = resp.header(TRANSLATED_HEADER, route);
    }
    let context = match (&ex.fell_back_from, ex.fitted.header()) {
        (Some(from), None) => Some(format!("fallback; from={from}")),
        (Some(from), Some(h)) => Some(format!("fallback; from={from}; {h}")),
        (None, h) => h,
    };
    if let Some(v) = context.and_then(|h| HeaderValue::from_str(&h).ok()) {
        resp = resp.header(CONTEXT_HEADER, v);
    }
    // The state holds the finish, so the stream's end, or its drop when the client leaves,
    // records the request.
    let relayed = Relayed {
        body,
        translator,
        finish,
        lease,
        done: false,
    };
    let stream = futures_util::stream::unfold(relayed, |mut r| async move {
        loop {
            if r.done {
                return None;
            }
            let Some(chunk) = r.body.next().await else {
                r.finish.end();
                r.done = true;
                let tail = r.translator.as_mut().map(|t| t.end()).unwrap_or_default();
                return (!tail.is_empty()).then(|| (Ok(tail.into()), r));
            };
            r.finish.chunk(chunk.as_ref().ok().map(|b| &b[..]));
            r.lease.first_token();
            let bytes = match chunk {
                Err(e) => {
                    tracing::warn!(model = %r.lease.model(), error = %e, "the server broke off its answer");
                    r.lease.fail();
                    return Some((Err(e), r));
                }
                Ok(bytes) => bytes,
            };
            match &mut r.translator {
                None => return Some((Ok(bytes), r)),
                Some(t) => {
                    let out = t.push(&bytes);
                    if !out.is_empty() {
                        return Some((Ok(out.into()), r));
                    }
                }
            }
        }
    });
    resp.body(Body::from_stream(stream))
        .map_err(|e| ApiError::backend(format!("could not relay the answer: {e}")))
}

/// What the relayed stream holds: the server's answer, its translation, the request's
/// records and the lease, dropped together when the stream ends or the client leaves.
struct Relayed {
    body: Chunks,
    translator: Option<Translator>,
    finish: Finish,
    lease: Lease,
    done: bool,
}

/// Up to [`MAX_ERROR_BODY`] bytes of an answer (an error's, which is short).
async fn read_limited(mut answer: reqwest::Response) -> axum::body::Bytes {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = answer.chunk().await {
        out.extend_from_slice(&chunk);
        if out.len() >= MAX_ERROR_BODY {
            out.truncate(MAX_ERROR_BODY);
            break;
        }
    }
    out.into()
}

/// Records the request's duration, its outcome on each experiment's arm and, when the host
/// records traffic, its trace line, when the answer's stream ends or is dropped.
struct Finish {
    latency: prometheus_client::metrics::histogram::Histogram,
    began: Instant,
    first_chunk: Option<Instant>,
    hit: bool,
    load_seconds: Option<f64>,
    tokens_removed: u32,
    experiments: Vec<(Arc<Experiment>, String)>,
    /// The trace's record of the answer, when the host records.
    answer: Option<Answer>,
    /// The stream ran to its end (not dropped by a client that went away).
    ended: bool,
}

impl Finish {
    /// A chunk of the answer went out (`None`: an error in its place).
    /// The answer's stream ran to its end. (A method: the lint cannot see that the drop
    /// right after reads a field written in place.)
    fn end(&mut self) {
        self.ended = true;
    }

    fn chunk(&mut self, bytes: Option<&[u8]>) {
        self.first_chunk.get_or_insert_with(Instant::now);
        if let Some(a) = &mut self.answer {
            a.chunk(bytes);
        }
    }

    fn outcome(&self, now: Instant) -> Outcome {
        Outcome {
            hit: self.hit,
            load_seconds: self.load_seconds,
            latency_ms: (now - self.began).as_secs_f64() * 1e3,
            ttft_ms: self
                .first_chunk
                .map(|t| (t - self.began).as_secs_f64() * 1e3),
            tokens_removed: self.tokens_removed,
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        let outcome = self.outcome(Instant::now());
        self.latency.observe(outcome.latency_ms / 1e3);
        for (e, key) in &self.experiments {
            e.record_outcome(key, outcome);
        }
        if let Some(a) = self.answer.take() {
            a.finish(self.began, self.first_chunk, self.ended);
        }
    }
}
