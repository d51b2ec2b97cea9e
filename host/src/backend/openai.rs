//! The `openai` backend: a server that already runs (vLLM, LM Studio, Ollama's `/v1`, another
//! modelyard). The host does not own its process, so it never kills it; it loads and unloads
//! the model through the server's native API where there is one:
//! - Ollama: `POST /api/generate` with `keep_alive: -1` loads, `keep_alive: 0` unloads;
//! - llama-server in router mode: `POST /models/load` and `/models/unload`, with `GET /models`
//!   telling when the load is done;
//! - LM Studio (its REST API v1, LM Studio 0.4+: `docs/developer/rest/list`, `load`,
//!   `unload`): `GET /api/v1/models` says whether the model has a loaded instance; if not,
//!   `POST /api/v1/models/load` with `{model, config: {context_length}}` makes one, whose
//!   `model_instance_id` requests then name and `POST /api/v1/models/unload` with
//!   `{instance_id}` ends;
//! - vLLM's sleep mode (`docs/features/sleep_mode`; the server runs with
//!   `--enable-sleep-mode` and `VLLM_SERVER_DEV_MODE=1`): `GET /is_sleeping` →
//!   `{"is_sleeping": bool}`, `POST /wake_up` to load, `POST /sleep?level=N` to evict (the
//!   engine keeps running; level 1 keeps the weights in RAM for a fast wake, level 2 drops
//!   them; the scheduler counts level 1's against the CPU's budget while it sleeps).
//!
//! Neither LM Studio nor vLLM can run on the machines this was built on: their exchanges are
//! tested against the documented request and response shapes (`openai/tests.rs`), not end to
//! end.
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
    context_tokens: u32,
) -> Result<RemoteInstance, BackendError> {
    let root = s.url.strip_suffix("/v1").unwrap_or(&s.url).to_string();
    let mut instance = RemoteInstance {
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
        Control::LmStudio => {
            instance.endpoint.model_name = instance.lmstudio_load(context_tokens).await?;
        }
        Control::VllmSleep { .. } => instance.vllm_wake().await?,
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

    /// LM Studio: the model's loaded instance, loading one with `context_tokens` if it has
    /// none. Returns the instance's id, which requests and the unload name.
    async fn lmstudio_load(&self, context_tokens: u32) -> Result<String, BackendError> {
        let key = self.endpoint.model_name.clone();
        let list = self
            .request(
                reqwest::Method::GET,
                &format!("{}/api/v1/models", self.root),
                None,
            )
            .await?;
        let entry =
            (list["models"].as_array().into_iter().flatten()).find(|m| m["key"] == key.as_str());
        let Some(entry) = entry else {
            return Err(BackendError::LoadRefused {
                model: key,
                reason: "LM Studio does not list it (GET /api/v1/models: no model with this key)"
                    .into(),
            });
        };
        if let Some(id) = entry["loaded_instances"][0]["id"].as_str() {
            return Ok(id.to_string());
        }
        let body = json!({"model": key, "config": {"context_length": context_tokens}});
        let loaded = self
            .request(
                reqwest::Method::POST,
                &format!("{}/api/v1/models/load", self.root),
                Some(body),
            )
            .await?;
        loaded["model_instance_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| BackendError::LoadRefused {
                model: key,
                reason: format!("LM Studio's load answer has no model_instance_id: {loaded}"),
            })
    }

    /// vLLM: wakes the engine if it sleeps.
    async fn vllm_wake(&self) -> Result<(), BackendError> {
        let state = self
            .request(
                reqwest::Method::GET,
                &format!("{}/is_sleeping", self.root),
                None,
            )
            .await?;
        match state["is_sleeping"].as_bool() {
            Some(false) => Ok(()),
            Some(true) => self
                .request(
                    reqwest::Method::POST,
                    &format!("{}/wake_up", self.root),
                    None,
                )
                .await
                .map(drop),
            None => Err(BackendError::LoadRefused {
                model: self.endpoint.model_name.clone(),
                reason: format!(
                    "GET /is_sleeping answered {state}, not {{\"is_sleeping\": bool}}: is the \
                     server run with --enable-sleep-mode and VLLM_SERVER_DEV_MODE=1?"
                ),
            }),
        }
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
                Control::LmStudio => {
                    let body = json!({"instance_id": model});
                    self.request(
                        reqwest::Method::POST,
                        &format!("{}/api/v1/models/unload", self.root),
                        Some(body),
                    )
                    .await
                }
                Control::VllmSleep { level } => {
                    self.request(
                        reqwest::Method::POST,
                        &format!("{}/sleep?level={level}", self.root),
                        None,
                    )
                    .await
                }
            };
            if let Err(e) = result {
                tracing::warn!(model = %model, error = %e, "unload request failed");
            }
        })
    }

    fn exited(&self) -> Option<BoxFuture<'static, String>> {
        None
    }
}

#[cfg(test)]
mod tests;
