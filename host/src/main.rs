//! The `modelyard` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use modelyard::cli::{self, import, key, models, policy, sdk, serve, setup};
use modelyard::sim::{report, trace};

// Small, short-lived allocations per request and per replayed request: mimalloc serves them
// faster than glibc's malloc (the simulate bench, side by side).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What `modelyard pick` is built from.
mod pick {
    pub use modelyard::pick::decide::{DEFAULT_SHED_KV, DEFAULT_SHED_WAITING, Shedding};
    pub use modelyard::pick::metrics::DEFAULT_METRICS;
    pub use modelyard::pick::serve::{DEFAULT_LISTEN, PickSettings};
}

#[derive(Debug, Parser)]
#[command(
    name = "modelyard",
    version,
    about = "Local LLMs behind one endpoint, scheduled by wasm policies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the configured models behind one OpenAI-compatible endpoint.
    Serve {
        /// The TOML config.
        #[arg(long, default_value = "modelyard.toml")]
        config: PathBuf,
        /// Provision the demo first (llama-server and small models, in --demo-dir) and serve
        /// its config.
        #[arg(long, conflicts_with = "config")]
        demo: bool,
        /// Where --demo provisions.
        #[arg(long, default_value = setup::DEFAULT_DEMO_DIR)]
        demo_dir: PathBuf,
        #[command(flatten)]
        server: ServerFlags,
        /// Serve a non-loopback `listen` address without `[auth] keys` and `admin_key`.
        #[arg(long)]
        allow_open: bool,
    },
    /// Print the models of a running host: state, measured memory, in-flight, idle time, and
    /// device totals.
    Models {
        /// The config the host runs with (its `listen` address is asked).
        #[arg(long, default_value = "modelyard.toml")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long, conflicts_with = "catalogue")]
        json: bool,
        /// Print the models as a catalogue for `simulate --models` (measured sizes and load
        /// times), to replay the host's recorded traffic on them.
        #[arg(long)]
        catalogue: bool,
    },
    /// Install llama-server and small real models into a folder and write a config for them;
    /// with `--sdk`, install only the tools that build policies in those languages.
    Setup {
        /// Where to provision.
        #[arg(long, default_value = setup::DEFAULT_DEMO_DIR)]
        dir: PathBuf,
        /// Install the policy build tools for these languages (repeatable; `all` for every one).
        #[arg(long, value_name = "LANG")]
        sdk: Vec<SdkChoice>,
        /// Install only Debian's Chromium and ChromeDriver, for the dashboard's browser tests
        /// (apt-get, as root).
        #[arg(long, conflicts_with = "sdk")]
        browser: bool,
        #[command(flatten)]
        server: ServerFlags,
    },
    /// Inspect and check policy components.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Write a modelyard config equivalent to another tool's.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Keys for `[auth]`.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Serve the endpoint picker of a fleet of modelyard hosts: Envoy's ext_proc (the Gateway
    /// API Inference Extension's endpoint-picker protocol) with gRPC health, deciding with a
    /// select-model policy over every host's models.
    Pick {
        /// The hosts, in llm-d's file-discovery format (read again when it changes).
        #[arg(long)]
        endpoints: PathBuf,
        /// Where to serve gRPC.
        #[arg(long, default_value = pick::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
        /// The select-model policy: a built-in's name or a .wasm file (default: the native
        /// rule, the picker's ranking).
        #[arg(long)]
        policy: Option<String>,
        /// How often the hosts are read.
        #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        /// Where to serve the picker's Prometheus metrics (`GET /metrics`).
        #[arg(long, default_value = pick::DEFAULT_METRICS)]
        metrics: std::net::SocketAddr,
        /// A sheddable request (priority below 0) gets 429 when every host that could serve it
        /// has more requests waiting than this...
        #[arg(long, default_value_t = pick::DEFAULT_SHED_WAITING)]
        shed_waiting: f64,
        /// ...or a KV cache fuller than this (0 to 1).
        #[arg(long, default_value_t = pick::DEFAULT_SHED_KV)]
        shed_kv: f64,
    },
    /// Replay a request trace through the scheduler with each policy on a virtual clock, and
    /// report what users feel (failed requests, time to first token, goodput) and the swap
    /// cost, with the offline bounds.
    Simulate {
        /// The trace file (for azure-llm, one or more files).
        #[arg(long, required_unless_present = "suite", num_args = 1..)]
        trace: Vec<PathBuf>,
        #[arg(long, value_enum, required_unless_present = "suite")]
        format: Option<trace::Format>,
        /// Replay the trace suite instead: the public traces in `--traces` and seeded
        /// synthetic workloads, each at a tight, a middle and a roomy memory size, with the
        /// oracle beside the policies; prints one matrix.
        #[arg(long, conflicts_with_all = ["trace", "format", "sweep", "models"])]
        suite: bool,
        /// Where the suite finds the public traces.
        #[arg(long, default_value = "tests/data/traces")]
        traces: PathBuf,
        /// With `--suite`: keep only each workload's first stretch this long (e.g. 10m).
        #[arg(long, value_parser = humantime::parse_duration)]
        span: Option<std::time::Duration>,
        /// With `--suite`: the seed of its synthetic workloads (another seed, other draws of
        /// the same shapes: a check that a policy was not tuned to one draw).
        #[arg(long, default_value_t = modelyard::sim::suite::SEED)]
        seed: u64,
        /// The memory models share.
        #[arg(long, default_value = "80GiB")]
        memory: String,
        /// A policy to replay (a built-in name, a .wasm file, or `oracle`: evictions that know
        /// the trace's future, the yardstick the others are divided by); repeatable.
        #[arg(long = "policy", default_values = ["lru", "adaptive"])]
        policies: Vec<String>,
        /// A TOML model catalogue: sizes, start-up times, bandwidth, token rates.
        #[arg(long)]
        models: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Replay at several memory sizes, FROM..TO (e.g. 40GiB..160GiB), and plot them.
        #[arg(long)]
        sweep: Option<String>,
        /// How many memory sizes a sweep takes.
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Where a sweep's SVG plot goes.
        #[arg(long, default_value = "simulate.svg")]
        plot: PathBuf,
        /// Rounds of the Lagrangian lower bound on long traces (more: tighter, slower).
        #[arg(long, default_value_t = DEFAULT_BOUND_ROUNDS)]
        bound_rounds: usize,
        /// A served request whose first token came within this counts as goodput.
        #[arg(long, default_value = report::DEFAULT_SLO, value_parser = humantime::parse_duration)]
        slo: std::time::Duration,
    },
}

/// Rounds of the Lagrangian lower bound, unless `--bound-rounds` says otherwise.
const DEFAULT_BOUND_ROUNDS: usize = 300;

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Print a key's SHA-256, for `key_sha256` or `admin_key_sha256` in `[auth]`: the config
    /// then holds no key. Reads the key from standard input unless it is given.
    Hash {
        /// The key (better left out: a line on standard input stays out of shell history).
        key: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ImportCommand {
    /// A llama-swap YAML config: models, macros, groups, hooks, peers and API keys; what does
    /// not carry over is listed (and written at the top of the output), never dropped.
    LlamaSwap {
        /// llama-swap's config (e.g. config.yaml).
        file: PathBuf,
        /// Where to write the modelyard config.
        #[arg(long, short, default_value = "modelyard.toml")]
        output: PathBuf,
        /// Overwrite the output if it exists.
        #[arg(long)]
        force: bool,
    },
    /// The models Ollama has pulled, served from its store where they lie (a table per
    /// model; for a store that changes, `[discover] ollama = true` instead).
    Ollama {
        /// Ollama's store (default: $OLLAMA_MODELS, else ~/.ollama/models, else
        /// /usr/share/ollama/.ollama/models).
        #[arg(long, value_name = "PATH")]
        store: Option<PathBuf>,
        /// How each model's server starts (`${FILE}` is the model's blob).
        #[arg(long, value_name = "CMD")]
        cmd: Option<String>,
        /// Where to write the modelyard config.
        #[arg(long, short, default_value = "modelyard.toml")]
        output: PathBuf,
        /// Overwrite the output if it exists.
        #[arg(long)]
        force: bool,
    },
}

/// Which llama-server the demo runs (by default: the one set up before, else one already on
/// the machine, else the prebuilt, else a source build).
#[derive(Debug, clap::Args)]
struct ServerFlags {
    /// Run this llama-server.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["from_source", "prebuilt"])]
    llama_server: Option<PathBuf>,
    /// Build llama.cpp's llama-server from source (about 15 minutes on 2 cores; router mode
    /// and the flags the prebuilt launcher lacks need it).
    #[arg(long, conflicts_with = "prebuilt")]
    from_source: bool,
    /// Run llama.cpp's prebuilt server (the `xllamacpp` wheel) even when another is there.
    #[arg(long)]
    prebuilt: bool,
}

impl ServerFlags {
    fn choice(self) -> setup::Server {
        match self {
            ServerFlags {
                llama_server: Some(path),
                ..
            } => setup::Server::Given(path),
            ServerFlags {
                from_source: true, ..
            } => setup::Server::FromSource,
            ServerFlags { prebuilt: true, .. } => setup::Server::Prebuilt,
            _ => setup::Server::Auto,
        }
    }
}

/// A language for `setup --sdk`, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SdkChoice {
    All,
    Rust,
    Python,
    Js,
    C,
}

impl SdkChoice {
    fn lang(self) -> Option<sdk::Lang> {
        match self {
            SdkChoice::All => None,
            SdkChoice::Rust => Some(sdk::Lang::Rust),
            SdkChoice::Python => Some(sdk::Lang::Python),
            SdkChoice::Js => Some(sdk::Lang::Js),
            SdkChoice::C => Some(sdk::Lang::C),
        }
    }
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Load a component, print its contract and hooks, and run each hook once on a sample.
    Check {
        /// The `.wasm` component to check.
        file: PathBuf,
    },
    /// Write a new policy project from a language's template.
    New {
        /// The policy's name (also its folder's).
        name: String,
        #[arg(long, value_enum)]
        lang: sdk::Lang,
        /// Where to create the project's folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Replay a trace through one policy in the simulator and print its table (what users
    /// would feel, then the swap cost): `modelyard policy test mine.wasm --trace my.jsonl`.
    Test {
        /// The `.wasm` component (or a built-in's name) to replay.
        file: String,
        /// The trace file (for azure-llm, one or more files).
        #[arg(long, required = true, num_args = 1..)]
        trace: Vec<PathBuf>,
        /// Its format; `jsonl` is what `serve` records (`[trace] record`).
        #[arg(long, value_enum, default_value = "jsonl")]
        format: trace::Format,
        /// The memory models share.
        #[arg(long, default_value = "80GiB")]
        memory: String,
        /// A TOML model catalogue: sizes, start-up times, bandwidth, token rates.
        #[arg(long)]
        models: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the built-in policies and the components in a policies folder.
    List {
        /// The folder users drop `.wasm` policies into (default: the config's `[policies] dir`).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The config whose policies folder to list (the demo's when this one is not there).
        #[arg(long, default_value = policy::DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

/// Commands that print end quietly when their reader goes (`policy list | head`), as Unix
/// tools do: Rust ignores SIGPIPE, so `println!` panicked instead. `serve` keeps ignoring it:
/// a client that hangs up must never kill the host.
#[allow(unsafe_code)]
fn end_on_closed_pipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: called first thing in main, before any thread starts; the default action
    // installs no handler code.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. }) {
        end_on_closed_pipe();
    }
    // A replay's every load and eviction would drown its table.
    let quiet = matches!(cli.command, Command::Simulate { .. });
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if quiet { "warn" } else { "info" })
            }),
        )
        .init();
    let result = match cli.command {
        Command::Serve {
            config,
            demo,
            demo_dir,
            server,
            allow_open,
        } => {
            let config = if demo {
                setup::setup(&demo_dir, &server.choice()).map(|d| d.config)
            } else {
                Ok(config)
            };
            config.and_then(|c| {
                runtime()
                    .block_on(serve::serve(&c, allow_open))
                    .map(|()| ExitCode::SUCCESS)
            })
        }
        Command::Pick {
            endpoints,
            listen,
            policy,
            interval,
            metrics,
            shed_waiting,
            shed_kv,
        } => {
            let mut settings = pick::PickSettings::new(listen, endpoints);
            settings.interval = interval;
            settings.metrics = Some(metrics);
            settings.shedding = pick::Shedding {
                waiting: shed_waiting,
                kv: shed_kv,
            };
            runtime()
                .block_on(cli::pick::pick(settings, policy.as_deref()))
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Models {
            config,
            json,
            catalogue,
        } => runtime()
            .block_on(models::models(
                &config,
                match (json, catalogue) {
                    (true, _) => models::View::Json,
                    (_, true) => models::View::Catalogue,
                    _ => models::View::Table,
                },
            ))
            .map(|()| ExitCode::SUCCESS),
        Command::Setup { browser: true, .. } => {
            setup::install_browser().map(|()| ExitCode::SUCCESS)
        }
        Command::Setup { dir, sdk, .. } if !sdk.is_empty() => {
            let langs: Vec<sdk::Lang> = if sdk.contains(&SdkChoice::All) {
                sdk::Lang::ALL.to_vec()
            } else {
                sdk.iter().filter_map(|s| s.lang()).collect()
            };
            langs
                .into_iter()
                .try_for_each(|lang| sdk::install(&dir, lang).map(drop))
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Setup { dir, server, .. } => setup::setup(&dir, &server.choice()).map(|d| {
            println!("{}", d.config.display());
            ExitCode::SUCCESS
        }),
        Command::Simulate {
            suite: true,
            traces,
            span,
            seed,
            policies,
            json,
            bound_rounds,
            slo,
            ..
        } => cli::simulate::suite(
            &modelyard::sim::suite::SuiteOptions {
                traces,
                policies,
                span,
                seed,
                slo,
                bound_rounds,
            },
            json,
        ),
        Command::Simulate {
            trace,
            format,
            memory,
            policies,
            models,
            json,
            sweep,
            steps,
            plot,
            bound_rounds,
            slo,
            ..
        } => cli::simulate::simulate(
            report::Options {
                trace,
                format: format.unwrap_or(trace::Format::Jsonl),
                memory: Vec::new(),
                policies,
                models,
                bound_rounds,
                slo,
            },
            (&memory, sweep.as_deref(), steps),
            json,
            &plot,
        ),
        Command::Import(ImportCommand::LlamaSwap {
            file,
            output,
            force,
        }) => import::run(&file, &output, force),
        Command::Import(ImportCommand::Ollama {
            store,
            cmd,
            output,
            force,
        }) => import::ollama::run(store.as_deref(), cmd.as_deref(), &output, force),
        Command::Key(KeyCommand::Hash { key }) => {
            key::hash(key.as_deref()).map(|()| ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Check { file }) => policy::check(&file),
        Command::Policy(PolicyCommand::List { dir, config }) => {
            policy::folder_to_list(dir.as_deref(), &config).and_then(|d| policy::list(d.as_deref()))
        }
        Command::Policy(PolicyCommand::New { name, lang, dir }) => policy::new(&name, lang, &dir),
        Command::Policy(PolicyCommand::Test {
            file,
            trace,
            format,
            memory,
            models,
            json,
        }) => cli::simulate::simulate(
            report::Options {
                trace,
                format,
                memory: Vec::new(),
                policies: vec![file],
                models,
                bound_rounds: DEFAULT_BOUND_ROUNDS,
                slo: humantime::parse_duration(report::DEFAULT_SLO).unwrap_or_default(),
            },
            (&memory, None, 1),
            json,
            std::path::Path::new("simulate.svg"),
        ),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    }
}
