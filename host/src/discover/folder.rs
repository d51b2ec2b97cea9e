//! GGUF files in a folder and its subfolders: each is a model named after its file, except a
//! multimodal projector (`mmproj*`, which goes with a model, not alone) and the later parts
//! of a split model (`NAME-00002-of-00003.gguf`: llama.cpp loads them from the first part).

use std::path::Path;

use super::{Discovery, Found, Origin, header};

/// How deep below a folder the scan looks.
const MAX_DEPTH: usize = 4;
/// The most entries one scan reads, so that pointing it at `/` ends.
const MAX_ENTRIES: usize = 100_000;

pub(super) fn scan(dir: &Path, d: &mut Discovery) {
    if !dir.is_dir() {
        d.skip(dir, "is not a folder");
        return;
    }
    let mut seen = 0;
    walk(dir, dir, 0, &mut seen, d);
}

fn walk(root: &Path, dir: &Path, depth: usize, seen: &mut usize, d: &mut Discovery) {
    let mut entries: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(Result::ok).map(|e| e.path()).collect(),
        Err(e) => {
            d.skip(dir, format!("cannot be read: {e}"));
            return;
        }
    };
    entries.sort();
    for path in entries {
        *seen += 1;
        if *seen > MAX_ENTRIES {
            d.skip(
                root,
                format!("holds more than {MAX_ENTRIES} entries; the rest were not read"),
            );
            return;
        }
        if path.is_dir() {
            if depth < MAX_DEPTH {
                walk(root, &path, depth + 1, seen, d);
            }
            continue;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = gguf_stem(name) else {
            continue;
        };
        if stem.to_ascii_lowercase().starts_with("mmproj") {
            d.skip(
                &path,
                "a multimodal projector: name it in a model's `cmd` (--mmproj)",
            );
            continue;
        }
        let id = match split_part(stem) {
            Some((base, 1)) => base,
            Some(_) => continue,
            None => stem,
        };
        match header(&path) {
            Ok((architecture, trained_context)) => d.add(Found {
                id: id.to_string(),
                file: path.clone(),
                architecture,
                trained_context,
                origin: Origin::Folder(root.to_path_buf()),
            }),
            Err(reason) => d.skip(&path, reason),
        }
    }
}

/// `name` without its `.gguf` ending (any case), if it has one.
fn gguf_stem(name: &str) -> Option<&str> {
    let cut = name.len().checked_sub(5)?;
    (name.is_char_boundary(cut) && name[cut..].eq_ignore_ascii_case(".gguf")).then(|| &name[..cut])
}

/// `NAME-0000K-of-0000N` → (`NAME`, K).
fn split_part(stem: &str) -> Option<(&str, u32)> {
    let (rest, total) = stem.rsplit_once("-of-")?;
    let (base, part) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(part) && digits(total)) {
        return None;
    }
    Some((base, part.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_and_split_parts() {
        assert_eq!(gguf_stem("a.gguf"), Some("a"));
        assert_eq!(gguf_stem("B.GGUF"), Some("B"));
        assert_eq!(gguf_stem("a.bin"), None);
        assert_eq!(gguf_stem("ü.gguf"), Some("ü"));
        assert_eq!(gguf_stem("gguf"), None);
        assert_eq!(split_part("big-00001-of-00003"), Some(("big", 1)));
        assert_eq!(split_part("big-00002-of-00003"), Some(("big", 2)));
        assert_eq!(split_part("big-1-of-3"), None);
        assert_eq!(split_part("plain"), None);
    }
}
