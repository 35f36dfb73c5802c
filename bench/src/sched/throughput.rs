//! `sched-bench throughput`: how many pods per second the scheduler binds when M pods with
//! resource requests arrive at once on N hollow nodes, measured from the first create sent to
//! the last binding seen on the watch.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::Serialize;
use wasmkube_bench::machine;
use wasmkube_bench::servers::Servers;
use wasmkube_bench::summary::{self, Failures, Header, Latency};

use crate::cluster::{HollowCluster, Setup};
use crate::hollow::{LeaseWindow, Registration};
use crate::plane::Window;
use crate::pods;
use crate::report::{self, GOAL_NODES, GOAL_PODS, ThroughputGoal};
use crate::schedule::Scheduled;

#[derive(Debug, clap::Args)]
pub struct Options {
    #[command(flatten)]
    setup: Setup,

    /// Pods to create and schedule.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,

    /// Give up if the pods are not all bound and Running this many seconds after the first create.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,

    /// Where the JSON results are written.
    #[arg(long, value_name = "PATH", default_value = "bench/results/sched-throughput.json")]
    out: PathBuf,
}

#[derive(Debug, Serialize)]
struct Report {
    #[serde(flatten)]
    header: Header<Workload>,
    nodes: Registration,
    result: Outcome,
    goal: ThroughputGoal,
}

#[derive(Debug, Serialize)]
struct Workload {
    description: &'static str,
    setup: Setup,
    pods: usize,
    timeout_secs: u64,
}

#[derive(Debug, Serialize)]
struct Outcome {
    /// Every created pod was seen bound and Running before the timeout.
    finished: bool,
    create_errors: Failures,
    scheduling: Scheduled,
    /// Hollow kubelet: bound → Running status patch, sent → answered.
    status_patch_ms: Latency,
    status_patch_errors: Failures,
    leases: LeaseWindow,
    /// The server from the first create to the last pod Running (or the timeout).
    server: Window,
    watch_resumed: u32,
    watch_relisted: u32,
}

pub async fn run(options: &Options, wasmkube: &Path, dir: &Path, servers: &mut Servers) -> Result<()> {
    options.setup.validate()?;
    if options.pods == 0 {
        bail!("--pods must be positive");
    }
    let machine = machine::describe(dir);
    let version = machine::version(wasmkube).await?;
    let setup = &options.setup;
    let mut cluster = HollowCluster::start(setup, wasmkube, &dir.join("wasmkube"), servers).await?;
    let result = measure(options, &mut cluster).await?;
    let s = &result.scheduling;
    let at_goal = setup.nodes == GOAL_NODES && options.pods == GOAL_PODS;
    let finished = result.finished && result.create_errors.count == 0;
    let report = Report {
        header: Header::new(
            "sched-bench throughput",
            machine,
            version,
            Workload {
                description: "wasmkube server alone; N hollow nodes (Node + Lease each, leases renewed); M pods \
                (one container, requests cpu 100m / memory 128Mi, no nodeName) created by C concurrent clients \
                as fast as answered; a hollow kubelet marks each bound pod Running",
                setup: setup.clone(),
                pods: options.pods,
                timeout_secs: options.timeout_secs,
            },
        ),
        nodes: cluster.registration.clone(),
        goal: ThroughputGoal::new(s.scheduled_pods_per_sec, finished, at_goal),
        result,
    };
    print(&report);
    summary::write_json(&report, &options.out)?;
    eprintln!("wrote {}", options.out.display());
    Ok(())
}

/// Creates the pods, waits until they all run (or the timeout), and reads what happened.
async fn measure(options: &Options, cluster: &mut HollowCluster) -> Result<Outcome> {
    // Only what happens from the first create on is reported.
    let _ = (cluster.leases.take(), cluster.kubelet.take());
    let mark = cluster.plane.mark().await?;
    let clients = options.setup.clients;
    eprintln!("creating {} pods from {clients} clients...", options.pods);
    let started = Instant::now();
    let names = (0..options.pods).map(pods::pod_name).collect();
    let (created, create_errors) = pods::create(&cluster.pods, names, clients).await;
    eprintln!(
        "{} created in {:.1} s ({} errors); waiting until all are bound and Running...",
        created.len(),
        started.elapsed().as_secs_f64(),
        create_errors.count
    );
    let deadline = started + Duration::from_secs(options.timeout_secs);
    let finished = cluster.wait_running(created.len(), deadline).await?;
    let server = cluster.plane.window(&mark).await?;
    let patches = cluster.kubelet.take();
    let seen = cluster.watch.seen();
    Ok(Outcome {
        finished,
        create_errors,
        scheduling: Scheduled::of(&created, &seen, &cluster.registration.names, options.setup.zones),
        status_patch_ms: Latency::of_unsorted(patches.latencies),
        status_patch_errors: patches.errors,
        leases: cluster.leases.take(),
        server,
        watch_resumed: seen.resumed,
        watch_relisted: seen.relisted,
    })
}

fn print(report: &Report) {
    let (w, r, s) = (&report.header.workload, &report.result, &report.result.scheduling);
    println!(
        "throughput: {} nodes ({} registered in {:.1} s), {} pods from {} clients; {} created, {} bound, {} Running{}",
        w.setup.nodes,
        report.nodes.registered,
        report.nodes.secs,
        w.pods,
        w.setup.clients,
        s.pods_created,
        s.pods_bound,
        s.pods_running,
        if r.finished { "" } else { " (TIMED OUT)" }
    );
    println!(
        "scheduled: {:.1} pods/s (first create -> last bound {:.2} s); steady (p10-p90 of bindings): {}",
        s.scheduled_pods_per_sec,
        s.first_create_to_last_bound_secs,
        s.steady_pods_per_sec.map_or("-".to_string(), |v| format!("{v:.1} pods/s"))
    );
    println!(
        "creates: {:.1}/s over {:.2} s; all Running after {}",
        s.creates_per_sec,
        s.create_secs,
        s.first_create_to_all_running_secs.map_or("- (not all)".to_string(), |v| format!("{v:.2} s"))
    );
    report::print_latencies(&[
        ("create sent -> 201", &s.create_ms),
        ("create sent -> bound (watch)", &s.create_to_bound_ms),
        ("create sent -> Running (watch)", &s.create_to_running_ms),
        ("hollow status patch", &r.status_patch_ms),
        ("lease renew", &r.leases.latency_ms),
    ]);
    report::print_errors(&[
        ("pod creates", &r.create_errors),
        ("status patches", &r.status_patch_errors),
        ("lease renewals", &r.leases.errors),
        ("node registrations", &report.nodes.errors),
    ]);
    let sp = &s.spread;
    println!(
        "spread: {} of {} nodes used, {}..{} pods per node, {}..{} per zone; leases: {:.1} renewals/s (on time: {:.1}), longest gap {:.1} s",
        sp.nodes_used,
        sp.nodes,
        sp.min_pods_per_node,
        sp.max_pods_per_node,
        sp.min_pods_per_zone,
        sp.max_pods_per_zone,
        r.leases.per_sec,
        r.leases.nominal_per_sec,
        r.leases.max_gap_secs
    );
    report::print_server(&r.server);
    report.goal.print();
}
