//! Container images: where a container's Wasm bytes come from.
//!
//! Supported now: `file:///abs/path.wasm` and absolute paths, read from this machine (single-machine
//! development). The cluster registry (`NAME:TAG`, `NAME@sha256:…`) comes with the registry work.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {image:?}: only file:///absolute/path.wasm and absolute paths are supported so far")]
    Unsupported { image: String },
    #[error("reading image {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The local file an image reference names.
pub fn local_path(image: &str) -> Result<PathBuf, ImageError> {
    let path = image.strip_prefix("file://").unwrap_or(image);
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Err(ImageError::Unsupported { image: image.to_string() })
    }
}

/// Reads an image's bytes (blocking; call from `spawn_blocking`).
pub fn pull(image: &str) -> Result<Vec<u8>, ImageError> {
    let path = local_path(image)?;
    std::fs::read(&path).map_err(|source| ImageError::Read { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_and_absolute_paths_name_local_files() {
        assert_eq!(local_path("file:///a/b.wasm").ok(), Some(PathBuf::from("/a/b.wasm")));
        assert_eq!(local_path("/a/b.wasm").ok(), Some(PathBuf::from("/a/b.wasm")));
        assert!(local_path("hello:1").is_err());
        assert!(local_path("relative/b.wasm").is_err());
    }
}
