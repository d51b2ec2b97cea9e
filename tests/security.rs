//! Who may call the host: keys compared in full (a prefix or an extension of a key is no
//! key), keys kept as digests, a host on a reachable address refusing to start open, policy
//! files pinned by digest, and components refused for importing beyond the contract.

use std::sync::Arc;

use modelyard::cli::serve;
use modelyard::engine::{Hook, Hooks, PolicyEngine, PolicySet};
use sha2::{Digest as _, Sha256};

use crate::demo::{TestHost, settings};
use crate::util::guest_path;

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const MODEL: &str = "[models.m]\nurl = \"http://127.0.0.1:9/v1\"\ncontrol = \"none\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_whole_key_opens_v1_and_admin() {
    let host = TestHost::start(settings(&format!(
        "[auth]\nadmin_key = \"admin-secret\"\nkeys = [{{ key = \"sk-client\", name = \"c\" }}]\n{MODEL}"
    )))
    .await;
    for (path, key, status) in [
        ("/v1/models", "sk-client", 200),
        ("/v1/models", "sk-clien", 401),
        ("/v1/models", "sk-client2", 401),
        ("/v1/models", "admin-secret", 401),
        ("/admin/models", "admin-secret", 200),
        ("/admin/models", "admin-secre", 401),
        ("/admin/models", "sk-client", 401),
    ] {
        let resp = host
            .http
            .get(host.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{path} with {key:?}");
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reachable_address_needs_keys_or_allow_open() {
    let open = |extra: &str| {
        let mut s = settings(&format!("{extra}{MODEL}"));
        s.listen = "0.0.0.0:0".parse().unwrap();
        s
    };
    let refused = serve::start(open(""), std::future::pending()).await;
    let e = refused.expect_err("an open host on 0.0.0.0");
    let msg = format!("{e:#}");
    assert!(
        msg.contains("--allow-open") && msg.contains("[auth] keys") && msg.contains("admin_key"),
        "{msg}"
    );
    let refused = serve::start(open("[auth]\nadmin_key = \"a\"\n"), std::future::pending()).await;
    assert!(refused.is_err(), "an admin key alone leaves /v1 open");

    let keyed = open("[auth]\nadmin_key = \"a\"\nkeys = [{ key = \"k\" }]\n");
    let host = TestHost::start(keyed).await;
    host.stop().await;
    let mut allowed = open("");
    allowed.server.allow_open = true;
    let host = TestHost::start(allowed).await;
    host.stop().await;
}

/// `modelyard key hash` reads a key on standard input and prints its SHA-256; a config that
/// holds only digests (`key_sha256`, `admin_key_sha256`) opens to the keys, not to the digests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_may_hold_key_digests_instead_of_keys() {
    use std::io::Write as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_modelyard"))
        .args(["key", "hash"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"sk-client\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let client = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(client, sha256_hex(b"sk-client"));
    let admin = sha256_hex(b"admin-secret");
    let host = TestHost::start(settings(&format!(
        "[auth]\nadmin_key_sha256 = \"{admin}\"\nkeys = [{{ key_sha256 = \"{client}\", name = \"c\" }}]\n{MODEL}"
    )))
    .await;
    for (path, key, status) in [
        ("/v1/models", "sk-client", 200),
        ("/v1/models", client.as_str(), 401),
        ("/admin/models", "admin-secret", 200),
        ("/admin/models", admin.as_str(), 401),
    ] {
        let resp = (host.http.get(host.url(path)).bearer_auth(key).send())
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{path} with {key:?}");
    }
    host.stop().await;
}

/// `[policies] allow`: a file in the folder whose digest is not listed is rejected before it
/// is compiled, its digest in the message; listed, it serves.
#[test]
fn an_unpinned_policy_file_is_rejected_with_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mine.wasm");
    std::fs::copy(guest_path("modelyard-policy-lfu"), &file).unwrap();
    let digest = sha256_hex(&std::fs::read(&file).unwrap());
    let engine = PolicyEngine::new(crate::util::relaxed()).unwrap();
    let start = |allow: Vec<[u8; 32]>| {
        PolicySet::with_allow(
            engine.clone(),
            Arc::new(Hooks::new()),
            Default::default(),
            Some(dir.path().to_path_buf()),
            Some(allow),
        )
    };
    let pinned_elsewhere = start(vec![[7u8; 32]]);
    assert!(pinned_elsewhere.hooks().get(Hook::ChooseEviction).is_none());
    let report = pinned_elsewhere.report();
    let why = report[0].error.clone().unwrap_or_default();
    assert!(
        why.contains(&format!("sha256:{digest}")) && why.contains("[policies] allow"),
        "{why}"
    );
    assert_eq!(engine.compile_counts(), (0, 0), "rejected before compiling");

    let mut pin = [0u8; 32];
    pin.copy_from_slice(&Sha256::digest(std::fs::read(&file).unwrap()));
    let pinned = start(vec![pin]);
    assert_eq!(
        (pinned.hooks().get(Hook::ChooseEviction)).map(|p| p.name().to_string()),
        Some("mine".to_string())
    );
    // Allowing nothing more at run time (a config reload) turns it away again.
    pinned.set_allow(Some(Vec::new()));
    assert!(pinned.hooks().get(Hook::ChooseEviction).is_none());
}

/// A component that imports the host's files, sockets or a clock is refused at load, each
/// such import named, whether it comes through the policies folder or `policy check`; the
/// built-ins (Rust std guests: streams, exit, environment) and the C/Python/JS templates
/// (tests/sdk.rs) load.
#[test]
fn a_component_importing_files_sockets_or_a_clock_is_refused_naming_each() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        guest_path("modelyard-policy-nosy"),
        dir.path().join("nosy.wasm"),
    )
    .unwrap();
    std::fs::copy(
        guest_path("modelyard-policy-lfu"),
        dir.path().join("plain.wasm"),
    )
    .unwrap();
    let engine = PolicyEngine::new(crate::util::relaxed()).unwrap();
    let set = PolicySet::new(
        engine,
        Arc::new(Hooks::new()),
        Default::default(),
        Some(dir.path().to_path_buf()),
    );
    let report = set.report();
    let nosy = report
        .iter()
        .find(|r| r.path.ends_with("nosy.wasm"))
        .unwrap();
    let why = nosy.error.clone().unwrap_or_default();
    for import in [
        "wasi:filesystem/",
        "wasi:sockets/",
        "wasi:clocks/wall-clock",
    ] {
        assert!(why.contains(import), "{import} not named: {why}");
    }
    assert!(
        why.contains("the host's files") && why.contains("the network"),
        "{why}"
    );
    let plain = report
        .iter()
        .find(|r| r.path.ends_with("plain.wasm"))
        .unwrap();
    assert_eq!((plain.state, plain.error.as_deref()), ("serving", None));
    assert_eq!(nosy.state, "rejected");
    assert_eq!(
        set.hooks()
            .get(Hook::ChooseEviction)
            .map(|p| p.name().to_string()),
        Some("plain".to_string())
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelyard"))
        .args(["policy", "check"])
        .arg(guest_path("modelyard-policy-nosy"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("rejected") && stdout.contains("wasi:filesystem/"),
        "{stdout}"
    );
}
