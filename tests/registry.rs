//! The built-in image registry over real HTTPS: the OCI distribution flows (chunked and
//! monolithic uploads, manifests by tag and digest, tags and catalog), its errors and auth, that
//! content survives a restart, `wasmkube push`, and a standard OCI tool (skopeo) pulling from it.

mod support;

use http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use support::{TestCluster, client_for};
use wasmkube_api::oci;
use wasmkube_cli::push;
use wasmkube_control::{ControlPlane, ControlPlaneConfig};

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
    }

    fn error_code(&self) -> String {
        self.json()["errors"][0]["code"].as_str().unwrap_or("").to_string()
    }
}

async fn send(client: &kube::Client, method: Method, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(kube::client::Body::from(body)).expect("request");
    let response = client.send(request).await.expect("the registry answers");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect_bytes().await.expect("body").to_vec();
    Answer { status, headers, body }
}

#[tokio::test]
async fn blobs_and_manifests_go_through_the_distribution_flows() {
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    assert_eq!(send(c, Method::GET, "/v2/", &[], vec![]).await.status, StatusCode::OK);

    // A chunked upload: POST, two PATCHes, PUT with the digest.
    let wasm = b"\0asm\x01\0\0\0 pretend this is a module".to_vec();
    let digest = oci::digest_of(&wasm);
    let started = send(c, Method::POST, "/v2/team/app/blobs/uploads/", &[], vec![]).await;
    assert_eq!(started.status, StatusCode::ACCEPTED);
    let location = started.header("location");
    assert!(location.starts_with("/v2/team/app/blobs/uploads/"), "{location}");
    let first = send(c, Method::PATCH, &location, &[], wasm[..10].to_vec()).await;
    assert_eq!((first.status, first.header("range")), (StatusCode::ACCEPTED, "0-9".to_string()));
    send(c, Method::PATCH, &location, &[], wasm[10..].to_vec()).await;
    let wrong = oci::digest_of(b"something else");
    let mismatch = send(c, Method::PUT, &format!("{location}?digest={wrong}"), &[], vec![]).await;
    assert_eq!((mismatch.status, mismatch.error_code()), (StatusCode::BAD_REQUEST, "DIGEST_INVALID".to_string()));

    let started = send(c, Method::POST, "/v2/team/app/blobs/uploads/", &[], vec![]).await;
    let location = started.header("location");
    send(c, Method::PATCH, &location, &[], wasm[..10].to_vec()).await;
    let done =
        send(c, Method::PUT, &format!("{location}?digest={}", digest.replace(':', "%3A")), &[], wasm[10..].to_vec())
            .await;
    assert_eq!(done.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&done.body));
    assert_eq!(done.header("docker-content-digest"), digest);
    let head = send(c, Method::HEAD, &format!("/v2/team/app/blobs/{digest}"), &[], vec![]).await;
    assert_eq!((head.status, head.header("content-length")), (StatusCode::OK, wasm.len().to_string()));
    assert_eq!(send(c, Method::GET, &format!("/v2/team/app/blobs/{digest}"), &[], vec![]).await.body, wasm);

    // A monolithic upload of the config blob.
    let config = oci::wasm_config(&digest, "2026-01-01T00:00:00Z");
    let config_digest = oci::digest_of(&config);
    let mono =
        send(c, Method::POST, &format!("/v2/team/app/blobs/uploads/?digest={config_digest}"), &[], config.clone())
            .await;
    assert_eq!(mono.status, StatusCode::CREATED);

    // A manifest referencing a blob never pushed is refused; a complete one is stored.
    let manifest = serde_json::to_vec(&oci::wasm_manifest(&config, &wasm)).expect("manifest");
    let incomplete = serde_json::to_vec(&oci::wasm_manifest(&config, b"\0asm other")).expect("manifest");
    let content_type = [("content-type", oci::OCI_MANIFEST)];
    let refused = send(c, Method::PUT, "/v2/team/app/manifests/v1", &content_type, incomplete).await;
    assert_eq!((refused.status, refused.error_code()), (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN".to_string()));
    let stored = send(c, Method::PUT, "/v2/team/app/manifests/v1", &content_type, manifest.clone()).await;
    assert_eq!(stored.status, StatusCode::CREATED);
    let manifest_digest = oci::digest_of(&manifest);
    assert_eq!(stored.header("docker-content-digest"), manifest_digest);

    for reference in ["v1", manifest_digest.as_str()] {
        let got = send(c, Method::GET, &format!("/v2/team/app/manifests/{reference}"), &[], vec![]).await;
        assert_eq!(got.status, StatusCode::OK, "{reference}");
        assert_eq!(got.body, manifest, "{reference}");
        assert_eq!(got.header("content-type"), oci::OCI_MANIFEST);
        assert_eq!(got.header("docker-content-digest"), manifest_digest);
    }
    let tags = send(c, Method::GET, "/v2/team/app/tags/list", &[], vec![]).await.json();
    assert_eq!(tags, json!({"name": "team/app", "tags": ["v1"]}));
    let catalog = send(c, Method::GET, "/v2/_catalog", &[], vec![]).await.json();
    assert_eq!(catalog, json!({"repositories": ["team/app"]}));

    let unknown = send(c, Method::GET, "/v2/team/app/manifests/v9", &[], vec![]).await;
    assert_eq!((unknown.status, unknown.error_code()), (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".to_string()));
    let bad_name = send(c, Method::GET, "/v2/Team/manifests/v1", &[], vec![]).await;
    assert_eq!((bad_name.status, bad_name.error_code()), (StatusCode::BAD_REQUEST, "NAME_INVALID".to_string()));
    let deleted = send(c, Method::DELETE, "/v2/team/app/manifests/v1", &[], vec![]).await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED);
    assert_eq!(send(c, Method::GET, "/v2/team/app/manifests/v1", &[], vec![]).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_registry_takes_the_token_as_bearer_or_basic_password_and_challenges_otherwise() {
    use base64::Engine as _;
    let cluster = TestCluster::start().await;
    let anonymous = cluster.client_with_token(None).await;
    let denied = send(&anonymous, Method::GET, "/v2/", &[], vec![]).await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    assert_eq!(denied.header("www-authenticate"), "Basic realm=\"wasmkube\"");
    assert_eq!(denied.error_code(), "UNAUTHORIZED");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{}", cluster.control.pki.admin_token));
    let basic = format!("Basic {basic}");
    let allowed = send(&anonymous, Method::GET, "/v2/", &[(header::AUTHORIZATION.as_str(), &basic)], vec![]).await;
    assert_eq!(allowed.status, StatusCode::OK);
    let wrong = base64::engine::general_purpose::STANDARD.encode("admin:guess");
    let wrong = format!("Basic {wrong}");
    let refused = send(&anonymous, Method::GET, "/v2/", &[(header::AUTHORIZATION.as_str(), &wrong)], vec![]).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    // Basic is for the registry only; the Kubernetes API still wants a bearer token.
    let api =
        send(&anonymous, Method::GET, "/api/v1/namespaces", &[(header::AUTHORIZATION.as_str(), &basic)], vec![]).await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn pushed_images_survive_a_restart_of_the_control_plane() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = || async {
        let control = ControlPlane::start(ControlPlaneConfig::new(dir.path(), "127.0.0.1:0".parse().expect("addr")))
            .await
            .expect("control plane starts");
        let client = client_for(&control.url(), &control.pki.ca_pem, Some(&control.pki.admin_token)).await;
        (control, client)
    };
    let wasm = b"\0asm\x01\0\0\0 survives".to_vec();
    let (control, client) = start().await;
    let pushed = push::push(&client, &wasm, &push::pushable("keeper:v1").expect("reference")).await.expect("push");
    assert!(pushed.pinned.starts_with("keeper@sha256:"), "{pushed:?}");
    control.shutdown();
    control.stopped().await;

    let (control, client) = start().await;
    let by_tag = send(&client, Method::GET, "/v2/keeper/manifests/v1", &[], vec![]).await;
    assert_eq!(by_tag.status, StatusCode::OK);
    assert_eq!(format!("keeper@{}", by_tag.header("docker-content-digest")), pushed.pinned);
    let manifest: oci::ImageManifest = serde_json::from_slice(&by_tag.body).expect("manifest");
    let layer = oci::wasm_layer(&manifest).expect("wasm layer");
    let blob = send(&client, Method::GET, &format!("/v2/keeper/blobs/{}", layer.digest()), &[], vec![]).await;
    assert_eq!(blob.body, wasm);
    // Pushing the same bytes again stores nothing new and yields the same layer.
    let again = push::push(&client, &wasm, &push::pushable("keeper:v2").expect("reference")).await.expect("push");
    assert_eq!(again.size, wasm.len());
    control.shutdown();
}

/// skopeo, a standard OCI client, reads what `wasmkube push` stored (skipped with a note when
/// skopeo is not installed, except under CI, where `.ci/run` installs it).
#[tokio::test]
async fn a_standard_oci_tool_pulls_what_push_stored() {
    let Ok(version) = std::process::Command::new("skopeo").arg("--version").output() else {
        assert!(std::env::var_os("CI").is_none(), "skopeo must be installed under CI (.ci/run installs it)");
        eprintln!("skopeo is not installed; skipping");
        return;
    };
    assert!(version.status.success());
    let cluster = TestCluster::start().await;
    let wasm = b"\0asm\x01\0\0\0 for skopeo".to_vec();
    let pushed = push::push(&cluster.client, &wasm, &push::pushable("tools/app:v1").expect("ref")).await.expect("push");
    let certs = cluster.dir.path().join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    std::fs::write(certs.join("ca.crt"), &cluster.control.pki.ca_pem).expect("ca");
    let authority = cluster.url().trim_start_matches("https://").to_string();
    let out_dir = cluster.dir.path().join("copied");
    let output = tokio::process::Command::new("skopeo")
        .args(["copy", "--src-cert-dir"])
        .arg(&certs)
        .args(["--src-creds", &format!("admin:{}", cluster.control.pki.admin_token)])
        .arg(format!("docker://{authority}/tools/app:v1"))
        .arg(format!("oci:{}:v1", out_dir.display()))
        .output()
        .await
        .expect("skopeo runs");
    assert!(output.status.success(), "skopeo copy failed: {}", String::from_utf8_lossy(&output.stderr));
    let layer = oci::digest_of(&wasm);
    let copied = std::fs::read(out_dir.join("blobs/sha256").join(&layer[7..])).expect("the wasm layer was copied");
    assert_eq!(copied, wasm);
    let manifest_digest = pushed.pinned.split('@').nth(1).expect("pinned");
    assert!(out_dir.join("blobs/sha256").join(&manifest_digest[7..]).exists(), "the manifest was copied unchanged");
}
