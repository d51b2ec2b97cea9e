use std::time::Duration;

use super::gguf::tests::Builder;
use super::*;
use crate::config::{CommandSettings, OpenAiSettings};

const MIB: u64 = 1 << 20;

/// A llama-shaped model: 4 layers, 8 heads of 64 (2 for K/V), 1 MiB of Q4_0 layer weights
/// and 3 MiB of others.
fn gguf_file(dir: &Path) -> PathBuf {
    let bytes = Builder::default()
        .str("general.architecture", "llama")
        .u32("llama.block_count", 4)
        .u32("llama.embedding_length", 512)
        .u32("llama.attention.head_count", 8)
        .u32("llama.attention.head_count_kv", 2)
        .u32("llama.context_length", 8192)
        .tensor("token_embd.weight", 8, 3 * MIB)
        .tensor("blk.0.ffn_up.weight", gguf::TYPE_Q4_0, MIB)
        .build();
    let path = dir.join("model.gguf");
    std::fs::write(&path, bytes).unwrap();
    path
}

fn model(id: &str, file: &Path, cmd: &str) -> ModelSettings {
    ModelSettings {
        context_tokens: 1024,
        parallel: 2,
        ..ModelSettings::new(
            id,
            BackendSettings::Command(CommandSettings {
                argv: cmd.split_whitespace().map(String::from).collect(),
                env: Vec::new(),
                file: Some(file.to_path_buf()),
                health_path: "/health".into(),
                start_timeout: Duration::from_secs(1),
                stop_timeout: Duration::from_secs(1),
                model_name: None,
                stop_argv: None,
                footprint: crate::config::FootprintSource::Processes,
            }),
        )
    }
}

/// KV bytes of [`gguf_file`]'s model for `cells` cells in f16.
fn kv(cells: u64) -> u64 {
    4 * cells * 2 * (64 * 2 + 64 * 2)
}

const CMD: &str = "llama-server -m ${FILE} -c ${CONTEXT_TOTAL} --port ${PORT}";

#[test]
fn the_header_counts_weights_repacking_and_the_kv_cache_of_the_command_lines_context() {
    let dir = tempfile::tempdir().unwrap();
    let file = gguf_file(dir.path());
    let tensors = std::fs::metadata(&file).unwrap().len();
    let e = Estimator::new(&[model("a", &file, CMD)], None);
    let est = e.estimate(0);
    assert_eq!(est.source, Source::Header);
    // Every tensor once, the Q4_0 layer weight twice; 2,048 cells (1,024 × 2 slots).
    let weights = 4 * MIB;
    assert!(tensors > weights, "the header is counted out");
    assert_eq!(est.bytes, weights + MIB + kv(2048) + DEFAULT_CPU_OVERHEAD);
}

#[test]
fn without_a_context_flag_the_trained_context_is_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let file = gguf_file(dir.path());
    let e = Estimator::new(&[model("a", &file, "llama-server -m ${FILE}")], None);
    assert_eq!(
        e.estimate(0).bytes,
        5 * MIB + kv(8192) + DEFAULT_CPU_OVERHEAD
    );
}

#[test]
fn on_a_gpu_the_offloaded_share_counts_with_the_gpus_overhead() {
    let dir = tempfile::tempdir().unwrap();
    let file = gguf_file(dir.path());
    let on_gpu = |cmd: &str| ModelSettings {
        device: "gpu0".into(),
        ..model("a", &file, cmd)
    };
    let all = Estimator::new(&[on_gpu(CMD)], None).estimate(0);
    // No repacking on a GPU.
    assert_eq!(all.bytes, 4 * MIB + kv(2048) + DEFAULT_GPU_OVERHEAD);
    let half = Estimator::new(&[on_gpu(&format!("{CMD} -ngl 2"))], None).estimate(0);
    assert_eq!(half.bytes, (4 * MIB + kv(2048)) / 2 + DEFAULT_GPU_OVERHEAD);
}

#[test]
fn a_measured_footprint_is_remembered_across_restarts_and_read_by_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let file = gguf_file(dir.path());
    let models = [
        model("a", &file, CMD),
        // The same file and flags under another name.
        ModelSettings {
            tags: vec!["code".into()],
            ..model("b", &file, CMD)
        },
        // The same file with another context: its own key.
        ModelSettings {
            context_tokens: 512,
            ..model("c", &file, CMD)
        },
    ];
    let mut e = Estimator::new(&models, Some(state.clone()));
    let header_a = e.estimate(0).bytes;
    let measured = header_a + 40 * MIB;
    assert!(e.observe(0, 1, measured));
    // Within a load the peak is kept; a small move is not a change.
    assert!(!e.observe(0, 1, measured - 10 * MIB));
    assert!(!e.observe(0, 1, measured + 1000));
    let (to, bytes) = e.take_save().expect("a change to write");
    assert_eq!(e.take_save(), None);
    memory::save(&to, &bytes);

    let e = Estimator::new(&models, Some(state));
    assert_eq!(
        e.estimate(0),
        Estimate {
            bytes: measured,
            source: Source::Remembered
        }
    );
    assert_eq!(e.estimate(1).source, Source::SameFile { model: "a".into() });
    // The overhead measured on the CPU replaces the default for every header estimate there.
    let c = e.estimate(2);
    assert_eq!(c.source, Source::Header);
    assert_eq!(
        c.bytes,
        5 * MIB + kv(1024) + (measured - (header_a - DEFAULT_CPU_OVERHEAD))
    );
}

#[test]
fn a_new_load_replaces_the_last_ones_peak() {
    let dir = tempfile::tempdir().unwrap();
    let file = gguf_file(dir.path());
    let mut e = Estimator::new(&[model("a", &file, CMD)], None);
    e.observe(0, 1, 300 * MIB);
    e.observe(0, 2, 200 * MIB);
    assert_eq!(e.estimate(0).bytes, 200 * MIB);
    // Nowhere to write: nothing to save, though the memory changed.
    assert_eq!(e.take_save(), None);
}

#[test]
fn configured_sizes_win_and_servers_that_run_themselves_cost_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = gguf_file(dir.path());
    let sized = ModelSettings {
        size: Some(7),
        ..model("a", &file, CMD)
    };
    let remote = ModelSettings::new(
        "r",
        BackendSettings::OpenAi(OpenAiSettings {
            url: "http://127.0.0.1:1/v1".into(),
            api_key: None,
            model_name: "r".into(),
            control: crate::config::Control::None,
        }),
    );
    let mut e = Estimator::new(&[sized, remote], None);
    e.observe(0, 1, 900 * MIB);
    assert_eq!(
        e.estimate(0),
        Estimate {
            bytes: 7,
            source: Source::Configured
        }
    );
    assert_eq!(
        e.estimate(1),
        Estimate {
            bytes: 0,
            source: Source::External
        }
    );
}

#[test]
fn a_file_that_is_not_gguf_is_estimated_by_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.bin");
    std::fs::write(&file, vec![0u8; 4096]).unwrap();
    let missing = dir.path().join("missing.gguf");
    let e = Estimator::new(&[model("a", &file, CMD), model("b", &missing, CMD)], None);
    assert_eq!(
        e.estimate(0),
        Estimate {
            bytes: 4096 + DEFAULT_RUNTIME_OVERHEAD,
            source: Source::FileSize
        }
    );
    assert_eq!(e.estimate(1).source, Source::Guess);
}
