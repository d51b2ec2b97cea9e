//! Serving, end to end: the real host, real llama-server processes, real models.

use std::time::Duration;

use serde_json::Value;

use crate::demo::{self, TestHost, eventually, llama_model, serial, settings, state_of};
use crate::util::guest_path;

/// Fits one of the two models, not both (SmolLM2 ~0.2 GB, Gemma ~0.35 GB measured).
const ONE_MODEL_BUDGET: &str = "[memory.cpu]\nbudget = \"450MiB\"\nreserve = 0\n";

fn message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_for_one_model_evicts_through_the_wasm_policy() {
    let _serial = serial();
    let d = demo::demo();
    let host = TestHost::start(settings(&format!(
        "eviction = \"lru\"\n{ONE_MODEL_BUDGET}{}{}",
        llama_model("a", &d.smollm2, ""),
        llama_model("b", &d.gemma3, ""),
    )))
    .await;

    let (code, body) = host.chat("a", 4).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body["choices"][0]["message"]["content"].is_string(),
        "{body}"
    );
    let (code, body) = host.chat("b", 4).await;
    assert_eq!(code, 200, "{body}");
    let s = host.status();
    assert_eq!(state_of(&s, "a"), "unloaded");
    assert_eq!(state_of(&s, "b"), "ready");
    let evicted: Vec<_> = s.events.iter().filter(|e| e.kind == "evicted").collect();
    assert_eq!(evicted.len(), 1, "{:?}", s.events);
    assert_eq!(evicted[0].model, "a");
    assert!(evicted[0].detail.contains("policy lru"), "{:?}", evicted[0]);
    assert_eq!(s.eviction.policy, "lru");

    let (code, body) = host.chat("a", 4).await;
    assert_eq!(code, 200, "{body}");
    let s = host.status();
    assert_eq!(state_of(&s, "a"), "ready");
    assert_eq!(state_of(&s, "b"), "unloaded");
    assert_eq!(s.eviction.evictions, 2);
    assert_eq!(s.eviction.fallbacks, 0);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_cold_requests_start_exactly_one_server() {
    let _serial = serial();
    let d = demo::demo();
    let host = TestHost::start(settings(&llama_model("solo", &d.smollm2, ""))).await;
    let requests = (0..8).map(|_| host.chat("solo", 2));
    let answers = futures_util::future::join_all(requests).await;
    for (code, body) in &answers {
        assert_eq!(*code, 200, "{body}");
    }
    let s = host.status();
    let m = &s.models[0];
    assert_eq!(m.load_count, 1);
    assert_eq!(m.use_count, 8);
    assert_eq!(s.events.iter().filter(|e| e.kind == "loaded").count(), 1);
    // The kernel's view: one llama-server with this model's file.
    let servers = demo::processes_with(&d.smollm2.display().to_string());
    assert_eq!(servers, m.pids, "servers for the model: {servers:?}");
    host.stop().await;
    assert!(demo::processes_with(&d.smollm2.display().to_string()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_with_a_request_in_flight_is_never_evicted() {
    let _serial = serial();
    let d = demo::demo();
    // The evil policy, asked to make room for a model whose id says `evil:busy`, names the
    // model that has requests in flight.
    let evil = guest_path("modelyard-policy-evil");
    let host = TestHost::start(settings(&format!(
        "eviction = \"{}\"\n{ONE_MODEL_BUDGET}{}{}",
        evil.display(),
        llama_model("a", &d.smollm2, ""),
        llama_model("b-evil:busy", &d.gemma3, ""),
    )))
    .await;
    let (code, _) = host.chat("a", 1).await;
    assert_eq!(code, 200);

    let long = host.chat("a", 160);
    let other = async {
        // Let the long request start first.
        assert!(
            eventually(Duration::from_secs(5), || host.status().models[0].in_flight
                == 1)
            .await
        );
        host.chat("b-evil:busy", 2).await
    };
    let ((long_code, long_body), (b_code, b_body)) = tokio::join!(long, other);
    assert_eq!(long_code, 200, "the long request survived: {long_body}");
    assert!(
        long_body["usage"]["completion_tokens"]
            .as_u64()
            .unwrap_or(0)
            > 20,
        "{long_body}"
    );
    assert_eq!(b_code, 200, "{b_body}");

    let s = host.status();
    assert!(
        s.eviction.refused >= 1,
        "the policy's answer was refused: {:?}",
        s.eviction
    );
    assert!(s.eviction.fallbacks >= s.eviction.refused);
    let evicted = s
        .events
        .iter()
        .find(|e| e.kind == "evicted")
        .expect("a was evicted later");
    assert_eq!(evicted.model, "a");
    // Not the policy: the native default once a was idle, or, when the long answer outlasted
    // b's drain time, the host's drain rule (a took no new request, its answer ran to its end).
    assert!(
        evicted.detail.contains("native default") || evicted.detail.contains("host drain rule"),
        "{evicted:?}"
    );
    assert_eq!(state_of(&s, "b-evil:busy"), "ready");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_models_survive_pressure_and_idle_ones_go() {
    let _serial = serial();
    let d = demo::demo();
    // Any machine is "under pressure" at 1%: every idle unpinned model must go, pinned stay.
    let host = TestHost::start(settings(&format!(
        "[memory]\npressure = 0.01\n{}{}",
        llama_model("keep", &d.smollm2, "pinned = true"),
        llama_model("spare", &d.gemma3, ""),
    )))
    .await;
    assert_eq!(host.chat("keep", 2).await.0, 200);
    assert_eq!(host.chat("spare", 2).await.0, 200);
    assert!(
        eventually(Duration::from_secs(10), || state_of(
            &host.status(),
            "spare"
        ) == "unloaded")
        .await,
        "{:?}",
        host.status().events
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = host.status();
    assert_eq!(state_of(&s, "keep"), "ready", "{:?}", s.events);
    let e = s
        .events
        .iter()
        .find(|e| e.kind == "evicted")
        .expect("evicted");
    assert!(e.detail.contains("memory pressure"), "{e:?}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_unloads_an_idle_model() {
    let _serial = serial();
    let d = demo::demo();
    let host = TestHost::start(settings(&format!(
        "{}{}",
        llama_model("brief", &d.smollm2, "ttl = 2"),
        llama_model("lasting", &d.gemma3, ""),
    )))
    .await;
    assert_eq!(host.chat("brief", 2).await.0, 200);
    let pid = host.status().models[0].pids[0];
    assert_eq!(host.chat("lasting", 2).await.0, 200);
    assert!(
        eventually(Duration::from_secs(10), || state_of(
            &host.status(),
            "brief"
        ) == "unloaded")
        .await
    );
    let s = host.status();
    assert_eq!(state_of(&s, "lasting"), "ready");
    assert!(
        s.events
            .iter()
            .any(|e| e.model == "brief" && e.detail.contains("ttl")),
        "{:?}",
        s.events
    );
    assert!(
        eventually(Duration::from_secs(5), || !demo::alive(pid)).await,
        "server {pid} stopped"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_backend_mid_request_fails_that_request_clearly_and_the_next_succeeds() {
    let _serial = serial();
    let d = demo::demo();
    let host = TestHost::start(settings(&llama_model("fragile", &d.smollm2, ""))).await;
    assert_eq!(host.chat("fragile", 1).await.0, 200);
    let pid = host.status().models[0].pids[0];
    let long = host.chat("fragile", 400);
    let kill = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill");
    };
    let ((code, body), ()) = tokio::join!(long, kill);
    assert_eq!(code, 502, "{body}");
    assert_eq!(body["error"]["code"], "backend_error");
    assert!(message(&body).contains("fragile"), "{body}");

    let (code, body) = host.chat("fragile", 2).await;
    assert_eq!(code, 200, "{body}");
    let s = host.status();
    assert!(
        s.events.iter().any(|e| e.kind == "crashed"),
        "{:?}",
        s.events
    );
    assert_eq!(s.models[0].load_count, 2);
    assert_ne!(s.models[0].pids, vec![pid]);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_measured_footprint_is_within_a_fifth_of_the_servers_rss() {
    let _serial = serial();
    let d = demo::demo();
    let host = TestHost::start(settings(&llama_model("m", &d.smollm2, ""))).await;
    assert_eq!(host.chat("m", 8).await.0, 200);
    // Housekeeping re-measures every second; compare one reading with /proc right after it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = host.status().models[0].clone();
    assert!(m.size_measured);
    let proc_rss: u64 = m.pids.iter().map(|p| demo::rss_bytes(*p)).sum();
    let ratio = m.size_bytes as f64 / proc_rss as f64;
    assert!(
        (0.8..=1.2).contains(&ratio),
        "measured {} vs /proc {proc_rss}",
        m.size_bytes
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backend_survives_kill_9_of_the_host() {
    let _serial = serial();
    let d = demo::demo();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("modelyard.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n{}",
            llama_model("m", &d.smollm2, "")
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_modelyard"))
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..100 {
        if http.get(format!("{base}/health")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the host came up");
    let resp = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let status: modelyard::scheduler::Status = http
        .get(format!("{base}/admin/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pids = status.models[0].pids.clone();
    assert!(!pids.is_empty() && pids.iter().all(|p| demo::alive(*p)));

    // `modelyard models` asks the running host and prints its table.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelyard"))
        .args(["models", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("m "))
        .unwrap_or_default();
    assert!(
        row.contains("ready") && row.contains("MiB") && !row.contains('*'),
        "{table}"
    );
    assert!(table.lines().any(|l| l.starts_with("cpu ")), "{table}");

    child.kill().unwrap(); // SIGKILL: the host gets no chance to clean up
    child.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || pids
            .iter()
            .all(|p| !demo::alive(*p)))
        .await,
        "orphans: {:?}",
        pids.iter().filter(|p| demo::alive(**p)).collect::<Vec<_>>()
    );
}

/// A llama-server in router mode over a folder holding both models, as a server that already
/// runs; killed with its process group when dropped.
struct Router {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Router {
    fn start() -> Router {
        use std::os::unix::process::CommandExt as _;
        let d = demo::demo();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&d.smollm2, dir.path().join("smol.gguf")).unwrap();
        std::os::unix::fs::symlink(&d.gemma3, dir.path().join("gemma.gguf")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(&d.llama_server)
            .arg("--models-dir")
            .arg(dir.path())
            .args([
                "--models-max",
                "4",
                "--host",
                "127.0.0.1",
                "-t",
                "1",
                "-c",
                "512",
                "--no-webui",
            ])
            .args(["--port", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        Router {
            child,
            port,
            _dir: dir,
        }
    }

    /// The router's own status word for a model.
    async fn status(&self, model: &str) -> String {
        let list: Value = reqwest::get(format!("http://127.0.0.1:{}/models", self.port))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == model)
            .map(|m| {
                m["status"]["value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_default()
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_already_running_router_loads_and_unloads_through_its_native_api() {
    let _serial = serial();
    let router = Router::start();
    let url = format!("http://127.0.0.1:{}/v1", router.port);
    let remote = |id: &str, name: &str| {
        format!(
            "[models.{id}]\nurl = \"{url}\"\nuse_model_name = \"{name}\"\ncontrol = \"llama-router\"\nsize = \"300MiB\"\n"
        )
    };
    let host = TestHost::start(settings(&format!(
        "eviction = \"lru\"\n{ONE_MODEL_BUDGET}{}{}",
        remote("r-smol", "smol"),
        remote("r-gemma", "gemma"),
    )))
    .await;
    assert!(
        eventually(Duration::from_secs(20), || std::net::TcpStream::connect((
            "127.0.0.1",
            router.port
        ))
        .is_ok())
        .await,
        "the router listens"
    );
    assert_eq!(router.status("smol").await, "unloaded");

    let (code, body) = host.chat("r-smol", 4).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(router.status("smol").await, "loaded");

    let (code, body) = host.chat("r-gemma", 4).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(router.status("gemma").await, "loaded");
    assert_eq!(
        router.status("smol").await,
        "unloaded",
        "the policy's eviction reached the router"
    );
    let s = host.status();
    assert_eq!(state_of(&s, "r-smol"), "unloaded");
    assert!(
        s.events
            .iter()
            .any(|e| e.kind == "evicted" && e.model == "r-smol" && e.detail.contains("policy lru"))
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_start_fails_clearly_then_backs_off() {
    let _serial = serial();
    // A real process that exits at once, with a message, instead of serving.
    let host = TestHost::start(settings(
        "[models.broken]\ncmd = \"sh -c 'echo no such model file >&2; exit 3' ${PORT}\"\n",
    ))
    .await;
    let (code, body) = host.chat("broken", 2).await;
    assert_eq!(code, 502, "{body}");
    assert_eq!(body["error"]["code"], "model_load_failed");
    let text = message(&body);
    assert!(
        text.contains("exited before it was ready") && text.contains("no such model file"),
        "{text}"
    );
    // The first retry is at once (it fails again); the next one is told when to come back.
    assert_eq!(host.chat("broken", 2).await.0, 502);
    let resp = host
        .http
        .post(host.url("/v1/chat/completions"))
        .json(&serde_json::json!({"model": "broken", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_backing_off");
    assert_eq!(state_of(&host.status(), "broken"), "failed");
    host.stop().await;
}

/// A model with two places (llama-server started with `-np 2`): two requests run at once,
/// the third waits at the host and runs when one ends; all three are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_with_two_places_serves_two_at_once_and_queues_the_third() {
    let _serial = serial();
    let d = demo::demo();
    let host = TestHost::start(settings(&llama_model("a", &d.smollm2, "parallel = 2"))).await;
    let (code, body) = host.chat("a", 1).await;
    assert_eq!(code, 200, "{body}");
    // The server itself has two slots: `${PARALLEL}` reached its command line.
    let api = host.status().models[0].endpoint.clone().expect("ready");
    let slots: Value = reqwest::get(format!("{}/slots", api.trim_end_matches("/v1")))
        .await
        .expect("llama-server answers")
        .json()
        .await
        .expect("a JSON body");
    assert_eq!(slots.as_array().map(Vec::len), Some(2), "{slots}");

    let done = std::sync::atomic::AtomicBool::new(false);
    let three = async {
        let all = futures_util::future::join_all((0..3).map(|_| host.chat("a", 160))).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        all
    };
    let watch = async {
        let (mut most, mut two_and_one) = (0, false);
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let m = &host.status().models[0];
            most = most.max(m.in_flight);
            two_and_one |= m.in_flight == 2 && m.queued == 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (most, two_and_one)
    };
    let (answers, (most, two_and_one)) = tokio::join!(three, watch);
    for (code, body) in &answers {
        assert_eq!(*code, 200, "{body}");
    }
    assert_eq!(most, 2, "never more than two in flight");
    assert!(two_and_one, "two in flight while the third queued");
    let m = &host.status().models[0];
    assert_eq!((m.in_flight, m.queued), (0, 0));
    host.stop().await;
}

/// A model with one place and a one-second queue timeout, once its mean request time is
/// known: while a long request holds the place, a burst of short ones is more than a second's
/// work, so those that would wait past the timeout are refused at once, with a 503 and a
/// `Retry-After`, instead of waiting it out. Every request gets an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_would_wait_past_the_timeout_is_refused_at_once_with_a_retry_time() {
    let _serial = serial();
    let d = demo::demo();
    let host = TestHost::start(settings(&format!(
        "[scheduler]\nqueue_timeout = \"1s\"\n{}",
        llama_model("a", &d.smollm2, "parallel = 1")
    )))
    .await;
    for _ in 0..modelyard::scheduler::ESTIMATE_AFTER {
        let (code, body) = host.chat("a", 8).await;
        assert_eq!(code, 200, "{body}");
    }
    let long = host.chat("a", 160);
    let burst = async {
        assert!(
            eventually(Duration::from_secs(5), || host.status().models[0].in_flight
                == 1)
            .await
        );
        let one = || async {
            let began = std::time::Instant::now();
            let resp = host
                .http
                .post(host.url("/v1/chat/completions"))
                .json(&serde_json::json!({
                    "model": "a",
                    "messages": [{"role": "user", "content": "Hi"}],
                    "max_tokens": 8,
                }))
                .send()
                .await
                .expect("the host answers");
            let retry = resp.headers().get("retry-after").cloned();
            let code = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            (code, body, retry, began.elapsed())
        };
        futures_util::future::join_all((0..24).map(|_| one())).await
    };
    let ((long_code, long_body), answers) = tokio::join!(long, burst);
    assert_eq!(long_code, 200, "{long_body}");
    let refused: Vec<_> = answers
        .iter()
        .filter(|(_, b, _, _)| b["error"]["code"] == "model_overloaded")
        .collect();
    assert!(!refused.is_empty(), "none refused early: {answers:?}");
    for (code, body, retry, took) in &refused {
        assert_eq!(*code, 503, "{body}");
        assert!(retry.is_some(), "a Retry-After: {body}");
        assert!(
            *took < Duration::from_millis(500),
            "refused at once, not after {took:?}"
        );
    }
    for (code, body, _, _) in &answers {
        assert!(
            *code == 200
                || ["model_overloaded", "model_not_ready"]
                    .contains(&body["error"]["code"].as_str().unwrap_or("")),
            "{code} {body}"
        );
    }
    host.stop().await;
}

/// `[scheduler] max_loaded` with real servers: memory has room for both models, the cap for
/// one, so the second load evicts the first through the eviction policy (its server stops).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_past_max_loaded_evicts_through_the_policy() {
    let _serial = serial();
    let d = demo::demo();
    let host = TestHost::start(settings(&format!(
        "[scheduler]\nmax_loaded = 1\n[memory.cpu]\nbudget = \"4GiB\"\nreserve = 0\n{}{}",
        llama_model("a", &d.smollm2, ""),
        llama_model("b", &d.gemma3, ""),
    )))
    .await;
    for m in ["a", "b"] {
        let (code, body) = host.chat(m, 1).await;
        assert_eq!(code, 200, "{m}: {body}");
    }
    let s = host.status();
    assert_eq!(
        (state_of(&s, "a").as_str(), state_of(&s, "b").as_str()),
        ("unloaded", "ready")
    );
    let evicted = (s.events.iter())
        .find(|e| e.kind == "evicted")
        .expect("a was evicted");
    assert_eq!(evicted.model, "a");
    assert!(evicted.detail.contains("to make room for b"), "{evicted:?}");
    assert_eq!(s.eviction.evictions, 1);
    host.stop().await;
}
