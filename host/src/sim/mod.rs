//! The trace-replay simulator (issue 6; in progress): so far, the trace readers and the
//! offline bounds.

pub mod bounds;
pub mod trace;
