//! The traffic recorder: every request `serve` answers, as one JSON line of a trace that
//! `simulate --format jsonl` replays. It owns the record's shape, the file and its rotation;
//! it never sees a message's content (a [`Record`] has no field that could hold one), and it
//! never blocks a request: lines go to a writer thread through a channel.
//!
//! The file is rotated by size: past `max_bytes`, `trace.jsonl` becomes `trace.jsonl.1` (and
//! `.1` becomes `.2`, …, keeping `keep` old files), and a fresh file begins.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};

/// Bytes a trace file grows to before it is rotated.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Rotated files kept beside the current one.
pub const DEFAULT_KEEP: u32 = 4;

/// Where and how much to record (`[trace]` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecorderSettings {
    /// The current file; rotated ones sit beside it with `.1`, `.2`, … appended.
    pub path: PathBuf,
    pub max_bytes: u64,
    pub keep: u32,
}

impl RecorderSettings {
    /// Recording to `path`, with the default rotation.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_bytes: DEFAULT_MAX_BYTES,
            keep: DEFAULT_KEEP,
        }
    }

    /// The kept files, oldest first, the current one last; those that do not exist are left
    /// out.
    pub fn files(&self) -> Vec<PathBuf> {
        (1..=self.keep)
            .rev()
            .map(|k| rotated(&self.path, k))
            .chain([self.path.clone()])
            .filter(|p| p.is_file())
            .collect()
    }
}

/// The stage a request ended in: replays take those that reached the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Parse,
    Route,
    Acquire,
    Fit,
    Forward,
    Relay,
}

impl Stage {
    /// Whether a request that ended here asked the scheduler for its model.
    pub fn reached_scheduler(self) -> bool {
        !matches!(self, Stage::Parse | Stage::Route)
    }
}

/// How a request ended, as a user would count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Answered in full.
    Ok,
    /// Waited for its model past `queue_timeout`.
    TimedOut,
    /// Refused without waiting: a full queue, an expected wait past the timeout, a backing-off
    /// or rejected load.
    Refused,
    /// The request itself was wrong (a 4xx from the host or the server).
    Rejected,
    /// The model's server failed it (a failed load, a crash, a 5xx, a broken stream).
    Error,
    /// The client went away before the answer ended.
    Cancelled,
}

/// One request, as the trace records it: times, names, counts and the outcome, never content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// When it arrived, in milliseconds since the Unix epoch.
    pub t_ms: u64,
    /// The host's id for the request.
    pub id: String,
    /// The route, such as `chat/completions`.
    pub route: String,
    /// The model as asked: an id, an alias or `auto`.
    pub asked: String,
    /// The model that `select-model` chose, once it had.
    pub model: Option<String>,
    pub task: Option<String>,
    pub priority: i32,
    /// The client's hash (`request.client` in the contract), never its name.
    pub client: Option<String>,
    pub prompt_tokens: u32,
    /// The server's count of the answer's tokens, when its `usage` said.
    pub output_tokens: Option<u32>,
    /// Whether the model was ready when the request arrived (no load waited for).
    pub hit: Option<bool>,
    /// Milliseconds from arrival until the model was leased (queue and load).
    pub wait_ms: Option<u64>,
    /// Milliseconds from arrival until the answer's first bytes went out.
    pub ttft_ms: Option<u64>,
    /// Milliseconds from arrival until the answer ended (or the request failed).
    pub latency_ms: u64,
    /// Milliseconds the model was held for it: from the lease to the answer's end.
    pub service_ms: Option<u64>,
    /// The HTTP status the client got.
    pub status: u16,
    pub outcome: Outcome,
    pub stage: Stage,
}

enum Msg {
    Line(String),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Writes records to the trace file from a thread of its own.
#[derive(Debug)]
pub struct Recorder {
    settings: RecorderSettings,
    tx: mpsc::Sender<Msg>,
}

impl Recorder {
    /// Opens (appending to) the trace file and starts the writer.
    pub fn start(settings: RecorderSettings) -> anyhow::Result<Self> {
        let writer = Writer::open(settings.clone())?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("modelyard-recorder".into())
            .spawn(move || writer.run(&rx))?;
        Ok(Self { settings, tx })
    }

    pub fn settings(&self) -> &RecorderSettings {
        &self.settings
    }

    /// Queues `record` for writing; a recorder whose writer has failed drops it (and said so).
    pub fn record(&self, record: &Record) {
        match serde_json::to_string(record) {
            Ok(line) => self.send(Msg::Line(line)),
            Err(e) => tracing::warn!(error = %e, "a trace record did not serialize"),
        }
    }

    /// Returns once every record queued before it is in the file.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Msg::Flush(tx));
        let _ = rx.await;
    }

    fn send(&self, msg: Msg) {
        // The writer only stops when this sender goes, or after it logged why.
        let _ = self.tx.send(msg);
    }
}

/// The writer thread's side: the open file and its size.
struct Writer {
    settings: RecorderSettings,
    file: BufWriter<File>,
    bytes: u64,
}

impl Writer {
    fn open(settings: RecorderSettings) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        if let Some(dir) = settings.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&settings.path)
            .with_context(|| format!("opening the trace {}", settings.path.display()))?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            settings,
            file: BufWriter::new(file),
            bytes,
        })
    }

    /// Writes what comes until the recorder goes or a write fails (then says why).
    fn run(mut self, rx: &mpsc::Receiver<Msg>) {
        if let Err(e) = self.serve(rx) {
            tracing::error!(path = %self.settings.path.display(), error = %e, "the trace recorder stopped");
        }
    }

    /// Flushes whenever the channel runs dry, so the file is never far behind and a burst
    /// costs one flush.
    fn serve(&mut self, rx: &mpsc::Receiver<Msg>) -> std::io::Result<()> {
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                self.handle(msg)?;
                next = rx.try_recv().ok();
            }
            self.file.flush()?;
        }
        Ok(())
    }

    fn handle(&mut self, msg: Msg) -> std::io::Result<()> {
        match msg {
            Msg::Line(line) => self.write(&line),
            Msg::Flush(ack) => {
                let done = self.file.flush();
                let _ = ack.send(());
                done
            }
        }
    }

    fn write(&mut self, line: &str) -> std::io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.bytes > 0 && self.bytes + len > self.settings.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.bytes += len;
        Ok(())
    }

    /// Shifts the kept files up by one, dropping the oldest, and starts a fresh current file.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let path = &self.settings.path;
        if self.settings.keep == 0 {
            std::fs::remove_file(path)?;
        } else {
            let _ = std::fs::remove_file(rotated(path, self.settings.keep));
            for k in (1..self.settings.keep).rev() {
                let from = rotated(path, k);
                if from.is_file() {
                    std::fs::rename(&from, rotated(path, k + 1))?;
                }
            }
            std::fs::rename(path, rotated(path, 1))?;
        }
        self.file = BufWriter::new(OpenOptions::new().create(true).append(true).open(path)?);
        self.bytes = 0;
        Ok(())
    }
}

fn rotated(path: &Path, k: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{k}"));
    PathBuf::from(name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(id: u32) -> Record {
        Record {
            t_ms: 1_700_000_000_000 + u64::from(id),
            id: format!("req-{id}"),
            route: "chat/completions".into(),
            asked: "auto".into(),
            model: Some("qwen".into()),
            task: Some("code".into()),
            priority: 2,
            client: Some("0123456789abcdef".into()),
            prompt_tokens: 12,
            output_tokens: Some(3),
            hit: Some(true),
            wait_ms: Some(1),
            ttft_ms: Some(20),
            latency_ms: 40,
            service_ms: Some(39),
            status: 200,
            outcome: Outcome::Ok,
            stage: Stage::Relay,
        }
    }

    fn lines(paths: &[PathBuf]) -> Vec<Record> {
        paths
            .iter()
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<Record>>()
            })
            .collect()
    }

    #[tokio::test]
    async fn records_append_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let settings = RecorderSettings::new(dir.path().join("sub/trace.jsonl"));
        let rec = Recorder::start(settings.clone()).unwrap();
        rec.record(&record(1));
        rec.record(&record(2));
        rec.flush().await;
        assert_eq!(settings.files(), vec![settings.path.clone()]);
        assert_eq!(lines(&settings.files()), vec![record(1), record(2)]);
        drop(rec);
        // A restart appends to what is there.
        let rec = Recorder::start(settings.clone()).unwrap();
        rec.record(&record(3));
        rec.flush().await;
        assert_eq!(lines(&settings.files()).len(), 3);
    }

    /// Writes records `0..n` with room for ten lines a file and two kept; returns the settings.
    async fn write_with_rotation(dir: &Path, n: u32) -> RecorderSettings {
        // The longest line (two-digit ids), so ten of any fit.
        let line = serde_json::to_string(&record(10)).unwrap().len() as u64 + 1;
        let settings = RecorderSettings {
            max_bytes: 10 * line,
            keep: 2,
            ..RecorderSettings::new(dir.join("trace.jsonl"))
        };
        let rec = Recorder::start(settings.clone()).unwrap();
        for id in 0..n {
            rec.record(&record(id));
        }
        rec.flush().await;
        settings
    }

    #[tokio::test]
    async fn rotation_obeyed_below_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let settings = write_with_rotation(dir.path(), 10).await;
        assert_eq!(settings.files().len(), 1, "ten lines fit in one file");
    }

    #[tokio::test]
    async fn rotation_violated_past_the_size_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let settings = write_with_rotation(dir.path(), 45).await;
        let files = settings.files();
        assert_eq!(files.len(), 3, "the current file and two kept: {files:?}");
        for f in &files {
            assert!(std::fs::metadata(f).unwrap().len() <= settings.max_bytes);
        }
        let kept: Vec<String> = lines(&files).into_iter().map(|r| r.id).collect();
        let want: Vec<String> = (20..45).map(|id| format!("req-{id}")).collect();
        assert_eq!(kept, want, "oldest first, the oldest ten dropped");
    }
}
