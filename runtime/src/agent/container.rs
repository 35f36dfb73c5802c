//! One container's life inside a pod: load its image, start it as the workload it is, watch it
//! end, and restart it per the pod's restartPolicy with CrashLoopBackOff delays. Its state is kept
//! as the Kubernetes `ContainerStatus` the pod reports.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
pub use wasmkube_api::meta::now_rfc3339 as now;
use wasmkube_api::quantity::{cpu_millicores, memory_bytes};

use super::attach::StdinPipe;
use super::config;
use super::exec::ExecTarget;
use super::hot_swap;
use super::log;
use super::probe::{Kill, Probes, Run};
use super::sandbox::{PodContext, Shared};
use crate::host::command::{self, Outcome};
use crate::host::http::{ConcurrencyLimit, CurrentVersion, Handler};
use crate::host::usage::CpuQuota;
use crate::host::{ContainerStdin, GuestConfig, Workload};

/// The longest CrashLoopBackOff delay, as in Kubernetes.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long without failing starts its backoff from the base again.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// The port a handler serves on when its container declares none.
const DEFAULT_HTTP_PORT: u16 = 8080;

/// A container's state, as in `ContainerStatus.state`.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Waiting { reason: String, message: String },
    Running { started_at: String },
    Terminated { exit_code: i32, reason: String, message: String, started_at: String, finished_at: String },
}

impl State {
    fn to_json(&self) -> Value {
        match self {
            State::Waiting { reason, message } => json!({"waiting": {"reason": reason, "message": message}}),
            State::Running { started_at } => json!({"running": {"startedAt": started_at}}),
            State::Terminated { exit_code, reason, message, started_at, finished_at } => json!({"terminated": {
                "exitCode": exit_code, "reason": reason, "message": message,
                "startedAt": started_at, "finishedAt": finished_at}}),
        }
    }
}

/// Everything `ContainerStatus` reports about one container.
#[derive(Debug, Clone)]
pub struct Status {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub state: State,
    pub last_state: Option<State>,
    pub restart_count: i32,
    pub ready: bool,
    /// `started`: running, and past its startup probe if it has one.
    pub started: bool,
    /// Terminated and will not be restarted.
    pub done: bool,
}

impl Status {
    pub fn new(name: &str, image: &str) -> Self {
        Self {
            name: name.to_string(),
            image: image.to_string(),
            image_id: String::new(),
            state: State::Waiting { reason: "ContainerCreating".into(), message: String::new() },
            last_state: None,
            restart_count: 0,
            ready: false,
            started: false,
            done: false,
        }
    }

    pub fn to_json(&self) -> Value {
        let started = self.started && matches!(self.state, State::Running { .. });
        json!({
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "state": self.state.to_json(),
            "lastState": self.last_state.as_ref().map(State::to_json).unwrap_or_else(|| json!({})),
            "restartCount": self.restart_count,
            "ready": self.ready,
            "started": started,
        })
    }
}

/// What a container is configured with (from the pod spec).
#[derive(Debug, Clone)]
pub struct Spec {
    pub container: k8s_openapi::api::core::v1::Container,
    pub index: usize,
    pub name: String,
    pub image: String,
    pub argv: Vec<String>,
    pub port: Option<u16>,
    pub memory_limit: Option<usize>,
    /// `limits.cpu` in millicores.
    pub cpu_limit: Option<u64>,
}

impl Spec {
    /// Reads container `index` of a pod spec.
    pub fn from_pod(index: usize, c: &k8s_openapi::api::core::v1::Container) -> Self {
        let mut argv = vec![c.name.clone()];
        argv.extend(c.command.clone().unwrap_or_default());
        argv.extend(c.args.clone().unwrap_or_default());
        let port = c.ports.iter().flatten().next().and_then(|p| u16::try_from(p.container_port).ok());
        let memory_limit = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .and_then(|q| memory_bytes(&q.0));
        let cpu_limit = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("cpu"))
            .and_then(|q| cpu_millicores(&q.0))
            .filter(|m| *m > 0);
        Self {
            container: c.clone(),
            index,
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            argv,
            port,
            memory_limit,
            cpu_limit,
        }
    }
}

/// How far a run has got, which decides what a change of the container's image does to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Resolving configuration, pulling, compiling: the start is dropped and begun again with
    /// the new image, which counts as no restart.
    Starting,
    /// Running: the container is stopped and restarted with the new image (`Killing`, one more
    /// in `restartCount`), as Kubernetes does.
    Running,
    /// A wasi:http handler of an opted-in pod: `hot_swap::follow` swaps new images in place.
    Swapping,
}

/// Runs a container until `stop` fires or it is done for good.
pub async fn run(pod: Arc<PodContext>, mut spec: Spec, shared: Shared, stop: CancellationToken) {
    let mut failures_in_a_row: u32 = 0;
    let mut pull_failures: u32 = 0;
    loop {
        // A restart runs the image the pod asks for now (changed, or swapped in), not the one it
        // started with.
        spec.image = shared.wanted_image(spec.index).borrow().clone();
        let started = Instant::now();
        let (log_dir, this_run) = (pod.dir.join(&spec.name), run_number(&shared, &spec));
        let run_stop = stop.child_token();
        let (stage, staged) = tokio::sync::watch::channel(Stage::Starting);
        let work = start_and_wait(&pod, &spec, &shared, &run_stop, &stage);
        tokio::pin!(work);
        let (result, redefined) = tokio::select! {
            result = &mut work => (result, false),
            () = image_changed(&shared, &spec, staged.clone()) => {
                if *staged.borrow() == Stage::Starting {
                    // Nothing ran yet: the pull or compile of the old image is dropped with
                    // `work`, and the start begins again with the new one.
                    pull_failures = 0;
                    shared.update(spec.index, |s| {
                        s.state = State::Waiting { reason: "ContainerCreating".into(), message: String::new() };
                    });
                    continue;
                }
                let message = format!("Container {} definition changed, will be restarted", spec.name);
                pod.event("Normal", "Killing", &message).await;
                shared.update(spec.index, |s| s.ready = false);
                run_stop.cancel();
                (work.await, true)
            }
        };
        let (exit_code, reason, message, started_at) = match result {
            Ok(Some(ended)) => ended,
            // Kubernetes restarts a container whose image changed whatever the restart policy,
            // at once (no back-off: it did not fail).
            Ok(None) if redefined && !stop.is_cancelled() => {
                log::mark_ended(&log_dir, this_run, true);
                shared.update(spec.index, |s| {
                    let started_at = match &s.state {
                        State::Running { started_at } => started_at.clone(),
                        _ => now(),
                    };
                    let message = String::new();
                    let (reason, finished_at) = ("Completed".to_string(), now());
                    s.last_state = Some(State::Terminated { exit_code: 0, reason, message, started_at, finished_at });
                    s.restart_count += 1;
                    s.ready = false;
                    s.state = State::Waiting { reason: "ContainerCreating".into(), message: String::new() };
                });
                continue;
            }
            Ok(None) => {
                log::mark_ended(&log_dir, this_run, false);
                // Stopped from outside: no longer serving, so no longer ready.
                shared.update(spec.index, |s| s.ready = false);
                return;
            }
            Err(StartFailure::Config(message)) => {
                // Kubernetes keeps the container waiting and retries until the reference resolves.
                shared.update(spec.index, |s| {
                    s.state = State::Waiting { reason: "CreateContainerConfigError".into(), message: message.clone() };
                });
                pod.event("Warning", "Failed", &format!("Error: {message}")).await;
                tokio::select! {
                    _ = tokio::time::sleep(pod.backoff_base) => continue,
                    _ = stop.cancelled() => return,
                }
            }
            Err(StartFailure::Pull(message)) => {
                let delay = (pod.backoff_base * 2u32.saturating_pow(pull_failures)).min(MAX_BACKOFF);
                pull_failures = pull_failures.saturating_add(1);
                match image_pull_backoff(&pod, &spec, &shared, &message, delay, &stop).await {
                    BackOff::Over => {}
                    // Another image is another pull: its back-off starts from the base.
                    BackOff::Redefined => pull_failures = 0,
                    BackOff::Stopped => return,
                }
                continue;
            }
            Err(StartFailure::Start(message)) => (128, "StartError".to_string(), message, now()),
        };
        let terminated = State::Terminated {
            exit_code,
            reason: reason.clone(),
            message: message.clone(),
            started_at,
            finished_at: now(),
        };
        let restart = match pod.restart_policy.as_str() {
            "Never" => false,
            "OnFailure" => exit_code != 0,
            _ => true,
        };
        // The run is over, however it ended: followers of its log finish, and until the next run
        // starts its log is what `previous` means (the kubelet's lastState).
        log::mark_ended(&log_dir, this_run, restart && !stop.is_cancelled());
        shared.update(spec.index, |s| {
            s.state = terminated.clone();
            s.ready = false;
            s.done = !restart;
        });
        if exit_code != 0 {
            pod.event(
                "Warning",
                "Failed",
                &format!("Container {} ended: {reason} (exit code {exit_code}) {message}", spec.name),
            )
            .await;
        }
        if !restart || stop.is_cancelled() {
            return;
        }
        if started.elapsed() >= BACKOFF_RESET {
            failures_in_a_row = 0;
        }
        let delay = (pod.backoff_base * 2u32.saturating_pow(failures_in_a_row)).min(MAX_BACKOFF);
        failures_in_a_row = failures_in_a_row.saturating_add(1);
        shared.update(spec.index, |s| {
            s.last_state = Some(terminated.clone());
            s.restart_count += 1;
            s.state = State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: format!(
                    "back-off {}s restarting failed container={} pod={}",
                    delay.as_secs(),
                    spec.name,
                    pod.name
                ),
            };
        });
        pod.event("Warning", "BackOff", &format!("Back-off restarting failed container {}", spec.name)).await;
        match back_off(&shared, &spec, delay, &stop).await {
            BackOff::Over => {}
            // The kubelet keys back-off by the container's definition: a new image starts at
            // once, and from the base delay if it fails too.
            BackOff::Redefined => failures_in_a_row = 0,
            BackOff::Stopped => return,
        }
    }
}

/// How a back-off wait ended.
enum BackOff {
    Over,
    /// The pod asks for another image.
    Redefined,
    Stopped,
}

/// Waits out a back-off delay, or until the pod asks for another image or the container stops.
async fn back_off(shared: &Shared, spec: &Spec, delay: Duration, stop: &CancellationToken) -> BackOff {
    let mut wanted = shared.wanted_image(spec.index);
    tokio::select! {
        _ = tokio::time::sleep(delay) => BackOff::Over,
        () = differs(&mut wanted, &spec.image) => BackOff::Redefined,
        _ = stop.cancelled() => BackOff::Stopped,
    }
}

/// Resolves once `wanted` asks for an image other than `image`.
async fn differs(wanted: &mut tokio::sync::watch::Receiver<String>, image: &str) {
    while *wanted.borrow_and_update() == image {
        if wanted.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Resolves when the pod asks the container for an image other than the one this run started
/// with, unless the run has become a handler that swaps images in place (`hot_swap`) and so
/// follows the change itself.
async fn image_changed(shared: &Shared, spec: &Spec, mut stage: tokio::sync::watch::Receiver<Stage>) {
    let mut wanted = shared.wanted_image(spec.index);
    let swapping = async {
        let _ = stage.wait_for(|s| *s == Stage::Swapping).await;
    };
    tokio::select! {
        biased;
        // A run that swaps stays so until it ends.
        () = swapping => std::future::pending().await,
        () = differs(&mut wanted, &spec.image) => {}
    }
}

/// After a failed pull: ErrImagePull, then ImagePullBackOff until the next attempt, as the
/// kubelet reports it.
async fn image_pull_backoff(
    pod: &PodContext,
    spec: &Spec,
    shared: &Shared,
    message: &str,
    delay: Duration,
    stop: &CancellationToken,
) -> BackOff {
    shared.update(spec.index, |s| {
        s.state = State::Waiting { reason: "ErrImagePull".into(), message: message.to_string() };
    });
    pod.event("Warning", "Failed", &format!("Failed to pull image \"{}\": {message}", spec.image)).await;
    pod.event("Warning", "Failed", "Error: ErrImagePull").await;
    // ErrImagePull stays visible for a moment (or the whole delay, if shorter), then the wait
    // shows as ImagePullBackOff.
    let shown = delay.min(Duration::from_secs(1));
    match back_off(shared, spec, shown, stop).await {
        BackOff::Over => {}
        ended => return ended,
    }
    let waiting = format!("Back-off pulling image \"{}\": {message}", spec.image);
    shared.update(spec.index, |s| {
        s.state = State::Waiting { reason: "ImagePullBackOff".into(), message: waiting.clone() };
    });
    pod.event("Normal", "BackOff", &format!("Back-off pulling image \"{}\"", spec.image)).await;
    back_off(shared, spec, delay - shown, stop).await
}

type Ended = (i32, String, String, String);

/// Why a container could not start.
enum StartFailure {
    /// Its configuration does not resolve (missing ConfigMap, Secret or key): retried.
    Config(String),
    /// Its image could not be pulled (not pushed, registry unreachable, bad reference):
    /// ErrImagePull, then retried with ImagePullBackOff.
    Pull(String),
    /// Its binary is unusable: a terminated start, then restartPolicy.
    Start(String),
}

impl From<String> for StartFailure {
    fn from(message: String) -> Self {
        StartFailure::Start(message)
    }
}

/// One start: resolve configuration, pull, compile, run. `Ok(None)` when stopped. `stage` says
/// how far it got.
async fn start_and_wait(
    pod: &PodContext,
    spec: &Spec,
    shared: &Shared,
    stop: &CancellationToken,
    stage: &tokio::sync::watch::Sender<Stage>,
) -> Result<Option<Ended>, StartFailure> {
    let sources =
        config::Sources { client: &pod.client, namespace: &pod.namespace, host_path_roots: &pod.host_path_roots };
    let volumes_dir = pod.dir.join("volumes");
    let configure = async {
        config::materialize_volumes(&sources, &pod.pod, &volumes_dir).await?;
        let env = config::environment(&sources, &pod.pod, &spec.container).await?;
        let preopens = config::mounts(&pod.pod, &spec.container, &volumes_dir, &pod.host_path_roots)?;
        Ok::<_, config::ConfigError>((env, preopens))
    };
    let (env, preopens) = configure.await.map_err(|e| StartFailure::Config(e.to_string()))?;
    pod.event("Normal", "Pulling", &format!("Pulling image \"{}\"", spec.image)).await;
    let pulled_in = Instant::now();
    let pulled = pod.puller.pull(&spec.image).await.map_err(|e| StartFailure::Pull(e.to_string()))?;
    let pull_time = pulled_in.elapsed();
    let host = pod.host.clone();
    let (image_id, cached) = (pulled.image_id, pulled.cached);
    let prepared = tokio::task::spawn_blocking(move || host.prepare(&pulled.bytes).map_err(|e| e.to_string()))
        .await
        .map_err(|e| e.to_string())??;
    let (digest, workload, source) = prepared;
    pod.metrics.record_compile(source);
    shared.update(spec.index, |s| {
        s.image = spec.image.clone();
        s.image_id = image_id.clone();
    });
    let fetched = if cached { "already present on machine".to_string() } else { format!("pulled in {pull_time:?}") };
    pod.event(
        "Normal",
        "Pulled",
        &format!(
            "Successfully pulled image \"{}\" ({fetched}; {digest}, {}, {}) ready in {:?}",
            spec.image,
            workload.kind(),
            source.describe(),
            pulled_in.elapsed()
        ),
    )
    .await;

    let log = log::open(&pod.dir.join(&spec.name), run_number(shared, spec), pod.log_max_bytes)
        .map_err(|e| format!("opening the log: {e}"))?;
    let config = GuestConfig {
        args: spec.argv.clone(),
        env,
        preopens,
        log: Some(log),
        memory_limit: spec.memory_limit,
        pod_ip: Some(IpAddr::V4(pod.ip)),
        working_dir: spec.container.working_dir.clone().filter(|d| !d.is_empty()),
        usage: shared.usage(spec.index),
        cpu_quota: spec.cpu_limit.map(|m| Arc::new(CpuQuota::new(m, shared.usage(spec.index)))),
        stdio: None,
        stdin: None,
        resolver: pod.resolver.clone(),
    };
    // A command whose spec asks for stdin reads a pipe that `attach` sessions write into.
    let (config, stdin) = match &workload {
        Workload::Command(_) | Workload::Module(_) if spec.container.stdin == Some(true) => {
            let (guest_end, attach_end) = tokio::io::duplex(64 * 1024);
            let once = spec.container.stdin_once == Some(true);
            (
                GuestConfig { stdin: Some(ContainerStdin::new(guest_end)), ..config },
                Some(StdinPipe::new(attach_end, once)),
            )
        }
        _ => (config, None),
    };
    let started_at = now();
    let probes = Probes::of(&spec.container, &pod.pod);
    // This run's own stop: a probe's kill ends the run without stopping the pod.
    let run_stop = stop.child_token();
    let engine = pod.host.engine().clone();
    // `exec` finds the container here while this run lasts.
    let _exec = pod.execs.register(
        &pod.namespace,
        &pod.name,
        &spec.name,
        ExecTarget {
            workload: workload.clone(),
            config: config.clone(),
            engine: engine.clone(),
            stop: run_stop.clone(),
            stdin,
        },
    );
    let killed = |kill: Kill, started_at: String| (137, "Error".to_string(), kill.message(), started_at);
    // Only a handler can take a new version while it serves; a command of an opted-in pod is
    // restarted like any other.
    let swaps = matches!(workload, Workload::Http(_)) && hot_swap::opted_in(&pod.pod);
    stage.send_replace(if swaps { Stage::Swapping } else { Stage::Running });
    match &workload {
        Workload::Http(pre) => {
            let port = spec.port.unwrap_or(DEFAULT_HTTP_PORT);
            let addr = SocketAddr::new(IpAddr::V4(pod.ip), port);
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("binding {addr}: {e}"))?;
            let what = format!("wasi:http handler on {addr}");
            let started = mark_started(pod, spec, shared, &probes, &started_at, &what).await;
            let run = Run { pod, spec, shared, workload: &workload, config: &config, started };
            let handler = Handler {
                pre: CurrentVersion::new(pre.clone()),
                config: Arc::new(config.clone()),
                deadline: pod.request_deadline,
                limit: pod.max_concurrency.map(ConcurrencyLimit::new),
                served: Arc::new(AtomicU64::new(0)),
            };
            let follow = {
                let (handler, stop) = (handler.clone(), run_stop.clone());
                async move {
                    if swaps {
                        hot_swap::follow(pod, spec, shared, handler, stop).await;
                    }
                }
            };
            let serve = async {
                tokio::join!(handler.serve(listener, run_stop.clone(), pod.grace), follow);
            };
            let ((), kill) = probes.alongside(&run, &run_stop, serve).await;
            Ok(kill.map(|kill| killed(kill, started_at)))
        }
        Workload::Command(_) | Workload::Module(_) => {
            let started = mark_started(pod, spec, shared, &probes, &started_at, workload.kind()).await;
            let run = Run { pod, spec, shared, workload: &workload, config: &config, started };
            let wait = command::run(&workload, &engine, &config, &run_stop);
            let (outcome, kill) = probes.alongside(&run, &run_stop, wait).await;
            if let Some(kill) = kill {
                return Ok(Some(killed(kill, started_at)));
            }
            Ok(match outcome {
                Outcome::Stopped => None,
                Outcome::Exited(0) => Some((0, "Completed".into(), String::new(), started_at)),
                Outcome::Exited(code) => Some((code, "Error".into(), String::new(), started_at)),
                Outcome::OutOfMemory => Some((137, "OOMKilled".into(), "memory limit exceeded".into(), started_at)),
                Outcome::Trapped(trap) => Some((1, "Error".into(), trap, started_at)),
            })
        }
    }
}

/// Reports a run as started (`Created`, then Running, then `Started`); returns when it started,
/// which probes' initial delays count from. Ready at once unless a probe has to say so.
async fn mark_started(
    pod: &PodContext,
    spec: &Spec,
    shared: &Shared,
    probes: &Probes,
    started_at: &str,
    what: &str,
) -> tokio::time::Instant {
    pod.event("Normal", "Created", &format!("Created container {}", spec.name)).await;
    let started = tokio::time::Instant::now();
    shared.update(spec.index, |s| {
        s.state = State::Running { started_at: started_at.to_string() };
        s.ready = probes.ready_at_start();
        s.started = probes.started_at_start();
    });
    pod.event("Normal", "Started", &format!("Started container {} ({what})", spec.name)).await;
    started
}

/// The number of the container's current run, which names its log files (`agent::log`).
fn run_number(shared: &Shared, spec: &Spec) -> u32 {
    u32::try_from(shared.restart_count(spec.index)).unwrap_or(0)
}
