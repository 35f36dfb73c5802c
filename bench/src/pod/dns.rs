//! `pod-bench dns`: queries per second and latency of the node's cluster DNS serving a zone of
//! 10,000 Services, side by side with NSD 4.6 (an authoritative-only server) serving the same A
//! records, both loaded by the same `dnsperf` run settings with the same query list.
//!
//! wasmkube's records come from real Services created through the API (the DNS server follows them
//! by watch); NSD's zone file is written from the ClusterIPs those creates returned, so both answer
//! the same names with the same addresses.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use serde::Serialize;
use tokio::process::Command;
use wasmkube_bench::machine;
use wasmkube_bench::servers::{self, Servers};
use wasmkube_bench::summary::{self, Header, ratio, round};

use crate::cluster::{Cluster, Inputs};
use crate::service_http::wait_for_name;

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Services in the zone.
    #[arg(long, default_value_t = 10_000)]
    services: usize,

    /// Service creates in flight at once while the zone is built.
    #[arg(long, default_value_t = 32)]
    create_concurrency: usize,

    /// The `dnsperf` binary.
    #[arg(long, value_name = "PATH", default_value = "/usr/bin/dnsperf")]
    dnsperf: PathBuf,

    /// The `nsd` binary.
    #[arg(long, value_name = "PATH", default_value = "/usr/sbin/nsd")]
    nsd: PathBuf,

    /// dnsperf's simulated clients (`-c`).
    #[arg(long, default_value_t = 10)]
    clients: usize,

    /// dnsperf's queries in flight at most (`-q`).
    #[arg(long, default_value_t = 100)]
    outstanding: usize,

    /// Seconds of unmeasured queries before each server's window.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,

    /// Seconds measured per server (`-l`).
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,

    /// Where the JSON results are written.
    #[arg(long, value_name = "PATH", default_value = "bench/results/dns.json")]
    out: PathBuf,
}

/// The goal: at least 0.5× NSD's queries per second.
const GOAL_RATIO: f64 = 0.5;

#[derive(Debug, Serialize)]
struct Workload {
    description: String,
    services: usize,
    clients: usize,
    outstanding: usize,
    warmup_secs: u64,
    duration_secs: u64,
    /// Seconds it took to create the Services and see the last one answered.
    zone_build_secs: f64,
    dnsperf: String,
    nsd: String,
}

#[derive(Debug, Serialize)]
struct Row {
    server: &'static str,
    addr: SocketAddr,
    /// dnsperf's own summary of the measured window.
    queries_sent: u64,
    queries_completed: u64,
    queries_lost: u64,
    noerror: u64,
    queries_per_sec: f64,
    avg_latency_ms: f64,
    min_latency_ms: f64,
    max_latency_ms: f64,
    latency_stddev_ms: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    #[serde(flatten)]
    header: Header<Workload>,
    results: Vec<Row>,
    /// wasmkube / NSD.
    qps_ratio: f64,
    avg_latency_ratio: f64,
    goal: &'static str,
    goal_met: bool,
}

pub async fn run(options: &Options, inputs: &Inputs, dir: &Path, servers: &mut Servers) -> Result<()> {
    if options.services == 0 || options.duration_secs == 0 {
        bail!("--services and --duration-secs must be positive");
    }
    for (tool, path) in [("dnsperf", &options.dnsperf), ("nsd", &options.nsd)] {
        if !path.is_file() {
            bail!("{tool} not found at {}: apt-get install -y dnsperf nsd", path.display());
        }
    }
    let machine = machine::describe(dir);
    let wasmkube = machine::version(&inputs.wasmkube).await?;
    let flags = ["--dns-addr", "127.0.0.1:0", "--dns-upstream", "none"];
    let cluster = Cluster::start_with(servers, &inputs.wasmkube, &dir.join("wasmkube"), &flags).await?;
    let dns = cluster.dns.context("`up` announced no dns= address")?;

    eprintln!("creating {} Services...", options.services);
    let started = Instant::now();
    let records = create_services(&cluster.client, options.services, options.create_concurrency).await?;
    let last = &records.last().context("no Services")?.0;
    wait_for_name(dns, &format!("{last}.default.svc.cluster.local")).await?;
    let zone_build_secs = round(started.elapsed().as_secs_f64(), 1);
    eprintln!("zone of {} Services served after {zone_build_secs} s", records.len());

    let queries = dir.join("queries.txt");
    let mut text = String::new();
    for (name, _) in &records {
        writeln!(text, "{name}.default.svc.cluster.local A")?;
    }
    std::fs::write(&queries, text)?;
    let nsd_addr = start_nsd(&options.nsd, &records, &dir.join("nsd"), servers).await?;
    let answer = lookup_a(nsd_addr, &format!("{last}.default.svc.cluster.local")).await?;
    if answer.first() != Some(&records.last().context("records")?.1) {
        bail!("NSD at {nsd_addr} answered {answer:?} for {last}");
    }

    let mut results = Vec::new();
    for (server, addr) in [("wasmkube", dns), ("NSD", nsd_addr)] {
        eprintln!("dnsperf against {server} at {addr}...");
        // Unmeasured warm-up, then the window.
        dnsperf(options, &queries, addr, options.warmup_secs.max(1)).await?;
        let out = dnsperf(options, &queries, addr, options.duration_secs).await?;
        results.push(parse(server, addr, &out).with_context(|| format!("dnsperf output:\n{out}"))?);
    }
    let (ours, nsd) = (&results[0], &results[1]);
    let qps_ratio = ratio(ours.queries_per_sec, nsd.queries_per_sec);
    let workload = Workload {
        description: format!(
            "dnsperf -c {} -q {} -l {}: A queries for every Service name, in order, repeated",
            options.clients, options.outstanding, options.duration_secs
        ),
        services: options.services,
        clients: options.clients,
        outstanding: options.outstanding,
        warmup_secs: options.warmup_secs,
        duration_secs: options.duration_secs,
        zone_build_secs,
        dnsperf: machine::version_line(&options.dnsperf, &["-h"]).await,
        nsd: machine::version_line(&options.nsd, &["-v"]).await,
    };
    let report = Report {
        header: Header::new("pod-bench dns", machine, wasmkube, workload),
        avg_latency_ratio: ratio(ours.avg_latency_ms, nsd.avg_latency_ms),
        goal: "wasmkube's cluster DNS >= 0.5x NSD's queries per second",
        goal_met: qps_ratio >= GOAL_RATIO,
        qps_ratio,
        results,
    };
    print(&report);
    summary::write_json(&report, &options.out)?;
    eprintln!("wrote {}", options.out.display());
    Ok(())
}

/// Creates Services `svc-0` … in `default`; their names and ClusterIPs, in creation order.
async fn create_services(client: &kube::Client, count: usize, concurrency: usize) -> Result<Vec<(String, IpAddr)>> {
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let created: Vec<Result<(String, IpAddr)>> = futures::stream::iter(0..count)
        .map(|i| {
            let services = services.clone();
            async move {
                let name = format!("svc-{i}");
                let service: Service = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name},
                    "spec": {"ports": [{"name": "http", "port": 80}]},
                }))?;
                let created = services.create(&PostParams::default(), &service).await?;
                let ip = created.spec.and_then(|s| s.cluster_ip).context("no ClusterIP")?.parse()?;
                Ok((name, ip))
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    created.into_iter().collect()
}

/// NSD serving `cluster.local` with an A record per Service, on free loopback ports (UDP and TCP).
async fn start_nsd(nsd: &Path, records: &[(String, IpAddr)], dir: &Path, servers: &mut Servers) -> Result<SocketAddr> {
    std::fs::create_dir_all(dir)?;
    let mut zone = String::from(
        "$ORIGIN cluster.local.\n$TTL 5\n@ IN SOA ns.cluster.local. hostmaster.cluster.local. 1 3600 600 86400 5\n\
         @ IN NS ns.cluster.local.\nns IN A 127.0.0.1\n",
    );
    for (name, ip) in records {
        writeln!(zone, "{name}.default.svc IN A {ip}")?;
    }
    std::fs::write(dir.join("cluster.local.zone"), zone)?;
    let [addr, _] = servers::free_ports()?;
    let d = dir.display();
    // No database, no privilege drop, no control socket: a plain foreground server on one port.
    let config = format!(
        "server:\n  ip-address: {ip}@{port}\n  port: {port}\n  server-count: {cpus}\n  username: \"\"\n  \
         database: \"\"\n  zonesdir: \"{d}\"\n  zonelistfile: \"{d}/zone.list\"\n  xfrdfile: \"{d}/xfrd.state\"\n  \
         pidfile: \"{d}/nsd.pid\"\n  logfile: \"{d}/nsd.log\"\n  verbosity: 1\nremote-control:\n  control-enable: no\n\
         zone:\n  name: cluster.local\n  zonefile: cluster.local.zone\n",
        ip = addr.ip(),
        port = addr.port(),
        cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    );
    let conf = dir.join("nsd.conf");
    std::fs::write(&conf, config)?;
    let mut command = Command::new(nsd);
    command.arg("-d").arg("-c").arg(&conf);
    servers.start_listening(command, &dir.join("nsd.out"), addr).await?;
    Ok(addr)
}

/// Runs dnsperf against `addr` for `seconds`; its output.
async fn dnsperf(options: &Options, queries: &Path, addr: SocketAddr, seconds: u64) -> Result<String> {
    let output = Command::new(&options.dnsperf)
        .arg("-s")
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .arg("-d")
        .arg(queries)
        .arg("-l")
        .arg(seconds.to_string())
        .arg("-c")
        .arg(options.clients.to_string())
        .arg("-q")
        .arg(options.outstanding.to_string())
        .output()
        .await
        .context("running dnsperf")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!("dnsperf failed ({}): {text}{}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    Ok(text)
}

/// dnsperf's statistics block.
fn parse(server: &'static str, addr: SocketAddr, out: &str) -> Result<Row> {
    let field = |label: &str| -> Option<&str> {
        out.lines().find_map(|l| l.trim().strip_prefix(label)).map(|rest| rest.trim_start_matches(':').trim())
    };
    let count = |label: &str| -> Result<u64> {
        let text = field(label).with_context(|| format!("no `{label}`"))?;
        Ok(text.split_whitespace().next().unwrap_or_default().parse()?)
    };
    let seconds = |text: &str| -> Result<f64> { Ok(round(text.parse::<f64>()? * 1000.0, 3)) };
    // "Average Latency (s):  0.000151 (min 0.000017, max 0.004040)"
    let average = field("Average Latency (s)").context("no average latency")?;
    let numbers: Vec<&str> =
        average.split(|c: char| !(c.is_ascii_digit() || c == '.')).filter(|s| !s.is_empty()).collect();
    let [avg, min, max] = numbers[..] else { bail!("unexpected latency line {average:?}") };
    let noerror = field("Response codes")
        .and_then(|codes| codes.split(',').find_map(|c| c.trim().strip_prefix("NOERROR ")))
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Ok(Row {
        server,
        addr,
        queries_sent: count("Queries sent")?,
        queries_completed: count("Queries completed")?,
        queries_lost: count("Queries lost")?,
        noerror,
        queries_per_sec: round(field("Queries per second").context("no QPS")?.parse()?, 1),
        avg_latency_ms: seconds(avg)?,
        min_latency_ms: seconds(min)?,
        max_latency_ms: seconds(max)?,
        latency_stddev_ms: seconds(field("Latency StdDev (s)").context("no stddev")?)?,
    })
}

/// The A records the server at `dns` gives `name` (none for NXDOMAIN), asked directly: no cache,
/// no search path.
pub async fn lookup_a(dns: SocketAddr, name: &str) -> Result<Vec<IpAddr>> {
    let connections = [ConnectionConfig::udp()].map(|mut c| {
        c.port = dns.port();
        c
    });
    let server = NameServerConfig::new(dns.ip(), true, connections.to_vec());
    let config = ResolverConfig::from_parts(None, vec![], vec![server]);
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.attempts = 1;
    opts.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4Only;
    opts.timeout = Duration::from_secs(1);
    let resolver = hickory_resolver::Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()?;
    let fqdn = format!("{}.", name.trim_end_matches('.'));
    match resolver.lookup_ip(fqdn.as_str()).await {
        Ok(found) => Ok(found.iter().collect()),
        Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(vec![]),
        Err(e) => Err(anyhow::anyhow!("asking {dns} for {name}: {e}")),
    }
}

fn print(report: &Report) {
    let w = &report.header.workload;
    println!("dns: {} Services; {}", w.services, w.description);
    println!("{:<9} {:>10} {:>9} {:>9} {:>9} {:>7}", "server", "qps", "avg ms", "max ms", "completed", "lost");
    for r in &report.results {
        println!(
            "{:<9} {:>10.1} {:>9.3} {:>9.3} {:>9} {:>7}",
            r.server, r.queries_per_sec, r.avg_latency_ms, r.max_latency_ms, r.queries_completed, r.queries_lost
        );
    }
    println!("wasmkube / NSD: {:.2}x qps, average latency {:.2}x", report.qps_ratio, report.avg_latency_ratio);
    println!("goal {}: {}", report.goal, if report.goal_met { "met" } else { "NOT met" });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnsperf_statistics_are_read() {
        let out = "Statistics:\n\n  Queries sent:         1000\n  Queries completed:    998 (99.80%)\n  \
                   Queries lost:         2 (0.20%)\n\n  Response codes:       NOERROR 998 (100.00%)\n  \
                   Average packet size:  request 50, response 66\n  Run time (s):         10.000\n  \
                   Queries per second:   99.8\n\n  Average Latency (s):  0.000151 (min 0.000017, max 0.004040)\n  \
                   Latency StdDev (s):   0.000100\n";
        let row = parse("x", "127.0.0.1:53".parse().expect("addr"), out).expect("parsed");
        assert_eq!((row.queries_sent, row.queries_completed, row.queries_lost, row.noerror), (1000, 998, 2, 998));
        assert_eq!((row.queries_per_sec, row.avg_latency_ms, row.min_latency_ms), (99.8, 0.151, 0.017));
        assert_eq!((row.max_latency_ms, row.latency_stddev_ms), (4.04, 0.1));
    }
}
