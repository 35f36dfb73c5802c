//! `sched-bench backlog`: the scheduler as Kubernetes' scheduler_perf measures it — how many
//! pods per second it decides and durably binds when M pods are already waiting on N nodes.
//!
//! [`throughput`](crate::throughput) measures the whole server over HTTP, where creating the pods
//! shares the two cores with the scheduler, so its rate is bounded by how fast the API accepts
//! creates. Here the control plane's object service runs in this process on a real redb file,
//! the nodes and pods are written before the scheduler starts, and the clock runs from the
//! scheduler's start (its first full read of pods and nodes included) to the last binding
//! committed. Every binding is a durable store write guarded by the pod's resourceVersion, with
//! its `Scheduled` Event, exactly as in `wasmkube server`. The hollow agent ([`agent`](crate::agent))
//! renews every node's Lease and marks each bound pod Running meanwhile, through the same object
//! service; `--no-agent` leaves it out to measure the scheduler with nothing else writing.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wasmkube_bench::machine;
use wasmkube_bench::process;
use wasmkube_bench::summary::{self, Header, round};
use wasmkube_control::controller::namespace;
use wasmkube_control::events::Recorder;
use wasmkube_control::metrics::Metrics;
use wasmkube_control::objects::{Objects, PatchKind, Subresource, Target, WriteOptions};
use wasmkube_control::scheduler::{self, Scheduler};
use wasmkube_control::store::redb::{RedbConfig, RedbStore};

use crate::agent::{self, Agent, Work};
use crate::hollow;
use crate::metrics::{self, Commits, Scrape};
use crate::pods;
use crate::report::{GOAL_NODES, GOAL_PODS, ThroughputGoal};

#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct Options {
    /// Nodes, each with 8 CPUs, 32 GiB and 110 pods allocatable.
    #[arg(long, default_value_t = 5_000)]
    nodes: usize,

    /// Zones the nodes are spread over (label `topology.kubernetes.io/zone`).
    #[arg(long, default_value_t = 10)]
    zones: usize,

    /// Pods waiting when the scheduler starts.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,

    /// Leave out the in-process hollow agent (each node's Lease renewed every 10 s, each bound
    /// pod's status set Running): the scheduler with nothing else writing.
    #[arg(long)]
    no_agent: bool,

    /// Independent rounds, each on a fresh store; the headline is their median.
    #[arg(long, default_value_t = 5)]
    rounds: usize,

    /// Give up if the pods are not all bound this many seconds after the scheduler starts.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,

    /// Where the JSON results are written.
    #[arg(long, value_name = "PATH", default_value = "bench/results/sched-backlog.json")]
    #[serde(skip)]
    out: PathBuf,
}

/// Writes in flight while the cluster is filled (not measured).
const FILL_CONCURRENCY: usize = 64;

#[derive(Debug, Serialize)]
struct Report {
    #[serde(flatten)]
    header: Header<Workload>,
    /// The median round's rate.
    median_pods_per_sec: f64,
    rounds: Vec<Outcome>,
    goal: ThroughputGoal,
}

#[derive(Debug, Serialize)]
struct Workload {
    description: &'static str,
    options: Options,
}

#[derive(Debug, Serialize)]
struct Outcome {
    finished: bool,
    fill_secs: f64,
    pods_bound: usize,
    /// Pods bound / (last binding committed − scheduler started).
    scheduled_pods_per_sec: f64,
    /// Scheduler started → first binding committed (its first read of every pod and node).
    first_binding_secs: f64,
    last_binding_secs: f64,
    nodes_used: usize,
    max_pods_per_node: usize,
    /// CPU seconds this process used from the scheduler's start until every pod was bound (and,
    /// with the agent, Running): scheduler, store writer, watch, and the agent's writes.
    cpu_secs: f64,
    /// Durable commits while the scheduler ran, and the writes (bindings, Events, and the
    /// agent's) they carried.
    commits: Option<Commits>,
    /// Pods seen Running (the agent's status patch), and when the last was.
    pods_running: usize,
    all_running_secs: Option<f64>,
    /// What the hollow agent did, unless left out.
    agent: Option<Work>,
}

pub async fn run(options: &Options, wasmkube: &Path, dir: &Path) -> Result<()> {
    if options.nodes == 0 || options.pods == 0 || options.rounds == 0 {
        bail!("--nodes, --pods and --rounds must be positive");
    }
    let machine = machine::describe(dir);
    let version = machine::version(wasmkube).await?;
    let mut rounds = Vec::new();
    for round in 1..=options.rounds {
        let outcome = measure_round(options, &dir.join(format!("round-{round}"))).await?;
        println!(
            "round {round}: {} of {} pods bound in {:.2} s: {:.1} pods/s (first binding after {:.2} s); {} nodes used, at most {} pods on one; {:.1} CPU s",
            outcome.pods_bound,
            options.pods,
            outcome.last_binding_secs,
            outcome.scheduled_pods_per_sec,
            outcome.first_binding_secs,
            outcome.nodes_used,
            outcome.max_pods_per_node,
            outcome.cpu_secs,
        );
        if let Some(c) = &outcome.commits {
            println!("         {} writes in {} commits ({:?} per commit)", c.writes, c.commits, c.writes_per_commit);
        }
        rounds.push(outcome);
    }
    let mut rates: Vec<f64> = rounds.iter().map(|r| r.scheduled_pods_per_sec).collect();
    rates.sort_by(f64::total_cmp);
    let middle = rates.len() / 2;
    let median = if rates.len() % 2 == 1 { rates[middle] } else { round((rates[middle - 1] + rates[middle]) / 2.0, 1) };
    println!(
        "median of {} rounds: {median:.1} pods/s (range {:.1}-{:.1})",
        rates.len(),
        rates[0],
        rates[rates.len() - 1]
    );
    // The goal's shape includes the hollow agent (Leases renewed, pods marked Running).
    let at_goal = options.nodes == GOAL_NODES && options.pods == GOAL_PODS && !options.no_agent;
    let finished = rounds.iter().all(|r| r.finished);
    let report = Report {
        header: Header::new(
            "sched-bench backlog",
            machine,
            version,
            Workload {
                description: "the scheduler and object service in one process on a real redb file; N nodes (each \
                with a Lease renewed every 10 s unless --no-agent) and M pods (requests cpu 100m / memory 128Mi, \
                no nodeName) written first; a hollow agent in the same process marks each bound pod Running \
                (unless --no-agent); timed from the scheduler's start to the last durable binding",
                options: options.clone(),
            },
        ),
        goal: ThroughputGoal::new(median, finished, at_goal),
        median_pods_per_sec: median,
        rounds,
    };
    report.goal.print();
    summary::write_json(&report, &options.out)?;
    println!("results: {}", options.out.display());
    Ok(())
}

/// One round on a fresh store in `dir`: fill the cluster, then time the scheduler.
async fn measure_round(options: &Options, dir: &Path) -> Result<Outcome> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let metrics = Metrics::new();
    let store = RedbStore::open(&dir.join("store.redb"), RedbConfig::default(), metrics.store.clone())
        .context("opening the store")?;
    let objects = Objects::new(Arc::new(store));
    namespace::ensure_built_in(&objects).await.context("creating the built-in namespaces")?;
    let fill = Instant::now();
    fill_cluster(&objects, options).await?;
    let outcome = measure(&objects, &metrics, options, fill.elapsed().as_secs_f64()).await;
    drop(objects);
    let _ = std::fs::remove_dir_all(dir);
    outcome
}

/// Writes the nodes (with their Ready status) and the pods, `FILL_CONCURRENCY` at a time.
async fn fill_cluster(objects: &Objects, options: &Options) -> Result<()> {
    let kind =
        |resource: &str| wasmkube_api::kinds::by_resource("", "v1", resource).expect("core kinds are registered");
    let opts = WriteOptions::default();
    let namespaces = Target { kind: kind("namespaces"), namespace: None, name: None };
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": pods::NAMESPACE}});
    objects.create(&namespaces, namespace, &opts).await.context("creating the pods' namespace")?;
    let nodes = futures::stream::iter(0..options.nodes)
        .map(|i| {
            let (objects, opts) = (objects, &opts);
            async move {
                let manifest = hollow::node(i, options.zones);
                let status = json!({"status": manifest["status"]});
                let all = Target { kind: kind("nodes"), namespace: None, name: None };
                let created = objects.create(&all, manifest, opts).await?;
                if created.object.pointer("/status/allocatable").is_none() {
                    let one = Target { name: Some(hollow::node_name(i)), ..all };
                    objects.patch(&one, status, PatchKind::Merge, Subresource::Status, opts).await?;
                }
                if !options.no_agent {
                    agent::create_lease(objects, i).await?;
                }
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(FILL_CONCURRENCY);
    nodes.collect::<Vec<_>>().await.into_iter().collect::<Result<Vec<()>>>().context("writing the nodes")?;
    let pods = futures::stream::iter(0..options.pods)
        .map(|i| {
            let (objects, opts) = (objects, &opts);
            async move {
                let manifest: Value = serde_json::from_slice(&pods::manifest(&pods::pod_name(i)))?;
                let all = Target { kind: kind("pods"), namespace: Some(pods::NAMESPACE.into()), name: None };
                objects.create(&all, manifest, opts).await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(FILL_CONCURRENCY);
    pods.collect::<Vec<_>>().await.into_iter().collect::<Result<Vec<()>>>().context("writing the pods")?;
    Ok(())
}

/// Starts the scheduler and follows the store's pod events until every pod is bound.
async fn measure(objects: &Objects, metrics: &Metrics, options: &Options, fill_secs: f64) -> Result<Outcome> {
    let store = objects.store().clone();
    let prefix = wasmkube_api::kinds::by_resource("", "v1", "pods").expect("pods are registered").key_prefix();
    let mut changes = store.watch(&prefix, store.revision());
    let cancel = CancellationToken::new();
    let scrape = || Scrape::parse(&wasmkube_control::metrics::render(&metrics.registry()));
    let scraped = scrape();
    let cpu_before = process::cpu_time("self")?;
    let started = Instant::now();
    let task = tokio::spawn(scheduler::run(
        objects.clone(),
        Recorder::new(objects.clone()),
        Scheduler::default(),
        cancel.clone(),
    ));
    let agent = (!options.no_agent).then(|| Agent::start(objects, options.nodes));
    let deadline = tokio::time::sleep(Duration::from_secs(options.timeout_secs));
    tokio::pin!(deadline);
    let mut bound: HashMap<String, String> = HashMap::new();
    let mut running: HashSet<String> = HashSet::new();
    let (mut first, mut last, mut all_running) = (None, Duration::ZERO, None);
    let finished = loop {
        if bound.len() == options.pods && (agent.is_none() || running.len() == options.pods) {
            break true;
        }
        let event = tokio::select! {
            _ = &mut deadline => break false,
            event = changes.next() => event,
        };
        let Some(event) = event else { break false };
        let event = event.context("watching the pods")?;
        let Some(value) = event.value.as_deref() else { continue };
        // Only the scheduler writes pods here, so any pod with a node is one it bound. The
        // field is found in the bytes rather than by parsing the pod: this loop shares the
        // cores with what it measures.
        if let Some(node) = node_name(value)
            && bound.insert(event.key.clone(), node.to_string()).is_none()
        {
            last = started.elapsed();
            first.get_or_insert(last);
            if let Some(agent) = &agent {
                let pod = event.key.rsplit('/').next().unwrap_or_default();
                agent.pod_bound(pod.to_string(), node.to_string());
            }
        }
        if contains(value, br#""phase":"Running""#)
            && running.insert(event.key.clone())
            && running.len() == options.pods
        {
            all_running = Some(started.elapsed());
        }
    };
    let work = agent.map(Agent::stop);
    cancel.cancel();
    let _ = task.await;
    let cpu_secs = (process::cpu_time("self")? - cpu_before).as_secs_f64();
    let commits = metrics::commits(&scraped, &scrape());
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for node in bound.values() {
        *per_node.entry(node).or_default() += 1;
    }
    let secs = last.as_secs_f64();
    Ok(Outcome {
        finished,
        fill_secs: round(fill_secs, 2),
        pods_bound: bound.len(),
        scheduled_pods_per_sec: if secs > 0.0 { round(bound.len() as f64 / secs, 1) } else { 0.0 },
        first_binding_secs: round(first.unwrap_or_default().as_secs_f64(), 3),
        last_binding_secs: round(secs, 3),
        nodes_used: per_node.len(),
        max_pods_per_node: per_node.values().copied().max().unwrap_or(0),
        cpu_secs: round(cpu_secs, 2),
        commits,
        pods_running: running.len(),
        all_running_secs: all_running.map(|t| round(t.as_secs_f64(), 3)),
        agent: work,
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `spec.nodeName` of a stored pod, read from its JSON bytes (object keys are unique, and only
/// the pod spec has a `nodeName` field).
fn node_name(pod: &[u8]) -> Option<&str> {
    const FIELD: &[u8] = b"\"nodeName\":\"";
    let start = pod.windows(FIELD.len()).position(|w| w == FIELD)? + FIELD.len();
    let len = pod[start..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&pod[start..start + len]).ok()
}
