//! `pod-bench proxy`: what the node's L4 Service proxy costs. One native TCP backend (in this
//! process: a sink that counts bytes, or an echo) is reached three ways in one run: directly on
//! loopback, through a wasmkube Service's ClusterIP (a Service without a selector and an
//! EndpointSlice naming the backend, so no Wasm is involved), and through HAProxy 2.6 in `mode tcp`
//! with the same backend. Each is measured for
//!
//! - bulk throughput: one connection writing 64 KiB chunks for the window, the backend counting
//!   what arrives;
//! - connection latency: closed-loop clients that each connect, send 64 bytes, read them back and
//!   close (a new connection per request: the proxy's accept, endpoint pick and dial are in it);
//! - request latency: closed-loop clients on one long-lived connection each, 64 bytes out and back;
//!   once with one client (what a hop adds, nothing queued behind it: the latency goal is judged
//!   here) and once with `--clients` (throughput, and latency with queueing).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use wasmkube_bench::machine;
use wasmkube_bench::process;
use wasmkube_bench::servers::{self, Servers};
use wasmkube_bench::summary::{self, Header, Latency, ratio, round};

use crate::cluster::{Cluster, Inputs};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// The `haproxy` binary (2.6) compared with; skipped, with a note, if missing.
    #[arg(long, value_name = "PATH", default_value = "/usr/sbin/haproxy")]
    haproxy: PathBuf,

    /// Closed-loop clients for the latency measures.
    #[arg(long, default_value_t = 16)]
    clients: usize,

    /// Seconds of unmeasured load before each window.
    #[arg(long, default_value_t = 1)]
    warmup_secs: u64,

    /// Seconds measured per path and measure.
    #[arg(long, default_value_t = 5)]
    duration_secs: u64,

    /// Where the JSON results are written.
    #[arg(long, value_name = "PATH", default_value = "bench/results/proxy.json")]
    out: PathBuf,
}

/// What a request and its answer carry.
const MESSAGE: usize = 64;
const CHUNK: usize = 64 * 1024;
const SERVICE_PORT: u16 = 9000;

#[derive(Debug, Serialize)]
struct Workload {
    description: &'static str,
    clients: usize,
    warmup_secs: u64,
    duration_secs: u64,
    message_bytes: usize,
    chunk_bytes: usize,
    haproxy: Option<String>,
}

#[derive(Debug, Serialize)]
struct Row {
    path: &'static str,
    addr: SocketAddr,
    bulk_mb_per_sec: f64,
    connect_requests_per_sec: f64,
    connect_latency_ms: Latency,
    requests_per_sec: f64,
    request_latency_ms: Latency,
    /// The request measure with a single client.
    one_client_requests_per_sec: f64,
    one_client_request_latency_ms: Latency,
    errors: u64,
    error_examples: Vec<String>,
    /// CPU of the process in the path (`up`, HAProxy), in % of one core over all three measures.
    proxy_cpu_pct: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Goals {
    /// wasmkube bulk / direct bulk (goal >= 0.8).
    bulk_vs_direct: f64,
    /// wasmkube bulk / HAProxy bulk (goal >= 1.0).
    bulk_vs_haproxy: Option<f64>,
    /// p50 added to a request on a connection with one client, over direct, in ms: wasmkube,
    /// HAProxy (goal: wasmkube's <= HAProxy's).
    added_request_p50_ms: (f64, Option<f64>),
    /// p50 added to a connect-and-request: wasmkube, HAProxy.
    added_connect_p50_ms: (f64, Option<f64>),
    met: Option<bool>,
}

#[derive(Debug, Serialize)]
struct Report {
    #[serde(flatten)]
    header: Header<Workload>,
    results: Vec<Row>,
    goals: Goals,
    haproxy_skipped: Option<String>,
}

pub async fn run(options: &Options, inputs: &Inputs, dir: &Path, servers: &mut Servers) -> Result<()> {
    if options.clients == 0 || options.duration_secs == 0 {
        bail!("--clients and --duration-secs must be positive");
    }
    let machine = machine::describe(dir);
    let wasmkube = machine::version(&inputs.wasmkube).await?;
    let backend = start_backend().await?;
    let cluster = Cluster::start(servers, &inputs.wasmkube, &dir.join("wasmkube")).await?;
    let cluster_ip = expose(&cluster.client, backend).await?;
    let through_service = SocketAddr::new(cluster_ip, SERVICE_PORT);
    wait_for_echo(through_service).await.context("the ClusterIP never reached the backend")?;

    let mut paths: Vec<(&'static str, SocketAddr, Option<u32>)> =
        vec![("direct", backend, None), ("wasmkube", through_service, Some(cluster.pid))];
    let mut haproxy_version = None;
    let haproxy_skipped = if options.haproxy.is_file() {
        haproxy_version = Some(machine::version_line(&options.haproxy, &["-v"]).await);
        let (addr, pid) = start_haproxy(&options.haproxy, backend, &dir.join("haproxy"), servers).await?;
        wait_for_echo(addr).await.context("HAProxy never reached the backend")?;
        paths.push(("HAProxy", addr, Some(pid)));
        None
    } else {
        let why = format!("{} not found: apt-get install -y haproxy", options.haproxy.display());
        eprintln!("warning: {why}");
        Some(why)
    };

    let mut results = Vec::new();
    for (path, addr, pid) in paths {
        eprintln!("{path} at {addr}...");
        results.push(measure(options, path, addr, pid).await?);
    }
    let goals = goals(&results);
    let workload = Workload {
        description: "one native backend (sink or echo) reached directly, through a ClusterIP, and through HAProxy \
            in mode tcp; bulk: one connection writing for the window; connect: new connection per 64-byte \
            echo; request: 64-byte echoes on long-lived connections, with --clients and with one client; \
            closed loop",
        clients: options.clients,
        warmup_secs: options.warmup_secs,
        duration_secs: options.duration_secs,
        message_bytes: MESSAGE,
        chunk_bytes: CHUNK,
        haproxy: haproxy_version,
    };
    let report =
        Report { header: Header::new("pod-bench proxy", machine, wasmkube, workload), results, goals, haproxy_skipped };
    print(&report);
    summary::write_json(&report, &options.out)?;
    eprintln!("wrote {}", options.out.display());
    Ok(())
}

/// The backend: a connection's first byte says what it is. `B`: a sink, which answers the number
/// of bytes it got (8 bytes, big endian) once the client half-closes. `E`: an echo.
async fn start_backend() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let mut mode = [0u8; 1];
                if stream.read_exact(&mut mode).await.is_err() {
                    return;
                }
                let mut buffer = vec![0u8; CHUNK];
                if mode[0] == b'B' {
                    let mut total: u64 = 0;
                    while let Ok(n) = stream.read(&mut buffer).await {
                        if n == 0 {
                            break;
                        }
                        total += n as u64;
                    }
                    let _ = stream.write_all(&total.to_be_bytes()).await;
                } else {
                    while let Ok(n) = stream.read(&mut buffer).await {
                        if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// A Service without a selector whose one endpoint is the backend; its ClusterIP.
async fn expose(client: &kube::Client, backend: SocketAddr) -> Result<IpAddr> {
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "backend"},
        "spec": {"ports": [{"name": "tcp", "port": SERVICE_PORT}]},
    }))?;
    let created = services.create(&PostParams::default(), &service).await.context("creating the Service")?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "backend-native", "labels": {"kubernetes.io/service-name": "backend"}},
        "addressType": "IPv4",
        "ports": [{"name": "tcp", "port": backend.port(), "protocol": "TCP"}],
        "endpoints": [{"addresses": [backend.ip().to_string()], "conditions": {"ready": true}}],
    }))?;
    slices.create(&PostParams::default(), &slice).await.context("creating the EndpointSlice")?;
    Ok(created.spec.and_then(|s| s.cluster_ip).context("no ClusterIP")?.parse()?)
}

/// HAProxy in tcp mode on a free port with the backend as its one server; its address and pid.
async fn start_haproxy(
    haproxy: &Path,
    backend: SocketAddr,
    dir: &Path,
    servers: &mut Servers,
) -> Result<(SocketAddr, u32)> {
    std::fs::create_dir_all(dir)?;
    let [addr, _] = servers::free_ports()?;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let config = format!(
        "global\n  nbthread {threads}\n  maxconn 4096\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
         timeout client 60s\n  timeout server 60s\n\nfrontend service\n  bind {addr}\n  default_backend pods\n\n\
         backend pods\n  server native {backend}\n"
    );
    let conf = dir.join("haproxy.cfg");
    std::fs::write(&conf, config)?;
    let mut command = Command::new(haproxy);
    command.arg("-db").arg("-f").arg(&conf);
    let pid = servers.start_listening(command, &dir.join("haproxy.log"), addr).await?;
    Ok((addr, pid))
}

/// Waits (bounded) until one echo through `addr` comes back.
async fn wait_for_echo(addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match connect_and_echo(addr).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn connect_and_echo(addr: SocketAddr) -> Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut message = [b'x'; MESSAGE + 1];
    message[0] = b'E';
    stream.write_all(&message).await?;
    let mut back = [0u8; MESSAGE];
    stream.read_exact(&mut back).await?;
    Ok(())
}

async fn measure(options: &Options, path: &'static str, addr: SocketAddr, pid: Option<u32>) -> Result<Row> {
    let warmup = Duration::from_secs(options.warmup_secs);
    let window = Duration::from_secs(options.duration_secs);
    let cpu_before = pid.map(|p| process::cpu_time(&p.to_string())).transpose()?;
    let started = Instant::now();
    let bulk = bulk(addr, window).await.with_context(|| format!("bulk through {path}"))?;
    let mut errors = Errors::default();
    let connect = closed_loop(addr, options.clients, warmup, window, false, &mut errors).await;
    let requests = closed_loop(addr, options.clients, warmup, window, true, &mut errors).await;
    let one_client = closed_loop(addr, 1, warmup, window, true, &mut errors).await;
    let wall = started.elapsed().as_secs_f64();
    let proxy_cpu_pct = match (pid, cpu_before) {
        (Some(p), Some(before)) => {
            Some(round(100.0 * (process::cpu_time(&p.to_string())? - before).as_secs_f64() / wall, 0))
        }
        _ => None,
    };
    let per_sec = |n: usize| round(n as f64 / window.as_secs_f64(), 1);
    Ok(Row {
        path,
        addr,
        bulk_mb_per_sec: round(bulk, 1),
        connect_requests_per_sec: per_sec(connect.len()),
        connect_latency_ms: Latency::of_unsorted(connect),
        requests_per_sec: per_sec(requests.len()),
        request_latency_ms: Latency::of_unsorted(requests),
        one_client_requests_per_sec: per_sec(one_client.len()),
        one_client_request_latency_ms: Latency::of_unsorted(one_client),
        errors: errors.count,
        error_examples: errors.examples,
        proxy_cpu_pct,
    })
}

/// MB/s (10^6 bytes) the backend counted from one connection writing for `window`.
async fn bulk(addr: SocketAddr, window: Duration) -> Result<f64> {
    let mut stream = TcpStream::connect(addr).await?;
    let chunk = vec![b'b'; CHUNK];
    let started = Instant::now();
    stream.write_all(b"B").await?;
    while started.elapsed() < window {
        stream.write_all(&chunk).await?;
    }
    stream.shutdown().await?;
    let mut total = [0u8; 8];
    stream.read_exact(&mut total).await?;
    Ok(u64::from_be_bytes(total) as f64 / started.elapsed().as_secs_f64() / 1e6)
}

#[derive(Debug, Default)]
struct Errors {
    count: u64,
    examples: Vec<String>,
}

/// `clients` closed loops for `warmup` + `window`: the latencies of the echoes started inside the
/// window. `keep` keeps one connection per client; otherwise every echo has its own.
async fn closed_loop(
    addr: SocketAddr,
    clients: usize,
    warmup: Duration,
    window: Duration,
    keep: bool,
    errors: &mut Errors,
) -> Vec<Duration> {
    let start = Instant::now() + warmup;
    let end = start + window;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut failures: Vec<String> = Vec::new();
            let mut stream: Option<TcpStream> = None;
            let mut message = [b'x'; MESSAGE];
            let mut back = [0u8; MESSAGE];
            while Instant::now() < end {
                let began = Instant::now();
                let result: Result<()> = async {
                    if !keep {
                        return connect_and_echo(addr).await;
                    }
                    if stream.is_none() {
                        let opened = TcpStream::connect(addr).await?;
                        opened.set_nodelay(true)?;
                        let mut opened = opened;
                        opened.write_all(b"E").await?;
                        stream = Some(opened);
                    }
                    let s = stream.as_mut().context("connected")?;
                    message[0] = b'x';
                    s.write_all(&message).await?;
                    s.read_exact(&mut back).await?;
                    Ok(())
                }
                .await;
                match result {
                    Ok(()) if began >= start && began < end => latencies.push(began.elapsed()),
                    Ok(()) => {}
                    Err(e) => {
                        stream = None;
                        failures.push(format!("{e:#}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            (latencies, failures)
        });
    }
    let mut all = Vec::new();
    while let Some(Ok((latencies, failures))) = tasks.join_next().await {
        all.extend(latencies);
        errors.count += failures.len() as u64;
        for f in failures {
            if errors.examples.len() < 3 && !errors.examples.contains(&f) {
                errors.examples.push(f);
            }
        }
    }
    all
}

fn goals(rows: &[Row]) -> Goals {
    let find = |name: &str| rows.iter().find(|r| r.path == name);
    let (direct, ours, haproxy) = (find("direct"), find("wasmkube"), find("HAProxy"));
    let (Some(direct), Some(ours)) = (direct, ours) else { unreachable!("direct and wasmkube are always measured") };
    let added = |r: &Row, f: fn(&Row) -> f64| round(f(r) - f(direct), 3);
    let request_p50 = |r: &Row| r.one_client_request_latency_ms.p50;
    let connect_p50 = |r: &Row| r.connect_latency_ms.p50;
    let bulk_vs_direct = round(ratio(ours.bulk_mb_per_sec, direct.bulk_mb_per_sec), 2);
    let bulk_vs_haproxy = haproxy.map(|h| round(ratio(ours.bulk_mb_per_sec, h.bulk_mb_per_sec), 2));
    let added_request_p50_ms = (added(ours, request_p50), haproxy.map(|h| added(h, request_p50)));
    let met = match (bulk_vs_haproxy, added_request_p50_ms.1) {
        (Some(vs_haproxy), Some(theirs)) => {
            Some(bulk_vs_direct >= 0.8 && vs_haproxy >= 1.0 && added_request_p50_ms.0 <= theirs)
        }
        _ => None,
    };
    Goals {
        bulk_vs_direct,
        bulk_vs_haproxy,
        added_request_p50_ms,
        added_connect_p50_ms: (added(ours, connect_p50), haproxy.map(|h| added(h, connect_p50))),
        met,
    }
}

fn print(report: &Report) {
    let w = &report.header.workload;
    println!("proxy: {} clients, {} s warm-up + {} s per measure", w.clients, w.warmup_secs, w.duration_secs);
    println!(
        "{:<9} {:>9} {:>10} {:>9} {:>9} {:>10} {:>9} {:>9} {:>8} {:>8} {:>6} {:>5}",
        "path",
        "bulk MB/s",
        "conn req/s",
        "conn p50",
        "conn p99",
        "req/s",
        "req p50",
        "req p99",
        "1cl p50",
        "1cl p99",
        "errors",
        "cpu"
    );
    for r in &report.results {
        println!(
            "{:<9} {:>9.1} {:>10.1} {:>9.3} {:>9.3} {:>10.1} {:>9.3} {:>9.3} {:>8.3} {:>8.3} {:>6} {:>5}",
            r.path,
            r.bulk_mb_per_sec,
            r.connect_requests_per_sec,
            r.connect_latency_ms.p50,
            r.connect_latency_ms.p99,
            r.requests_per_sec,
            r.request_latency_ms.p50,
            r.request_latency_ms.p99,
            r.one_client_request_latency_ms.p50,
            r.one_client_request_latency_ms.p99,
            r.errors,
            r.proxy_cpu_pct.map(|c| format!("{c}%")).unwrap_or_default()
        );
    }
    let g = &report.goals;
    println!(
        "bulk: wasmkube {:.2}x direct, {}x HAProxy; added p50 per request (1 client): wasmkube {} ms, HAProxy {} ms; \
         per connection: wasmkube {} ms, HAProxy {} ms",
        g.bulk_vs_direct,
        g.bulk_vs_haproxy.map(|r| format!("{r:.2}")).unwrap_or("-".into()),
        g.added_request_p50_ms.0,
        g.added_request_p50_ms.1.map(|v| v.to_string()).unwrap_or("-".into()),
        g.added_connect_p50_ms.0,
        g.added_connect_p50_ms.1.map(|v| v.to_string()).unwrap_or("-".into()),
    );
    let verdict = match g.met {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "unknown (HAProxy not measured)",
    };
    println!("goals (bulk >= 0.8x direct and >= 1.0x HAProxy, added 1-client request p50 <= HAProxy's): {verdict}");
    if let Some(why) = &report.haproxy_skipped {
        println!("SKIPPED HAProxy: {why}");
    }
    for r in report.results.iter().filter(|r| !r.error_examples.is_empty()) {
        println!("{}: first errors: {:?}", r.path, r.error_examples);
    }
}
