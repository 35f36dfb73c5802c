//! `pod-bench service-http`: `hello` under the same closed-loop HTTP load as `http`, once on its
//! pod IP and once through its Service, at the ClusterIP its DNS name `hello.default.svc.cluster.local`
//! resolves to on the node's cluster DNS — the path a client pod's request takes. The difference
//! is the node's L4 proxy (accept, pick an endpoint, dial, splice both ways).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use serde::Serialize;
use wasmkube_bench::connection::Endpoint;
use wasmkube_bench::load::Plan;
use wasmkube_bench::machine;
use wasmkube_bench::servers::Servers;
use wasmkube_bench::summary::{self, Header, ratio};

use crate::cluster::{self, Cluster, Inputs};
use crate::dns::lookup_a;
use crate::http::{HttpTarget, Row, Server, measure};
use crate::watch::PodWatch;

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Load connections, each HTTP/1.1 keep-alive with one request in flight.
    #[arg(long, default_value_t = 32)]
    connections: usize,

    /// Seconds of unmeasured load before each window.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,

    /// Seconds measured per path.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,

    /// Where the JSON results are written.
    #[arg(long, value_name = "PATH", default_value = "bench/results/service-http.json")]
    out: PathBuf,
}

/// The goal: through the Service at least 0.8× the requests/s of the pod IP.
const GOAL_RATIO: f64 = 0.8;
const NAME: &str = "hello.default.svc.cluster.local";

#[derive(Debug, Serialize)]
struct Workload {
    description: &'static str,
    connections: usize,
    warmup_secs: u64,
    duration_secs: u64,
    service_name: &'static str,
    cluster_ip: IpAddr,
}

#[derive(Debug, Serialize)]
struct Report {
    #[serde(flatten)]
    header: Header<Workload>,
    results: Vec<Row>,
    /// Through the Service / pod IP.
    ratio: Ratios,
    goal: &'static str,
    goal_met: bool,
}

#[derive(Debug, Serialize)]
struct Ratios {
    requests_per_sec: f64,
    p50: f64,
    p99: f64,
}

pub async fn run(options: &Options, inputs: &Inputs, dir: &Path, servers: &mut Servers) -> Result<()> {
    if options.connections == 0 || options.duration_secs == 0 {
        bail!("--connections and --duration-secs must be positive");
    }
    let machine = machine::describe(dir);
    let wasmkube = machine::version(&inputs.wasmkube).await?;
    let flags = ["--dns-addr", "127.0.0.1:0", "--dns-upstream", "none"];
    let cluster = Cluster::start_with(servers, &inputs.wasmkube, &dir.join("wasmkube"), &flags).await?;
    let dns = cluster.dns.context("`up` announced no dns= address")?;
    let mut watch = PodWatch::open(cluster.pods.clone()).await?;
    let pod = *cluster.warm_up(&mut watch, &inputs.image(), 1).await?.first().context("one pod")?;
    let cluster_ip = create_service(&cluster.client).await?;
    let resolved = wait_for_name(dns, NAME).await?;
    if resolved != cluster_ip {
        bail!("{NAME} resolves to {resolved}, not the Service's ClusterIP {cluster_ip}");
    }
    let service = SocketAddr::new(cluster_ip, 80);
    wait_until_served(service).await?;

    let plan = Plan {
        clients: options.connections,
        warmup: Duration::from_secs(options.warmup_secs),
        duration: Duration::from_secs(options.duration_secs),
    };
    let paths = [
        ("pod IP", format!("GET http://{pod}/"), pod),
        ("Service", format!("GET http://{NAME}/ (resolved on the node's DNS to {service})"), service),
    ];
    let mut results = Vec::new();
    for (name, command, addr) in paths {
        eprintln!("{name} at {addr} with {} connections...", plan.clients);
        let server = Server {
            name,
            command,
            pid: cluster.pid,
            target: Arc::new(HttpTarget { endpoint: Endpoint::plain(addr) }),
        };
        results.push(measure(&server, plan).await?);
    }
    let (direct, through) = (&results[0], &results[1]);
    let ratios = Ratios {
        requests_per_sec: ratio(through.requests_per_sec, direct.requests_per_sec),
        p50: ratio(through.latency_ms.p50, direct.latency_ms.p50),
        p99: ratio(through.latency_ms.p99, direct.latency_ms.p99),
    };
    let workload = Workload {
        description: "closed loop: each connection sends GET / when its last response has been read; \
            HTTP/1.1 keep-alive; hello on its pod IP, then through its Service's ClusterIP",
        connections: options.connections,
        warmup_secs: options.warmup_secs,
        duration_secs: options.duration_secs,
        service_name: NAME,
        cluster_ip,
    };
    let report = Report {
        header: Header::new("pod-bench service-http", machine, wasmkube, workload),
        goal: "through the Service >= 0.8x the requests/s of the pod IP",
        goal_met: ratios.requests_per_sec >= GOAL_RATIO,
        ratio: ratios,
        results,
    };
    print(&report);
    summary::write_json(&report, &options.out)?;
    eprintln!("wrote {}", options.out.display());
    Ok(())
}

/// The `hello` Service over the warm pods (label `app: pod-bench`); its ClusterIP.
async fn create_service(client: &kube::Client) -> Result<IpAddr> {
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "hello"},
        "spec": {"selector": {"app": "pod-bench"}, "ports": [{"port": 80, "targetPort": cluster::PORT}]},
    }))?;
    let created = services.create(&PostParams::default(), &service).await.context("creating the hello Service")?;
    let ip = created.spec.and_then(|s| s.cluster_ip).context("the Service got no ClusterIP")?;
    Ok(ip.parse()?)
}

/// Waits (bounded) until the DNS server at `dns` answers `name`; its first address.
pub async fn wait_for_name(dns: SocketAddr, name: &str) -> Result<IpAddr> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(ip) = lookup_a(dns, name).await?.first() {
            return Ok(*ip);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{dns} did not answer {name} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) until `addr` answers `GET /` with 200: the proxy has the Service's endpoint.
async fn wait_until_served(addr: SocketAddr) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match cluster::first_request(addr).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e.context(format!("{addr} never answered"))),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn print(report: &Report) {
    let w = &report.header.workload;
    println!(
        "service-http: GET / on {} keep-alive connections, {} s warm-up + {} s measured",
        w.connections, w.warmup_secs, w.duration_secs
    );
    println!("{:<10} {:>11} {:>8} {:>8} {:>7} {:>10}", "path", "req/s", "p50 ms", "p99 ms", "errors", "up cpu");
    for r in &report.results {
        println!(
            "{:<10} {:>11.1} {:>8.2} {:>8.2} {:>7} {:>9}%",
            r.server, r.requests_per_sec, r.latency_ms.p50, r.latency_ms.p99, r.errors, r.server_cpu_pct
        );
    }
    let r = &report.ratio;
    println!("Service / pod IP: {:.2}x req/s, p50 {:.2}x, p99 {:.2}x", r.requests_per_sec, r.p50, r.p99);
    println!("goal {}: {}", report.goal, if report.goal_met { "met" } else { "NOT met" });
}
