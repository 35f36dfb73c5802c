//! `sched-bench envelope`: whether the control plane holds N nodes and M pods and still answers
//! mutating requests quickly. It fills the cluster (batches of creates, each waited for until
//! bound and Running), then, with everything held and the Leases still renewed, runs a probe
//! load for a while: half the probe clients create ConfigMaps, half merge-patch a label on random
//! pods, each sending its next request when the last is answered.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::StreamExt;
use kube::api::{Patch, PatchParams, PostParams};
use serde::Serialize;
use serde::de::IgnoredAny;
use wasmkube_bench::machine;
use wasmkube_bench::process::Memory;
use wasmkube_bench::servers::Servers;
use wasmkube_bench::summary::{self, Failures, Header, Latency, round};

use crate::cluster::{HollowCluster, Setup};
use crate::hollow::{LeaseWindow, Registration};
use crate::plane::Window;
use crate::pods::{self, Created, NAMESPACE};
use crate::report;
use crate::schedule::Scheduled;

#[derive(Debug, clap::Args)]
pub struct Options {
    #[command(flatten)]
    setup: Setup,

    /// Pods to fill the cluster with.
    #[arg(long, default_value_t = 150_000)]
    pods: usize,

    /// Pods created per batch; each batch is waited for until bound and Running before the next.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,

    /// Seconds of probe load once the cluster is full.
    #[arg(long, default_value_t = 30)]
    probe_secs: u64,

    /// Probe clients: half create ConfigMaps, half patch pods (at least one of each).
    #[arg(long, default_value_t = 16)]
    probe_clients: usize,

    /// Give up filling the cluster after this many seconds and probe what was reached.
    #[arg(long, default_value_t = 3600)]
    timeout_secs: u64,

    /// Where the JSON results are written.
    #[arg(long, value_name = "PATH", default_value = "bench/results/sched-envelope.json")]
    out: PathBuf,
}

const GOAL_NODES: usize = 5_000;
const GOAL_PODS: usize = 150_000;
/// Kubernetes' API call latency SLO for mutating calls on single objects.
const GOAL_P99_MS: f64 = 1000.0;

#[derive(Debug, Serialize)]
struct Report {
    #[serde(flatten)]
    header: Header<Workload>,
    nodes: Registration,
    fill: Fill,
    held: Held,
    probe: Probe,
    goal: Goal,
}

#[derive(Debug, Serialize)]
struct Workload {
    description: &'static str,
    setup: Setup,
    pods: usize,
    batch: usize,
    probe_secs: u64,
    probe_clients: usize,
    timeout_secs: u64,
}

#[derive(Debug, Serialize)]
struct Fill {
    /// Every pod was created and seen bound and Running before the timeout.
    reached: bool,
    create_errors: Failures,
    scheduling: Scheduled,
    status_patch_ms: Latency,
    status_patch_errors: Failures,
    leases: LeaseWindow,
    server: Window,
}

/// The cluster as held once full, before the probe.
#[derive(Debug, Serialize)]
struct Held {
    pods_bound: usize,
    pods_running: usize,
    server_memory: Memory,
    data_dir_bytes: u64,
    data_dir_mib: f64,
}

impl Held {
    fn now(cluster: &HollowCluster) -> Result<Self> {
        let progress = cluster.watch.progress();
        let data_dir_bytes = cluster.plane.data_bytes();
        Ok(Self {
            pods_bound: progress.bound,
            pods_running: progress.running,
            server_memory: cluster.plane.reading()?.memory,
            data_dir_bytes,
            data_dir_mib: round(data_dir_bytes as f64 / (1024.0 * 1024.0), 1),
        })
    }
}

#[derive(Debug, Serialize)]
struct Probe {
    secs: u64,
    requests: Vec<ProbeVerb>,
    leases: LeaseWindow,
    server: Window,
}

/// One kind of probe request, from its clients' side.
#[derive(Debug, Serialize)]
struct ProbeVerb {
    verb: &'static str,
    clients: usize,
    requests: usize,
    per_sec: f64,
    latency_ms: Latency,
    errors: Failures,
}

#[derive(Debug, Serialize)]
struct Goal {
    description: &'static str,
    /// Unknown unless run at 5,000 nodes and 150,000 pods.
    met: Option<bool>,
}

pub async fn run(options: &Options, wasmkube: &Path, dir: &Path, servers: &mut Servers) -> Result<()> {
    options.setup.validate()?;
    if options.pods == 0 || options.batch == 0 || options.probe_secs == 0 || options.probe_clients < 2 {
        bail!("--pods, --batch and --probe-secs must be positive and --probe-clients at least 2");
    }
    let machine = machine::describe(dir);
    let version = machine::version(wasmkube).await?;
    let mut cluster = HollowCluster::start(&options.setup, wasmkube, &dir.join("wasmkube"), servers).await?;
    let (fill, created) = fill(options, &mut cluster).await?;
    let held = Held::now(&cluster)?;
    eprintln!("probing for {} s with {} clients...", options.probe_secs, options.probe_clients);
    let names: Vec<String> = created.into_iter().map(|c| c.name).collect();
    let _ = cluster.leases.take();
    let mark = cluster.plane.mark().await?;
    let requests = probe(&cluster, &names, options.probe_clients, Duration::from_secs(options.probe_secs)).await;
    let probe = Probe {
        secs: options.probe_secs,
        requests,
        leases: cluster.leases.take(),
        server: cluster.plane.window(&mark).await?,
    };
    let at_goal = options.setup.nodes >= GOAL_NODES && options.pods >= GOAL_PODS;
    let fast = probe.requests.iter().all(|r| r.errors.count == 0 && r.latency_ms.p99 <= GOAL_P99_MS);
    let report = Report {
        header: Header::new(
            "sched-bench envelope",
            machine,
            version,
            Workload {
                description: "wasmkube server alone; N hollow nodes (leases renewed throughout); M pods created in \
                batches by C clients, each batch waited for until bound and Running (hollow kubelet); then a probe: \
                half the probe clients create ConfigMaps, half merge-patch a label on random pods, back to back",
                setup: options.setup.clone(),
                pods: options.pods,
                batch: options.batch,
                probe_secs: options.probe_secs,
                probe_clients: options.probe_clients,
                timeout_secs: options.timeout_secs,
            },
        ),
        nodes: cluster.registration.clone(),
        goal: Goal {
            description: "5,000 nodes and 150,000 pods held, mutating API calls p99 <= 1 s (Kubernetes' SLO)",
            met: at_goal.then_some(fill.reached && fast),
        },
        fill,
        held,
        probe,
    };
    print(&report);
    summary::write_json(&report, &options.out)?;
    eprintln!("wrote {}", options.out.display());
    Ok(())
}

/// Creates the pods batch by batch, waiting for each until bound and Running; stops at the
/// timeout, with what was reached.
async fn fill(options: &Options, cluster: &mut HollowCluster) -> Result<(Fill, Vec<Created>)> {
    let clients = options.setup.clients;
    let _ = (cluster.leases.take(), cluster.kubelet.take());
    let mark = cluster.plane.mark().await?;
    let deadline = Instant::now() + Duration::from_secs(options.timeout_secs);
    let mut created = Vec::with_capacity(options.pods);
    let mut create_errors = Failures::default();
    let mut reached = true;
    for start in (0..options.pods).step_by(options.batch) {
        let names = (start..(start + options.batch).min(options.pods)).map(pods::pod_name).collect();
        let (batch, errors) = pods::create(&cluster.pods, names, clients).await;
        created.extend(batch);
        create_errors.merge(errors);
        eprintln!(
            "{} pods created ({} errors); waiting until bound and Running...",
            created.len(),
            create_errors.count
        );
        if !cluster.wait_running(created.len(), deadline).await? {
            reached = false;
            break;
        }
    }
    reached &= create_errors.count == 0;
    let server = cluster.plane.window(&mark).await?;
    let patches = cluster.kubelet.take();
    let seen = cluster.watch.seen();
    let fill = Fill {
        reached,
        create_errors,
        scheduling: Scheduled::of(&created, &seen, &cluster.registration.names, options.setup.zones),
        status_patch_ms: Latency::of_unsorted(patches.latencies),
        status_patch_errors: patches.errors,
        leases: cluster.leases.take(),
        server,
    };
    Ok((fill, created))
}

/// Runs the probe load for `secs` and returns, per kind of request, what its clients saw.
async fn probe(cluster: &HollowCluster, pods: &[String], clients: usize, secs: Duration) -> Vec<ProbeVerb> {
    let end = Instant::now() + secs;
    let creators = clients / 2;
    let runs = futures::stream::iter(0..clients)
        .map(|c| probe_client(cluster, pods, c, c < creators, end))
        .buffer_unordered(clients)
        .collect::<Vec<_>>()
        .await;
    let mut verbs = Vec::new();
    for (verb, creates) in [("create configmaps", true), ("patch pods (label)", false)] {
        let (mut latencies, mut errors, mut clients) = (Vec::new(), Failures::default(), 0);
        for run in runs.iter().filter(|r| r.creates == creates) {
            clients += 1;
            latencies.extend_from_slice(&run.latencies);
            errors.merge(run.errors.clone());
        }
        verbs.push(ProbeVerb {
            verb,
            clients,
            requests: latencies.len(),
            per_sec: round(latencies.len() as f64 / secs.as_secs_f64(), 1),
            latency_ms: Latency::of_unsorted(latencies),
            errors,
        });
    }
    verbs
}

/// What one probe client saw.
struct ProbeRun {
    creates: bool,
    /// Of the successful requests.
    latencies: Vec<Duration>,
    errors: Failures,
}

/// One probe client until `end`, each request sent when the last is answered: it creates
/// ConfigMaps, or merge-patches a label on random pods of `pods`.
async fn probe_client(cluster: &HollowCluster, pods: &[String], c: usize, creates: bool, end: Instant) -> ProbeRun {
    let client = cluster.plane.client.clone();
    let pods_url = kube::core::Request::new(cluster.pods.resource_url());
    let configmaps = kube::core::Request::new(format!("/api/v1/namespaces/{NAMESPACE}/configmaps"));
    let mut run = ProbeRun { creates, latencies: Vec::new(), errors: Failures::default() };
    let mut i = 0u64;
    while Instant::now() < end {
        i += 1;
        let request = if creates || pods.is_empty() {
            let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("probe-{c}-{i}")}, "data": {"value": "sched-bench probe"}});
            configmaps.create(&PostParams::default(), serde_json::to_vec(&body).expect("JSON serializes"))
        } else {
            let name = &pods[rand::random_range(0..pods.len())];
            let patch = Patch::Merge(serde_json::json!({"metadata": {"labels": {"probe": format!("{c}-{i}")}}}));
            pods_url.patch(name, &PatchParams::default(), &patch)
        };
        let sent = Instant::now();
        let result = match request {
            Ok(request) => client.request::<IgnoredAny>(request).await.map(|_| ()),
            Err(e) => Err(kube::Error::BuildRequest(e)),
        };
        match result {
            Ok(()) => run.latencies.push(sent.elapsed()),
            Err(e) => run.errors.record(e.to_string()),
        }
    }
    run
}

fn print(report: &Report) {
    let (w, f, s) = (&report.header.workload, &report.fill, &report.fill.scheduling);
    println!(
        "envelope: {} nodes ({} registered), {} pods in batches of {}; {} created, {} bound, {} Running{}",
        w.setup.nodes,
        report.nodes.registered,
        w.pods,
        w.batch,
        s.pods_created,
        s.pods_bound,
        s.pods_running,
        if f.reached { "" } else { " (NOT REACHED)" }
    );
    println!(
        "fill: {:.1} s to the last binding ({:.1} pods/s scheduled); all Running after {}",
        s.first_create_to_last_bound_secs,
        s.scheduled_pods_per_sec,
        s.first_create_to_all_running_secs.map_or("- (not all)".to_string(), |v| format!("{v:.1} s"))
    );
    report::print_server(&f.server);
    let (h, mib) = (&report.held, |kib: u64| kib as f64 / 1024.0);
    println!(
        "held: {} pods Running; server VmRSS {:.0} MiB, VmHWM {:.0} MiB; data dir {:.1} MiB",
        h.pods_running,
        mib(h.server_memory.vm_rss_kib),
        mib(h.server_memory.vm_hwm_kib),
        h.data_dir_mib
    );
    let p = &report.probe;
    println!("probe ({} s); longest a Lease went unrenewed during it: {:.1} s", p.secs, p.leases.max_gap_secs);
    let rows: Vec<(String, &Latency)> = p
        .requests
        .iter()
        .map(|r| (format!("{} ({}/s)", r.verb, r.per_sec), &r.latency_ms))
        .chain(std::iter::once((
            format!("lease renew ({}/s of {})", p.leases.per_sec, p.leases.nominal_per_sec),
            &p.leases.latency_ms,
        )))
        .collect();
    report::print_latencies(&rows.iter().map(|(l, v)| (l.as_str(), *v)).collect::<Vec<_>>());
    let errors: Vec<(&str, &Failures)> = p.requests.iter().map(|r| (r.verb, &r.errors)).collect();
    report::print_errors(
        &[errors, vec![("lease renewals", &p.leases.errors), ("pod creates", &f.create_errors)]].concat(),
    );
    report::print_server(&p.server);
    let verdict = match report.goal.met {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured (not run at 5,000 nodes / 150,000 pods)",
    };
    println!("goal {}: {verdict}", report.goal.description);
}
