//! Turning samples into rows and the printed table.

use std::time::Duration;

use serde::Serialize;
use wasmkube_bench::load::{Plan, Sample};
use wasmkube_bench::machine::{Machine, Versions};
use wasmkube_bench::summary::{Latency, ratio, round};

use crate::target::{CommitTotals, System};

/// Everything one run measured, with its conditions; written as JSON.
#[derive(Debug, Serialize)]
pub struct Report {
    pub benchmark: &'static str,
    pub date: String,
    pub machine: Machine,
    pub versions: Versions,
    pub workload: Workload,
    pub results: Vec<Row>,
    pub ratios: Vec<Ratio>,
}

/// What each client did.
#[derive(Debug, Serialize)]
pub struct Workload {
    pub description: &'static str,
    pub duration_secs: u64,
    pub warmup_secs: u64,
    pub clients: Vec<usize>,
    pub configmap_value_bytes: usize,
    /// Size of wasmkube's ConfigMap as stored (the calibration create's response); etcd values have
    /// this size.
    pub stored_object_bytes: usize,
}

/// One (system, client count) point.
#[derive(Debug, Serialize)]
pub struct Row {
    pub system: System,
    pub clients: usize,
    /// Successful writes started in the measured window.
    pub writes: usize,
    pub writes_per_sec: f64,
    pub latency_ms: Latency,
    pub errors: u64,
    pub error_examples: Vec<String>,
    /// Writes per durable commit on the server (group commit), warm-up included.
    pub writes_per_commit: Option<f64>,
    /// CPU used by the server and by this load generator, in % of one core, warm-up included.
    pub server_cpu_pct: f64,
    pub bench_cpu_pct: f64,
}

/// wasmkube / etcd at one client count: above 1 means wasmkube wrote more per second, or took
/// longer per write for the latency ratios.
#[derive(Debug, Serialize)]
pub struct Ratio {
    pub clients: usize,
    pub writes_per_sec: f64,
    pub p50: f64,
    pub p99: f64,
}

/// What happened on the server and in this process while a point ran.
pub struct Usage {
    pub wall: Duration,
    pub server_cpu: Duration,
    pub bench_cpu: Duration,
    pub before: CommitTotals,
    pub after: CommitTotals,
}

impl Row {
    pub fn new(system: System, plan: Plan, mut sample: Sample, usage: &Usage) -> Self {
        sample.latencies.sort_unstable();
        let commits = usage.after.commits - usage.before.commits;
        let pct = |cpu: Duration| round(100.0 * cpu.as_secs_f64() / usage.wall.as_secs_f64(), 0);
        Self {
            system,
            clients: plan.clients,
            writes: sample.latencies.len(),
            writes_per_sec: round(sample.latencies.len() as f64 / plan.duration.as_secs_f64(), 1),
            latency_ms: Latency::of(&sample.latencies),
            errors: sample.errors,
            error_examples: sample.error_examples,
            writes_per_commit: (commits > 0.0).then(|| round((usage.after.writes - usage.before.writes) / commits, 2)),
            server_cpu_pct: pct(usage.server_cpu),
            bench_cpu_pct: pct(usage.bench_cpu),
        }
    }
}

/// The wasmkube/etcd ratios for every client count measured on both.
pub fn ratios(rows: &[Row]) -> Vec<Ratio> {
    let find = |system, clients| rows.iter().find(|r| r.system == system && r.clients == clients);
    rows.iter()
        .filter(|r| r.system == System::Wasmkube)
        .filter_map(|w| {
            let e = find(System::Etcd, w.clients)?;
            Some(Ratio {
                clients: w.clients,
                writes_per_sec: ratio(w.writes_per_sec, e.writes_per_sec),
                p50: ratio(w.latency_ms.p50, e.latency_ms.p50),
                p99: ratio(w.latency_ms.p99, e.latency_ms.p99),
            })
        })
        .collect()
}

pub fn print(report: &Report) {
    println!(
        "{:<9} {:>7} {:>10} {:>8} {:>8} {:>7} {:>13} {:>10} {:>9}",
        "system", "clients", "writes/s", "p50 ms", "p99 ms", "errors", "writes/commit", "server cpu", "bench cpu"
    );
    for r in &report.results {
        let per_commit = r.writes_per_commit.map_or("-".to_string(), |w| format!("{w:.1}"));
        println!(
            "{:<9} {:>7} {:>10.1} {:>8.2} {:>8.2} {:>7} {:>13} {:>9}% {:>8}%",
            r.system.to_string(),
            r.clients,
            r.writes_per_sec,
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.errors,
            per_commit,
            r.server_cpu_pct,
            r.bench_cpu_pct
        );
    }
    println!();
    println!("{:<7} {:>22} {:>14} {:>14}", "clients", "wasmkube/etcd writes/s", "p50 ratio", "p99 ratio");
    for r in &report.ratios {
        println!("{:<7} {:>21.2}× {:>13.2}× {:>13.2}×", r.clients, r.writes_per_sec, r.p50, r.p99);
    }
    for r in report.results.iter().filter(|r| !r.error_examples.is_empty()) {
        println!("{} at {} clients, first errors: {:?}", r.system, r.clients, r.error_examples);
    }
}
