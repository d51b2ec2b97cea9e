//! modelyard: local LLMs behind one OpenAI-compatible endpoint, scheduled by WebAssembly
//! policies.
//!
//! The crate is layered one way: the command line drives the [`engine`], which runs policy
//! components and knows nothing of HTTP, processes or models' live state.

pub mod engine;
pub mod policy_cmd;
