//! The endpoint-picker protocol over Envoy's `ext_proc` (the inference extension's
//! `docs/proposals/004-endpoint-picker-protocol`), in the full-duplex streamed mode its Envoy
//! configuration uses: the request's headers and body chunks arrive first; once the body is
//! whole, the picker answers the headers with `x-gateway-destination-endpoint` (the ordered
//! list, `ip:port,ip:port`) and the same value in the `envoy.lb` dynamic metadata, then gives
//! the body back (rewritten only when its `model` must name the chosen model), in chunks;
//! the response's headers and body chunks are passed back as they come. A request that is not
//! routed ends in an immediate response: 503 when no host can take it, 429 when it is shed,
//! 404 for a model no host knows, 400 or 413 for a body the picker cannot read, each with an
//! OpenAI-shaped error body.

use std::net::SocketAddrV4;
use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption, Metadata};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessor;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpHeaders,
    ImmediateResponse, ProcessingRequest, ProcessingResponse, StreamedBodyResponse,
    TrailersResponse, body_mutation, processing_request, processing_response,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use futures_util::Stream;
use serde_json::json;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::decide::{self, Ask, Refusal, Route, Shedding};
use super::fleet::Fleet;
use super::metrics::PickMetrics;
use crate::proxy::{PRIORITY_HEADER, TASK_HEADER};

/// The header and `envoy.lb` key that carry the picked endpoints.
pub const DESTINATION: &str = "x-gateway-destination-endpoint";
/// The dynamic metadata namespace of the picked endpoints.
pub const DESTINATION_NAMESPACE: &str = "envoy.lb";
/// The metadata namespace of Envoy's subset hint.
pub const SUBSET_NAMESPACE: &str = "envoy.lb.subset_hint";
/// The subset hint's key: the endpoints the picker may choose among.
pub const SUBSET: &str = "x-gateway-destination-endpoint-subset";
/// The `envoy.lb` key in which Envoy tells which endpoint served the request (the protocol's
/// v1.0.0), with the response.
pub const SERVED: &str = "x-gateway-destination-endpoint-served";
/// The largest request body read (the reference picker's bound).
pub const MAX_BODY_BYTES: usize = 10 << 20;
/// The largest body chunk sent back in one message (the reference picker's).
pub const BODY_CHUNK: usize = 62_000;

/// The `ext_proc` service.
#[derive(Clone)]
pub struct Picker {
    fleet: Arc<Fleet>,
    shedding: Shedding,
    metrics: Arc<PickMetrics>,
}

impl Picker {
    pub fn new(fleet: Arc<Fleet>, shedding: Shedding) -> Self {
        Self::with_metrics(fleet, shedding, Arc::default())
    }

    pub fn with_metrics(fleet: Arc<Fleet>, shedding: Shedding, metrics: Arc<PickMetrics>) -> Self {
        Self {
            fleet,
            shedding,
            metrics,
        }
    }

    /// Where the request `ask` goes, as the fleet was last read, counted in the metrics.
    pub async fn decide(&self, ask: Ask) -> Result<Route, Refusal> {
        let started = std::time::Instant::now();
        let decided = self.decide_uncounted(ask).await;
        let took = started.elapsed();
        match &decided {
            Ok(route) => self.metrics.routed(&route.host, route.by_policy, took),
            Err(refusal) => self.metrics.refused(refusal.status, took),
        }
        decided
    }

    /// A host's name in the endpoints file, or its address when the file no longer has it.
    fn host_name(&self, addr: SocketAddrV4) -> String {
        self.fleet
            .current()
            .and_then(|s| {
                s.hosts
                    .iter()
                    .find(|h| h.endpoint().addr == addr)
                    .map(|h| h.endpoint().name.clone())
            })
            .unwrap_or_else(|| addr.to_string())
    }

    /// `select-model` runs on this thread when its policy's calls are fast, else on the
    /// blocking pool.
    async fn decide_uncounted(&self, ask: Ask) -> Result<Route, Refusal> {
        let Some(snapshot) = self.fleet.current() else {
            return Err(Refusal {
                status: 503,
                code: "no_host_available",
                message: "the picker has not read its hosts yet".into(),
            });
        };
        let hooks = self.fleet.hooks().clone();
        let shedding = self.shedding;
        if hooks.selects_inline() {
            return decide::decide(&snapshot, &hooks, &ask, shedding);
        }
        tokio::task::spawn_blocking(move || decide::decide(&snapshot, &hooks, &ask, shedding))
            .await
            .unwrap_or_else(|e| {
                Err(Refusal {
                    status: 503,
                    code: "no_host_available",
                    message: format!("select-model did not run: {e}"),
                })
            })
    }
}

/// One HTTP request's stream, as far as it has come.
#[derive(Default)]
struct Exchange {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    subset: Option<Vec<SocketAddrV4>>,
    /// The host listed first.
    first: Option<SocketAddrV4>,
    /// Whether Envoy's word on who served was counted.
    served: bool,
}

impl Exchange {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Responses = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for Picker {
    type ProcessStream = Responses;

    async fn process(
        &self,
        request: tonic::Request<Streaming<ProcessingRequest>>,
    ) -> Result<tonic::Response<Responses>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let picker = self.clone();
        tokio::spawn(async move {
            let mut ex = Exchange::default();
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(msg)) => msg,
                    Ok(None) => return,
                    Err(status) => {
                        tracing::debug!(%status, "ext_proc stream ended");
                        return;
                    }
                };
                let (answers, end) = picker.step(&mut ex, msg).await;
                for a in answers {
                    if tx.send(Ok(a)).await.is_err() {
                        return;
                    }
                }
                if end {
                    return;
                }
            }
        });
        let out = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(tonic::Response::new(Box::pin(out)))
    }
}

impl Picker {
    /// Answers one message; `true` when the stream is done (an immediate response was sent).
    async fn step(
        &self,
        ex: &mut Exchange,
        msg: ProcessingRequest,
    ) -> (Vec<ProcessingResponse>, bool) {
        if let Some(subset) = subset_hint(msg.metadata_context.as_ref()) {
            ex.subset = Some(subset);
        }
        if !ex.served
            && let Some(served) = served_by(msg.metadata_context.as_ref())
        {
            ex.served = true;
            let fallback = ex.first.is_some_and(|first| first != served);
            self.metrics.served(&self.host_name(served), fallback);
        }
        use processing_request::Request as In;
        use processing_response::Response as Out;
        match msg.request {
            Some(In::RequestHeaders(h)) => {
                ex.headers = header_pairs(&h);
                if !h.end_of_stream {
                    return (Vec::new(), false);
                }
                // No body (a GET): any host in the subset takes it.
                let ask = Ask {
                    subset: ex.subset.clone(),
                    ..Ask::default()
                };
                match self.decide(ask).await {
                    Ok(route) => {
                        ex.first = route.endpoints.first().copied();
                        (vec![headers_answer(&route, None)], false)
                    }
                    Err(refusal) => (vec![immediate(&refusal)], true),
                }
            }
            Some(In::RequestBody(b)) => {
                if ex.body.len() + b.body.len() > MAX_BODY_BYTES {
                    let refusal = Refusal {
                        status: 413,
                        code: "request_too_large",
                        message: format!("the request body is over {MAX_BODY_BYTES} bytes"),
                    };
                    self.metrics
                        .refused(refusal.status, std::time::Duration::ZERO);
                    return (vec![immediate(&refusal)], true);
                }
                ex.body.extend_from_slice(&b.body);
                if !b.end_of_stream {
                    return (Vec::new(), false);
                }
                let body = std::mem::take(&mut ex.body);
                let (ask, mut json) = match ask_of(ex, &body) {
                    Ok(parsed) => parsed,
                    Err(refusal) => {
                        self.metrics
                            .refused(refusal.status, std::time::Duration::ZERO);
                        return (vec![immediate(&refusal)], true);
                    }
                };
                let route = match self.decide(ask).await {
                    Ok(route) => route,
                    Err(refusal) => return (vec![immediate(&refusal)], true),
                };
                ex.first = route.endpoints.first().copied();
                let body = match &route.rewrite {
                    Some(model) => {
                        json["model"] = serde_json::Value::String(model.clone());
                        serde_json::to_vec(&json).unwrap_or(body)
                    }
                    None => body,
                };
                let mut answers = vec![headers_answer(&route, Some(body.len()))];
                answers.extend(body_chunks(&body).map(|c| ProcessingResponse {
                    response: Some(Out::RequestBody(c)),
                    ..Default::default()
                }));
                (answers, false)
            }
            Some(In::RequestTrailers(_)) => (
                vec![ProcessingResponse {
                    response: Some(Out::RequestTrailers(TrailersResponse::default())),
                    ..Default::default()
                }],
                false,
            ),
            Some(In::ResponseHeaders(_)) => (
                vec![ProcessingResponse {
                    response: Some(Out::ResponseHeaders(HeadersResponse {
                        response: Some(CommonResponse::default()),
                    })),
                    ..Default::default()
                }],
                false,
            ),
            Some(In::ResponseBody(b)) => (
                vec![ProcessingResponse {
                    response: Some(Out::ResponseBody(streamed(b.body, b.end_of_stream))),
                    ..Default::default()
                }],
                false,
            ),
            Some(In::ResponseTrailers(_)) => (
                vec![ProcessingResponse {
                    response: Some(Out::ResponseTrailers(TrailersResponse::default())),
                    ..Default::default()
                }],
                false,
            ),
            None => (Vec::new(), false),
        }
    }
}

/// The request's headers, lower-case names; Envoy sends a value as `raw_value` or `value`.
fn header_pairs(h: &HttpHeaders) -> Vec<(String, String)> {
    h.headers
        .iter()
        .flat_map(|m| &m.headers)
        .map(|hv| {
            let value = if hv.raw_value.is_empty() {
                hv.value.clone()
            } else {
                String::from_utf8_lossy(&hv.raw_value).into_owned()
            };
            (hv.key.to_ascii_lowercase(), value)
        })
        .collect()
}

/// Envoy's subset hint, when the message carries one; addresses that are not `ip:port` are
/// left out (an empty list is refused by the decision).
fn subset_hint(metadata: Option<&Metadata>) -> Option<Vec<SocketAddrV4>> {
    let hint = metadata?.filter_metadata.get(SUBSET_NAMESPACE)?;
    let list = match hint.fields.get(SUBSET)?.kind.as_ref()? {
        Kind::ListValue(l) => l
            .values
            .iter()
            .filter_map(|v| match &v.kind {
                Some(Kind::StringValue(s)) => s.parse().ok(),
                _ => None,
            })
            .collect(),
        Kind::StringValue(s) => s.split(',').filter_map(|a| a.trim().parse().ok()).collect(),
        _ => Vec::new(),
    };
    Some(list)
}

/// The endpoint Envoy says served the request, when the message carries it.
fn served_by(metadata: Option<&Metadata>) -> Option<SocketAddrV4> {
    let lb = metadata?.filter_metadata.get(DESTINATION_NAMESPACE)?;
    match lb.fields.get(SERVED)?.kind.as_ref()? {
        Kind::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// What the picker reads of a request: the body's `model`, and the headers' task, priority
/// and client. The prompt's size is estimated (four bytes a token): the picker has no
/// tokenizer, and the host it picks counts again.
fn ask_of(ex: &Exchange, body: &[u8]) -> Result<(Ask, serde_json::Value), Refusal> {
    let bad = |message: String| Refusal {
        status: 400,
        code: "invalid_request_error",
        message,
    };
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let model = match json.get("model") {
        Some(serde_json::Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(bad("`model` must be a non-empty string".into())),
        None => return Err(bad("the body names no `model`".into())),
    };
    let priority = match ex.header(PRIORITY_HEADER) {
        Some(p) => p
            .trim()
            .parse()
            .map_err(|_| bad(format!("{PRIORITY_HEADER} must be an integer, not {p:?}")))?,
        None => 0,
    };
    let last_user_message = json["messages"]
        .as_array()
        .and_then(|ms| ms.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .or_else(|| json["prompt"].as_str())
        .or_else(|| json["input"].as_str())
        .unwrap_or_default()
        .to_string();
    let max_tokens = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| json[*k].as_u64())
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    let ask = Ask {
        model: Some(model),
        task: ex
            .header(TASK_HEADER)
            .map(String::from)
            .or_else(|| json["metadata"]["task"].as_str().map(String::from)),
        priority,
        client: ex.header("authorization").map(client_key),
        prompt_tokens: u32::try_from(body.len() / 4).unwrap_or(u32::MAX),
        max_tokens,
        last_user_message,
        subset: ex.subset.clone(),
    };
    Ok((ask, json))
}

/// A stable, short key for a client's credentials (never the credentials themselves).
fn client_key(authorization: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    authorization.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The answer to the request's headers: where it goes, as a header and as `envoy.lb` metadata.
fn headers_answer(route: &Route, body_len: Option<usize>) -> ProcessingResponse {
    let list = route
        .endpoints
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut set_headers = vec![set_header(DESTINATION, &list)];
    if let Some(len) = body_len {
        set_headers.push(set_header("content-length", &len.to_string()));
    }
    let destination = Struct {
        fields: [(DESTINATION.to_string(), string_value(list))].into(),
    };
    ProcessingResponse {
        response: Some(processing_response::Response::RequestHeaders(
            HeadersResponse {
                response: Some(CommonResponse {
                    clear_route_cache: true,
                    header_mutation: Some(HeaderMutation {
                        set_headers,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
        )),
        dynamic_metadata: Some(Struct {
            fields: [(
                DESTINATION_NAMESPACE.to_string(),
                Value {
                    kind: Some(Kind::StructValue(destination)),
                },
            )]
            .into(),
        }),
        ..Default::default()
    }
}

fn string_value(s: String) -> Value {
    Value {
        kind: Some(Kind::StringValue(s)),
    }
}

/// A header the client may also have sent: the picker's value replaces it.
fn set_header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            raw_value: value.as_bytes().to_vec(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// A body given back in the streamed mode's chunks; the last one ends the stream.
fn body_chunks(body: &[u8]) -> impl Iterator<Item = BodyResponse> + '_ {
    let n = body.len().div_ceil(BODY_CHUNK).max(1);
    (0..n).map(move |i| {
        let chunk = &body[(i * BODY_CHUNK).min(body.len())..((i + 1) * BODY_CHUNK).min(body.len())];
        streamed(chunk.to_vec(), i + 1 == n)
    })
}

fn streamed(body: Vec<u8>, end_of_stream: bool) -> BodyResponse {
    BodyResponse {
        response: Some(CommonResponse {
            body_mutation: Some(BodyMutation {
                mutation: Some(body_mutation::Mutation::StreamedResponse(
                    StreamedBodyResponse {
                        body,
                        end_of_stream,
                        ..Default::default()
                    },
                )),
            }),
            ..Default::default()
        }),
    }
}

/// The client's answer for a request that is not routed: the status, and an OpenAI-shaped
/// error.
pub fn immediate(refusal: &Refusal) -> ProcessingResponse {
    let kind = match refusal.status {
        429 => "rate_limit_error",
        400 | 404 | 413 => "invalid_request_error",
        _ => "server_error",
    };
    let body = json!({"error": {
        "message": refusal.message,
        "type": kind,
        "code": refusal.code,
    }});
    ProcessingResponse {
        response: Some(processing_response::Response::ImmediateResponse(
            ImmediateResponse {
                status: Some(HttpStatus {
                    code: i32::from(refusal.status),
                }),
                headers: Some(HeaderMutation {
                    set_headers: vec![set_header("content-type", "application/json")],
                    ..Default::default()
                }),
                body: body.to_string().into_bytes(),
                details: refusal.code.to_string(),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::ListValue;

    fn hint(values: Vec<Value>) -> Metadata {
        let inner = Struct {
            fields: [(
                SUBSET.to_string(),
                Value {
                    kind: Some(Kind::ListValue(ListValue { values })),
                },
            )]
            .into(),
        };
        Metadata {
            filter_metadata: [(SUBSET_NAMESPACE.to_string(), inner)].into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_subset_hint_is_read_and_a_bad_entry_left_out() {
        let m = hint(vec![
            string_value("10.0.0.1:8000".into()),
            string_value("not an address".into()),
        ]);
        assert_eq!(
            subset_hint(Some(&m)),
            Some(vec!["10.0.0.1:8000".parse().expect("an address")])
        );
        assert_eq!(subset_hint(Some(&hint(Vec::new()))), Some(Vec::new()));
        assert_eq!(subset_hint(Some(&Metadata::default())), None);
        assert_eq!(subset_hint(None), None);
    }

    #[test]
    fn the_served_endpoint_is_read_from_envoy_lb() {
        let lb = |v: &str| Metadata {
            filter_metadata: [(
                DESTINATION_NAMESPACE.to_string(),
                Struct {
                    fields: [(SERVED.to_string(), string_value(v.into()))].into(),
                },
            )]
            .into(),
            ..Default::default()
        };
        assert_eq!(
            served_by(Some(&lb("10.0.0.2:8000"))),
            Some("10.0.0.2:8000".parse().expect("an address"))
        );
        assert_eq!(served_by(Some(&lb("nowhere"))), None);
        assert_eq!(served_by(Some(&Metadata::default())), None);
    }

    #[test]
    fn a_long_body_goes_back_in_chunks_that_end_once() {
        let body = vec![b'x'; BODY_CHUNK * 2 + 5];
        let chunks: Vec<(usize, bool)> = body_chunks(&body)
            .map(|c| {
                match c
                    .response
                    .and_then(|r| r.body_mutation)
                    .and_then(|m| m.mutation)
                {
                    Some(body_mutation::Mutation::StreamedResponse(s)) => {
                        (s.body.len(), s.end_of_stream)
                    }
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        assert_eq!(
            chunks,
            [(BODY_CHUNK, false), (BODY_CHUNK, false), (5, true)]
        );
        assert_eq!(
            body_chunks(&[]).count(),
            1,
            "an empty body still ends the stream"
        );
    }

    #[test]
    fn a_body_the_picker_cannot_read_is_refused_with_why() {
        let ex = Exchange::default();
        let status = |b: &str| {
            ask_of(&ex, b.as_bytes())
                .map(|_| ())
                .map_err(|r| (r.status, r.message))
        };
        assert!(matches!(status("{"), Err((400, m)) if m.contains("not JSON")));
        assert!(matches!(status("{}"), Err((400, m)) if m.contains("no `model`")));
        assert!(matches!(status(r#"{"model": 3}"#), Err((400, _))));
        let ex = Exchange {
            headers: vec![(PRIORITY_HEADER.into(), "high".into())],
            ..Exchange::default()
        };
        assert!(matches!(
            ask_of(&ex, br#"{"model":"m"}"#).map(|_| ()),
            Err(Refusal { status: 400, .. })
        ));
    }
}
