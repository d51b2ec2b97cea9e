//! Compiled policies cached on disk, so that a restart with unchanged policies compiles nothing.
//!
//! An artifact is named by a hash of the component's bytes and of everything in the engine that
//! shapes machine code (wasmtime's compatibility hash and our limits). Only artifacts this host
//! wrote are ever deserialized: each is stored beside a SHA-256 of its own bytes, written after
//! the artifact and checked before it is used; anything missing, partial or altered is compiled
//! again and rewritten.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

/// Counters of what the cache did.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub compiled: AtomicU64,
    pub loaded: AtomicU64,
}

/// A folder of compiled components.
#[derive(Debug)]
pub struct ArtifactCache {
    dir: PathBuf,
    stats: CacheStats,
}

/// Bytes as lower-case hex digits.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ArtifactCache {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            stats: CacheStats::default(),
        }
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    fn key(&self, engine: &wasmtime::Engine, settings_tag: &str, bytes: &[u8]) -> String {
        let mut compat = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut compat);
        let mut h = Sha256::new();
        h.update(bytes);
        h.update(compat.finish().to_le_bytes());
        h.update(settings_tag.as_bytes());
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        hex(&h.finalize())
    }

    /// The compiled component for `bytes`: from the cache when this host wrote it, else compiled
    /// now and stored.
    pub fn get_or_compile(
        &self,
        engine: &wasmtime::Engine,
        settings_tag: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<Component> {
        let key = self.key(engine, settings_tag, bytes);
        let artifact = self.dir.join(format!("{key}.cwasm"));
        let seal = self.dir.join(format!("{key}.sha256"));
        if let Some(component) = self.read(engine, &artifact, &seal) {
            self.stats.loaded.fetch_add(1, Ordering::Relaxed);
            return Ok(component);
        }
        let component = Component::new(engine, bytes)?;
        self.stats.compiled.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.write(&component, &artifact, &seal) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not cache a compiled policy");
        }
        Ok(component)
    }

    fn read(&self, engine: &wasmtime::Engine, artifact: &Path, seal: &Path) -> Option<Component> {
        let expected = std::fs::read_to_string(seal).ok()?;
        let bytes = std::fs::read(artifact).ok()?;
        if hex(&Sha256::digest(&bytes)) != expected.trim() {
            tracing::warn!(file = %artifact.display(), "cached artifact does not match its seal; recompiling");
            return None;
        }
        deserialize_own(engine, &bytes)
    }

    fn write(&self, component: &Component, artifact: &Path, seal: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let bytes = component
            .serialize()
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let tmp = artifact.with_extension("partial");
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, artifact)?;
        // The seal last: an artifact without one is never read.
        let tmp = seal.with_extension("partial");
        std::fs::write(&tmp, hex(&Sha256::digest(&bytes)))?;
        std::fs::rename(&tmp, seal)?;
        Ok(())
    }
}

/// Deserializes an artifact this host serialized itself.
#[allow(unsafe_code)]
fn deserialize_own(engine: &wasmtime::Engine, bytes: &[u8]) -> Option<Component> {
    // SAFETY: wasmtime requires the bytes to come from `serialize` of a compatible engine and
    // to be unaltered. They do: the caller read them from a file this host wrote with
    // `serialize`, named by the engine's compatibility hash, and checked them against the seal
    // (a SHA-256) the host wrote after them. wasmtime also checks the engine's compatibility
    // itself and fails on a mismatch, which lands us back in a fresh compile.
    match unsafe { Component::deserialize(engine, bytes) } {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cached artifact refused; recompiling");
            None
        }
    }
}
