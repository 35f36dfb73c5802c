//! PodTopologySpread: `topologySpreadConstraints` keep the pods a selector matches evenly spread
//! over topology domains (nodes sharing a value of `topologyKey`). `DoNotSchedule` constraints
//! filter: placing the pod must not make its domain exceed the least-loaded domain by more than
//! `maxSkew`. `ScheduleAnyway` constraints score: fewer matching pods in the node's domain is
//! better.
//!
//! Default spreading: a pod with no constraints of its own gets Kubernetes' system defaults,
//! `ScheduleAnyway` over `kubernetes.io/hostname` (maxSkew 3) and `topology.kubernetes.io/zone`
//! (maxSkew 5). Kubernetes selects the pods to spread with the selectors of the Services and
//! ReplicaSets that match the pod; the scheduler holds neither, so it takes the pods with the
//! same controller (`ownerReferences` with `controller: true`), which is what a ReplicaSet's
//! selector picks out. Every node counts as its own hostname domain for the defaults even
//! without the label (the agent sets it; a node registered by hand may not), so replicas spread
//! over nodes regardless.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use super::node_affinity::required_matches;
use super::selector::{Selector, pod_labels, pod_namespace};
use super::taint_toleration::first_untolerated;
use crate::scheduler::framework::{FilterPlugin, Fit, MAX_SCORE, NodeInfo, PodInfo, ScorePlugin, Snapshot};

pub struct PodTopologySpread;

const HOSTNAME: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";
const DO_NOT_SCHEDULE: &str = "DoNotSchedule";
const SCHEDULE_ANYWAY: &str = "ScheduleAnyway";

/// The raw score of a node that lacks one of the pod's topology keys: ranked last.
const IGNORED: i64 = -1;

impl FilterPlugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, snapshot: &Snapshot) -> Fit {
        let constraints = constraints(pod, DO_NOT_SCHEDULE);
        // Domains are counted on nodes that carry every constraint's key.
        let has_all_keys = |n: &NodeInfo| constraints.iter().all(|c| c.domain(n).is_some());
        for c in &constraints {
            let Some(value) = c.domain(node) else {
                return Fit::never("node(s) didn't match pod topology spread constraints (missing required label)");
            };
            let mut domains: BTreeMap<&str, usize> = BTreeMap::new();
            for n in snapshot.nodes.iter().filter(|n| has_all_keys(n) && c.counts_node(pod, n)) {
                if let Some(domain) = c.domain(n) {
                    *domains.entry(domain).or_default() += c.matching_pods(pod, n);
                }
            }
            // Fewer domains than minDomains: the missing ones count as empty.
            let global_min =
                if domains.len() < c.min_domains { 0 } else { domains.values().min().copied().unwrap_or(0) };
            let skew =
                (domains.get(value).copied().unwrap_or(0) + usize::from(c.selects(pod))) as i64 - global_min as i64;
            if skew > c.max_skew {
                return Fit::no("node(s) didn't match pod topology spread constraints");
            }
        }
        Fit::Fits
    }

    fn skips(&self, pod: &PodInfo, _: &Snapshot) -> bool {
        constraints(pod, DO_NOT_SCHEDULE).is_empty()
    }
}

impl ScorePlugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }

    fn weight(&self) -> u64 {
        2
    }

    /// Per constraint, the matching pods in the node's domain weighted by ln(domains + 2) (so
    /// counts over many small domains, like hosts, are not drowned out by counts over a few
    /// large ones, like zones), plus `maxSkew - 1` to soften small skews.
    ///
    /// Kubernetes counts domains over the nodes that passed filtering; a score sees one node at
    /// a time, so the nodes the pod's node selector and required node affinity allow stand in.
    fn score(&self, pod: &PodInfo, node: &NodeInfo, snapshot: &Snapshot) -> i64 {
        let constraints = constraints(pod, SCHEDULE_ANYWAY);
        if constraints.is_empty() {
            return 0;
        }
        // Own constraints need every key on a node; the defaults spread where they can.
        let require_all = declared(pod);
        let has_all_keys = |n: &NodeInfo| !require_all || constraints.iter().all(|c| c.domain(n).is_some());
        if !has_all_keys(node) {
            return IGNORED;
        }
        let candidates: Vec<&NodeInfo> =
            snapshot.nodes.iter().filter(|n| required_matches(pod, n) && has_all_keys(n)).collect();
        let mut score = 0.0;
        for c in &constraints {
            let Some(value) = c.domain(node) else { continue };
            let (count, domains) = if c.topology_key == HOSTNAME {
                (c.matching_pods(pod, node), candidates.len())
            } else {
                let in_domain = snapshot
                    .nodes
                    .iter()
                    .filter(|n| has_all_keys(n) && c.counts_node(pod, n) && c.domain(n) == Some(value));
                let values: BTreeSet<&str> = candidates.iter().map(|n| c.domain(n).unwrap_or("")).collect();
                (in_domain.map(|n| c.matching_pods(pod, n)).sum(), values.len())
            };
            score += count as f64 * ((domains + 2) as f64).ln() + (c.max_skew - 1) as f64;
        }
        (score.round() as i64).max(0)
    }

    /// The same as scoring each node, with what does not depend on the node (the candidate
    /// nodes, each domain's matching pods) worked out once.
    fn score_all(&self, pod: &PodInfo, nodes: &[&NodeInfo], snapshot: &Snapshot) -> Vec<i64> {
        let constraints = constraints(pod, SCHEDULE_ANYWAY);
        if constraints.is_empty() {
            return vec![0; nodes.len()];
        }
        let require_all = declared(pod);
        let has_all_keys = |n: &NodeInfo| !require_all || constraints.iter().all(|c| c.domain(n).is_some());
        let candidates: Vec<&NodeInfo> =
            snapshot.nodes.iter().filter(|n| required_matches(pod, n) && has_all_keys(n)).collect();
        // Per constraint: matching pods per domain, and how many domains the candidates span.
        let counted: Vec<(BTreeMap<&str, usize>, usize)> = constraints
            .iter()
            .map(|c| {
                if c.topology_key == HOSTNAME {
                    return (BTreeMap::new(), candidates.len());
                }
                let mut per_domain: BTreeMap<&str, usize> = BTreeMap::new();
                for n in snapshot.nodes.iter().filter(|n| has_all_keys(n) && c.counts_node(pod, n)) {
                    if let Some(value) = c.domain(n) {
                        *per_domain.entry(value).or_default() += c.matching_pods(pod, n);
                    }
                }
                let values: BTreeSet<&str> = candidates.iter().map(|n| c.domain(n).unwrap_or("")).collect();
                (per_domain, values.len())
            })
            .collect();
        nodes
            .iter()
            .map(|node| {
                if !has_all_keys(node) {
                    return IGNORED;
                }
                let mut score = 0.0;
                for (c, (per_domain, domains)) in constraints.iter().zip(&counted) {
                    let Some(value) = c.domain(node) else { continue };
                    let count = if c.topology_key == HOSTNAME {
                        c.matching_pods(pod, node)
                    } else {
                        per_domain.get(value).copied().unwrap_or(0)
                    };
                    score += count as f64 * ((domains + 2) as f64).ln() + (c.max_skew - 1) as f64;
                }
                (score.round() as i64).max(0)
            })
            .collect()
    }

    /// The fewest matching pods get MAX_SCORE; a node missing a key gets 0.
    fn normalize(&self, scores: &mut [i64]) {
        let valid = || scores.iter().copied().filter(|&s| s != IGNORED);
        let min = valid().min().unwrap_or(0);
        let max = valid().max().unwrap_or(0).max(0);
        for score in scores.iter_mut() {
            *score = match *score {
                IGNORED => 0,
                _ if max == 0 => MAX_SCORE,
                s => MAX_SCORE * (max + min - s) / max,
            };
        }
    }

    /// No soft constraints (own or default): every node would score the same.
    fn skips(&self, pod: &PodInfo, _: &Snapshot) -> bool {
        constraints(pod, SCHEDULE_ANYWAY).is_empty()
    }
}

/// One constraint as the plugin applies it.
struct Constraint {
    max_skew: i64,
    topology_key: String,
    selector: Selects,
    min_domains: usize,
    /// Count only nodes the pod's node selector and required node affinity allow (`nodeAffinityPolicy: Honor`, the default).
    honor_affinity: bool,
    /// Count only nodes whose taints the pod tolerates (`nodeTaintsPolicy: Honor`; default Ignore).
    honor_taints: bool,
    /// One of the system defaults (see the module docs).
    default: bool,
}

/// Which pods a constraint spreads.
enum Selects {
    Labels(Selector),
    /// Pods whose controller has this uid (default spreading).
    Controller(String),
}

impl Constraint {
    fn selects(&self, pod: &Pod) -> bool {
        match &self.selector {
            Selects::Labels(selector) => selector.matches(pod_labels(pod)),
            Selects::Controller(uid) => controller_uid(pod) == Some(uid.as_str()),
        }
    }

    /// The node's domain: its value of the topology key.
    fn domain<'a>(&self, node: &'a NodeInfo) -> Option<&'a str> {
        match node.labels().get(&self.topology_key) {
            Some(value) => Some(value),
            None if self.default && self.topology_key == HOSTNAME => Some(node.name()),
            None => None,
        }
    }

    fn counts_node(&self, pod: &Pod, node: &NodeInfo) -> bool {
        (!self.honor_affinity || required_matches(pod, node))
            && (!self.honor_taints || first_untolerated(pod, node).is_none())
    }

    /// Pods on `node` this constraint spreads: same namespace as `pod`, not terminating. As in
    /// Kubernetes, a `{}` selector (everything) counts none.
    fn matching_pods(&self, pod: &Pod, node: &NodeInfo) -> usize {
        if matches!(&self.selector, Selects::Labels(s) if s.is_everything()) {
            return 0;
        }
        let namespace = pod_namespace(pod);
        let counted =
            |p: &&Arc<Pod>| p.metadata.deletion_timestamp.is_none() && pod_namespace(p) == namespace && self.selects(p);
        node.pods.iter().filter(counted).count()
    }
}

fn declared(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.topology_spread_constraints.as_ref()).is_some_and(|c| !c.is_empty())
}

fn controller_uid(pod: &Pod) -> Option<&str> {
    pod.metadata.owner_references.iter().flatten().find(|r| r.controller == Some(true)).map(|r| r.uid.as_str())
}

/// The pod's constraints with `when_unsatisfiable`, or, if it declares none at all, the system
/// defaults (all `ScheduleAnyway`) for pods with a controller.
fn constraints(pod: &Pod, when_unsatisfiable: &str) -> Vec<Constraint> {
    let declared_constraints =
        pod.spec.as_ref().and_then(|s| s.topology_spread_constraints.as_deref()).unwrap_or_default();
    if !declared_constraints.is_empty() {
        return declared_constraints
            .iter()
            .filter(|c| c.when_unsatisfiable == when_unsatisfiable)
            .map(|c| Constraint {
                max_skew: i64::from(c.max_skew),
                topology_key: c.topology_key.clone(),
                selector: Selects::Labels(Selector::with_label_keys(
                    c.label_selector.as_ref(),
                    c.match_label_keys.as_deref().unwrap_or_default(),
                    pod_labels(pod),
                )),
                min_domains: c.min_domains.map_or(1, |m| usize::try_from(m).unwrap_or(1)),
                honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
                default: false,
            })
            .collect();
    }
    match controller_uid(pod) {
        Some(uid) if when_unsatisfiable == SCHEDULE_ANYWAY => [(HOSTNAME, 3), (ZONE, 5)]
            .into_iter()
            .map(|(key, max_skew)| Constraint {
                max_skew,
                topology_key: key.to_string(),
                selector: Selects::Controller(uid.to_string()),
                min_domains: 1,
                honor_affinity: true,
                honor_taints: false,
                default: true,
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
