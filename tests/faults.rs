//! Faults between the host and a model server, each reproduced on loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::demo::{TestHost, settings};

/// How long the stand-in keeps an idle keep-alive connection (llama-server: 5 s).
const SERVER_KEEP_ALIVE: Duration = Duration::from_millis(2500);

/// An HTTP/1.1 server that, like llama-server, drops keep-alive connections idle for
/// [`SERVER_KEEP_ALIVE`], and, unlike a polite one, notices only when the next request on
/// such a connection arrives: it closes it then without answering, which is what a client
/// sees when its request crosses the server's close. Returns its address and how many
/// requests it dropped so.
async fn keep_alive_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let d = d.clone();
            tokio::spawn(async move {
                let mut conn = BufReader::new(sock);
                let mut idle_since = tokio::time::Instant::now();
                loop {
                    let mut line = String::new();
                    if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0usize;
                    loop {
                        let mut h = String::new();
                        if conn.read_line(&mut h).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if conn.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if idle_since.elapsed() >= SERVER_KEEP_ALIVE {
                        d.fetch_add(1, Ordering::SeqCst);
                        return; // closed, unanswered
                    }
                    let answer = if line.starts_with("GET /v1/models") {
                        r#"{"object":"list","data":[{"id":"m"}]}"#.to_string()
                    } else {
                        r#"{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#.to_string()
                    };
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    if conn.get_mut().write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                    idle_since = tokio::time::Instant::now();
                }
            });
        }
    });
    (format!("http://{addr}/v1"), dropped)
}

/// Regression for the reliability issue's 502 "connection closed before message completed"
/// at 1,000 clients: the host kept idle upstream connections for 90 s, far past llama-server's
/// 5 s keep-alive, so a request could go out on a connection the server was closing. Idle
/// upstream connections now go before any server's keep-alive lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_upstream_connection_is_not_reused_past_the_servers_keep_alive() {
    let (url, dropped) = keep_alive_server().await;
    let host = TestHost::start(settings(&format!(
        "[models.m]\nurl = \"{url}\"\ncontrol = \"none\"\n"
    )))
    .await;
    let (status, body) = host.chat("m", 4).await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(SERVER_KEEP_ALIVE + Duration::from_millis(500)).await;
    let (status, body) = host.chat("m", 4).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        0,
        "a request went out on a connection idle past the server's keep-alive"
    );
    host.stop().await;
}

/// An answer's body, chunk by chunk.
pub type Body =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<Vec<u8>>> + Send>>;

/// Starts a streamed chat completion on `model` and returns the body's stream once its first
/// chunk has come.
pub async fn streaming(
    http: &reqwest::Client,
    url: String,
    model: &str,
    max_tokens: u32,
) -> (Body, String) {
    use futures_util::StreamExt as _;
    let resp = http
        .post(url)
        .json(&serde_json::json!({
            "model": model, "stream": true, "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "user", "content": "Tell me a very long story about a lighthouse keeper."}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body: Body = Box::pin(resp.bytes_stream().map(|c| c.map(|b| b.to_vec())));
    let first = body.next().await.unwrap().unwrap();
    (body, String::from_utf8_lossy(&first).into_owned())
}

pub async fn rest_of(mut body: Body, mut text: String) -> String {
    use futures_util::StreamExt as _;
    while let Some(Ok(chunk)) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

/// SIGTERM's drain: a stream in flight finishes, a new request gets a 503 naming the shutdown
/// (with `Retry-After`), then every model server stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_a_stream_in_flight_and_refuses_new_requests() {
    let _serial = crate::demo::serial();
    let d = crate::demo::demo();
    let mut host = TestHost::start(settings(&crate::demo::llama_model(
        "m",
        &d.smollm2,
        "parallel = 2",
    )))
    .await;
    let (body, first) = streaming(&host.http, host.url("/v1/chat/completions"), "m", 160).await;
    let pids = host.status().models[0].pids.clone();
    assert!(!pids.is_empty());
    host.begin_stop();
    let http = host.http.clone();
    let url = host.url("/v1/chat/completions");
    let mut refused = None;
    for _ in 0..50 {
        let resp = http
            .post(&url)
            .json(
                &serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .send()
            .await;
        if let Ok(r) = resp
            && r.status() == 503
        {
            refused = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.expect("a new request during the drain gets a 503");
    assert!(refused.headers().contains_key("retry-after"));
    let err: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(err["error"]["code"], "shutting_down", "{err}");
    let text = rest_of(body, first).await;
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "the stream was cut: {text}"
    );
    host.finished().await;
    assert!(
        pids.iter().all(|p| !crate::demo::alive(*p)),
        "a model server outlived the host"
    );
}

/// A stream longer than `[server] shutdown_grace` is cut when the grace ends; the host stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_what_outlasts_the_grace() {
    let _serial = crate::demo::serial();
    let d = crate::demo::demo();
    let mut host = TestHost::start(settings(&format!(
        "[server]\nshutdown_grace = \"1s\"\n{}",
        crate::demo::llama_model("m", &d.smollm2, "")
    )))
    .await;
    let (body, first) = streaming(&host.http, host.url("/v1/chat/completions"), "m", 450).await;
    let began = tokio::time::Instant::now();
    host.begin_stop();
    let text = rest_of(body, first).await;
    host.finished().await;
    let took = began.elapsed();
    assert!(!text.contains("[DONE]"), "450 tokens in a second?");
    assert!(took < Duration::from_secs(15), "stopping took {took:?}");
}

/// `modelyard serve` as a process, on a config of `tables` (after its own `listen`); it logs
/// (`RUST_LOG=warn`) to `serve.log` in its folder and is killed if the test ends first.
struct Serving {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Serving {
    fn start(tables: &str) -> Serving {
        let port = crate::demo::free_port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("modelyard.toml");
        std::fs::write(
            &config,
            format!("listen = \"127.0.0.1:{port}\"\nstate_dir = \"\"\n{tables}"),
        )
        .unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_modelyard"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap())
            .spawn()
            .unwrap();
        Serving { child, port, dir }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A second SIGTERM stops `serve` at once, however long the grace; the model servers go with
/// it.
#[test]
fn a_second_sigterm_stops_serve_at_once() {
    let _serial = crate::demo::serial();
    let d = crate::demo::demo();
    let mut serving = Serving::start(&format!(
        "[server]\nshutdown_grace = \"5m\"\n{}",
        crate::demo::llama_model("m", &d.smollm2, "")
    ));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let url = serving.url("/v1/chat/completions");
    assert!(rt.block_on(crate::demo::answers(
        &http,
        &serving.url("/health"),
        Duration::from_secs(10)
    )));
    let child = &mut serving.child;
    let (body, _) = rt.block_on(streaming(&http, url, "m", 450));
    let llama = crate::demo::processes_with(&d.smollm2.display().to_string());
    assert!(!llama.is_empty(), "the model's server runs");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first SIGTERM drains; it does not stop"
    );
    let began = std::time::Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "still serving after a second SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130));
    drop(body);
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        llama.iter().all(|p| !crate::demo::alive(*p))
    });
    assert!(gone, "a model server outlived the host: {llama:?}");
}

/// A server that accepts a request and never answers: the client gets a 504 naming the model
/// after `[server] upstream_timeout`, and `serve` logs the 5xx with the model and its cause.
#[test]
fn a_server_that_never_answers_gets_a_504_and_the_log_says_why() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    // Answers the backend's `GET /v1/models` (so the model starts), then holds every other
    // request unanswered.
    std::thread::spawn(move || {
        use std::io::{BufRead as _, Write as _};
        let mut held = Vec::new();
        for conn in silent.incoming().flatten() {
            let mut line = String::new();
            let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
            let _ = reader.read_line(&mut line);
            if line.starts_with("GET") {
                let body = r#"{"object":"list","data":[{"id":"quiet"}]}"#;
                let _ = write!(
                    &conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            } else {
                held.push(conn);
            }
        }
    });
    let serving = Serving::start(&format!(
        "[server]\nupstream_timeout = \"1s\"\n\
         [models.quiet]\nurl = \"http://{silent_addr}/v1\"\ncontrol = \"none\"\nsize = \"1MiB\"\n"
    ));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = rt.block_on(async {
        let http = reqwest::Client::new();
        assert!(crate::demo::answers(&http, &serving.url("/health"), Duration::from_secs(10)).await);
        let resp = http
            .post(serving.url("/v1/chat/completions"))
            .json(&serde_json::json!({"model": "quiet", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    });
    let logged = serving.log();
    assert_eq!(status, 504, "{body}");
    assert!(
        body.contains("quiet") && body.contains("upstream_timeout"),
        "{body}"
    );
    assert!(
        logged.contains("answered with a server error") && logged.contains("quiet"),
        "{logged}"
    );
}

/// A server that listens but never answers its health check is given up after its
/// `start_timeout`: the request gets a 502 naming the model and the timeout, the model is
/// marked failed with the reason, and the process is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_hanging_on_health_is_given_up_after_start_timeout() {
    let script = "import socket,sys,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
                  s.bind(('127.0.0.1',int(sys.argv[1])))\ns.listen()\nheld=[]\n\
                  while True:\n    c,_=s.accept()\n    held.append(c)\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hang.py");
    std::fs::write(&path, script).unwrap();
    let host = TestHost::start(settings(&format!(
        "[models.stuck]\ncmd = \"python3 {} ${{PORT}}\"\nstart_timeout = \"2s\"\nsize = \"1MiB\"\n",
        path.display()
    )))
    .await;
    let began = tokio::time::Instant::now();
    let (status, body) = host.chat("stuck", 4).await;
    assert_eq!(status, 502, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("stuck"), "{body}");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    let m = host
        .status()
        .models
        .into_iter()
        .find(|m| m.id == "stuck")
        .unwrap();
    assert_eq!(m.state, "failed", "{m:?}");
    assert!(
        crate::demo::eventually(Duration::from_secs(5), || crate::demo::processes_with(
            &path.display().to_string()
        )
        .is_empty())
        .await,
        "the hanging server was left running"
    );
    host.stop().await;
}

/// The policy folder's problems never stop serving: a cache folder that cannot be written
/// (policies compile and serve, uncached), and the policies folder removed while serving (its
/// policy stops serving; the configured one takes the hook back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_cache_and_a_removed_policies_folder_leave_the_host_serving() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::copy(
        crate::util::guest_path("modelyard-policy-lfu"),
        policies.join("mine.wasm"),
    )
    .unwrap();
    let not_a_folder = dir.path().join("a-file");
    std::fs::write(&not_a_folder, "").unwrap();
    let host = TestHost::start(settings(&format!(
        // `settings` opens the `[policies]` table these keys go in.
        "dir = \"{}\"\ncache = \"{}/cache\"\n\
         [models.m]\nurl = \"http://127.0.0.1:9/v1\"\ncontrol = \"none\"\nsize = \"1MiB\"\n",
        policies.display(),
        not_a_folder.display()
    )))
    .await;
    let served_by = |p: &serde_json::Value| {
        p["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["hook"] == "choose-eviction")
            .map(|h| h["policy"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    let mut served = String::new();
    for _ in 0..100 {
        served = served_by(&host.get_json("/admin/policies").await);
        if served == "mine" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served, "mine", "the folder's policy serves, uncached");
    std::fs::remove_dir_all(&policies).unwrap();
    for _ in 0..100 {
        served = served_by(&host.get_json("/admin/policies").await);
        if served == "adaptive" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        served, "adaptive",
        "the configured policy takes the hook back"
    );
    let (status, _) = host.chat("m", 1).await;
    assert_eq!(
        status, 502,
        "requests are still answered (this one's server is absent)"
    );
    host.stop().await;
}

/// A client that hangs up mid-stream frees its place at once: the model's in-flight count
/// drops, and the next request needs no queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_mid_stream_frees_its_place_at_once() {
    let _serial = crate::demo::serial();
    let d = crate::demo::demo();
    let host = TestHost::start(settings(&crate::demo::llama_model(
        "m",
        &d.smollm2,
        "parallel = 1",
    )))
    .await;
    let (body, _) = streaming(&host.http, host.url("/v1/chat/completions"), "m", 450).await;
    assert_eq!(host.status().models[0].in_flight, 1);
    drop(body);
    assert!(
        crate::demo::eventually(Duration::from_secs(2), || host.status().models[0].in_flight
            == 0)
        .await,
        "the place stayed taken after the client left"
    );
    let began = tokio::time::Instant::now();
    let (status, body) = host.chat("m", 4).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    host.stop().await;
}

/// Regression (a slowloris): a client that sends half a request's head held its connection
/// open for good. The host now closes it after `HEADER_READ_TIMEOUT`, and serves others
/// meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_headers_is_cut_off() {
    use modelyard::proxy::listen::HEADER_READ_TIMEOUT;
    let host = TestHost::start(settings(
        "[models.m]\nurl = \"http://127.0.0.1:9/v1\"\ncontrol = \"none\"\nsize = \"1MiB\"\n",
    ))
    .await;
    let mut slow = tokio::net::TcpStream::connect(host.host.addr)
        .await
        .unwrap();
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Others are served while it dawdles.
    assert_eq!(host.get_json("/health").await["status"], "ok");
    let began = tokio::time::Instant::now();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(HEADER_READ_TIMEOUT * 2, slow.read(&mut buf)).await;
    let closed_after = began.elapsed();
    assert!(read.is_ok(), "still open after {closed_after:?}");
    assert!(
        closed_after <= HEADER_READ_TIMEOUT + Duration::from_secs(2),
        "{closed_after:?}"
    );
    host.stop().await;
}

/// Regression: a client that sent its head and then trickled its body held a connection (and
/// a task) for as long as it liked. A body slower than `server.body_timeout` now gets 408;
/// one that arrives in time, even in pieces, is read and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_body_is_cut_off_with_408() {
    let host = TestHost::start(settings(
        "[server]\nbody_timeout = \"1s\"\n\
         [models.m]\nurl = \"http://127.0.0.1:9/v1\"\ncontrol = \"none\"\nsize = \"1MiB\"\n",
    ))
    .await;
    let body = br#"{"model":"nobody","messages":[{"role":"user","content":"hi"}]}"#;
    // Sends the head and 10 bytes, then the rest after `pause` (never, if `None`), and reads
    // the answer.
    let send = |pause: Option<Duration>| {
        let addr = host.host.addr;
        async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            c.write_all(head.as_bytes()).await.unwrap();
            c.write_all(&body[..10]).await.unwrap();
            let began = tokio::time::Instant::now();
            if let Some(pause) = pause {
                tokio::time::sleep(pause).await;
                c.write_all(&body[10..]).await.unwrap();
            }
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut answer)).await;
            (
                String::from_utf8_lossy(&answer).into_owned(),
                began.elapsed(),
            )
        }
    };
    // In time, though in two pieces: read whole, and answered (404: no such model).
    let (answer, _) = send(Some(Duration::from_millis(300))).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    // Never finished: 408 naming the limit, when the limit runs out.
    let (answer, took) = send(None).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("server.body_timeout"), "{answer}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    host.stop().await;
}

/// `cmd_stop` (a container's stop, say) runs instead of SIGTERM with `${MODEL}` and `${PID}`
/// filled, and the server's exit is waited for; a `cmd_stop` that does not stop it is followed,
/// after `stop_timeout`, by the kill the host always has in hand. Real processes: a Python HTTP
/// server stands in for the model server. The polite server's `stop_timeout` is long, so that
/// its quick stop cannot be the kill on a busy machine (a 1 s bound once met 1.007 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cmd_stop_stops_the_server_and_one_that_does_not_is_followed_by_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("stopped");
    let model = |id: &str, stop_timeout: &str, stop: &str| {
        format!(
            "[models.{id}]\ncmd = \"python3 -m http.server ${{PORT}} --bind 127.0.0.1\"\nhealth = \"/\"\n\
             size = \"1MiB\"\nstop_timeout = \"{stop_timeout}\"\ncmd_stop = \"{stop}\"\n"
        )
    };
    let host = TestHost::start(settings(&format!(
        "{}{}",
        model(
            "polite",
            "10s",
            &format!(
                "sh -c 'echo ${{MODEL}} ${{PID}} > {}; kill -INT ${{PID}}'",
                mark.display()
            )
        ),
        model("stubborn", "1s", "true"),
    )))
    .await;
    for id in ["polite", "stubborn"] {
        host.load(id).await;
        let pid = host
            .status()
            .models
            .iter()
            .find(|m| m.id == id)
            .unwrap()
            .pids[0];
        let began = tokio::time::Instant::now();
        let unload = host
            .http
            .post(host.url(&format!("/admin/models/{id}/unload")))
            .send()
            .await
            .unwrap();
        assert!(unload.status().is_success(), "{id}");
        let took = began.elapsed();
        assert!(
            !crate::demo::alive(pid),
            "{id}: pid {pid} outlived its stop"
        );
        if id == "polite" {
            let said = std::fs::read_to_string(&mark).unwrap();
            assert_eq!(said.trim(), format!("polite {pid}"));
            assert!(
                took < Duration::from_secs(10),
                "it stopped on cmd_stop, not the kill: {took:?}"
            );
        } else {
            assert!(
                took >= Duration::from_secs(1),
                "killed only after stop_timeout: {took:?}"
            );
        }
    }
    host.stop().await;
}
