//! The hollow node agent of `sched-bench backlog`, in process: what [`hollow`](crate::hollow)'s
//! Lease renewals and the [`kubelet`](crate::kubelet) do over HTTP, done through the object
//! service the scheduler shares, so their writes compete with the bindings for the same store
//! and the same two cores, as a real cluster's would.
//!
//! - Leases: one per node, each renewed once per 10 s, spread evenly (500/s at 5,000 nodes), at
//!   most 256 in flight (a renewal due while that many are pending is skipped and counted).
//! - Kubelet: each pod reported bound gets the status a node agent writes once its container
//!   started (phase Running, pod IP, ready conditions), 64 patches in flight.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use wasmkube_control::objects::{Objects, PatchKind, Subresource, Target, WriteOptions};

use crate::{hollow, kubelet, pods};

const LEASE_PERIOD: Duration = Duration::from_secs(10);
const LEASES_IN_FLIGHT: usize = 256;
const STATUS_PATCHES_IN_FLIGHT: usize = 64;

fn kind(group: &str, resource: &str) -> &'static wasmkube_api::Kind {
    let version = "v1";
    wasmkube_api::kinds::by_resource(group, version, resource).expect("the kind is registered")
}

/// Writes node `i`'s Lease (part of filling the cluster, not measured).
pub async fn create_lease(objects: &Objects, i: usize) -> Result<()> {
    let all = Target {
        kind: kind("coordination.k8s.io", "leases"),
        namespace: Some(hollow::LEASE_NAMESPACE.into()),
        name: None,
    };
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": hollow::node_name(i)}, "spec": hollow::lease_spec(i)});
    objects.create(&all, lease, &WriteOptions::default()).await.context("creating a Lease")?;
    Ok(())
}

/// What the agent did while it ran.
#[derive(Debug, Default, Serialize)]
pub struct Work {
    pub lease_renewals: u64,
    pub lease_renewals_skipped: u64,
    pub lease_errors: u64,
    pub status_patches: u64,
    pub status_errors: u64,
}

#[derive(Default)]
struct Counters {
    renewed: AtomicU64,
    skipped: AtomicU64,
    lease_errors: AtomicU64,
    patched: AtomicU64,
    status_errors: AtomicU64,
}

/// The running agent; [`Agent::stop`] ends it.
pub struct Agent {
    bound: mpsc::UnboundedSender<(String, String)>,
    counters: Arc<Counters>,
    tasks: Vec<JoinHandle<()>>,
}

impl Agent {
    /// Starts renewing the Leases of `nodes` hollow nodes, and the kubelet.
    pub fn start(objects: &Objects, nodes: usize) -> Self {
        let counters = Arc::new(Counters::default());
        let (bound, mut pending) = mpsc::unbounded_channel::<(String, String)>();
        let renewals = tokio::spawn(renew_leases(objects.clone(), nodes, counters.clone()));
        let (objects, tally) = (objects.clone(), counters.clone());
        let kubelet = tokio::spawn(async move {
            let mut started: HashMap<String, u32> = HashMap::new();
            let work = futures::stream::poll_fn(move |cx| pending.poll_recv(cx))
                .map(|(pod, node): (String, String)| {
                    let n = started.entry(node.clone()).or_default();
                    *n += 1;
                    let status = kubelet::running_status(hollow::node_index(&node).unwrap_or(0), *n);
                    let target =
                        Target { kind: kind("", "pods"), namespace: Some(pods::NAMESPACE.into()), name: Some(pod) };
                    let (objects, tally) = (objects.clone(), tally.clone());
                    async move {
                        let patched = objects
                            .patch(&target, status, PatchKind::Merge, Subresource::Status, &WriteOptions::default())
                            .await;
                        let counter = if patched.is_ok() { &tally.patched } else { &tally.status_errors };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .buffer_unordered(STATUS_PATCHES_IN_FLIGHT);
            work.for_each(|()| std::future::ready(())).await;
        });
        Self { bound, counters, tasks: vec![renewals, kubelet] }
    }

    /// The pod `name` was seen bound to `node`: start its container.
    pub fn pod_bound(&self, name: String, node: String) {
        let _ = self.bound.send((name, node));
    }

    pub fn stop(self) -> Work {
        for task in &self.tasks {
            task.abort();
        }
        let c = &self.counters;
        Work {
            lease_renewals: c.renewed.load(Ordering::Relaxed),
            lease_renewals_skipped: c.skipped.load(Ordering::Relaxed),
            lease_errors: c.lease_errors.load(Ordering::Relaxed),
            status_patches: c.patched.load(Ordering::Relaxed),
            status_errors: c.status_errors.load(Ordering::Relaxed),
        }
    }
}

/// Renews node after node's Lease, each once per [`LEASE_PERIOD`], until aborted.
async fn renew_leases(objects: Objects, nodes: usize, counters: Arc<Counters>) {
    let room = Arc::new(Semaphore::new(LEASES_IN_FLIGHT));
    let mut ticks = tokio::time::interval(LEASE_PERIOD / nodes.max(1) as u32);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in (0..nodes).cycle() {
        ticks.tick().await;
        let Ok(permit) = room.clone().try_acquire_owned() else {
            counters.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (objects, counters) = (objects.clone(), counters.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let target = Target {
                kind: kind("coordination.k8s.io", "leases"),
                namespace: Some(hollow::LEASE_NAMESPACE.into()),
                name: Some(hollow::node_name(i)),
            };
            let patch = json!({"spec": hollow::lease_spec(i)});
            let renewed =
                objects.patch(&target, patch, PatchKind::Merge, Subresource::Main, &WriteOptions::default()).await;
            let counter = if renewed.is_ok() { &counters.renewed } else { &counters.lease_errors };
            counter.fetch_add(1, Ordering::Relaxed);
        });
    }
}
