//! `sched-bench`: the scheduler's throughput and the control plane's envelope, with hollow nodes
//! (Kubernetes' kubemark idea).
//!
//! Each subcommand starts `wasmkube server` alone (no node agent) as a child process with its data
//! in a temporary dir, and stands in for the nodes itself: it registers N hollow Node objects
//! with a Ready status and a Lease each and keeps renewing the Leases ([`hollow`]), and one hollow
//! kubelet marks every pod bound to a hollow node Running ([`kubelet`]). One watch on the pods
//! ([`watch`]) notes when each pod is first seen bound and Running. Then:
//!
//! - [`throughput`]: M pods with resource requests are created by C concurrent clients as fast as
//!   they are answered; reported are pods scheduled per second, the create and status-patch
//!   latencies, the spread over nodes and zones, and the server's CPU, memory, commits and
//!   per-verb API latency ([`plane`], [`metrics`]);
//! - [`envelope`]: the cluster is filled with M pods, then a probe load of mutating requests
//!   runs against it while it holds them; reported are their latencies and the server's memory
//!   and data-dir size.
//!
//! Nothing asserts on a time. The server is killed and the temporary dir removed at the end, on
//! error or Ctrl-C too. Start reading at [`cluster`]; `docs/benchmarks.md` has what each
//! subcommand measures and how to reproduce it.

/// The allocator `wasmkube` uses, so `backlog` measures the scheduler as the server runs it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod agent;
mod backlog;
mod cluster;
mod envelope;
mod hollow;
mod kubelet;
mod metrics;
mod plane;
mod pods;
mod report;
mod schedule;
mod throughput;
mod watch;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use clap::{Parser, Subcommand};
use wasmkube_bench::servers::{self, Servers};

#[derive(Debug, Parser)]
#[command(name = "sched-bench", about = "Scheduler throughput and the control plane's envelope, with hollow nodes")]
struct Args {
    /// The `wasmkube` binary to measure (build it with `--release`).
    #[arg(long, global = true, value_name = "PATH", default_value = "target/release/wasmkube")]
    wasmkube: PathBuf,

    /// Directory under which the run's one temporary dir is made. Default: the system temp dir
    /// ($TMPDIR, else /tmp).
    #[arg(long, global = true, value_name = "DIR")]
    work_dir: Option<PathBuf>,

    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Pods scheduled per second when M pods arrive at once on N hollow nodes.
    Throughput(throughput::Options),
    /// The scheduler alone, in this process: pods/s decided and durably bound from a backlog.
    Backlog(backlog::Options),
    /// Mutating API latency and server memory with N hollow nodes and M pods held.
    Envelope(envelope::Options),
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let wasmkube = args
        .wasmkube
        .canonicalize()
        .with_context(|| format!("{}: build it with `cargo build --release -p wasmkube`", args.wasmkube.display()))?;
    let base = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("sched-bench-")
        .tempdir_in(&base)
        .with_context(|| format!("creating a temporary dir in {}", base.display()))?;
    let mut servers = Servers::default();
    let outcome = tokio::select! {
        outcome = run(&args.bench, &wasmkube, dir.path(), &mut servers) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    if outcome.is_err() {
        eprintln!("the server's log ends:\n{}", servers::log_tail(&dir.path().join("wasmkube.log")));
    }
    // Kill and reap the server before the dir goes, so it never writes into a half-deleted dir.
    servers.stop().await;
    dir.close().context("removing the temporary dir")?;
    outcome
}

/// Runs one benchmark with the server's data and log under `dir`.
async fn run(bench: &Bench, wasmkube: &Path, dir: &Path, servers: &mut Servers) -> Result<()> {
    match bench {
        Bench::Throughput(options) => throughput::run(options, wasmkube, dir, servers).await,
        Bench::Envelope(options) => envelope::run(options, wasmkube, dir, servers).await,
        Bench::Backlog(options) => backlog::run(options, wasmkube, dir).await,
    }
}
