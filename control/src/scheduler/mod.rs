//! The scheduler: binds pods without a node to the node its plugins choose.
//!
//! [`framework`] holds the snapshot, plugin traits and the decision ([`framework::schedule`]);
//! [`plugins`] the filters and scores; `cache` the pods and nodes kept from the watch, with a
//! snapshot kept between passes. [`run`] is the loop: on every change to pods or nodes it
//! brings the snapshot up to date, orders the unscheduled pods by priority then age, and for each
//! either binds it (the `pods/binding` write, made from its copy of the pod and guarded by that
//! copy's resourceVersion) or marks it `PodScheduled=False` / `Unschedulable` with Kubernetes'
//! message and a `FailedScheduling` event. Unschedulable pods are tried again whenever pods or
//! nodes change, and every few seconds.
//!
//! As in Kubernetes, deciding and binding are separate: a pass decides pod after pod in memory,
//! counting each decision as "assumed" on its node at once, while the bindings (durable writes)
//! run concurrently, so the store commits many of them together. A binding that fails un-assumes
//! its pod, which the next pass takes again. In a large cluster a pod's search stops once it has
//! found enough feasible nodes ([`framework::nodes_to_find`]), starting where the last pod's
//! search stopped.

mod cache;
pub mod framework;
pub mod plugins;

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use wasmkube_api::events::{EventType, InvolvedObject};
use wasmkube_api::kinds;

use crate::events::Recorder;
use crate::objects::{Objects, PatchKind, Subresource, Target, WriteOptions};
use crate::status::ApiError;
use crate::store::EventStream;
use cache::Cache;
use framework::{FilterPlugin, PodInfo, ScorePlugin, Snapshot};

/// The `schedulerName` pods get by default, and the name events are reported under.
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// How often unschedulable pods are retried without any change in the cluster.
const RETRY: Duration = Duration::from_secs(5);
/// How long a burst of changes (a Deployment creating pods) is gathered into one pass.
const BATCH: Duration = Duration::from_millis(5);
/// Bindings in flight at once; a pass waits for room beyond that.
const BINDINGS_IN_FLIGHT: usize = 256;

/// The scheduler's plugins.
pub struct Scheduler {
    pub filters: Vec<Box<dyn FilterPlugin>>,
    pub scores: Vec<Box<dyn ScorePlugin>>,
    /// Where the next pod's search for feasible nodes starts.
    next_start: usize,
}

impl Default for Scheduler {
    fn default() -> Self {
        Self { filters: plugins::default_filters(), scores: plugins::default_scores(), next_start: 0 }
    }
}

/// The bindings a pass has started: their number is bounded, and each reports its pod's cache
/// key when it fails.
struct Binder {
    room: Arc<Semaphore>,
    failed: mpsc::UnboundedSender<String>,
}

fn kind(resource: &str) -> &'static wasmkube_api::Kind {
    kinds::by_resource("", "v1", resource).expect("core kinds are registered")
}

/// Runs until `cancel` fires.
pub async fn run(objects: Objects, events: Recorder, scheduler: Scheduler, cancel: CancellationToken) {
    let mut scheduler = scheduler;
    let events = events.for_component(SCHEDULER_NAME);
    let (failed_tx, mut failed) = mpsc::unbounded_channel();
    let binder = Binder { room: Arc::new(Semaphore::new(BINDINGS_IN_FLIGHT)), failed: failed_tx };
    let mut cache: Option<(Cache, EventStream)> = None;
    loop {
        // The informer: a full read once (and after a broken watch), then the watch's events.
        let (state, changes) = match cache.take() {
            Some(ready) => ready,
            None => match Cache::load(&objects).await {
                Ok(loaded) => loaded,
                Err(e) => {
                    tracing::warn!(error = %e, "loading the scheduler's cache failed");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(RETRY) => continue,
                    }
                }
            },
        };
        let mut state = state;
        let mut changes = changes;
        // Bindings that failed since the last pass: their pods are unscheduled again.
        while let Ok(key) = failed.try_recv() {
            state.forget(&key);
        }
        let waiting = match scheduler.pass(&objects, &events, &binder, &mut state).await {
            Ok(waiting) => waiting,
            Err(e) => {
                tracing::warn!(error = %e, "scheduling pass failed");
                true
            }
        };
        let retry = tokio::time::sleep(RETRY);
        tokio::pin!(retry);
        // Apply changes until one is worth a pass: a pod arriving, moving or going, or any change
        // to a node. A status report changes nothing the scheduler decides on (a pod that
        // finished frees room, which the periodic retry picks up).
        let healthy = loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                change = changes.next() => match change {
                    Some(Ok(event)) => {
                        let worth_a_pass = state.apply(&event);
                        if worth_a_pass {
                            break true;
                        }
                    }
                    _ => break false,
                },
                _ = &mut retry, if waiting => break true,
                Some(key) = failed.recv() => {
                    state.forget(&key);
                    break true;
                }
            }
        };
        tokio::time::sleep(BATCH).await;
        if healthy {
            // Take in what arrived during the batching delay too.
            while let Some(Some(Ok(event))) = changes.next().now_or_never() {
                state.apply(&event);
            }
            cache = Some((state, changes));
        }
    }
}

/// Whether a pod is waiting for this scheduler.
fn unscheduled(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    spec.is_some_and(|s| s.node_name.as_deref().unwrap_or("").is_empty())
        && spec.and_then(|s| s.scheduler_name.as_deref()).is_none_or(|n| n == SCHEDULER_NAME)
        && pod.metadata.deletion_timestamp.is_none()
        && !terminal(pod)
}

fn terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

impl Scheduler {
    /// One pass over every unscheduled pod; true if some are still waiting.
    async fn pass(
        &mut self,
        objects: &Objects,
        events: &Recorder,
        binder: &Binder,
        cache: &mut Cache,
    ) -> Result<bool, ApiError> {
        // Most passes are woken by the watch reporting this scheduler's own bindings: nothing
        // waits, and the snapshot (every node and bound pod) is not worth building.
        let queue = cache.waiting();
        if queue.is_empty() {
            return Ok(false);
        }
        let mut snapshot = cache.snapshot();
        let waiting = self.place(objects, events, binder, cache, &mut snapshot, queue).await;
        cache.keep(snapshot);
        waiting
    }

    /// Decides for each pod of `queue` in turn, counting each decision in `snapshot` and `cache`.
    async fn place(
        &mut self,
        objects: &Objects,
        events: &Recorder,
        binder: &Binder,
        cache: &mut Cache,
        snapshot: &mut Snapshot,
        mut queue: Vec<PodInfo>,
    ) -> Result<bool, ApiError> {
        // Higher priority first, then oldest first (FIFO), as Kubernetes' active queue orders.
        queue.sort_by(|a, b| {
            let priority = |p: &Pod| p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
            let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            priority(b).cmp(&priority(a)).then(created(a).cmp(&created(b))).then(a.metadata.name.cmp(&b.metadata.name))
        });
        let mut waiting = false;
        let find = framework::nodes_to_find(snapshot.nodes.len());
        for pod in queue {
            let decision = framework::schedule_from(&pod, snapshot, &self.filters, &self.scores, self.next_start, find);
            match decision {
                Ok((node, next_start)) => {
                    self.next_start = next_start;
                    let key = target_of(&pod).key().unwrap_or_default();
                    cache.assume(&key, &node);
                    let room = binder.room.clone().acquire_owned().await.expect("the semaphore is never closed");
                    let (objects, events, failed) = (objects.clone(), events.clone(), binder.failed.clone());
                    let binding = pod.clone();
                    let target = node.clone();
                    tokio::spawn(async move {
                        let _room = room;
                        match bind(&objects, &events, &binding, &target).await {
                            Ok(()) => {}
                            // Someone else bound or changed it meanwhile: the watch tells the truth.
                            Err(ApiError::Conflict { .. } | ApiError::NotFound { .. }) => {
                                let _ = failed.send(key);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, pod = ?binding.metadata.name, "binding failed");
                                let _ = failed.send(key);
                            }
                        }
                    });
                    snapshot.add_pod(&node, &pod);
                }
                Err(unschedulable) => {
                    waiting = true;
                    mark_unschedulable(objects, events, &pod, &unschedulable.message).await?;
                }
            }
        }
        Ok(waiting)
    }
}

fn target_of(pod: &Pod) -> Target {
    Target { kind: kind("pods"), namespace: pod.metadata.namespace.clone(), name: pod.metadata.name.clone() }
}

async fn bind(objects: &Objects, events: &Recorder, pod: &Pod, node: &str) -> Result<(), ApiError> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    // The pod as the watch last delivered it, guarded by its resourceVersion: a Binding's write
    // without reading the pod again.
    objects.bind_pod(pod, node).await?;
    tracing::debug!(pod = %name, %node, "bound");
    let message = format!("Successfully assigned {namespace}/{name} to {node}");
    events.event(InvolvedObject::of(pod), EventType::Normal, "Scheduled", &message).await;
    Ok(())
}

/// `PodScheduled=False`, reason `Unschedulable`, and a `FailedScheduling` event — written only
/// when the message changes, so a pod waiting for room does not rewrite itself every pass.
async fn mark_unschedulable(objects: &Objects, events: &Recorder, pod: &Pod, message: &str) -> Result<(), ApiError> {
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
        .and_then(|c| c.message.clone());
    if current.as_deref() == Some(message) {
        return Ok(());
    }
    let condition = json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
        "lastTransitionTime": wasmkube_api::meta::now_rfc3339()});
    // The merge patch replaces the whole list: keep the pod's other conditions in it.
    let others = pod.status.as_ref().and_then(|s| s.conditions.as_ref()).map(serde_json::to_value);
    let mut status =
        json!({"status": {"phase": "Pending", "conditions": others.and_then(Result::ok).unwrap_or(json!([]))}});
    crate::objects::set_condition(&mut status, condition);
    let patch = json!({"status": {"phase": "Pending", "conditions": status["status"]["conditions"]}});
    match objects.patch(&target_of(pod), patch, PatchKind::Merge, Subresource::Status, &WriteOptions::default()).await {
        Ok(_) | Err(ApiError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    events.event(InvolvedObject::of(pod), EventType::Warning, "FailedScheduling", message).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::testing::objects_with_pod;

    #[tokio::test]
    async fn marking_a_pod_unschedulable_keeps_its_other_conditions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (objects, target) = objects_with_pod(dir.path()).await;
        let other = json!({"status": {"conditions": [{"type": "DisruptionTarget", "status": "True"}]}});
        let opts = WriteOptions::default();
        objects.patch(&target, other, PatchKind::Merge, Subresource::Status, &opts).await.expect("status");
        let pod: Pod = serde_json::from_value(objects.get(&target).await.expect("get")).expect("a pod");
        let events = Recorder::new(objects.clone());
        mark_unschedulable(&objects, &events, &pod, "0/0 nodes are available").await.expect("marked");
        let stored = objects.get(&target).await.expect("get");
        let types: Vec<&str> = stored["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .filter_map(|c| c["type"].as_str())
            .collect();
        assert_eq!(types, ["DisruptionTarget", "PodScheduled"]);
        assert_eq!(stored["status"]["conditions"][1]["reason"], "Unschedulable");
    }
}
