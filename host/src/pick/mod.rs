//! `modelyard pick`: modelyard's wasm policies as the endpoint picker of a fleet of modelyard
//! hosts, in the place of llm-d's (the Gateway API Inference Extension's endpoint-picker
//! protocol over Envoy's `ext_proc`). The hosts come from an endpoints file in llm-d's
//! file-discovery format ([`endpoints`]); each is read on an interval ([`hosts`], [`fleet`]);
//! each request's decision ([`decide`]) asks `select-model` over the fleet's (model, host)
//! pairs; [`ext_proc`] speaks the protocol and [`serve`] runs it with gRPC health and [`metrics`]. It never
//! changes a host; it only reads `/admin/models` and `/metrics`.

pub mod decide;
pub mod endpoints;
pub mod ext_proc;
pub mod fleet;
pub mod hosts;
pub mod metrics;
pub mod serve;
