//! The agent's Node: registration with capacity, addresses and nodeInfo, waiting for the control
//! plane to assign `spec.podCIDR`, and heartbeats (the node Lease plus the Ready condition).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wasmkube_api::meta::now_rfc3339 as now;

use super::AgentConfig;

/// How often the Lease is renewed and the Ready condition refreshed.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// The Lease duration the node controller judges liveness by.
const LEASE_SECONDS: i32 = 40;

fn total_memory_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:")).map(String::from))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// The node's status as the agent reports it.
fn status(config: &AgentConfig) -> Value {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let resources = json!({
        "cpu": cpus.to_string(),
        "memory": format!("{}Ki", total_memory_kib()),
        "pods": config.max_pods.to_string(),
    });
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now(), "lastTransitionTime": now()})
    };
    json!({
        "capacity": resources,
        "allocatable": resources,
        "addresses": [
            {"type": "InternalIP", "address": config.node_ip.to_string()},
            {"type": "Hostname", "address": config.node_name},
        ],
        "conditions": [
            condition("Ready", "True", "KubeletReady", "wasmkube agent is posting ready status"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "agent has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "agent has no disk pressure"),
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": config.node_api_port}},
        "nodeInfo": {
            "kubeletVersion": format!("v1.33.0-wasmkube.{}", env!("CARGO_PKG_VERSION")),
            "kubeProxyVersion": "",
            "containerRuntimeVersion": "wasmtime://48.0.8",
            "operatingSystem": "linux",
            "architecture": std::env::consts::ARCH,
            "osImage": "wasmkube",
            "kernelVersion": "",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
    })
}

/// Creates or refreshes the Node and waits until it has a pod CIDR, which it returns.
pub async fn register(client: &kube::Client, config: &AgentConfig) -> anyhow::Result<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": config.node_name, "labels": {
            "kubernetes.io/hostname": config.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": std::env::consts::ARCH,
        }},
        "status": status(config),
    }))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            nodes
                .patch_status(
                    &config.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": status(config)})),
                )
                .await?;
        }
        Err(e) => return Err(e.into()),
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let current = nodes.get(&config.node_name).await?;
        if let Some(cidr) = current.spec.and_then(|s| s.pod_cidr) {
            return Ok(cidr);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the control plane assigned no podCIDR to node {} within 60 s", config.node_name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Renews the Lease and the node's Ready heartbeat until `stop` fires.
pub async fn heartbeat(client: kube::Client, config: AgentConfig, stop: CancellationToken) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(client);
    loop {
        if let Err(e) = renew(&leases, &config.node_name).await {
            tracing::warn!(error = %e, "renewing the node lease failed");
        }
        let patch = Patch::Merge(json!({"status": status(&config)}));
        if let Err(e) = nodes.patch_status(&config.node_name, &PatchParams::default(), &patch).await {
            tracing::warn!(error = %e, "updating node status failed");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(HEARTBEAT) => {}
        }
    }
}

/// Creates or renews the node's Lease once.
pub async fn renew_lease(client: &kube::Client, node: &str) -> Result<(), kube::Error> {
    renew(&Api::namespaced(client.clone(), "kube-node-lease"), node).await
}

async fn renew(leases: &Api<Lease>, node: &str) -> Result<(), kube::Error> {
    let now = jiff::Timestamp::now();
    let micro = jiff::Timestamp::from_microsecond(now.as_microsecond()).unwrap_or(now);
    let renew_time = micro.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string();
    let spec = json!({"holderIdentity": node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": renew_time});
    match leases.patch(node, &PatchParams::default(), &Patch::Merge(json!({"spec": spec}))).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let lease: Lease = serde_json::from_value(json!({"metadata": {"name": node}, "spec": spec}))
                .map_err(kube::Error::SerdeError)?;
            leases.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}
