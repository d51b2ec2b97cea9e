//! Bindings to `modelyard:policy@0.1.0` (`wit/policy.wit`), and the conversions of the host's
//! records where they differ from 0.1's.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "modelyard:policy/policy",
    additional_derives: [PartialEq],
});

pub use self::exports::modelyard::policy::{compression, eviction, selection};
pub use self::modelyard::policy::host::Level;
pub use self::modelyard::policy::types;

use super::super::types as host;
use super::GuestState;

impl self::modelyard::policy::types::Host for GuestState {}

impl self::modelyard::policy::host::Host for GuestState {
    fn log(&mut self, level: Level, message: String) {
        let level = match level {
            Level::Debug => tracing::Level::DEBUG,
            Level::Info => tracing::Level::INFO,
            Level::Warn => tracing::Level::WARN,
            Level::Error => tracing::Level::ERROR,
        };
        super::log(&self.policy, level, &message);
    }

    fn count_tokens(&mut self, _model: String, text: String) -> u32 {
        super::super::tokens::estimate(&text)
    }
}

/// A 0.1 decision in the host's terms.
pub fn eviction_decision(d: types::EvictionDecision) -> host::EvictionDecision {
    match d {
        types::EvictionDecision::Evict(ids) => host::EvictionDecision::Evict(ids),
        types::EvictionDecision::Wait => host::EvictionDecision::Wait(Some(host::WAIT_RECHECK)),
        types::EvictionDecision::Reject(why) => host::EvictionDecision::Reject(why),
    }
}
