//! The commands, beside the runtime: each file is one command's work on top of the library
//! (`serve` assembles a host from the settings, `models` asks a running one, `policy` checks
//! and scaffolds policies, `setup` provisions the demo, `sdk` the policy languages' templates
//! and tools, `simulate` the trace report, `import` another tool's config, `key` a key's digest, `pick` the
//! endpoint picker over other hosts). Nothing in the
//! runtime imports from here.

pub mod import;
pub mod key;
pub mod models;
pub mod pick;
pub mod policy;
pub mod sdk;
pub mod serve;
pub mod setup;
pub mod simulate;
