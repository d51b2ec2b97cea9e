//! The real set-up for end-to-end tests: llama-server and real small models, provisioned by
//! `modelyard setup --from-source` into `target/demo` (once; later runs find it there), hosts started on a
//! free port, and plain HTTP clients.
//!
//! End-to-end tests take [`serial`] first: each starts real model servers, and a 2-core
//! machine runs them one test at a time.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use modelyard::cli::serve::{self, Host};
use modelyard::cli::setup::{self, Demo, ServerKind};
use modelyard::config::Settings;
use modelyard::scheduler::Status;
use serde_json::{Value, json};
use std::process::Command;
use tokio::sync::oneshot;

/// The provisioned demo; provisions it on first use (about 15 minutes on a fresh machine).
pub fn demo() -> &'static Demo {
    static DEMO: OnceLock<Demo> = OnceLock::new();
    DEMO.get_or_init(|| {
        let dir = std::env::var_os("MODELYARD_DEMO_DIR").map_or_else(
            || {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join(setup::DEFAULT_DEMO_DIR)
            },
            PathBuf::from,
        );
        // Router mode and every llama-server flag need the source build, whichever one the
        // demo's user chose.
        match Demo::read(&dir) {
            Ok(d) if d.llama_server.is_file() && d.server == ServerKind::Source => d,
            _ => setup::setup(&dir, &setup::Server::FromSource)
                .unwrap_or_else(|e| panic!("provisioning the demo failed: {e:#}")),
        }
    })
}

/// One end-to-end test at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A `[models.ID]` table for a llama-server model with a small context.
pub fn llama_model(id: &str, file: &Path, extra: &str) -> String {
    let cmd = setup::llama_server_cmd(&demo().llama_server).replace('"', "\\\"");
    format!(
        "[models.\"{id}\"]\ncmd = \"{cmd}\"\nfile = \"{}\"\ncontext_tokens = 512\n{extra}\n",
        file.display()
    )
}

/// Settings from TOML text; decisions get a deadline a busy 2-core machine never trips, and
/// nothing is remembered between hosts (a test that wants memory sets `state_dir`).
pub fn settings(toml: &str) -> Settings {
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstate_dir = \"\"\n[policies]\nhook_deadline = \"500ms\"\n{toml}"
    );
    Settings::from_toml(&text, Path::new("."), "test config").unwrap_or_else(|e| panic!("{e}"))
}

/// A host serving `settings`; stopping it (or dropping it) stops its model servers.
pub struct TestHost {
    pub host: Host,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub http: reqwest::Client,
}

impl TestHost {
    pub async fn start(settings: Settings) -> TestHost {
        let (tx, rx) = oneshot::channel::<()>();
        let (host, task) = serve::start(settings, async {
            let _ = rx.await;
        })
        .await
        .expect("host starts");
        TestHost {
            host,
            stop: Some(tx),
            task: Some(task),
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.host.addr)
    }

    pub fn status(&self) -> Status {
        self.host.scheduler.status()
    }

    /// GETs `path` (an unauthenticated admin or info endpoint) and returns its JSON body.
    pub async fn get_json(&self, path: &str) -> Value {
        serde_json::from_str(&self.get_text(path).await).expect("a JSON body")
    }

    /// GETs `path` with `Authorization: Bearer key` and returns its JSON body (answered 200).
    pub async fn get_json_with_key(&self, path: &str, key: &str) -> Value {
        let resp = (self.http.get(self.url(path)).bearer_auth(key).send())
            .await
            .expect("the host answers");
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.json().await.expect("a JSON body")
    }

    /// The text of a GET answered 200.
    pub async fn get_text(&self, path: &str) -> String {
        let resp = self
            .http
            .get(self.url(path))
            .send()
            .await
            .expect("the host answers");
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.text().await.expect("a text body")
    }

    /// Runs a Python script with the demo's clients against this host (`OPENAI_BASE_URL` is
    /// its `/v1`), off the async threads; returns what it printed as JSON.
    /// A failure says what the host's models were doing, besides what the script printed.
    pub async fn python(&self, script: &'static str) -> Value {
        let base = self.url("/v1");
        let ran = tokio::task::spawn_blocking(move || run_python(script, &base))
            .await
            .unwrap();
        ran.unwrap_or_else(|e| {
            let status = self.status();
            let models: Vec<String> = (status.models.iter())
                .map(|m| format!("{} {} ({:?})", m.id, m.state, m.last_error))
                .collect();
            let events = serde_json::to_string(&status.events).unwrap_or_default();
            panic!("{e}\nmodels: {models:?}\nlatest events: {events}")
        })
    }

    /// Loads `model` through the admin API and waits until it is ready; fails the test with
    /// the host's answer otherwise.
    pub async fn load(&self, model: &str) {
        let resp = self
            .http
            .post(self.url(&format!("/admin/models/{model}/load")))
            .send()
            .await
            .expect("the host answers");
        let status = resp.status();
        assert!(
            status.is_success(),
            "loading {model}: {status} {}",
            resp.text().await.unwrap_or_default()
        );
    }

    /// A short chat completion; returns the status and the JSON body.
    pub async fn chat(&self, model: &str, max_tokens: u32) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url("/v1/chat/completions"))
            .json(&json!({
                "model": model,
                "messages": [{"role": "user", "content": "Tell me a long story about a lighthouse."}],
                "max_tokens": max_tokens,
                "temperature": 0,
            }))
            .send()
            .await
            .expect("the host answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Signals the host to shut down, as SIGTERM does, without waiting for it.
    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for the host to finish shutting down (after [`TestHost::begin_stop`]).
    pub async fn finished(mut self) {
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("host ran");
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("host ran");
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // A failed test still stops its servers: the scheduler's shutdown runs on the runtime
        // if it is alive, and every server dies with the runtime's threads anyway.
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A loopback port nothing listens on (for a process the test starts itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `GET url` every 100 ms until anything answers, for up to `within`.
pub async fn answers(http: &reqwest::Client, url: &str, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if http.get(url).send().await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The state of `model` in a status.
pub fn state_of(status: &Status, model: &str) -> String {
    status
        .models
        .iter()
        .find(|m| m.id == model)
        .map(|m| m.state.clone())
        .unwrap_or_default()
}

/// Polls `check` every 100 ms until it holds or `within` passes.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check()
}

/// True while `pid` is a live process (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Resident memory of one process, from /proc.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Live processes whose command line mentions `needle`.
pub fn processes_with(needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
                && alive(*pid)
        })
        .collect()
}

/// Runs a Python script with the demo's interpreter (which has the `openai` client) against a
/// host; returns what it printed as JSON.
pub fn python_json(script: &str, base_url: &str) -> Value {
    run_python(script, base_url).unwrap_or_else(|e| panic!("{e}"))
}

fn run_python(script: &str, base_url: &str) -> Result<Value, String> {
    let out = Command::new(&demo().python)
        .args(["-c", script])
        .env("OPENAI_BASE_URL", base_url)
        .env("OPENAI_API_KEY", "unused")
        .output()
        .expect("python runs");
    let said = || {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    if !out.status.success() {
        return Err(format!("the script failed ({}):\n{}", out.status, said()));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("not JSON ({e}):\n{}", said()))
}
