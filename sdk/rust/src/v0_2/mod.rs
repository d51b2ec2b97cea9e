//! Write `modelyard:policy@0.2.0` policies: stateful, told the catalogue once, fed with events.
//!
//! A 0.2 policy is a type with state. The host makes one instance of the component and keeps
//! it across calls (serialised; a fresh one after a trap, a deadline or its memory cap), so
//! the value of your type lives as long as the instance: implement [`Policy`] (the catalogue
//! and, optionally, events) and one trait per hook, then `export_v0_2!` it for those hooks.
//! Records name models, devices and tasks by index into the [`types::Catalogue`]; keep the
//! catalogue `configure` hands you to turn them back into names.
//!
//! ```
//! use modelyard_policy::v0_2::{EvictionPolicy, Policy, helpers, types::*};
//!
//! #[derive(Default)]
//! pub struct Lru;
//! impl Policy for Lru {}
//! impl EvictionPolicy for Lru {
//!     fn choose_eviction(&mut self, req: EvictionRequest) -> EvictionDecision {
//!         let mut ranked: Vec<&Model> = req.loaded.iter().collect();
//!         ranked.sort_by_key(|m| (helpers::last_active_ms(m), m.index));
//!         helpers::evict_until_fits(&req, ranked)
//!     }
//! }
//! modelyard_policy::export_v0_2!(Lru: eviction);
//! ```

pub mod helpers;

#[allow(clippy::all, unsafe_code, missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        inline: "package modelyard:sdk-v0-2; world sdk { import modelyard:policy/types@0.2.0; import modelyard:policy/host@0.2.0; }",
        path: "wit/v0.2",
        world: "modelyard:sdk-v0-2/sdk",
        additional_derives: [PartialEq],
        generate_all,
    });
}

/// The contract's records: the catalogue, models, requests, events and each hook's types.
pub use bindings::modelyard::policy::types;

/// What the host offers a policy: logging and token counting.
///
/// These are imports: they work inside the host, and panic if called in a native build.
pub use bindings::modelyard::policy::host;

/// A policy's life: made once (with `Default`), told the catalogue, told what happened.
pub trait Policy: Default + 'static {
    /// The catalogue, before the first call and whenever the configuration changes. Return
    /// which requests `select-model` wants to see; the default wants every one, with its text.
    fn configure(&mut self, catalogue: types::Catalogue) -> types::Interests {
        let _ = catalogue;
        types::Interests {
            selection: types::SelectionInterest::MODEL
                | types::SelectionInterest::ALIAS
                | types::SelectionInterest::AUTO
                | types::SelectionInterest::UNKNOWN,
            text: true,
        }
    }

    /// What happened since the last batch, in order (only when exported with `events`).
    fn observe(&mut self, events: Vec<types::Event>) {
        let _ = events;
    }
}

/// Chooses which loaded models to unload so that a new one fits.
pub trait EvictionPolicy: Policy {
    fn choose_eviction(&mut self, req: types::EvictionRequest) -> types::EvictionDecision;
}

/// Chooses which model serves a request.
pub trait SelectionPolicy: Policy {
    fn select_model(
        &mut self,
        req: types::Request,
        candidates: Vec<types::Model>,
        telemetry: types::Telemetry,
    ) -> types::Selection;
}

/// Fits a conversation into a model's window.
pub trait CompressionPolicy: Policy {
    fn compress_context(
        &mut self,
        req: types::CompressionRequest,
    ) -> Result<Vec<types::Message>, String>;
}
