//! The agent: registers the Node, heartbeats, and reconciles the Pods bound to it against the
//! sandboxes it runs — start what is missing, stop what was deleted, and finish graceful deletions
//! by deleting the pod object once its containers stopped.

pub mod attach;
pub mod config;
pub mod container;
pub mod exec;
pub mod hot_swap;
pub mod ipam;
pub mod log;
pub mod metrics;
pub mod node;
pub mod node_api;
pub mod port_forward;
pub mod probe;
pub mod sandbox;
pub mod spdy;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::watcher;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use wasmkube_api::annotations::WasmSettings;
use wasmkube_api::events::Correlator;

use crate::host::{Host, PoolSize};
use ipam::PodIps;
use sandbox::{PodContext, Sandbox};

/// How to run an agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    /// The node's address (NodePorts, node-to-node traffic, `status.hostIP`).
    pub node_ip: IpAddr,
    /// Pod logs live under `DATA_DIR/pods/`.
    pub data_dir: PathBuf,
    /// `status.capacity.pods`; also sizes the instance pool.
    pub max_pods: u32,
    /// First CrashLoopBackOff delay (doubles up to 5 minutes).
    pub backoff_base: Duration,
    /// A wasi:http request still running after this is stopped and answered 504.
    pub request_deadline: Duration,
    /// A container's log file is rotated when it reaches this size; a container keeps at most
    /// its current and previous runs' logs, two files each (default 10 MiB, the kubelet's
    /// `containerLogMaxSize`).
    pub container_log_max_bytes: u64,
    /// Directories under which `hostPath` volumes are allowed (none: hostPath is refused).
    pub host_path_roots: Vec<PathBuf>,
    /// Port of the node API (pod logs) on the node IP; 0 picks a free one.
    pub node_api_port: u16,
    /// The bearer token the node API requires (the API server presents the cluster's token).
    pub api_token: String,
    /// `host:port` of the API server, which image references may name as their registry.
    pub server_authority: Option<String>,
    /// The node's cluster DNS server, through which guests' outgoing HTTP requests resolve host
    /// names (none: the host's resolver).
    pub cluster_dns: Option<crate::host::outbound::ClusterDns>,
}

impl AgentConfig {
    pub fn new(node_name: impl Into<String>, node_ip: IpAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            node_name: node_name.into(),
            node_ip,
            data_dir: data_dir.into(),
            max_pods: 10_000,
            backoff_base: Duration::from_secs(10),
            request_deadline: Duration::from_secs(30),
            container_log_max_bytes: 10 << 20,
            host_path_roots: Vec::new(),
            node_api_port: 10250,
            api_token: String::new(),
            server_authority: None,
            cluster_dns: None,
        }
    }
}

/// A running agent.
pub struct Agent {
    pub node_name: String,
    pub pod_cidr: String,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl Agent {
    /// Registers the node, waits for its pod CIDR, and starts heartbeats and pod management.
    pub async fn start(client: kube::Client, mut config: AgentConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(config.data_dir.join("pods"))?;
        let node_api = tokio::net::TcpListener::bind((config.node_ip, config.node_api_port)).await?;
        config.node_api_port = node_api.local_addr()?.port();
        let pool = PoolSize { instances: config.max_pods.clamp(100, 10_000), ..PoolSize::default() };
        let host = Host::new(&pool, Some(config.data_dir.join("compile-cache")))?;
        let pod_cidr = node::register(&client, &config).await?;
        node::renew_lease(&client, &config.node_name).await?;
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(node::heartbeat(client.clone(), config.clone(), cancel.clone()));
        let execs = exec::Execs::default();
        let metrics = Arc::new(metrics::AgentMetrics::new());
        let api = node_api::NodeApi {
            pods_dir: config.data_dir.join("pods"),
            token: config.api_token.clone(),
            execs: execs.clone(),
            metrics: metrics.clone(),
            pod_cidr: pod_cidr.parse().map_err(|e| anyhow::anyhow!("pod CIDR {pod_cidr}: {e}"))?,
        };
        tasks.spawn(api.serve(node_api, cancel.clone()));
        let manager_node = config.node_name.clone();
        let names = config.cluster_dns.clone().map(|dns| Arc::new(crate::host::outbound::Names::new(dns)));
        let proxy_client = client.clone();
        let me = crate::proxy::routes::Me { node_name: config.node_name.clone(), node_ip: config.node_ip };
        let tunnel_token = config.api_token.clone();
        let puller =
            crate::image::Puller::new(client.clone(), config.server_authority.clone(), config.data_dir.join("images"))?;
        let manager = Manager {
            client,
            host,
            puller: Arc::new(puller),
            execs,
            metrics,
            config,
            ips: PodIps::new(&pod_cidr)?,
            sandboxes: HashMap::new(),
            finished: HashSet::new(),
            events: Arc::new(Mutex::new(Correlator::default())),
            names,
        };
        tasks.spawn(manager.run(cancel.clone()));
        tasks.spawn(crate::proxy::run(proxy_client, me, tunnel_token, cancel.clone()));
        tracing::info!(%pod_cidr, "agent running");
        Ok(Self { node_name: manager_node, pod_cidr, cancel, tasks })
    }

    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    pub async fn stopped(mut self) {
        self.cancel.cancelled().await;
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Owns the sandboxes; every decision is made from the pods as they are now.
struct Manager {
    client: kube::Client,
    host: Arc<Host>,
    puller: Arc<crate::image::Puller>,
    execs: exec::Execs,
    metrics: Arc<metrics::AgentMetrics>,
    config: AgentConfig,
    ips: PodIps,
    /// Running sandboxes by pod uid.
    sandboxes: HashMap<String, Sandbox>,
    /// Pods whose containers are all done or that are being torn down: never started again.
    finished: HashSet<String>,
    /// Compacts the Events of every pod on this node (one cache, bounded for the whole agent).
    events: Arc<Mutex<Correlator>>,
    /// Resolvers for guests' outgoing requests, one per namespace.
    names: Option<Arc<crate::host::outbound::Names>>,
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

impl Manager {
    async fn run(mut self, cancel: CancellationToken) {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let selector = format!("spec.nodeName={}", self.config.node_name);
        let (store, writer) = kube::runtime::reflector::store::<Pod>();
        let mut events =
            kube::runtime::reflector(writer, watcher(pods, watcher::Config::default().fields(&selector))).boxed();
        let (done_tx, mut done_rx) = mpsc::channel::<(String, Ipv4Addr)>(64);
        // The reflector's store is complete once the initial list is in; reconcile only from then on.
        let mut listed = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                event = events.next() => match event {
                    Some(Ok(watcher::Event::InitDone)) => listed = true,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "pod watch failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    None => break,
                },
                Some((uid, ip)) = done_rx.recv() => {
                    self.ips.release(ip);
                    self.finished.remove(&uid);
                }
            }
            if !listed {
                continue;
            }
            let current: Vec<Arc<Pod>> = store.state();
            self.reconcile(&current, &done_tx);
        }
        for (_, sandbox) in self.sandboxes.drain() {
            sandbox.stop().await;
        }
    }

    fn reconcile(&mut self, pods: &[Arc<Pod>], done: &mpsc::Sender<(String, Ipv4Addr)>) {
        let present: HashSet<String> = pods.iter().map(|p| uid(p)).collect();
        for pod in pods {
            if let Some(IpAddr::V4(ip)) =
                pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse().ok())
            {
                self.ips.reserve(ip);
            }
        }
        // Pods deleted (or force-deleted) from the API: stop their sandboxes.
        let gone: Vec<String> = self.sandboxes.keys().filter(|u| !present.contains(*u)).cloned().collect();
        for u in gone {
            if let Some(sandbox) = self.sandboxes.remove(&u) {
                self.finish(u, sandbox, None, done.clone());
            }
        }
        for pod in pods {
            let u = uid(pod);
            if pod.metadata.deletion_timestamp.is_some() {
                match self.sandboxes.remove(&u) {
                    Some(sandbox) => self.finish(u, sandbox, Some(pod.clone()), done.clone()),
                    None if !self.finished.contains(&u) => {
                        self.finished.insert(u.clone());
                        tokio::spawn(delete_pod(self.client.clone(), pod.clone()));
                    }
                    None => {}
                }
                continue;
            }
            if let Some(sandbox) = self.sandboxes.get(&u) {
                sandbox.observe(pod);
                continue;
            }
            let terminal = matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
            if terminal || self.finished.contains(&u) {
                continue;
            }
            if let Err(e) = self.start(pod) {
                tracing::warn!(error = %e, pod = ?pod.metadata.name, "starting a pod failed");
            }
        }
    }

    fn start(&mut self, pod: &Pod) -> anyhow::Result<()> {
        let ip = match pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse().ok()) {
            Some(ip) => ip, // re-adopting a pod this node ran before a restart: keep its IP
            None => self.ips.allocate()?,
        };
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let grace = spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64;
        let mut snapshot = pod.clone();
        // The downward API's status.podIP/hostIP are known before the first status report.
        let status = snapshot.status.get_or_insert_with(Default::default);
        status.pod_ip = Some(ip.to_string());
        status.host_ip = Some(self.config.node_ip.to_string());
        // Admission validated the settings; anything unreadable here falls back to the defaults.
        let settings = WasmSettings::from_map(pod.metadata.annotations.as_ref()).unwrap_or_default();
        let resolver = self.names.as_ref().and_then(|names| names.for_namespace(&namespace));
        let ctx = PodContext {
            pod: snapshot,
            client: self.client.clone(),
            host: self.host.clone(),
            puller: self.puller.clone(),
            execs: self.execs.clone(),
            metrics: self.metrics.clone(),
            dir: self.config.data_dir.join("pods").join(format!("{namespace}_{name}_{}", uid(pod))),
            namespace,
            name,
            uid: uid(pod),
            node_name: self.config.node_name.clone(),
            node_ip: self.config.node_ip.to_string(),
            ip,
            restart_policy: spec.restart_policy.unwrap_or_else(|| "Always".into()),
            backoff_base: self.config.backoff_base,
            request_deadline: settings.request_timeout.unwrap_or(self.config.request_deadline),
            max_concurrency: settings.max_concurrency,
            grace: Duration::from_secs(grace),
            log_max_bytes: self.config.container_log_max_bytes,
            host_path_roots: self.config.host_path_roots.clone(),
            events: self.events.clone(),
            resolver,
        };
        self.sandboxes.insert(uid(pod), Sandbox::start(ctx, pod));
        Ok(())
    }

    /// Stops a sandbox in the background; a pod that is being deleted is then deleted for good.
    fn finish(&mut self, uid: String, sandbox: Sandbox, pod: Option<Arc<Pod>>, done: mpsc::Sender<(String, Ipv4Addr)>) {
        self.finished.insert(uid.clone());
        let client = self.client.clone();
        tokio::spawn(async move {
            let ip = sandbox.ip;
            sandbox.delete().await;
            if let Some(pod) = pod {
                delete_pod(client, pod).await;
            }
            let _ = done.send((uid, ip)).await;
        });
    }
}

/// The final delete of a pod whose containers have stopped (grace period 0, guarded by its uid).
async fn delete_pod(client: kube::Client, pod: Arc<Pod>) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
        ..DeleteParams::default()
    };
    match pods.delete(&name, &params).await {
        Ok(_) | Err(kube::Error::Api(_)) => {}
        Err(e) => tracing::warn!(error = %e, pod = %name, "deleting a stopped pod failed"),
    }
}
