//! The on-disk compile cache: compiled code per (binary digest, engine fingerprint), so an agent
//! restart (or a second pod of the same image) loads machine code in microseconds instead of
//! compiling for hundreds of milliseconds.
//!
//! Files are `<dir>/<sha256 hex>-<engine fingerprint>.cwasm`, written atomically (temp + rename)
//! by this agent only, from `serialize()` of an engine with the same settings (the fingerprint
//! covers wasmtime's version and every compilation-relevant setting).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::component::Component;
use wasmtime::{Engine, Module};

/// Where a workload's code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Already loaded by this agent.
    Memory,
    /// Loaded from the on-disk cache.
    Disk,
    /// Compiled now (and written to the cache).
    Compiled,
}

impl Source {
    pub fn describe(self) -> &'static str {
        match self {
            Source::Memory => "already loaded",
            Source::Disk => "from the compile cache",
            Source::Compiled => "compiled",
        }
    }
}

/// A compile cache directory for one engine.
pub struct DiskCache {
    dir: PathBuf,
    fingerprint: String,
}

impl DiskCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self { dir, fingerprint: format!("{:016x}", hasher.finish()) })
    }

    fn path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.join(format!("{hex}-{}.cwasm", self.fingerprint))
    }

    /// Whether code for `digest` is cached (it may still fail to load).
    pub fn has(&self, digest: &str) -> bool {
        self.path(digest).exists()
    }

    /// The cached component for `digest`, if any. A file that does not load is removed.
    pub fn component(&self, engine: &Engine, digest: &str) -> Option<Component> {
        // SAFETY: `deserialize_file` trusts that the file holds code wasmtime produced for a
        // compatible engine. This file was written by `store` below, from `serialize()` of an
        // engine whose compatibility fingerprint is in the file name, into the agent's own data
        // directory; wasmtime additionally checks its header and version and refuses mismatches.
        #[allow(unsafe_code)]
        self.load(digest, |path| unsafe { Component::deserialize_file(engine, path) })
    }

    /// The cached core module for `digest`, if any (see [`DiskCache::component`]).
    pub fn module(&self, engine: &Engine, digest: &str) -> Option<Module> {
        // SAFETY: as for components above: written only by `store`, fingerprint-matched,
        // header- and version-checked by wasmtime.
        #[allow(unsafe_code)]
        self.load(digest, |path| unsafe { Module::deserialize_file(engine, path) })
    }

    fn load<T>(&self, digest: &str, deserialize: impl FnOnce(&Path) -> wasmtime::Result<T>) -> Option<T> {
        let path = self.path(digest);
        if !path.exists() {
            return None;
        }
        match deserialize(&path) {
            Ok(code) => Some(code),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), path = %path.display(), "discarding an unusable compile cache entry");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Writes serialized code for `digest` (best effort: a failure only costs a recompile).
    pub fn store(&self, digest: &str, code: wasmtime::Result<Vec<u8>>) {
        let path = self.path(digest);
        let tmp = path.with_extension("tmp");
        let written = code.map_err(|e| std::io::Error::other(format!("{e:#}"))).and_then(|bytes| {
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &path)
        });
        if let Err(e) = written {
            tracing::warn!(error = %e, path = %path.display(), "writing the compile cache failed");
        }
    }
}
