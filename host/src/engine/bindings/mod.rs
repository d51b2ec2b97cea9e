//! The one edge to the guest world: bindings to each contract version, generated side by side
//! (one `bindgen!` per version, in [`v1`] and [`v2`]), and the conversions between them and the
//! host's own records ([`super::types`]).
//!
//! 0.1's generated records double as the host's view of models, requests and telemetry (a copy
//! on every 0.1 call would cost more than the call); 0.2's lean records are built from that
//! view and the policy's [`super::Catalogue`] in [`v2`], and nowhere else. The lists of model
//! records the two hot 0.2 calls carry are lowered by hand, a list in one pass, in [`lowered`].

pub mod lowered;
pub mod v1;
pub mod v2;

use super::sandbox::GuestState;

/// Adds both versions' imports to the linker.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<GuestState>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    v1::Policy::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    v2::Policy::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}

/// Writes a guest's log line, tagged with its policy.
fn log(policy: &str, level: tracing::Level, message: &str) {
    match level {
        tracing::Level::DEBUG | tracing::Level::TRACE => tracing::debug!(policy, "{message}"),
        tracing::Level::INFO => tracing::info!(policy, "{message}"),
        tracing::Level::WARN => tracing::warn!(policy, "{message}"),
        tracing::Level::ERROR => tracing::error!(policy, "{message}"),
    }
}
