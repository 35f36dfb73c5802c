//! The pieces of the printed summary both subcommands share: a latency table, the errors, and
//! what the server did.

use serde::Serialize;
use wasmkube_bench::summary::{self, Failures, Latency};

use crate::plane::Window;

/// One row per latency: p50, p90, p99, max in ms.
pub fn print_latencies(rows: &[(&str, &Latency)]) {
    println!("{:<34} {:>9} {:>9} {:>9} {:>9}", "ms", "p50", "p90", "p99", "max");
    for (label, l) in rows {
        println!("{label:<34} {:>9.2} {:>9.2} {:>9.2} {:>9.2}", l.p50, l.p90, l.p99, l.max);
    }
}

/// The error counts in a line, then the first examples of each kind that had any.
pub fn print_errors(kinds: &[(&str, &Failures)]) {
    let counts: Vec<String> = kinds.iter().map(|(what, f)| format!("{what} {}", f.count)).collect();
    println!("errors: {}", counts.join(", "));
    for (what, f) in kinds.iter().filter(|(_, f)| f.count > 0) {
        println!("  first {what} errors: {:?}", f.examples);
    }
}

/// The server's CPU, memory, commits and per-verb API latency over a window.
pub fn print_server(w: &Window) {
    let commits = w.commits.as_ref().map_or("store commits: not exposed".to_string(), |c| {
        let per = c.writes_per_commit.map_or("-".to_string(), |p| format!("{p:.2}"));
        format!("{} writes in {} durable commits ({per} writes/commit)", c.writes, c.commits)
    });
    println!(
        "server: {:.1} CPU s in {:.1} s ({:.0}% of a core), RSS {:.0} MiB (peak {:.0} MiB); bench process {:.1} CPU s; {commits}",
        w.server_cpu_secs,
        w.wall_secs,
        w.server_cpu_pct,
        w.memory_end.vm_rss_kib as f64 / 1024.0,
        w.memory_end.vm_hwm_kib as f64 / 1024.0,
        w.bench_cpu_secs,
    );
    let Some(api) = &w.api_latency else {
        println!("API latency: the control plane exposes no apiserver_request_duration_seconds histogram");
        return;
    };
    let bound = |v: Option<f64>| v.map_or("> last bucket".to_string(), |ms| format!("<= {ms}"));
    println!("API latency by verb and resource, server side (ms; percentiles are histogram bucket bounds):");
    println!("  {:<8} {:<28} {:>9} {:>14} {:>14} {:>10}", "verb", "resource", "requests", "p50", "p99", "mean");
    for v in &api.by_verb_and_resource {
        let resource = v.resource.as_deref().filter(|r| !r.is_empty()).unwrap_or("(non-resource, e.g. /metrics)");
        println!(
            "  {:<8} {:<28} {:>9} {:>14} {:>14} {:>10.2}",
            v.verb,
            resource,
            v.requests,
            bound(v.p50_ms_at_most),
            bound(v.p99_ms_at_most),
            v.mean_ms
        );
    }
}

/// The throughput goal's shape and rate, which `backlog` and `throughput` both measure against.
pub const GOAL_NODES: usize = 5_000;
pub const GOAL_PODS: usize = 10_000;
const GOAL_PODS_PER_SEC: f64 = 10_000.0;
/// Kubernetes' scheduler_perf pass threshold for SchedulingBasic at 5,000 nodes / 10,000 pods.
const KUBERNETES_THRESHOLD: f64 = 680.0;

/// The throughput goal as a report states it.
#[derive(Debug, Serialize)]
pub struct ThroughputGoal {
    description: &'static str,
    kubernetes: &'static str,
    /// Unknown unless run at the goal's shape.
    met: Option<bool>,
    /// scheduled pods/s ÷ 680.
    vs_kubernetes_threshold: f64,
}

impl ThroughputGoal {
    /// `rate` pods/s measured; `finished` whether every pod was bound without errors; `at_goal`
    /// whether the run had the goal's shape.
    pub fn new(rate: f64, finished: bool, at_goal: bool) -> Self {
        Self {
            description: ">= 10,000 pods/s scheduled for 5,000 nodes / 10,000 pods, bindings durable",
            kubernetes: "scheduler_perf SchedulingBasic 5000Nodes_10000Pods passes at >= 680 pods/s",
            met: at_goal.then_some(finished && rate >= GOAL_PODS_PER_SEC),
            vs_kubernetes_threshold: summary::ratio(rate, KUBERNETES_THRESHOLD),
        }
    }

    /// One line: the goal, whether it was met, and the ratio to Kubernetes' threshold.
    pub fn print(&self) {
        let verdict = match self.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "not measured (not run at the goal's shape)",
        };
        println!(
            "goal {}: {verdict}; {:.2}x Kubernetes' scheduler_perf threshold (680 pods/s)",
            self.description, self.vs_kubernetes_threshold
        );
    }
}
