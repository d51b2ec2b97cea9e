//! The `openai` backend: a server that already runs (vLLM, LM Studio, Ollama's `/v1`, another
//! modelyard). The host does not own its process, so it never kills it; it loads and unloads
//! the model through the server's native API where there is one:
//! - Ollama: `POST /api/generate` with `keep_alive: -1` loads, `keep_alive: 0` unloads;
//! - llama-server in router mode: `POST /models/load` and `/models/unload`, with `GET /models`
//!   telling when the load is done.
//!
//! Without a native API, starting only checks that the server answers `GET /models`.

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{BackendError, CountError, Endpoint, Instance, Tokenizer};
use crate::config::{Control, DEFAULT_START_TIMEOUT, OpenAiSettings};

/// How long one control request may take (loading waits separately).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a router is asked whether a load finished.
const LOAD_POLL: Duration = Duration::from_millis(200);

/// A model on a server the host does not own.
#[derive(Debug)]
pub struct RemoteInstance {
    http: reqwest::Client,
    endpoint: Endpoint,
    control: Control,
    root: String,
    tokenizer: Tokenizer,
}

/// Makes the model ready on its server.
pub async fn start(
    http: &reqwest::Client,
    s: &OpenAiSettings,
) -> Result<RemoteInstance, BackendError> {
    let root = s.url.strip_suffix("/v1").unwrap_or(&s.url).to_string();
    let instance = RemoteInstance {
        http: http.clone(),
        endpoint: Endpoint {
            api_base: s.url.clone(),
            api_key: s.api_key.clone(),
            model_name: s.model_name.clone(),
        },
        control: s.control,
        root,
        tokenizer: Tokenizer::new(http.clone(), &s.url),
    };
    match s.control {
        Control::None => {
            instance
                .request(reqwest::Method::GET, &format!("{}/models", s.url), None)
                .await?;
        }
        Control::Ollama => {
            let body = json!({"model": s.model_name, "keep_alive": -1});
            instance
                .request(
                    reqwest::Method::POST,
                    &format!("{}/api/generate", instance.root),
                    Some(body),
                )
                .await?;
        }
        Control::LlamaRouter => instance.router_load().await?,
    }
    Ok(instance)
}

impl RemoteInstance {
    async fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<Value, BackendError> {
        let mut req = self.http.request(method, url).timeout(CONTROL_TIMEOUT);
        if let Some(key) = &self.endpoint.api_key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| BackendError::Unreachable {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(BackendError::LoadRefused {
                model: self.endpoint.model_name.clone(),
                reason: format!("{url} answered {status}: {}", text.trim()),
            });
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The router's status word for our model (`loaded`, `loading`, `unloaded`, `failed`...).
    async fn router_status(&self) -> Result<String, BackendError> {
        let list = self
            .request(reqwest::Method::GET, &format!("{}/models", self.root), None)
            .await?;
        let entry = list["data"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["id"] == self.endpoint.model_name.as_str());
        let Some(entry) = entry else {
            return Err(BackendError::LoadRefused {
                model: self.endpoint.model_name.clone(),
                reason: "the router does not list it".into(),
            });
        };
        Ok(entry["status"]["value"]
            .as_str()
            .unwrap_or("unknown")
            .to_string())
    }

    async fn router_load(&self) -> Result<(), BackendError> {
        if self.router_status().await? != "loaded" {
            let body = json!({"model": self.endpoint.model_name});
            self.request(
                reqwest::Method::POST,
                &format!("{}/models/load", self.root),
                Some(body),
            )
            .await?;
        }
        let deadline = Instant::now() + DEFAULT_START_TIMEOUT;
        loop {
            match self.router_status().await?.as_str() {
                "loaded" => return Ok(()),
                "loading" if Instant::now() < deadline => tokio::time::sleep(LOAD_POLL).await,
                "loading" => {
                    return Err(BackendError::StartTimeout {
                        secs: DEFAULT_START_TIMEOUT.as_secs(),
                        tail: Vec::new(),
                    });
                }
                other => {
                    return Err(BackendError::LoadRefused {
                        model: self.endpoint.model_name.clone(),
                        reason: format!("the router reports it {other}"),
                    });
                }
            }
        }
    }
}

impl Instance for RemoteInstance {
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn count_tokens<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<u32>, CountError>> {
        Box::pin(self.tokenizer.count(texts))
    }

    fn pid(&self) -> Option<u32> {
        None
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let model = self.endpoint.model_name.clone();
            let result = match self.control {
                Control::None => Ok(Value::Null),
                Control::Ollama => {
                    let body = json!({"model": model, "keep_alive": 0});
                    self.request(
                        reqwest::Method::POST,
                        &format!("{}/api/generate", self.root),
                        Some(body),
                    )
                    .await
                }
                Control::LlamaRouter => {
                    let body = json!({"model": model});
                    self.request(
                        reqwest::Method::POST,
                        &format!("{}/models/unload", self.root),
                        Some(body),
                    )
                    .await
                }
            };
            if let Err(e) = result {
                tracing::warn!(model = %model, error = %e, "unload request failed");
            }
        })
    }

    fn exited(&self) -> BoxFuture<'static, String> {
        Box::pin(futures_util::future::pending())
    }
}
