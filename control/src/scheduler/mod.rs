//! The scheduler: binds pods without a node to the node its plugins choose.
//!
//! [`framework`] holds the snapshot, plugin traits and the decision ([`framework::schedule`]);
//! [`plugins`] the filters and scores. [`run`] is the loop: on every change to pods or nodes it
//! takes a fresh snapshot from the store, orders the unscheduled pods by priority then age, and
//! for each either binds it (`pods/binding`, guarded by the pod's resourceVersion) or marks it
//! `PodScheduled=False` / `Unschedulable` with Kubernetes' message and a `FailedScheduling`
//! event. Unschedulable pods are tried again whenever pods or nodes change, and every few seconds.

pub mod framework;
pub mod plugins;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wasmkube_api::kinds;

use crate::objects::{ListOptions, Objects, PatchKind, Subresource, Target, WriteOptions};
use crate::status::ApiError;
use framework::{FilterPlugin, NodeInfo, ScorePlugin, Snapshot};

/// The `schedulerName` pods get by default, and the name events are reported under.
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// How often unschedulable pods are retried without any change in the cluster.
const RETRY: Duration = Duration::from_secs(5);
/// How long a burst of changes (a Deployment creating pods) is gathered into one pass.
const BATCH: Duration = Duration::from_millis(5);

/// The scheduler's plugins.
pub struct Scheduler {
    pub filters: Vec<Box<dyn FilterPlugin>>,
    pub scores: Vec<Box<dyn ScorePlugin>>,
}

impl Default for Scheduler {
    fn default() -> Self {
        Self { filters: plugins::default_filters(), scores: plugins::default_scores() }
    }
}

fn kind(resource: &str) -> &'static wasmkube_api::Kind {
    kinds::by_resource("", "v1", resource).expect("core kinds are registered")
}

/// Runs until `cancel` fires.
pub async fn run(objects: Objects, scheduler: Scheduler, cancel: CancellationToken) {
    let store = objects.store().clone();
    let watch = |prefix: String| store.watch(&prefix, store.revision());
    let mut pod_changes = watch(kind("pods").key_prefix());
    let mut node_changes = watch(kind("nodes").key_prefix());
    loop {
        let waiting = match scheduler.pass(&objects).await {
            Ok(waiting) => waiting,
            Err(e) => {
                tracing::warn!(error = %e, "scheduling pass failed");
                true
            }
        };
        let retry = tokio::time::sleep(RETRY);
        tokio::pin!(retry);
        // Wait for a change worth a pass.
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                change = pod_changes.next() => match change {
                    // A status report changes nothing the scheduler decides on (a pod that
                    // finished frees room, which the periodic retry picks up).
                    Some(Ok(event)) if !crate::controller::beyond_status(&event) => continue,
                    Some(Ok(_)) => break,
                    _ => {
                        pod_changes = watch(kind("pods").key_prefix());
                        break;
                    }
                },
                change = node_changes.next() => {
                    if change.is_none_or(|c| c.is_err()) {
                        node_changes = watch(kind("nodes").key_prefix());
                    }
                    break;
                }
                _ = &mut retry, if waiting => break,
            }
        }
        tokio::time::sleep(BATCH).await;
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
    pub async fn pass(&self, objects: &Objects) -> Result<bool, ApiError> {
        let (mut snapshot, mut queue) = take_snapshot(objects).await?;
        if queue.is_empty() {
            return Ok(false);
        }
        // Higher priority first, then oldest first (FIFO), as Kubernetes' active queue orders.
        queue.sort_by(|a, b| {
            let priority = |p: &Pod| p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
            let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            priority(b).cmp(&priority(a)).then(created(a).cmp(&created(b))).then(a.metadata.name.cmp(&b.metadata.name))
        });
        let mut waiting = false;
        for pod in queue {
            match framework::schedule(&pod, &snapshot, &self.filters, &self.scores) {
                Ok(node) => match bind(objects, &pod, &node).await {
                    Ok(()) => {
                        if let Some(info) = snapshot.nodes.iter_mut().find(|n| n.name() == node) {
                            info.add_pod(pod);
                        }
                    }
                    // Someone else bound or changed it meanwhile: the next pass sees the truth.
                    Err(ApiError::Conflict { .. } | ApiError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                },
                Err(unschedulable) => {
                    waiting = true;
                    mark_unschedulable(objects, &pod, &unschedulable.message).await?;
                }
            }
        }
        Ok(waiting)
    }
}

/// Nodes (sorted by name) with their bound, non-terminal pods, and the pods waiting for a node.
async fn take_snapshot(objects: &Objects) -> Result<(Snapshot, Vec<Pod>), ApiError> {
    let list = |resource: &'static str| async move {
        let all = Target { kind: kind(resource), namespace: None, name: None };
        let listed = objects.list(&all, &ListOptions::default()).await?;
        Ok::<_, ApiError>(listed.get("items").and_then(Value::as_array).cloned().unwrap_or_default())
    };
    let mut nodes: Vec<NodeInfo> = list("nodes")
        .await?
        .into_iter()
        .filter_map(|n| serde_json::from_value::<Node>(n).ok())
        .map(NodeInfo::new)
        .collect();
    nodes.sort_by(|a, b| a.name().cmp(b.name()));
    let mut queue = Vec::new();
    for pod in list("pods").await?.into_iter().filter_map(|p| serde_json::from_value::<Pod>(p).ok()) {
        if unscheduled(&pod) {
            queue.push(pod);
            continue;
        }
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        if terminal(&pod) {
            continue;
        }
        if let Some(info) = nodes.iter_mut().find(|n| n.name() == node) {
            info.add_pod(pod);
        }
    }
    Ok((Snapshot { nodes }, queue))
}

fn target_of(pod: &Pod) -> Target {
    Target { kind: kind("pods"), namespace: pod.metadata.namespace.clone(), name: pod.metadata.name.clone() }
}

async fn bind(objects: &Objects, pod: &Pod, node: &str) -> Result<(), ApiError> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let binding = json!({"apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": pod.metadata.resource_version},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    objects.bind(&target_of(pod), &binding, &WriteOptions::default()).await?;
    tracing::debug!(pod = %name, %node, "bound");
    event(objects, pod, "Normal", "Scheduled", &format!("Successfully assigned {namespace}/{name} to {node}")).await;
    Ok(())
}

/// `PodScheduled=False`, reason `Unschedulable`, and a `FailedScheduling` event — written only
/// when the message changes, so a pod waiting for room does not rewrite itself every pass.
async fn mark_unschedulable(objects: &Objects, pod: &Pod, message: &str) -> Result<(), ApiError> {
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
    let mut status = json!({"status": {"phase": "Pending"}});
    crate::objects::set_condition(&mut status, condition);
    let patch = json!({"status": {"phase": "Pending", "conditions": status["status"]["conditions"]}});
    match objects.patch(&target_of(pod), patch, PatchKind::Merge, Subresource::Status, &WriteOptions::default()).await {
        Ok(_) | Err(ApiError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    event(objects, pod, "Warning", "FailedScheduling", message).await;
    Ok(())
}

/// Records a core/v1 Event about a pod (best effort).
async fn event(objects: &Objects, pod: &Pod, kind_: &str, reason: &str, message: &str) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let now = wasmkube_api::meta::now_rfc3339();
    let unique = jiff::Timestamp::now().as_nanosecond();
    let body = json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{name}.{unique:x}"), "namespace": namespace},
        "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": namespace, "name": name,
                           "uid": pod.metadata.uid, "resourceVersion": pod.metadata.resource_version},
        "reason": reason, "message": message, "type": kind_,
        "source": {"component": SCHEDULER_NAME}, "reportingComponent": SCHEDULER_NAME,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1});
    let target = Target { kind: kind("events"), namespace: Some(namespace), name: None };
    if let Err(e) = objects.create(&target, body, &WriteOptions::default()).await {
        tracing::debug!(error = %e, reason, "recording a scheduler event failed");
    }
}
