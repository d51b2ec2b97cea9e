//! The trace-replay simulator (issue 6; in progress): so far, the trace readers.

pub mod trace;
