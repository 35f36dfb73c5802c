//! Node IPAM: gives every Node a `spec.podCIDR` (and `podCIDRs`) from the cluster CIDR, the way
//! kube-controller-manager's node IPAM does. The cluster CIDR is a loopback range by default
//! (`127.64.0.0/10`), so pod IPs are bindable on any Linux host without configuration.
//!
//! Level-triggered: each pass reads all nodes, keeps the CIDRs they hold and assigns the lowest free
//! block to nodes that have none.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Changes;
use crate::objects::{ListOptions, Objects, PatchKind, Subresource, Target, WriteOptions};
use crate::status::ApiError;

/// The cluster CIDR split into per-node blocks.
#[derive(Debug, Clone)]
pub struct ClusterCidr {
    network: u32,
    prefix: u32,
    node_prefix: u32,
}

impl ClusterCidr {
    /// `cidr` like `127.64.0.0/10`, per-node blocks of `/node_prefix` (e.g. 18: 16,382 pods a node).
    pub fn new(cidr: &str, node_prefix: u32) -> Result<Self, String> {
        let (addr, bits) = cidr.split_once('/').ok_or_else(|| format!("invalid cluster CIDR {cidr:?}"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| format!("invalid cluster CIDR {cidr:?}"))?;
        let prefix: u32 = bits.parse().map_err(|_| format!("invalid cluster CIDR {cidr:?}"))?;
        if prefix > node_prefix || node_prefix > 30 {
            return Err(format!("per-node prefix /{node_prefix} does not fit in {cidr}"));
        }
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        Ok(Self { network: u32::from(addr) & mask, prefix, node_prefix })
    }

    fn blocks(&self) -> u32 {
        1 << (self.node_prefix - self.prefix)
    }

    fn block(&self, index: u32) -> String {
        let addr = Ipv4Addr::from(self.network + (index << (32 - self.node_prefix)));
        format!("{addr}/{}", self.node_prefix)
    }

    /// The lowest block not in `taken`.
    pub fn next_free(&self, taken: &BTreeSet<String>) -> Option<String> {
        (0..self.blocks()).map(|i| self.block(i)).find(|b| !taken.contains(b))
    }
}

impl Default for ClusterCidr {
    fn default() -> Self {
        Self::new("127.64.0.0/10", 18).expect("the default cluster CIDR is valid")
    }
}

fn nodes() -> &'static wasmkube_api::Kind {
    wasmkube_api::kinds::by_resource("", "v1", "nodes").expect("nodes are registered")
}

/// Runs until `cancel` fires.
pub async fn run(objects: Objects, cidr: ClusterCidr, cancel: CancellationToken) {
    // Only a node without a podCIDR needs a pass; heartbeats and other node writes do not (a
    // pass reads every node, which in a large cluster is too much to do per status post).
    let mut changes = Changes::filtered(&objects, vec![nodes().key_prefix()], |event| {
        event.value.as_ref().is_some_and(|bytes| {
            let node: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
            node.pointer("/spec/podCIDR").and_then(Value::as_str).is_none_or(str::is_empty)
        })
    });
    loop {
        let failed = match assign_all(&objects, &cidr).await {
            Ok(()) => false,
            Err(e) => {
                tracing::warn!(error = %e, "node IPAM pass failed");
                true
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = changes.next() => {}
            // A failed pass is retried even without a new event.
            _ = tokio::time::sleep(Duration::from_secs(1)), if failed => {}
        }
        // Nodes registering together get their blocks in one pass.
        changes.settle(Duration::from_millis(20)).await;
    }
}

async fn assign_all(objects: &Objects, cidr: &ClusterCidr) -> Result<(), ApiError> {
    let all = Target { kind: nodes(), namespace: None, name: None };
    let list = objects.list(&all, &ListOptions::default()).await?;
    let items: Vec<Value> = list.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut taken: BTreeSet<String> =
        items.iter().filter_map(|n| n.pointer("/spec/podCIDR").and_then(Value::as_str).map(String::from)).collect();
    for node in items.iter().filter(|n| n.pointer("/spec/podCIDR").is_none()) {
        let name = wasmkube_api::meta::name(node).to_string();
        let Some(block) = cidr.next_free(&taken) else {
            tracing::error!(node = %name, "the cluster CIDR has no free block for another node");
            return Ok(());
        };
        let target = Target { kind: nodes(), namespace: None, name: Some(name.clone()) };
        let patch = json!({"spec": {"podCIDR": block, "podCIDRs": [block]}});
        objects.patch(&target, patch, PatchKind::Merge, Subresource::Main, &WriteOptions::default()).await?;
        tracing::info!(node = %name, pod_cidr = %block, "assigned pod CIDR");
        taken.insert(block);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_handed_out_lowest_free_first() {
        let cidr = ClusterCidr::default();
        let mut taken = BTreeSet::new();
        assert_eq!(cidr.next_free(&taken).as_deref(), Some("127.64.0.0/18"));
        taken.insert("127.64.0.0/18".to_string());
        assert_eq!(cidr.next_free(&taken).as_deref(), Some("127.64.64.0/18"));
        let tiny = ClusterCidr::new("10.0.0.0/24", 24).expect("valid");
        taken.insert("10.0.0.0/24".to_string());
        assert_eq!(tiny.next_free(&taken), None);
        assert!(ClusterCidr::new("10.0.0.0/24", 16).is_err());
    }
}
