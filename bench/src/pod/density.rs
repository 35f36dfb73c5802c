//! `pod-bench density`: how much resident memory `wasmkube up` needs per running `hello` pod, and
//! how fast a pod that has never served answers its first request, at N pods. Each N gets a fresh
//! `up`: its RSS before any pod, with the first pod running, and once all N run (pods 2..N are
//! created a few in flight).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use rand::seq::IndexedRandom;
use serde::Serialize;
use wasmkube_bench::machine;
use wasmkube_bench::process::{self, Memory};
use wasmkube_bench::servers::Servers;
use wasmkube_bench::summary::{self, Header, Latency, round};

use crate::cluster::{self, Cluster, Failures, Inputs, PORT, Pace};
use crate::watch::PodWatch;

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Pod counts to measure, comma-separated; each gets a fresh `wasmkube up`. The node holds at
    /// most 10,000 pods (its instance pool's size).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pods: Vec<usize>,

    /// Creates in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,

    /// Pods, chosen at random once all run, sent one first request each (one at a time).
    #[arg(long, default_value_t = 20)]
    probes: usize,

    /// Seconds to let `up` settle before each RSS reading (after start, after the first pod, after
    /// the last).
    #[arg(long, default_value_t = 5)]
    settle_secs: u64,

    /// Give up if the pods are not all running this many seconds after the last create.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,

    /// Where the JSON results are written.
    #[arg(long, value_name = "PATH", default_value = "bench/results/pod-density.json")]
    out: PathBuf,
}

/// The goal: at most 1 MiB of resident memory per pod at 10,000 pods.
const GOAL_PODS: usize = 10_000;
const GOAL_KIB_PER_POD: f64 = 1024.0;

#[derive(Debug, Serialize)]
struct Report {
    #[serde(flatten)]
    header: Header<Workload>,
    results: Vec<Row>,
    goal: Goal,
}

#[derive(Debug, Serialize)]
struct Workload {
    description: &'static str,
    pods: Vec<usize>,
    concurrency: usize,
    probes: usize,
    settle_secs: u64,
    image: String,
}

/// One N.
#[derive(Debug, Serialize)]
struct Row {
    pods: usize,
    /// `up` after start, before any pod.
    before: Reading,
    /// `up` with the first pod running: the component has been compiled once.
    first_pod: Reading,
    /// `up` with all N pods running.
    after: Reading,
    /// (VmRSS with N pods − VmRSS before any pod) / N: the goal's measure. It includes the one
    /// compilation of the component, spread over the N pods.
    rss_per_pod_kib: f64,
    /// (VmRSS with N pods − VmRSS with the first pod) / (N − 1): what each further pod costs.
    marginal_rss_per_pod_kib: Option<f64>,
    create_errors: Failures,
    /// For pods 2..N: first create sent → last create answered.
    create_secs: f64,
    /// For pods 2..N: first create sent → last pod seen Running and ready.
    ready_secs: f64,
    /// The soft limit of `up`: every pod holds a listening socket and more.
    max_open_files: u64,
    /// Connect, `GET /`, read the whole response, on pods never requested before.
    first_request_ms: Latency,
    first_request_samples_ms: Vec<f64>,
    first_request_errors: Failures,
}

/// What `up` holds at one moment.
#[derive(Debug, Clone, Copy, Serialize)]
struct Reading {
    memory: Memory,
    open_files: usize,
}

impl Reading {
    fn take(pid: u32) -> Result<Self> {
        Ok(Self { memory: process::memory(pid)?, open_files: process::open_files(pid)? })
    }
}

#[derive(Debug, Serialize)]
struct Goal {
    description: &'static str,
    /// Unknown unless 10,000 pods were measured.
    met: Option<bool>,
}

pub async fn run(options: &Options, inputs: &Inputs, dir: &Path, servers: &mut Servers) -> Result<()> {
    if options.pods.is_empty() || options.pods.contains(&0) || options.concurrency == 0 {
        bail!("--pods needs positive counts and --concurrency a positive number");
    }
    let machine = machine::describe(dir);
    let version = machine::version(&inputs.wasmkube).await?;
    let mut results = Vec::new();
    for &pods in &options.pods {
        let data = dir.join(format!("wasmkube-{pods}"));
        let row = measure(options, inputs, &data, servers, pods).await;
        // A fresh `up` per N: stop this one (and free its disk) before the next starts.
        servers.stop().await;
        let _ = std::fs::remove_dir_all(&data);
        results.push(row?);
    }
    let at_goal = results.iter().find(|r| r.pods == GOAL_PODS);
    let report = Report {
        header: Header::new(
            "pod-bench density",
            machine,
            version,
            Workload {
                description: "N hello pods bound to the node on a fresh `wasmkube up`; VmRSS of the up process before \
                any pod and once all run; then one first request to each of a few random pods",
                pods: options.pods.clone(),
                concurrency: options.concurrency,
                probes: options.probes,
                settle_secs: options.settle_secs,
                image: inputs.image(),
            },
        ),
        goal: Goal {
            description: "<= 1 MiB RSS per pod at 10,000 pods",
            met: at_goal.map(|r| r.create_errors.count == 0 && r.rss_per_pod_kib <= GOAL_KIB_PER_POD),
        },
        results,
    };
    print(&report);
    summary::write_json(&report, &options.out)?;
    eprintln!("wrote {}", options.out.display());
    Ok(())
}

/// One N on a fresh `up` with its data in `data`.
async fn measure(options: &Options, inputs: &Inputs, data: &Path, servers: &mut Servers, pods: usize) -> Result<Row> {
    let (settle, timeout) = (Duration::from_secs(options.settle_secs), Duration::from_secs(options.timeout_secs));
    let cluster = Cluster::start(servers, &inputs.wasmkube, data).await?;
    let mut watch = PodWatch::open(cluster.pods.clone()).await?;
    tokio::time::sleep(settle).await;
    let before = Reading::take(cluster.pid)?;
    let max_open_files = process::max_open_files(cluster.pid)?;
    eprintln!("{pods} pods: up at {} MiB RSS; starting the first pod...", before.memory.vm_rss_kib / 1024);

    // The first pod alone, so the node compiles the component once. (Pods of one image that start
    // together before it is compiled each compile it: see docs/benchmarks.md.)
    let image = inputs.image();
    let (_, failed) = cluster::create_pods(&cluster.pods, &image, vec![pod_name(0)], Pace::SEQUENTIAL).await;
    if failed.count > 0 {
        bail!("creating the first pod failed: {:?}", failed.examples);
    }
    watch.wait_ready(1, timeout).await?;
    tokio::time::sleep(settle).await;
    let first_pod = Reading::take(cluster.pid)?;
    warn_if_files_run_out(pods, &before, &first_pod, max_open_files);

    eprintln!("creating {} more...", pods - 1);
    let pace = Pace { concurrency: options.concurrency, rate: None };
    let (created, create_errors) =
        cluster::create_pods(&cluster.pods, &image, (1..pods).map(pod_name).collect(), pace).await;
    let first_sent = created.iter().map(|c| c.sent).min().unwrap_or_else(Instant::now);
    let last_answered = created.iter().map(|c| c.answered).max().unwrap_or(first_sent);
    eprintln!("{} created ({} errors); waiting until all run...", created.len(), create_errors.count);
    watch.wait_ready(1 + created.len(), timeout).await?;
    let ready = watch.ready();
    let last_ready = created.iter().filter_map(|c| ready.get(&c.name)).map(|r| r.at).max().unwrap_or(first_sent);
    tokio::time::sleep(settle).await;
    let after = Reading::take(cluster.pid)?;

    let addrs: Vec<SocketAddr> = ready.values().filter_map(|r| r.ip).map(|ip| SocketAddr::new(ip, PORT)).collect();
    let probed: Vec<SocketAddr> = addrs.choose_multiple(&mut rand::rng(), options.probes).copied().collect();
    let (samples, first_request_errors) = probe(&probed).await;
    let rss_growth = |from: &Reading| after.memory.vm_rss_kib as f64 - from.memory.vm_rss_kib as f64;
    Ok(Row {
        pods,
        rss_per_pod_kib: round(rss_growth(&before) / pods as f64, 1),
        marginal_rss_per_pod_kib: (pods > 1).then(|| round(rss_growth(&first_pod) / (pods - 1) as f64, 1)),
        before,
        first_pod,
        after,
        create_errors,
        create_secs: round((last_answered - first_sent).as_secs_f64(), 2),
        ready_secs: round(last_ready.saturating_duration_since(first_sent).as_secs_f64(), 2),
        max_open_files,
        first_request_ms: Latency::of_unsorted(samples.clone()),
        first_request_samples_ms: samples.iter().map(|d| round(d.as_secs_f64() * 1000.0, 2)).collect(),
        first_request_errors,
    })
}

fn pod_name(i: usize) -> String {
    format!("pod-{i:05}")
}

/// Each pod holds files in `up` (its listening socket, its log file, and its share of the agent's
/// API connections): says so early if N pods will not fit under the open-files limit.
fn warn_if_files_run_out(pods: usize, before: &Reading, first_pod: &Reading, limit: u64) {
    let per_pod = first_pod.open_files.saturating_sub(before.open_files).max(1);
    let expected = before.open_files + per_pod * pods;
    if expected as u64 > limit {
        eprintln!(
            "warning: the first pod took {per_pod} open files in `up`; {pods} pods need about {expected}, \
             above its limit of {limit} (raise it with `ulimit -n` before running)"
        );
    }
}

/// One first request to each of `addrs`, one at a time so they do not queue behind each other.
async fn probe(addrs: &[SocketAddr]) -> (Vec<Duration>, Failures) {
    let mut samples = Vec::with_capacity(addrs.len());
    let mut failures = Failures::default();
    for &addr in addrs {
        match cluster::first_request(addr).await {
            Ok((elapsed, _)) => samples.push(elapsed),
            Err(e) => failures.record(format!("{addr}: {e:#}")),
        }
    }
    (samples, failures)
}

fn print(report: &Report) {
    println!(
        "{:>6} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>7} {:>8} {:>8} {:>6}",
        "pods",
        "rss0 MiB",
        "rss1 MiB",
        "rssN MiB",
        "KiB/pod",
        "marg. KiB",
        "ready s",
        "fds",
        "1st p50",
        "1st p99",
        "errors"
    );
    let mib = |r: &Reading| r.memory.vm_rss_kib as f64 / 1024.0;
    for r in &report.results {
        println!(
            "{:>6} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9} {:>8.2} {:>7} {:>8.2} {:>8.2} {:>6}",
            r.pods,
            mib(&r.before),
            mib(&r.first_pod),
            mib(&r.after),
            r.rss_per_pod_kib,
            r.marginal_rss_per_pod_kib.map_or("-".to_string(), |k| format!("{k:.1}")),
            r.ready_secs,
            r.after.open_files,
            r.first_request_ms.p50,
            r.first_request_ms.p99,
            r.create_errors.count + r.first_request_errors.count,
        );
    }
    let verdict = match report.goal.met {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured (no run at 10,000 pods)",
    };
    println!("goal {}: {verdict}", report.goal.description);
    for r in report.results.iter().filter(|r| r.create_errors.count + r.first_request_errors.count > 0) {
        println!("{} pods, first errors: {:?} {:?}", r.pods, r.create_errors.examples, r.first_request_errors.examples);
    }
}
