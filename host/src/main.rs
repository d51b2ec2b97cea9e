//! The `modelyard` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use modelyard::policy_cmd;

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
    /// Inspect and check policy components.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Load a component, print its contract and hooks, and run each hook once on a sample.
    Check {
        /// The `.wasm` component to check.
        file: PathBuf,
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
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(PolicyCommand::Check { file }) => policy_cmd::check(&file),
        Command::Policy(PolicyCommand::List { dir }) => policy_cmd::list(&dir),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
