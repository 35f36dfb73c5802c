//! Hollow nodes, kubemark's idea: Node objects with a Ready status and a Lease each, kept alive
//! by this process instead of by agents. Nothing runs on them; the hollow kubelet
//! ([`crate::kubelet`]) only reports the pods bound to them as Running.
//!
//! Each node has 8 CPUs, 32 GiB and room for 110 pods, a zone label (`zone-0`…), a `/24` podCIDR
//! of its own in `10.0.0.0/8` (the control plane's default cluster CIDR holds only 256 node
//! blocks) and an InternalIP in `100.64.0.0/10`. Its Lease in `kube-node-lease` is renewed every
//! `period`, the renewals of all nodes spread evenly over it, as node agents renew theirs.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use wasmkube_bench::summary::{Failures, Latency, round};

/// Where node Leases live.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// `leaseDurationSeconds`, as node agents write it.
const LEASE_SECONDS: i32 = 40;
/// Node indices map one-to-one onto podCIDRs `10.X.Y.0/24`.
pub const MAX_NODES: usize = 1 << 16;

pub fn node_name(i: usize) -> String {
    format!("hollow-{i:05}")
}

/// The index in a hollow node's name.
pub fn node_index(name: &str) -> Option<usize> {
    name.strip_prefix("hollow-")?.parse().ok()
}

/// The node's InternalIP.
pub fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 1)) + i as u32)
}

/// The `n`th pod IP of node `i`, in its podCIDR (110 pods fit in a /24).
pub fn pod_ip(i: usize, n: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, (i >> 8) as u8, (i & 0xff) as u8, 1 + (n % 254) as u8)
}

fn pod_cidr(i: usize) -> String {
    format!("10.{}.{}.0/24", i >> 8, i & 0xff)
}

/// A timestamp as Kubernetes writes `Time` (whole seconds) or `MicroTime`.
pub fn now_rfc3339(micro: bool) -> String {
    let now = jiff::Timestamp::now();
    if micro { now.strftime("%Y-%m-%dT%H:%M:%S.%6fZ") } else { now.strftime("%Y-%m-%dT%H:%M:%SZ") }.to_string()
}

/// Hollow node `i` of a cluster with `zones` zones, Ready now.
pub fn node(i: usize, zones: usize) -> Value {
    let (name, now) = (node_name(i), now_rfc3339(false));
    let resources = json!({"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    let condition = |type_: &str, status: &str, reason: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": "hollow node",
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "topology.kubernetes.io/zone": format!("zone-{}", i % zones.max(1)),
            "node.kubernetes.io/instance-type": "hollow",
        }},
        "spec": {"podCIDR": pod_cidr(i), "podCIDRs": [pod_cidr(i)]},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                condition("Ready", "True", "KubeletReady"),
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID"),
            ],
            "addresses": [{"type": "InternalIP", "address": node_ip(i).to_string()},
                          {"type": "Hostname", "address": name}],
        },
    })
}

/// The nodes that registered, and how it went.
#[derive(Debug, Clone, Serialize)]
pub struct Registration {
    pub requested: usize,
    /// Names of the nodes whose Node and Lease were both created.
    #[serde(skip)]
    pub names: Vec<String>,
    pub registered: usize,
    pub secs: f64,
    /// One node's Node create (plus its status patch, if needed) and Lease create.
    pub node_ms: Latency,
    /// Nodes whose create kept no status, which were then patched through `/status`.
    pub status_patched: usize,
    pub errors: Failures,
}

/// Registers hollow nodes `0..count`, `concurrency` at a time. Failures are counted, not retried.
pub async fn register(client: &kube::Client, count: usize, zones: usize, concurrency: usize) -> Registration {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..count)
        .map(|i| {
            let (nodes, leases) = (&nodes, &leases);
            async move {
                let sent = Instant::now();
                let result = register_one(nodes, leases, i, zones).await;
                (node_name(i), sent.elapsed(), result)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut registration = Registration {
        requested: count,
        names: Vec::with_capacity(count),
        registered: 0,
        secs: round(started.elapsed().as_secs_f64(), 2),
        node_ms: Latency::of(&[]),
        status_patched: 0,
        errors: Failures::default(),
    };
    let mut latencies = Vec::with_capacity(count);
    for (name, elapsed, result) in results {
        match result {
            Ok(patched) => {
                registration.status_patched += usize::from(patched);
                registration.names.push(name);
                latencies.push(elapsed);
            }
            Err(e) => registration.errors.record(format!("{name}: {e}")),
        }
    }
    registration.names.sort();
    registration.registered = registration.names.len();
    registration.node_ms = Latency::of_unsorted(latencies);
    registration
}

/// Creates node `i` and its Lease; true if the create dropped the status and it was patched.
async fn register_one(nodes: &Api<Node>, leases: &Api<Lease>, i: usize, zones: usize) -> kube::Result<bool> {
    let manifest = node(i, zones);
    let node: Node = serde_json::from_value(manifest.clone()).map_err(kube::Error::SerdeError)?;
    let created = nodes.create(&PostParams::default(), &node).await?;
    let kept = created.status.as_ref().and_then(|s| s.allocatable.as_ref()).is_some();
    if !kept {
        let status = json!({"status": manifest["status"]});
        nodes.patch_status(&node_name(i), &PatchParams::default(), &Patch::Merge(status)).await?;
    }
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": node_name(i)}, "spec": lease_spec(i)}))
        .map_err(kube::Error::SerdeError)?;
    leases.create(&PostParams::default(), &lease).await?;
    Ok(!kept)
}

pub fn lease_spec(i: usize) -> Value {
    json!({"holderIdentity": node_name(i), "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now_rfc3339(true)})
}

/// The renewals of every hollow node's Lease, running until dropped.
pub struct Leases {
    /// Renewals per second if every Lease is renewed on time.
    nominal_per_sec: f64,
    stats: Arc<Mutex<Renewals>>,
    task: JoinHandle<()>,
}

impl Drop for Leases {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Renewals since the last [`Leases::take`].
#[derive(Debug)]
struct Renewals {
    latencies: Vec<Duration>,
    errors: Failures,
    /// When each node's Lease was last renewed (or created).
    last: Vec<Instant>,
    /// The longest time a node went between two renewals, in this window.
    max_gap: Duration,
    since: Instant,
}

/// Lease renewals in one window.
#[derive(Debug, Serialize)]
pub struct LeaseWindow {
    pub renewals: usize,
    pub per_sec: f64,
    /// Renewals per second with every Lease renewed on time (nodes / period).
    pub nominal_per_sec: f64,
    pub latency_ms: Latency,
    pub errors: Failures,
    /// The longest a node went between two renewed Leases in the window (the nominal period is
    /// `lease_period_secs`); or, if longer, the age of the stalest Lease at the window's end.
    pub max_gap_secs: f64,
}

impl Leases {
    /// Starts renewing the Leases of `names` (just created: their age counts from now), each once
    /// per `period`, at most `concurrency` renewals in flight.
    pub fn start(client: &kube::Client, names: Vec<String>, period: Duration, concurrency: usize) -> Self {
        let now = Instant::now();
        let stats = Arc::new(Mutex::new(Renewals {
            latencies: Vec::new(),
            errors: Failures::default(),
            last: vec![now; names.len()],
            max_gap: Duration::ZERO,
            since: now,
        }));
        let nominal_per_sec = round(names.len() as f64 / period.as_secs_f64(), 1);
        let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
        let task = tokio::spawn(renew_forever(api, names, period, concurrency, stats.clone()));
        Self { nominal_per_sec, stats, task }
    }

    /// The renewals since the last call (or the start), and starts a new window.
    pub fn take(&self) -> LeaseWindow {
        let mut stats = self.stats.lock().expect("the renewal task never panics holding the lock");
        let now = Instant::now();
        let stalest = stats.last.iter().map(|t| now - *t).max().unwrap_or_default();
        let elapsed = now - stats.since;
        let latencies = std::mem::take(&mut stats.latencies);
        let window = LeaseWindow {
            renewals: latencies.len(),
            per_sec: round(latencies.len() as f64 / elapsed.as_secs_f64().max(1e-9), 1),
            nominal_per_sec: self.nominal_per_sec,
            latency_ms: Latency::of_unsorted(latencies),
            errors: std::mem::take(&mut stats.errors),
            max_gap_secs: round(stats.max_gap.max(stalest).as_secs_f64(), 2),
        };
        stats.max_gap = Duration::ZERO;
        stats.since = now;
        window
    }
}

/// Renewal `k` renews node `k % n` at `k * period / n` after the start: every Lease once per
/// period, spread evenly. When the server falls behind, renewals queue and then catch up.
async fn renew_forever(
    api: Api<Lease>,
    names: Vec<String>,
    period: Duration,
    concurrency: usize,
    stats: Arc<Mutex<Renewals>>,
) {
    if names.is_empty() {
        return;
    }
    let (start, n) = (tokio::time::Instant::now(), names.len() as u64);
    let step = period / n as u32;
    let slots = futures::stream::iter(0u64..).then(move |k| async move {
        let (round, slot) = (k / n, k % n);
        tokio::time::sleep_until(start + period * round as u32 + step * slot as u32).await;
        slot as usize
    });
    slots
        .map(|i| {
            let (api, name) = (&api, &names[i]);
            async move {
                let sent = Instant::now();
                let patch = Patch::Merge(json!({"spec": lease_spec(node_index(name).unwrap_or(i))}));
                let result = api.patch(name, &PatchParams::default(), &patch).await;
                (i, sent, result)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .for_each(|(i, sent, result)| {
            let mut stats = stats.lock().expect("the renewal task never panics holding the lock");
            match result {
                Ok(_) => {
                    let now = Instant::now();
                    stats.latencies.push(now - sent);
                    let gap = now - stats.last[i];
                    stats.max_gap = stats.max_gap.max(gap);
                    stats.last[i] = now;
                }
                Err(e) => stats.errors.record(format!("{}: {e}", names[i])),
            }
            std::future::ready(())
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hollow_node_is_a_valid_ready_node_with_its_own_addresses() {
        let node: Node = serde_json::from_value(node(258, 10)).unwrap();
        let meta = &node.metadata;
        assert_eq!(meta.name.as_deref(), Some("hollow-00258"));
        assert_eq!(meta.labels.as_ref().unwrap()["topology.kubernetes.io/zone"], "zone-8");
        assert_eq!(node.spec.unwrap().pod_cidr.as_deref(), Some("10.1.2.0/24"));
        let status = node.status.unwrap();
        let ready = status.conditions.unwrap().into_iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(status.addresses.unwrap()[0].address, "100.64.1.3");
        assert_eq!(pod_ip(258, 0), Ipv4Addr::new(10, 1, 2, 1));
        assert_eq!(node_index("hollow-00258"), Some(258));
    }
}
