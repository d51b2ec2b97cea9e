//! The six built-in strategies, built from `policies/` by the host's build script and
//! embedded, so that what ships is exactly the wasm path a user's policy takes.

/// Names of the built-in policies, in the order they are listed.
pub const NAMES: [&str; 6] = [
    "lru",
    "lfu",
    "priority",
    "specialization",
    "hybrid",
    "adaptive",
];

macro_rules! guest {
    ($file:literal) => {
        include_bytes!(concat!(env!("MODELYARD_GUEST_DIR"), "/", $file))
    };
}

/// The component bytes of a built-in policy.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    Some(match name {
        "lru" => guest!("modelyard_policy_lru.wasm"),
        "lfu" => guest!("modelyard_policy_lfu.wasm"),
        "priority" => guest!("modelyard_policy_priority.wasm"),
        "specialization" => guest!("modelyard_policy_specialization.wasm"),
        "hybrid" => guest!("modelyard_policy_hybrid.wasm"),
        "adaptive" => guest!("modelyard_policy_adaptive.wasm"),
        _ => return None,
    })
}
