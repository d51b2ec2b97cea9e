//! Entry points for fuzzing: each takes arbitrary bytes and must return without a panic or a
//! hang, whatever they are. The fuzz targets in `fuzz/` (cargo-fuzz, `scripts/fuzz` runs them)
//! call them, and the tests run each over its seed corpus in `fuzz/corpus/` and mutations of
//! it. Not an API: the names may change with the targets.

use std::path::{Path, PathBuf};

use crate::config::Settings;
pub use crate::engine::fuzz::{component, decision};
pub use crate::proxy::fuzz::{request, stream};
use crate::sim::trace::{self, Format};

/// The config parser and validator on arbitrary text (bytes that are not UTF-8 are replaced).
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = Settings::from_toml(&text, Path::new("fuzz-base"), "fuzz.toml");
}

/// Each trace reader on arbitrary files: the bytes up to the first `0xFF` are the main file
/// (an Azure Functions `_inv.csv`, an Azure LLM trace, a JSON-lines trace), the next part the
/// Functions trace's `_mem.csv`, the rest its `_run.csv`.
pub fn trace(data: &[u8]) {
    let mut parts = data.splitn(3, |b| *b == 0xFF);
    let (main, mem, run) = (parts.next().unwrap_or_default(), parts.next(), parts.next());
    let dir = scratch();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map(|()| path)
    };
    let _ = std::fs::remove_file(dir.join("f_mem.csv"));
    let _ = std::fs::remove_file(dir.join("f_run.csv"));
    if let Some(m) = mem {
        let _ = write("f_mem.csv", m);
    }
    if let Some(r) = run {
        let _ = write("f_run.csv", r);
    }
    for (format, name) in [
        (Format::AzureFunctions, "f_inv.csv"),
        (Format::AzureLlm, "AzureLLMInferenceTrace_fuzz.csv"),
        (Format::Jsonl, "trace.jsonl"),
    ] {
        if let Ok(path) = write(name, main) {
            let _ = trace::read_within(format, &[path], Some(60_000), FUZZ_MAX_REQUESTS);
        }
    }
}

/// The most requests a fuzzed trace may ask for: enough for every rule, small enough to stay
/// fast and within the fuzzer's memory limit.
const FUZZ_MAX_REQUESTS: usize = 100_000;

/// A folder of this thread's own for the trace files.
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "modelyard-fuzz-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::create_dir_all(&dir);
    dir
}
