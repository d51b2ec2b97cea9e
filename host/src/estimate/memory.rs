//! What the host remembers of measured footprints across restarts: one small JSON file in the
//! state folder, `footprints.json`. A missing file is an empty memory; an unreadable one is
//! logged and replaced, never a reason to refuse to start. Writes go to a temporary file that
//! is renamed over the old one, so a crash mid-write leaves the previous memory whole.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's name in the state folder.
pub const FILE_NAME: &str = "footprints.json";
/// The layout's version; a file of another is read as empty.
const VERSION: u32 = 1;

/// One remembered footprint: the peak of the latest load measured with this key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    /// Bytes on the model's device.
    pub bytes: u64,
    /// The model measured (another model with the same key reads it as "same file").
    pub model: String,
}

/// The whole memory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    #[serde(default)]
    version: u32,
    /// By footprint key (see `Estimator`): the device, the model file, the context and
    /// parallel slots, the command line.
    #[serde(default)]
    pub footprints: BTreeMap<String, Remembered>,
    /// Per device, per footprint key: what a measured process held beyond its weights and KV
    /// cache by the header's count (the runtime, compute buffers, a CUDA context).
    #[serde(default)]
    pub overheads: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Memory {
    /// Reads the memory in `dir`, or an empty one.
    pub fn load(dir: Option<&Path>) -> Memory {
        let Some(path) = dir.map(|d| d.join(FILE_NAME)) else {
            return Memory::default();
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Memory::default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read remembered footprints; starting afresh");
                return Memory::default();
            }
        };
        match serde_json::from_str::<Memory>(&text) {
            Ok(m) if m.version == VERSION => m,
            Ok(m) => {
                tracing::warn!(path = %path.display(), version = m.version, "remembered footprints of another version; starting afresh");
                Memory::default()
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "remembered footprints are corrupt; starting afresh");
                Memory::default()
            }
        }
    }

    /// The file's contents.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut m = self.clone();
        m.version = VERSION;
        serde_json::to_vec_pretty(&m).unwrap_or_default()
    }
}

/// Writes `bytes` as the memory in `dir`, creating the folder; failures are logged. Writes
/// are one at a time, so each rename carries a whole file.
pub fn save(dir: &Path, bytes: &[u8]) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let write = || -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let tmp = dir.join(format!(".{FILE_NAME}.{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    };
    if let Err(e) = write() {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remember footprints");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_memory_loads_again_and_a_corrupt_one_loads_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Memory::load(Some(dir.path())), Memory::default());
        let mut m = Memory::default();
        m.footprints.insert(
            "k".into(),
            Remembered {
                bytes: 7,
                model: "a".into(),
            },
        );
        m.overheads
            .entry("cpu".into())
            .or_default()
            .insert("k".into(), 3);
        save(&dir.path().join("nested"), &m.to_bytes());
        let back = Memory::load(Some(&dir.path().join("nested")));
        assert_eq!(back.footprints, m.footprints);
        assert_eq!(back.overheads, m.overheads);

        std::fs::write(dir.path().join(FILE_NAME), "{not json").unwrap();
        assert_eq!(Memory::load(Some(dir.path())), Memory::default());
        assert_eq!(Memory::load(None), Memory::default());
    }
}
