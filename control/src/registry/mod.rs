//! The cluster's built-in image registry: the OCI distribution API under `/v2/`, so `wasmkube
//! push`, the agents and standard OCI tools (oras, crane, skopeo) can push and pull Wasm artifacts.
//!
//! Served: the `/v2/` check, blobs (`GET`/`HEAD`, monolithic and chunked uploads with
//! `POST`/`PATCH`/`PUT`, cross-repository mounts), manifests (`PUT`/`GET`/`HEAD`/`DELETE` by tag or
//! digest), `tags/list` and `_catalog`, with the spec's error bodies. Authentication is the API
//! server's (a bearer token, or the token as the password of HTTP Basic, which is what OCI tools
//! send). Bytes live in [`storage`]; blobs are global and content-addressed, tags per repository.

pub mod storage;

use std::io;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use wasmkube_api::oci::{self, digest_hex, valid_repository, valid_tag};

use storage::{Storage, StorageError};

/// The largest body one request may carry (a whole Wasm binary in a monolithic upload).
const MAX_CHUNK: usize = 512 << 20;
/// The largest manifest accepted (the spec suggests registries accept at least 4 MiB).
const MAX_MANIFEST: usize = 4 << 20;

/// A distribution-spec error: `{"errors":[{"code","message"}]}` with its HTTP status.
#[derive(Debug)]
pub struct RegistryError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl RegistryError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "authentication required")
    }
}

impl From<io::Error> for RegistryError {
    fn from(e: io::Error) -> Self {
        tracing::error!(error = %e, "registry storage failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", format!("storage: {e}"))
    }
}

impl From<StorageError> for RegistryError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::DigestMismatch { .. } => Self::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", e.to_string()),
            StorageError::UploadUnknown => Self::new(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN", e.to_string()),
            StorageError::Io(e) => e.into(),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let body = json!({"errors": [{"code": self.code, "message": self.message}]});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"wasmkube\""));
        }
        response
    }
}

type Result<T> = std::result::Result<T, RegistryError>;

/// What a `/v2/…` path addresses.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Base,
    Catalog,
    Tags(&'a str),
    Manifest(&'a str, &'a str),
    StartUpload(&'a str),
    Upload(&'a str, &'a str),
    Blob(&'a str, &'a str),
}

/// Splits `rest` (the path after `/v2/`) into a route. Repository names may contain `/`, so the
/// operation is found from the end.
fn route(rest: &str) -> Option<Route<'_>> {
    let last = |marker: &str| rest.rfind(marker).map(|i| (&rest[..i], &rest[i + marker.len()..]));
    let tail_ok = |tail: &str| !tail.is_empty() && !tail.contains('/');
    if rest.is_empty() {
        return Some(Route::Base);
    }
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name));
    }
    if let Some((name, reference)) = last("/manifests/").filter(|(_, t)| tail_ok(t)) {
        return Some(Route::Manifest(name, reference));
    }
    if let Some(name) = rest.strip_suffix("/blobs/uploads/").or_else(|| rest.strip_suffix("/blobs/uploads")) {
        return Some(Route::StartUpload(name));
    }
    if let Some((name, id)) = last("/blobs/uploads/").filter(|(_, t)| tail_ok(t)) {
        return Some(Route::Upload(name, id));
    }
    last("/blobs/").filter(|(_, t)| tail_ok(t)).map(|(name, digest)| Route::Blob(name, digest))
}

/// Answers every request under `/v2`.
pub async fn handle(State(storage): State<Storage>, request: Request) -> Response {
    match dispatch(storage, request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn dispatch(storage: Storage, request: Request) -> Result<Response> {
    let path = request.uri().path().to_string();
    let rest = path.strip_prefix("/v2").unwrap_or(&path).trim_start_matches('/');
    let query = Query::parse(request.uri().query());
    let method = request.method().clone();
    let headers = request.headers().clone();
    let body = request.into_body();
    let not_found = || RegistryError::new(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no registry route {path}"));
    let route = route(rest).ok_or_else(not_found)?;
    let name = match &route {
        Route::Tags(n) | Route::Manifest(n, _) | Route::StartUpload(n) | Route::Upload(n, _) | Route::Blob(n, _) => {
            Some(*n)
        }
        Route::Base | Route::Catalog => None,
    };
    if let Some(name) = name
        && !valid_repository(name)
    {
        return Err(RegistryError::new(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            format!("invalid repository name {name:?}"),
        ));
    }
    let unsupported = || {
        RegistryError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            format!("{method} is not supported on {path}"),
        )
    };
    match (route, &method) {
        (Route::Base, &Method::GET | &Method::HEAD) => Ok(json_response(StatusCode::OK, json!({}))),
        (Route::Catalog, &Method::GET) => {
            let repositories = blocking(move || storage.repositories()).await?;
            Ok(json_response(StatusCode::OK, json!({"repositories": page(repositories, &query)})))
        }
        (Route::Tags(name), &Method::GET) => {
            let repo = name.to_string();
            let tags = blocking(move || storage.tags(&repo)).await?.ok_or_else(|| {
                RegistryError::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", format!("repository {name:?} is not known"))
            })?;
            Ok(json_response(StatusCode::OK, json!({"name": name, "tags": page(tags, &query)})))
        }
        (Route::Manifest(name, reference), &Method::GET | &Method::HEAD) => {
            get_manifest(storage, name, reference, method == Method::HEAD).await
        }
        (Route::Manifest(name, reference), &Method::PUT) => {
            put_manifest(storage, name, reference, &headers, body).await
        }
        (Route::Manifest(name, reference), &Method::DELETE) => delete_manifest(storage, name, reference).await,
        (Route::Blob(_, digest), &Method::GET | &Method::HEAD) => {
            get_blob(storage, digest, method == Method::HEAD).await
        }
        (Route::StartUpload(name), &Method::POST) => start_upload(storage, name, &query, body).await,
        (Route::Upload(name, id), &Method::GET) => {
            let id_owned = id.to_string();
            let size = blocking(move || storage.upload_size(&id_owned)).await?;
            Ok(upload_response(StatusCode::NO_CONTENT, name, id, size))
        }
        (Route::Upload(name, id), &Method::PATCH) => {
            let chunk = read_body(body, MAX_CHUNK).await?;
            let id_owned = id.to_string();
            let size = blocking(move || storage.append_upload(&id_owned, &chunk)).await?;
            Ok(upload_response(StatusCode::ACCEPTED, name, id, size))
        }
        (Route::Upload(name, id), &Method::PUT) => {
            let digest = query.get("digest").ok_or_else(|| {
                RegistryError::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "the digest query parameter is required")
            })?;
            let digest = checked_digest(&digest)?;
            let chunk = read_body(body, MAX_CHUNK).await?;
            let (id_owned, d) = (id.to_string(), digest.clone());
            blocking(move || {
                if !chunk.is_empty() {
                    storage.append_upload(&id_owned, &chunk)?;
                }
                storage.finish_upload(&id_owned, &d).map(|_| ())
            })
            .await?;
            Ok(blob_created(name, &digest))
        }
        (Route::Upload(_, id), &Method::DELETE) => {
            let id = id.to_string();
            blocking(move || storage.cancel_upload(&id)).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(unsupported()),
    }
}

/// Query parameters the registry reads (`digest`, `mount`, `from`, `n`, `last`).
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Self {
        Self(
            // Percent-decoded: digests arrive as `sha256%3A…`.
            form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect(),
        )
    }

    fn get(&self, key: &str) -> Option<String> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }
}

/// `n` and `last` pagination of a sorted list.
fn page(items: Vec<String>, query: &Query) -> Vec<String> {
    let last = query.get("last");
    let n = query.get("n").and_then(|n| n.parse::<usize>().ok()).unwrap_or(usize::MAX);
    items.into_iter().filter(|item| last.as_ref().is_none_or(|l| item > l)).take(n).collect()
}

async fn blocking<T: Send + 'static, E: Into<RegistryError> + Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, E> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RegistryError::from(io::Error::other(e.to_string())))?
        .map_err(Into::into)
}

async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        RegistryError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "SIZE_INVALID",
            format!("reading the body (limit {limit} bytes): {e}"),
        )
    })
}

fn checked_digest(digest: &str) -> Result<String> {
    digest_hex(digest).map(|_| digest.to_string()).ok_or_else(|| {
        RegistryError::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", format!("{digest:?} is not a sha256 digest"))
    })
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn blob_created(name: &str, digest: &str) -> Response {
    let mut headers = HeaderMap::new();
    set(&mut headers, header::LOCATION, &format!("/v2/{name}/blobs/{digest}"));
    set(&mut headers, "docker-content-digest", digest);
    (StatusCode::CREATED, headers).into_response()
}

fn upload_response(status: StatusCode, name: &str, id: &str, size: u64) -> Response {
    let mut headers = HeaderMap::new();
    set(&mut headers, header::LOCATION, &format!("/v2/{name}/blobs/uploads/{id}"));
    // `Range` is inclusive: 0-0 for an empty upload, as registries report it.
    set(&mut headers, header::RANGE, &format!("0-{}", size.saturating_sub(1)));
    set(&mut headers, "docker-upload-uuid", id);
    set(&mut headers, header::CONTENT_LENGTH, "0");
    (status, headers).into_response()
}

fn set(headers: &mut HeaderMap, name: impl header::IntoHeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

async fn get_blob(storage: Storage, digest: &str, head: bool) -> Result<Response> {
    let digest = checked_digest(digest)?;
    let unknown = || RegistryError::new(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", format!("blob {digest} is not known"));
    let mut headers = HeaderMap::new();
    set(&mut headers, "docker-content-digest", &digest);
    set(&mut headers, header::CONTENT_TYPE, "application/octet-stream");
    if head {
        let d = digest.clone();
        let size = blocking(move || Ok::<_, io::Error>(storage.blob_size(&d))).await?.ok_or_else(unknown)?;
        set(&mut headers, header::CONTENT_LENGTH, &size.to_string());
        return Ok((StatusCode::OK, headers).into_response());
    }
    let d = digest.clone();
    let bytes = blocking(move || storage.read_blob(&d)).await?.ok_or_else(unknown)?;
    Ok((StatusCode::OK, headers, bytes).into_response())
}

async fn start_upload(storage: Storage, name: &str, query: &Query, body: Body) -> Result<Response> {
    // Cross-repository mount: blobs are global, so a known digest is simply there.
    if let Some(mount) = query.get("mount") {
        let digest = checked_digest(&mount)?;
        let (s, d) = (storage.clone(), digest.clone());
        if blocking(move || Ok::<_, io::Error>(s.blob_size(&d))).await?.is_some() {
            return Ok(blob_created(name, &digest));
        }
    }
    // Monolithic upload: the whole blob in this POST.
    if let Some(digest) = query.get("digest") {
        let digest = checked_digest(&digest)?;
        let bytes = read_body(body, MAX_CHUNK).await?;
        let stored = blocking(move || storage.put_blob(&bytes)).await?;
        if stored != digest {
            return Err(StorageError::DigestMismatch { expected: digest, actual: stored }.into());
        }
        return Ok(blob_created(name, &digest));
    }
    let id = blocking(move || storage.start_upload()).await?;
    Ok(upload_response(StatusCode::ACCEPTED, name, &id, 0))
}

/// The manifest digest a reference (tag or digest) names in a repository.
async fn resolve(storage: &Storage, name: &str, reference: &str) -> Result<Option<String>> {
    if reference.starts_with("sha256:") {
        return checked_digest(reference).map(Some);
    }
    if !valid_tag(reference) {
        return Err(RegistryError::new(StatusCode::BAD_REQUEST, "TAG_INVALID", format!("invalid tag {reference:?}")));
    }
    let (s, n, r) = (storage.clone(), name.to_string(), reference.to_string());
    blocking(move || s.tag(&n, &r)).await
}

async fn get_manifest(storage: Storage, name: &str, reference: &str, head: bool) -> Result<Response> {
    let unknown = || {
        RegistryError::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("manifest {name}:{reference} is not known"),
        )
    };
    let digest = resolve(&storage, name, reference).await?.ok_or_else(unknown)?;
    let d = digest.clone();
    let bytes = blocking(move || storage.read_blob(&d)).await?.ok_or_else(unknown)?;
    let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("mediaType").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_else(|| oci::OCI_MANIFEST.to_string());
    let mut headers = HeaderMap::new();
    set(&mut headers, "docker-content-digest", &digest);
    set(&mut headers, header::CONTENT_TYPE, &media_type);
    set(&mut headers, header::CONTENT_LENGTH, &bytes.len().to_string());
    if head {
        return Ok((StatusCode::OK, headers).into_response());
    }
    Ok((StatusCode::OK, headers, bytes).into_response())
}

async fn put_manifest(
    storage: Storage,
    name: &str,
    reference: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let invalid = |message: String| RegistryError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", message);
    let bytes = read_body(body, MAX_MANIFEST).await?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("the manifest is not JSON: {e}")))?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media_type = value.get("mediaType").and_then(|t| t.as_str()).unwrap_or(content_type).to_string();
    // Image manifests must reference blobs the registry has; indexes are stored as they are.
    let referenced: Vec<String> = if media_type == oci::OCI_INDEX {
        Vec::new()
    } else {
        let manifest: oci_spec::image::ImageManifest =
            serde_json::from_value(value).map_err(|e| invalid(format!("not an OCI image manifest: {e}")))?;
        std::iter::once(manifest.config()).chain(manifest.layers()).map(|d| d.digest().to_string()).collect()
    };
    let (s, refs) = (storage.clone(), referenced);
    let missing =
        blocking(move || Ok::<_, io::Error>(refs.into_iter().filter(|d| s.blob_size(d).is_none()).collect::<Vec<_>>()))
            .await?;
    if let Some(first) = missing.first() {
        return Err(RegistryError::new(
            StatusCode::BAD_REQUEST,
            "MANIFEST_BLOB_UNKNOWN",
            format!("the manifest references blob {first}, which was not pushed"),
        ));
    }
    let digest = oci::digest_of(&bytes);
    let tag = if reference.starts_with("sha256:") {
        if checked_digest(reference)? != digest {
            return Err(RegistryError::new(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                format!("the manifest's digest is {digest}, not {reference}"),
            ));
        }
        None
    } else if valid_tag(reference) {
        Some(reference.to_string())
    } else {
        return Err(RegistryError::new(StatusCode::BAD_REQUEST, "TAG_INVALID", format!("invalid tag {reference:?}")));
    };
    let (n, d) = (name.to_string(), digest.clone());
    blocking(move || {
        storage.put_blob(&bytes)?;
        match tag {
            Some(tag) => storage.set_tag(&n, &tag, &d),
            // A manifest pushed by digest alone still makes its repository known.
            None => storage.create_repository(&n),
        }
    })
    .await?;
    let mut headers = HeaderMap::new();
    set(&mut headers, header::LOCATION, &format!("/v2/{name}/manifests/{digest}"));
    set(&mut headers, "docker-content-digest", &digest);
    Ok((StatusCode::CREATED, headers).into_response())
}

async fn delete_manifest(storage: Storage, name: &str, reference: &str) -> Result<Response> {
    let unknown = || {
        RegistryError::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("manifest {name}:{reference} is not known"),
        )
    };
    let (n, r) = (name.to_string(), reference.to_string());
    // By tag: the tag goes. By digest: every tag of the repository pointing at it goes (the
    // content stays, as other repositories may share it).
    let removed = blocking(move || -> io::Result<bool> {
        if !r.starts_with("sha256:") {
            return storage.delete_tag(&n, &r);
        }
        let mut any = false;
        for tag in storage.tags(&n)?.unwrap_or_default() {
            if storage.tag(&n, &tag)?.as_deref() == Some(r.as_str()) {
                any |= storage.delete_tag(&n, &tag)?;
            }
        }
        Ok(any)
    })
    .await?;
    if removed { Ok(StatusCode::ACCEPTED.into_response()) } else { Err(unknown()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_from_the_end_so_names_may_contain_slashes() {
        let d = "sha256:abc";
        let cases = [
            ("", Some(Route::Base)),
            ("_catalog", Some(Route::Catalog)),
            ("a/b/tags/list", Some(Route::Tags("a/b"))),
            ("hello/manifests/v1", Some(Route::Manifest("hello", "v1"))),
            ("team/blobs/app/manifests/latest", Some(Route::Manifest("team/blobs/app", "latest"))),
            ("hello/blobs/uploads/", Some(Route::StartUpload("hello"))),
            ("hello/blobs/uploads", Some(Route::StartUpload("hello"))),
            ("hello/blobs/uploads/1234-ab", Some(Route::Upload("hello", "1234-ab"))),
            ("hello/blobs/sha256:abc", Some(Route::Blob("hello", d))),
            ("hello/other", None),
        ];
        for (path, want) in cases {
            assert_eq!(route(path), want, "{path}");
        }
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let q = Query::parse(Some("digest=sha256%3Aab&n=2&mount=x"));
        assert_eq!(q.get("digest").as_deref(), Some("sha256:ab"));
        assert_eq!(q.get("n").as_deref(), Some("2"));
        assert_eq!(q.get("from"), None);
    }

    #[test]
    fn pages_continue_after_last() {
        let items: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        assert_eq!(page(items.clone(), &Query::parse(Some("n=2"))), vec!["a", "b"]);
        assert_eq!(page(items, &Query::parse(Some("n=2&last=b"))), vec!["c", "d"]);
    }
}
