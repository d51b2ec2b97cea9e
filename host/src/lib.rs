//! modelyard: local LLMs behind one OpenAI-compatible endpoint, scheduled by WebAssembly
//! policies.
//!
//! The crate is layered one way: [`proxy`] → [`scheduler`] → [`backend`], [`engine`] and
//! [`telemetry`]. The engine runs policy components and knows nothing of HTTP or processes;
//! backends start and stop model servers and know nothing of policies; the scheduler decides
//! when, asking the engine's hooks, and knows nothing of HTTP.

pub mod backend;
pub mod config;
pub mod engine;
pub mod policy_cmd;
pub mod proxy;
pub mod scheduler;
pub mod sdk_tools;
pub mod serve;
pub mod setup;
pub mod sim;
pub mod telemetry;
