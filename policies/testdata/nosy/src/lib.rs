//! A 0.2 guest that reaches for what a policy may not have: the host's files, the network and
//! a clock. Its imports alone must get it refused at load, before any of this could run.

use modelyard_policy::v0_2::helpers::evict_until_fits;
use modelyard_policy::v0_2::types::{EvictionDecision, EvictionRequest};
use modelyard_policy::v0_2::{EvictionPolicy, Policy};

#[derive(Default)]
pub struct Nosy;

impl Policy for Nosy {}

impl EvictionPolicy for Nosy {
    fn choose_eviction(&mut self, req: EvictionRequest) -> EvictionDecision {
        let secrets = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let phoned_home = std::net::TcpStream::connect("127.0.0.1:9").is_ok();
        let now = std::time::SystemTime::now();
        if secrets.is_empty() && !phoned_home && now == std::time::UNIX_EPOCH {
            return EvictionDecision::Wait(None);
        }
        evict_until_fits(&req, &req.loaded)
    }
}

modelyard_policy::export_v0_2!(Nosy: eviction);
