//! The control plane under test: `wasmkube server` alone (API server, store, scheduler and
//! controllers, no node agent) as a child process, a kube client through the kubeconfig it
//! writes, and what can be read about it from outside: its `/metrics`, its CPU and memory in
//! `/proc`, and the size of its data dir.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Serialize;
use wasmkube_bench::process::{self, Memory};
use wasmkube_bench::servers::Servers;
use wasmkube_bench::summary::round;

use crate::metrics::{self, ApiLatency, Commits, Scrape};

/// `--node-monitor-grace-period`: a day, so no hollow node goes Unknown (and has its pods
/// evicted) even if lease renewals fall behind under load. The leases are renewed anyway.
const GRACE_PERIOD_SECS: &str = "86400";

/// How long a `/metrics` scrape may take (it renders every series once).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `wasmkube server`.
pub struct Plane {
    pub pid: u32,
    pub client: kube::Client,
    pub data: PathBuf,
}

/// The server's process at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    pub cpu: Duration,
    pub bench_cpu: Duration,
    pub memory: Memory,
}

/// The start of a window.
pub struct Mark {
    reading: Reading,
    scrape: Scrape,
    at: Instant,
}

/// What the server did over a window: between two [`Reading`]s and two scrapes.
#[derive(Debug, Serialize)]
pub struct Window {
    pub wall_secs: f64,
    pub server_cpu_secs: f64,
    /// Server CPU in % of one core over the window (the machine's cores bound it).
    pub server_cpu_pct: f64,
    /// CPU of this benchmark process (hollow nodes, kubelet, clients, watch) over the window, as
    /// it shares the machine with the server.
    pub bench_cpu_secs: f64,
    /// The server's memory at the window's end.
    pub memory_end: Memory,
    pub commits: Option<Commits>,
    /// Absent if the control plane exposes no request-latency histogram.
    pub api_latency: Option<ApiLatency>,
}

impl Plane {
    /// Starts `wasmkube server` with its data in `data` (its log is `data.log`) and connects
    /// through the kubeconfig it wrote (cluster CA and admin token).
    pub async fn start(servers: &mut Servers, wasmkube: &Path, data: &Path) -> Result<Self> {
        let args = ["server", "--node-monitor-grace-period", GRACE_PERIOD_SECS];
        let started = servers.start_wasmkube(wasmkube, &args, data).await?;
        let kubeconfig =
            Kubeconfig::read_from(data.join("kubeconfig")).context("reading the kubeconfig `server` wrote")?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        let client = kube::Client::try_from(config).context("building a kube client")?;
        Ok(Self { pid: started.pid, client, data: data.to_path_buf() })
    }

    /// `GET /metrics`, parsed.
    pub async fn scrape(&self) -> Result<Scrape> {
        let request = http::Request::get("/metrics").body(Vec::new()).expect("a static request is valid");
        let text = tokio::time::timeout(SCRAPE_TIMEOUT, self.client.request_text(request))
            .await
            .context("GET /metrics timed out")?
            .context("GET /metrics")?;
        Ok(Scrape::parse(&text))
    }

    pub fn reading(&self) -> Result<Reading> {
        Ok(Reading {
            cpu: process::cpu_time(&self.pid.to_string())?,
            bench_cpu: process::cpu_time("self")?,
            memory: process::memory(self.pid)?,
        })
    }

    /// Starts a window: a reading and a scrape.
    pub async fn mark(&self) -> Result<Mark> {
        Ok(Mark { reading: self.reading()?, scrape: self.scrape().await?, at: Instant::now() })
    }

    /// Ends the window `mark` started.
    pub async fn window(&self, mark: &Mark) -> Result<Window> {
        let (end, now) = (self.reading()?, self.scrape().await?);
        let (start, scrape) = (&mark.reading, &mark.scrape);
        let wall = mark.at.elapsed().as_secs_f64();
        let cpu = (end.cpu - start.cpu).as_secs_f64();
        Ok(Window {
            wall_secs: round(wall, 2),
            server_cpu_secs: round(cpu, 2),
            server_cpu_pct: if wall > 0.0 { round(100.0 * cpu / wall, 0) } else { 0.0 },
            bench_cpu_secs: round((end.bench_cpu - start.bench_cpu).as_secs_f64(), 2),
            memory_end: end.memory,
            commits: metrics::commits(scrape, &now),
            api_latency: metrics::api_latency(scrape, &now),
        })
    }

    /// Bytes of the files under the data dir (the store, the PKI, the kubeconfig).
    pub fn data_bytes(&self) -> u64 {
        dir_bytes(&self.data)
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
