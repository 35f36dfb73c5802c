//! A control plane with hollow nodes, as both benchmarks set it up: `wasmkube server`, the
//! benchmark's namespace, N registered hollow nodes whose Leases are being renewed, the hollow
//! kubelet, and the one pod watch that times everything.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use wasmkube_bench::servers::Servers;

use crate::hollow::{self, Leases, Registration};
use crate::kubelet::Kubelet;
use crate::plane::Plane;
use crate::pods::{self, NAMESPACE, SlimPod};
use crate::watch::PodWatch;

/// How the hollow cluster is built and kept alive (both subcommands take these).
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct Setup {
    /// Hollow nodes to register (`hollow-00000`…), each 8 CPUs, 32Gi and 110 pods.
    #[arg(long, default_value_t = 5000)]
    pub nodes: usize,

    /// Zones the nodes are spread over round-robin (`topology.kubernetes.io/zone: zone-N`).
    #[arg(long, default_value_t = 10)]
    pub zones: usize,

    /// Pod creates in flight at once, each on its own connection.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,

    /// Node registrations (Node + Lease create) in flight at once.
    #[arg(long, default_value_t = 64)]
    pub register_concurrency: usize,

    /// Hollow kubelet status patches in flight at once.
    #[arg(long, default_value_t = 64)]
    pub status_concurrency: usize,

    /// Seconds between two renewals of one node's Lease; all nodes' renewals are spread evenly
    /// over it (node agents renew every 10 s).
    #[arg(long, default_value_t = 10)]
    pub lease_period_secs: u64,

    /// Lease renewals in flight at most. Real nodes have one each in flight, so up to N; 256
    /// keeps 5,000 nodes' 500 renewals/s on time up to ~0.5 s per renewal. A slower server
    /// sees fewer renewals than N real nodes would send, and the report shows the shortfall.
    #[arg(long, default_value_t = 256)]
    pub lease_concurrency: usize,

    /// Seconds between the last node registering and the first pod create, so the control
    /// plane's reaction to the nodes arriving is over before anything is timed.
    #[arg(long, default_value_t = 5)]
    pub settle_secs: u64,
}

impl Setup {
    pub fn validate(&self) -> Result<()> {
        if self.nodes == 0 || self.nodes > hollow::MAX_NODES {
            bail!("--nodes must be between 1 and {}", hollow::MAX_NODES);
        }
        let counts = [self.zones, self.clients, self.register_concurrency, self.status_concurrency];
        if counts.contains(&0) || self.lease_concurrency == 0 || self.lease_period_secs == 0 {
            bail!("--zones, --clients, the concurrencies and --lease-period-secs must be positive");
        }
        Ok(())
    }
}

/// The running control plane and everything that stands in for its nodes.
pub struct HollowCluster {
    pub plane: Plane,
    pub pods: Api<SlimPod>,
    pub registration: Registration,
    pub leases: Leases,
    pub kubelet: Kubelet,
    pub watch: PodWatch,
}

/// How often a long wait reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

impl HollowCluster {
    /// Starts the server with its data in `data`, registers the nodes and starts everything
    /// that keeps them alive.
    pub async fn start(setup: &Setup, wasmkube: &Path, data: &Path, servers: &mut Servers) -> Result<Self> {
        let plane = Plane::start(servers, wasmkube, data).await?;
        let namespace: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": NAMESPACE}}))?;
        Api::<Namespace>::all(plane.client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {NAMESPACE}"))?;
        eprintln!("registering {} hollow nodes ({} at a time)...", setup.nodes, setup.register_concurrency);
        let registration = hollow::register(&plane.client, setup.nodes, setup.zones, setup.register_concurrency).await;
        eprintln!(
            "{} nodes registered in {:.1} s ({} errors{})",
            registration.registered,
            registration.secs,
            registration.errors.count,
            registration.errors.examples.first().map(|e| format!(", first: {e}")).unwrap_or_default()
        );
        if registration.registered == 0 {
            bail!("no hollow node registered");
        }
        let period = Duration::from_secs(setup.lease_period_secs);
        let leases = Leases::start(&plane.client, registration.names.clone(), period, setup.lease_concurrency);
        let pods = pods::api(&plane.client);
        let (kubelet, bound) = Kubelet::start(pods.clone(), setup.status_concurrency);
        let watch = PodWatch::open(pods.clone(), bound).await?;
        tokio::time::sleep(Duration::from_secs(setup.settle_secs)).await;
        Ok(Self { plane, pods, registration, leases, kubelet, watch })
    }

    /// Waits until `count` pods are bound and Running, reporting progress every few seconds.
    /// False if `deadline` passed first.
    pub async fn wait_running(&mut self, count: usize, deadline: Instant) -> Result<bool> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.watch.wait(count, count, left.min(PROGRESS_EVERY)).await? {
                return Ok(true);
            }
            let p = self.watch.progress();
            if left <= PROGRESS_EVERY {
                eprintln!("timed out: {} of {count} bound, {} Running", p.bound, p.running);
                return Ok(false);
            }
            eprintln!("  {} of {count} bound, {} Running", p.bound, p.running);
        }
    }
}
