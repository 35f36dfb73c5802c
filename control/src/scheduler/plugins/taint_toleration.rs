//! TaintToleration: a node's `NoSchedule`/`NoExecute` taints keep out pods that do not tolerate
//! them (filter), and fewer untolerated `PreferNoSchedule` taints rank a node higher (score).
//!
//! A node whose Ready condition is False or Unknown counts as tainted
//! `node.kubernetes.io/not-ready:NoSchedule` or `node.kubernetes.io/unreachable:NoSchedule`:
//! the node lifecycle controller writes those taints once a node's heartbeat is overdue, and
//! until it has, the scheduler reads the condition itself (so a node never looks schedulable in
//! the gap).

use std::borrow::Cow;

use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};

use super::normalize_to_max;
use crate::scheduler::framework::{FilterPlugin, Fit, NodeInfo, PodInfo, ScorePlugin, Snapshot};

pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

pub struct TaintToleration;

impl FilterPlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Fit {
        match first_untolerated(pod, node) {
            None => Fit::Fits,
            Some(taint) => Fit::never(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            )),
        }
    }
}

impl ScorePlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn weight(&self) -> u64 {
        3
    }

    /// The number of `PreferNoSchedule` taints the pod does not tolerate (lower is better).
    fn score(&self, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> i64 {
        untolerated_preferences(&preference_tolerations(pod), node)
    }

    /// [`score`](ScorePlugin::score) of each node, picking the pod's tolerations once.
    fn score_all(&self, pod: &PodInfo, nodes: &[&NodeInfo], _: &Snapshot) -> Vec<i64> {
        let tolerations = preference_tolerations(pod);
        nodes.iter().map(|node| untolerated_preferences(&tolerations, node)).collect()
    }

    fn normalize(&self, scores: &mut [i64]) {
        normalize_to_max(scores, true);
    }
}

/// The pod's tolerations that can apply to `PreferNoSchedule`: that effect, or any effect.
fn preference_tolerations(pod: &Pod) -> Vec<&Toleration> {
    tolerations(pod).iter().filter(|t| matches!(t.effect.as_deref(), None | Some("" | "PreferNoSchedule"))).collect()
}

fn untolerated_preferences(tolerations: &[&Toleration], node: &NodeInfo) -> i64 {
    let untolerated = taints(node)
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule" && !tolerations.iter().any(|tol| tolerates(tol, t)))
        .count();
    untolerated as i64
}

pub(crate) fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default()
}

/// Kubernetes' rule: the effect and key must match unless left empty (an empty key with `Exists`
/// tolerates every taint), then `Exists` matches any value and `Equal` (the default) the same one.
pub(crate) fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or("");
    let key = toleration.key.as_deref().unwrap_or("");
    if (!effect.is_empty() && effect != taint.effect) || (!key.is_empty() && key != taint.key) {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("") {
        "" | "Equal" => toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

/// The first `NoSchedule`/`NoExecute` taint of `node` (readiness included) that `pod` does not
/// tolerate: the one Kubernetes names in its message.
pub(crate) fn first_untolerated(pod: &Pod, node: &NodeInfo) -> Option<Taint> {
    let tolerations = tolerations(pod);
    let taints = taints(node);
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
        .cloned()
}

/// The node's taints plus the one its Ready condition implies (see the module docs). A node that
/// has not reported a Ready condition yet is taken as ready: it was registered by hand (or the
/// agent has not posted status), which Kubernetes would not taint until a grace period passed.
pub(crate) fn taints(node: &NodeInfo) -> &[Taint] {
    node.effective_taints.get_or_init(|| effective_taints(node).into_owned())
}

fn effective_taints(node: &NodeInfo) -> Cow<'_, [Taint]> {
    let spec = node.node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
    let ready = node
        .node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    let key = match ready.map(|c| c.status.as_str()) {
        None | Some("True") => return Cow::Borrowed(spec),
        Some("False") => NOT_READY,
        Some(_) => UNREACHABLE,
    };
    // Already tainted for it (by whoever manages readiness taints): that taint speaks.
    if spec.iter().any(|t| t.key == NOT_READY || t.key == UNREACHABLE) {
        return Cow::Borrowed(spec);
    }
    let mut all = spec.to_vec();
    all.push(Taint { key: key.to_string(), effect: "NoSchedule".to_string(), ..Taint::default() });
    Cow::Owned(all)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::scheduler::plugins::testing::{NodeBuilder, PodBuilder, filter, scores, snapshot};

    fn toleration(value: Value) -> Toleration {
        serde_json::from_value(value).expect("toleration")
    }

    #[test]
    fn tolerations_match_by_key_operator_value_and_effect() {
        let taint = Taint { key: "k".into(), value: Some("v".into()), effect: "NoSchedule".into(), ..Taint::default() };
        // (toleration, tolerates k=v:NoSchedule)
        for (t, expected) in [
            (json!({"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}), true),
            (json!({"key": "k", "value": "v"}), true),
            (json!({"key": "k", "value": "w"}), false),
            (json!({"key": "k"}), false),
            (json!({"key": "k", "operator": "Exists"}), true),
            (json!({"key": "k", "operator": "Exists", "effect": "NoExecute"}), false),
            (json!({"key": "other", "operator": "Exists"}), false),
            (json!({"operator": "Exists"}), true),
            (json!({"operator": "Exists", "effect": "NoSchedule"}), true),
            (json!({"key": "k", "operator": "Gt", "value": "v"}), false),
        ] {
            assert_eq!(tolerates(&toleration(t.clone()), &taint), expected, "{t}");
        }
    }

    #[test]
    fn the_filter_names_the_first_untolerated_hard_taint() {
        let gpu = json!({"key": "dedicated", "operator": "Equal", "value": "gpu"});
        // (node, pod tolerations, expected)
        let cases: Vec<(NodeBuilder, Vec<Value>, Fit)> = vec![
            (NodeBuilder::new("n"), vec![], Fit::Fits),
            (
                NodeBuilder::new("n").taint("dedicated", "gpu", "NoSchedule"),
                vec![],
                Fit::never("node(s) had untolerated taint {dedicated: gpu}"),
            ),
            (NodeBuilder::new("n").taint("dedicated", "gpu", "NoSchedule"), vec![gpu.clone()], Fit::Fits),
            (
                NodeBuilder::new("n").taint("dedicated", "gpu", "NoSchedule").taint("maintenance", "", "NoExecute"),
                vec![gpu],
                Fit::never("node(s) had untolerated taint {maintenance: }"),
            ),
            (NodeBuilder::new("n").taint("spot", "true", "PreferNoSchedule"), vec![], Fit::Fits),
            (NodeBuilder::new("n").ready("True"), vec![], Fit::Fits),
            (
                NodeBuilder::new("n").ready("False"),
                vec![],
                Fit::never("node(s) had untolerated taint {node.kubernetes.io/not-ready: }"),
            ),
            (
                NodeBuilder::new("n").ready("Unknown"),
                vec![],
                Fit::never("node(s) had untolerated taint {node.kubernetes.io/unreachable: }"),
            ),
            (
                NodeBuilder::new("n").ready("False"),
                vec![json!({"key": NOT_READY, "operator": "Exists", "effect": "NoSchedule"})],
                Fit::Fits,
            ),
            // The lifecycle taint already there is the one reported, not a second one.
            (
                NodeBuilder::new("n").ready("Unknown").taint(UNREACHABLE, "", "NoExecute"),
                vec![json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"})],
                Fit::Fits,
            ),
            (NodeBuilder::new("n").taint("a", "1", "NoSchedule"), vec![json!({"operator": "Exists"})], Fit::Fits),
        ];
        for (i, (node, tolerations, expected)) in cases.into_iter().enumerate() {
            let pod = tolerations.into_iter().fold(PodBuilder::new("p"), |p, t| p.toleration(t)).build();
            let snapshot = snapshot(vec![(node.build(), vec![])]);
            assert_eq!(filter(&TaintToleration, &pod, &snapshot, "n"), expected, "case {i}");
        }
    }

    #[test]
    fn fewer_untolerated_prefer_no_schedule_taints_score_higher() {
        let snapshot = snapshot(vec![
            (NodeBuilder::new("clean").build(), vec![]),
            (NodeBuilder::new("one").taint("spot", "true", "PreferNoSchedule").build(), vec![]),
            (
                NodeBuilder::new("two")
                    .taint("spot", "true", "PreferNoSchedule")
                    .taint("old", "", "PreferNoSchedule")
                    .taint("hard", "", "NoSchedule")
                    .build(),
                vec![],
            ),
        ]);
        let pod = PodBuilder::new("p").build();
        assert_eq!(scores(&TaintToleration, &pod, &snapshot), vec![100, 50, 0]);
        // A toleration for NoSchedule only does not help with PreferNoSchedule.
        let pod = PodBuilder::new("p")
            .toleration(json!({"key": "spot", "operator": "Exists", "effect": "NoSchedule"}))
            .build();
        assert_eq!(scores(&TaintToleration, &pod, &snapshot), vec![100, 50, 0]);
        let pod = PodBuilder::new("p").toleration(json!({"key": "spot", "operator": "Exists"})).build();
        assert_eq!(scores(&TaintToleration, &pod, &snapshot), vec![100, 100, 0]);
        let pod = PodBuilder::new("p").toleration(json!({"operator": "Exists"})).build();
        assert_eq!(scores(&TaintToleration, &pod, &snapshot), vec![100, 100, 100]);
    }
}
