//! Write modelyard policies in Rust.
//!
//! This crate owns the bindings to the `modelyard:policy` contract so that a policy
//! never writes bindgen boilerplate: implement one trait per hook you want to serve, then
//! `export!` your type for exactly those hooks. The helpers cover what every strategy needs
//! (which models may be evicted, evicting just enough, trimming a conversation to a budget).
//!
//! ```
//! use modelyard_policy::{EvictionPolicy, helpers, types::*};
//!
//! pub struct Lru;
//! impl EvictionPolicy for Lru {
//!     fn choose_eviction(req: EvictionRequest) -> EvictionDecision {
//!         let mut ranked: Vec<&Model> = req.loaded.iter().collect();
//!         ranked.sort_by_key(|m| m.last_used_ms);
//!         helpers::evict_until_fits(&req, ranked)
//!     }
//! }
//! modelyard_policy::export!(Lru: eviction);
//! ```
//!
//! That is contract 0.1, at the crate's top level; [`v0_2`] and `export_v0_2!` write 0.2
//! policies, which keep state across calls and name models by index into a catalogue.
//!
//! Build with `cargo build --target wasm32-wasip2 --release`; the output `.wasm` is a
//! component the host loads. On other targets `export!` expands to nothing, so the same code
//! can be unit-tested and benchmarked natively.

pub mod helpers;
pub mod v0_2;

#[allow(clippy::all, unsafe_code, missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        inline: "package modelyard:sdk; world sdk { import modelyard:policy/types@0.1.0; import modelyard:policy/host@0.1.0; }",
        path: "wit",
        world: "modelyard:sdk/sdk",
        additional_derives: [PartialEq],
        generate_all,
    });
}

/// The contract's records: models, telemetry, requests, messages and each hook's types.
pub use bindings::modelyard::policy::types;

/// What the host offers a policy: logging and token counting.
///
/// These are imports: they work inside the host, and panic if called in a native build.
pub use bindings::modelyard::policy::host;

/// Chooses which loaded models to unload so that a new one fits.
pub trait EvictionPolicy {
    fn choose_eviction(req: types::EvictionRequest) -> types::EvictionDecision;
}

/// Chooses which model serves a request.
pub trait SelectionPolicy {
    fn select_model(
        req: types::Request,
        candidates: Vec<types::Model>,
        telemetry: types::Telemetry,
    ) -> types::Selection;
}

/// Fits a conversation into a model's window.
pub trait CompressionPolicy {
    fn compress_context(req: types::CompressionRequest) -> Result<Vec<types::Message>, String>;
}

include!(concat!(env!("OUT_DIR"), "/export.rs"));

/// The README's policy example, compiled as a doctest so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExamples;

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}
