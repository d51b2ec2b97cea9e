//! Scans of folders and Ollama stores built here, with tiny GGUF files from the header
//! builder the estimates use.

use std::path::Path;

use super::*;
use crate::estimate::gguf::tests::Builder;

/// A small valid GGUF: one tensor, the architecture and a trained context.
fn gguf(arch: &str, context: u32) -> Vec<u8> {
    Builder::default()
        .str("general.architecture", arch)
        .u32(&format!("{arch}.context_length"), context)
        .tensor("blk.0.ffn_up.weight", 2, 4096)
        .build()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn a_folder_gives_a_model_per_gguf_and_reports_what_it_skips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(&root.join("smol.gguf"), &gguf("llama", 8192));
    write(&root.join("nested/gem.GGUF"), &gguf("gemma3", 32768));
    write(&root.join("big-00001-of-00002.gguf"), &gguf("llama", 2048));
    write(
        &root.join("big-00002-of-00002.gguf"),
        b"the second part has no header",
    );
    write(&root.join("mmproj-smol.gguf"), &gguf("clip", 0));
    write(&root.join("broken.gguf"), b"GGUF but nothing after");
    write(&root.join("notes.txt"), b"not a model");
    let d = scan(&[root.to_path_buf()], None);
    let ids: Vec<&str> = d.found.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["big", "gem", "smol"]);
    let gem = &d.found[1];
    assert_eq!(gem.architecture.as_deref(), Some("gemma3"));
    assert_eq!(gem.trained_context, Some(32768));
    assert_eq!(gem.origin, Origin::Folder(root.to_path_buf()));
    let skipped: Vec<String> = (d.skipped.iter())
        .map(|s| {
            s.path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        skipped,
        ["broken.gguf", "mmproj-smol.gguf"],
        "{:?}",
        d.skipped
    );
    assert!(d.skipped[0].reason.contains("GGUF"), "{:?}", d.skipped[0]);
}

#[test]
fn an_ollama_store_is_read_from_its_manifests_and_blobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path();
    let hex = "ab".repeat(32);
    write(
        &store.join(format!("blobs/sha256-{hex}")),
        &gguf("llama", 8192),
    );
    let manifest = |digest: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:{}","size":10}},
            "layers":[{{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:{digest}","size":4096}},
                      {{"mediaType":"application/vnd.ollama.image.template","digest":"sha256:{}","size":10}}]}}"#,
            "cd".repeat(32),
            "ef".repeat(32)
        )
    };
    let m = store.join("manifests/registry.ollama.ai");
    write(&m.join("library/smol/latest"), manifest(&hex).as_bytes());
    write(&m.join("me/smol/q4"), manifest(&hex).as_bytes());
    write(
        &m.join("library/gone/latest"),
        manifest(&"99".repeat(32)).as_bytes(),
    );
    write(&m.join("library/junk/latest"), b"{ not json");
    let d = scan(&[], Some(store));
    let found: Vec<(&str, &Path)> = (d.found.iter())
        .map(|f| (f.id.as_str(), f.file.as_path()))
        .collect();
    let blob = store.join(format!("blobs/sha256-{hex}"));
    assert_eq!(
        found,
        [
            ("smol:latest", blob.as_path()),
            ("me/smol:q4", blob.as_path())
        ]
    );
    assert_eq!(d.found[0].origin, Origin::Ollama(store.to_path_buf()));
    assert_eq!(d.skipped.len(), 2, "{:?}", d.skipped);
    assert!(
        d.skipped[0].path.ends_with("library/gone/latest")
            && d.skipped[0].reason.contains("dangling manifest"),
        "{:?}",
        d.skipped[0]
    );
    assert!(
        d.skipped[1]
            .reason
            .starts_with("junk:latest: not a manifest"),
        "{:?}",
        d.skipped[1]
    );
}

#[test]
fn a_second_file_with_a_taken_id_is_skipped_naming_the_first() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    write(&a.path().join("smol.gguf"), &gguf("llama", 2048));
    write(&b.path().join("smol.gguf"), &gguf("llama", 2048));
    let d = scan(&[a.path().to_path_buf(), b.path().to_path_buf()], None);
    assert_eq!(d.found.len(), 1);
    assert!(
        d.skipped[0].reason.contains("is taken by"),
        "{:?}",
        d.skipped
    );
    let missing = scan(&[a.path().join("nope")], None);
    assert_eq!(missing.skipped[0].reason, "is not a folder");
}
