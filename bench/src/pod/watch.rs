//! The one watch on pods that times them. Opened from a list's revision before the first create,
//! it notes the moment each pod is first seen Running with every container ready, with its IP.
//! Events are handled on their own task, so a benchmark busy creating pods never delays them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::pod_ip;

/// When a pod was first seen Running and ready.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    pub at: Instant,
    pub ip: Option<IpAddr>,
}

/// How far the pods have got, for waiters.
#[derive(Debug, Clone, Default)]
struct Progress {
    ready: usize,
    /// Why the benchmark cannot succeed: the watch broke, or a pod failed.
    failed: Option<String>,
}

/// What the watch has seen so far.
#[derive(Debug, Default)]
struct Seen {
    ready: HashMap<String, Ready>,
    /// The latest state of each pod not yet ready, for a timeout's message.
    pending: HashMap<String, String>,
    /// Times the server ended the watch and it was resumed from the last revision.
    resumed: u32,
}

type Events = Pin<Box<dyn Stream<Item = kube::Result<WatchEvent<Pod>>> + Send>>;

/// A running watch on the pods of one namespace; dropping it stops the watch.
pub struct PodWatch {
    seen: Arc<Mutex<Seen>>,
    progress: watch::Receiver<Progress>,
    task: JoinHandle<()>,
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The server ends a watch after this; it is resumed from the last revision, losing nothing.
/// (kube's client times a request out after 295 s.)
const WATCH_SECS: u32 = 290;
/// How long the API may take to answer the watch request's headers.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

impl PodWatch {
    /// Lists `pods` for the current revision and watches from it. Returns once the watch
    /// response has started, so every later create is seen as it happens.
    pub async fn open(pods: Api<Pod>) -> Result<Self> {
        let list = pods.list(&ListParams::default().limit(1)).await.context("listing pods")?;
        let revision = list.metadata.resource_version.context("the pod list has no resourceVersion")?;
        let events = tokio::time::timeout(OPEN_TIMEOUT, pods.watch(&params(), &revision))
            .await
            .map_err(|_| anyhow!("the pod watch was not answered within {OPEN_TIMEOUT:?}"))?
            .context("opening the pod watch")?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (progress_tx, progress) = watch::channel(Progress::default());
        let follower = Follower { pods, revision, seen: seen.clone(), progress: progress_tx };
        let task = tokio::spawn(follower.run(events.boxed()));
        Ok(Self { seen, progress, task })
    }

    /// Waits until `count` pods have been seen ready, failing at once if a pod fails or the watch
    /// breaks, and after `timeout` with what the stragglers were doing.
    pub async fn wait_ready(&mut self, count: usize, timeout: Duration) -> Result<()> {
        let waited = tokio::time::timeout(timeout, self.progress.wait_for(|p| p.ready >= count || p.failed.is_some()));
        let progress = match waited.await {
            Ok(Ok(progress)) => progress.clone(),
            Ok(Err(_)) => bail!("the pod watch task ended"),
            Err(_) => {
                let seen = self.seen.lock().expect("the watch task never panics holding the lock");
                let examples: Vec<String> =
                    seen.pending.iter().take(3).map(|(name, state)| format!("{name}: {state}")).collect();
                bail!("only {} of {count} pods ready after {timeout:?}; still waiting: {examples:?}", seen.ready.len())
            }
        };
        match progress.failed {
            Some(why) => bail!("{why}"),
            None => Ok(()),
        }
    }

    /// Every pod seen ready so far.
    pub fn ready(&self) -> HashMap<String, Ready> {
        self.seen.lock().expect("the watch task never panics holding the lock").ready.clone()
    }

    pub fn ready_count(&self) -> usize {
        self.progress.borrow().ready
    }

    /// Times the server ended the watch and it was resumed.
    pub fn resumed(&self) -> u32 {
        self.seen.lock().expect("the watch task never panics holding the lock").resumed
    }
}

fn params() -> WatchParams {
    WatchParams::default().timeout(WATCH_SECS)
}

/// The task behind a [`PodWatch`].
struct Follower {
    pods: Api<Pod>,
    /// The last revision seen, to resume from.
    revision: String,
    seen: Arc<Mutex<Seen>>,
    progress: watch::Sender<Progress>,
}

impl Follower {
    async fn run(mut self, mut events: Events) {
        loop {
            while let Some(event) = events.next().await {
                let at = Instant::now();
                if let Err(why) = self.handle(event, at) {
                    self.progress.send_modify(|p| p.failed = Some(why));
                    return;
                }
            }
            // The server ended the watch (its timeout): resume from the last revision seen.
            self.seen.lock().expect("only this task writes").resumed += 1;
            match self.pods.watch(&params(), &self.revision).await {
                Ok(next) => events = next.boxed(),
                Err(e) => {
                    self.progress.send_modify(|p| p.failed = Some(format!("resuming the pod watch: {e}")));
                    return;
                }
            }
        }
    }

    /// Takes one event received at `at`; an error ends the watch and the benchmark.
    fn handle(&mut self, event: kube::Result<WatchEvent<Pod>>, at: Instant) -> Result<(), String> {
        let pod = match event.map_err(|e| format!("the pod watch broke: {e}"))? {
            WatchEvent::Added(pod) | WatchEvent::Modified(pod) => pod,
            WatchEvent::Deleted(pod) => {
                self.revision = pod.metadata.resource_version.unwrap_or_default();
                return Ok(());
            }
            WatchEvent::Bookmark(bookmark) => {
                self.revision = bookmark.metadata.resource_version;
                return Ok(());
            }
            WatchEvent::Error(status) => return Err(format!("the pod watch answered an error: {}", status.message)),
        };
        if let Some(revision) = &pod.metadata.resource_version {
            self.revision.clone_from(revision);
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        if let Some(why) = failure(&pod) {
            return Err(format!("pod {name} failed: {why}"));
        }
        let mut seen = self.seen.lock().expect("only this task writes");
        if seen.ready.contains_key(&name) {
            return Ok(());
        }
        if is_ready(&pod) {
            seen.pending.remove(&name);
            seen.ready.insert(name, Ready { at, ip: pod_ip(&pod) });
            let ready = seen.ready.len();
            drop(seen);
            self.progress.send_modify(|p| p.ready = ready);
        } else {
            seen.pending.insert(name, state(&pod));
        }
        Ok(())
    }
}

/// Running, with every container ready (the Kubernetes `Ready` condition, read from the
/// container statuses the agent writes).
fn is_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else { return false };
    let containers = status.container_statuses.as_deref().unwrap_or_default();
    status.phase.as_deref() == Some("Running") && !containers.is_empty() && containers.iter().all(|c| c.ready)
}

/// Why a pod will not become ready without help, if it will not: the benchmark stops then
/// instead of waiting for its timeout.
fn failure(pod: &Pod) -> Option<String> {
    const STUCK: [&str; 5] =
        ["ErrImagePull", "ImagePullBackOff", "CrashLoopBackOff", "CreateContainerConfigError", "RunContainerError"];
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() == Some("Failed") {
        return Some(format!("phase Failed: {}", state(pod)));
    }
    let containers = status.container_statuses.as_deref().unwrap_or_default();
    let stuck = containers.iter().any(|c| {
        let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
        waiting.and_then(|w| w.reason.as_deref()).is_some_and(|r| STUCK.contains(&r))
            || c.state.as_ref().is_some_and(|s| s.terminated.is_some())
    });
    stuck.then(|| state(pod))
}

/// The phase and the first container's state, in a line.
fn state(pod: &Pod) -> String {
    let Some(status) = &pod.status else { return "no status yet".to_string() };
    let phase = status.phase.as_deref().unwrap_or("no phase");
    let container = status.container_statuses.as_deref().unwrap_or_default().first();
    let Some(container) = container.and_then(|c| c.state.as_ref()) else { return phase.to_string() };
    if let Some(w) = &container.waiting {
        return format!(
            "{phase}, waiting: {} {}",
            w.reason.as_deref().unwrap_or(""),
            w.message.as_deref().unwrap_or("")
        );
    }
    if let Some(t) = &container.terminated {
        let reason = t.reason.as_deref().unwrap_or("");
        return format!("{phase}, terminated: exit {} {reason} {}", t.exit_code, t.message.as_deref().unwrap_or(""));
    }
    format!("{phase}, running, not ready")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({ "metadata": { "name": "p" }, "status": status })).unwrap()
    }

    #[test]
    fn a_pod_is_ready_only_when_running_with_every_container_ready() {
        let cases = [
            (serde_json::json!({}), false),
            (serde_json::json!({ "phase": "Pending" }), false),
            (serde_json::json!({ "phase": "Running", "containerStatuses": [] }), false),
            (
                serde_json::json!({ "phase": "Running", "containerStatuses": [
                    { "name": "a", "ready": true, "restartCount": 0, "image": "", "imageID": "" },
                    { "name": "b", "ready": false, "restartCount": 0, "image": "", "imageID": "" }] }),
                false,
            ),
            (
                serde_json::json!({ "phase": "Running", "containerStatuses": [
                    { "name": "a", "ready": true, "restartCount": 0, "image": "", "imageID": "" }] }),
                true,
            ),
        ];
        for (status, want) in cases {
            assert_eq!(is_ready(&pod(status.clone())), want, "{status}");
        }
    }

    #[test]
    fn a_pod_stuck_pulling_or_failed_is_a_failure_but_a_starting_one_is_not() {
        let waiting = |reason: &str| {
            pod(serde_json::json!({ "phase": "Pending", "containerStatuses": [{ "name": "a", "ready": false,
                "restartCount": 0, "image": "", "imageID": "", "state": { "waiting": { "reason": reason } } }] }))
        };
        assert!(failure(&waiting("ErrImagePull")).is_some());
        assert!(failure(&waiting("ContainerCreating")).is_none());
        assert!(failure(&pod(serde_json::json!({ "phase": "Failed" }))).is_some());
        assert!(failure(&pod(serde_json::json!({ "phase": "Pending" }))).is_none());
    }
}
