//! `push FILE.wasm NAME[:TAG]`: uploads a Wasm binary to the cluster registry as an OCI artifact
//! (config blob, `application/wasm` layer, manifest), through the same authenticated connection
//! as every other verb. [`push`] is also what `apply` uses for images given as local paths.

use std::io::Write;
use std::path::{Path, PathBuf};

use http::{Method, Request, StatusCode, header};
use wasmkube_api::oci::{self, Reference};

use crate::error::Error;
use crate::{ClientOptions, config};

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The Wasm binary (component or core module).
    pub file: PathBuf,
    /// Repository and tag in the cluster registry, e.g. `hello:v1` (the tag defaults to `latest`).
    #[arg(value_name = "NAME[:TAG]")]
    pub reference: String,
}

/// Why a push failed; each names the file or the step.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("error: reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("error: {path} is not a WebAssembly binary (it does not start with \\0asm)")]
    NotWasm { path: String },
    #[error("error: {0}")]
    Reference(#[from] oci::ReferenceError),
    #[error("error: push takes NAME[:TAG] in the cluster registry; {0:?} names {1}")]
    NotPushable(String, &'static str),
    #[error("Unable to connect to the server: pushing {what}: {source}")]
    Unreachable {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("error: pushing {what}: the registry answered {status}: {message}")]
    Rejected { what: String, status: StatusCode, message: String },
}

impl From<PushError> for Error {
    fn from(e: PushError) -> Self {
        Error::Request(e.to_string())
    }
}

/// What a push stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `NAME@sha256:…` of the manifest: the pinned reference pods should use.
    pub pinned: String,
    /// Size of the Wasm layer in bytes.
    pub size: usize,
}

pub async fn run(args: &PushArgs, options: &ClientOptions, out: &mut impl Write) -> Result<(), Error> {
    let wasm = read_wasm(&args.file)?;
    let reference = pushable(&args.reference)?;
    let cluster = config::connect(options).await?;
    let pushed = push(&cluster.client, &wasm, &reference).await?;
    writeln!(out, "{reference}: pushed {} ({} bytes)", pushed.pinned, pushed.size)?;
    Ok(())
}

/// Reads a file that must be a Wasm binary.
pub fn read_wasm(path: &Path) -> Result<Vec<u8>, PushError> {
    let display = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| PushError::Read { path: display.clone(), source })?;
    if !bytes.starts_with(b"\0asm") {
        return Err(PushError::NotWasm { path: display });
    }
    Ok(bytes)
}

/// A `NAME[:TAG]` to push to; digests and other registries are refused.
pub fn pushable(text: &str) -> Result<Reference, PushError> {
    let mut reference = Reference::parse(text)?;
    if reference.digest.is_some() {
        return Err(PushError::NotPushable(text.to_string(), "a digest (the registry computes it)"));
    }
    if reference.registry.is_some() {
        return Err(PushError::NotPushable(text.to_string(), "a registry host (pushes go to the cluster's)"));
    }
    reference.tag.get_or_insert_with(|| oci::DEFAULT_TAG.to_string());
    Ok(reference)
}

/// Uploads `wasm` as `reference` (blobs the registry already has are skipped).
pub async fn push(client: &kube::Client, wasm: &[u8], reference: &Reference) -> Result<Pushed, PushError> {
    let repository = &reference.repository;
    let config = oci::wasm_config(&oci::digest_of(wasm), &jiff::Timestamp::now().to_string());
    // The two blobs go up side by side: a push is on the path from a save to a hot swap.
    let (config_done, wasm_done) =
        tokio::join!(upload_blob(client, repository, &config), upload_blob(client, repository, wasm));
    config_done.and(wasm_done)?;
    let manifest = serde_json::to_vec(&oci::wasm_manifest(&config, wasm)).expect("a manifest serializes");
    let tag = reference.tag.as_deref().unwrap_or(oci::DEFAULT_TAG);
    let what = format!("the manifest of {repository}:{tag}");
    let response = send(
        client,
        Method::PUT,
        &format!("/v2/{repository}/manifests/{tag}"),
        oci::OCI_MANIFEST,
        manifest.clone(),
        &what,
    )
    .await?;
    expect(response, StatusCode::CREATED, &what)?;
    Ok(Pushed { pinned: format!("{repository}@{}", oci::digest_of(&manifest)), size: wasm.len() })
}

/// Uploads one blob unless present, in one monolithic POST with its digest (which the cluster
/// registry, the only one `push` talks to, accepts).
async fn upload_blob(client: &kube::Client, repository: &str, blob: &[u8]) -> Result<(), PushError> {
    let digest = oci::digest_of(blob);
    let what = format!("blob {digest}");
    let head = send(client, Method::HEAD, &format!("/v2/{repository}/blobs/{digest}"), "", Vec::new(), &what).await?;
    if head.0 == StatusCode::OK {
        return Ok(());
    }
    let url = format!("/v2/{repository}/blobs/uploads/?digest={}", digest.replace(':', "%3A"));
    let done = send(client, Method::POST, &url, "application/octet-stream", blob.to_vec(), &what).await?;
    expect(done, StatusCode::CREATED, &what)
}

/// Status and body of one registry request.
type Answer = (StatusCode, Vec<u8>);

async fn send(
    client: &kube::Client,
    method: Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
    what: &str,
) -> Result<Answer, PushError> {
    let mut request = Request::builder().method(method).uri(path);
    if !content_type.is_empty() {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    let request = request.body(kube::client::Body::from(body)).expect("a registry request is well formed");
    let unreachable = |source| PushError::Unreachable { what: what.to_string(), source };
    let response = client.send(request).await.map_err(unreachable)?;
    let status = response.status();
    let body = response.into_body().collect_bytes().await.map_err(unreachable)?;
    Ok((status, body.to_vec()))
}

fn expect(answer: Answer, want: StatusCode, what: &str) -> Result<(), PushError> {
    let (status, body) = answer;
    if status == want {
        return Ok(());
    }
    // The registry's error body: {"errors":[{"code","message"}]}, else whatever came back.
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
    Err(PushError::Rejected { what: what.to_string(), status, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_with_tags_can_be_pushed() {
        assert_eq!(pushable("hello").map(|r| r.to_string()).ok(), Some("hello:latest".to_string()));
        assert_eq!(pushable("team/hello:v2").map(|r| r.to_string()).ok(), Some("team/hello:v2".to_string()));
        let digest = format!("hello@sha256:{}", "0".repeat(64));
        assert!(matches!(pushable(&digest), Err(PushError::NotPushable(..))));
        assert!(matches!(pushable("ghcr.io/a/b:1"), Err(PushError::NotPushable(..))));
        assert!(matches!(pushable("Bad"), Err(PushError::Reference(_))));
    }

    #[test]
    fn files_that_are_not_wasm_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.wasm");
        std::fs::write(&path, b"#!/bin/sh\n").expect("write");
        let err = read_wasm(&path).expect_err("not wasm");
        assert!(err.to_string().contains("x.wasm"), "{err}");
        assert!(matches!(read_wasm(&dir.path().join("missing.wasm")), Err(PushError::Read { .. })));
    }
}
