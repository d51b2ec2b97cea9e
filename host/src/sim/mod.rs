//! The trace-replay simulator: `modelyard simulate` replays a request trace through the real
//! scheduler and real wasm policies on a virtual clock, with simulated backends whose loads
//! take the catalogue's time, and judges each policy against offline bounds.

pub mod bounds;
pub mod catalogue;
pub mod oracle;
pub mod plot;
pub mod report;
pub mod run;
pub mod suite;
pub mod synthetic;
pub mod trace;
