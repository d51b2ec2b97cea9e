//! The one place that generates bindings to the contract (`wit/policy.wit`).
//!
//! The generated records are plain Rust structs, so the rest of the host uses them directly
//! (re-exported as [`crate::engine::types`]) instead of converting to look-alikes: a copy on
//! every hook call would cost more than the call itself.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "modelyard:policy/policy",
    additional_derives: [PartialEq],
});

pub use self::exports::modelyard::policy::{compression, eviction, selection};
pub use self::modelyard::policy::host::Level;
pub use self::modelyard::policy::types;

use super::sandbox::GuestState;

impl self::modelyard::policy::types::Host for GuestState {}

impl self::modelyard::policy::host::Host for GuestState {
    fn log(&mut self, level: Level, message: String) {
        let policy = self.policy.as_str();
        match level {
            Level::Debug => tracing::debug!(policy, "{message}"),
            Level::Info => tracing::info!(policy, "{message}"),
            Level::Warn => tracing::warn!(policy, "{message}"),
            Level::Error => tracing::error!(policy, "{message}"),
        }
    }

    fn count_tokens(&mut self, _model: String, text: String) -> u32 {
        super::tokens::estimate(&text)
    }
}
