//! Wasm as OCI artifacts: image references, digests and the manifest shape shared by the cluster
//! registry (control plane), `wasmkube push` (CLI) and the pulling agent.
//!
//! An artifact follows the CNCF Wasm OCI artifact layout: one layer of media type
//! `application/wasm` holding the binary, and a small config blob of type
//! `application/vnd.wasm.config.v0+json`, so tools that know that layout (oras, wkg, runwasi)
//! recognise it.

use std::fmt;

pub use oci_spec::image::ImageManifest;
use oci_spec::image::{Descriptor, Digest, ImageManifestBuilder, MediaType};
use sha2::{Digest as _, Sha256};

/// The layer media type holding a Wasm binary.
pub const WASM_LAYER: &str = "application/wasm";
/// An older layer media type still found on Wasm artifacts in the wild; pulled the same way.
pub const WASM_LAYER_LEGACY: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// The config media type of a Wasm artifact.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The media type of an OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The media type of an OCI image index (stored and served, not run).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The tag a reference without one means.
pub const DEFAULT_TAG: &str = "latest";

/// `sha256:<64 hex>` of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// The hex part of a well-formed sha256 digest.
pub fn digest_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some(hex)
}

/// A repository name as the distribution spec allows: lowercase path components separated by
/// `/`, each alphanumerics joined by `.`, `_`, `__` or runs of `-`.
pub fn valid_repository(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.split('/').all(valid_component)
}

fn valid_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    // Between alphanumeric runs: exactly one '.', one or two '_', or any number of '-'.
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty() && bytes.len() <= 128 && ok(bytes[0]) && bytes.iter().all(|&b| ok(b) || b == b'.' || b == b'-')
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("image reference {0:?} is empty")]
    Empty(String),
    #[error("image reference {0:?}: invalid repository name (lowercase letters, digits and . _ - / only)")]
    Repository(String),
    #[error("image reference {0:?}: invalid tag")]
    Tag(String),
    #[error("image reference {0:?}: invalid digest (want sha256:<64 hex digits>)")]
    Digest(String),
}

/// `[registry/]repository[:tag][@sha256:…]`, as in `hello:v1`, `hello@sha256:…` or
/// `127.0.0.1:6443/team/hello:v1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The registry host (and port), when the first path component names one.
    pub registry: Option<String>,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        let err_text = || text.to_string();
        if text.is_empty() {
            return Err(ReferenceError::Empty(err_text()));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                digest_hex(digest).ok_or_else(|| ReferenceError::Digest(err_text()))?;
                (rest, Some(digest.to_string()))
            }
            None => (text, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(rest[last_slash + i + 1..].to_string())),
            None => (rest, None),
        };
        if let Some(tag) = &tag
            && !valid_tag(tag)
        {
            return Err(ReferenceError::Tag(err_text()));
        }
        // As in Docker: the first component is a registry if it has a '.' or ':' or is localhost.
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (Some(first.to_string()), rest.to_string())
            }
            _ => (None, name.to_string()),
        };
        if !valid_repository(&repository) {
            return Err(ReferenceError::Repository(err_text()));
        }
        Ok(Self { registry, repository, tag, digest })
    }

    /// What to ask the registry for: the digest when pinned, else the tag (default `latest`).
    pub fn manifest_reference(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or(DEFAULT_TAG)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(registry) = &self.registry {
            write!(f, "{registry}/")?;
        }
        f.write_str(&self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// The config blob of a Wasm artifact (kept small: the layer it describes and when it was made).
pub fn wasm_config(layer_digest: &str, created: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "created": created,
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer_digest],
    }))
    .expect("a JSON object serializes")
}

/// The manifest of a Wasm artifact: `config` and one `application/wasm` layer.
pub fn wasm_manifest(config: &[u8], wasm: &[u8]) -> ImageManifest {
    let descriptor = |media_type: &str, bytes: &[u8]| {
        let digest: Digest = digest_of(bytes).parse().expect("a sha256 digest parses");
        Descriptor::new(MediaType::Other(media_type.into()), bytes.len() as u64, digest)
    };
    let (config, layer) = (descriptor(WASM_CONFIG, config), descriptor(WASM_LAYER, wasm));
    ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::Other(WASM_CONFIG.into()))
        .config(config)
        .layers(vec![layer])
        .build()
        .expect("every required manifest field is set")
}

/// The layer of a manifest that holds the Wasm binary: the one typed `application/wasm` (or its
/// legacy name), else the only layer there is.
pub fn wasm_layer(manifest: &ImageManifest) -> Option<&Descriptor> {
    let is_wasm = |d: &&Descriptor| {
        let t = d.media_type().to_string();
        t == WASM_LAYER || t == WASM_LAYER_LEGACY
    };
    manifest.layers().iter().find(is_wasm).or(match manifest.layers().as_slice() {
        [only] => Some(only),
        _ => None,
    })
}

/// Whether an image field names a local file for `apply` to push, rather than a reference: an
/// explicit path (`/…`, `./…`, `../…`) or anything ending in `.wasm`. `file://` URLs are left
/// alone (they are read by the agent on its own machine).
pub fn is_local_path(image: &str) -> bool {
    !image.starts_with("file://")
        && (image.starts_with('/') || image.starts_with("./") || image.starts_with("../") || image.ends_with(".wasm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_like_docker_names() {
        let d = format!("sha256:{}", "a".repeat(64));
        // (reference, registry, repository, tag, pinned by a digest)
        type Case<'a> = (String, Option<&'a str>, &'a str, Option<&'a str>, bool);
        let cases: Vec<Case> = vec![
            ("hello".into(), None, "hello", None, false),
            ("hello:v1".into(), None, "hello", Some("v1"), false),
            (format!("hello@{d}"), None, "hello", None, true),
            (format!("team/hello:v2@{d}"), None, "team/hello", Some("v2"), true),
            ("127.0.0.1:6443/hello:v1".into(), Some("127.0.0.1:6443"), "hello", Some("v1"), false),
            ("localhost/a/b".into(), Some("localhost"), "a/b", None, false),
            ("ghcr.io/x/y:1.0".into(), Some("ghcr.io"), "x/y", Some("1.0"), false),
        ];
        for (text, registry, repository, tag, pinned) in cases {
            let r = Reference::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(r.registry.as_deref(), registry, "{text}");
            assert_eq!(r.repository, repository, "{text}");
            assert_eq!(r.tag.as_deref(), tag, "{text}");
            assert_eq!(r.digest.is_some(), pinned, "{text}");
            assert_eq!(r.to_string(), text, "round trip");
        }
        assert_eq!(Reference::parse("hello").map(|r| r.manifest_reference().to_string()), Ok("latest".into()));
    }

    #[test]
    fn bad_references_say_which_part_is_wrong() {
        assert!(matches!(Reference::parse(""), Err(ReferenceError::Empty(_))));
        assert!(matches!(Reference::parse("Hello"), Err(ReferenceError::Repository(_))));
        assert!(matches!(Reference::parse("a//b"), Err(ReferenceError::Repository(_))));
        assert!(matches!(Reference::parse("hello:"), Err(ReferenceError::Tag(_))));
        assert!(matches!(Reference::parse("hello@sha256:abc"), Err(ReferenceError::Digest(_))));
    }

    #[test]
    fn repository_names_follow_the_distribution_grammar() {
        for ok in ["a", "a.b", "a_b", "a__b", "a---b", "team/app-1", "x9/y.z"] {
            assert!(valid_repository(ok), "{ok}");
        }
        for bad in ["", "A", "a..b", "a___b", "-a", "a-", "a/", "/a", "a/.b", "a b"] {
            assert!(!valid_repository(bad), "{bad}");
        }
    }

    #[test]
    fn local_paths_are_told_from_references() {
        for path in ["./hello.wasm", "../x.wasm", "/abs/hello.wasm", "samples/target/hello.wasm", "/abs/noext"] {
            assert!(is_local_path(path), "{path}");
        }
        for reference in ["hello:v1", "hello", "file:///abs/hello.wasm", "ghcr.io/a/b:1"] {
            assert!(!is_local_path(reference), "{reference}");
        }
    }

    #[test]
    fn a_wasm_manifest_points_at_its_layer() {
        let wasm = b"\0asm\x0d\0\x01\0";
        let config = wasm_config(&digest_of(wasm), "2026-01-01T00:00:00Z");
        let manifest = wasm_manifest(&config, wasm);
        let layer = wasm_layer(&manifest).expect("a wasm layer");
        assert_eq!(layer.digest().to_string(), digest_of(wasm));
        assert_eq!(layer.size(), wasm.len() as u64);
        let json = serde_json::to_value(&manifest).expect("json");
        assert_eq!(json["mediaType"], OCI_MANIFEST);
        assert_eq!(json["config"]["mediaType"], WASM_CONFIG);
        assert_eq!(json["layers"][0]["mediaType"], WASM_LAYER);
    }
}
