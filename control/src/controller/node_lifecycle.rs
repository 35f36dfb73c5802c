//! The node lifecycle controller: notices nodes whose agent stopped reporting, taints them, and
//! evicts their pods, as kube-controller-manager's node lifecycle and taint eviction controllers do.
//!
//! A node's agent renews its Lease (`kube-node-lease/<node>`) and posts its Ready heartbeat every
//! few seconds. When neither has changed for the grace period, every condition of the node turns
//! Unknown (`NodeStatusUnknown`); a node whose Ready condition is Unknown gets the taints
//! `node.kubernetes.io/unreachable:NoExecute` and `:NoSchedule`, one whose Ready is False the
//! `node.kubernetes.io/not-ready` pair, and a Ready node neither. The taint manager then
//! deletes pods on a node with NoExecute taints they do not tolerate, at once or, for a toleration
//! with `tolerationSeconds`, that long after the taint's `timeAdded`; their controllers create
//! replacements, which the scheduler keeps off the tainted node. Pods on a node that is not
//! Ready have their own Ready condition turned False at once (Kubernetes' MarkPodsNotReady), so
//! their Services' EndpointSlices stop routing to them while they wait out their tolerations.
//!
//! The decisions are pure and tested as tables: [`health`] (is the node stale, its conditions
//! then, its lifecycle taints) and [`eviction`] (when a pod goes); this file reads and writes.
//! Staleness is judged by the controller's own clock — when it last *saw* a heartbeat change, not
//! the timestamps agents write — as Kubernetes' probe timestamps are, so skewed agent clocks do not
//! matter and a restarted control plane gives every node a full grace period to reach it again
//! before anything is evicted.

pub mod eviction;
pub mod health;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wasmkube_api::Kind;
use wasmkube_api::events::{EventType, InvolvedObject};

use super::{Changes, beyond_status, describe, list_typed};
use crate::events::Recorder;
use crate::objects::{DeleteOptions, Objects, PatchKind, Subresource, Target, WriteOptions};
use crate::scheduler::plugins::UNREACHABLE;
use crate::status::ApiError;
use eviction::{Eviction, eviction};
use health::{Heartbeat, Probe, lifecycle_taint, pod_not_ready, unknown_conditions, with_lifecycle_taint};

/// The component events are reported under (Kubernetes' taint eviction controller).
pub const COMPONENT: &str = "taint-eviction-controller";
/// Where node agents keep their Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The grace period Kubernetes defaults `--node-monitor-grace-period` to.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(40);
/// How long a burst of changes (pods reporting in) is gathered into one pass.
const BATCH: Duration = Duration::from_millis(20);
/// How soon a failed pass is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// The longest time between passes (Kubernetes' `--node-monitor-period` default).
pub const MONITOR_PERIOD: Duration = Duration::from_secs(5);

fn kind(group: &str, resource: &str) -> &'static Kind {
    wasmkube_api::kinds::by_resource(group, "v1", resource).expect("built-in kinds are registered")
}

/// A node after its sync.
struct Synced {
    name: String,
    /// Its NoExecute taints, each with the time it holds since.
    no_execute: Vec<(Taint, Timestamp)>,
    /// Its agent is lost, so its pods cannot be stopped gracefully.
    unreachable: bool,
    /// Its Ready condition is not True, so its pods are marked not ready.
    not_ready: bool,
    /// When it goes stale unless it reports again.
    recheck: Option<Timestamp>,
}

struct NodeLifecycle {
    objects: Objects,
    events: Recorder,
    grace: SignedDuration,
    probes: BTreeMap<String, Probe>,
    /// When a NoExecute taint without `timeAdded` (set by hand) was first seen, per (node, key).
    first_seen: BTreeMap<(String, String), Timestamp>,
    /// Nodes not Ready whose pods were marked not ready already: that happens once per time a node
    /// stops being Ready (as in Kubernetes), so an agent that is still there and reports its pods
    /// ready again is not overruled every pass.
    marked: BTreeSet<String>,
}

/// Runs until `cancel` fires. Passes run when a node arrives, goes or changes beyond its status,
/// when a pod arrives, moves or goes while some node has a NoExecute taint, at the next moment
/// something falls due (a node going stale, a toleration running out), and at least every
/// [`MONITOR_PERIOD`]. Heartbeats (Lease renewals, status posts) start no pass of their own: they
/// only matter when a node's deadline comes, or for a lost node that is back, which the monitor
/// period notices. So the cost of a cluster's heartbeats does not grow with its node count
/// times its pass cost.
pub async fn run(objects: Objects, events: Recorder, grace_period: Duration, cancel: CancellationToken) {
    let prefixes = vec![kind("", "nodes").key_prefix(), kind("", "pods").key_prefix()];
    let pods = kind("", "pods").key_prefix();
    let tainted = Arc::new(AtomicBool::new(true));
    let any_tainted = tainted.clone();
    let mut changes = Changes::filtered(&objects, prefixes, move |e| {
        beyond_status(e) && (!e.key.starts_with(&pods) || any_tainted.load(Ordering::Relaxed))
    });
    let grace = SignedDuration::try_from(grace_period).unwrap_or(SignedDuration::from_secs(40));
    let events = events.for_component(COMPONENT);
    let mut controller = NodeLifecycle {
        objects,
        events,
        grace,
        probes: BTreeMap::new(),
        first_seen: BTreeMap::new(),
        marked: BTreeSet::new(),
    };
    loop {
        let now = Timestamp::now();
        let wait = match controller.pass(now).await {
            Ok((next, any_no_execute)) => {
                tainted.store(any_no_execute, Ordering::Relaxed);
                next.map(|at| {
                    // Wake just after the deadline, never spin.
                    let ahead = Duration::try_from(at.duration_since(now)).unwrap_or_default();
                    (ahead + Duration::from_millis(5)).max(Duration::from_millis(10))
                })
            }
            Err(e) => {
                tracing::warn!(error = %describe(&e), "node lifecycle pass failed");
                Some(RETRY)
            }
        };
        let wait = wait.unwrap_or(MONITOR_PERIOD).min(MONITOR_PERIOD);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = changes.next() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        changes.settle(BATCH).await;
    }
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A write that lost a race with another writer: the change it raced with starts another pass.
fn is_race(e: &ApiError) -> bool {
    matches!(e, ApiError::Conflict { .. } | ApiError::NotFound { .. })
}

impl NodeLifecycle {
    /// Syncs every node, then evicts; returns when to look again without a change, and whether
    /// some node has a NoExecute taint (so pods arriving matter).
    async fn pass(&mut self, now: Timestamp) -> Result<(Option<Timestamp>, bool), ApiError> {
        let nodes: Vec<Node> = list_typed(&self.objects, kind("", "nodes"), None).await?;
        let leases: Vec<Lease> =
            list_typed(&self.objects, kind("coordination.k8s.io", "leases"), Some(LEASE_NAMESPACE)).await?;
        let renewed: BTreeMap<String, Timestamp> = leases
            .iter()
            .filter_map(|l| Some((l.metadata.name.clone()?, l.spec.as_ref()?.renew_time.as_ref()?.0)))
            .collect();
        let names: BTreeSet<String> = nodes.iter().filter_map(|n| n.metadata.name.clone()).collect();
        self.probes.retain(|name, _| names.contains(name));
        self.marked.retain(|name| names.contains(name));
        let mut next = None;
        let mut tainted = Vec::new();
        for node in nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            match self.sync_node(node, renewed.get(&name).copied(), now).await {
                Ok(synced) => {
                    next = earliest(next, synced.recheck);
                    if !synced.not_ready {
                        self.marked.remove(&synced.name);
                    }
                    if !synced.no_execute.is_empty() {
                        tainted.push(synced);
                    }
                }
                Err(e) => {
                    if is_race(&e) {
                        tracing::debug!(node = %name, error = %describe(&e), "node sync raced; retrying");
                    } else {
                        tracing::warn!(node = %name, error = %describe(&e), "node sync failed");
                    }
                    next = earliest(next, now.checked_add(RETRY).ok());
                }
            }
        }
        let held: BTreeSet<(String, String)> =
            tainted.iter().flat_map(|s| s.no_execute.iter().map(|(t, _)| (s.name.clone(), t.key.clone()))).collect();
        self.first_seen.retain(|k, _| held.contains(k));
        if tainted.is_empty() {
            return Ok((next, false));
        }
        let pods: Vec<Pod> = list_typed(&self.objects, kind("", "pods"), None).await?;
        for node in &tainted {
            let on_node =
                pods.iter().filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&node.name));
            let mark = node.not_ready && !self.marked.contains(&node.name);
            let mut all_marked = true;
            for pod in on_node {
                if mark && let Err(e) = self.mark_not_ready(pod, now).await {
                    tracing::warn!(pod = ?pod.metadata.name, error = %describe(&e), "marking a pod not ready failed");
                    next = earliest(next, now.checked_add(RETRY).ok());
                    all_marked = false;
                }
                next = earliest(next, self.evict_if_due(pod, node, now).await);
            }
            if mark && all_marked {
                self.marked.insert(node.name.clone());
            }
        }
        Ok((next, true))
    }

    /// Updates one node's conditions and lifecycle taint from its heartbeats.
    async fn sync_node(
        &mut self,
        mut node: Node,
        lease: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<Synced, ApiError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let conditions = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        let ready = conditions.iter().find(|c| c.type_ == "Ready");
        let heartbeat = Heartbeat { status: ready.and_then(|c| c.last_heartbeat_time.as_ref()).map(|t| t.0), lease };
        let probe = Probe::observe(self.probes.get(&name), heartbeat, now);
        self.probes.insert(name.clone(), probe);
        let mut recheck = None;
        let mut conditions = conditions;
        if !probe.stale(now, self.grace) {
            recheck = Some(probe.deadline(self.grace));
        } else if let Some(unknown) =
            unknown_conditions(&conditions, node.metadata.creation_timestamp.as_ref().map(|t| t.0), now)
        {
            let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version},
                               "status": {"conditions": unknown}});
            node = self.patch_node(&name, patch, Subresource::Status).await?;
            tracing::info!(node = %name, "node stopped posting status; its conditions are now Unknown");
            conditions = unknown;
        }
        let want = lifecycle_taint(&conditions);
        let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        let taints = match with_lifecycle_taint(&taints, want, now) {
            Some(next) => {
                let value = if next.is_empty() { Value::Null } else { json!(next) };
                let patch =
                    json!({"metadata": {"resourceVersion": node.metadata.resource_version}, "spec": {"taints": value}});
                self.patch_node(&name, patch, Subresource::Main).await?;
                tracing::info!(node = %name, taint = ?want, "node lifecycle taint updated");
                next
            }
            None => taints,
        };
        let no_execute = taints
            .into_iter()
            .filter(|t| t.effect == "NoExecute")
            .map(|t| {
                let since = match &t.time_added {
                    Some(added) => added.0,
                    None => *self.first_seen.entry((name.clone(), t.key.clone())).or_insert(now),
                };
                (t, since)
            })
            .collect();
        Ok(Synced { name, no_execute, unreachable: want == Some(UNREACHABLE), not_ready: want.is_some(), recheck })
    }

    async fn patch_node(&self, name: &str, patch: Value, sub: Subresource) -> Result<Node, ApiError> {
        let target = Target { kind: kind("", "nodes"), namespace: None, name: Some(name.to_string()) };
        let written = self.objects.patch(&target, patch, PatchKind::Merge, sub, &WriteOptions::default()).await?;
        serde_json::from_value(written.object).map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// Turns the Ready condition of a pod on a node that is not Ready False, if it is True.
    async fn mark_not_ready(&self, pod: &Pod, now: Timestamp) -> Result<(), ApiError> {
        let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
        let Some(conditions) = pod_not_ready(conditions, now) else { return Ok(()) };
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        tracing::info!(pod = %format!("{namespace}/{name}"), "marking pod on a node that is not ready not ready");
        // The resourceVersion makes this lose to a status the agent wrote meanwhile.
        let patch = json!({"metadata": {"resourceVersion": pod.metadata.resource_version},
                           "status": {"conditions": conditions}});
        let target = Target { kind: kind("", "pods"), namespace: Some(namespace), name: Some(name) };
        match self.objects.patch(&target, patch, PatchKind::Merge, Subresource::Status, &WriteOptions::default()).await
        {
            Ok(_) => {}
            // Gone: nothing to mark. A conflict (the pod changed meanwhile) is an error, so the
            // node is not counted as marked and the next pass tries again.
            Err(ApiError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
        self.events.event(InvolvedObject::of(pod), EventType::Warning, "NodeNotReady", "Node is not ready").await;
        Ok(())
    }

    /// Deletes `pod` if its tolerations say so; otherwise returns when they run out, if ever.
    async fn evict_if_due(&self, pod: &Pod, node: &Synced, now: Timestamp) -> Option<Timestamp> {
        let terminating = pod.metadata.deletion_timestamp.is_some();
        if terminating && !node.unreachable {
            return None; // its agent is stopping it already
        }
        let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default();
        match eviction(tolerations, &node.no_execute, now) {
            Eviction::Keep => None,
            Eviction::At(at) => Some(at),
            Eviction::Now => {
                if let Err(e) = self.evict(pod, node.unreachable, terminating).await {
                    tracing::warn!(pod = ?pod.metadata.name, error = %describe(&e), "evicting a pod failed");
                    return now.checked_add(RETRY).ok();
                }
                None
            }
        }
    }

    /// Deletes an evicted pod: gracefully when its agent is there to stop it, with no grace when
    /// the node is unreachable (its agent cannot; if it comes back it finds the pod gone and stops
    /// it then). The delete is of exactly this pod (uid), never a successor with its name.
    async fn evict(&self, pod: &Pod, unreachable: bool, terminating: bool) -> Result<(), ApiError> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        tracing::info!(pod = %format!("{namespace}/{name}"), unreachable, "evicting pod from tainted node");
        if !terminating {
            let message = format!("Marking for deletion Pod {namespace}/{name}");
            self.events.event(InvolvedObject::of(pod), EventType::Normal, "TaintManagerEviction", &message).await;
        }
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let options = DeleteOptions {
            grace_period_seconds: unreachable.then_some(0),
            ..DeleteOptions::exactly(uid, None, "Background")
        };
        let target = Target { kind: kind("", "pods"), namespace: Some(namespace), name: Some(name) };
        match self.objects.delete(&target, &options).await {
            Ok(_) => Ok(()),
            Err(e) if is_race(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
