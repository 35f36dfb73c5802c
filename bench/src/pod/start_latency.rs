//! `pod-bench start-latency`: the time from sending a pod create to seeing, on one watch opened
//! before the first create, the pod Running with its container ready, for N pods created one after
//! another (or at a given concurrency or rate), after a warm-up that compiled the component.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use wasmkube_bench::machine;
use wasmkube_bench::servers::Servers;
use wasmkube_bench::summary::{self, Header, Latency, round};

use crate::cluster::{self, Cluster, Created, Failures, Inputs, Pace};
use crate::watch::PodWatch;

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Pods to create and time.
    #[arg(long, default_value_t = 1000)]
    pods: usize,

    /// Pods created, run and sent one request before the timed ones, so the component is compiled
    /// and cached first.
    #[arg(long, default_value_t = 3)]
    warmup_pods: usize,

    /// Creates in flight at once; 1 sends each create when the previous one has been answered.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,

    /// Send creates at this steady rate (pods/s), still at most `--concurrency` in flight.
    /// Default: as fast as `--concurrency` allows.
    #[arg(long, value_name = "PODS_PER_SEC")]
    rate: Option<f64>,

    /// Give up if the pods are not all running this many seconds after the last create.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,

    /// Where the JSON results are written.
    #[arg(long, value_name = "PATH", default_value = "bench/results/pod-start.json")]
    out: PathBuf,
}

/// The goal: a pod serving within 50 ms of its create, at the 99th percentile.
const GOAL_P99_MS: f64 = 50.0;

#[derive(Debug, Serialize)]
struct Report {
    #[serde(flatten)]
    header: Header<Workload>,
    result: Outcome,
    goal: Goal,
}

#[derive(Debug, Serialize)]
struct Workload {
    description: &'static str,
    pods: usize,
    warmup_pods: usize,
    concurrency: usize,
    rate_pods_per_sec: Option<f64>,
    image: String,
}

#[derive(Debug, Serialize)]
struct Outcome {
    pods_created: usize,
    pods_ready: usize,
    create_errors: Failures,
    /// Create sent → pod seen Running and ready on the watch.
    start_latency_ms: Latency,
    /// Create sent → `201 Created` read (part of the above).
    create_response_ms: Latency,
    /// Pods ready per second, from the first create sent to the last pod seen ready.
    pods_per_sec: f64,
    elapsed_secs: f64,
    /// Times the server ended the watch and it was resumed from its last revision.
    watch_resumed: u32,
}

#[derive(Debug, Serialize)]
struct Goal {
    description: &'static str,
    met: bool,
}

pub async fn run(options: &Options, inputs: &Inputs, dir: &Path, servers: &mut Servers) -> Result<()> {
    if options.pods == 0 || options.concurrency == 0 || options.rate.is_some_and(|r| r <= 0.0) {
        bail!("--pods, --concurrency and --rate must be positive");
    }
    let machine = machine::describe(dir);
    let version = machine::version(&inputs.wasmkube).await?;
    let cluster = Cluster::start(servers, &inputs.wasmkube, &dir.join("wasmkube")).await?;
    // The one watch: opened before any create (warm-up included) and kept to the end.
    let mut watch = PodWatch::open(cluster.pods.clone()).await?;
    let image = inputs.image();
    eprintln!("{version} up (pid {}); warming up with {} pods...", cluster.pid, options.warmup_pods);
    cluster.warm_up(&mut watch, &image, options.warmup_pods).await?;

    eprintln!("creating {} pods...", options.pods);
    let names: Vec<String> = (0..options.pods).map(|i| format!("pod-{i:05}")).collect();
    let pace = Pace { concurrency: options.concurrency, rate: options.rate };
    let (created, create_errors) = cluster::create_pods(&cluster.pods, &image, names, pace).await;
    let target = options.warmup_pods + created.len();
    watch.wait_ready(target, Duration::from_secs(options.timeout_secs)).await?;
    let result = outcome(&created, create_errors, &watch)?;

    let report = Report {
        header: Header::new(
            "pod-bench start-latency",
            machine,
            version,
            Workload {
                description: "pods bound to the node (spec.nodeName), image file:// hello.wasm with a containerPort; \
                each timed from sending its create to seeing it Running with its container ready on one watch \
                opened before the first create",
                pods: options.pods,
                warmup_pods: options.warmup_pods,
                concurrency: options.concurrency,
                rate_pods_per_sec: options.rate,
                image,
            },
        ),
        goal: Goal {
            description: "p99 <= 50 ms",
            met: result.create_errors.count == 0 && result.start_latency_ms.p99 <= GOAL_P99_MS,
        },
        result,
    };
    print(&report);
    summary::write_json(&report, &options.out)?;
    eprintln!("wrote {}", options.out.display());
    Ok(())
}

/// Matches each create with the moment the watch saw its pod ready.
fn outcome(created: &[Created], create_errors: Failures, watch: &PodWatch) -> Result<Outcome> {
    let ready = watch.ready();
    let mut start = Vec::with_capacity(created.len());
    for pod in created {
        let seen = ready.get(&pod.name).with_context(|| format!("{} counted ready but not recorded", pod.name))?;
        start.push(seen.at.saturating_duration_since(pod.sent));
    }
    let first_sent = created.iter().map(|c| c.sent).min().unwrap_or_else(Instant::now);
    let last_ready = created.iter().filter_map(|c| ready.get(&c.name)).map(|r| r.at).max().unwrap_or(first_sent);
    let elapsed = last_ready.saturating_duration_since(first_sent).as_secs_f64();
    Ok(Outcome {
        pods_created: created.len(),
        pods_ready: created.iter().filter(|c| ready.contains_key(&c.name)).count(),
        create_errors,
        start_latency_ms: Latency::of_unsorted(start),
        create_response_ms: Latency::of_unsorted(created.iter().map(|c| c.answered - c.sent).collect()),
        pods_per_sec: if elapsed > 0.0 { round(created.len() as f64 / elapsed, 1) } else { 0.0 },
        elapsed_secs: round(elapsed, 2),
        watch_resumed: watch.resumed(),
    })
}

fn print(report: &Report) {
    let (w, r) = (&report.header.workload, &report.result);
    let pace = match w.rate_pods_per_sec {
        Some(rate) => format!("{rate} pods/s, at most {} in flight", w.concurrency),
        None if w.concurrency == 1 => "sequential creates".to_string(),
        None => format!("{} creates in flight", w.concurrency),
    };
    println!(
        "start-latency: {} pods ({pace}), {} ready, {} create errors",
        w.pods, r.pods_ready, r.create_errors.count
    );
    println!("{:<34} {:>8} {:>8} {:>8} {:>8}", "ms", "p50", "p90", "p99", "max");
    for (label, l) in
        [("create sent -> Running+ready", &r.start_latency_ms), ("create sent -> 201", &r.create_response_ms)]
    {
        println!("{label:<34} {:>8.2} {:>8.2} {:>8.2} {:>8.2}", l.p50, l.p90, l.p99, l.max);
    }
    println!("throughput: {:.1} pods/s ({} pods in {:.2} s)", r.pods_per_sec, r.pods_created, r.elapsed_secs);
    let verdict = if report.goal.met { "met" } else { "NOT met" };
    println!("goal {}: {verdict} (Kubernetes' pod startup SLO is p99 <= 5 s)", report.goal.description);
    if !r.create_errors.examples.is_empty() {
        println!("first create errors: {:?}", r.create_errors.examples);
    }
}
