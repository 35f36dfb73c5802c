//! NodeUnschedulable and NodeName: what the node's own spec, and the pod's, say before any
//! matching of labels or resources.

use k8s_openapi::api::core::v1::Taint;

use super::taint_toleration::{tolerates, tolerations};
use crate::scheduler::framework::{FilterPlugin, Fit, NodeInfo, PodInfo, Snapshot};

/// A cordoned node (`spec.unschedulable`, as `kubectl cordon` sets) takes no new pods, except
/// those tolerating `node.kubernetes.io/unschedulable:NoSchedule` (DaemonSet pods do).
pub struct NodeUnschedulable;

impl FilterPlugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Fit {
        if !node.cordoned {
            return Fit::Fits;
        }
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".to_string(),
            effect: "NoSchedule".to_string(),
            ..Taint::default()
        };
        if !tolerations(pod).iter().any(|t| tolerates(t, &taint)) {
            Fit::never("node(s) were unschedulable")
        } else {
            Fit::Fits
        }
    }
}

/// A pod that already names its node (`spec.nodeName`) fits only there. The scheduler only sees
/// pods without one, so this matters for callers that ask "would this pod fit here?".
pub struct NodeName;

impl FilterPlugin for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Fit {
        match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(name) if !name.is_empty() && name != node.name() => {
                Fit::never("node(s) didn't match the requested node name")
            }
            _ => Fit::Fits,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::scheduler::plugins::testing::{NodeBuilder, PodBuilder, filter, snapshot};

    #[test]
    fn cordoned_nodes_take_only_pods_tolerating_unschedulable() {
        let snapshot = snapshot(vec![
            (NodeBuilder::new("open").build(), vec![]),
            (NodeBuilder::new("cordoned").unschedulable().build(), vec![]),
        ]);
        let unschedulable = "node.kubernetes.io/unschedulable";
        let refused = Fit::never("node(s) were unschedulable");
        // (toleration, fits the cordoned node)
        for (toleration, expected) in [
            (None, refused.clone()),
            (Some(json!({"key": unschedulable, "operator": "Exists", "effect": "NoSchedule"})), Fit::Fits),
            (Some(json!({"key": unschedulable, "operator": "Exists"})), Fit::Fits),
            (Some(json!({"operator": "Exists"})), Fit::Fits),
            (Some(json!({"key": unschedulable, "operator": "Exists", "effect": "NoExecute"})), refused.clone()),
            (Some(json!({"key": unschedulable, "value": "true"})), refused.clone()),
        ] {
            let pod = toleration.clone().map_or(PodBuilder::new("p"), |t| PodBuilder::new("p").toleration(t)).build();
            assert_eq!(filter(&NodeUnschedulable, &pod, &snapshot, "cordoned"), expected, "{toleration:?}");
            assert_eq!(filter(&NodeUnschedulable, &pod, &snapshot, "open"), Fit::Fits);
        }
    }

    #[test]
    fn a_pod_naming_its_node_fits_only_there() {
        let snapshot = snapshot(vec![(NodeBuilder::new("a").build(), vec![]), (NodeBuilder::new("b").build(), vec![])]);
        let pinned = PodBuilder::new("p").node_name("a").build();
        assert_eq!(filter(&NodeName, &pinned, &snapshot, "a"), Fit::Fits);
        assert_eq!(
            filter(&NodeName, &pinned, &snapshot, "b"),
            Fit::never("node(s) didn't match the requested node name")
        );
        assert_eq!(filter(&NodeName, &PodBuilder::new("p").build(), &snapshot, "b"), Fit::Fits);
    }
}
