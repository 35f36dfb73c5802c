//! `pod-bench hot-reload`: the inner loop of `wasmkube dev` on a copy of the `hello` sample's
//! source. First the bare baseline: `--edits` edits of the source, each followed by the
//! incremental `cargo build` alone. Then the same number of edits with `wasmkube dev` running, the
//! pod idle, and as many again with the pod under back-to-back requests: for each, from writing
//! the file to the first answer of the new version (`whole`), and that minus the build time dev
//! reports (`swap`: what dev adds to the build — debounce, push, apply, the in-place swap through
//! Deployment and ReplicaSet, the agent's pull, compile and trial). Each round ends when the agent
//! serves the optimised code, as a developer's next save would find it.
//! Every request during the edits is counted; a failed one is a failure of the zero-failure goal.
//! Last, dev stopped but the load still on, the bare builds again: on two cores the load competes
//! with the build, which is no cost of dev's, so the whole-edit ratio under load is taken against
//! these (the ratio to the idle bare build is reported next to it).
//!
//! Peers: Tilt publishes about 1.5 s for a `live_update` sync, and `spin watch` restarts the
//! whole process on each change; neither runs here (no Tilt on this machine), so the figure is
//! quoted, not measured.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use wasmkube_bench::connection::{Connection, Endpoint};
use wasmkube_bench::devhello::Project;
use wasmkube_bench::machine;
use wasmkube_bench::servers::Servers;
use wasmkube_bench::summary::{self, Failures, Header, ratio, round};

use crate::cluster::{self, Cluster, Inputs};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Edits measured, with and without dev.
    #[arg(long, default_value_t = 20)]
    edits: usize,

    /// The samples' Cargo workspace, whose `hello` is copied and whose target dir (with the
    /// dependencies compiled) the copy builds into.
    #[arg(long, value_name = "DIR", default_value = "samples")]
    samples: PathBuf,

    /// Where the JSON results are written.
    #[arg(long, value_name = "PATH", default_value = "bench/results/hot-reload.json")]
    out: PathBuf,
}

/// Tilt's published figure for a live_update sync (docs.tilt.dev, "Live Update").
const TILT_LIVE_UPDATE_MS: f64 = 1500.0;
const GOAL_SWAP_P95_MS: f64 = 200.0;
const GOAL_WHOLE_RATIO: f64 = 1.2;

#[derive(Debug, Serialize)]
struct Workload {
    description: &'static str,
    edits: usize,
    build: String,
}

#[derive(Debug, Serialize)]
struct Percentiles {
    p50: f64,
    p95: f64,
    max: f64,
}

impl Percentiles {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let at = |q: f64| match samples.len() {
            0 => 0.0,
            n => round(samples[((q * n as f64).ceil() as usize).clamp(1, n) - 1].as_secs_f64() * 1000.0, 1),
        };
        Self { p50: at(0.5), p95: at(0.95), max: at(1.0) }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    #[serde(flatten)]
    header: Header<Workload>,
    /// The incremental build alone, per edit, nothing else running (ms).
    bare_build_ms: Percentiles,
    /// The same with the cluster up and the pod under the same load as during the dev edits, but
    /// no dev (ms): the build time an edit costs on this machine in that state anyway.
    bare_build_under_load_ms: Percentiles,
    /// Save → first answer of the new version with dev, no load on the pod (ms).
    idle_whole_ms: Percentiles,
    /// `idle_whole` minus the build time dev reported (ms).
    idle_swap_ms: Percentiles,
    /// Save → first answer of the new version with dev, the pod under load (ms).
    whole_ms: Percentiles,
    /// `whole` minus the build time dev reported (ms).
    swap_ms: Percentiles,
    /// whole p50 / bare build under load p50 (the goal's ratio: same machine state).
    whole_over_bare_build: f64,
    /// whole p50 / idle bare build p50.
    whole_over_idle_bare_build: f64,
    requests: u64,
    failed_requests: Failures,
    tilt_live_update_ms_published: f64,
    goals: &'static str,
    /// Each goal, idle and under load.
    swap_goal_met_idle: bool,
    swap_goal_met_under_load: bool,
    whole_goal_met: bool,
    no_failures: bool,
}

/// A duration as dev prints it (`Debug` with two decimals: `1.80s`, `850.12ms`).
fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = text.find(|c: char| c.is_ascii_alphabetic() || c == 'µ').map(|i| text.split_at(i))?;
    let value: f64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => value,
        "ms" => value / 1e3,
        "µs" => value / 1e6,
        "ns" => value / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

pub async fn run(options: &Options, inputs: &Inputs, dir: &Path, servers: &mut Servers) -> Result<()> {
    if options.edits == 0 {
        bail!("--edits must be positive");
    }
    let machine = machine::describe(dir);
    let wasmkube = machine::version(&inputs.wasmkube).await?;
    let project = Project::create(&options.samples, dir)?;
    project.build_now()?;

    // The baseline: the same edits, built and nothing else.
    eprintln!("bare builds of {} edits...", options.edits);
    let mut bare = Vec::new();
    for i in 0..options.edits {
        project.set_version(&format!("bare{i}"))?;
        bare.push(project.build_now()?);
    }
    project.set_version("v0")?;
    project.build_now()?;

    let data = dir.join("wasmkube");
    let cluster = Cluster::start(servers, &inputs.wasmkube, &data).await?;
    let manifest = dir.join("devhello.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: devhello}}\nspec:\n  replicas: 1\n  \
             selector: {{matchLabels: {{app: devhello}}}}\n  template:\n    metadata: {{labels: {{app: devhello}}}}\n    \
             spec:\n      containers:\n      - name: web\n        image: {}\n        ports: [{{containerPort: {}}}]\n",
            project.wasm.display(),
            cluster::PORT
        ),
    )?;
    let mut dev = tokio::process::Command::new(&inputs.wasmkube)
        .arg("--data-dir")
        .arg(&data)
        .args(["dev", "-f"])
        .arg(&manifest)
        .arg("--watch")
        .arg(project.dir.join("src"))
        .args(["--build", &project.build])
        .current_dir(&project.dir)
        .env_remove("KUBECONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.join("dev.log"))?)
        .kill_on_drop(true)
        .spawn()
        .context("starting wasmkube dev")?;
    let mut edits = Edits {
        lines: BufReader::new(dev.stdout.take().context("dev's stdout")?).lines(),
        seen: std::collections::HashMap::new(),
        whole: Vec::new(),
        swap: Vec::new(),
    };
    while !edits.next_line().await?.starts_with("watching ") {}

    // The pod, then load on it for the whole run.
    let pods = cluster.pods.clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    let address = loop {
        let list = pods.list(&kube::api::ListParams::default().labels("app=devhello")).await?;
        if let Some(ip) = list.items.first().and_then(cluster::pod_ip)
            && cluster::first_request((ip, cluster::PORT).into()).await.is_ok()
        {
            break std::net::SocketAddr::new(ip, cluster::PORT);
        }
        if Instant::now() > deadline {
            bail!("the devhello pod did not serve within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Edits with nothing else running: the developer's inner loop as it is.
    eprintln!("{} edits with wasmkube dev, the pod idle...", options.edits);
    edits.new_swap_events(&cluster).await;
    for i in 1..=options.edits {
        edits.one(&project, &cluster, address, &format!("idle{i}")).await?;
    }
    let idle_whole_ms = Percentiles::of(std::mem::take(&mut edits.whole));
    let idle_swap_ms = Percentiles::of(std::mem::take(&mut edits.swap));

    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let load = tokio::spawn({
        let (stop, requests) = (stop.clone(), requests.clone());
        async move {
            let mut failures = Failures::default();
            while !stop.load(Ordering::Relaxed) {
                requests.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = cluster::first_request(address).await {
                    failures.record(format!("{e:#}"));
                }
            }
            failures
        }
    });

    eprintln!("{} edits with wasmkube dev, the pod under load...", options.edits);
    for i in 1..=options.edits {
        edits.one(&project, &cluster, address, &format!("v{i}")).await?;
    }
    let (whole, swap) = (edits.whole, edits.swap);
    // The same builds without dev but under the same load: what the edit would cost here anyway.
    let _ = dev.kill().await;
    eprintln!("bare builds of {} edits, the pod still under load...", options.edits);
    let mut bare_loaded = Vec::new();
    for i in 0..options.edits {
        project.set_version(&format!("loaded{i}"))?;
        bare_loaded.push(project.build_now()?);
    }
    stop.store(true, Ordering::Relaxed);
    let failed = load.await?;

    let bare_ms = Percentiles::of(bare);
    let bare_loaded_ms = Percentiles::of(bare_loaded);
    let whole_ms = Percentiles::of(whole);
    let swap_ms = Percentiles::of(swap);
    let whole_over_bare_build = ratio(whole_ms.p50, bare_loaded_ms.p50);
    let whole_over_idle_bare_build = ratio(whole_ms.p50, bare_ms.p50);
    let report = Report {
        header: Header::new(
            "pod-bench hot-reload",
            machine,
            wasmkube,
            Workload {
                description: "a copy of samples/hello deployed by `wasmkube dev` (1 replica, hot swap), its VERSION \
                    edited once per round: `edits` rounds with the pod idle, then `edits` with GET / back to back \
                    on the pod IP, then bare builds under that load; each round waits for the optimised code",
                edits: options.edits,
                build: project.build.clone(),
            },
        ),
        bare_build_ms: bare_ms,
        bare_build_under_load_ms: bare_loaded_ms,
        swap_goal_met_idle: idle_swap_ms.p95 <= GOAL_SWAP_P95_MS,
        swap_goal_met_under_load: swap_ms.p95 <= GOAL_SWAP_P95_MS,
        whole_goal_met: whole_over_bare_build <= GOAL_WHOLE_RATIO,
        no_failures: failed.count == 0,
        idle_whole_ms,
        idle_swap_ms,
        whole_ms,
        swap_ms,
        whole_over_bare_build,
        whole_over_idle_bare_build,
        requests: requests.load(Ordering::Relaxed),
        failed_requests: failed,
        tilt_live_update_ms_published: TILT_LIVE_UPDATE_MS,
        goals: "swap p95 <= 200 ms; whole edit p50 <= 1.2x the bare build under the same load; 0 failed requests",
    };
    print(&report);
    summary::write_json(&report, &options.out)?;
    eprintln!("wrote {}", options.out.display());
    Ok(())
}

/// Edits measured with dev running: what dev prints, and the times of each edit.
struct Edits {
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    /// Agent events already logged, with their count (similar events are combined into one).
    seen: std::collections::HashMap<String, i32>,
    whole: Vec<Duration>,
    swap: Vec<Duration>,
}

impl Edits {
    async fn next_line(&mut self) -> Result<String> {
        match tokio::time::timeout(Duration::from_secs(300), self.lines.next_line()).await {
            Ok(Ok(Some(line))) => Ok(line),
            Ok(Ok(None)) => bail!("wasmkube dev exited; see dev.log"),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => bail!("wasmkube dev printed nothing for 300 s"),
        }
    }

    /// One edit: the save, the new version's first answer, dev's status line. Then, before the
    /// next edit, the agent's optimised code for it, as a developer's next save finds it (the
    /// optimising compile would otherwise run alongside the next build).
    async fn one(
        &mut self,
        project: &Project,
        cluster: &Cluster,
        address: std::net::SocketAddr,
        version: &str,
    ) -> Result<()> {
        let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let old_binary = modified(&project.wasm);
        let saved = Instant::now();
        project.set_version(version)?;
        let wanted = format!("version={version} ");
        // The probe for the new version is an observer, and should not load the node while the
        // build runs: it waits (a stat every 2 ms) until the build has written the new binary.
        // Then it asks every 2 ms over one kept-alive connection (each request gets whichever
        // version serves when it arrives), as a new connection per probe would be load too.
        while modified(&project.wasm) == old_binary && saved.elapsed() < Duration::from_secs(300) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut probe: Option<Connection> = None;
        let served = loop {
            if probe.is_none() {
                probe = Endpoint::plain(address).connect().await.ok();
            }
            let answer = match probe.as_mut() {
                Some(connection) => connection.send(cluster::get_root(address)).await.ok(),
                None => None,
            };
            match answer {
                Some((_, body)) if String::from_utf8_lossy(&body).contains(&wanted) => break saved.elapsed(),
                Some(_) => {}
                None => probe = None,
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            if saved.elapsed() > Duration::from_secs(300) {
                bail!("{version} was never served");
            }
        };
        let status = loop {
            let line = self.next_line().await?;
            if line.starts_with('✓') || line.starts_with('✗') {
                break line;
            }
        };
        let built = status
            .strip_prefix("✓ build ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(parse_duration)
            .with_context(|| format!("dev's status line: {status}"))?;
        self.whole.push(served);
        self.swap.push(served.saturating_sub(built));
        let mut agent = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let settled = |m: &String| m.contains("serves optimised code") || m.contains("(optimised code)");
        while !agent.iter().any(settled) && Instant::now() < deadline {
            agent.extend(self.new_swap_events(cluster).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("  {version}: {served:.0?} from save\n    dev: {status}\n    agent: {}", agent.join("; "));
        Ok(())
    }

    /// The agent's swap events not seen before (its own breakdown of each swap), for the log.
    async fn new_swap_events(&mut self, cluster: &Cluster) -> Vec<String> {
        use k8s_openapi::api::core::v1::Event;
        let events: kube::Api<Event> = kube::Api::namespaced(cluster.client.clone(), "default");
        let list = events.list(&kube::api::ListParams::default()).await.map(|l| l.items).unwrap_or_default();
        list.into_iter()
            .filter(|e| matches!(e.reason.as_deref(), Some("Swapped" | "SwapFailed" | "Recompiled")))
            .filter(|e| {
                self.seen.insert(e.metadata.name.clone().unwrap_or_default(), e.count.unwrap_or(1))
                    != e.count.or(Some(1))
            })
            .map(|e| e.message.unwrap_or_default())
            .collect()
    }
}

fn print(r: &Report) {
    println!("hot-reload: {} edits of a copy of hello; ms (p50 / p95 / max)", r.header.workload.edits);
    let row = |name: &str, p: &Percentiles| println!("{name:<34} {:>8.1} {:>8.1} {:>8.1}", p.p50, p.p95, p.max);
    row("bare incremental build, idle", &r.bare_build_ms);
    row("bare incremental build, under load", &r.bare_build_under_load_ms);
    row("save -> new version served, idle", &r.idle_whole_ms);
    row("  of which not the build (swap)", &r.idle_swap_ms);
    row("save -> served, pod under load", &r.whole_ms);
    row("  of which not the build (swap)", &r.swap_ms);
    println!(
        "whole / bare build under the same load (p50): {:.2}x; / idle bare build: {:.2}x",
        r.whole_over_bare_build, r.whole_over_idle_bare_build
    );
    println!("requests during the edits: {}, failed: {}", r.requests, r.failed_requests.count);
    println!("Tilt live_update (published): {} ms", r.tilt_live_update_ms_published);
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!("goals: {}", r.goals);
    println!(
        "  swap p95 idle: {}; under load: {}; whole edit ratio: {}; no failed requests: {}",
        met(r.swap_goal_met_idle),
        met(r.swap_goal_met_under_load),
        met(r.whole_goal_met),
        met(r.no_failures)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_dev_prints_them() {
        assert_eq!(parse_duration("1.80s"), Some(Duration::from_millis(1800)));
        assert_eq!(parse_duration("850.50ms"), Some(Duration::from_micros(850_500)));
        assert_eq!(parse_duration("later"), None);
    }
}
