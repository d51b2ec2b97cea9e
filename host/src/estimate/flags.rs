//! What a llama.cpp server's command line says about its memory: the context it allocates,
//! the KV cache's element types and how many layers go to the GPU. The flag names are
//! llama.cpp's `common/arg.cpp` (short and long forms, `--flag value` and `--flag=value`).

/// The memory-relevant flags of one command line; `None` where the line does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerFlags {
    /// `-c` / `--ctx-size`: the KV cache's cells, over all parallel slots.
    pub context: Option<u64>,
    /// `-ctk` / `--cache-type-k`.
    pub cache_k: Option<String>,
    /// `-ctv` / `--cache-type-v`.
    pub cache_v: Option<String>,
    /// `-ngl` / `--gpu-layers` / `--n-gpu-layers`: a count, or `None` for all (and `auto`).
    pub gpu_layers: Option<u64>,
}

impl ServerFlags {
    /// Reads the flags of `argv` (the program first).
    pub fn parse(argv: &[String]) -> Self {
        let mut f = ServerFlags::default();
        let mut words = argv.iter().skip(1);
        while let Some(word) = words.next() {
            let (flag, inline) = match word.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_string())),
                _ => (word.as_str(), None),
            };
            let mut value = || inline.clone().or_else(|| words.next().cloned());
            match flag {
                "-c" | "--ctx-size" => f.context = value().and_then(|v| v.parse().ok()),
                "-ctk" | "--cache-type-k" => f.cache_k = value(),
                "-ctv" | "--cache-type-v" => f.cache_v = value(),
                "-ngl" | "--gpu-layers" | "--n-gpu-layers" => {
                    f.gpu_layers = value().and_then(|v| v.parse().ok());
                }
                _ => {}
            }
        }
        f
    }
}

/// Bytes per element of a KV cache of `kind` (llama.cpp's `--cache-type-*` names) as a
/// fraction: f16 unless said otherwise; quantised types by their block size.
pub fn cache_element_bytes(kind: Option<&str>) -> (u64, u64) {
    match kind.map(str::to_ascii_lowercase).as_deref() {
        Some("f32") => (4, 1),
        Some("q8_0") => (34, 32),
        Some("q4_0" | "iq4_nl") => (18, 32),
        Some("q4_1") => (20, 32),
        Some("q5_0") => (22, 32),
        Some("q5_1") => (24, 32),
        // f16, bf16, and anything newer: two bytes.
        _ => (2, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn short_long_and_inline_forms_are_read() {
        let f = ServerFlags::parse(&argv(
            "llama-server -m x.gguf -c 4096 -ngl 99 --cache-type-k=q8_0 -ctv q4_0 --port 1",
        ));
        assert_eq!(
            f,
            ServerFlags {
                context: Some(4096),
                cache_k: Some("q8_0".into()),
                cache_v: Some("q4_0".into()),
                gpu_layers: Some(99),
            }
        );
        let f = ServerFlags::parse(&argv("llama-server --ctx-size=512 --n-gpu-layers all"));
        assert_eq!((f.context, f.gpu_layers), (Some(512), None));
        // The program's own name is never a flag; a flag at the end has no value.
        assert_eq!(ServerFlags::parse(&argv("-c -c")).context, None);
    }

    #[test]
    fn cache_types_have_their_block_sizes() {
        assert_eq!(cache_element_bytes(None), (2, 1));
        assert_eq!(cache_element_bytes(Some("F32")), (4, 1));
        assert_eq!(cache_element_bytes(Some("q8_0")), (34, 32));
    }
}
