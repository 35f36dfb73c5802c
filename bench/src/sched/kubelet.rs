//! The hollow kubelet: one task for every hollow node. Given each pod the watch saw bound (and
//! not yet Running), it writes the status a node agent would once the pod's one container
//! started: phase Running, a pod IP from the node's podCIDR, the start time, the
//! Initialized/ContainersReady/Ready/PodScheduled conditions and a running, ready container.
//! Patches run `concurrency` at a time; each one's latency is recorded, and a failed one is
//! counted, never retried (its pod then never shows Running).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use wasmkube_bench::summary::Failures;

use crate::hollow::{self, now_rfc3339};
use crate::pods::{IMAGE, SlimPod};

/// Bound pods waiting for a status patch. The watch waits when this many are queued.
const QUEUE: usize = 1 << 16;

/// A pod the watch saw bound to `node`.
#[derive(Debug)]
pub struct BoundPod {
    pub name: String,
    pub node: String,
}

/// The running hollow kubelet; dropping it stops it.
pub struct Kubelet {
    patches: Arc<Mutex<Patches>>,
    task: JoinHandle<()>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Status patches since the last [`Kubelet::take`].
#[derive(Debug, Default)]
pub struct Patches {
    pub latencies: Vec<Duration>,
    pub errors: Failures,
}

impl Kubelet {
    /// Starts the kubelet; it patches the pods sent on the returned channel.
    pub fn start(pods: Api<SlimPod>, concurrency: usize) -> (Self, mpsc::Sender<BoundPod>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let patches = Arc::new(Mutex::new(Patches::default()));
        let task = tokio::spawn(run(pods, rx, concurrency, patches.clone()));
        (Self { patches, task }, tx)
    }

    /// The patches so far, and starts counting afresh.
    pub fn take(&self) -> Patches {
        std::mem::take(&mut *self.patches.lock().expect("the kubelet never panics holding the lock"))
    }
}

async fn run(pods: Api<SlimPod>, rx: mpsc::Receiver<BoundPod>, concurrency: usize, patches: Arc<Mutex<Patches>>) {
    // How many pod IPs each node has handed out.
    let mut handed_out: HashMap<usize, u32> = HashMap::new();
    let bound = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|pod| (pod, rx)) });
    bound
        .map(|pod| {
            let index = hollow::node_index(&pod.node).unwrap_or_default();
            let n = handed_out.entry(index).or_default();
            let status = running_status(index, *n);
            *n += 1;
            let pods = &pods;
            async move {
                let sent = Instant::now();
                let result = pods.patch_status(&pod.name, &PatchParams::default(), &Patch::Merge(status)).await;
                (pod.name, sent.elapsed(), result)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .for_each(|(name, elapsed, result)| {
            let mut patches = patches.lock().expect("the kubelet never panics holding the lock");
            match result {
                Ok(_) => patches.latencies.push(elapsed),
                Err(e) => patches.errors.record(format!("{name}: {e}")),
            }
            std::future::ready(())
        })
        .await;
}

/// The status of a pod on hollow node `node` whose container started now, with the node's
/// `n`th pod IP.
pub fn running_status(node: usize, n: u32) -> Value {
    let now = now_rfc3339(false);
    let (pod_ip, host_ip) = (hollow::pod_ip(node, n).to_string(), hollow::node_ip(node).to_string());
    let condition = |type_: &str| json!({"type": type_, "status": "True", "lastTransitionTime": now});
    json!({"status": {
        "phase": "Running",
        "conditions": [condition("PodReadyToStartContainers"), condition("Initialized"), condition("Ready"),
                       condition("ContainersReady"), condition("PodScheduled")],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": now,
        "qosClass": "Burstable",
        "containerStatuses": [{
            "name": "app",
            "image": IMAGE,
            "imageID": "",
            "containerID": format!("hollow://{node}/{n}"),
            "ready": true,
            "started": true,
            "restartCount": 0,
            "state": {"running": {"startedAt": now}},
        }],
    }})
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;

    #[test]
    fn a_hollow_running_status_is_a_valid_running_ready_pod_status() {
        let status: PodStatus = serde_json::from_value(running_status(258, 3)["status"].clone()).unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some("10.1.2.4"));
        assert_eq!(status.host_ip.as_deref(), Some("100.64.1.3"));
        let containers = status.container_statuses.unwrap();
        assert!(containers[0].ready && containers[0].state.as_ref().unwrap().running.is_some());
    }
}
