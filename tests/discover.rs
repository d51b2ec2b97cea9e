//! `[discover]` with real servers: the demo's GGUFs in a folder and an Ollama-format store
//! built here from the same files (manifests and `sha256-` blobs, as Ollama lays them out)
//! become models that serve; a corrupt GGUF and a dangling manifest are reported with their
//! paths and affect nothing else; an explicit table wins over a find; a file added later is
//! served after `POST /admin/discover`; `import ollama` writes the same models as tables.

use std::path::Path;

use modelyard::cli::setup;
use modelyard::config::Settings;
use sha2::{Digest as _, Sha256};

use crate::demo::{TestHost, demo, serial};

/// An Ollama store holding `file` as `name:latest` (its blob a link to the file, named by its
/// SHA-256 as Ollama names blobs), and `gone:latest`, whose blob is missing.
fn ollama_store(root: &Path, name: &str, file: &Path) {
    let hex: String = Sha256::digest(std::fs::read(file).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::create_dir_all(root.join("blobs")).unwrap();
    std::os::unix::fs::symlink(file, root.join(format!("blobs/sha256-{hex}"))).unwrap();
    let manifest = |digest: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:{}","size":2}},"layers":[{{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:{digest}","size":{}}}]}}"#,
            "0".repeat(64),
            std::fs::metadata(file).unwrap().len()
        )
    };
    let library = root.join("manifests/registry.ollama.ai/library");
    for (model, digest) in [(name, hex.clone()), ("gone", "f".repeat(64))] {
        std::fs::create_dir_all(library.join(model)).unwrap();
        std::fs::write(library.join(model).join("latest"), manifest(&digest)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_models_serve_broken_finds_are_reported_and_tables_win() {
    let _serial = serial();
    let d = demo();
    let work = tempfile::tempdir().unwrap();
    let folder = work.path().join("models");
    std::fs::create_dir_all(&folder).unwrap();
    std::os::unix::fs::symlink(&d.gemma3, folder.join("gemma.gguf")).unwrap();
    std::os::unix::fs::symlink(&d.smollm2, folder.join("smol.gguf")).unwrap();
    std::fs::write(
        folder.join("broken.gguf"),
        b"GGUF\x03\x00\x00\x00 and then nothing",
    )
    .unwrap();
    let store = work.path().join("ollama");
    ollama_store(&store, "smollm2", &d.smollm2);
    let cmd = setup::llama_server_cmd(&d.llama_server).replace('"', "\\\"");
    let config = work.path().join("modelyard.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nstate_dir = \"\"\n[policies]\nhook_deadline = \"500ms\"\n\
             [discover]\ndirs = [\"models\"]\nollama = \"ollama\"\ncmd = \"{cmd}\"\ncontext_tokens = 512\n\
             [models.explicit]\ncmd = \"{cmd}\"\nfile = \"models/smol.gguf\"\ncontext_tokens = 512\n"
        ),
    )
    .unwrap();
    let settings = Settings::from_file(&config).unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<&str> = settings.models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["explicit", "gemma", "smollm2:latest"]);
    let skipped: Vec<String> = (settings.discovery_skipped.iter())
        .map(|s| format!("{}: {}", s.path.display(), s.reason))
        .collect();
    assert_eq!(skipped.len(), 3, "{skipped:#?}");
    let said = |path: &str, why: &str| skipped.iter().any(|s| s.contains(path) && s.contains(why));
    assert!(said("broken.gguf", "as GGUF"), "{skipped:#?}");
    assert!(
        said("smol.gguf", "[models.explicit] names it"),
        "{skipped:#?}"
    );
    assert!(
        said("library/gone/latest", "dangling manifest"),
        "{skipped:#?}"
    );

    let host = TestHost::start(settings).await;
    for model in ["gemma", "smollm2:latest"] {
        let (code, body) = host.chat(model, 2).await;
        assert_eq!(code, 200, "{model}: {body}");
    }
    let models = host.get_json("/admin/models").await;
    let source = |id: &str| {
        (models["models"].as_array().unwrap().iter())
            .find(|m| m["id"] == id)
            .map(|m| m["source"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    assert_eq!(source("explicit"), "config");
    assert!(source("gemma").starts_with("folder "), "{models}");
    assert!(source("smollm2:latest").starts_with("ollama "), "{models}");
    let report = host.get_json("/admin/config").await;
    assert_eq!(
        report["discovered"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    assert_eq!(
        report["discovery_skipped"].as_array().map(Vec::len),
        Some(3),
        "{report}"
    );

    // A file added later serves after a rescan; the config file itself did not change.
    std::os::unix::fs::symlink(&d.smollm2, folder.join("later.gguf")).unwrap();
    assert_eq!(host.chat("later", 2).await.0, 404);
    let rescan: serde_json::Value = host
        .http
        .post(host.url("/admin/discover"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rescan["status"], "applied", "{rescan}");
    assert!(
        (rescan["discovered"].as_array().unwrap().iter()).any(|m| m["id"] == "later"),
        "{rescan}"
    );
    let (code, body) = host.chat("later", 2).await;
    assert_eq!(code, 200, "{body}");
    host.stop().await;

    // The import writes the store's models as tables, the dangling one as a comment.
    let out = work.path().join("imported.toml");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_modelyard"))
        .args(["import", "ollama", "--store"])
        .arg(&store)
        .arg("--cmd")
        .arg(setup::llama_server_cmd(&d.llama_server))
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        run.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(text.contains("[models.\"smollm2:latest\"]"), "{text}");
    assert!(
        text.contains("# not imported:") && text.contains("gone"),
        "{text}"
    );
    let imported = Settings::from_file(&out).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(imported.models.len(), 1);
}
