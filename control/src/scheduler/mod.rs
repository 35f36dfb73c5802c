//! The scheduler: binds pods without a node to the node its plugins choose.
//!
//! [`framework`] holds the snapshot, plugin traits and the decision ([`framework::schedule`]);
//! [`plugins`] the filters and scores. [`run`] is the loop: on every change to pods or nodes it
//! takes a snapshot of its cache, orders the unscheduled pods by priority then age, and for each
//! either binds it (`pods/binding`, guarded by the pod's resourceVersion) or marks it
//! `PodScheduled=False` / `Unschedulable` with Kubernetes' message and a `FailedScheduling`
//! event. Unschedulable pods are tried again whenever pods or nodes change, and every few seconds.
//!
//! As in Kubernetes, deciding and binding are separate: a pass decides pod after pod in memory,
//! counting each decision as "assumed" on its node at once, while the bindings (durable writes)
//! run concurrently, so the store commits many of them together. A binding that fails un-assumes
//! its pod, which the next pass takes again. In a large cluster a pod's search stops once it has
//! found enough feasible nodes ([`framework::nodes_to_find`]), starting where the last pod's
//! search stopped.

pub mod framework;
pub mod plugins;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use wasmkube_api::events::{EventType, InvolvedObject};
use wasmkube_api::kinds;

use crate::events::Recorder;
use crate::objects::{Objects, PatchKind, Subresource, Target, WriteOptions};
use crate::status::ApiError;
use crate::store::{Event, EventStream, KeyValue, RangeRequest, Revision};
use framework::{FilterPlugin, NodeInfo, PodInfo, Requests, ScorePlugin, Snapshot};

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
            state.assumed.remove(&key);
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
                    state.assumed.remove(&key);
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

/// Pods and nodes as the store has them, kept up to date from its watch.
struct Cache {
    /// Every pod with its requests (parsed once, when the pod arrives or changes).
    pods: HashMap<String, (Arc<Pod>, Requests)>,
    /// Each node without pods: a pass's snapshot starts from clones of these.
    nodes: HashMap<String, NodeInfo>,
    /// Pods this scheduler bound whose binding the watch has not delivered yet, and their node
    /// (Kubernetes' "assumed" pods): counted on that node, so the next pass does not place
    /// another pod into room that is already taken.
    assumed: HashMap<String, String>,
}

impl Cache {
    /// Reads every pod and node, and opens the watch that keeps them current. Events between the
    /// revision noted first and the read are applied again afterwards, in order, so the cache
    /// converges on the store whatever the read saw.
    async fn load(objects: &Objects) -> Result<(Self, EventStream), ApiError> {
        let store = objects.store().clone();
        let revision = store.revision();
        let changes: EventStream = Box::pin(futures::stream::select(
            store.watch(&kind("pods").key_prefix(), revision),
            store.watch(&kind("nodes").key_prefix(), revision),
        ));
        // Straight from the stored bytes into the typed objects: the one full read of a large
        // cluster is on the path to the first binding.
        let list = |resource: &'static str| {
            let store = store.clone();
            async move {
                let request = RangeRequest { prefix: kind(resource).key_prefix(), ..RangeRequest::default() };
                Ok::<_, ApiError>(store.range(request).await?.items)
            }
        };
        let pods = decode_all(list("pods").await?, |kv| {
            let pod = decode::<Pod>(&kv.value, kv.mod_revision)?;
            Some((kv.key, (Requests::of(&pod), Arc::new(pod))))
        })
        .await
        .into_iter()
        .map(|(key, (requests, pod))| (key, (pod, requests)))
        .collect();
        let nodes = decode_all(list("nodes").await?, |kv| {
            Some((kv.key, NodeInfo::new(decode::<Node>(&kv.value, kv.mod_revision)?)))
        })
        .await
        .into_iter()
        .collect();
        Ok((Self { pods, nodes, assumed: HashMap::new() }, changes))
    }

    /// Applies one store event; true when it can change a scheduling decision.
    fn apply(&mut self, event: &Event) -> bool {
        let is_pod = event.key.starts_with(&kind("pods").key_prefix());
        let worth_a_pass = !is_pod || crate::controller::beyond_status(event);
        match (is_pod, event.value.as_deref()) {
            (true, Some(bytes)) => {
                if let Some(pod) = decode::<Pod>(bytes, event.revision) {
                    if !unscheduled(&pod) {
                        self.assumed.remove(&event.key);
                    }
                    let requests = Requests::of(&pod);
                    self.pods.insert(event.key.clone(), (Arc::new(pod), requests));
                }
            }
            (true, None) => {
                self.assumed.remove(&event.key);
                self.pods.remove(&event.key);
            }
            (false, Some(bytes)) => {
                if let Some(node) = decode::<Node>(bytes, event.revision) {
                    self.nodes.insert(event.key.clone(), NodeInfo::new(node));
                }
            }
            (false, None) => {
                self.nodes.remove(&event.key);
            }
        }
        worth_a_pass
    }

    /// The pods waiting for a node (neither bound nor assumed).
    fn waiting(&self) -> Vec<PodInfo> {
        let waiting = self.pods.iter().filter(|(key, (pod, _))| unscheduled(pod) && !self.assumed.contains_key(*key));
        waiting.map(|(_, (pod, requests))| PodInfo::with_requests(pod.clone(), *requests)).collect()
    }

    /// Nodes (sorted by name) with their bound and assumed, non-terminal pods.
    fn snapshot(&self) -> Snapshot {
        let mut nodes: Vec<NodeInfo> = self.nodes.values().cloned().collect();
        nodes.sort_by(|a, b| a.name().cmp(b.name()));
        let index: HashMap<String, usize> = nodes.iter().enumerate().map(|(i, n)| (n.name().to_string(), i)).collect();
        for (key, (pod, requests)) in &self.pods {
            let assumed = self.assumed.get(key);
            if unscheduled(pod) && assumed.is_none() {
                continue;
            }
            if terminal(pod) {
                continue;
            }
            let node = assumed.map(String::as_str);
            let node = node.or(pod.spec.as_ref().and_then(|s| s.node_name.as_deref())).unwrap_or_default();
            if let Some(i) = index.get(node) {
                nodes[*i].add_pod_with(pod.clone(), *requests);
            }
        }
        Snapshot::new(nodes)
    }
}

/// `decode` applied to every item, on the blocking pool in one chunk per core: a large
/// cluster's full read is otherwise one core's work while the other waits.
async fn decode_all<T: Send + 'static>(items: Vec<KeyValue>, decode: fn(KeyValue) -> Option<T>) -> Vec<T> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = items.len().div_ceil(cores).max(1);
    let mut items = items.into_iter();
    let mut chunks = Vec::new();
    loop {
        let part: Vec<KeyValue> = items.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        chunks.push(tokio::task::spawn_blocking(move || part.into_iter().filter_map(decode).collect::<Vec<T>>()));
    }
    let mut decoded = Vec::new();
    for part in futures::future::join_all(chunks).await {
        decoded.extend(part.expect("decoding does not panic"));
    }
    decoded
}

/// A stored pod or node as of `revision`, decoded straight into its type.
fn decode<T: k8s_openapi::Metadata<Ty = ObjectMeta> + serde::de::DeserializeOwned>(
    bytes: &[u8],
    revision: Revision,
) -> Option<T> {
    let mut object: T = serde_json::from_slice(bytes).ok()?;
    object.metadata_mut().resource_version = Some(revision.to_string());
    Some(object)
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
        let mut queue = cache.waiting();
        if queue.is_empty() {
            return Ok(false);
        }
        let mut snapshot = cache.snapshot();
        // Higher priority first, then oldest first (FIFO), as Kubernetes' active queue orders.
        queue.sort_by(|a, b| {
            let priority = |p: &Pod| p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
            let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            priority(b).cmp(&priority(a)).then(created(a).cmp(&created(b))).then(a.metadata.name.cmp(&b.metadata.name))
        });
        let mut waiting = false;
        let find = framework::nodes_to_find(snapshot.nodes.len());
        for pod in queue {
            let decision =
                framework::schedule_from(&pod, &snapshot, &self.filters, &self.scores, self.next_start, find);
            match decision {
                Ok((node, next_start)) => {
                    self.next_start = next_start;
                    let key = target_of(&pod).key().unwrap_or_default();
                    cache.assumed.insert(key.clone(), node.clone());
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
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let binding = json!({"apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": pod.metadata.resource_version},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    objects.bind(&target_of(pod), &binding, &WriteOptions::default()).await?;
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
    let mut status = json!({"status": {"phase": "Pending"}});
    crate::objects::set_condition(&mut status, condition);
    let patch = json!({"status": {"phase": "Pending", "conditions": status["status"]["conditions"]}});
    match objects.patch(&target_of(pod), patch, PatchKind::Merge, Subresource::Status, &WriteOptions::default()).await {
        Ok(_) | Err(ApiError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    events.event(InvolvedObject::of(pod), EventType::Warning, "FailedScheduling", message).await;
    Ok(())
}
