//! `store-bench`: durable writes per second and their latency through wasmkube's Kubernetes API,
//! measured side by side with etcd 3.4 taking puts of the same size on the same disk.
//!
//! It starts `wasmkube server` and a single-member etcd as child processes, with their data dirs
//! in one temporary dir (so both fsync to the same filesystem), then for each client count runs a
//! closed loop against each system in turn: N clients, each on its own HTTP/1.1 connection, each
//! sending its next write when the previous one is answered. Against wasmkube a write is a
//! ConfigMap `POST` over TLS with the admin bearer token (answered 201 only after a durable
//! commit); against etcd it is a `POST /v3/kv/put` through etcd's JSON gateway, of a value as large
//! as the ConfigMap wasmkube stores (answered 200 after etcd fsyncs its WAL). It prints one table
//! (writes/s, p50/p99 latency, errors, and server-side writes per durable commit and CPU) with the
//! wasmkube/etcd ratios, and writes the same as JSON with the machine's facts. Both servers are
//! killed and the temporary dir removed at the end, on error or Ctrl-C too.
//!
//! Start reading at [`run`]; `wasmkube_bench::load` is the client loop, [`target`] the two kinds
//! of write. `docs/benchmarks.md` has the commands, results and caveats.

mod report;
mod target;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;

use report::{Report, Row, Usage, Workload};
use target::Target;
use wasmkube_bench::connection::Endpoint;
use wasmkube_bench::load::{self, Plan};
use wasmkube_bench::servers::Servers;
use wasmkube_bench::{machine, process, summary};

#[derive(Debug, Parser)]
#[command(name = "store-bench", about = "Durable creates through wasmkube's API vs etcd 3.4 puts, side by side")]
struct Args {
    /// The `wasmkube` binary to measure (build it with `--release`).
    #[arg(long, value_name = "PATH")]
    wasmkube: PathBuf,

    /// The etcd 3.4 binary to compare with (Debian's `etcd-server` installs /usr/bin/etcd).
    #[arg(long, value_name = "PATH")]
    etcd: PathBuf,

    /// Seconds measured per system and client count.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,

    /// Seconds of unmeasured load before each measurement, so both servers are warm.
    #[arg(long, default_value_t = 1)]
    warmup_secs: u64,

    /// Client counts to measure, comma-separated; each client has its own connection.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,

    /// Bytes in each ConfigMap's `data.value`.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,

    /// Directory under which the one temporary dir holding both servers' data is made.
    /// Default: the system temp dir ($TMPDIR, else /tmp).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,

    /// Where the JSON results are written.
    #[arg(long, value_name = "PATH", default_value = "bench/results/store.json")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.clients.is_empty() || args.clients.contains(&0) || args.duration_secs == 0 {
        bail!("--clients needs positive counts and --duration-secs a positive number");
    }
    let base = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("store-bench-")
        .tempdir_in(&base)
        .with_context(|| format!("creating a temporary dir in {}", base.display()))?;
    let mut servers = Servers::default();
    let outcome = tokio::select! {
        outcome = run(&args, dir.path(), &mut servers) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    // Kill and reap the servers before the dir goes, so neither writes into a half-deleted dir.
    servers.stop().await;
    dir.close().context("removing the temporary dir")?;
    outcome
}

/// Starts both servers under `dir`, measures every point and reports.
async fn run(args: &Args, dir: &Path, servers: &mut Servers) -> Result<()> {
    let machine = machine::describe(dir);
    let versions = machine::versions(&args.wasmkube, &args.etcd).await?;
    eprintln!("data dirs under {} ({} on {})", dir.display(), machine.disk.fstype, machine.disk.device);

    let wk = servers.start_wasmkube(&args.wasmkube, &["server"], &dir.join("wasmkube")).await?;
    let etcd = servers.start_etcd(&args.etcd, &dir.join("etcd")).await?;
    let wasmkube = Arc::new(Target::wasmkube(Endpoint::tls(wk.addr, &wk.ca_pem)?, wk.token, args.value_bytes));
    let stored_bytes = stored_object_bytes(&wasmkube).await?;
    let etcd_target = Arc::new(Target::etcd(Endpoint::plain(etcd.addr), stored_bytes));
    eprintln!("{} and {} ready; a stored ConfigMap is {stored_bytes} bytes", versions.wasmkube, versions.etcd);

    let mut results = Vec::new();
    for &clients in &args.clients {
        let plan = Plan {
            clients,
            warmup: Duration::from_secs(args.warmup_secs),
            duration: Duration::from_secs(args.duration_secs),
        };
        // Alternate the systems at each client count, so drift on a shared machine hits both.
        for (target, pid) in [(&wasmkube, wk.pid), (&etcd_target, etcd.pid)] {
            eprintln!("{} with {clients} clients...", target.system);
            results.push(measure(target, pid, plan).await?);
        }
    }
    let report = Report {
        benchmark: "store-bench",
        date: jiff::Timestamp::now().to_string(),
        machine,
        versions,
        workload: Workload {
            description: "closed loop; each client creates distinct objects on its own HTTP/1.1 connection: \
                wasmkube ConfigMap POST over TLS, etcd v3 JSON-gateway put over plain HTTP",
            duration_secs: args.duration_secs,
            warmup_secs: args.warmup_secs,
            clients: args.clients.clone(),
            configmap_value_bytes: args.value_bytes,
            stored_object_bytes: stored_bytes,
        },
        ratios: report::ratios(&results),
        results,
    };
    report::print(&report);
    summary::write_json(&report, &args.out)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

/// Creates one ConfigMap and returns the size of the object wasmkube answers with, which is the
/// object as stored (plus its resourceVersion): the value size etcd is given.
async fn stored_object_bytes(wasmkube: &Target) -> Result<usize> {
    let (status, body) = wasmkube.connect().await?.send(wasmkube.create("bench-calibration")).await?;
    if status != wasmkube.created() {
        bail!("calibration create answered {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(body.len())
}

/// Runs one point against `target` (whose server process is `pid`) and accounts for it.
async fn measure(target: &Arc<Target>, pid: u32, plan: Plan) -> Result<Row> {
    let pid = pid.to_string();
    let before = target.commit_totals().await?;
    let (server_cpu, bench_cpu) = (process::cpu_time(&pid)?, process::cpu_time("self")?);
    let started = Instant::now();
    let prefix = format!("bench-c{}", plan.clients);
    let sample = load::run(target.clone(), plan, &prefix).await?;
    let usage = Usage {
        wall: started.elapsed(),
        server_cpu: process::cpu_time(&pid)? - server_cpu,
        bench_cpu: process::cpu_time("self")? - bench_cpu,
        before,
        after: target.commit_totals().await?,
    };
    Ok(Row::new(target.system, plan, sample, &usage))
}
