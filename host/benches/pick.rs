//! The endpoint picker's cost per request, beside llm-d's published scheduling cost (about
//! 0.2 ms a request).
//!
//! For fleets of 2 hosts × 2 models, 8 × 8 and 16 × 16 (views built as the hosts' reads give
//! them: a mix of ready, loading and unloaded models, queues and KV use), prints the median and
//! p99 of:
//! - `decide`: one decision in the process, for a named model and for `auto`, with the native
//!   rule and with the `specialization` built-in (contract 0.2) asked over every pair;
//! - `ext_proc`: one request's whole exchange with a running picker over gRPC on loopback, as
//!   Envoy plays it: a stream opened, the headers, the body, the headers' answer and the body
//!   given back; with the native rule; beside it the same exchange with a server that reads
//!   nothing and answers a fixed endpoint (the protocol's floor on this machine), so that the
//!   difference is what the picker adds.
//!
//! Run with `cargo bench --bench pick` (`-- --requests N`, default 2,000).

#[path = "common/allocator.rs"]
mod allocator;
mod common;

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::pin::Pin;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpBody,
    HttpHeaders, ProcessingRequest, ProcessingResponse, StreamedBodyResponse, body_mutation,
    processing_request::Request as In, processing_response::Response as Out,
};
use futures_util::Stream;
use modelyard::engine::types::ModelState;
use modelyard::engine::{EngineSettings, Hook, Hooks, PolicyEngine};
use modelyard::pick::decide::{self, Ask, Shedding};
use modelyard::pick::endpoints::Endpoint;
use modelyard::pick::ext_proc::Picker;
use modelyard::pick::fleet::Fleet;
use modelyard::pick::hosts::{Gauges, HostDevice, HostModel, HostView, Seen};

/// Hosts × models per host.
const FLEETS: [(usize, usize); 3] = [(2, 2), (8, 8), (16, 16)];

fn fleet(hosts: usize, models: usize) -> Vec<Seen> {
    (0..hosts)
        .map(|h| {
            let models = (0..models)
                .map(|m| HostModel {
                    id: format!("model-{m}"),
                    aliases: vec![format!("alias-{m}")],
                    state: [
                        ModelState::Ready,
                        ModelState::Unloaded,
                        ModelState::Loading,
                        ModelState::Unloaded,
                    ][(h + m) % 4],
                    device: "cpu".into(),
                    size_bytes: 1 << 30,
                    tags: vec![["chat", "code", "general"][m % 3].into()],
                    parallel: 4,
                    in_flight: ((h * 7 + m) % 5) as u32,
                    queued: ((h + m * 3) % 3) as u32,
                    priority: 0,
                    pinned: false,
                    size_measured: true,
                    use_count: (h * 100 + m) as u64,
                    load_count: 1,
                    errors: 0,
                    mean_load_ms: 2_000,
                    mean_latency_ms: 300,
                })
                .collect();
            Seen::Up(HostView {
                endpoint: Endpoint {
                    name: format!("host-{h}"),
                    namespace: "default".into(),
                    addr: SocketAddrV4::new([10, 0, 0, h as u8 + 1].into(), 8000),
                    labels: Default::default(),
                },
                models,
                devices: vec![HostDevice {
                    name: "cpu".into(),
                    total_bytes: 8 << 30,
                    free_bytes: ((h % 3) as u64) << 30,
                    utilization_percent: None,
                }],
                gauges: Gauges {
                    waiting: (h % 4) as f64,
                    running: (h % 5) as f64,
                    kv_cache: (h % 10) as f64 / 10.0,
                    ..Gauges::default()
                },
                read_at: tokio::time::Instant::now(),
            })
        })
        .collect()
}

fn ask(model: &str) -> Ask {
    Ask {
        model: Some(model.into()),
        task: Some("code".into()),
        last_user_message: "Write a function.".into(),
        prompt_tokens: 40,
        ..Ask::default()
    }
}

fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn quantiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
}

fn main() -> anyhow::Result<()> {
    let requests = common::arg("--requests").unwrap_or(2_000) as usize;
    let engine = PolicyEngine::new(EngineSettings::default())?;
    let special = Arc::new(
        engine
            .builtin("specialization")
            .ok_or_else(|| anyhow::anyhow!("no specialization built-in"))??,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!("picker cost per request, µs (median / p99); llm-d's published scheduling: ~200");
    println!(
        "| fleet | decide, named | decide, auto | specialization, named | specialization, auto | ext_proc exchange, named | fixed-answer exchange (floor) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (hosts, models) in FLEETS {
        let native = Arc::new(Hooks::new());
        let with_policy = Arc::new(Hooks::new());
        with_policy.set(Hook::SelectModel, Some(special.clone()));
        let fleets: Vec<Arc<Fleet>> = [&native, &with_policy]
            .iter()
            .map(|h| {
                let f = Arc::new(Fleet::new(Vec::new(), (*h).clone()));
                f.update(fleet(hosts, models));
                f
            })
            .collect();
        let decide_with = |f: &Fleet, model: &str| {
            let snapshot = f.current().expect("updated");
            let a = ask(model);
            common::measure(requests, || {
                let route = decide::decide(&snapshot, f.hooks(), &a, Shedding::default());
                std::hint::black_box(route.expect("routed"));
            })
        };
        let named = format!("model-{}", models - 1);
        let cells = [
            decide_with(&fleets[0], &named),
            decide_with(&fleets[0], "auto"),
            decide_with(&fleets[1], &named),
            decide_with(&fleets[1], "auto"),
            rt.block_on(exchange(
                ExternalProcessorServer::new(Picker::new(fleets[0].clone(), Shedding::default())),
                &named,
                requests,
            ))?,
            rt.block_on(exchange(
                ExternalProcessorServer::new(Fixed),
                &named,
                requests,
            ))?,
        ];
        let row: Vec<String> = cells
            .iter()
            .map(|(p50, p99)| format!("{} / {}", micros(*p50), micros(*p99)))
            .collect();
        println!(
            "| {hosts} × {models} ({} pairs) | {} |",
            hosts * models,
            row.join(" | ")
        );
    }
    Ok(())
}

/// The protocol's floor: answers the headers with a fixed endpoint once the body has come, and
/// gives the body back, reading neither.
#[derive(Clone)]
struct Fixed;

#[tonic::async_trait]
impl ExternalProcessor for Fixed {
    type ProcessStream =
        Pin<Box<dyn Stream<Item = Result<ProcessingResponse, tonic::Status>> + Send>>;

    async fn process(
        &self,
        request: tonic::Request<tonic::Streaming<ProcessingRequest>>,
    ) -> Result<tonic::Response<Self::ProcessStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                let Some(In::RequestBody(b)) = msg.request else {
                    continue;
                };
                let headers = ProcessingResponse {
                    response: Some(Out::RequestHeaders(HeadersResponse {
                        response: Some(CommonResponse {
                            header_mutation: Some(HeaderMutation {
                                set_headers: vec![HeaderValueOption {
                                    header: Some(HeaderValue {
                                        key: "x-gateway-destination-endpoint".into(),
                                        raw_value: b"10.0.0.1:8000".to_vec(),
                                        ..Default::default()
                                    }),
                                    ..Default::default()
                                }],
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                    })),
                    ..Default::default()
                };
                let body = ProcessingResponse {
                    response: Some(Out::RequestBody(BodyResponse {
                        response: Some(CommonResponse {
                            body_mutation: Some(BodyMutation {
                                mutation: Some(body_mutation::Mutation::StreamedResponse(
                                    StreamedBodyResponse {
                                        body: b.body,
                                        end_of_stream: true,
                                        ..Default::default()
                                    },
                                )),
                            }),
                            ..Default::default()
                        }),
                    })),
                    ..Default::default()
                };
                for r in [headers, body] {
                    if tx.send(Ok(r)).await.is_err() {
                        return;
                    }
                }
            }
        });
        let out = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(tonic::Response::new(Box::pin(out)))
    }
}

/// Whole exchanges with `service` served on loopback, one stream per request as Envoy opens.
async fn exchange<S: ExternalProcessor>(
    service: ExternalProcessorServer<S>,
    model: &str,
    requests: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            ),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let mut client = ExternalProcessorClient::new(channel);
    let body = serde_json::json!({"model": model, "max_tokens": 16,
        "messages": [{"role": "user", "content": "Write a function."}]})
    .to_string()
    .into_bytes();
    let mut samples = Vec::with_capacity(requests);
    for i in 0..requests + requests / 10 {
        let messages = [
            In::RequestHeaders(HttpHeaders {
                headers: Some(HeaderMap {
                    headers: vec![HeaderValue {
                        key: "x-modelyard-task".into(),
                        raw_value: b"code".to_vec(),
                        ..Default::default()
                    }],
                }),
                end_of_stream: false,
                ..Default::default()
            }),
            In::RequestBody(HttpBody {
                body: body.clone(),
                end_of_stream: true,
                ..Default::default()
            }),
        ]
        .map(|r| ProcessingRequest {
            request: Some(r),
            ..Default::default()
        });
        let t = Instant::now();
        let mut answers = client
            .process(futures_util::stream::iter(messages))
            .await?
            .into_inner();
        // The headers' answer, then the body given back.
        for _ in 0..2 {
            answers
                .message()
                .await?
                .ok_or_else(|| anyhow::anyhow!("the stream ended early"))?;
        }
        if i >= requests / 10 {
            samples.push(t.elapsed());
        }
    }
    server.abort();
    Ok(quantiles(samples))
}
