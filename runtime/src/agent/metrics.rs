//! The agent's Prometheus metrics, served as text at the node API's `/metrics`:
//!
//! - `wasmkube_agent_pods{phase}` and `wasmkube_agent_containers{state}` — what runs on the node;
//! - `wasmkube_container_instances{namespace,pod,container}` — live Wasm instances, and
//!   `wasmkube_container_instantiations_total` — instances created;
//! - `wasmkube_container_memory_bytes` — linear memory held by the container's live instances;
//! - `wasmkube_container_cpu_seconds_total` — time spent running the container's guests;
//! - `wasmkube_container_requests_total` / `wasmkube_container_request_errors_total` — requests a
//!   handler answered, and those answered 5xx (failures, deadlines);
//! - `wasmkube_instantiate_duration_seconds` — how long instantiation takes (histogram);
//! - `wasmkube_compile_cache_total{source}` — container starts whose code was `memory`- or
//!   `disk`-cached or `compiled`.
//!
//! Per-container series are read at scrape time from the running sandboxes ([`PodIndex`]), so a
//! deleted pod's series disappear with it.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::container::State;
use super::sandbox::{Shared, phase};
use crate::host::Source;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerLabels {
    namespace: String,
    pod: String,
    container: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// One running pod, as the scrape sees it.
struct PodEntry {
    namespace: String,
    name: String,
    shared: Shared,
}

/// The sandboxes running now, by pod uid.
#[derive(Clone, Default)]
pub struct PodIndex(Arc<Mutex<HashMap<String, PodEntry>>>);

impl fmt::Debug for PodIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PodIndex({} pods)", self.0.lock().map(|m| m.len()).unwrap_or(0))
    }
}

impl PodIndex {
    pub fn insert(&self, uid: &str, namespace: &str, name: &str, shared: Shared) {
        let entry = PodEntry { namespace: namespace.to_string(), name: name.to_string(), shared };
        self.0.lock().expect("pod index lock").insert(uid.to_string(), entry);
    }

    pub fn remove(&self, uid: &str) {
        self.0.lock().expect("pod index lock").remove(uid);
    }

    /// What the node and each container of this node's sandboxes have used so far, for `metrics.k8s.io` (the API
    /// server turns two of these into rates). Containers count the time their guests ran (epoch
    /// accounting) and the linear memory their live instances hold; the node counts the agent
    /// process's CPU time and resident memory, which include every guest.
    pub fn usage_summary(&self) -> serde_json::Value {
        let mut pods = Vec::new();
        for entry in self.0.lock().expect("pod index lock").values() {
            let containers: Vec<serde_json::Value> = entry
                .shared
                .snapshot()
                .iter()
                .enumerate()
                .map(|(i, status)| {
                    let usage = entry.shared.usage(i);
                    serde_json::json!({
                        "name": status.name,
                        "cpuNanos": usage.cpu_nanos.load(Ordering::Relaxed),
                        "memoryBytes": usage.memory_bytes.load(Ordering::Relaxed).max(0),
                    })
                })
                .collect();
            pods.push(serde_json::json!({"namespace": entry.namespace, "name": entry.name, "containers": containers}));
        }
        let (cpu_nanos, memory_bytes) = process_usage();
        serde_json::json!({"node": {"cpuNanos": cpu_nanos, "memoryBytes": memory_bytes}, "pods": pods})
    }
}

/// This process's CPU time (user + system) in nanoseconds and resident memory in bytes, from
/// `/proc/self` (zero where that cannot be read).
fn process_usage() -> (u64, u64) {
    // /proc reports CPU in USER_HZ ticks, which Linux fixes at 100 per second for userspace.
    const NANOS_PER_TICK: u64 = 10_000_000;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces, so split after its closing paren):
    // state is field 3; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let cpu = (ticks(11) + ticks(12)) * NANOS_PER_TICK;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    (cpu, rss_kib * 1024)
}

/// Everything the agent records, and the registry that renders it.
pub struct AgentMetrics {
    registry: Registry,
    pub instantiate_seconds: Histogram,
    compile_cache: Family<SourceLabels, Counter>,
    pub pods: PodIndex,
}

impl AgentMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        // 10 µs .. ~1.3 s: instantiation from a pre-linked component is microseconds.
        let instantiate_seconds = Histogram::new(exponential_buckets(0.00001, 2.0, 18));
        registry.register(
            "wasmkube_instantiate_duration_seconds",
            "Time to instantiate a container's component or module",
            instantiate_seconds.clone(),
        );
        let compile_cache = Family::<SourceLabels, Counter>::default();
        registry.register(
            "wasmkube_compile_cache",
            "Container starts by where their compiled code came from (memory, disk or compiled)",
            compile_cache.clone(),
        );
        let pods = PodIndex::default();
        registry.register_collector(Box::new(pods.clone()));
        Self { registry, instantiate_seconds, compile_cache, pods }
    }

    pub fn record_compile(&self, source: Source) {
        let source = match source {
            Source::Memory => "memory",
            Source::Disk => "disk",
            Source::Compiled => "compiled",
        };
        self.compile_cache.get_or_create(&SourceLabels { source }).inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// One container's numbers at scrape time.
struct Sample {
    labels: ContainerLabels,
    instances: i64,
    instantiations: u64,
    memory: i64,
    cpu_seconds: f64,
    requests: u64,
    errors: u64,
}

/// Writes one metric family with a series per container.
fn encode_each<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    (name, help, kind): (&str, &str, MetricType),
    samples: &[Sample],
    metric: impl Fn(&Sample) -> M,
) -> Result<(), fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for sample in samples {
        metric(sample).encode(family.encode_family(&sample.labels)?)?;
    }
    Ok(())
}

/// Reads the running sandboxes on each scrape.
impl Collector for PodIndex {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut phases: Vec<(&'static str, i64)> =
            ["Failed", "Pending", "Running", "Succeeded"].into_iter().map(|p| (p, 0)).collect();
        let mut states: Vec<(&'static str, i64)> =
            ["running", "terminated", "waiting"].into_iter().map(|s| (s, 0)).collect();
        let mut samples = Vec::new();
        for entry in self.0.lock().expect("pod index lock").values() {
            let statuses = entry.shared.snapshot();
            let pod_phase = phase(&statuses);
            phases.iter_mut().filter(|(p, _)| *p == pod_phase).for_each(|(_, n)| *n += 1);
            for (i, status) in statuses.iter().enumerate() {
                let state = match status.state {
                    State::Waiting { .. } => "waiting",
                    State::Running { .. } => "running",
                    State::Terminated { .. } => "terminated",
                };
                states.iter_mut().filter(|(s, _)| *s == state).for_each(|(_, n)| *n += 1);
                let usage = entry.shared.usage(i);
                samples.push(Sample {
                    labels: ContainerLabels {
                        namespace: entry.namespace.clone(),
                        pod: entry.name.clone(),
                        container: status.name.clone(),
                    },
                    instances: usage.instances.load(Ordering::Relaxed),
                    instantiations: usage.instantiations.load(Ordering::Relaxed),
                    memory: usage.memory_bytes.load(Ordering::Relaxed),
                    cpu_seconds: usage.cpu_nanos.load(Ordering::Relaxed) as f64 / 1e9,
                    requests: usage.requests.load(Ordering::Relaxed),
                    errors: usage.request_errors.load(Ordering::Relaxed),
                });
            }
        }
        samples.sort_by(|a, b| {
            let key = |s: &Sample| (s.labels.namespace.clone(), s.labels.pod.clone(), s.labels.container.clone());
            key(a).cmp(&key(b))
        });

        let mut family =
            encoder.encode_descriptor("wasmkube_agent_pods", "Pods on this node by phase", None, MetricType::Gauge)?;
        for (phase, n) in phases {
            ConstGauge::new(n).encode(family.encode_family(&PhaseLabels { phase })?)?;
        }
        let help = "Containers on this node by state";
        let mut family = encoder.encode_descriptor("wasmkube_agent_containers", help, None, MetricType::Gauge)?;
        for (state, n) in states {
            ConstGauge::new(n).encode(family.encode_family(&StateLabels { state })?)?;
        }
        use MetricType::{Counter as C, Gauge as G};
        let e = &mut encoder;
        encode_each(e, ("wasmkube_container_instances", "Live Wasm instances of the container", G), &samples, |s| {
            ConstGauge::new(s.instances)
        })?;
        let help = "Wasm instances the container has created";
        encode_each(e, ("wasmkube_container_instantiations", help, C), &samples, |s| {
            ConstCounter::new(s.instantiations)
        })?;
        let help = "Linear memory held by the container's live instances";
        encode_each(e, ("wasmkube_container_memory_bytes", help, G), &samples, |s| ConstGauge::new(s.memory))?;
        let help = "Time spent running the container's guests";
        encode_each(e, ("wasmkube_container_cpu_seconds", help, C), &samples, |s| ConstCounter::new(s.cpu_seconds))?;
        let help = "Requests the container's handler answered";
        encode_each(e, ("wasmkube_container_requests", help, C), &samples, |s| ConstCounter::new(s.requests))?;
        let help = "Requests the container's handler answered with a 5xx (failures, deadlines)";
        encode_each(e, ("wasmkube_container_request_errors", help, C), &samples, |s| ConstCounter::new(s.errors))?;
        Ok(())
    }
}
