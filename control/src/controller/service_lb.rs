//! The ServiceLB controller (k3s' idea): a LoadBalancer Service is served on every node's own
//! address, at its port (each node's proxy listens there), so its `status.loadBalancer.ingress`
//! lists the InternalIPs of the Ready nodes. This controller keeps that list current.
//!
//! Level-triggered: a pass reads the LoadBalancer Services and, if there are any, the nodes, and
//! patches the statuses that differ. Node events count only when a node comes, goes, or changes
//! its addresses or readiness, not on every heartbeat.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wasmkube_api::Kind;

use super::{Changes, describe, list_typed};
use crate::objects::{Objects, PatchKind, Subresource, Target, WriteOptions};
use crate::status::ApiError;
use crate::store::Event;

/// How soon a failed pass is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How long a burst of changes is gathered into one pass.
const BATCH: Duration = Duration::from_millis(50);

fn services() -> &'static Kind {
    wasmkube_api::kinds::by_resource("", "v1", "services").expect("built-in kinds are registered")
}

fn nodes() -> &'static Kind {
    wasmkube_api::kinds::by_resource("", "v1", "nodes").expect("built-in kinds are registered")
}

/// Runs until `cancel` fires.
pub async fn run(objects: Objects, cancel: CancellationToken) {
    let node_prefix = nodes().key_prefix();
    let relevant = move |event: &Event| !event.key.starts_with(&node_prefix) || node_changed(event);
    let mut changes = Changes::filtered(&objects, vec![services().key_prefix(), nodes().key_prefix()], relevant);
    loop {
        let failed = match reconcile(&objects).await {
            Ok(()) => false,
            Err(e) => {
                tracing::warn!(error = %describe(&e), "load balancer status pass failed");
                true
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = changes.next() => {}
            _ = tokio::time::sleep(RETRY), if failed => {}
        }
        changes.settle(BATCH).await;
    }
}

/// What of a node the ingress list depends on.
#[derive(serde::Deserialize, PartialEq)]
struct NodeView {
    #[serde(default)]
    status: Option<NodeStatusView>,
}

#[derive(serde::Deserialize, PartialEq)]
struct NodeStatusView {
    #[serde(default)]
    addresses: Option<serde_json::Value>,
    #[serde(default)]
    conditions: Option<Vec<ConditionView>>,
}

#[derive(serde::Deserialize, PartialEq)]
struct ConditionView {
    #[serde(rename = "type")]
    type_: String,
    status: String,
}

impl NodeView {
    fn key(&self) -> (Option<&serde_json::Value>, Option<&str>) {
        let status = self.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.as_str());
        (status.and_then(|s| s.addresses.as_ref()), ready)
    }
}

/// Whether a node event can change an ingress list: a node arriving or going, or its addresses
/// or Ready status changing.
fn node_changed(event: &Event) -> bool {
    let (Some(new), Some(prev)) = (&event.value, &event.prev) else { return true };
    let view = |bytes: &[u8]| serde_json::from_slice::<NodeView>(bytes).ok();
    match (view(new), view(&prev.value)) {
        (Some(new), Some(prev)) => new.key() != prev.key(),
        _ => true,
    }
}

/// The InternalIPs of the Ready nodes, sorted.
fn ingress_ips(nodes: &[Node]) -> Vec<String> {
    let ready = |node: &&Node| {
        let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
        conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let ips: BTreeSet<String> = nodes
        .iter()
        .filter(ready)
        .flat_map(|n| n.status.as_ref().and_then(|s| s.addresses.clone()).unwrap_or_default())
        .filter(|a| a.type_ == "InternalIP")
        .map(|a| a.address)
        .collect();
    ips.into_iter().collect()
}

async fn reconcile(objects: &Objects) -> Result<(), ApiError> {
    let balanced: Vec<Service> = list_typed::<Service>(objects, services(), None)
        .await?
        .into_iter()
        .filter(|s| s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer"))
        .collect();
    if balanced.is_empty() {
        return Ok(());
    }
    let ips = ingress_ips(&list_typed::<Node>(objects, nodes(), None).await?);
    for service in balanced {
        let current: Vec<String> = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|ingress| ingress.iter().filter_map(|i| i.ip.clone()).collect())
            .unwrap_or_default();
        if current == ips {
            continue;
        }
        let ingress: Vec<_> = ips.iter().map(|ip| json!({"ip": ip, "ipMode": "VIP"})).collect();
        let target = Target {
            kind: services(),
            namespace: service.metadata.namespace.clone(),
            name: service.metadata.name.clone(),
        };
        let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
        match objects.patch(&target, patch, PatchKind::Merge, Subresource::Status, &WriteOptions::default()).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(ip: &str, ready: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": ip}, "status": {
            "conditions": [{"type": "Ready", "status": ready}],
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": "h"}]}}))
        .unwrap()
    }

    #[test]
    fn the_ingress_is_every_ready_nodes_internal_ip() {
        let nodes = [node("10.0.0.2", "True"), node("10.0.0.1", "True"), node("10.0.0.3", "Unknown")];
        assert_eq!(ingress_ips(&nodes), ["10.0.0.1", "10.0.0.2"]);
    }
}
