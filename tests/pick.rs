//! `modelyard pick` over two real hosts, with a gRPC client playing Envoy's side of the
//! endpoint-picker protocol message by message (request headers, the body in full-duplex
//! streamed chunks, the response's headers and body), and each answer followed as Envoy would:
//! the request is sent on to the endpoints the picker lists, in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, Metadata};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyResponse, HttpBody, HttpHeaders, ProcessingRequest, ProcessingResponse,
    StreamedBodyResponse, body_mutation, processing_request::Request as In,
    processing_response::Response as Out,
};
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
use serde_json::json;
use tokio::sync::mpsc;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use modelyard::engine::{Hook, Hooks};
use modelyard::pick::decide::Shedding;
use modelyard::pick::ext_proc::{
    DESTINATION, DESTINATION_NAMESPACE, SERVED, SUBSET, SUBSET_NAMESPACE,
};
use modelyard::pick::hosts::Seen;
use modelyard::pick::serve::{self, PickSettings, Running};

use crate::demo::{TestHost, demo, llama_model, serial, settings};
use crate::util;

/// Room for either model, not both: each host is full with the one it has loaded.
fn host_settings() -> modelyard::config::Settings {
    let d = demo();
    settings(&format!(
        "[memory.cpu]\nbudget = \"450MiB\"\n{}{}",
        llama_model("smol", &d.smollm2, "tags = [\"chat\"]"),
        llama_model("gemma", &d.gemma3, "tags = [\"code\"]"),
    ))
}

/// Envoy's side of one ext_proc stream.
struct Envoy {
    tx: mpsc::Sender<ProcessingRequest>,
    rx: tonic::Streaming<ProcessingResponse>,
}

impl Envoy {
    async fn open(picker: SocketAddr) -> Self {
        let mut client = ExternalProcessorClient::connect(format!("http://{picker}"))
            .await
            .expect("the picker accepts gRPC");
        let (tx, rx) = mpsc::channel(8);
        let outbound =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
            );
        let rx = client
            .process(outbound)
            .await
            .expect("a stream")
            .into_inner();
        Self { tx, rx }
    }

    async fn send(&self, request: In, metadata: Option<Metadata>) {
        let msg = ProcessingRequest {
            request: Some(request),
            metadata_context: metadata,
            ..Default::default()
        };
        self.tx.send(msg).await.expect("the stream is open");
    }

    async fn message(&mut self) -> ProcessingResponse {
        tokio::time::timeout(Duration::from_secs(10), self.rx.message())
            .await
            .expect("an answer within 10 s")
            .expect("no gRPC error")
            .expect("the stream goes on")
    }

    async fn next(&mut self) -> Out {
        self.message().await.response.expect("a response")
    }

    /// Sends the response's headers with Envoy's word on who served it, and takes the
    /// picker's answer to them.
    async fn tell_served(&mut self, served_by: &str) {
        self.send(
            In::ResponseHeaders(HttpHeaders::default()),
            Some(served(served_by)),
        )
        .await;
        assert!(matches!(self.next().await, Out::ResponseHeaders(_)));
    }
}

fn http_body(bytes: &[u8], end_of_stream: bool) -> HttpBody {
    HttpBody {
        body: bytes.to_vec(),
        end_of_stream,
        ..Default::default()
    }
}

/// The body an answer gives back, in the streamed mode.
fn streamed(answer: BodyResponse) -> StreamedBodyResponse {
    match answer
        .response
        .and_then(|r| r.body_mutation)
        .and_then(|m| m.mutation)
    {
        Some(body_mutation::Mutation::StreamedResponse(s)) => s,
        other => panic!("a streamed body: {other:?}"),
    }
}

/// What the picker answered for one request.
#[derive(Debug)]
enum Answer {
    To {
        /// The header's list.
        endpoints: Vec<String>,
        /// The `envoy.lb` metadata's value.
        lb: String,
        /// The body to send on.
        body: Vec<u8>,
        content_length: usize,
    },
    Refused {
        status: i32,
        error: serde_json::Value,
    },
}

impl Answer {
    fn endpoints(&self) -> &[String] {
        match self {
            Answer::To { endpoints, .. } => endpoints,
            Answer::Refused { status, error } => panic!("refused {status}: {error}"),
        }
    }

    fn model(&self) -> String {
        match self {
            Answer::To { body, .. } => {
                let v: serde_json::Value = serde_json::from_slice(body).expect("JSON");
                v["model"].as_str().expect("a model").to_string()
            }
            Answer::Refused { status, error } => panic!("refused {status}: {error}"),
        }
    }
}

fn subset_hint(addrs: &[String]) -> Metadata {
    let list = ListValue {
        values: addrs
            .iter()
            .map(|a| Value {
                kind: Some(Kind::StringValue(a.clone())),
            })
            .collect(),
    };
    let inner = Struct {
        fields: [(
            SUBSET.to_string(),
            Value {
                kind: Some(Kind::ListValue(list)),
            },
        )]
        .into(),
    };
    Metadata {
        filter_metadata: [(SUBSET_NAMESPACE.to_string(), inner)].into(),
        ..Default::default()
    }
}

/// Envoy's word on which endpoint served the request, sent with the response.
fn served(addr: &str) -> Metadata {
    let inner = Struct {
        fields: [(
            SERVED.to_string(),
            Value {
                kind: Some(Kind::StringValue(addr.into())),
            },
        )]
        .into(),
    };
    Metadata {
        filter_metadata: [(DESTINATION_NAMESPACE.to_string(), inner)].into(),
        ..Default::default()
    }
}

/// Plays a request's headers and its body in two chunks, and reads what the picker answers.
async fn ask(
    envoy: &mut Envoy,
    body: &[u8],
    headers: &[(&str, &str)],
    subset: Option<&[String]>,
) -> Answer {
    let mut all = vec![HeaderValue {
        key: ":method".into(),
        raw_value: b"POST".to_vec(),
        ..Default::default()
    }];
    all.extend(headers.iter().map(|(k, v)| HeaderValue {
        key: (*k).into(),
        raw_value: v.as_bytes().to_vec(),
        ..Default::default()
    }));
    envoy
        .send(
            In::RequestHeaders(HttpHeaders {
                headers: Some(HeaderMap { headers: all }),
                end_of_stream: false,
                ..Default::default()
            }),
            subset.map(subset_hint),
        )
        .await;
    let half = body.len() / 2;
    for (chunk, end) in [(&body[..half], false), (&body[half..], true)] {
        envoy
            .send(In::RequestBody(http_body(chunk, end)), None)
            .await;
    }
    let answer = envoy.message().await;
    let lb = answer
        .dynamic_metadata
        .as_ref()
        .and_then(|m| m.fields.get(DESTINATION_NAMESPACE))
        .and_then(|v| match &v.kind {
            Some(Kind::StructValue(lb)) => lb.fields.get(DESTINATION),
            _ => None,
        })
        .and_then(|v| match &v.kind {
            Some(Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        });
    let headers = match answer.response.expect("a response") {
        Out::ImmediateResponse(r) => {
            return Answer::Refused {
                status: r.status.map_or(0, |s| s.code),
                error: serde_json::from_slice(&r.body).expect("a JSON error body"),
            };
        }
        Out::RequestHeaders(h) => h,
        other => panic!("the headers' answer comes first: {other:?}"),
    };
    let mutation = headers
        .response
        .and_then(|r| r.header_mutation)
        .expect("a header mutation");
    let header = |name: &str| {
        mutation
            .set_headers
            .iter()
            .filter_map(|o| o.header.as_ref())
            .find(|h| h.key == name)
            .map(|h| String::from_utf8_lossy(&h.raw_value).into_owned())
    };
    let list = header(DESTINATION).expect("the destination header");
    let content_length: usize = header("content-length")
        .expect("the body's length")
        .parse()
        .expect("a number");
    let mut body = Vec::new();
    loop {
        let Out::RequestBody(b) = envoy.next().await else {
            panic!("the body follows the headers");
        };
        let chunk = streamed(b);
        body.extend(chunk.body);
        if chunk.end_of_stream {
            break;
        }
    }
    Answer::To {
        endpoints: list.split(',').map(String::from).collect(),
        lb: lb.expect("the list in the envoy.lb metadata"),
        body,
        content_length,
    }
}

/// Asks on a fresh stream, as Envoy opens one per request.
async fn route(picker: &Running, body: serde_json::Value, headers: &[(&str, &str)]) -> Answer {
    let mut envoy = Envoy::open(picker.addr).await;
    ask(&mut envoy, body.to_string().as_bytes(), headers, None).await
}

fn chat(model: &str) -> serde_json::Value {
    json!({"model": model, "max_tokens": 4,
           "messages": [{"role": "user", "content": "Say hi."}]})
}

/// Sends the body on down the list, as Envoy's retries do: the first host that answers serves.
async fn follow(http: &reqwest::Client, answer: &Answer) -> (String, serde_json::Value) {
    let Answer::To {
        endpoints, body, ..
    } = answer
    else {
        panic!("{answer:?}");
    };
    for ep in endpoints {
        let sent = http
            .post(format!("http://{ep}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        if let Ok(resp) = sent {
            assert!(resp.status().is_success(), "{ep}: {}", resp.status());
            return (ep.clone(), resp.json().await.expect("a JSON answer"));
        }
    }
    panic!("no endpoint of {endpoints:?} answered");
}

async fn start_picker(
    endpoints: &std::path::Path,
    policy: Option<&str>,
    shedding: Shedding,
) -> Running {
    let hooks = Arc::new(Hooks::new());
    if let Some(name) = policy {
        let engine = util::engine(util::relaxed());
        hooks.set(Hook::SelectModel, Some(util::builtin(&engine, name)));
    }
    let mut s = PickSettings::new("127.0.0.1:0".parse().expect("an address"), endpoints.into());
    s.interval = Duration::from_millis(50);
    s.shedding = shedding;
    s.metrics = Some("127.0.0.1:0".parse().expect("an address"));
    let picker = serve::start(s, hooks).await.expect("the picker starts");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", picker.addr))
        .expect("a URL")
        .connect()
        .await
        .expect("health answers");
    let mut health = HealthClient::new(channel);
    let status = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    let live = health
        .check(status(serve::LIVENESS))
        .await
        .expect("liveness");
    assert_eq!(live.into_inner().status, ServingStatus::Serving as i32);
    let mut ready = false;
    // Every host is read once first: a host that never answers takes its whole timeout.
    for _ in 0..200 {
        let r = health
            .check(status(serve::READINESS))
            .await
            .expect("readiness");
        if r.into_inner().status == ServingStatus::Serving as i32 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "ready once the hosts were read");
    let ext_proc = health
        .check(status(serve::EXT_PROC_SERVICE))
        .await
        .expect("ext_proc");
    assert_eq!(ext_proc.into_inner().status, ServingStatus::Serving as i32);
    picker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_picker_sends_requests_where_their_model_is_and_its_fallbacks_hold() {
    let _one = serial();
    let a = TestHost::start(host_settings()).await;
    let b = TestHost::start(host_settings()).await;
    a.load("smol").await;
    b.load("gemma").await;
    let (ea, eb) = (a.host.addr.to_string(), b.host.addr.to_string());
    // A third host accepts connections and never answers: it is down, and holds nothing up.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("endpoints.yaml");
    std::fs::write(
        &file,
        format!(
            "endpoints:\n  - name: a\n    address: \"127.0.0.1\"\n    port: \"{}\"\n\
             \x20 - name: b\n    address: \"127.0.0.1\"\n    port: \"{}\"\n\
             \x20 - name: stalled\n    address: \"127.0.0.1\"\n    port: \"{}\"\n",
            a.host.addr.port(),
            b.host.addr.port(),
            stalled.local_addr().expect("bound").port()
        ),
    )
    .expect("written");
    let picker = start_picker(&file, None, Shedding::default()).await;
    let view = picker.fleet.current().expect("read");
    assert!(
        matches!(&view.hosts[2], Seen::Down { why, .. } if why.contains("no answer")),
        "{:?}",
        view.hosts[2]
    );

    // Each model goes where it is loaded; the other host follows as the fallback.
    let to_gemma = route(&picker, chat("gemma"), &[]).await;
    assert_eq!(to_gemma.endpoints(), [eb.clone(), ea.clone()]);
    let to_smol = route(&picker, chat("smol"), &[]).await;
    assert_eq!(to_smol.endpoints(), [ea.clone(), eb.clone()]);

    // One whole exchange: the body comes back as sent, its length in the headers, the same
    // list in the `envoy.lb` metadata; the response is passed through.
    let mut envoy = Envoy::open(picker.addr).await;
    let sent = chat("gemma").to_string();
    let answer = ask(&mut envoy, sent.as_bytes(), &[], None).await;
    let Answer::To {
        body,
        content_length,
        endpoints,
        lb,
    } = &answer
    else {
        panic!("{answer:?}");
    };
    assert_eq!(
        *lb,
        endpoints.join(","),
        "the metadata and the header agree"
    );
    assert_eq!(
        body,
        sent.as_bytes(),
        "a named model's body is not rewritten"
    );
    assert_eq!(*content_length, sent.len());
    let (served_by, reply) = follow(&a.http, &answer).await;
    assert_eq!(served_by, eb);
    assert_eq!(reply["model"], "gemma");
    envoy.tell_served(&served_by).await;
    let chunk = b"data: {\"choices\":[]}\n\n".to_vec();
    envoy
        .send(In::ResponseBody(http_body(&chunk, true)), None)
        .await;
    let Out::ResponseBody(back) = envoy.next().await else {
        panic!("the response's body is answered");
    };
    let back = streamed(back);
    assert_eq!((back.body, back.end_of_stream), (chunk, true));

    // Both full: `auto` goes where the policy says. The native rule takes the first ready
    // pair (smol on A); specialization reads the task and sends code to gemma on B, chat to
    // smol on A, and the body names the chosen model for its host.
    let coding = [("x-modelyard-task", "code")];
    let native = route(&picker, chat("auto"), &coding).await;
    assert_eq!(native.endpoints()[0], ea);
    assert_eq!(native.model(), "smol");
    // This one counts every host as saturated (thresholds below any reading), to shed.
    let saturated = Shedding {
        waiting: -1.0,
        kv: -1.0,
    };
    let special = start_picker(&file, Some("specialization"), saturated).await;
    let code = route(&special, chat("auto"), &coding).await;
    assert_eq!(code.endpoints(), [eb.clone(), ea.clone()]);
    assert_eq!(code.model(), "gemma");
    let talk = route(&special, chat("auto"), &[("x-modelyard-task", "chat")]).await;
    assert_eq!(talk.endpoints()[0], ea);
    assert_eq!(talk.model(), "smol");
    // Shedding: a sheddable request (priority below 0) is refused with 429 while every host
    // that could serve it is saturated; one that is not sheddable still goes.
    match route(&special, chat("gemma"), &[("x-modelyard-priority", "-1")]).await {
        Answer::Refused { status, error } => {
            assert_eq!(
                (status, error["error"]["code"].as_str()),
                (429, Some("shed"))
            );
        }
        other => panic!("{other:?}"),
    }
    let kept = route(&special, chat("gemma"), &[("x-modelyard-priority", "0")]).await;
    assert_eq!(kept.endpoints()[0], eb);
    // The same sheddable request, on the picker with the EPP's thresholds: the hosts are idle.
    let idle = route(&picker, chat("gemma"), &[("x-modelyard-priority", "-1")]).await;
    assert_eq!(idle.endpoints()[0], eb);
    special.stop().await.expect("stops");

    // The subset hint: only A may serve gemma; an empty subset is 503.
    let mut envoy = Envoy::open(picker.addr).await;
    let only_a = [ea.clone()];
    let hinted = ask(
        &mut envoy,
        chat("gemma").to_string().as_bytes(),
        &[],
        Some(&only_a),
    )
    .await;
    assert_eq!(hinted.endpoints(), std::slice::from_ref(&ea));
    let mut envoy = Envoy::open(picker.addr).await;
    match ask(
        &mut envoy,
        chat("gemma").to_string().as_bytes(),
        &[],
        Some(&[]),
    )
    .await
    {
        Answer::Refused { status, error } => {
            assert_eq!(status, 503);
            assert!(error["error"]["message"].as_str().is_some(), "{error}");
        }
        other => panic!("{other:?}"),
    }

    // Bad input gets a clear error: a model no host has, a body that is not JSON.
    match route(&picker, chat("nope"), &[]).await {
        Answer::Refused { status, error } => {
            assert_eq!(
                (status, error["error"]["code"].as_str()),
                (404, Some("model_not_found"))
            );
        }
        other => panic!("{other:?}"),
    }
    let mut envoy = Envoy::open(picker.addr).await;
    match ask(&mut envoy, b"{\"model\": ", &[], None).await {
        Answer::Refused { status, error } => {
            assert_eq!(status, 400);
            assert!(
                error["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("not JSON")
            );
        }
        other => panic!("{other:?}"),
    }

    // B stops after the picker listed it first: Envoy goes down the list, and A serves gemma
    // (loading it in smol's place). The picker then leaves B out.
    let mut envoy = Envoy::open(picker.addr).await;
    let listed = ask(&mut envoy, chat("gemma").to_string().as_bytes(), &[], None).await;
    assert_eq!(listed.endpoints(), [eb.clone(), ea.clone()]);
    b.stop().await;
    let (served_by, reply) = follow(&a.http, &listed).await;
    assert_eq!(served_by, ea, "the fallback served");
    assert_eq!(reply["model"], "gemma");
    // Envoy tells the picker who served, with the response: counted as a fallback.
    envoy.tell_served(&served_by).await;
    let mut without_b = Vec::new();
    for _ in 0..100 {
        without_b = route(&picker, chat("gemma"), &[])
            .await
            .endpoints()
            .to_vec();
        if without_b == [ea.clone()] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        without_b,
        std::slice::from_ref(&ea),
        "a host that is down is not listed"
    );

    // What the picker counted: requests routed by host and by who chose, refusals by status,
    // the hosts up and down.
    let metrics_url = format!("http://{}/metrics", picker.metrics_addr.expect("served"));
    let text = a
        .http
        .get(metrics_url)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .map(|v| v.trim().parse().expect("a number"))
            })
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert!(
        value("modelyard_pick_routed_total{host=\"b\",by=\"native\"}") >= 4.0,
        "{text}"
    );
    assert!(
        value("modelyard_pick_routed_total{host=\"a\",by=\"native\"}") >= 2.0,
        "{text}"
    );
    for status in [503, 404, 400] {
        assert!(
            value(&format!(
                "modelyard_pick_refused_total{{status=\"{status}\"}}"
            )) >= 1.0
        );
    }
    let served = |host: &str, fallback: &str| {
        value(&format!(
            "modelyard_pick_served_total{{host=\"{host}\",fallback=\"{fallback}\"}}"
        ))
    };
    assert_eq!(served("b", "false"), 1.0, "{text}");
    assert_eq!(served("a", "true"), 1.0, "{text}");
    assert_eq!(value("modelyard_pick_hosts{state=\"up\"}"), 1.0, "{text}");
    assert_eq!(value("modelyard_pick_hosts{state=\"down\"}"), 2.0, "{text}");
    assert!(
        value("modelyard_pick_decision_seconds_count") >= 10.0,
        "{text}"
    );

    // The endpoints file is read again when it changes: a file that does not parse leaves the
    // old list serving; a valid one replaces it.
    std::fs::write(&file, "endpoints: [").expect("written");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        picker.fleet.endpoints().len(),
        3,
        "a broken file changes nothing"
    );
    std::fs::write(
        &file,
        format!(
            "endpoints:\n  - name: a\n    address: \"127.0.0.1\"\n    port: \"{}\"\n",
            a.host.addr.port()
        ),
    )
    .expect("written");
    let mut hosts = 0;
    for _ in 0..100 {
        hosts = picker.fleet.current().map_or(0, |s| s.hosts.len());
        if hosts == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(hosts, 1, "the new file's hosts are read");
    assert_eq!(
        route(&picker, chat("gemma"), &[]).await.endpoints(),
        std::slice::from_ref(&ea)
    );

    picker.stop().await.expect("stops");
    a.stop().await;
}

/// `modelyard pick` refuses what it cannot serve with, before it listens: every problem of the
/// endpoints file with its entry, a policy without `select-model`.
#[test]
fn the_command_refuses_a_bad_endpoints_file_and_a_policy_that_cannot_pick() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let run = |file: &str, policy: &str| {
        let path = dir.path().join("endpoints.yaml");
        std::fs::write(&path, file).expect("written");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelyard"))
            .args([
                "pick",
                "--listen",
                "127.0.0.1:0",
                "--policy",
                policy,
                "--endpoints",
            ])
            .arg(&path)
            .output()
            .expect("runs");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let bad = run(
        "endpoints:\n  - name: a\n    address: \"host.local\"\n    port: \"99999\"\n",
        "specialization",
    );
    assert!(bad.contains("endpoints[0]: `address`"), "{bad}");
    assert!(bad.contains("endpoints[0]: `port`"), "{bad}");
    let good = "endpoints:\n  - name: a\n    address: \"127.0.0.1\"\n    port: \"8000\"\n";
    let lru = run(good, "lru");
    assert!(lru.contains("does not export select-model"), "{lru}");
}
