//! Config reload without a restart, on real llama-server models: an edit applies live (models
//! added, removed, re-tuned; keys; the eviction policy), a model whose command changed restarts
//! only once its stream in flight has ended, an invalid or deleted file changes nothing, and
//! `serve` reloads on SIGHUP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use modelyard::config::Settings;
use serde_json::{Value, json};

use crate::demo::{TestHost, demo, eventually, llama_model, serial};
use crate::faults::{rest_of, streaming};

/// A config file's text: the test's own listen and deadline, `policies` keys, then `tables`.
fn config(policies: &str, tables: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nstate_dir = \"\"\n[policies]\nhook_deadline = \"500ms\"\n{policies}\n{tables}"
    )
}

fn pid_of(host: &TestHost, id: &str) -> Option<Vec<u32>> {
    let m = host.status().models.into_iter().find(|m| m.id == id)?;
    (m.state == "ready").then_some(m.pids)
}

/// Waits until `/admin/config` satisfies `check`, and returns it.
async fn config_when(host: &TestHost, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let c = host.get_json("/admin/config").await;
        if check(&c) {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/admin/config never got there: {c}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn chat_with_key(host: &TestHost, model: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = host
        .http
        .post(host.url("/v1/chat/completions"))
        .json(&json!({
            "model": model, "max_tokens": 2,
            "messages": [{"role": "user", "content": "Hi"}],
        }));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.expect("the host answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Writes `text` to `path` as an editor does: a new file renamed over the old one.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_applies_live_a_changed_command_waits_for_its_stream_and_a_bad_file_changes_nothing()
 {
    let _serial = serial();
    let d = demo();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("modelyard.toml");
    let a = |extra: &str| llama_model("a", &d.smollm2, extra);
    let b = llama_model("b", &d.smollm2, "");
    let c = llama_model("c", &d.smollm2, "");
    save(&path, &config("", &format!("{}{b}", a(""))));
    let host = TestHost::start(Settings::from_file(&path).unwrap_or_else(|e| panic!("{e}"))).await;
    let v1 = host.get_json("/admin/config").await;
    assert_eq!(v1["version"], 1, "{v1}");
    assert_eq!(chat_with_key(&host, "a", None).await.0, 200);
    let a_pids = pid_of(&host, "a").expect("a is ready");

    // Version 2, picked up by the watcher: a re-tuned, b gone, c new, keys, another policy.
    let v2 = format!(
        "[auth]\nkeys = [{{ key = \"sk-reload\", name = \"t\" }}]\n{}{c}",
        a("aliases = [\"alpha\"]\npriority = 2")
    );
    save(&path, &config("eviction = \"lfu\"", &v2));
    let report = config_when(&host, |c| c["version"] == 2).await;
    assert_eq!(report["last_change"]["added"], json!(["c"]), "{report}");
    assert_eq!(report["last_change"]["removed"], json!(["b"]), "{report}");
    assert_eq!(report["last_change"]["retuned"], json!(["a"]), "{report}");
    assert_eq!(
        pid_of(&host, "a"),
        Some(a_pids.clone()),
        "a re-tune restarts nothing"
    );
    assert_eq!(
        chat_with_key(&host, "alpha", None).await.0,
        401,
        "keys hold at once"
    );
    assert_eq!(
        chat_with_key(&host, "alpha", Some("sk-reload")).await.0,
        200
    );
    assert_eq!(chat_with_key(&host, "b", Some("sk-reload")).await.0, 404);
    assert_eq!(chat_with_key(&host, "c", Some("sk-reload")).await.0, 200);
    let policies = host.get_json("/admin/policies").await;
    let eviction = (policies["hooks"].as_array().unwrap().iter())
        .find(|h| h["hook"] == "choose-eviction")
        .unwrap_or_else(|| panic!("{policies}"));
    assert!(eviction.to_string().contains("lfu"), "{eviction}");
    let models: Vec<String> = (host.status().models.into_iter()).map(|m| m.id).collect();
    assert_eq!(models, ["a", "c"]);

    // An invalid file: every problem with its key path; version 2 keeps serving.
    save(
        &path,
        &format!(
            "{}[server]\nmax_body = \"lots\"\n",
            config("", &a("ttl = \"soon\""))
        ),
    );
    let report = config_when(&host, |c| !c["last_rejection"].is_null()).await;
    let problems = report["last_rejection"]["problems"].to_string();
    assert!(problems.contains("models.a.ttl"), "{problems}");
    assert!(problems.contains("server.max_body"), "{problems}");
    assert_eq!(report["version"], 2);
    let resp = (host.http.post(host.url("/admin/config/reload")).send())
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_config", "{body}");
    assert_eq!(chat_with_key(&host, "c", Some("sk-reload")).await.0, 200);

    // The file deleted: the same.
    std::fs::remove_file(&path).unwrap();
    let resp = (host.http.post(host.url("/admin/config/reload")).send())
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let report = host.get_json("/admin/config").await;
    assert!(
        report["last_rejection"]["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("cannot read it")),
        "{report}"
    );
    assert_eq!(report["version"], 2);
    assert_eq!(
        chat_with_key(&host, "alpha", Some("sk-reload")).await.0,
        200
    );

    // a's command changes while it streams: the stream ends whole, then a restarts.
    let a_pids = pid_of(&host, "a").expect("a is ready");
    let url = host.url("/v1/chat/completions");
    let keyed = reqwest::Client::builder()
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                "Bearer sk-reload".parse().unwrap(),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .unwrap();
    let (body, first) = streaming(&keyed, url, "a", 120).await;
    std::fs::write(
        &path,
        config(
            "eviction = \"lfu\"",
            &v2.replacen("context_tokens = 512", "context_tokens = 768", 1),
        ),
    )
    .unwrap();
    let resp = (host.http.post(host.url("/admin/config/reload")).send())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let report = host.get_json("/admin/config").await;
    assert_eq!(report["version"], 3, "{report}");
    assert_eq!(
        report["last_change"]["restarting"],
        json!(["a"]),
        "{report}"
    );
    assert!(report["last_rejection"].is_null(), "{report}");
    assert_eq!(
        pid_of(&host, "a"),
        Some(a_pids.clone()),
        "never mid-request"
    );
    let text = rest_of(body, first).await;
    assert!(text.contains("[DONE]"), "the stream was cut: {text}");
    assert_eq!(chat_with_key(&host, "a", Some("sk-reload")).await.0, 200);
    let now = pid_of(&host, "a").expect("a is ready again");
    assert_ne!(now, a_pids, "a runs a new server");
    let models: Value = (keyed.get(host.url("/v1/models")).send().await.unwrap())
        .json()
        .await
        .unwrap();
    let a_entry = (models["data"].as_array().unwrap().iter())
        .find(|m| m["id"] == "a")
        .unwrap_or_else(|| panic!("{models}"));
    assert_eq!(a_entry["context_length"], 768, "{a_entry}");
    assert!(
        eventually(Duration::from_secs(5), || a_pids
            .iter()
            .all(|p| !crate::demo::alive(*p)))
        .await,
        "the old server outlived its restart"
    );
    host.stop().await;
}

/// A config reached through a symlink (as Kubernetes mounts a ConfigMap): the watcher sees the
/// link's folder, not the target's, so an edit of the target waits for SIGHUP.
#[test]
fn serve_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("data");
    std::fs::create_dir(&real).unwrap();
    let port = crate::demo::free_port();
    let text = |models: &str| {
        format!(
            "listen = \"127.0.0.1:{port}\"\nstate_dir = \"\"\n{models}[models.one]\nurl = \"http://127.0.0.1:9/v1\"\n"
        )
    };
    let target: PathBuf = real.join("modelyard.toml");
    std::fs::write(&target, text("")).unwrap();
    let link = dir.path().join("modelyard.toml");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_modelyard"))
        .args(["serve", "--config"])
        .arg(&link)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let ids = || -> Vec<String> {
        let models: Value = rt
            .block_on(async {
                http.get(format!("{base}/v1/models"))
                    .send()
                    .await?
                    .json()
                    .await
            })
            .unwrap_or(Value::Null);
        (models["data"].as_array().into_iter().flatten())
            .filter_map(|m| m["id"].as_str().map(str::to_string))
            .collect()
    };
    assert!(rt.block_on(crate::demo::answers(
        &http,
        &format!("{base}/health"),
        Duration::from_secs(10)
    )));
    assert_eq!(ids(), ["one"]);
    std::fs::write(
        &target,
        text("[models.two]\nurl = \"http://127.0.0.1:9/v1\"\n"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(ids(), ["one"], "the watcher does not follow the link");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let reloaded = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        ids().len() == 2
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(reloaded, "SIGHUP did not reload: {:?}", ids());
}
