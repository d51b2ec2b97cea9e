//! modelyard's one integration-test binary.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

// Shared helpers: engines with test limits, guest files built by the host's build script.
mod util;

// Each built-in strategy's decisions on hand-built scenarios, through the real wasm path.
mod strategies;

// Deadline and memory cap (obeyed/violated pairs), the evil guest's every mode, quarantine.
mod limits;

// `modelyard policy check|list` on built-ins, a non-wasm file, a core module, a foreign contract.
mod policy_cli;
