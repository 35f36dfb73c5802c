//! Filter and score plugins (see [`super::framework`]), Kubernetes' default set with Kubernetes'
//! semantics, weights and reason strings, so a pending pod's message reads as it would there.
//! Start at [`default_filters`] and [`default_scores`]: the order there is Kubernetes' order,
//! which decides the reason a node is counted under (the first filter that rejects it).
//!
//! Left out, as nothing here needs them yet: the volume plugins, ImageLocality,
//! DynamicResources, SchedulingGates (a queue concern) and preemption.

mod inter_pod_affinity;
mod node_affinity;
mod node_ports;
mod node_resources;
mod node_unschedulable;
mod pod_topology_spread;
mod selector;
mod taint_toleration;

#[cfg(test)]
mod properties;
#[cfg(test)]
pub(crate) mod testing;

pub use inter_pod_affinity::InterPodAffinity;
pub use node_affinity::{NodeAffinity, NodeAffinityPreFilter};
pub use node_ports::NodePorts;
pub use node_resources::{NodeResourcesBalancedAllocation, NodeResourcesFit};
pub use node_unschedulable::{NodeName, NodeUnschedulable};
pub use pod_topology_spread::PodTopologySpread;
pub use taint_toleration::TaintToleration;
// The node lifecycle controller evicts by the same toleration rule the scheduler filters by.
pub(crate) use taint_toleration::{NOT_READY, UNREACHABLE, tolerates};

use super::framework::{FilterPlugin, MAX_SCORE, ScorePlugin};

/// Kubernetes' filters in its order. [`NodeAffinityPreFilter`] comes first because in Kubernetes
/// it is a PreFilter: nodes a pod is not pinned to are set aside before any filter runs.
pub fn default_filters() -> Vec<Box<dyn FilterPlugin>> {
    vec![
        Box::new(NodeAffinityPreFilter),
        Box::new(NodeUnschedulable),
        Box::new(NodeName),
        Box::new(TaintToleration),
        Box::new(NodeAffinity),
        Box::new(NodePorts),
        Box::new(NodeResourcesFit),
        Box::new(PodTopologySpread),
        Box::new(InterPodAffinity),
    ]
}

/// Kubernetes' scores in its order, each with its default weight (TaintToleration 3,
/// NodeAffinity 2, NodeResourcesFit 1, PodTopologySpread 2, InterPodAffinity 2,
/// NodeResourcesBalancedAllocation 1).
pub fn default_scores() -> Vec<Box<dyn ScorePlugin>> {
    vec![
        Box::new(TaintToleration),
        Box::new(NodeAffinity),
        Box::new(NodeResourcesFit),
        Box::new(PodTopologySpread),
        Box::new(InterPodAffinity),
        Box::new(NodeResourcesBalancedAllocation),
    ]
}

/// Kubernetes' default normalization: scale so the highest score becomes MAX_SCORE (all zero
/// stays zero), and with `reverse` flip it so the lowest raw score ranks best (all zero become
/// MAX_SCORE).
pub(crate) fn normalize_to_max(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    for score in scores.iter_mut() {
        let scaled = if max > 0 { MAX_SCORE * *score / max } else { 0 };
        *score = if reverse { MAX_SCORE - scaled } else { scaled };
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::testing::{NodeBuilder, PodBuilder, node, pod, snapshot};
    use super::*;
    use crate::scheduler::framework::schedule;

    #[test]
    fn the_default_plugins_explain_a_pending_pod_in_kubernetes_words() {
        let cluster = snapshot(vec![
            (node("a", "4", "1Gi"), vec![]),
            (node("b", "4", "1Gi"), vec![]),
            (NodeBuilder::new("c").taint("dedicated", "gpu", "NoSchedule").build(), vec![]),
        ]);
        let too_big = pod(Some("1"), Some("2Gi"));
        let err = schedule(&too_big, &cluster, &default_filters(), &default_scores()).expect_err("nothing fits");
        assert_eq!(
            err.message,
            "0/3 nodes are available: 2 Insufficient memory, 1 node(s) had untolerated taint {dedicated: gpu}."
        );
        // A DaemonSet pod pinned to a full node: the others are set aside before any filter.
        let full = snapshot(vec![
            (NodeBuilder::new("a").allocatable("4", "8Gi", 1).build(), vec![PodBuilder::new("x").build()]),
            (NodeBuilder::new("b").unschedulable().build(), vec![]),
            (NodeBuilder::new("c").build(), vec![]),
        ]);
        let daemon = PodBuilder::new("d")
            .affinity(json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]}]}}}))
            .build();
        let err = schedule(&daemon, &full, &default_filters(), &default_scores()).expect_err("a is full");
        assert_eq!(
            err.message,
            "0/3 nodes are available: 1 Too many pods, 2 node(s) didn't satisfy plugin(s) [NodeAffinity]."
        );
    }

    #[test]
    fn plugins_run_in_kubernetes_order_with_its_weights() {
        let filters: Vec<&str> = default_filters().iter().map(|f| f.name()).collect();
        assert_eq!(
            filters,
            [
                "NodeAffinity",
                "NodeUnschedulable",
                "NodeName",
                "TaintToleration",
                "NodeAffinity",
                "NodePorts",
                "NodeResourcesFit",
                "PodTopologySpread",
                "InterPodAffinity",
            ]
        );
        let scores: Vec<(&str, u64)> = default_scores().iter().map(|s| (s.name(), s.weight())).collect();
        assert_eq!(
            scores,
            [
                ("TaintToleration", 3),
                ("NodeAffinity", 2),
                ("NodeResourcesFit", 1),
                ("PodTopologySpread", 2),
                ("InterPodAffinity", 2),
                ("NodeResourcesBalancedAllocation", 1),
            ]
        );
    }

    #[test]
    fn default_normalization_scales_to_the_best_and_can_reverse() {
        // (raw, normalized, reversed)
        for (raw, normalized, reversed) in [
            (vec![], vec![], vec![]),
            (vec![0, 0], vec![0, 0], vec![100, 100]),
            (vec![1, 2, 4], vec![25, 50, 100], vec![75, 50, 0]),
            (vec![3, 0], vec![100, 0], vec![0, 100]),
        ] {
            let (mut forward, mut backward) = (raw.clone(), raw.clone());
            normalize_to_max(&mut forward, false);
            normalize_to_max(&mut backward, true);
            assert_eq!((forward, backward), (normalized, reversed), "{raw:?}");
        }
    }
}
