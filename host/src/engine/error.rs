//! The engine's error types: why a component could not be loaded, and why a hook call failed.

use super::Hook;

/// Why a file could not become a policy. Each message names the problem for a user.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{name}: not a WebAssembly file (no `\\0asm` header)")]
    NotWasm { name: String },
    #[error(
        "{name}: a core WebAssembly module, not a component; build it for wasm32-wasip2 \
         or wrap it with `wasm-tools component new`"
    )]
    CoreModule { name: String },
    #[error("{name}: does not compile: {detail}")]
    Compile { name: String, detail: String },
    #[error(
        "{name}: imports what a policy may not have: {forbidden}; a policy may import only \
         the contract (modelyard:policy/…) and the WASI streams, exit, environment and \
         terminal handles that Rust's std links in, which the host leaves empty"
    )]
    Forbidden { name: String, forbidden: String },
    #[error("{name}: imports something the host does not offer: {detail}")]
    Imports { name: String, detail: String },
    #[error(
        "{name}: exports no hook of modelyard:policy@{version} (it exports: {exports}); \
         build it against this contract's `wit/`"
    )]
    NoHooks {
        name: String,
        version: &'static str,
        exports: String,
    },
    #[error(
        "{name}: its `{hook}` export does not match contract modelyard:policy@{version}: {detail}"
    )]
    Contract {
        name: String,
        hook: Hook,
        version: &'static str,
        detail: String,
    },
}

/// Why one hook call did not produce a usable decision. The hook then falls back.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    #[error("policy {policy} trapped in {hook}: {message}")]
    Trap {
        policy: String,
        hook: Hook,
        message: String,
    },
    #[error("policy {policy} ran past its {deadline_ms} ms deadline in {hook}")]
    Deadline {
        policy: String,
        hook: Hook,
        deadline_ms: u64,
    },
    #[error("policy {policy} exceeded its memory cap in {hook}")]
    OutOfMemory { policy: String, hook: Hook },
    #[error("policy {policy} gave an invalid {hook} decision: {reason}")]
    InvalidDecision {
        policy: String,
        hook: Hook,
        reason: String,
    },
    #[error("policy {policy} is quarantined after repeated failures")]
    Quarantined { policy: String, hook: Hook },
    #[error("policy {policy} does not export {hook}")]
    NotExported { policy: String, hook: Hook },
    /// The host could not put the call in 0.2's terms (a record names a model its catalogue
    /// lacks): the host's fault, never counted against the policy.
    #[error("the host could not describe the {hook} call to policy {policy}: {reason}")]
    Undescribable {
        policy: String,
        hook: Hook,
        reason: String,
    },
}

impl PolicyError {
    /// A short stable label for counters and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Trap { .. } => "trap",
            Self::Deadline { .. } => "deadline",
            Self::OutOfMemory { .. } => "out_of_memory",
            Self::InvalidDecision { .. } => "invalid_decision",
            Self::Quarantined { .. } => "quarantined",
            Self::NotExported { .. } => "not_exported",
            Self::Undescribable { .. } => "undescribable",
        }
    }
}
