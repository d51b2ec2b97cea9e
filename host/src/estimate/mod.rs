//! Footprint estimates before a load: how many bytes a model will hold on its device, so that
//! a load that does not fit makes room *before* it starts rather than being found out by
//! memory pressure after.
//!
//! An estimate comes from what is known, best first:
//! 1. the configured `size` (the user's word overrides every guess);
//! 2. the model's own last measured footprint, remembered across restarts in the state folder
//!    ([`memory`]), keyed by the device, the model file, the context and parallel slots and
//!    the command line;
//! 3. another model measured with the same key ("same file": an alias with other tags);
//! 4. the GGUF header ([`gguf`]): the tensors' bytes (on the CPU, Q4_0 and IQ4_NL layer
//!    weights twice, since llama.cpp repacks them for its CPU kernels while the mapped file
//!    stays resident), the KV cache for the command line's context ([`flags`]) from the layer
//!    and head counts, the share of both a partial `-ngl` puts on a GPU, plus the device's
//!    process overhead: the most any measured process on it held beyond that count (a CUDA
//!    context, compute buffers), or [`DEFAULT_CPU_OVERHEAD`] / [`DEFAULT_GPU_OVERHEAD`] until
//!    one is measured;
//! 5. the file's size plus [`DEFAULT_RUNTIME_OVERHEAD`] when its header cannot be read.
//!
//! A server that already runs spends its own memory: 0 unless configured. The estimator
//! reads files but starts nothing; the scheduler asks it, tells it what it measured, and
//! writes the memory it hands back off the request path.

pub mod flags;
pub mod gguf;
pub mod memory;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::backend::command::command_line;
use crate::config::{BackendSettings, CPU_DEVICE, ModelSettings};
use flags::{ServerFlags, cache_element_bytes};
use memory::{Memory, Remembered};

/// A llama.cpp process's memory on the CPU beyond its weights and KV cache (the runtime, the
/// compute and output buffers, the tokenizer) until one is measured: the demo's models held
/// 20–50 MiB.
pub const DEFAULT_CPU_OVERHEAD: u64 = 64 << 20;
/// The same on a GPU until one is measured there: a CUDA context and compute buffers, about
/// 600 MiB per process on an H200.
pub const DEFAULT_GPU_OVERHEAD: u64 = 600 << 20;
/// Added to a model file's size when its header cannot be read.
pub const DEFAULT_RUNTIME_OVERHEAD: u64 = 128 << 20;
/// A remembered footprint is rewritten when a measurement moves it by more than this.
const REWRITE_AFTER: u64 = 1 << 20;

/// Where an estimate came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Configured,
    Remembered,
    SameFile {
        model: String,
    },
    Header,
    FileSize,
    /// No file to read: the runtime overhead alone.
    Guess,
    /// A server that already runs, which spends its own memory.
    External,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Configured => f.write_str("configured"),
            Source::Remembered => f.write_str("remembered"),
            Source::SameFile { model } => write!(f, "same file as {model}"),
            Source::Header => f.write_str("gguf header"),
            Source::FileSize => f.write_str("file size"),
            Source::Guess => f.write_str("guess"),
            Source::External => f.write_str("external"),
        }
    }
}

/// Bytes a model is expected to hold on its device, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Estimate {
    pub bytes: u64,
    pub source: Source,
}

/// What never changes about one model's estimate while the config holds.
#[derive(Debug)]
struct Profile {
    id: String,
    device: String,
    configured: Option<u64>,
    external: bool,
    /// The memory's key, for a model this host starts.
    key: Option<String>,
    /// Weights and KV cache on its device by the GGUF header.
    header: Option<u64>,
    file_bytes: Option<u64>,
}

/// Estimates every configured model's footprint and learns from measurements.
#[derive(Debug)]
pub struct Estimator {
    dir: Option<PathBuf>,
    profiles: Vec<Profile>,
    memory: Memory,
    /// Per model: the load attempt it last measured, and that load's peak.
    peaks: Vec<Option<(u64, u64)>>,
    dirty: bool,
}

impl Estimator {
    /// Reads each model's file header and the memory in `dir` (none: remember nothing).
    pub fn new(models: &[ModelSettings], dir: Option<PathBuf>) -> Self {
        let profiles = models.iter().map(profile).collect();
        Estimator {
            memory: Memory::load(dir.as_deref()),
            dir,
            profiles,
            peaks: vec![None; models.len()],
            dirty: false,
        }
    }

    /// Model `i` is `m` from now on (a reload): a new model when `i` is one past the last.
    pub fn add(&mut self, i: usize, m: &ModelSettings) {
        let p = profile(m);
        if i < self.profiles.len() {
            self.profiles[i] = p;
            self.peaks[i] = None;
        } else {
            self.profiles.push(p);
            self.peaks.push(None);
        }
    }

    /// Model `i`'s estimate now.
    pub fn estimate(&self, i: usize) -> Estimate {
        let p = &self.profiles[i];
        let (bytes, source) = if let Some(b) = p.configured {
            (b, Source::Configured)
        } else if p.external {
            (0, Source::External)
        } else if let Some(r) = p.key.as_ref().and_then(|k| self.memory.footprints.get(k)) {
            let source = if r.model == p.id {
                Source::Remembered
            } else {
                Source::SameFile {
                    model: r.model.clone(),
                }
            };
            (r.bytes, source)
        } else if let Some(core) = p.header {
            (core + self.overhead(&p.device), Source::Header)
        } else if let Some(f) = p.file_bytes {
            (f + DEFAULT_RUNTIME_OVERHEAD, Source::FileSize)
        } else {
            (DEFAULT_RUNTIME_OVERHEAD, Source::Guess)
        };
        Estimate { bytes, source }
    }

    /// The process overhead the header's count adds on `device`.
    pub fn overhead(&self, device: &str) -> u64 {
        self.memory
            .overheads
            .get(device)
            .and_then(|per_key| per_key.values().max().copied())
            .unwrap_or(if device == CPU_DEVICE {
                DEFAULT_CPU_OVERHEAD
            } else {
                DEFAULT_GPU_OVERHEAD
            })
    }

    /// Model `i`'s load attempt `generation` holds `bytes` on its device now. True when an
    /// estimate may have changed (its own, a same-file model's, its device's overhead).
    pub fn observe(&mut self, i: usize, generation: u64, bytes: u64) -> bool {
        let p = &self.profiles[i];
        let Some(key) = p.key.clone() else {
            return false;
        };
        let peak = match self.peaks[i] {
            Some((g, b)) if g == generation => b.max(bytes),
            _ => bytes,
        };
        self.peaks[i] = Some((generation, peak));
        let mut changed = false;
        let stale = self
            .memory
            .footprints
            .get(&key)
            .is_none_or(|r| r.model != p.id || r.bytes.abs_diff(peak) > REWRITE_AFTER);
        if stale {
            self.memory.footprints.insert(
                key.clone(),
                Remembered {
                    bytes: peak,
                    model: p.id.clone(),
                },
            );
            changed = true;
        }
        if let Some(core) = p.header {
            let residual = peak.saturating_sub(core);
            let per_key = self.memory.overheads.entry(p.device.clone()).or_default();
            if per_key
                .get(&key)
                .is_none_or(|r| r.abs_diff(residual) > REWRITE_AFTER)
            {
                per_key.insert(key, residual);
                changed = true;
            }
        }
        self.dirty |= changed;
        changed
    }

    /// The memory to write and where, when it changed since the last call.
    pub fn take_save(&mut self) -> Option<(PathBuf, Vec<u8>)> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        Some((self.dir.clone()?, self.memory.to_bytes()))
    }
}

fn profile(m: &ModelSettings) -> Profile {
    let mut p = Profile {
        id: m.id.clone(),
        device: m.device.clone(),
        configured: m.size,
        external: true,
        key: None,
        header: None,
        file_bytes: None,
    };
    let BackendSettings::Command(c) = &m.backend else {
        return p;
    };
    p.external = false;
    let file = c.file.as_deref();
    p.key = Some(format!(
        "{} | {} | {} x {} | {} | {}",
        m.device,
        file.map(Path::display)
            .map(|d| d.to_string())
            .unwrap_or_default(),
        m.context_tokens,
        m.parallel,
        c.argv.join(" "),
        c.env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
    ));
    let Some(file) = file else {
        return p;
    };
    p.file_bytes = std::fs::metadata(file).ok().map(|md| md.len());
    match gguf::read(file) {
        Ok(h) => {
            let flags = ServerFlags::parse(&command_line(m, c, 0));
            p.header = header_bytes(&h, &flags, m);
            if p.header.is_none() {
                tracing::info!(model = %m.id, "its GGUF header lacks the layer and head counts; estimating from the file's size");
            }
        }
        Err(e) => {
            tracing::info!(model = %m.id, error = %format!("{e:#}"), "estimating from the file's size");
        }
    }
    p
}

/// Weights and KV cache on `m`'s device by the header, for the server `flags` describe.
fn header_bytes(h: &gguf::Header, flags: &ServerFlags, m: &ModelSettings) -> Option<u64> {
    let layers = h.arch_number("block_count").filter(|&n| n > 0)?;
    let embd = h.arch_number("embedding_length")?;
    let heads = h.arch_number("attention.head_count").filter(|&n| n > 0)?;
    let heads_kv = h.arch_number("attention.head_count_kv").unwrap_or(heads);
    let k_len = h
        .arch_number("attention.key_length")
        .unwrap_or(embd / heads);
    let v_len = h
        .arch_number("attention.value_length")
        .unwrap_or(embd / heads);
    // `-c 0` (and no `-c`) allocates the context the model was trained with.
    let cells = flags
        .context
        .filter(|&c| c > 0)
        .or_else(|| h.arch_number("context_length"))
        .unwrap_or(u64::from(m.context_tokens) * u64::from(m.parallel));
    let (kn, kd) = cache_element_bytes(flags.cache_k.as_deref());
    let (vn, vd) = cache_element_bytes(flags.cache_v.as_deref());
    let per_cell_layer = heads_kv * (k_len * kn / kd + v_len * vn / vd);
    let kv = layers.saturating_mul(cells).saturating_mul(per_cell_layer);
    let weights = h.tensor_bytes();
    if m.device == CPU_DEVICE {
        let repacked: u64 = h
            .tensors
            .iter()
            .filter(|t| {
                t.name.starts_with("blk.") && matches!(t.kind, gguf::TYPE_Q4_0 | gguf::TYPE_IQ4_NL)
            })
            .map(|t| t.bytes)
            .sum();
        Some(weights + repacked + kv)
    } else {
        let on_gpu = flags.gpu_layers.map_or(layers, |n| n.min(layers));
        Some((weights + kv).saturating_mul(on_gpu) / layers)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
