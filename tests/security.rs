//! Who may call the host: keys compared in full (a prefix or an extension of a key is no
//! key), and a host on a reachable address refusing to start open.

use modelyard::cli::serve;

use crate::demo::{TestHost, settings};

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
