//! The `modelyard` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use modelyard::{policy_cmd, sdk_tools, serve, setup};

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
    },
    /// Print the models of a running host: state, measured memory, in-flight, idle time, and
    /// device totals.
    Models {
        /// The config the host runs with (its `listen` address is asked).
        #[arg(long, default_value = "modelyard.toml")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
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
    },
    /// Inspect and check policy components.
    #[command(subcommand)]
    Policy(PolicyCommand),
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
    fn lang(self) -> Option<policy_cmd::Lang> {
        match self {
            SdkChoice::All => None,
            SdkChoice::Rust => Some(policy_cmd::Lang::Rust),
            SdkChoice::Python => Some(policy_cmd::Lang::Python),
            SdkChoice::Js => Some(policy_cmd::Lang::Js),
            SdkChoice::C => Some(policy_cmd::Lang::C),
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
        lang: policy_cmd::Lang,
        /// Where to create the project's folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// List the built-in policies and the components in a policies folder.
    List {
        /// The folder users drop `.wasm` policies into.
        #[arg(long, default_value = policy_cmd::DEFAULT_POLICY_DIR)]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            config,
            demo,
            demo_dir,
        } => {
            let config = if demo {
                setup::setup(&demo_dir).map(|d| d.config)
            } else {
                Ok(config)
            };
            config.and_then(|c| {
                runtime()
                    .block_on(serve::serve(&c))
                    .map(|()| ExitCode::SUCCESS)
            })
        }
        Command::Models { config, json } => runtime()
            .block_on(serve::models(&config, json))
            .map(|()| ExitCode::SUCCESS),
        Command::Setup { dir, sdk } if !sdk.is_empty() => {
            let langs: Vec<policy_cmd::Lang> = if sdk.contains(&SdkChoice::All) {
                policy_cmd::Lang::ALL.to_vec()
            } else {
                sdk.iter().filter_map(|s| s.lang()).collect()
            };
            langs
                .into_iter()
                .try_for_each(|lang| sdk_tools::install(&dir, lang).map(drop))
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Setup { dir, .. } => setup::setup(&dir).map(|d| {
            println!("{}", d.config.display());
            ExitCode::SUCCESS
        }),
        Command::Policy(PolicyCommand::Check { file }) => policy_cmd::check(&file),
        Command::Policy(PolicyCommand::List { dir }) => policy_cmd::list(&dir),
        Command::Policy(PolicyCommand::New { name, lang, dir }) => {
            policy_cmd::new(&name, lang, &dir)
        }
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
