//! Shared test scaffolding: a control plane on `127.0.0.1:0` over a real redb file, kube clients
//! for it, `eventually` for conditions that settle asynchronously, a bare HTTP GET for Service
//! traffic, and [`process`] for clusters of separate `wasmkube` processes.
#![allow(dead_code)]

pub mod process;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmkube_control::{ControlPlane, ControlPlaneConfig};

pub struct TestCluster {
    pub control: ControlPlane,
    pub client: kube::Client,
    pub dir: tempfile::TempDir,
}

impl TestCluster {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut ControlPlaneConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = ControlPlaneConfig::new(dir.path(), "127.0.0.1:0".parse().expect("addr"));
        config.cluster_cidr = distinct_cluster_cidr();
        tune(&mut config);
        let control = ControlPlane::start(config).await.expect("control plane starts");
        let client = client_for(&control.url(), &control.pki.ca_pem, Some(&control.pki.admin_token)).await;
        Self { control, client, dir }
    }

    pub fn url(&self) -> String {
        self.control.url()
    }

    /// A client with another token (or none).
    pub async fn client_with_token(&self, token: Option<&str>) -> kube::Client {
        client_for(&self.url(), &self.control.pki.ca_pem, token).await
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.control.shutdown();
    }
}

/// A cluster CIDR no other test cluster of this process uses: tests run concurrently, and pods of
/// two clusters must not get the same IP (their handlers would fight over `IP:port`).
fn distinct_cluster_cidr() -> wasmkube_control::controller::node_ipam::ClusterCidr {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    // 127.64.0.0/10 holds sixteen /14s, each with sixteen /18 node blocks.
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 16;
    wasmkube_control::controller::node_ipam::ClusterCidr::new(&format!("127.{}.0.0/14", 64 + 4 * n), 18)
        .expect("a valid CIDR")
}

/// A kube client trusting `ca_pem`, authenticating with `token` if given.
pub async fn client_for(url: &str, ca_pem: &str, token: Option<&str>) -> kube::Client {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let user = match token {
        Some(t) => json!({"token": t}),
        None => json!({}),
    };
    let kubeconfig: Kubeconfig = serde_json::from_value(json!({
        "clusters": [{"name": "c", "cluster": {"server": url, "certificate-authority-data": ca}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "default"}}],
        "current-context": "c",
    }))
    .expect("kubeconfig");
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("kube config");
    // Tests look at every answer as the server gave it (kube would retry a 429 for minutes).
    config.default_retry = false;
    kube::Client::try_from(config).expect("kube client")
}

/// Polls `check` until it returns `Some`, failing the test after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `Status` of a failed kube call.
pub fn status_of<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The path of a sample component, building the samples workspace once per test binary.
pub fn sample(name: &str) -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let built = BUILT.get_or_init(|| {
        let out = std::process::Command::new(env!("CARGO"))
            .args(["build", "--release", "--target", "wasm32-wasip2", "--locked"])
            .current_dir(&samples)
            .output()
            .map_err(|e| format!("running cargo for the samples: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "building the samples failed (is the target installed? `rustup target add wasm32-wasip2`):\n{}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
    samples.join("target/wasm32-wasip2/release").join(format!("{name}.wasm"))
}

/// The whole response to one HTTP/1.0 GET of `/` at `addr`.
pub async fn get(addr: SocketAddr) -> Option<String> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await.ok()?.ok()?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: hello\r\n\r\n").await.ok()?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut response)).await.ok()?.ok()?;
    Some(response)
}

/// The `pod=` the hello sample names in its answer to a GET through `addr`, if it answered.
pub async fn which_pod(addr: SocketAddr) -> Option<String> {
    let body = get(addr).await?;
    let pod = body.split_whitespace().find_map(|w| w.strip_prefix("pod="))?;
    Some(pod.to_string())
}

/// Waits (60 s at most) for the pod `name`, which runs to completion, to finish; its phase and log.
pub async fn run_to_completion(pods: &kube::Api<k8s_openapi::api::core::v1::Pod>, name: &str) -> (String, String) {
    let what = format!("pod {name} to finish");
    let phase = eventually(Duration::from_secs(60), &what, || async {
        let phase = pods.get(name).await.ok()?.status?.phase?;
        matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
    })
    .await;
    let log = pods.logs(name, &Default::default()).await.expect("logs");
    (phase, log)
}
