//! Backends: what serves a model. A [`Launcher`] starts an [`Instance`] for a model's settings;
//! an instance answers OpenAI-style HTTP at its [`Endpoint`] until it is stopped or dies.
//!
//! - [`command`] starts one server process per model (llama-server, or anything that speaks the
//!   OpenAI API), in its own process group, waits for its health check, and stops it with
//!   SIGTERM then SIGKILL. A server never outlives the host, also when the host is killed.
//! - [`openai`] talks to a server that already runs; load and unload use the server's native
//!   API where it has one (Ollama, llama-server's router mode) and are no-ops otherwise.
//!
//! - [`tokenize`] counts tokens with a server's own tokenizer, for the instances that have one.
//!
//! Backends know nothing of policies, budgets or queues: the scheduler decides when to start
//! and stop them.

pub mod command;
pub mod container;
pub mod openai;
pub mod tokenize;

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;

pub use tokenize::{CountError, Tokenizer};

use crate::config::{BackendSettings, ModelSettings};

/// Where a ready model answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The OpenAI API root, e.g. `http://127.0.0.1:40123/v1`; request paths follow it.
    pub api_base: String,
    pub api_key: Option<String>,
    /// The model name to put in requests.
    pub model_name: String,
}

/// Why a backend could not be made ready.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    #[error("could not start `{program}`: {reason}")]
    Spawn { program: String, reason: String },
    #[error("the server exited before it was ready ({status}){}", tail_suffix(.tail))]
    ExitedEarly { status: String, tail: Vec<String> },
    #[error("the server was not healthy within {secs}s{}", tail_suffix(.tail))]
    StartTimeout { secs: u64, tail: Vec<String> },
    #[error("the server at {url} did not answer: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the server refused to load {model}: {reason}")]
    LoadRefused { model: String, reason: String },
}

fn tail_suffix(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; its last output:\n    {}", tail.join("\n    "))
    }
}

/// A running model server (or a model loaded on a server that already ran).
pub trait Instance: Send + Sync + fmt::Debug {
    fn endpoint(&self) -> &Endpoint;
    /// The root process, for telemetry; `None` when the host does not own the process.
    fn pid(&self) -> Option<u32>;
    /// Stops the instance and waits until it is gone. Calling it again is harmless.
    fn stop(&self) -> BoxFuture<'_, ()>;
    /// Resolves, with a reason, when the instance dies without being asked to; `None` for an
    /// instance that cannot die on its own (a server the host does not own, a simulated one), so
    /// that nothing waits on it.
    fn exited(&self) -> Option<BoxFuture<'static, String>>;
    /// The token count of each text with the server's own tokenizer. Backends without one
    /// keep this default.
    fn count_tokens<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<u32>, CountError>> {
        let _ = texts;
        Box::pin(async { Err(CountError::Unsupported) })
    }
}

/// Starts instances. The scheduler holds one; tests and the simulator can inject their own.
pub trait Launcher: Send + Sync + fmt::Debug {
    fn start(
        &self,
        model: &ModelSettings,
    ) -> BoxFuture<'static, Result<Arc<dyn Instance>, BackendError>>;
}

/// The real launcher: processes for `cmd` models, HTTP for `url` models.
#[derive(Debug, Clone)]
pub struct RealLauncher {
    http: reqwest::Client,
}

impl RealLauncher {
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }
}

impl Launcher for RealLauncher {
    fn start(
        &self,
        model: &ModelSettings,
    ) -> BoxFuture<'static, Result<Arc<dyn Instance>, BackendError>> {
        let http = self.http.clone();
        let model = model.clone();
        Box::pin(async move {
            match &model.backend {
                BackendSettings::Command(c) => command::start(&http, &model, c)
                    .await
                    .map(|i| Arc::new(i) as Arc<dyn Instance>),
                BackendSettings::OpenAi(o) => openai::start(&http, o, model.context_tokens)
                    .await
                    .map(|i| Arc::new(i) as Arc<dyn Instance>),
                BackendSettings::Simulated { .. } => Err(BackendError::Spawn {
                    program: model.id.clone(),
                    reason: "a simulated model runs only in `modelyard simulate`".into(),
                }),
            }
        })
    }
}
