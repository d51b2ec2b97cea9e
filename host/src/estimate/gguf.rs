//! A bounded reader of a GGUF file's header: the metadata an estimate needs (the layer and
//! head counts, the trained context) and each tensor's type and size. It reads only the
//! header, skips what it does not keep (the tokenizer's vocabulary) without holding it, and
//! trusts no count in the file: every length is checked against the bytes that remain, so a
//! corrupt or hostile file is an error, never a huge allocation or a panic.
//!
//! The layout is ggml's `docs/gguf.md` (versions 2 and 3; version 1's 32-bit counts are
//! refused): magic, version, tensor count, key-value count, the key-values, the tensor
//! infos, padding to `general.alignment`, then the tensor data.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use anyhow::{Context, bail, ensure};

/// "GGUF" as a little-endian u32.
const MAGIC: u32 = 0x4655_4747;
/// Tensor data starts at a multiple of this unless `general.alignment` says otherwise.
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;
/// The longest key, or string value kept, that a sane file has; longer ones are skipped.
const MAX_KEPT_STRING: u64 = 4096;

/// ggml's type number of Q4_0 weights.
pub const TYPE_Q4_0: u32 = 2;
/// ggml's type number of IQ4_NL weights.
pub const TYPE_IQ4_NL: u32 = 20;

/// One tensor: its name, ggml type number and bytes in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    pub name: String,
    pub kind: u32,
    pub bytes: u64,
}

/// What the header says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Header {
    pub version: u32,
    /// Scalar metadata, integers widened (floats and strings are not kept unless listed in
    /// [`Header::strings`]).
    pub numbers: BTreeMap<String, u64>,
    /// String metadata up to [`MAX_KEPT_STRING`] bytes.
    pub strings: BTreeMap<String, String>,
    /// For integer arrays (per-layer head counts), their largest element.
    pub array_max: BTreeMap<String, u64>,
    pub tensors: Vec<Tensor>,
}

impl Header {
    /// `general.architecture`, the prefix of the model's own keys.
    pub fn architecture(&self) -> Option<&str> {
        self.strings.get("general.architecture").map(String::as_str)
    }

    /// The architecture's key `{arch}.{name}`, scalar or the largest of an array.
    pub fn arch_number(&self, name: &str) -> Option<u64> {
        let key = format!("{}.{name}", self.architecture()?);
        self.numbers
            .get(&key)
            .or_else(|| self.array_max.get(&key))
            .copied()
    }

    /// Bytes of all tensor data.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes).sum()
    }
}

/// Reads the header of the GGUF file at `path`.
pub fn read(path: &Path) -> anyhow::Result<Header> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata()?.len();
    parse(BufReader::new(file), len).with_context(|| format!("reading {} as GGUF", path.display()))
}

/// Parses a GGUF header from `input`, a file of `len` bytes.
pub fn parse(input: impl Read + Seek, len: u64) -> anyhow::Result<Header> {
    let mut r = Reader { input, pos: 0, len };
    ensure!(r.u32()? == MAGIC, "not a GGUF file (no GGUF magic)");
    let version = r.u32()?;
    ensure!(
        (2..=3).contains(&version),
        "GGUF version {version} is not supported (2 and 3 are)"
    );
    let tensor_count = r.u64()?;
    let kv_count = r.u64()?;
    // Each key-value and tensor info takes at least this many bytes.
    ensure!(
        kv_count.saturating_mul(12) <= r.remaining()
            && tensor_count.saturating_mul(24) <= r.remaining(),
        "counts ({kv_count} values, {tensor_count} tensors) larger than the file"
    );
    let mut h = Header {
        version,
        ..Header::default()
    };
    for _ in 0..kv_count {
        let key = r.kept_string()?.context("a key longer than any real one")?;
        let kind = r.u32()?;
        r.value(&key, kind, &mut h)
            .with_context(|| format!("the value of {key}"))?;
    }
    let mut infos = Vec::new();
    for _ in 0..tensor_count {
        let name = r
            .kept_string()?
            .context("a tensor name longer than any real one")?;
        let dims = r.u32()?;
        ensure!(dims <= MAX_DIMS, "tensor {name} has {dims} dimensions");
        for _ in 0..dims {
            r.u64()?;
        }
        let kind = r.u32()?;
        let offset = r.u64()?;
        infos.push((offset, name, kind));
    }
    let alignment = h
        .numbers
        .get("general.alignment")
        .copied()
        .unwrap_or(DEFAULT_ALIGNMENT);
    ensure!(
        alignment.is_power_of_two(),
        "general.alignment {alignment} is not a power of two"
    );
    let data_start = r.pos.div_ceil(alignment) * alignment;
    ensure!(data_start <= len, "the file ends before its tensor data");
    let data_len = len - data_start;
    // A tensor's bytes run to the next tensor's offset (ggml pads each to the alignment).
    infos.sort_by_key(|(offset, ..)| *offset);
    let ends: Vec<u64> = infos
        .iter()
        .skip(1)
        .map(|(o, ..)| *o)
        .chain([data_len])
        .collect();
    for ((offset, name, kind), end) in infos.into_iter().zip(ends) {
        ensure!(
            offset <= end,
            "tensor {name} starts past the end of the file's data"
        );
        h.tensors.push(Tensor {
            name,
            kind,
            bytes: end - offset,
        });
    }
    Ok(h)
}

struct Reader<R> {
    input: R,
    pos: u64,
    len: u64,
}

impl<R: Read + Seek> Reader<R> {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn bytes<const N: usize>(&mut self) -> anyhow::Result<[u8; N]> {
        let mut b = [0; N];
        self.input
            .read_exact(&mut b)
            .context("the file ends inside its header")?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self) -> anyhow::Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> anyhow::Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn skip(&mut self, n: u64) -> anyhow::Result<()> {
        ensure!(n <= self.remaining(), "the file ends inside its header");
        let n = i64::try_from(n).context("a length past any file")?;
        self.input.seek_relative(n)?;
        self.pos += n.unsigned_abs();
        Ok(())
    }

    /// A string, or `None` (skipped) when it is longer than [`MAX_KEPT_STRING`].
    fn kept_string(&mut self) -> anyhow::Result<Option<String>> {
        let n = self.u64()?;
        if n > MAX_KEPT_STRING {
            self.skip(n)?;
            return Ok(None);
        }
        ensure!(n <= self.remaining(), "the file ends inside its header");
        let mut b = vec![0; n as usize];
        self.input
            .read_exact(&mut b)
            .context("the file ends inside its header")?;
        self.pos += n;
        Ok(Some(String::from_utf8_lossy(&b).into_owned()))
    }

    /// A scalar of type `kind` widened to u64 when it is an integer (or a bool), skipped
    /// otherwise.
    fn scalar(&mut self, kind: u32) -> anyhow::Result<Option<u64>> {
        Ok(match kind {
            0 => Some(u64::from(self.bytes::<1>()?[0])),
            1 => Some(
                i8::from_le_bytes(self.bytes()?)
                    .max(0)
                    .unsigned_abs()
                    .into(),
            ),
            2 => Some(u16::from_le_bytes(self.bytes()?).into()),
            3 => Some(
                i16::from_le_bytes(self.bytes()?)
                    .max(0)
                    .unsigned_abs()
                    .into(),
            ),
            4 => Some(self.u32()?.into()),
            5 => Some(
                i32::from_le_bytes(self.bytes()?)
                    .max(0)
                    .unsigned_abs()
                    .into(),
            ),
            6 => {
                self.skip(4)?;
                None
            }
            7 => Some(u64::from(self.bytes::<1>()?[0] != 0)),
            10 => Some(self.u64()?),
            11 => Some(i64::from_le_bytes(self.bytes()?).max(0).unsigned_abs()),
            12 => {
                self.skip(8)?;
                None
            }
            other => bail!("unknown value type {other}"),
        })
    }

    fn value(&mut self, key: &str, kind: u32, h: &mut Header) -> anyhow::Result<()> {
        match kind {
            8 => {
                if let Some(s) = self.kept_string()? {
                    h.strings.insert(key.to_string(), s);
                }
            }
            9 => {
                let item = self.u32()?;
                let count = self.u64()?;
                ensure!(
                    count <= self.remaining(),
                    "an array of {count} longer than the file"
                );
                let mut max = None;
                for _ in 0..count {
                    match item {
                        8 => {
                            let n = self.u64()?;
                            self.skip(n)?;
                        }
                        9 => bail!("nested arrays"),
                        _ => max = max.max(self.scalar(item)?),
                    }
                }
                if let Some(m) = max {
                    h.array_max.insert(key.to_string(), m);
                }
            }
            _ => {
                if let Some(n) = self.scalar(kind)? {
                    h.numbers.insert(key.to_string(), n);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    /// Builds a small GGUF file in memory, as ggml lays it out.
    #[derive(Default)]
    pub struct Builder {
        kvs: Vec<u8>,
        kv_count: u64,
        tensors: Vec<(String, u32, u64)>,
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    impl Builder {
        pub fn str(mut self, key: &str, value: &str) -> Self {
            string(&mut self.kvs, key);
            self.kvs.extend(8u32.to_le_bytes());
            string(&mut self.kvs, value);
            self.kv_count += 1;
            self
        }

        pub fn u32(mut self, key: &str, value: u32) -> Self {
            string(&mut self.kvs, key);
            self.kvs.extend(4u32.to_le_bytes());
            self.kvs.extend(value.to_le_bytes());
            self.kv_count += 1;
            self
        }

        pub fn u32_array(mut self, key: &str, values: &[u32]) -> Self {
            string(&mut self.kvs, key);
            self.kvs.extend(9u32.to_le_bytes());
            self.kvs.extend(4u32.to_le_bytes());
            self.kvs.extend((values.len() as u64).to_le_bytes());
            for v in values {
                self.kvs.extend(v.to_le_bytes());
            }
            self.kv_count += 1;
            self
        }

        pub fn strings(mut self, key: &str, values: &[&str]) -> Self {
            string(&mut self.kvs, key);
            self.kvs.extend(9u32.to_le_bytes());
            self.kvs.extend(8u32.to_le_bytes());
            self.kvs.extend((values.len() as u64).to_le_bytes());
            for v in values {
                string(&mut self.kvs, v);
            }
            self.kv_count += 1;
            self
        }

        /// A tensor of `bytes` bytes (one dimension; its type `kind`).
        pub fn tensor(mut self, name: &str, kind: u32, bytes: u64) -> Self {
            self.tensors.push((name.to_string(), kind, bytes));
            self
        }

        pub fn build(self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend(MAGIC.to_le_bytes());
            out.extend(3u32.to_le_bytes());
            out.extend((self.tensors.len() as u64).to_le_bytes());
            out.extend(self.kv_count.to_le_bytes());
            out.extend(&self.kvs);
            let mut offset = 0u64;
            for (name, kind, bytes) in &self.tensors {
                string(&mut out, name);
                out.extend(1u32.to_le_bytes());
                out.extend(bytes.to_le_bytes());
                out.extend(kind.to_le_bytes());
                out.extend(offset.to_le_bytes());
                offset += bytes.div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
            }
            out.resize(out.len().div_ceil(32) * 32, 0);
            out.resize(out.len() + offset as usize, 0);
            out
        }
    }

    fn parse_bytes(b: &[u8]) -> anyhow::Result<Header> {
        parse(std::io::Cursor::new(b), b.len() as u64)
    }

    #[test]
    fn reads_metadata_and_tensor_sizes() {
        let file = Builder::default()
            .str("general.architecture", "llama")
            .u32("llama.block_count", 30)
            .u32_array("llama.attention.head_count_kv", &[3, 3, 5])
            .strings("tokenizer.ggml.tokens", &["a", "bb", "ccc"])
            .tensor("token_embd.weight", 8, 1000)
            .tensor("blk.0.attn_q.weight", TYPE_Q4_0, 64)
            .build();
        let h = parse_bytes(&file).unwrap();
        assert_eq!(h.architecture(), Some("llama"));
        assert_eq!(h.arch_number("block_count"), Some(30));
        assert_eq!(h.arch_number("attention.head_count_kv"), Some(5));
        assert_eq!(h.arch_number("embedding_length"), None);
        // Each tensor runs to the next one's (aligned) offset.
        assert_eq!(h.tensors[0].bytes, 1024);
        assert_eq!(
            h.tensors[1],
            Tensor {
                name: "blk.0.attn_q.weight".into(),
                kind: TYPE_Q4_0,
                bytes: 64
            }
        );
    }

    #[test]
    fn refuses_what_is_not_a_gguf_file() {
        let err = parse_bytes(b"GGML\x03\0\0\0").unwrap_err();
        assert!(err.to_string().contains("not a GGUF file"), "{err}");
        let mut v1 = MAGIC.to_le_bytes().to_vec();
        v1.extend(1u32.to_le_bytes());
        let err = parse_bytes(&v1).unwrap_err();
        assert!(err.to_string().contains("version 1"), "{err}");
    }

    #[test]
    fn every_truncation_of_a_header_is_an_error_not_a_panic() {
        let file = Builder::default()
            .str("general.architecture", "llama")
            .u32_array("llama.attention.head_count_kv", &[3, 3])
            .tensor("blk.0.attn_q.weight", TYPE_Q4_0, 64)
            .build();
        let header_end = file.len() - 64;
        for cut in 0..header_end {
            assert!(parse_bytes(&file[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn huge_counts_are_refused_before_anything_is_allocated() {
        let mut f = MAGIC.to_le_bytes().to_vec();
        f.extend(3u32.to_le_bytes());
        f.extend(u64::MAX.to_le_bytes());
        f.extend(1u64.to_le_bytes());
        assert!(parse_bytes(&f).is_err());
        // An array claiming more items than the file has bytes.
        let mut f = MAGIC.to_le_bytes().to_vec();
        f.extend(3u32.to_le_bytes());
        f.extend(0u64.to_le_bytes());
        f.extend(1u64.to_le_bytes());
        string(&mut f, "k");
        f.extend(9u32.to_le_bytes());
        f.extend(4u32.to_le_bytes());
        f.extend((u64::MAX / 2).to_le_bytes());
        let err = parse_bytes(&f).unwrap_err();
        assert!(
            format!("{err:#}").contains("longer than the file"),
            "{err:#}"
        );
    }
}
