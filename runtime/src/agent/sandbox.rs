//! A pod's sandbox: its IP, one task per container, and the reporter that turns the containers'
//! states into the pod's `status` (phase, conditions, IPs, containerStatuses).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wasmkube_api::events::{Correlator, Decision, EventType, InvolvedObject, Occurrence, Reporter, Write};

use super::container::{self, State, Status, now};
use crate::host::Host;
use crate::host::usage::Usage;

/// The component the agent's events are reported under (`source.host` is the node).
pub const COMPONENT: &str = "wasmkube-agent";

/// What a pod's containers share.
pub struct PodContext {
    pub client: kube::Client,
    /// The pod as it was when its sandbox started (spec, metadata for the downward API).
    pub pod: Pod,
    pub host: Arc<Host>,
    pub puller: Arc<crate::image::Puller>,
    /// The agent's metrics (the pod registers its containers' usage there).
    pub metrics: Arc<super::metrics::AgentMetrics>,
    /// The node's index of running containers, for `exec`.
    pub execs: super::exec::Execs,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node_name: String,
    pub node_ip: String,
    pub ip: Ipv4Addr,
    pub restart_policy: String,
    /// Where the pod's logs live.
    pub dir: PathBuf,
    pub backoff_base: Duration,
    pub request_deadline: Duration,
    /// Where `hostPath` volumes may point.
    pub host_path_roots: Vec<PathBuf>,
    /// `wasmkube.dev/max-concurrency`: requests in flight per handler container.
    pub max_concurrency: Option<usize>,
    /// How long in-flight work may take to finish when the pod is stopped.
    pub grace: Duration,
    /// A container's log file is rotated when it reaches this size (`agent::log`).
    pub log_max_bytes: u64,
    /// The agent's event correlator, shared by all its pods.
    pub events: Arc<Mutex<Correlator>>,
    /// Resolves guests' outgoing HTTP host names with the cluster DNS and this pod's search path.
    pub resolver: Option<Arc<hickory_resolver::TokioResolver>>,
}

impl PodContext {
    /// Records a core/v1 Event about this pod (best effort: a failure is only logged), compacted
    /// as Kubernetes' kubelet does: a repeat (a crash loop's `BackOff`) counts up the Event
    /// already there instead of adding another ([`wasmkube_api::events`]). `kind` is `Warning`
    /// or `Normal`.
    pub async fn event(&self, kind: &str, reason: &str, message: &str) {
        let occurrence = Occurrence {
            object: InvolvedObject {
                api_version: "v1".into(),
                kind: "Pod".into(),
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                uid: self.uid.clone(),
                resource_version: None,
            },
            type_: if kind == "Warning" { EventType::Warning } else { EventType::Normal },
            reason: reason.to_string(),
            message: message.to_string(),
            reporter: Reporter::new(COMPONENT, Some(self.node_name.clone())),
        };
        if let Err(e) = self.record(&occurrence).await {
            tracing::warn!(error = %e, reason, "posting an event failed");
        }
    }

    fn correlator(&self) -> std::sync::MutexGuard<'_, Correlator> {
        // The correlator's state stays consistent whatever panicked while holding it.
        self.events.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn record(&self, occurrence: &Occurrence) -> Result<(), kube::Error> {
        let decision = self.correlator().observe(occurrence, jiff::Timestamp::now());
        match self.write_event(occurrence, &decision).await {
            // The Event expired or was deleted: start a new one.
            Err(kube::Error::Api(status)) if status.is_not_found() && decision.write == Write::Patch => {
                self.correlator().forget(&decision.key);
                let again = self.correlator().observe(occurrence, jiff::Timestamp::now());
                self.write_event(occurrence, &again).await
            }
            other => other,
        }
    }

    async fn write_event(&self, occurrence: &Occurrence, decision: &Decision) -> Result<(), kube::Error> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), occurrence.event_namespace());
        match decision.write {
            Write::Create => {
                let event: Event =
                    serde_json::from_value(decision.event(occurrence)).map_err(kube::Error::SerdeError)?;
                let created = events.create(&PostParams::default(), &event).await;
                if created.is_err() {
                    // Never written: the next occurrence must create it, not patch nothing.
                    self.correlator().forget(&decision.key);
                }
                created.map(drop)
            }
            Write::Patch => {
                let patch = Patch::Merge(decision.patch());
                events.patch(&decision.name, &PatchParams::default(), &patch).await.map(drop)
            }
        }
    }
}

/// The containers' statuses, shared between their tasks and the reporter.
#[derive(Clone)]
pub struct Shared {
    statuses: Arc<Mutex<Vec<Status>>>,
    changed: Arc<Notify>,
    /// The Ready status the reporter last wrote, and whether the API has since been seen to say
    /// otherwise (the node lifecycle controller marks pods of a lost node not ready), so the
    /// reporter writes again.
    written_ready: Arc<Mutex<Option<String>>>,
    rewrite: Arc<std::sync::atomic::AtomicBool>,
    /// What each container's instances use, by container index.
    usages: Arc<[Arc<Usage>]>,
    /// The image each container should run, by index: the pod spec's, followed by hot swaps.
    images: Arc<[tokio::sync::watch::Sender<String>]>,
}

impl Shared {
    pub fn update(&self, index: usize, f: impl FnOnce(&mut Status)) {
        if let Some(status) = self.statuses.lock().expect("status lock").get_mut(index) {
            f(status);
        }
        self.changed.notify_one();
    }

    pub fn restart_count(&self, index: usize) -> i32 {
        self.statuses.lock().expect("status lock").get(index).map(|s| s.restart_count).unwrap_or(0)
    }

    /// The image container `index` should run now, and its changes.
    pub fn wanted_image(&self, index: usize) -> tokio::sync::watch::Receiver<String> {
        match self.images.get(index) {
            Some(image) => image.subscribe(),
            None => tokio::sync::watch::channel(String::new()).1,
        }
    }

    pub fn usage(&self, index: usize) -> Arc<Usage> {
        self.usages.get(index).cloned().unwrap_or_default()
    }

    pub(super) fn snapshot(&self) -> Vec<Status> {
        self.statuses.lock().expect("status lock").clone()
    }
}

/// Kubernetes' pod phase from its containers' states.
pub fn phase(statuses: &[Status]) -> &'static str {
    if !statuses.is_empty() && statuses.iter().all(|s| s.done) {
        let all_ok = statuses.iter().all(|s| matches!(s.state, State::Terminated { exit_code: 0, .. }));
        return if all_ok { "Succeeded" } else { "Failed" };
    }
    // Pending until every container has started at least once (waiting for its image or its
    // configuration does not count).
    let started = statuses.iter().all(|s| s.restart_count > 0 || !matches!(s.state, State::Waiting { .. }));
    if started { "Running" } else { "Pending" }
}

/// When each pod condition last changed: kept across status writes (and taken over from the pod
/// as the agent found it, after a restart), so `lastTransitionTime` means what Kubernetes says.
struct Transitions(std::collections::HashMap<&'static str, (bool, String)>);

impl Transitions {
    fn from_pod(pod: &Pod) -> Self {
        let mut known = std::collections::HashMap::new();
        for c in pod.status.iter().flat_map(|s| s.conditions.iter().flatten()) {
            let kind = CONDITIONS.iter().find(|k| **k == c.type_);
            if let (Some(kind), Some(at)) = (kind, &c.last_transition_time) {
                let at = at.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
                known.insert(*kind, (c.status == "True", at));
            }
        }
        Self(known)
    }

    /// The condition as JSON, its time moved only when its status changes.
    fn condition(&mut self, kind: &'static str, ok: bool) -> Value {
        let entry = self.0.entry(kind).or_insert_with(|| (ok, now()));
        if entry.0 != ok {
            *entry = (ok, now());
        }
        json!({"type": kind, "status": if ok { "True" } else { "False" }, "lastTransitionTime": entry.1})
    }
}

const CONDITIONS: [&str; 4] = ["PodScheduled", "Initialized", "ContainersReady", "Ready"];

fn status_json(pod: &PodContext, statuses: &[Status], start_time: &str, transitions: &mut Transitions) -> Value {
    let all_ready = !statuses.is_empty() && statuses.iter().all(|s| s.ready);
    json!({
        "phase": phase(statuses),
        "conditions": [
            transitions.condition("PodScheduled", true),
            transitions.condition("Initialized", true),
            transitions.condition("ContainersReady", all_ready),
            transitions.condition("Ready", all_ready),
        ],
        "hostIP": pod.node_ip,
        "hostIPs": [{"ip": pod.node_ip}],
        "podIP": pod.ip.to_string(),
        "podIPs": [{"ip": pod.ip.to_string()}],
        "startTime": start_time,
        "containerStatuses": statuses.iter().map(Status::to_json).collect::<Vec<_>>(),
    })
}

/// A container's first status in this sandbox. A pod re-adopted after an agent restart keeps the
/// restart count it had reported, so counts (and the run numbers its logs are filed under) go on
/// from there instead of starting over.
fn resumed_status(pod: &Pod, container: &container::Spec) -> Status {
    let mut status = Status::new(&container.name, &container.image);
    let reported =
        pod.status.iter().flat_map(|s| s.container_statuses.iter().flatten()).find(|s| s.name == container.name);
    if let Some(reported) = reported {
        status.restart_count = reported.restart_count;
    }
    status
}

/// A running pod.
pub struct Sandbox {
    pub ip: Ipv4Addr,
    ctx: Arc<PodContext>,
    shared: Shared,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Sandbox {
    /// Starts the pod's containers and its status reporter.
    pub fn start(ctx: PodContext, pod: &Pod) -> Self {
        let ctx = Arc::new(ctx);
        let containers: Vec<container::Spec> = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .enumerate()
            .map(|(i, c)| container::Spec::from_pod(i, c))
            .collect();
        let shared = Shared {
            statuses: Arc::new(Mutex::new(containers.iter().map(|c| resumed_status(pod, c)).collect())),
            changed: Arc::new(Notify::new()),
            written_ready: Arc::default(),
            rewrite: Arc::default(),
            usages: containers.iter().map(|_| Arc::new(Usage::new(ctx.metrics.instantiate_seconds.clone()))).collect(),
            images: containers.iter().map(|c| tokio::sync::watch::Sender::new(c.image.clone())).collect(),
        };
        ctx.metrics.pods.insert(&ctx.uid, &ctx.namespace, &ctx.name, shared.clone());
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for spec in containers {
            tasks.spawn(container::run(ctx.clone(), spec, shared.clone(), stop.child_token()));
        }
        tasks.spawn(report(ctx.clone(), shared.clone(), stop.clone()));
        Self { ip: ctx.ip, ctx, shared, stop, tasks }
    }

    /// Takes note of the pod as the API has it now: if its Ready condition is not what this
    /// sandbox last reported, reports again.
    pub fn observe(&self, pod: &Pod) {
        // A changed image: an opted-in pod's handlers swap to it in place, other containers are
        // restarted with it (see `container::run`).
        let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
        for (sender, container) in self.shared.images.iter().zip(containers) {
            let image = container.image.clone().unwrap_or_default();
            sender.send_if_modified(|wanted| {
                let changed = *wanted != image;
                *wanted = image;
                changed
            });
        }
        let api = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone());
        let written = self.shared.written_ready.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if written.is_some() && api != written {
            self.shared.rewrite.store(true, std::sync::atomic::Ordering::Relaxed);
            self.shared.changed.notify_one();
        }
    }

    /// Stops the pod because it is being deleted, first saying so for each running container
    /// (Kubernetes' `Killing` events). An agent shutting down uses [`Sandbox::stop`]: its pods
    /// are not being killed, only left.
    pub async fn delete(self) {
        let messages: Vec<String> = self
            .shared
            .snapshot()
            .into_iter()
            .filter(|s| matches!(s.state, State::Running { .. }))
            .map(|s| format!("Stopping container {}", s.name))
            .collect();
        let ctx = &self.ctx;
        futures::future::join_all(messages.iter().map(|m| ctx.event("Normal", "Killing", m))).await;
        self.stop().await;
    }

    /// Stops every container (handlers drain for the grace period) and waits for them.
    pub async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.ctx.metrics.pods.remove(&self.ctx.uid);
    }
}

/// Patches the pod's status whenever a container's state changes (coalescing bursts), until the
/// sandbox stops; then once more.
async fn report(ctx: Arc<PodContext>, shared: Shared, stop: CancellationToken) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    // A re-adopted pod keeps the start time and transitions it already reported.
    let start_time = ctx
        .pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(now);
    let mut transitions = Transitions::from_pod(&ctx.pod);
    let mut last: Option<Value> = None;
    loop {
        let stopping = tokio::select! {
            _ = shared.changed.notified() => false,
            _ = stop.cancelled() => true,
        };
        // Let a burst of changes (several containers starting) land in one write, without adding
        // much to the time a pod takes to show Running.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let status = status_json(&ctx, &shared.snapshot(), &start_time, &mut transitions);
        if shared.rewrite.swap(false, std::sync::atomic::Ordering::Relaxed) {
            last = None;
        }
        if last.as_ref() != Some(&status) {
            match pods
                .patch_status(&ctx.name, &PatchParams::default(), &Patch::Merge(json!({"status": status.clone()})))
                .await
            {
                Ok(_) => {
                    let ready = status["conditions"]
                        .as_array()
                        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                        .and_then(|c| c["status"].as_str())
                        .map(str::to_string);
                    *shared.written_ready.lock().unwrap_or_else(|p| p.into_inner()) = ready;
                    last = Some(status);
                }
                Err(e) => tracing::debug!(error = %e, pod = %ctx.name, "reporting pod status failed"),
            }
        }
        if stopping {
            return;
        }
    }
}
