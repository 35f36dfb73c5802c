//! InterPodAffinity: where a pod may go given the pods already placed, by topology domain (the
//! nodes sharing a value of the term's `topologyKey`: one node for `kubernetes.io/hostname`, a
//! zone for `topology.kubernetes.io/zone`).
//!
//! The filter checks, in Kubernetes' order: the pod's required affinity (some matching pod in the
//! node's domain for every term), its required anti-affinity (no matching pod in the node's
//! domain), and the required anti-affinity of the pods already placed against it. The score adds
//! preferred terms both ways: the pod's own, and placed pods' terms that match it (their required
//! affinity counting with weight 1, Kubernetes' `hardPodAffinityWeight`).
//!
//! Namespaces: a term looks at its owner's namespace unless it lists `namespaces` or has a
//! `namespaceSelector`. The scheduler holds no Namespace objects, so a `namespaceSelector` is
//! matched against the one label every namespace carries, `kubernetes.io/metadata.name` (`{}`
//! still selects every namespace).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, WeightedPodAffinityTerm};

use super::selector::{Selector, pod_labels, pod_namespace};
use crate::scheduler::framework::{FilterPlugin, Fit, MAX_SCORE, NodeInfo, PodInfo, ScorePlugin, Snapshot};

pub struct InterPodAffinity;

/// What an existing pod's required affinity term is worth to a pod it matches.
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

impl FilterPlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, snapshot: &Snapshot) -> Fit {
        let affinity: Vec<Term> = affinity(pod).0.iter().map(|t| Term::new(pod, t)).collect();
        if !affinity.is_empty() && !satisfies_affinity(pod, &affinity, node, snapshot) {
            return Fit::never("node(s) didn't match pod affinity rules");
        }
        let anti: Vec<Term> = anti_affinity(pod).0.iter().map(|t| Term::new(pod, t)).collect();
        if violates_anti_affinity(&anti, node, snapshot) {
            return Fit::no("node(s) didn't match pod anti-affinity rules");
        }
        if violates_existing_anti_affinity(pod, node, snapshot) {
            return Fit::no("node(s) didn't satisfy existing pods anti-affinity rules");
        }
        Fit::Fits
    }

    /// Nothing to check: no required terms of its own, and no placed pod has any terms.
    fn skips(&self, pod: &PodInfo, snapshot: &Snapshot) -> bool {
        affinity(pod).0.is_empty() && anti_affinity(pod).0.is_empty() && snapshot.pods_with_affinity().next().is_none()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }

    fn weight(&self) -> u64 {
        2
    }

    /// The weights of the preferred terms satisfied by placing the pod on `node`: each pair of
    /// (term, placed pod) that matches adds (affinity) or subtracts (anti-affinity) the term's
    /// weight on every node in the placed pod's domain.
    fn score(&self, pod: &PodInfo, node: &NodeInfo, snapshot: &Snapshot) -> i64 {
        self.score_all(pod, &[node], snapshot)[0]
    }

    /// The weights are summed per topology domain once (over every placed pod for the pod's own
    /// terms, over the placed pods with terms for theirs), then each node takes its domains'.
    fn score_all(&self, pod: &PodInfo, nodes: &[&NodeInfo], snapshot: &Snapshot) -> Vec<i64> {
        let weighted = |terms: &[WeightedPodAffinityTerm], owner: &Pod, sign: i64| -> Vec<(Term, i64)> {
            terms.iter().map(|w| (Term::new(owner, &w.pod_affinity_term), sign * i64::from(w.weight))).collect()
        };
        let mut own = weighted(affinity(pod).1, pod, 1);
        own.extend(weighted(anti_affinity(pod).1, pod, -1));
        // (topology key, value) → weight for every node in that domain.
        let mut domains: BTreeMap<(String, String), i64> = BTreeMap::new();
        let mut add = |placed_on: &NodeInfo, key: &str, weight: i64| {
            if let Some(value) = placed_on.labels().get(key) {
                *domains.entry((key.to_string(), value.clone())).or_default() += weight;
            }
        };
        if !own.is_empty() {
            for (placed_on, placed) in snapshot.pods() {
                for (term, weight) in &own {
                    if term.matches(placed) {
                        add(placed_on, &term.topology_key, *weight);
                    }
                }
            }
        }
        for (placed_on, placed) in snapshot.pods_with_affinity() {
            let (required, preferred) = affinity(placed);
            let mut theirs: Vec<(Term, i64)> =
                required.iter().map(|t| (Term::new(placed, t), HARD_POD_AFFINITY_WEIGHT)).collect();
            theirs.extend(weighted(preferred, placed, 1));
            theirs.extend(weighted(anti_affinity(placed).1, placed, -1));
            for (term, weight) in theirs {
                if term.matches(pod) {
                    add(placed_on, &term.topology_key, weight);
                }
            }
        }
        nodes
            .iter()
            .map(|node| {
                domains
                    .iter()
                    .filter(|((key, value), _)| node.labels().get(key) == Some(value))
                    .map(|(_, weight)| weight)
                    .sum()
            })
            .collect()
    }

    /// Linear from the lowest (0) to the highest (MAX_SCORE); all equal gives 0.
    fn normalize(&self, scores: &mut [i64]) {
        let (Some(&min), Some(&max)) = (scores.iter().min(), scores.iter().max()) else { return };
        for score in scores.iter_mut() {
            *score = if max > min { (MAX_SCORE as f64 * (*score - min) as f64 / (max - min) as f64) as i64 } else { 0 };
        }
    }

    /// Every node would score 0: no preferred terms of its own, and no placed pod has terms.
    fn skips(&self, pod: &PodInfo, snapshot: &Snapshot) -> bool {
        affinity(pod).1.is_empty() && anti_affinity(pod).1.is_empty() && snapshot.pods_with_affinity().next().is_none()
    }
}

/// A pod affinity term made concrete for the pod that declares it (its owner).
struct Term {
    namespaces: BTreeSet<String>,
    namespace_selector: Selector,
    selector: Selector,
    topology_key: String,
}

impl Term {
    fn new(owner: &Pod, term: &PodAffinityTerm) -> Self {
        let mut namespaces: BTreeSet<String> = term.namespaces.iter().flatten().cloned().collect();
        if namespaces.is_empty() && term.namespace_selector.is_none() {
            namespaces.insert(pod_namespace(owner).to_string());
        }
        Self {
            namespaces,
            namespace_selector: Selector::new(term.namespace_selector.as_ref()),
            selector: Selector::new(term.label_selector.as_ref()),
            topology_key: term.topology_key.clone(),
        }
    }

    fn matches(&self, pod: &Pod) -> bool {
        let namespace = pod_namespace(pod);
        let in_namespace = self.namespaces.contains(namespace) || {
            let labels = BTreeMap::from([("kubernetes.io/metadata.name".to_string(), namespace.to_string())]);
            self.namespace_selector.matches(&labels)
        };
        in_namespace && self.selector.matches(pod_labels(pod))
    }
}

/// A pod's (required, preferred) pod affinity terms.
fn affinity(pod: &Pod) -> (&[PodAffinityTerm], &[WeightedPodAffinityTerm]) {
    let a = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()).and_then(|a| a.pod_affinity.as_ref());
    (
        a.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_deref()).unwrap_or_default(),
        a.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_deref()).unwrap_or_default(),
    )
}

/// A pod's (required, preferred) pod anti-affinity terms.
fn anti_affinity(pod: &Pod) -> (&[PodAffinityTerm], &[WeightedPodAffinityTerm]) {
    let a = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()).and_then(|a| a.pod_anti_affinity.as_ref());
    (
        a.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_deref()).unwrap_or_default(),
        a.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_deref()).unwrap_or_default(),
    )
}

/// Every term needs its topology key on the node and, in the node's domain, a placed pod
/// matching all the terms. Exception, so a group with affinity to itself can start: when no
/// placed pod anywhere matches all the terms and the pod matches them itself, any node with the
/// topology keys will do.
fn satisfies_affinity(pod: &Pod, terms: &[Term], node: &NodeInfo, snapshot: &Snapshot) -> bool {
    let mut domains: BTreeSet<(&str, &str)> = BTreeSet::new();
    for (placed_on, placed) in snapshot.pods() {
        if terms.iter().all(|t| t.matches(placed)) {
            for t in terms {
                if let Some(value) = placed_on.labels().get(&t.topology_key) {
                    domains.insert((t.topology_key.as_str(), value.as_str()));
                }
            }
        }
    }
    let mut pods_exist = true;
    for t in terms {
        let Some(value) = node.labels().get(&t.topology_key) else { return false };
        pods_exist &= domains.contains(&(t.topology_key.as_str(), value.as_str()));
    }
    pods_exist || (domains.is_empty() && terms.iter().all(|t| t.matches(pod)))
}

/// Some term has a matching placed pod in the node's domain (a node without the term's topology
/// key is outside every domain of it).
fn violates_anti_affinity(terms: &[Term], node: &NodeInfo, snapshot: &Snapshot) -> bool {
    terms.iter().any(|t| {
        let Some(value) = node.labels().get(&t.topology_key) else { return false };
        snapshot
            .pods()
            .any(|(placed_on, placed)| placed_on.labels().get(&t.topology_key) == Some(value) && t.matches(placed))
    })
}

/// Some placed pod has a required anti-affinity term matching `pod`, and `node` is in its domain.
fn violates_existing_anti_affinity(pod: &Pod, node: &NodeInfo, snapshot: &Snapshot) -> bool {
    snapshot.pods_with_affinity().any(|(placed_on, placed)| {
        anti_affinity(placed).0.iter().any(|term| {
            let value = placed_on.labels().get(&term.topology_key);
            value.is_some() && node.labels().get(&term.topology_key) == value && Term::new(placed, term).matches(pod)
        })
    })
}

#[cfg(test)]
mod tests;
