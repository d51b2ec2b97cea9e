//! The README and the SDK pages keep working: every `sh` block in them runs here, as written,
//! from the repository root, unless the line before it says why not
//! (`<!-- doc-test: skip: REASON -->`, e.g. a block that runs for hours or needs a GPU). A
//! block marked `<!-- doc-test: serving -->` runs against the demo's own config served on
//! 127.0.0.1:8080, as the README says to serve it, recording its traffic (`[trace] record`)
//! as the README's replay example assumes.
//!
//! What the harness changes, and why: `target/release/modelyard` is the binary under test
//! (the README's path to the one `cargo run --release` builds); `cargo run --release --` is
//! that binary too (no second build inside a test); `curl -s` becomes `curl -sSf`, so that an
//! HTTP error fails the block instead of printing a JSON error. Files a block drops into the
//! demo's policies folder or the repository's root are removed afterwards.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use modelyard::config::Settings;
use modelyard::recorder::RecorderSettings;

use crate::demo::{TestHost, demo, serial};

/// The pages whose blocks are run.
const PAGES: [&str; 6] = [
    "README.md",
    "sdk/README.md",
    "sdk/rust/README.md",
    "sdk/python/README.md",
    "sdk/js/README.md",
    "sdk/c/README.md",
];
const SKIP: &str = "<!-- doc-test: skip: ";
const SERVING: &str = "<!-- doc-test: serving -->";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Offline,
    Serving,
    Skip,
}

#[derive(Debug)]
struct Block {
    page: &'static str,
    line: usize,
    how: How,
    text: String,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `sh` block of `page`, with what the line before it says of it.
fn blocks(page: &'static str, text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "```sh" {
            let marker = lines[..i].iter().rev().find(|l| !l.trim().is_empty());
            let how = match marker.map(|l| l.trim()) {
                Some(m) if m.starts_with(SKIP) => {
                    let reason = m[SKIP.len()..].trim_end_matches("-->").trim();
                    assert!(
                        reason.len() > 10,
                        "{page}:{}: a skipped block says why",
                        i + 1
                    );
                    How::Skip
                }
                Some(m) if m == SERVING => How::Serving,
                _ => How::Offline,
            };
            let body: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim() != "```")
                .copied()
                .collect();
            out.push(Block {
                page,
                line: i + 1,
                how,
                text: body.join("\n"),
            });
            i += body.len() + 1;
        }
        i += 1;
    }
    out
}

/// The block as the harness runs it (see the module's doc).
fn as_run(text: &str) -> String {
    let bin = env!("CARGO_BIN_EXE_modelyard");
    text.replace("\"$OLDPWD/target/release/modelyard\"", bin)
        .replace("./target/release/modelyard", bin)
        .replace("target/release/modelyard", bin)
        .replace("cargo run --release --", bin)
        .replace("curl -s ", "curl -sSf ")
}

fn run(block: &Block) {
    let out = Command::new("sh")
        .args(["-e", "-c", &as_run(&block.text)])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}:{}: the block failed ({}):\n{}\n--- stdout\n{}\n--- stderr\n{}",
        block.page,
        block.line,
        out.status,
        block.text,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn all_blocks() -> Vec<Block> {
    PAGES
        .iter()
        .flat_map(|page| {
            let text = std::fs::read_to_string(root().join(page)).unwrap();
            blocks(page, &text)
        })
        .collect()
}

/// The files in a folder (not its subfolders).
fn files_in(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `f`, then removes the files it left in `dirs`.
fn leaving_no_files<T>(dirs: &[PathBuf], f: impl FnOnce() -> T) -> T {
    let before: Vec<BTreeSet<PathBuf>> = dirs.iter().map(|d| files_in(d)).collect();
    let out = f();
    for (dir, before) in dirs.iter().zip(before) {
        for added in files_in(dir).difference(&before) {
            let _ = std::fs::remove_file(added);
        }
    }
    out
}

#[test]
fn the_harness_reads_markers_and_rewrites_only_what_it_says() {
    let page = "x\n\n<!-- doc-test: skip: runs for an hour on a GPU -->\n```sh\nsleep 3600\n```\n\
                <!-- doc-test: serving -->\n```sh\ncurl -s http://127.0.0.1:8080/health\n```\n\
                ```sh\n./target/release/modelyard policy list\n```\n";
    let b = blocks("page", page);
    assert_eq!(
        b.iter().map(|b| b.how).collect::<Vec<_>>(),
        [How::Skip, How::Serving, How::Offline]
    );
    assert!(as_run(&b[1].text).starts_with("curl -sSf "));
    assert!(as_run(&b[2].text).starts_with(env!("CARGO_BIN_EXE_modelyard")));
    // Every page has blocks, and most of them run.
    let all = all_blocks();
    let run = all.iter().filter(|b| b.how != How::Skip).count();
    assert!(run >= 8, "only {run} of {} blocks run", all.len());
}

#[test]
fn every_offline_block_of_the_readme_and_the_sdk_pages_runs() {
    // Not beside the serving blocks: both write and clean up the repository's root.
    let _serial = serial();
    leaving_no_files(&[root()], || {
        for block in all_blocks().iter().filter(|b| b.how == How::Offline) {
            run(block);
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_serving_block_runs_against_the_demo_on_8080() {
    let _serial = serial();
    let d = demo();
    let mut s = Settings::from_file(&d.config).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.listen.to_string(),
        "127.0.0.1:8080",
        "the README serves on :8080"
    );
    s.state_dir = None;
    let recording = tempfile::tempdir().unwrap();
    s.trace = Some(RecorderSettings::new(recording.path().join("trace.jsonl")));
    let host = TestHost::start(s).await;
    let blocks: Vec<Block> = (all_blocks().into_iter())
        .filter(|b| b.how == How::Serving)
        .collect();
    assert!(blocks.len() >= 5, "{blocks:?}");
    let dirs = [root(), d.dir.join("policies")];
    let outcome = tokio::task::spawn_blocking(move || {
        leaving_no_files(&dirs, || {
            std::panic::catch_unwind(|| {
                for block in &blocks {
                    run(block);
                }
            })
        })
    })
    .await
    .unwrap();
    host.stop().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
}

/// The README's config reference is one valid config: each key where it belongs, every value
/// of the right kind (only its files are made up; the test makes them). Regression: its
/// `state_dir` sat under `[server]`, where no such key is.
#[test]
fn the_readmes_config_reference_is_a_config_that_checks() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let reference: String = readme
        .lines()
        .skip_while(|l| !l.starts_with("## Configure"))
        .skip_while(|l| *l != "```toml")
        .skip(1)
        .take_while(|l| *l != "```")
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(reference.contains("[models.smollm2]"), "{reference}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("models")).unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("models/smollm2.gguf"), "").unwrap();
    Settings::from_toml(&reference, dir.path(), "README.md's config reference")
        .unwrap_or_else(|e| panic!("{e}"));
}
