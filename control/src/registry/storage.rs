//! The registry's bytes on disk, content-addressed and durable:
//!
//! ```text
//! DATA_DIR/registry/blobs/sha256/<hex>                  every blob and manifest, by digest
//! DATA_DIR/registry/uploads/<uuid>                      uploads in progress
//! DATA_DIR/registry/repositories/<name>/_tags/<tag>     the manifest digest a tag points at
//! ```
//!
//! Blobs are verified against their digest before they become visible, and every file that
//! becomes visible is written to a temporary name, fsynced and renamed, so a crash leaves either
//! the old state or the new one. Blocking: call from `spawn_blocking`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use wasmkube_api::oci::digest_hex;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("the content's digest is {actual}, not {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("no such upload")]
    UploadUnknown,
    #[error("{0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, Clone)]
pub struct Storage {
    root: PathBuf,
}

impl Storage {
    pub fn open(root: PathBuf) -> io::Result<Self> {
        for dir in ["blobs/sha256", "uploads", "repositories"] {
            fs::create_dir_all(root.join(dir))?;
        }
        // Uploads interrupted by a restart are not resumable (their sessions are gone).
        for entry in fs::read_dir(root.join("uploads"))? {
            let _ = fs::remove_file(entry?.path());
        }
        Ok(Self { root })
    }

    /// The path of a blob; `None` for a malformed digest.
    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        Some(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    /// The blob's size, if present.
    pub fn blob_size(&self, digest: &str) -> Option<u64> {
        fs::metadata(self.blob_path(digest)?).ok().map(|m| m.len())
    }

    pub fn read_blob(&self, digest: &str) -> io::Result<Option<Vec<u8>>> {
        let Some(path) = self.blob_path(digest) else { return Ok(None) };
        match fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores bytes already in memory (manifests, monolithic uploads) under their digest.
    pub fn put_blob(&self, bytes: &[u8]) -> io::Result<String> {
        let digest = wasmkube_api::oci::digest_of(bytes);
        let path = self.blob_path(&digest).expect("digest_of is well formed");
        if !path.exists() {
            write_durably(&path, bytes)?;
        }
        Ok(digest)
    }

    /// Starts an upload session.
    pub fn start_upload(&self) -> io::Result<String> {
        let id = uuid::Uuid::new_v4().to_string();
        File::create(self.upload_path(&id))?;
        Ok(id)
    }

    fn upload_path(&self, id: &str) -> PathBuf {
        // Session ids are ours (uuids); anything else cannot name a file outside uploads/.
        let safe: String = id.chars().filter(|c| c.is_ascii_hexdigit() || *c == '-').collect();
        self.root.join("uploads").join(safe)
    }

    /// Bytes received so far in an upload.
    pub fn upload_size(&self, id: &str) -> Result<u64, StorageError> {
        fs::metadata(self.upload_path(id)).map(|m| m.len()).map_err(|_| StorageError::UploadUnknown)
    }

    /// Appends a chunk to an upload; returns the new size.
    pub fn append_upload(&self, id: &str, chunk: &[u8]) -> Result<u64, StorageError> {
        let mut file =
            OpenOptions::new().append(true).open(self.upload_path(id)).map_err(|_| StorageError::UploadUnknown)?;
        file.write_all(chunk)?;
        Ok(file.metadata()?.len())
    }

    /// Verifies an upload against `digest` and makes it the blob of that digest.
    pub fn finish_upload(&self, id: &str, digest: &str) -> Result<u64, StorageError> {
        let path = self.upload_path(id);
        let mut file = File::open(&path).map_err(|_| StorageError::UploadUnknown)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let actual = format!("sha256:{:x}", hasher.finalize());
        if actual != digest {
            let _ = fs::remove_file(&path);
            return Err(StorageError::DigestMismatch { expected: digest.to_string(), actual });
        }
        let size = file.metadata()?.len();
        file.sync_all()?;
        let target = self.blob_path(digest).expect("the digest was just computed");
        fs::rename(&path, &target)?;
        sync_dir(target.parent().expect("blobs live in a directory"))?;
        Ok(size)
    }

    pub fn cancel_upload(&self, id: &str) -> Result<(), StorageError> {
        fs::remove_file(self.upload_path(id)).map_err(|_| StorageError::UploadUnknown)
    }

    fn tags_dir(&self, repository: &str) -> PathBuf {
        // Repository names are validated by the caller (lowercase components without `..`); no
        // component can start with `_`, so `_tags` never collides with one.
        self.root.join("repositories").join(repository).join("_tags")
    }

    pub fn tag(&self, repository: &str, tag: &str) -> io::Result<Option<String>> {
        match fs::read_to_string(self.tags_dir(repository).join(tag)) {
            Ok(digest) => Ok(Some(digest.trim().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn create_repository(&self, repository: &str) -> io::Result<()> {
        fs::create_dir_all(self.tags_dir(repository))
    }

    pub fn set_tag(&self, repository: &str, tag: &str, digest: &str) -> io::Result<()> {
        let dir = self.tags_dir(repository);
        fs::create_dir_all(&dir)?;
        write_durably(&dir.join(tag), digest.as_bytes())
    }

    /// Removes a tag; false when it did not exist.
    pub fn delete_tag(&self, repository: &str, tag: &str) -> io::Result<bool> {
        match fs::remove_file(self.tags_dir(repository).join(tag)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The repository's tags, sorted; `None` when the repository does not exist.
    pub fn tags(&self, repository: &str) -> io::Result<Option<Vec<String>>> {
        let entries = match fs::read_dir(self.tags_dir(repository)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut tags: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.'))
            .collect();
        tags.sort();
        Ok(Some(tags))
    }

    /// Every repository with at least one tag, sorted.
    pub fn repositories(&self) -> io::Result<Vec<String>> {
        let mut found = Vec::new();
        collect_repositories(&self.root.join("repositories"), "", &mut found)?;
        found.sort();
        Ok(found)
    }
}

fn collect_repositories(dir: &Path, prefix: &str, found: &mut Vec<String>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        if !entry.file_type()?.is_dir() {
            continue;
        }
        if name == "_tags" {
            found.push(prefix.trim_end_matches('/').to_string());
        } else {
            collect_repositories(&entry.path(), &format!("{prefix}{name}/"), found)?;
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` so that after a crash the file is either absent/old or complete.
fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("registry files live in directories");
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_becomes_a_blob_only_with_the_right_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(dir.path().to_path_buf()).expect("open");
        let bytes = b"hello wasm";
        let digest = wasmkube_api::oci::digest_of(bytes);

        let id = storage.start_upload().expect("start");
        storage.append_upload(&id, b"hello ").expect("chunk");
        assert_eq!(storage.append_upload(&id, b"wasm").expect("chunk"), bytes.len() as u64);
        let wrong = wasmkube_api::oci::digest_of(b"other");
        assert!(matches!(storage.finish_upload(&id, &wrong), Err(StorageError::DigestMismatch { .. })));
        assert_eq!(storage.blob_size(&wrong), None);

        let id = storage.start_upload().expect("start");
        storage.append_upload(&id, bytes).expect("chunk");
        storage.finish_upload(&id, &digest).expect("finish");
        assert_eq!(storage.read_blob(&digest).expect("read").as_deref(), Some(&bytes[..]));
        assert!(matches!(storage.upload_size(&id), Err(StorageError::UploadUnknown)));
    }

    #[test]
    fn tags_and_repositories_are_listed_sorted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(dir.path().to_path_buf()).expect("open");
        assert_eq!(storage.tags("hello").expect("tags"), None);
        storage.set_tag("hello", "v2", "sha256:b").expect("tag");
        storage.set_tag("hello", "v1", "sha256:a").expect("tag");
        storage.set_tag("team/app", "latest", "sha256:c").expect("tag");
        assert_eq!(storage.tags("hello").expect("tags"), Some(vec!["v1".into(), "v2".into()]));
        assert_eq!(storage.tag("hello", "v1").expect("tag").as_deref(), Some("sha256:a"));
        assert_eq!(storage.repositories().expect("repos"), vec!["hello".to_string(), "team/app".to_string()]);
        assert!(storage.delete_tag("hello", "v1").expect("delete"));
        assert!(!storage.delete_tag("hello", "v1").expect("delete"));
    }
}
