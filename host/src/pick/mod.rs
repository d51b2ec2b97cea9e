//! `modelyard pick`: modelyard's wasm policies as the endpoint picker of a fleet of modelyard
//! hosts, in the place of llm-d's (the Gateway API Inference Extension's endpoint-picker
//! protocol over Envoy's `ext_proc`). What is here so far is its view of the fleet: the hosts
//! from an endpoints file in llm-d's file-discovery format ([`endpoints`]), and each host's
//! models and protocol gauges as it last read them ([`hosts`]). It never changes a host; it
//! only reads `/admin/models` and `/metrics`.

pub mod endpoints;
pub mod hosts;
