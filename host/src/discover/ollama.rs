//! Models in Ollama's store, read as Ollama lays it out (its `server/modelpath.go` and
//! `manifest.go`): `manifests/HOST/NAMESPACE/NAME/TAG` holds an OCI-style JSON manifest whose
//! layer of media type `application/vnd.ollama.image.model` names the GGUF by digest, and
//! `blobs/sha256-HEX` is that file. The blob is served where it lies. A model is named as
//! Ollama names it: `NAME:TAG`, with `NAMESPACE/` before it unless that is `library`, and
//! `HOST/` unless the host is Ollama's registry. Ollama's template and parameters layers are
//! not read: llama-server takes the chat template from the GGUF.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Discovery, Found, Origin, header};

/// The registry a bare Ollama name comes from.
const DEFAULT_HOST: &str = "registry.ollama.ai";
const DEFAULT_NAMESPACE: &str = "library";
const MODEL_LAYER: &str = "application/vnd.ollama.image.model";
/// A manifest is a few KiB; anything far larger is not one.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    layers: Vec<Layer>,
}

#[derive(Deserialize)]
struct Layer {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
}

/// Ollama's store on this machine: `$OLLAMA_MODELS`, else `~/.ollama/models`, else the Linux
/// service's `/usr/share/ollama/.ollama/models`, whichever exists first (the first when none
/// does, for the message).
pub fn default_store() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("OLLAMA_MODELS").filter(|d| !d.is_empty()) {
        candidates.push(PathBuf::from(dir));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".ollama/models"));
    }
    candidates.push(PathBuf::from("/usr/share/ollama/.ollama/models"));
    candidates
        .iter()
        .find(|c| c.join("manifests").is_dir())
        .unwrap_or(&candidates[0])
        .clone()
}

pub(super) fn scan(store: &Path, d: &mut Discovery) {
    let manifests = store.join("manifests");
    if !manifests.is_dir() {
        d.skip(
            store,
            "is not an Ollama store (it has no manifests/ folder)",
        );
        return;
    }
    // manifests/HOST/NAMESPACE/NAME/TAG: four levels, each listed in order.
    for host in sorted_dirs(&manifests) {
        for namespace in sorted_dirs(&host) {
            for model in sorted_dirs(&namespace) {
                for tag in sorted_files(&model) {
                    let name = ollama_name(&host, &namespace, &model, &tag);
                    match blob_of(store, &tag) {
                        Ok(blob) => match header(&blob) {
                            Ok((architecture, trained_context)) => d.add(Found {
                                id: name,
                                file: blob,
                                architecture,
                                trained_context,
                                origin: Origin::Ollama(store.to_path_buf()),
                            }),
                            Err(reason) => {
                                d.skip(&tag, format!("{name}: its model blob: {reason}"))
                            }
                        },
                        Err(reason) => d.skip(&tag, format!("{name}: {reason}")),
                    }
                }
            }
        }
    }
}

/// The model blob a manifest names, checked to exist.
fn blob_of(store: &Path, manifest: &Path) -> Result<PathBuf, String> {
    let size = std::fs::metadata(manifest)
        .map_err(|e| e.to_string())?
        .len();
    if size > MAX_MANIFEST_BYTES {
        return Err(format!("a manifest of {size} bytes is not one"));
    }
    let text = std::fs::read_to_string(manifest).map_err(|e| format!("cannot be read: {e}"))?;
    let m: Manifest =
        serde_json::from_str(&text).map_err(|e| format!("not a manifest Ollama writes: {e}"))?;
    let layer = (m.layers.iter())
        .find(|l| l.media_type == MODEL_LAYER)
        .ok_or("the manifest has no model layer")?;
    let hex = layer
        .digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            format!(
                "the model layer's digest {:?} is not sha256:HEX",
                layer.digest
            )
        })?;
    // Ollama names blobs `sha256-HEX`; old stores used `sha256:HEX`.
    let blobs = store.join("blobs");
    [format!("sha256-{hex}"), format!("sha256:{hex}")]
        .into_iter()
        .map(|n| blobs.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "its model blob {} is missing (a dangling manifest)",
                blobs.join(format!("sha256-{hex}")).display()
            )
        })
}

fn ollama_name(host: &Path, namespace: &Path, model: &Path, tag: &Path) -> String {
    let part = |p: &Path| {
        p.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    };
    let (host, namespace) = (part(host), part(namespace));
    let mut name = String::new();
    if host != DEFAULT_HOST {
        name.push_str(&host);
        name.push('/');
    }
    if host != DEFAULT_HOST || namespace != DEFAULT_NAMESPACE {
        name.push_str(&namespace);
        name.push('/');
    }
    format!("{name}{}:{}", part(model), part(tag))
}

fn sorted(dir: &Path, want_dir: bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir() == want_dir)
        .collect();
    v.sort();
    v
}

fn sorted_dirs(dir: &Path) -> Vec<PathBuf> {
    sorted(dir, true)
}

fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    sorted(dir, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_ollama_shows_them() {
        let n = |h: &str, ns: &str| {
            ollama_name(
                Path::new(h),
                Path::new(ns),
                Path::new("smol"),
                Path::new("latest"),
            )
        };
        assert_eq!(n("registry.ollama.ai", "library"), "smol:latest");
        assert_eq!(n("registry.ollama.ai", "me"), "me/smol:latest");
        assert_eq!(n("hf.co", "org"), "hf.co/org/smol:latest");
    }
}
