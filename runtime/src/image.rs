//! Container images: where a container's Wasm bytes come from.
//!
//! - `NAME[:TAG]` and `NAME@sha256:…` (optionally prefixed with the API server's `host:port`) are
//!   pulled from the cluster registry through the API connection: the manifest, then its
//!   `application/wasm` layer, each verified against its sha256 digest.
//! - `file:///abs/path.wasm` and absolute paths are read from this machine (single-machine
//!   development).
//!
//! Verified blobs are kept under `DATA_DIR/images/sha256/<hex>`, so a digest is fetched once per
//! node: pinned references need no network at all once pulled, tags cost one manifest request.

use std::path::PathBuf;

use http::{Method, Request, StatusCode, header};
use wasmkube_api::oci::{self, Reference, ReferenceError, digest_hex};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(
        "image {image:?}: registry {registry} is not the cluster registry; only images pushed to the cluster (wasmkube push, apply) and file:// paths can be pulled"
    )]
    External { image: String, registry: String },
    #[error("image {image:?} not found in the cluster registry: {message}")]
    NotFound { image: String, message: String },
    #[error("pulling image {image:?}: the registry answered {status}: {message}")]
    Registry { image: String, status: StatusCode, message: String },
    #[error("pulling image {image:?}: {source}")]
    Unreachable {
        image: String,
        #[source]
        source: kube::Error,
    },
    #[error("image {image:?}: content digest is {actual}, expected {expected}")]
    DigestMismatch { image: String, expected: String, actual: String },
    #[error("image {image:?}: the manifest is not an OCI image manifest: {message}")]
    BadManifest { image: String, message: String },
    #[error("image {image:?} has no application/wasm layer")]
    NoWasmLayer { image: String },
    #[error("reading image {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    /// Whether retrying later may help (the registry is down, the image not pushed yet), as
    /// opposed to a reference that can never work.
    pub fn is_transient(&self) -> bool {
        !matches!(self, ImageError::Reference(_) | ImageError::External { .. })
    }
}

/// The local file an image reference names, if it names one.
pub fn local_path(image: &str) -> Option<PathBuf> {
    let path = image.strip_prefix("file://").unwrap_or(image);
    path.starts_with('/').then(|| PathBuf::from(path))
}

/// A pulled image.
pub struct Pulled {
    pub bytes: Vec<u8>,
    /// `status.containerStatuses[].imageID`: `NAME@<manifest digest>` for registry images, the
    /// content digest for files.
    pub image_id: String,
    /// Whether the bytes came from the node's image cache rather than the network or a file.
    pub cached: bool,
}

/// Pulls images for one node.
pub struct Puller {
    client: kube::Client,
    /// `host:port` of the API server: references naming it mean the cluster registry.
    cluster_authority: Option<String>,
    cache_dir: PathBuf,
}

impl Puller {
    pub fn new(client: kube::Client, cluster_authority: Option<String>, cache_dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(cache_dir.join("sha256"))?;
        Ok(Self { client, cluster_authority, cache_dir })
    }

    pub async fn pull(&self, image: &str) -> Result<Pulled, ImageError> {
        if let Some(path) = local_path(image) {
            let bytes = tokio::fs::read(&path).await.map_err(|source| ImageError::Read { path, source })?;
            let image_id = oci::digest_of(&bytes);
            return Ok(Pulled { bytes, image_id, cached: false });
        }
        let reference = Reference::parse(image)?;
        if let Some(registry) = &reference.registry
            && Some(registry) != self.cluster_authority.as_ref()
        {
            return Err(ImageError::External { image: image.to_string(), registry: registry.clone() });
        }
        let (manifest_digest, manifest, manifest_cached) = self.manifest(image, &reference).await?;
        let layer = oci::wasm_layer(&manifest).ok_or_else(|| ImageError::NoWasmLayer { image: image.to_string() })?;
        let layer_digest = layer.digest().to_string();
        let (bytes, layer_cached) = match self.cached(&layer_digest).await {
            Some(bytes) => (bytes, true),
            None => {
                let bytes =
                    self.get(image, &format!("/v2/{}/blobs/{layer_digest}", reference.repository), "*/*").await?;
                self.verify_and_keep(image, &layer_digest, &bytes).await?;
                (bytes, false)
            }
        };
        Ok(Pulled {
            bytes,
            image_id: format!("{}@{manifest_digest}", reference.repository),
            cached: manifest_cached && layer_cached,
        })
    }

    /// The manifest a reference names: from the cache when pinned by a digest already pulled,
    /// else from the registry (verified when pinned).
    async fn manifest(
        &self,
        image: &str,
        reference: &Reference,
    ) -> Result<(String, oci::ImageManifest, bool), ImageError> {
        let parse = |bytes: &[u8]| {
            serde_json::from_slice::<oci::ImageManifest>(bytes)
                .map_err(|e| ImageError::BadManifest { image: image.to_string(), message: e.to_string() })
        };
        if let Some(digest) = &reference.digest
            && let Some(bytes) = self.cached(digest).await
        {
            return Ok((digest.clone(), parse(&bytes)?, true));
        }
        let path = format!("/v2/{}/manifests/{}", reference.repository, reference.manifest_reference());
        let bytes = self.get(image, &path, oci::OCI_MANIFEST).await?;
        let digest = oci::digest_of(&bytes);
        if let Some(pinned) = &reference.digest {
            if *pinned != digest {
                return Err(ImageError::DigestMismatch {
                    image: image.to_string(),
                    expected: pinned.clone(),
                    actual: digest,
                });
            }
            self.verify_and_keep(image, pinned, &bytes).await?;
        }
        Ok((digest, parse(&bytes)?, false))
    }

    async fn get(&self, image: &str, path: &str, accept: &str) -> Result<Vec<u8>, ImageError> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(header::ACCEPT, accept)
            .body(kube::client::Body::empty())
            .expect("a GET with a path and one header is a valid request");
        let unreachable = |source| ImageError::Unreachable { image: image.to_string(), source };
        let response = self.client.send(request).await.map_err(unreachable)?;
        let status = response.status();
        let body = response.into_body().collect_bytes().await.map_err(unreachable)?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        // The registry's error body: {"errors":[{"code","message"}]}.
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        Err(if status == StatusCode::NOT_FOUND {
            ImageError::NotFound { image: image.to_string(), message }
        } else {
            ImageError::Registry { image: image.to_string(), status, message }
        })
    }

    fn cache_path(&self, digest: &str) -> Option<PathBuf> {
        Some(self.cache_dir.join("sha256").join(digest_hex(digest)?))
    }

    async fn cached(&self, digest: &str) -> Option<Vec<u8>> {
        tokio::fs::read(self.cache_path(digest)?).await.ok()
    }

    /// Checks `bytes` against `digest` and keeps them in the node's image cache.
    async fn verify_and_keep(&self, image: &str, digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
        let actual = oci::digest_of(bytes);
        if actual != digest {
            return Err(ImageError::DigestMismatch { image: image.to_string(), expected: digest.to_string(), actual });
        }
        if let Some(path) = self.cache_path(digest) {
            // Written under a temporary name and renamed, so a crash never leaves a torn blob that
            // a later pull would trust.
            let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
            let written = async {
                tokio::fs::write(&tmp, bytes).await?;
                tokio::fs::rename(&tmp, &path).await
            };
            if let Err(e) = written.await {
                tracing::warn!(error = %e, %digest, "keeping a pulled image failed");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_and_absolute_paths_name_local_files() {
        assert_eq!(local_path("file:///a/b.wasm"), Some(PathBuf::from("/a/b.wasm")));
        assert_eq!(local_path("/a/b.wasm"), Some(PathBuf::from("/a/b.wasm")));
        assert_eq!(local_path("hello:1"), None);
        assert_eq!(local_path("relative/b.wasm"), None);
    }
}
