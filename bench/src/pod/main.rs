//! `pod-bench`: how fast wasmkube starts pods, how many it holds, and how fast it serves them.
//!
//! Each subcommand starts its own `wasmkube up` (control plane and node agent in one process, node
//! `bench`) as a child process with its data in a temporary dir, drives it through its Kubernetes
//! API with the `hello` sample as the image, prints a short summary and writes a JSON report with
//! the machine's facts:
//!
//! - [`start_latency`]: from sending a pod create to seeing the pod Running and ready on one watch;
//! - [`density`]: resident memory of `up` per running pod, and the first request to a few of them;
//! - [`http`]: requests/s and latency of `hello` served by wasmkube, by `wasmtime serve` and by a
//!   native hyper server ([`native`]), under the same closed-loop load;
//! - [`proxy`]: bulk throughput and latency through a Service's ClusterIP, against the same
//!   backend directly and behind HAProxy;
//! - [`dns`]: queries/s of the node's cluster DNS on a zone of 10,000 Services, against NSD;
//! - [`service_http`]: `hello` through its Service name against its pod IP;
//! - [`hot_reload`]: `wasmkube dev` from a saved edit to the new version serving, under load.
//!
//! Every child is killed and the temporary dir removed at the end, on error or Ctrl-C too. Start
//! reading at [`run`]; [`cluster`] starts `up` and creates pods, [`watch`] is the watch that times
//! them. `docs/benchmarks.md` has what each measures and how to reproduce it.

mod cluster;
mod density;
mod dns;
mod hot_reload;
mod http;
mod native;
mod proxy;
mod service_http;
mod start_latency;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use clap::{Parser, Subcommand};
use wasmkube_bench::servers::Servers;

use cluster::Inputs;

#[derive(Debug, Parser)]
#[command(
    name = "pod-bench",
    about = "Pod start latency, pod density, HTTP serving, and Service networking of wasmkube"
)]
struct Args {
    /// The `wasmkube` binary to measure (build it with `--release`).
    #[arg(long, global = true, value_name = "PATH", default_value = "target/release/wasmkube")]
    wasmkube: PathBuf,

    /// The `hello` sample component every pod runs (build the samples first: `just samples`).
    #[arg(long, global = true, value_name = "PATH", default_value = "samples/target/wasm32-wasip2/release/hello.wasm")]
    hello: PathBuf,

    /// Directory under which the run's one temporary dir is made. Default: the system temp dir
    /// ($TMPDIR, else /tmp).
    #[arg(long, global = true, value_name = "DIR")]
    work_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Bench(Bench),
    /// The native hyper "hello" server `http` compares with; `http` runs it as a child process.
    #[command(hide = true)]
    ServeNative {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Time from sending a pod create to watching the pod Running and ready.
    StartLatency(start_latency::Options),
    /// Resident memory of `wasmkube up` per running hello pod, and first-request latency.
    Density(density::Options),
    /// Requests/s of hello served by wasmkube, `wasmtime serve` and a native hyper server.
    Http(http::Options),
    /// Throughput and latency through a Service's ClusterIP, against direct and HAProxy.
    Proxy(proxy::Options),
    /// Queries/s of the cluster DNS on a zone of 10,000 Services, against NSD.
    Dns(dns::Options),
    /// Requests/s of hello through its Service name against its pod IP.
    ServiceHttp(service_http::Options),
    /// `wasmkube dev`: save → new version served, against the bare incremental build, under load.
    HotReload(hot_reload::Options),
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let bench = match args.command {
        Command::ServeNative { addr } => return native::serve(addr).await,
        Command::Bench(bench) => bench,
    };
    let inputs = Inputs::resolve(&args.wasmkube, &args.hello)?;
    let base = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("pod-bench-")
        .tempdir_in(&base)
        .with_context(|| format!("creating a temporary dir in {}", base.display()))?;
    let mut servers = Servers::default();
    let outcome = tokio::select! {
        outcome = run(&bench, &inputs, dir.path(), &mut servers) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    // Kill and reap every child before the dir goes, so none writes into a half-deleted dir.
    servers.stop().await;
    dir.close().context("removing the temporary dir")?;
    outcome
}

/// Runs one benchmark with its children's data and logs under `dir`.
async fn run(bench: &Bench, inputs: &Inputs, dir: &Path, servers: &mut Servers) -> Result<()> {
    match bench {
        Bench::StartLatency(options) => start_latency::run(options, inputs, dir, servers).await,
        Bench::Density(options) => density::run(options, inputs, dir, servers).await,
        Bench::Http(options) => http::run(options, inputs, dir, servers).await,
        Bench::Proxy(options) => proxy::run(options, inputs, dir, servers).await,
        Bench::Dns(options) => dns::run(options, inputs, dir, servers).await,
        Bench::ServiceHttp(options) => service_http::run(options, inputs, dir, servers).await,
        Bench::HotReload(options) => hot_reload::run(options, inputs, dir, servers).await,
    }
}
