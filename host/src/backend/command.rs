//! The `command` backend: one server process per model, started from the model's `cmd` with its
//! placeholders filled in, on a free loopback port.
//!
//! Every server runs in its own process group, so stopping it reaches anything it spawned, and
//! asks the kernel to kill it when the host dies (`PR_SET_PDEATHSIG`), so that no server
//! outlives the host, even after `kill -9`. The kernel sends that signal when the *thread* that
//! spawned the server exits: servers are started from async tasks, whose runtime worker threads
//! live as long as the host, never from short-lived blocking threads.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{BackendError, CountError, Endpoint, Instance, Tokenizer};
use crate::config::{CommandSettings, ModelSettings};

/// Lines of a server's output kept to explain why it failed.
const OUTPUT_TAIL_LINES: usize = 12;
/// How often a starting server's health check is polled while it is young: a small model's
/// server is ready within a few hundred milliseconds, and each poll is one loopback request,
/// so the poll's interval, the floor of every cold start, stays short there.
const HEALTH_POLL_EARLY: Duration = Duration::from_millis(10);
/// For how long the early interval holds.
const HEALTH_POLL_EARLY_FOR: Duration = Duration::from_secs(2);
/// How often it is polled after that.
const HEALTH_POLL: Duration = Duration::from_millis(100);
/// How long one health check may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// A running server process.
#[derive(Debug)]
pub struct CommandInstance {
    model: String,
    endpoint: Endpoint,
    pid: u32,
    exit: watch::Receiver<Option<String>>,
    tail: Arc<Mutex<VecDeque<String>>>,
    stop_timeout: Duration,
    /// `cmd_stop` with its placeholders filled, run instead of SIGTERM.
    stop_argv: Option<Vec<String>>,
    tokenizer: Tokenizer,
}

/// Starts the server for `model` and waits until its health check passes.
pub async fn start(
    http: &reqwest::Client,
    model: &ModelSettings,
    c: &CommandSettings,
) -> Result<CommandInstance, BackendError> {
    let port = free_port().map_err(|e| BackendError::Spawn {
        program: c.argv[0].clone(),
        reason: format!("no free loopback port: {e}"),
    })?;
    let vars = placeholders(model, c, port);
    let argv = command_line(model, c, port);
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .envs(device_env(model, c))
        .envs(c.env.iter().map(|(k, v)| (k, substitute(v, &vars))))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    die_with_host(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| BackendError::Spawn {
        program: argv[0].clone(),
        reason: e.to_string(),
    })?;
    let pid = child.id().unwrap_or(0);
    tracing::info!(model = %model.id, pid, port, "started server");

    let tail = Arc::new(Mutex::new(VecDeque::new()));
    if let Some(out) = child.stdout.take() {
        tokio::spawn(keep_tail(out, tail.clone(), model.id.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(keep_tail(err, tail.clone(), model.id.clone()));
    }
    let (tx, exit) = watch::channel(None);
    tokio::spawn(async move {
        let status = match child.wait().await {
            Ok(s) => s.to_string(),
            Err(e) => format!("wait failed: {e}"),
        };
        let _ = tx.send(Some(status));
    });

    let api_base = format!("http://127.0.0.1:{port}/v1");
    let instance = CommandInstance {
        model: model.id.clone(),
        tokenizer: Tokenizer::new(http.clone(), &api_base),
        endpoint: Endpoint {
            api_base,
            api_key: None,
            model_name: c.model_name.clone().unwrap_or_else(|| model.id.clone()),
        },
        pid,
        exit,
        tail,
        stop_timeout: c.stop_timeout,
        stop_argv: c.stop_argv.as_ref().map(|argv| {
            let mut vars = vars.to_vec();
            vars.push(("PID", pid.to_string()));
            argv.iter().map(|a| substitute(a, &vars)).collect()
        }),
    };
    let health = format!("http://127.0.0.1:{port}{}", c.health_path);
    let spawned = Instant::now();
    let deadline = spawned + c.start_timeout;
    let mut exit = instance.exit.clone();
    loop {
        let exited = exit.borrow().clone();
        if let Some(status) = exited {
            // Let the output readers catch the last lines.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Err(BackendError::ExitedEarly {
                status,
                tail: instance.tail(),
            });
        }
        if Instant::now() >= deadline {
            instance.stop().await;
            return Err(BackendError::StartTimeout {
                secs: c.start_timeout.as_secs(),
                tail: instance.tail(),
            });
        }
        let ok = http
            .get(&health)
            .timeout(HEALTH_TIMEOUT)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(instance);
        }
        let interval = if spawned.elapsed() < HEALTH_POLL_EARLY_FOR {
            HEALTH_POLL_EARLY
        } else {
            HEALTH_POLL
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = exit.changed() => {}
        }
    }
}

impl CommandInstance {
    fn tail(&self) -> Vec<String> {
        self.tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn signal_group(&self, signal: Signal) {
        if self.pid == 0 {
            return;
        }
        // ESRCH just means the whole group is gone already.
        let _ = killpg(Pid::from_raw(self.pid as i32), signal);
    }

    /// Runs `cmd_stop` (a container's stop, say) and waits for it within `stop_timeout`; what
    /// it says on failure is logged. The server's own exit is waited for after.
    async fn run_stop_command(&self, argv: &[String]) {
        let run = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(self.stop_timeout, run).await {
            Ok(Ok(out)) if out.status.success() => {
                tracing::info!(model = %self.model, "cmd_stop ran");
            }
            Ok(Ok(out)) => tracing::warn!(model = %self.model, status = %out.status,
                "cmd_stop failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
            Ok(Err(e)) => tracing::warn!(model = %self.model, "cmd_stop could not run: {e}"),
            Err(_) => tracing::warn!(model = %self.model,
                "cmd_stop ran past {:?}", self.stop_timeout),
        }
    }

    async fn wait_exit(&self) {
        let mut exit = self.exit.clone();
        let _ = exit.wait_for(Option::is_some).await;
    }
}

impl Instance for CommandInstance {
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
        Some(self.pid)
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.exit.borrow().is_none() {
                match &self.stop_argv {
                    Some(argv) => self.run_stop_command(argv).await,
                    None => self.signal_group(Signal::SIGTERM),
                }
                if tokio::time::timeout(self.stop_timeout, self.wait_exit())
                    .await
                    .is_err()
                {
                    tracing::warn!(model = %self.model, pid = self.pid,
                        "server still running {:?} after it was asked to stop; killing it", self.stop_timeout);
                    self.signal_group(Signal::SIGKILL);
                    self.wait_exit().await;
                }
            }
            // Anything the server left behind in its group.
            self.signal_group(Signal::SIGKILL);
            tracing::info!(model = %self.model, pid = self.pid, "stopped server");
        })
    }

    fn exited(&self) -> Option<BoxFuture<'static, String>> {
        let mut exit = self.exit.clone();
        let tail = self.tail.clone();
        Some(Box::pin(async move {
            let status = match exit.wait_for(Option::is_some).await {
                Ok(s) => s.clone().unwrap_or_default(),
                Err(_) => "the host stopped watching it".to_string(),
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
            let last = tail
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .back()
                .cloned()
                .unwrap_or_default();
            if last.is_empty() {
                format!("the server exited ({status})")
            } else {
                format!("the server exited ({status}); last output: {last}")
            }
        }))
    }
}

/// An instance dropped without `stop` (a load given up, a host shutting down) takes its
/// server with it. Only while the leader runs: its group id is ours until then.
impl Drop for CommandInstance {
    fn drop(&mut self) {
        if self.exit.borrow().is_none() {
            self.signal_group(Signal::SIGKILL);
        }
    }
}

/// The command line `model`'s server starts with on `port`: its `cmd` with the placeholders
/// filled in.
pub fn command_line(model: &ModelSettings, c: &CommandSettings, port: u16) -> Vec<String> {
    let vars = placeholders(model, c, port);
    c.argv.iter().map(|a| substitute(a, &vars)).collect()
}

/// Replaces `${NAME}` for each known name.
fn substitute(text: &str, vars: &[(&str, String)]) -> String {
    let mut out = text.to_string();
    for (name, value) in vars {
        out = out.replace(&format!("${{{name}}}"), value);
    }
    out
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

async fn keep_tail(
    stream: impl AsyncRead + Unpin,
    tail: Arc<Mutex<VecDeque<String>>>,
    model: String,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(model = %model, "{line}");
        let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() == OUTPUT_TAIL_LINES {
            t.pop_front();
        }
        t.push_back(line);
    }
}

/// Asks the kernel to SIGKILL the child when the host dies.
#[allow(unsafe_code)]
fn die_with_host(cmd: &mut tokio::process::Command) {
    let host = std::process::id();
    // SAFETY: the closure runs in the forked child before exec. It calls only prctl(2) and
    // getppid(2), both async-signal-safe, and allocates nothing on success.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The host may have died between fork and prctl, and then no signal would come.
            if std::os::unix::process::parent_id() != host {
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
}

/// The values of the placeholders a command line may use.
fn placeholders(
    model: &ModelSettings,
    c: &CommandSettings,
    port: u16,
) -> [(&'static str, String); 7] {
    [
        ("PORT", port.to_string()),
        ("HOST", "127.0.0.1".to_string()),
        ("MODEL", model.id.clone()),
        (
            "FILE",
            c.file
                .as_ref()
                .map(|f| f.display().to_string())
                .unwrap_or_default(),
        ),
        ("CONTEXT", model.context_tokens.to_string()),
        ("PARALLEL", model.parallel.to_string()),
        // llama-server splits `-c` among its `-np` slots: this gives each the whole window.
        (
            "CONTEXT_TOTAL",
            (u64::from(model.context_tokens) * u64::from(model.parallel)).to_string(),
        ),
    ]
}

/// What pins a server to its model's GPU: `gpuN` (NVML's numbering) is CUDA device N once CUDA
/// counts by PCI bus as NVML does, and the server sees only that card. Nothing for the CPU, or
/// when the model's own `env` says which devices its server sees.
fn device_env(model: &ModelSettings, c: &CommandSettings) -> Vec<(&'static str, String)> {
    let Some(n) = model
        .device
        .strip_prefix("gpu")
        .and_then(|n| n.parse::<u32>().ok())
    else {
        return Vec::new();
    };
    if c.env.iter().any(|(k, _)| k == "CUDA_VISIBLE_DEVICES") {
        return Vec::new();
    }
    vec![
        ("CUDA_DEVICE_ORDER", "PCI_BUS_ID".to_string()),
        ("CUDA_VISIBLE_DEVICES", n.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(env: Vec<(String, String)>) -> CommandSettings {
        CommandSettings {
            argv: vec!["s".into()],
            env,
            file: None,
            health_path: "/health".into(),
            start_timeout: std::time::Duration::from_secs(1),
            stop_timeout: std::time::Duration::from_secs(1),
            model_name: None,
            stop_argv: None,
            footprint: crate::config::FootprintSource::Processes,
        }
    }

    #[test]
    fn a_server_on_a_gpu_sees_only_that_gpu_unless_its_env_says_otherwise() {
        let on = |device: &str, c: &CommandSettings| {
            let model = ModelSettings {
                device: device.into(),
                ..ModelSettings::new("m", crate::config::BackendSettings::Command(c.clone()))
            };
            device_env(&model, c)
        };
        let plain = settings(Vec::new());
        assert_eq!(
            on("gpu1", &plain),
            [
                ("CUDA_DEVICE_ORDER", "PCI_BUS_ID".to_string()),
                ("CUDA_VISIBLE_DEVICES", "1".to_string())
            ]
        );
        assert!(on("cpu", &plain).is_empty());
        let own = settings(vec![("CUDA_VISIBLE_DEVICES".into(), "0,1".into())]);
        assert!(on("gpu1", &own).is_empty(), "the model's env decides");
    }

    #[test]
    fn placeholders_are_filled_and_others_left_alone() {
        let vars = [("PORT", "8081".to_string()), ("MODEL", "m".to_string())];
        assert_eq!(substitute("--port=${PORT}", &vars), "--port=8081");
        assert_eq!(substitute("${MODEL}:${OTHER}", &vars), "m:${OTHER}");
    }

    #[test]
    fn each_slot_gets_the_whole_context_window() {
        let c = CommandSettings {
            argv: vec!["s".into()],
            env: Vec::new(),
            file: None,
            health_path: "/health".into(),
            start_timeout: std::time::Duration::from_secs(1),
            stop_timeout: std::time::Duration::from_secs(1),
            model_name: None,
            stop_argv: None,
            footprint: crate::config::FootprintSource::Processes,
        };
        let model = ModelSettings {
            context_tokens: 512,
            parallel: 3,
            ..ModelSettings::new("m", crate::config::BackendSettings::Command(c.clone()))
        };
        let vars = placeholders(&model, &c, 8081);
        assert_eq!(
            substitute(
                "-np ${PARALLEL} -c ${CONTEXT_TOTAL} --ctx ${CONTEXT}",
                &vars
            ),
            "-np 3 -c 1536 --ctx 512"
        );
    }
}
