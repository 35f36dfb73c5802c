//! `pod-bench http`: requests/s and latency of the `hello` component served three ways in one
//! run, under the same closed-loop load: by wasmkube (a hello pod, on its pod IP), by
//! `wasmtime serve` (the reference for serving one wasi:http component), and by a native hyper
//! server answering the same body ([`crate::native`]). All three are child processes and run for
//! the whole run; they are measured one after another.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde::Serialize;
use tokio::process::Command;
use wasmkube_bench::connection::Endpoint;
use wasmkube_bench::load::{self, LoadTarget, Plan, Sample};
use wasmkube_bench::machine::{self, Machine};
use wasmkube_bench::process;
use wasmkube_bench::servers::{self, Servers};
use wasmkube_bench::summary::{self, Latency, ratio, round};

use crate::cluster::{self, Cluster, Inputs};
use crate::native;
use crate::watch::PodWatch;

#[derive(Debug, clap::Args)]
pub struct Options {
    /// The `wasmtime` CLI (48.x) whose `serve` is compared with; skipped, with a note, if missing.
    #[arg(long, value_name = "PATH", default_value = "/opt/wasmtime-48/bin/wasmtime")]
    wasmtime: PathBuf,

    /// Load connections, each HTTP/1.1 keep-alive with one request in flight.
    #[arg(long, default_value_t = 32)]
    connections: usize,

    /// Seconds of unmeasured load before each server's window.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,

    /// Seconds measured per server.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,

    /// Where the JSON results are written.
    #[arg(long, value_name = "PATH", default_value = "bench/results/pod-http.json")]
    out: PathBuf,
}

/// The goal: wasmkube serves at least 0.95× the requests/s of `wasmtime serve`.
const GOAL_RATIO: f64 = 0.95;

#[derive(Debug, Serialize)]
struct Report {
    benchmark: &'static str,
    date: String,
    machine: Machine,
    versions: Versions,
    workload: Workload,
    results: Vec<Row>,
    /// Why `wasmtime serve` was not measured, if it was not.
    wasmtime_skipped: Option<String>,
    /// wasmkube / `wasmtime serve`.
    ratio: Option<Ratio>,
    goal: Goal,
}

#[derive(Debug, Serialize)]
struct Versions {
    wasmkube: String,
    wasmtime: Option<String>,
}

#[derive(Debug, Serialize)]
struct Workload {
    description: &'static str,
    connections: usize,
    warmup_secs: u64,
    duration_secs: u64,
    component: PathBuf,
}

/// One server.
#[derive(Debug, Serialize)]
pub struct Row {
    pub server: &'static str,
    /// How it was run.
    pub command: String,
    pub addr: SocketAddr,
    /// The body of a `GET /` before the load, to show all three answer alike.
    pub body: String,
    pub requests: usize,
    pub requests_per_sec: f64,
    pub latency_ms: Latency,
    pub errors: u64,
    pub error_examples: Vec<String>,
    /// CPU used by the server process (for wasmkube: all of `up`) and by this load generator, in
    /// % of one core, warm-up included.
    pub server_cpu_pct: f64,
    pub bench_cpu_pct: f64,
}

#[derive(Debug, Serialize)]
struct Ratio {
    requests_per_sec: f64,
    p50: f64,
    p99: f64,
}

#[derive(Debug, Serialize)]
struct Goal {
    description: &'static str,
    /// Unknown if `wasmtime serve` was not measured.
    met: Option<bool>,
}

/// A server under test as the load sees it.
pub struct Server {
    pub name: &'static str,
    pub command: String,
    pub pid: u32,
    pub target: Arc<HttpTarget>,
}

/// `GET /` on keep-alive connections to one address.
pub struct HttpTarget {
    pub endpoint: Endpoint,
}

impl LoadTarget for HttpTarget {
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn request(&self, _name: &str) -> Request<Full<Bytes>> {
        cluster::get_root(self.endpoint.addr)
    }

    fn success(&self) -> StatusCode {
        StatusCode::OK
    }
}

pub async fn run(options: &Options, inputs: &Inputs, dir: &Path, servers: &mut Servers) -> Result<()> {
    if options.connections == 0 || options.duration_secs == 0 {
        bail!("--connections and --duration-secs must be positive");
    }
    let machine = machine::describe(dir);
    let mut versions = Versions { wasmkube: machine::version(&inputs.wasmkube).await?, wasmtime: None };
    let mut under_test = vec![start_wasmkube(inputs, dir, servers).await?];
    let wasmtime_skipped = if options.wasmtime.is_file() {
        versions.wasmtime = Some(machine::version(&options.wasmtime).await?);
        under_test.push(start_wasmtime(&options.wasmtime, inputs, dir, servers).await?);
        None
    } else {
        let why = format!("{} not found: `wasmtime serve` was not measured", options.wasmtime.display());
        eprintln!("warning: {why}");
        Some(why)
    };
    under_test.push(start_native(dir, servers).await?);

    let plan = Plan {
        clients: options.connections,
        warmup: Duration::from_secs(options.warmup_secs),
        duration: Duration::from_secs(options.duration_secs),
    };
    let mut results = Vec::new();
    for server in &under_test {
        eprintln!("{} at {} with {} connections...", server.name, server.target.endpoint.addr, plan.clients);
        results.push(measure(server, plan).await?);
    }
    let ratio = ratio_of(&results);
    let report = Report {
        benchmark: "pod-bench http",
        date: jiff::Timestamp::now().to_string(),
        machine,
        versions,
        workload: Workload {
            description: "closed loop: each connection sends GET / when its last response has been read; \
                HTTP/1.1 keep-alive, one connection per client",
            connections: options.connections,
            warmup_secs: options.warmup_secs,
            duration_secs: options.duration_secs,
            component: inputs.hello.clone(),
        },
        goal: Goal {
            description: "wasmkube >= 0.95x the requests/s of wasmtime serve",
            met: ratio.as_ref().map(|r| r.requests_per_sec >= GOAL_RATIO),
        },
        results,
        wasmtime_skipped,
        ratio,
    };
    print(&report);
    summary::write_json(&report, &options.out)?;
    eprintln!("wrote {}", options.out.display());
    Ok(())
}

/// `up` with one hello pod running (and requested once); the load goes to its pod IP.
async fn start_wasmkube(inputs: &Inputs, dir: &Path, servers: &mut Servers) -> Result<Server> {
    let cluster = Cluster::start(servers, &inputs.wasmkube, &dir.join("wasmkube")).await?;
    let mut watch = PodWatch::open(cluster.pods.clone()).await?;
    let addrs = cluster.warm_up(&mut watch, &inputs.image(), 1).await?;
    let addr = *addrs.first().context("one pod was warmed up")?;
    Ok(Server {
        name: "wasmkube",
        command: format!("wasmkube up; pod warm-0 with image {}", inputs.image()),
        pid: cluster.pid,
        target: Arc::new(HttpTarget { endpoint: Endpoint::plain(addr) }),
    })
}

/// `wasmtime serve` on a free loopback port. `-S cli=y` gives the component the wasi:cli imports
/// (environment, stdio) that wstd components link against, as wasmkube does.
async fn start_wasmtime(wasmtime: &Path, inputs: &Inputs, dir: &Path, servers: &mut Servers) -> Result<Server> {
    let [addr, _] = servers::free_ports()?;
    let args = ["serve", "-S", "cli=y", "--addr", &addr.to_string()];
    let mut command = Command::new(wasmtime);
    command.args(args).arg(&inputs.hello);
    let pid = servers.start_listening(command, &dir.join("wasmtime-serve.log"), addr).await?;
    Ok(Server {
        name: "wasmtime serve",
        command: format!("{} {} {}", wasmtime.display(), args.join(" "), inputs.hello.display()),
        pid,
        target: Arc::new(HttpTarget { endpoint: Endpoint::plain(addr) }),
    })
}

/// This binary's `serve-native` on a port it picks.
async fn start_native(dir: &Path, servers: &mut Servers) -> Result<Server> {
    let exe = std::env::current_exe().context("finding pod-bench's own binary")?;
    let mut command = Command::new(&exe);
    command.args(["serve-native", "--addr", "127.0.0.1:0"]);
    let (pid, rest) = servers.start_announcing(command, &dir.join("native.log"), native::ANNOUNCEMENT).await?;
    let addr: SocketAddr = rest.trim().parse().with_context(|| format!("serve-native announced {rest:?}"))?;
    Ok(Server {
        name: "native hyper",
        command: format!("{} serve-native --addr 127.0.0.1:0", exe.display()),
        pid,
        target: Arc::new(HttpTarget { endpoint: Endpoint::plain(addr) }),
    })
}

/// Checks `server` answers, then runs the load against it and accounts for it.
pub async fn measure(server: &Server, plan: Plan) -> Result<Row> {
    let addr = server.target.endpoint.addr;
    let (_, body) = cluster::first_request(addr).await.with_context(|| format!("{} at {addr}", server.name))?;
    let pid = server.pid.to_string();
    let (server_cpu, bench_cpu) = (process::cpu_time(&pid)?, process::cpu_time("self")?);
    let started = Instant::now();
    let mut sample: Sample = load::run(server.target.clone(), plan, "get").await?;
    let wall = started.elapsed().as_secs_f64();
    let pct = |cpu: Duration| round(100.0 * cpu.as_secs_f64() / wall, 0);
    sample.latencies.sort_unstable();
    Ok(Row {
        server: server.name,
        command: server.command.clone(),
        addr,
        body: String::from_utf8_lossy(&body).into_owned(),
        requests: sample.latencies.len(),
        requests_per_sec: round(sample.latencies.len() as f64 / plan.duration.as_secs_f64(), 1),
        latency_ms: Latency::of(&sample.latencies),
        errors: sample.errors,
        error_examples: sample.error_examples,
        server_cpu_pct: pct(process::cpu_time(&pid)? - server_cpu),
        bench_cpu_pct: pct(process::cpu_time("self")? - bench_cpu),
    })
}

/// wasmkube / `wasmtime serve`, if both were measured.
fn ratio_of(rows: &[Row]) -> Option<Ratio> {
    let wasmkube = rows.iter().find(|r| r.server == "wasmkube")?;
    let wasmtime = rows.iter().find(|r| r.server == "wasmtime serve")?;
    Some(Ratio {
        requests_per_sec: ratio(wasmkube.requests_per_sec, wasmtime.requests_per_sec),
        p50: ratio(wasmkube.latency_ms.p50, wasmtime.latency_ms.p50),
        p99: ratio(wasmkube.latency_ms.p99, wasmtime.latency_ms.p99),
    })
}

fn print(report: &Report) {
    let w = &report.workload;
    println!(
        "http: GET / on {} keep-alive connections, {} s warm-up + {} s measured",
        w.connections, w.warmup_secs, w.duration_secs
    );
    println!(
        "{:<15} {:>11} {:>8} {:>8} {:>7} {:>10} {:>9}",
        "server", "req/s", "p50 ms", "p99 ms", "errors", "server cpu", "bench cpu"
    );
    for r in &report.results {
        println!(
            "{:<15} {:>11.1} {:>8.2} {:>8.2} {:>7} {:>9}% {:>8}%",
            r.server,
            r.requests_per_sec,
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.errors,
            r.server_cpu_pct,
            r.bench_cpu_pct
        );
    }
    if let Some(why) = &report.wasmtime_skipped {
        println!("SKIPPED wasmtime serve: {why}");
    }
    if let Some(r) = &report.ratio {
        println!("wasmkube / wasmtime serve: {:.2}x req/s, p50 {:.2}x, p99 {:.2}x", r.requests_per_sec, r.p50, r.p99);
    }
    let verdict = match report.goal.met {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "unknown (wasmtime serve not measured)",
    };
    println!("goal {}: {verdict}", report.goal.description);
    for r in report.results.iter().filter(|r| !r.error_examples.is_empty()) {
        println!("{}: first errors: {:?}", r.server, r.error_examples);
    }
}
