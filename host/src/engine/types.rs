//! The records the host hands to hooks and the decisions it takes back, in the host's terms.
//!
//! Models, requests, telemetry and messages are 0.1's generated records (the host's own view,
//! built in `scheduler/view.rs`); where 0.2 says more than 0.1 can, the host has its own type:
//! an eviction question carries its reason, and an eviction decision may drain or say when to
//! ask again. Each contract version converts at the bindings edge.

use std::time::Duration;

pub use super::bindings::v1::types::EvictionRequest as EvictionRecord;
pub use super::bindings::v1::types::{
    CompressionRequest, Device, Message, Model, ModelState, Request, Selection, TaskDemand,
    Telemetry,
};

/// How long a `wait` lasts when nothing changes, for 0.1 ("ask again ... after a second
/// whatever happened", `wit/policy.wit`) and the native defaults.
pub const WAIT_RECHECK: Duration = Duration::from_secs(1);

/// Why `choose-eviction` is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionReason {
    /// To make room for `incoming`'s load.
    Load,
    /// Idle models outlived their `ttl`; `loaded` holds only those.
    IdleTtl,
    /// The device is over its budget or its memory pressure threshold.
    Pressure,
}

/// The question `choose-eviction` answers: 0.1's record (which models to unload so that
/// `needed_bytes` are free on `device`), and why it is asked, which 0.1 has no field for (for
/// housekeeping, 0.1's `incoming` is a stand-in: `wit/CONTRACT.md`). The record's fields read
/// through the request itself; a 0.1 call lowers the record as it is, without a copy.
#[derive(Debug, Clone, PartialEq)]
pub struct EvictionRequest {
    pub reason: EvictionReason,
    pub record: EvictionRecord,
}

impl std::ops::Deref for EvictionRequest {
    type Target = EvictionRecord;
    fn deref(&self) -> &EvictionRecord {
        &self.record
    }
}

impl std::ops::DerefMut for EvictionRequest {
    fn deref_mut(&mut self) -> &mut EvictionRecord {
        &mut self.record
    }
}

/// What `choose-eviction` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictionDecision {
    /// Unload these models, in this order.
    Evict(Vec<String>),
    /// Drain these busy models for the waiting load, then unload them.
    Drain(Vec<String>),
    /// Ask again when a model on the device goes idle or is unloaded, and after this long
    /// when given.
    Wait(Option<Duration>),
    /// Fail the waiting requests with this reason.
    Reject(String),
}

/// Something that happened, for policies that observe (0.2's `events`).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Milliseconds since the host started, as `telemetry.now-ms`.
    pub at_ms: u64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A request was routed to `model`.
    Arrived {
        model: String,
        task: Option<String>,
        priority: i32,
        prompt_tokens: u32,
    },
    /// A request ended: latency and time to first token from its arrival.
    Finished {
        model: String,
        latency_ms: u32,
        ttft_ms: u32,
        ok: bool,
    },
    LoadStarted {
        model: String,
    },
    Loaded {
        model: String,
        took_ms: u32,
        bytes: u64,
    },
    LoadFailed {
        model: String,
    },
    Evicted {
        model: String,
        by: EvictedBy,
        cause: EvictionCause,
    },
}

/// Who unloaded a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictedBy {
    /// The named policy's decision.
    Policy(String),
    /// The native default's, after a policy failed or when none serves the hook.
    Fallback,
    /// A rule of the host's own: a drain, an operator's unload, a crash, shutting down.
    Host,
}

/// Why a model left memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictionCause {
    /// To make room for this model's load.
    Load(String),
    IdleTtl,
    Pressure,
    Requested,
    Crashed,
}
