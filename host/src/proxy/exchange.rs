//! One request's way through the proxy, as stages over an [`Exchange`]:
//!
//! parse ([`super::parse`]) → route, `select-model` ([`super::route`]) → acquire, a lease from
//! the scheduler ([`super::acquire`]) → fit, `compress-context` ([`super::fit`]) → forward to
//! the model's server ([`super::forward`]) → relay its answer ([`super::relay`]).
//!
//! Each stage reads what the stages before it made of the request and adds its part; the first
//! that fails answers with its OpenAI-shaped error, and the exchange still says which model
//! (if any) had been chosen, for the metrics.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use serde_json::Value;
use tokio::time::Instant;

use super::dialect::Dialect;
use super::fit::Fitted;
use super::metrics::RequestLabels;
use super::translate::{self, Translation};
use super::{AppState, acquire, fit, forward, parse, record, relay, route};
use crate::config::{Api, Capability};
use crate::engine::Hook;
use crate::engine::experiment::Experiment;
use crate::recorder::Stage;
use crate::scheduler::KeepAlive;

/// The routes that take the request path: every front door, one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Chat,
    Completions,
    Embeddings,
    /// OpenAI's Responses API.
    Responses,
    /// Anthropic's Messages API.
    Messages,
    /// Anthropic's token count for a Messages request.
    CountTokens,
    /// llama-server's (and Jina's, Cohere's) rerank.
    Rerank,
    /// Ollama's `/api/chat`, `/api/generate`, `/api/embed`, `/api/embeddings`: always
    /// translated ([`super::translate`]).
    OllamaChat,
    OllamaGenerate,
    OllamaEmbed,
    OllamaEmbeddings,
}

impl Route {
    /// Its name in metrics and traces: the path after the API root.
    pub fn name(self) -> &'static str {
        match self {
            Route::Chat => "chat/completions",
            Route::Completions => "completions",
            Route::Embeddings => "embeddings",
            Route::Responses => "responses",
            Route::Messages => "messages",
            Route::CountTokens => "messages/count_tokens",
            Route::Rerank => "rerank",
            Route::OllamaChat => "api/chat",
            Route::OllamaGenerate => "api/generate",
            Route::OllamaEmbed => "api/embed",
            Route::OllamaEmbeddings => "api/embeddings",
        }
    }

    /// The API whose native route a server may lack (then the host translates).
    pub fn api(self) -> Option<Api> {
        match self {
            Route::Responses => Some(Api::Responses),
            Route::Messages | Route::CountTokens => Some(Api::Messages),
            _ => None,
        }
    }

    /// The path after the server's API root that serves it natively (Ollama's routes are
    /// never sent as they are).
    pub fn upstream_path(self) -> &'static str {
        match self {
            Route::Chat => "/chat/completions",
            Route::Completions => "/completions",
            Route::Embeddings => "/embeddings",
            Route::Responses => "/responses",
            Route::Messages => "/messages",
            Route::CountTokens => "/messages/count_tokens",
            Route::Rerank => "/rerank",
            Route::OllamaChat | Route::OllamaGenerate => "/chat/completions",
            Route::OllamaEmbed | Route::OllamaEmbeddings => "/embeddings",
        }
    }

    /// The shape its errors take.
    pub fn dialect(self) -> Dialect {
        match self {
            Route::Messages | Route::CountTokens => Dialect::Anthropic,
            Route::OllamaChat
            | Route::OllamaGenerate
            | Route::OllamaEmbed
            | Route::OllamaEmbeddings => Dialect::Ollama,
            _ => Dialect::OpenAi,
        }
    }

    /// What a model must serve to take it.
    pub fn capability(self) -> Capability {
        match self {
            Route::Chat
            | Route::Responses
            | Route::Messages
            | Route::CountTokens
            | Route::OllamaChat
            | Route::OllamaGenerate => Capability::Chat,
            Route::Completions => Capability::Completions,
            Route::Embeddings | Route::OllamaEmbed | Route::OllamaEmbeddings => {
                Capability::Embeddings
            }
            Route::Rerank => Capability::Rerank,
        }
    }
}

/// An experiment running on a hook, with this request's sticky key for it.
#[derive(Debug)]
pub struct Arm {
    pub hook: Hook,
    pub experiment: Arc<Experiment>,
    pub key: String,
}

/// What a request has become so far.
#[derive(Debug)]
pub struct Exchange {
    pub route: Route,
    pub began: Instant,
    /// When it arrived, by the wall clock (the trace's time).
    pub arrived: std::time::SystemTime,
    /// The stage it is in (the last one, once it has an answer).
    pub stage: Stage,
    /// When the acquire stage leased the model, and whether it was ready on arrival.
    pub leased: Option<(Instant, bool)>,
    /// The host's id for the request.
    pub id: String,
    /// The body as parsed; the fit stage may rewrite its messages, forward its `model`.
    pub body: Value,
    /// The model as asked: an id, an alias or `auto`.
    pub asked: String,
    pub task: Option<String>,
    pub priority: i32,
    /// The contract's `request.client`: a stable hash of the client's name.
    pub client: Option<String>,
    /// The body's `user`, a sticky key for experiments.
    pub user: Option<String>,
    /// The host's first estimate of the prompt, before any backend counted it.
    pub estimated_tokens: u32,
    pub arms: Vec<Arm>,
    /// The chosen model's id, once `select-model` has chosen.
    pub model: Option<String>,
    /// What fitting the prompt into the model's window did.
    pub fitted: Fitted,
    /// The client's headers that go on to the server (Anthropic's version and beta flags).
    pub passed_headers: Vec<(axum::http::HeaderName, axum::http::HeaderValue)>,
    /// How the request is translated for the model's server, when it is.
    pub translation: Option<Translation>,
    /// What the request said of the model's stay (Ollama's `keep_alive`).
    pub keep_alive: Option<KeepAlive>,
    /// The model first chosen, when the prompt did not fit it and went to its
    /// `context_fallback`.
    pub fell_back_from: Option<String>,
}

impl Exchange {
    fn new(route: Route) -> Self {
        Self {
            route,
            began: Instant::now(),
            arrived: std::time::SystemTime::now(),
            stage: Stage::Parse,
            leased: None,
            id: String::new(),
            body: Value::Null,
            asked: String::new(),
            task: None,
            priority: 0,
            client: None,
            user: None,
            estimated_tokens: 0,
            arms: Vec::new(),
            model: None,
            fitted: Fitted::default(),
            passed_headers: Vec::new(),
            translation: None,
            keep_alive: None,
            fell_back_from: None,
        }
    }

    /// The OpenAI route the server is sent: the translation's, else the route's own.
    pub fn upstream(&self) -> Route {
        self.translation.as_ref().map_or(self.route, |t| t.upstream)
    }

    /// The sticky key for `hook`: its experiment's, or the request's id.
    pub fn key_for(&self, hook: Hook) -> &str {
        self.arms
            .iter()
            .find(|a| a.hook == hook)
            .map_or(&self.id, |a| &a.key)
    }
}

/// Serves one request on `route` and counts its answer.
pub async fn handle(app: Arc<AppState>, req: Request, route: Route) -> Response {
    let mut ex = Exchange::new(route);
    let resp = match serve(&app, req, &mut ex).await {
        // The relay records an answer when its stream ends.
        Ok(resp) => resp,
        Err(e) => {
            record::failed(&app, &ex, &e);
            // The host's own failures are the operator's to see; a client's mistakes are not.
            if e.status.is_server_error() {
                tracing::warn!(
                    route = route.name(),
                    model = ex.model.as_deref().unwrap_or(&ex.asked),
                    status = e.status.as_u16(),
                    code = e.code,
                    cause = %e.message,
                    "answered with a server error"
                );
            }
            e.render(route.dialect())
        }
    };
    app.metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route.name().to_string(),
            model: ex.model.unwrap_or_default(),
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

async fn serve(
    app: &Arc<AppState>,
    req: Request,
    ex: &mut Exchange,
) -> Result<Response, super::ApiError> {
    parse::parse(app, req, ex).await?;
    ex.stage = Stage::Route;
    let mut target = route::select(app, ex).await?;
    let mut lease = loop {
        ex.stage = Stage::Acquire;
        let mut lease = acquire::acquire(app, ex, &target).await?;
        ex.leased = Some((Instant::now(), lease.ready_on_arrival));
        if let Some(keep) = ex.keep_alive {
            lease.keep_alive(keep);
        }
        ex.stage = Stage::Fit;
        if ex.translation.is_none() && translate::wanted(app, ex.route, &target.id) {
            if ex.route == Route::CountTokens {
                return translate::count_tokens(ex, &lease).await;
            }
            translate::begin(ex)?;
        }
        fit::fit(app, ex, &target, &lease).await?;
        // A prompt too long for the model goes to its `context_fallback` before any
        // compression (each fallback has a larger window, so this ends).
        let Some(to) = ex.fitted.fallback.take() else {
            break lease;
        };
        drop(lease);
        ex.fell_back_from.get_or_insert_with(|| target.id.clone());
        target = route::fall_back(app, ex, &to)?;
    };
    ex.stage = Stage::Forward;
    let mut answer = forward::forward(app, ex, &mut lease).await?;
    // A server without the route (an older one, or another kind): the host translates from
    // now on, for this request and every later one to the model.
    if answer.status() == reqwest::StatusCode::NOT_FOUND
        && ex.translation.is_none()
        && let Some(api) = ex.route.api()
    {
        translate::learn(app, &target.id, api);
        if ex.route == Route::CountTokens {
            return translate::count_tokens(ex, &lease).await;
        }
        translate::begin(ex)?;
        answer = forward::forward(app, ex, &mut lease).await?;
    }
    ex.stage = Stage::Relay;
    relay::relay(app, ex, lease, answer).await
}
