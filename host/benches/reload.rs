//! Hot reload: time from a policy file's write to the policy serving its hook, through the
//! real folder watcher, for each built-in (Rust) component: cold (compiled and checked) and
//! cached (a restart, or the same bytes again: read from the on-disk artifact cache).
//! Run with `cargo bench --bench reload`. Each row is the median of 5 writes. Components in
//! other languages (for instance one built with the Python or JavaScript SDK) get rows too:
//! `MODELYARD_BENCH_EXTRA=path/a.wasm,path/b.wasm cargo bench --bench reload`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use modelyard::engine::builtin::NAMES;
use modelyard::engine::{EngineSettings, Hook, Hooks, PolicyEngine, PolicySet};

const RUNS: usize = 5;

fn guest(name: &str) -> Vec<u8> {
    let path = Path::new(env!("MODELYARD_GUEST_DIR")).join(format!("modelyard_policy_{name}.wasm"));
    std::fs::read(path).expect("guest built")
}

/// Writes `bytes` as `file` in the watched folder and waits until it serves choose-eviction.
fn write_to_serving(set: &PolicySet, dir: &Path, file: &str, bytes: &[u8]) -> Duration {
    let stem = file.trim_end_matches(".wasm");
    let began = Instant::now();
    std::fs::write(dir.join(file), bytes).expect("write");
    loop {
        let served = set
            .report()
            .iter()
            .any(|f| f.path.ends_with(file) && f.serving.contains(&"choose-eviction"));
        if served
            && set
                .hooks()
                .get(Hook::ChooseEviction)
                .is_some_and(|p| p.name() == stem)
        {
            return began.elapsed();
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "{file} never served"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    println!(
        "write → serving (median of {RUNS}), through the watcher (debounce {:?})",
        modelyard::engine::set::RELOAD_DEBOUNCE
    );
    println!(
        "{:<16} {:>10} {:>10} {:>8}",
        "policy", "cold ms", "cached ms", "size KB"
    );
    let mut rows: Vec<(String, Vec<u8>)> =
        NAMES.iter().map(|n| (n.to_string(), guest(n))).collect();
    for path in std::env::var("MODELYARD_BENCH_EXTRA")
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.is_empty())
    {
        let name = Path::new(path)
            .file_stem()
            .map_or_else(|| path.to_string(), |s| s.to_string_lossy().into_owned());
        rows.push((name, std::fs::read(path).expect("extra component")));
    }
    for (name, bytes) in rows {
        let (mut cold, mut cached) = (Vec::new(), Vec::new());
        for run in 0..RUNS {
            let tmp = tempfile::tempdir().expect("tmp");
            let dir = tmp.path().join("policies");
            std::fs::create_dir(&dir).expect("dir");
            let engine = PolicyEngine::new(EngineSettings {
                cache_dir: Some(tmp.path().join("cache")),
                ..EngineSettings::default()
            })
            .expect("engine");
            let set = Arc::new(PolicySet::new(
                engine,
                Arc::new(Hooks::new()),
                Default::default(),
                Some(dir.clone()),
            ));
            let _watch = set.watch().expect("watch");
            cold.push(write_to_serving(
                &set,
                &dir,
                &format!("cold{run}.wasm"),
                &bytes,
            ));
            // The same bytes under another name: compiled already, so read from the cache.
            cached.push(write_to_serving(
                &set,
                &dir,
                &format!("cached{run}.wasm"),
                &bytes,
            ));
        }
        println!(
            "{:<16} {:>10.1} {:>10.1} {:>8}",
            name,
            median(cold).as_secs_f64() * 1e3,
            median(cached).as_secs_f64() * 1e3,
            bytes.len() / 1024
        );
    }
}
