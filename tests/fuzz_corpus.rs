//! The fuzz targets' smoke run, in CI: each entry point of `modelyard::fuzzing` over every
//! file of its seed corpus (`fuzz/corpus/TARGET/`) and mutations of each (bytes flipped,
//! inserted and cut, pieces repeated, two files spliced), drawn with a fixed seed, so a run
//! is the same everywhere. `scripts/fuzz` runs the coverage-guided fuzzer on the same targets.

use std::path::{Path, PathBuf};

use modelyard::fuzzing;
use modelyard::sim::synthetic::Rng;

/// A fuzz target's entry point.
type Entry = fn(&[u8]);

/// Each target and its entry point.
const TARGETS: [(&str, Entry); 6] = [
    ("config", fuzzing::config),
    ("request", fuzzing::request),
    ("stream", fuzzing::stream),
    ("trace", fuzzing::trace),
    ("decision", fuzzing::decision),
    ("component", fuzzing::component),
];

/// Mutations per seed file (components compile, so fewer).
fn mutations(target: &str) -> usize {
    if target == "component" { 40 } else { 300 }
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

/// One mutation of `seed` (with `other` to splice from).
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = if v.is_empty() {
            0
        } else {
            rng.below(v.len() + 1)
        };
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.insert(
                at,
                [0, b'"', b'\n', b'{', b']', 0xFF, b'9', b'-'][rng.below(8)],
            ),
            2 => v.truncate(at),
            3 if at < v.len() => {
                let end = at + rng.below(v.len() - at + 1);
                let piece = v[at..end].to_vec();
                v.splice(at..at, piece.iter().copied().cycle().take(piece.len() * 3));
            }
            4 if !other.is_empty() => {
                let from = rng.below(other.len());
                v.truncate(at);
                v.extend_from_slice(&other[from..]);
            }
            _ => {
                let i = rng.below(v.len() + 1);
                v.insert(i, rng.next_u64() as u8);
            }
        }
    }
    v
}

#[test]
fn every_fuzz_target_survives_its_corpus_and_its_mutations() {
    for (target, run) in TARGETS {
        let files = corpus(target);
        assert!(
            files.len() >= 2,
            "{target}: a seed corpus of at least two files"
        );
        let mut rng = Rng(0x5EED ^ target.len() as u64);
        for (i, (path, seed)) in files.iter().enumerate() {
            let input = seed.clone();
            std::panic::catch_unwind(|| run(&input))
                .unwrap_or_else(|_| panic!("{target}: {} panics", path.display()));
            let other = &files[(i + 1) % files.len()].1;
            for n in 0..mutations(target) {
                let input = mutate(&mut rng, seed, other);
                if std::panic::catch_unwind(|| run(&input)).is_err() {
                    panic!(
                        "{target}: mutation {n} of {} panics; its bytes: {input:?}",
                        path.display()
                    );
                }
            }
        }
    }
}

/// Regression, found by the trace target: a function hash with a character across byte 12
/// (`a€€€€`) was cut inside the character, which panicked.
#[test]
fn a_trace_with_a_multibyte_function_hash_is_read_not_panicked_on() {
    let inv = "HashFunction,HashApp,HashOwner,minute_1\na€€€€,a,o,1\n";
    fuzzing::trace(inv.as_bytes());
}

/// The per-minute bound the trace target called for (a small file asked for billions of
/// requests): a million calls of one function in a minute are read, one more is refused.
#[test]
fn a_minute_count_past_a_million_is_refused_and_a_million_is_read() {
    use modelyard::sim::trace::{Format, read};
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("t_inv.csv");
    let counts = |n: u64| {
        std::fs::write(
            &inv,
            format!("HashFunction,HashApp,HashOwner,minute_1\nf,a,o,{n}\n"),
        )
        .unwrap();
        read(Format::AzureFunctions, std::slice::from_ref(&inv))
    };
    let obeyed = counts(1_000_000).expect("a million is a count");
    assert_eq!(obeyed.arrivals.len(), 1_000_000);
    let violated = counts(1_000_001).expect_err("past the bound");
    assert!(
        format!("{violated:#}").contains("at most 1000000"),
        "{violated:#}"
    );
}

/// The bound on a whole replay's requests, at a size a test can build: at the bound it is
/// read, past it refused, naming `--span`.
#[test]
fn a_trace_past_its_request_bound_is_refused_and_one_at_it_is_read() {
    use modelyard::sim::trace::{Format, read_within};
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("t_inv.csv");
    std::fs::write(
        &inv,
        "HashFunction,HashApp,HashOwner,minute_1,minute_2\nf,a,o,6,4\ng,a,o,0,1\n",
    )
    .unwrap();
    let paths = std::slice::from_ref(&inv);
    let obeyed = read_within(Format::AzureFunctions, paths, None, 11).expect("11 requests");
    assert_eq!(obeyed.arrivals.len(), 11);
    let violated = read_within(Format::AzureFunctions, paths, None, 10).expect_err("past 10");
    assert!(format!("{violated:#}").contains("--span"), "{violated:#}");
}
