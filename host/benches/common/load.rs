//! A load run's clients and tally, shared by the load benchmark (`cargo bench --bench load`)
//! and its short form in the tests (`tests/load.rs`).
//!
//! Each client sends chat completions one after another until the run's time is up, to the
//! models in turn (each client starting at its own), every other one streamed, and sorts each
//! answer: answered (200, whole: a plain body that parses, a stream that ends with `[DONE]`),
//! refused with a bounded status (429, 503, each with `Retry-After`), any other status, or
//! lost (the connection failed, the stream broke off, or no answer within the client's
//! timeout). A client that is refused waits the `Retry-After` (at most a second) before its
//! next request, as a polite client does.

#![allow(dead_code)] // each includer uses its part

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{Value, json};

/// What a run does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub clients: usize,
    pub duration: Duration,
    pub models: Vec<String>,
    /// Tokens each answer may have.
    pub max_tokens: u32,
    /// How long a client waits for one answer before it counts the request lost.
    pub timeout: Duration,
    /// Counts requests as they end, for a run that reports while it goes.
    pub progress: Option<Arc<AtomicU64>>,
}

/// The load runs' models, as [`config`] names them.
pub const MODELS: [&str; 4] = ["smollm2", "gemma3", "smollm2-q4_0", "smollm2-b"];

/// How the requests went.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub answered: u64,
    pub too_many: u64,
    pub unavailable: u64,
    /// A bounded refusal without `Retry-After`.
    pub no_retry_after: u64,
    /// Other statuses, by status.
    pub other: BTreeMap<u16, u64>,
    pub lost: u64,
    /// Why requests were lost (first few).
    pub lost_why: Vec<String>,
    /// Latency of each answered request, in milliseconds.
    pub latencies_ms: Vec<f64>,
    pub streamed: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.answered += other.answered;
        self.too_many += other.too_many;
        self.unavailable += other.unavailable;
        self.no_retry_after += other.no_retry_after;
        for (s, n) in other.other {
            *self.other.entry(s).or_default() += n;
        }
        self.lost += other.lost;
        for w in other.lost_why {
            if self.lost_why.len() < 8 {
                self.lost_why.push(w);
            }
        }
        self.latencies_ms.extend(other.latencies_ms);
        self.streamed += other.streamed;
    }

    /// Every request sent.
    pub fn total(&self) -> u64 {
        self.answered
            + self.too_many
            + self.unavailable
            + self.other.values().sum::<u64>()
            + self.lost
    }

    /// The `q` quantile of answered latencies (0 when none), in milliseconds.
    pub fn quantile(&self, q: f64) -> f64 {
        let mut v = self.latencies_ms.clone();
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(f64::total_cmp);
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        v[i.min(v.len() - 1)]
    }
}

/// One request's fate.
enum Fate {
    Answered(Duration),
    Refused {
        status: u16,
        retry_after: Option<Duration>,
    },
    Other(u16),
    Lost(String),
}

/// Runs `plan` against the host at `base` (e.g. `http://127.0.0.1:8080`).
pub async fn drive(base: &str, plan: &Plan) -> Tally {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(plan.clients)
        .build()
        .expect("an HTTP client");
    let url = format!("{base}/v1/chat/completions");
    let end = Instant::now() + plan.duration;
    let clients = (0..plan.clients).map(|c| {
        let (http, url, plan) = (http.clone(), url.clone(), plan.clone());
        tokio::spawn(async move { client(c, &http, &url, &plan, end).await })
    });
    let mut tally = Tally::default();
    for t in futures_util::future::join_all(clients).await {
        tally.add(t.expect("a client task"));
    }
    tally
}

async fn client(c: usize, http: &reqwest::Client, url: &str, plan: &Plan, end: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut n = c;
    while Instant::now() < end {
        let model = &plan.models[n % plan.models.len()];
        let stream = n.is_multiple_of(2);
        n += 1;
        let fate =
            tokio::time::timeout(plan.timeout, one(http, url, model, stream, plan.max_tokens))
                .await
                .unwrap_or_else(|_| {
                    Fate::Lost(format!("{model}: no answer within {:?}", plan.timeout))
                });
        if let Some(p) = &plan.progress {
            p.fetch_add(1, Ordering::Relaxed);
        }
        match fate {
            Fate::Answered(took) => {
                tally.answered += 1;
                tally.streamed += u64::from(stream);
                tally.latencies_ms.push(took.as_secs_f64() * 1000.0);
            }
            Fate::Refused {
                status,
                retry_after,
            } => {
                match status {
                    429 => tally.too_many += 1,
                    _ => tally.unavailable += 1,
                }
                if retry_after.is_none() {
                    tally.no_retry_after += 1;
                }
                let pause = retry_after
                    .unwrap_or(Duration::from_secs(1))
                    .min(Duration::from_secs(1));
                tokio::time::sleep(pause).await;
            }
            Fate::Other(status) => *tally.other.entry(status).or_default() += 1,
            Fate::Lost(why) => {
                tally.lost += 1;
                if tally.lost_why.len() < 8 {
                    tally.lost_why.push(why);
                }
            }
        }
    }
    tally
}

async fn one(
    http: &reqwest::Client,
    url: &str,
    model: &str,
    stream: bool,
    max_tokens: u32,
) -> Fate {
    let began = Instant::now();
    let resp = http
        .post(url)
        .json(&json!({
            "model": model, "stream": stream, "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "user", "content": "Say something about lighthouses."}],
        }))
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return Fate::Lost(format!("{model}: {e}")),
    };
    let status = resp.status().as_u16();
    if status == 429 || status == 503 {
        let retry_after = (resp.headers().get("retry-after"))
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map(Duration::from_secs);
        return Fate::Refused {
            status,
            retry_after,
        };
    }
    if status != 200 {
        return Fate::Other(status);
    }
    if stream {
        let mut body = resp.bytes_stream();
        let mut text = Vec::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => text.extend_from_slice(&c),
                Err(e) => return Fate::Lost(format!("{model}: the stream broke off: {e}")),
            }
        }
        if !String::from_utf8_lossy(&text).contains("data: [DONE]") {
            return Fate::Lost(format!("{model}: a stream without [DONE]"));
        }
    } else {
        match resp.json::<Value>().await {
            Ok(v) if v["choices"][0]["message"].is_object() => {}
            Ok(v) => return Fate::Lost(format!("{model}: a 200 without a message: {v}")),
            Err(e) => return Fate::Lost(format!("{model}: the body broke off: {e}")),
        }
    }
    Fate::Answered(began.elapsed())
}

/// A process's resident memory in KiB, from `/proc` (0 if it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// How many file descriptors a process holds open (0 if it is gone).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// The four models of a load run: the demo's three chat models and a second SmolLM2, each
/// as the demo runs them; `[memory.cpu]` gives them room for two at a time. The host's own
/// bounds (30 s in a queue, 60 s for a server to start answering) sum to less than a client
/// waits (90 s in the tests, 120 s in the benches), so a request the host answers late is
/// a bounded status, and "lost" means only what the host dropped. (With the default 600 s
/// `upstream_timeout`, a llama-server that stopped answering under 1,000 clients, and then
/// ignored SIGTERM for 10 s, left one request in 450,000 waiting past the client's two
/// minutes.)
pub fn config(
    llama_server_cmd: &str,
    smollm2: &str,
    gemma3: &str,
    q4_0: &str,
    listen: &str,
) -> String {
    let model = |id: &str, file: &str| {
        format!(
            "[models.\"{id}\"]\ncmd = \"{}\"\nfile = \"{file}\"\ncontext_tokens = 2048\nparallel = 2\n",
            llama_server_cmd.replace('"', "\\\"")
        )
    };
    format!(
        "listen = \"{listen}\"\nstate_dir = \"\"\n[scheduler]\nqueue_timeout = \"30s\"\n\
         [server]\nupstream_timeout = \"60s\"\n[memory.cpu]\nbudget = \"700MiB\"\nreserve = \"1GiB\"\n{}{}{}{}",
        model("smollm2", smollm2),
        model("gemma3", gemma3),
        model("smollm2-q4_0", q4_0),
        model("smollm2-b", smollm2),
    )
}
