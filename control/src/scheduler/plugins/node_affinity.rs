//! NodeAffinity: `spec.nodeSelector` and required node affinity as a filter, preferred node
//! affinity as a score.
//!
//! Kubernetes also runs a PreFilter: a pod whose every required term pins it to nodes by name
//! (`matchFields` `metadata.name In`, as DaemonSet pods are) is only ever tried on those nodes,
//! and every other node is reported as "didn't satisfy plugin(s) [NodeAffinity]" without running
//! any filter. [`NodeAffinityPreFilter`] is that step as a filter that runs first.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{NodeSelector, Pod, PreferredSchedulingTerm};

use super::normalize_to_max;
use super::selector::{matches_any_term, matches_term};
use crate::scheduler::framework::{FilterPlugin, Fit, NodeInfo, PodInfo, ScorePlugin, Snapshot};

pub struct NodeAffinity;

/// Keeps the pod to the nodes its required node affinity names (see the module docs).
pub struct NodeAffinityPreFilter;

impl FilterPlugin for NodeAffinityPreFilter {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Fit {
        match pinned_names(pod) {
            Some(names) if !names.contains(node.name()) => {
                Fit::never("node(s) didn't satisfy plugin(s) [NodeAffinity]")
            }
            _ => Fit::Fits,
        }
    }

    fn skips(&self, pod: &PodInfo, _: &Snapshot) -> bool {
        required(pod).is_none()
    }
}

impl FilterPlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Fit {
        if required_matches(pod, node) {
            Fit::Fits
        } else {
            Fit::never("node(s) didn't match Pod's node affinity/selector")
        }
    }

    fn skips(&self, pod: &PodInfo, _: &Snapshot) -> bool {
        let selector = pod.spec.as_ref().and_then(|s| s.node_selector.as_ref());
        selector.is_none_or(|s| s.is_empty()) && required(pod).is_none()
    }
}

impl ScorePlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn weight(&self) -> u64 {
        2
    }

    /// The sum of the weights of the preferred terms the node matches.
    fn score(&self, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> i64 {
        preferred(pod)
            .iter()
            // A zero weight or an empty preference counts for nothing, as in Kubernetes.
            .filter(|t| t.weight != 0 && matches_term(&t.preference, node))
            .map(|t| i64::from(t.weight))
            .sum()
    }

    fn normalize(&self, scores: &mut [i64]) {
        normalize_to_max(scores, false);
    }

    fn skips(&self, pod: &PodInfo, _: &Snapshot) -> bool {
        preferred(pod).is_empty()
    }
}

fn required(pod: &Pod) -> Option<&NodeSelector> {
    let affinity = pod.spec.as_ref()?.affinity.as_ref()?;
    affinity.node_affinity.as_ref()?.required_during_scheduling_ignored_during_execution.as_ref()
}

fn preferred(pod: &Pod) -> &[PreferredSchedulingTerm] {
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let node_affinity = affinity.and_then(|a| a.node_affinity.as_ref());
    node_affinity.and_then(|n| n.preferred_during_scheduling_ignored_during_execution.as_deref()).unwrap_or_default()
}

/// Whether `node` has every `nodeSelector` label and matches one of the required terms (if
/// any). Topology spreading also uses this to decide which nodes count.
pub(crate) fn required_matches(pod: &Pod, node: &NodeInfo) -> bool {
    let selector = pod.spec.as_ref().and_then(|s| s.node_selector.as_ref());
    let labels = node.labels();
    selector.into_iter().flatten().all(|(k, v)| labels.get(k) == Some(v))
        && required(pod).is_none_or(|ns| matches_any_term(&ns.node_selector_terms, node))
}

/// The node names the pod is pinned to: when every required term has `metadata.name In`
/// requirements, the union over terms of what each term's requirements allow together.
fn pinned_names(pod: &Pod) -> Option<BTreeSet<&str>> {
    let terms = &required(pod)?.node_selector_terms;
    if terms.is_empty() {
        return None;
    }
    let mut union = BTreeSet::new();
    for term in terms {
        let mut allowed: Option<BTreeSet<&str>> = None;
        for requirement in term.match_fields.iter().flatten() {
            if requirement.key == "metadata.name" && requirement.operator == "In" {
                let names: BTreeSet<&str> = requirement.values.iter().flatten().map(String::as_str).collect();
                allowed = Some(match allowed {
                    None => names,
                    Some(previous) => previous.intersection(&names).copied().collect(),
                });
            }
        }
        // A term that does not name nodes lets every node through to the filter.
        union.extend(allowed?);
    }
    Some(union)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::scheduler::plugins::testing::{NodeBuilder, PodBuilder, filter, scores, snapshot};

    fn required_affinity(terms: Value) -> Value {
        json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}})
    }

    #[test]
    fn node_selector_and_required_terms_must_both_match() {
        let snapshot = snapshot(vec![
            (NodeBuilder::new("ssd-a").label("disk", "ssd").label("zone", "a").build(), vec![]),
            (NodeBuilder::new("hdd-b").label("disk", "hdd").label("zone", "b").build(), vec![]),
        ]);
        let miss = Fit::never("node(s) didn't match Pod's node affinity/selector");
        let zone_b = json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]);
        // (pod, fits ssd-a, fits hdd-b)
        for (i, (pod, on_a, on_b)) in [
            (PodBuilder::new("p"), Fit::Fits, Fit::Fits),
            (PodBuilder::new("p").node_selector("disk", "ssd"), Fit::Fits, miss.clone()),
            (PodBuilder::new("p").node_selector("disk", "ssd").node_selector("zone", "b"), miss.clone(), miss.clone()),
            (PodBuilder::new("p").affinity(required_affinity(zone_b.clone())), miss.clone(), Fit::Fits),
            (
                PodBuilder::new("p").node_selector("disk", "ssd").affinity(required_affinity(zone_b)),
                miss.clone(),
                miss.clone(),
            ),
            // Terms are ORed; an empty term matches nothing; no terms at all match nothing.
            (
                PodBuilder::new("p").affinity(required_affinity(json!([
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["hdd-b"]}]},
                ]))),
                Fit::Fits,
                Fit::Fits,
            ),
            (PodBuilder::new("p").affinity(required_affinity(json!([{}]))), miss.clone(), miss.clone()),
            (PodBuilder::new("p").affinity(required_affinity(json!([]))), miss.clone(), miss.clone()),
        ]
        .into_iter()
        .enumerate()
        {
            let pod = pod.build();
            assert_eq!(filter(&NodeAffinity, &pod, &snapshot, "ssd-a"), on_a, "case {i} on ssd-a");
            assert_eq!(filter(&NodeAffinity, &pod, &snapshot, "hdd-b"), on_b, "case {i} on hdd-b");
        }
    }

    #[test]
    fn pods_pinned_by_name_skip_every_other_node() {
        let snapshot = snapshot(
            ["a", "b", "c"].iter().map(|n| (NodeBuilder::new(n).label("zone", "z").build(), vec![])).collect(),
        );
        let by_name =
            |names: Value| json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": names}]});
        let skipped = Fit::never("node(s) didn't satisfy plugin(s) [NodeAffinity]");
        // (terms, fit on a, b, c)
        for (terms, expected) in [
            (json!([by_name(json!(["a"]))]), [Fit::Fits, skipped.clone(), skipped.clone()]),
            (json!([by_name(json!(["a"])), by_name(json!(["c"]))]), [Fit::Fits, skipped.clone(), Fit::Fits]),
            // One term without names: every node goes on to the filter.
            (
                json!([by_name(json!(["a"])), {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}]),
                [Fit::Fits, Fit::Fits, Fit::Fits],
            ),
            (
                json!([{"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": ["a", "b"]},
                    {"key": "metadata.name", "operator": "In", "values": ["b", "c"]},
                ]}]),
                [skipped.clone(), Fit::Fits, skipped.clone()],
            ),
        ] {
            let pod = PodBuilder::new("p").affinity(required_affinity(terms.clone())).build();
            let got: Vec<Fit> =
                ["a", "b", "c"].iter().map(|n| filter(&NodeAffinityPreFilter, &pod, &snapshot, n)).collect();
            assert_eq!(got, expected.to_vec(), "{terms}");
        }
        assert_eq!(filter(&NodeAffinityPreFilter, &PodBuilder::new("p").build(), &snapshot, "b"), Fit::Fits);
    }

    #[test]
    fn preferred_terms_add_their_weights_relative_to_the_best_node() {
        let snapshot = snapshot(vec![
            (NodeBuilder::new("ssd-a").label("disk", "ssd").label("zone", "a").build(), vec![]),
            (NodeBuilder::new("ssd-b").label("disk", "ssd").label("zone", "b").build(), vec![]),
            (NodeBuilder::new("hdd-b").label("disk", "hdd").label("zone", "b").build(), vec![]),
        ]);
        let term = |weight: i32, key: &str, value: &str| json!({"weight": weight, "preference": {"matchExpressions": [{"key": key, "operator": "In", "values": [value]}]}});
        let preferring = |terms: Value| {
            PodBuilder::new("p")
                .affinity(json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": terms}}))
                .build()
        };
        // (terms, scores of ssd-a, ssd-b, hdd-b)
        for (terms, expected) in [
            (json!([]), vec![0, 0, 0]),
            (json!([term(10, "disk", "ssd")]), vec![100, 100, 0]),
            (json!([term(30, "disk", "ssd"), term(10, "zone", "b")]), vec![75, 100, 25]),
            (json!([term(5, "zone", "c")]), vec![0, 0, 0]),
            (json!([{"weight": 50, "preference": {}}, term(10, "zone", "a")]), vec![100, 0, 0]),
        ] {
            assert_eq!(scores(&NodeAffinity, &preferring(terms.clone()), &snapshot), expected, "{terms}");
        }
    }
}
