//! Builds every guest in `policies/` for wasm32-wasip2 (as wasmtime's test-programs do) and
//! tells the host where they are: the built-ins are embedded, the test guests are found by
//! the tests through `MODELYARD_GUEST_DIR`.

use std::path::PathBuf;
use std::process::Command;

/// Guest packages built for every host build: the six built-ins, then the test guests.
const GUESTS: [&str; 15] = [
    "modelyard-policy-lru",
    "modelyard-policy-lfu",
    "modelyard-policy-priority",
    "modelyard-policy-specialization",
    "modelyard-policy-hybrid",
    "modelyard-policy-adaptive",
    "modelyard-policy-evil",
    "modelyard-policy-foreign",
    "modelyard-policy-stateful",
    "modelyard-policy-nosy",
    "modelyard-policy-v0-1-lru",
    "modelyard-policy-v0-1-lfu",
    "modelyard-policy-v0-1-priority",
    "modelyard-policy-v0-1-specialization",
    "modelyard-policy-v0-1-hybrid",
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .parent()
        .expect("host/ sits in the workspace")
        .to_path_buf();
    for dir in [
        "policies",
        "sdk/rust/src",
        "sdk/rust/build.rs",
        "wit",
        "Cargo.lock",
        // Where the guest profile is set.
        "Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    // A target dir of its own: the outer build holds the lock on the main one.
    let target_dir = root.join("target").join("guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--profile",
            "guest",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for guest in GUESTS {
        cmd.args(["-p", guest]);
    }
    // The outer build's flags and wrappers are for the host target (and, under `cargo
    // clippy`, for linting it), not for the guests.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CLIPPY_ARGS",
    ] {
        cmd.env_remove(var);
    }
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_PROFILE_") || key.starts_with("CARGO_CFG_") {
            cmd.env_remove(key);
        }
    }
    let status = cmd.status().expect("run cargo to build the policy guests");
    assert!(
        status.success(),
        "building the policy guests for wasm32-wasip2 failed; is the target installed? \
         (rust-toolchain.toml asks rustup for it)"
    );
    let out = target_dir.join("wasm32-wasip2").join("guest");
    println!("cargo:rustc-env=MODELYARD_GUEST_DIR={}", out.display());
}
