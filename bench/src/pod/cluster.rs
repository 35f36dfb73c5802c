//! One `wasmkube up` under test: starting it as a child with a node called `bench`, a kube client
//! through the kubeconfig it writes, the `hello` pods every benchmark creates, and a first
//! request to a pod.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::StreamExt;
use http::{Request, StatusCode, header};
use http_body_util::Full;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use wasmkube_bench::connection::Endpoint;
use wasmkube_bench::servers::Servers;
pub use wasmkube_bench::summary::Failures;

use crate::watch::PodWatch;

/// The node `up` registers; every pod is bound to it (there is no scheduler to wait for).
pub const NODE: &str = "bench";
/// The port `hello` listens on, on its pod IP.
pub const PORT: u16 = 8080;

/// The binaries a run uses, as absolute paths (a `file://` image must be absolute).
#[derive(Debug, Clone)]
pub struct Inputs {
    pub wasmkube: PathBuf,
    pub hello: PathBuf,
}

impl Inputs {
    pub fn resolve(wasmkube: &Path, hello: &Path) -> Result<Self> {
        let wasmkube = wasmkube
            .canonicalize()
            .with_context(|| format!("{}: build it with `cargo build --release -p wasmkube`", wasmkube.display()))?;
        let hello = hello
            .canonicalize()
            .with_context(|| format!("{}: build the samples with `just samples` (or pass --hello)", hello.display()))?;
        Ok(Self { wasmkube, hello })
    }

    /// The pods' image: the agent reads the file from its own machine.
    pub fn image(&self) -> String {
        format!("file://{}", self.hello.display())
    }
}

/// A running `wasmkube up`, a client for it, and one for its pods in `default`.
pub struct Cluster {
    pub pid: u32,
    pub client: kube::Client,
    pub pods: Api<Pod>,
    /// Its node's cluster DNS server.
    pub dns: Option<SocketAddr>,
}

impl Cluster {
    /// Starts `up` with its data in `dir` (its log is `dir.log`) and connects to it through the
    /// kubeconfig it wrote, which holds the cluster CA and the admin token.
    pub async fn start(servers: &mut Servers, wasmkube: &Path, dir: &Path) -> Result<Self> {
        Self::start_with(servers, wasmkube, dir, &[]).await
    }

    /// [`Cluster::start`] with more flags for `up`.
    pub async fn start_with(servers: &mut Servers, wasmkube: &Path, dir: &Path, flags: &[&str]) -> Result<Self> {
        let mut args = vec!["up", "--node-name", NODE, "--node-api-port", "0"];
        args.extend_from_slice(flags);
        let started = servers.start_wasmkube(wasmkube, &args, dir).await?;
        let dns = started.announced.split_whitespace().find_map(|w| w.strip_prefix("dns=")?.parse().ok());
        let kubeconfig = Kubeconfig::read_from(dir.join("kubeconfig")).context("reading the kubeconfig `up` wrote")?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        let client = kube::Client::try_from(config).context("building a kube client")?;
        Ok(Self { pid: started.pid, pods: Api::namespaced(client.clone(), "default"), client, dns })
    }

    /// Creates `count` pods named `warm-N`, waits (on `watch`) until they run, and sends each one
    /// request, so the component is compiled, cached and instantiated at least once before
    /// anything is measured. Returns their `IP:port`s.
    pub async fn warm_up(&self, watch: &mut PodWatch, image: &str, count: usize) -> Result<Vec<SocketAddr>> {
        let names: Vec<String> = (0..count).map(|i| format!("warm-{i}")).collect();
        let (created, failures) = create_pods(&self.pods, image, names.clone(), Pace::SEQUENTIAL).await;
        if failures.count > 0 {
            bail!("creating warm-up pods failed: {:?}", failures.examples);
        }
        watch.wait_ready(watch.ready_count() + created.len(), Duration::from_secs(120)).await?;
        let ready = watch.ready();
        let mut addrs = Vec::new();
        for name in &names {
            let ip = ready.get(name).and_then(|r| r.ip).with_context(|| format!("{name} is ready without a pod IP"))?;
            let addr = SocketAddr::new(ip, PORT);
            first_request(addr).await.with_context(|| format!("the first request to {name} at {addr}"))?;
            addrs.push(addr);
        }
        Ok(addrs)
    }
}

/// A `hello` pod bound to the bench node, listening on its pod IP at [`PORT`].
pub fn hello_pod(name: &str, image: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": "pod-bench" } },
        "spec": {
            "nodeName": NODE,
            "containers": [{ "name": "hello", "image": image, "ports": [{ "containerPort": PORT }] }],
        },
    }))
    .expect("a static pod manifest deserializes")
}

/// How creates are sent.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Creates in flight at once (1: each is sent when the previous one is answered).
    pub concurrency: usize,
    /// If set, create `i` is not sent before `i / rate` seconds after the first.
    pub rate: Option<f64>,
}

impl Pace {
    pub const SEQUENTIAL: Pace = Pace { concurrency: 1, rate: None };
}

/// One pod the API accepted.
#[derive(Debug)]
pub struct Created {
    pub name: String,
    /// Just before the create request was handed to the client.
    pub sent: Instant,
    /// When its `201 Created` had been read.
    pub answered: Instant,
}

/// Creates a hello pod per name at `pace`; failed creates are counted, not retried.
pub async fn create_pods(pods: &Api<Pod>, image: &str, names: Vec<String>, pace: Pace) -> (Vec<Created>, Failures) {
    let start = Instant::now();
    let results: Vec<_> = futures::stream::iter(names.into_iter().enumerate())
        .map(|(i, name)| {
            let pod = hello_pod(&name, image);
            async move {
                if let Some(rate) = pace.rate {
                    tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / rate)).into()).await;
                }
                let sent = Instant::now();
                let result = pods.create(&PostParams::default(), &pod).await;
                (name, sent, Instant::now(), result)
            }
        })
        .buffer_unordered(pace.concurrency.max(1))
        .collect()
        .await;
    let mut created = Vec::with_capacity(results.len());
    let mut failures = Failures::default();
    for (name, sent, answered, result) in results {
        match result {
            Ok(_) => created.push(Created { name, sent, answered }),
            Err(e) => failures.record(format!("{name}: {e}")),
        }
    }
    (created, failures)
}

/// A request to a pod that has not been sent one before, on a new connection: the time from
/// starting to connect to having read the whole `200` response, and the body.
pub async fn first_request(addr: SocketAddr) -> Result<(Duration, Bytes)> {
    let started = Instant::now();
    let mut connection = Endpoint::plain(addr).connect().await?;
    let (status, body) = connection.send(get_root(addr)).await?;
    let elapsed = started.elapsed();
    if status != StatusCode::OK {
        bail!("{addr} answered {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok((elapsed, body))
}

/// `GET /` with the `Host` header a client would send to `addr`.
pub fn get_root(addr: SocketAddr) -> Request<Full<Bytes>> {
    Request::get("/").header(header::HOST, addr.to_string()).body(Full::default()).expect("a static request is valid")
}

/// The pod's IP, once it has one.
pub fn pod_ip(pod: &Pod) -> Option<IpAddr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}
