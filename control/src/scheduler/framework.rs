//! The scheduling framework, after Kubernetes': a [`Snapshot`] of the nodes with the pods bound to
//! them; filter plugins that say whether a pod fits a node and, if not, why ([`Fit`]); score
//! plugins that rank the nodes that fit. [`schedule`] runs them and either names a node or
//! explains, in Kubernetes' words, why none fits ("0/3 nodes are available: 2 Insufficient
//! memory, 1 node(s) had untolerated taint {dedicated: gpu}.").
//!
//! Plugins are small pure functions of (pod, node, snapshot): no I/O, no clock, so they are tested
//! as tables of cases and properties.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use wasmkube_api::quantity::{cpu_millicores, memory_bytes};

/// CPU, memory and pod count: what pods request and nodes offer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: u64,
    pub memory: u64,
    pub pods: u64,
}

/// What Kubernetes assumes a container without requests uses, for scoring only (so such pods
/// still spread instead of piling onto one node): 100m CPU and 200 MB.
const DEFAULT_MILLI_CPU: u64 = 100;
const DEFAULT_MEMORY: u64 = 200 * 1024 * 1024;

impl Resources {
    /// A pod's requests: the sum over its containers, or the largest init container's if larger
    /// (init containers run one at a time, before the others); one pod.
    pub fn requested_by(pod: &Pod) -> Self {
        Self::sum_requests(pod, false)
    }

    /// Like [`Resources::requested_by`], with Kubernetes' non-zero defaults for containers that
    /// request nothing: what scoring uses.
    pub fn requested_for_scoring(pod: &Pod) -> Self {
        Self::sum_requests(pod, true)
    }

    fn sum_requests(pod: &Pod, non_zero: bool) -> Self {
        let Some(spec) = &pod.spec else { return Self { pods: 1, ..Self::default() } };
        let of = |c: &k8s_openapi::api::core::v1::Container| {
            let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
            let cpu = requests.and_then(|r| r.get("cpu")).and_then(|q| cpu_millicores(&q.0));
            let memory = requests.and_then(|r| r.get("memory")).and_then(|q| memory_bytes(&q.0)).map(|b| b as u64);
            let fallback = |v: Option<u64>, default: u64| if non_zero { v.unwrap_or(default) } else { v.unwrap_or(0) };
            (fallback(cpu, DEFAULT_MILLI_CPU), fallback(memory, DEFAULT_MEMORY))
        };
        let (mut cpu, mut memory) = (0, 0);
        for c in &spec.containers {
            let (c_cpu, c_memory) = of(c);
            cpu += c_cpu;
            memory += c_memory;
        }
        for c in spec.init_containers.iter().flatten() {
            let (c_cpu, c_memory) = of(c);
            cpu = cpu.max(c_cpu);
            memory = memory.max(c_memory);
        }
        Self { milli_cpu: cpu, memory, pods: 1 }
    }

    /// A node's `status.allocatable` (falling back to `capacity`).
    pub fn allocatable(node: &Node) -> Self {
        let status = node.status.as_ref();
        let map = status.and_then(|s| s.allocatable.as_ref()).or_else(|| status.and_then(|s| s.capacity.as_ref()));
        let get = |key: &str| map.and_then(|m| m.get(key)).map(|q| q.0.clone());
        Self {
            milli_cpu: get("cpu").and_then(|q| cpu_millicores(&q)).unwrap_or(0),
            memory: get("memory").and_then(|q| memory_bytes(&q)).map(|b| b as u64).unwrap_or(0),
            pods: get("pods").and_then(|q| q.parse().ok()).unwrap_or(0),
        }
    }

    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.pods += other.pods;
    }
}

/// One node and the (non-terminal) pods bound to it. Node and pods are shared with the
/// scheduler's cache (a pass's snapshot copies pointers, not objects).
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub pods: Vec<Arc<Pod>>,
    /// The sum of the bound pods' requests (as in [`Resources::requested_by`]).
    pub requested: Resources,
    /// The same with scoring defaults ([`Resources::requested_for_scoring`]).
    pub requested_for_scoring: Resources,
    pub allocatable: Resources,
    /// `spec.unschedulable` (cordoned), kept inline: every pod's search asks it of hundreds of
    /// nodes, and following the pointer into each Node was a cache miss apiece.
    pub cordoned: bool,
    /// The node's taints with the one its Ready condition implies, worked out on first use by
    /// the taint plugins (every pod's search asks for them).
    pub(crate) effective_taints: OnceLock<Vec<Taint>>,
}

impl NodeInfo {
    pub fn new(node: impl Into<Arc<Node>>) -> Self {
        let node = node.into();
        let allocatable = Resources::allocatable(&node);
        let cordoned = node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
        Self {
            cordoned,
            node,
            pods: Vec::new(),
            requested: Resources::default(),
            requested_for_scoring: Resources::default(),
            allocatable,
            effective_taints: OnceLock::new(),
        }
    }

    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or("")
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.node.metadata.labels.as_ref().unwrap_or(&EMPTY)
    }

    /// Counts a pod as bound here (also used for the pods this pass has just placed).
    pub fn add_pod(&mut self, pod: impl Into<Arc<Pod>>) {
        let pod = pod.into();
        let requests = Requests::of(&pod);
        self.add_pod_with(pod, requests);
    }

    /// [`NodeInfo::add_pod`] with the pod's requests already worked out (the scheduler's cache
    /// keeps them, so a snapshot does not parse every pod's quantities again).
    pub fn add_pod_with(&mut self, pod: Arc<Pod>, requests: Requests) {
        self.requested.add(&requests.requested);
        self.requested_for_scoring.add(&requests.for_scoring);
        self.pods.push(pod);
    }
}

/// A pod's requests, as filtering ([`Resources::requested_by`]) and scoring
/// ([`Resources::requested_for_scoring`]) count them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    pub requested: Resources,
    pub for_scoring: Resources,
}

impl Requests {
    pub fn of(pod: &Pod) -> Self {
        Self { requested: Resources::requested_by(pod), for_scoring: Resources::requested_for_scoring(pod) }
    }
}

/// The pod being scheduled, with what the plugins ask of it for every node worked out once
/// (Kubernetes' PodInfo and PreFilter state): a search looks at hundreds of nodes per pod, and
/// parsing its quantities at each was most of a decision's cost. Derefs to the [`Pod`].
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub requests: Requests,
}

impl PodInfo {
    pub fn new(pod: impl Into<Arc<Pod>>) -> Self {
        let pod = pod.into();
        let requests = Requests::of(&pod);
        Self { pod, requests }
    }

    /// With requests already parsed (the scheduler's cache keeps them per pod).
    pub fn with_requests(pod: Arc<Pod>, requests: Requests) -> Self {
        Self { pod, requests }
    }
}

impl std::ops::Deref for PodInfo {
    type Target = Pod;

    fn deref(&self) -> &Pod {
        &self.pod
    }
}

/// The cluster as one scheduling pass sees it. Add pods through [`Snapshot::add_pod`], which
/// keeps the index of pods with affinity terms current.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub nodes: Vec<NodeInfo>,
    /// (node index, pod index) of the bound pods that declare pod affinity or anti-affinity:
    /// usually few, and all that the affinity plugins need to look at for a pod without terms
    /// of its own (what Kubernetes keeps as `HavePodsWithAffinityList`).
    with_affinity: Vec<(usize, usize)>,
    /// Node name → index in `nodes`.
    index: HashMap<String, usize>,
}

/// Whether a pod declares any pod affinity or anti-affinity term.
pub fn has_pod_affinity(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some())
}

impl Snapshot {
    pub fn new(nodes: Vec<NodeInfo>) -> Self {
        let with_affinity = nodes
            .iter()
            .enumerate()
            .flat_map(|(n, info)| {
                info.pods.iter().enumerate().filter(|(_, p)| has_pod_affinity(p)).map(move |(p, _)| (n, p))
            })
            .collect();
        let index = nodes.iter().enumerate().map(|(i, n)| (n.name().to_string(), i)).collect();
        Self { nodes, with_affinity, index }
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    /// The position of the node named `name` in `nodes`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Puts `info` (the same node, brought up to date) at `index`, keeping the index of pods
    /// with affinity terms current.
    pub fn replace_node(&mut self, index: usize, info: NodeInfo) {
        self.with_affinity.retain(|&(n, _)| n != index);
        let with_terms = info.pods.iter().enumerate().filter(|(_, p)| has_pod_affinity(p));
        self.with_affinity.extend(with_terms.map(|(p, _)| (index, p)));
        self.nodes[index] = info;
    }

    /// Counts `pod` as bound to the node named `node` (a pod this pass has just placed).
    pub fn add_pod(&mut self, node: &str, pod: &PodInfo) {
        let Some(&n) = self.index.get(node) else { return };
        if has_pod_affinity(pod) {
            self.with_affinity.push((n, self.nodes[n].pods.len()));
        }
        self.nodes[n].add_pod_with(pod.pod.clone(), pod.requests);
    }

    /// Every bound pod with the node it is on.
    pub fn pods(&self) -> impl Iterator<Item = (&NodeInfo, &Pod)> {
        self.nodes.iter().flat_map(|n| n.pods.iter().map(move |p| (n, p.as_ref())))
    }

    /// The bound pods that declare pod affinity or anti-affinity, with their nodes.
    pub fn pods_with_affinity(&self) -> impl Iterator<Item = (&NodeInfo, &Pod)> {
        self.with_affinity.iter().map(|&(n, p)| (&self.nodes[n], self.nodes[n].pods[p].as_ref()))
    }
}

/// Whether a pod fits a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fit {
    Fits,
    /// It does not; `reason` is the phrase Kubernetes counts in its message ("Insufficient cpu",
    /// "node(s) didn't match Pod's node affinity/selector"). `resolvable` is false when no change
    /// to other pods could make it fit (Kubernetes' UnschedulableAndUnresolvable).
    No {
        reason: String,
        resolvable: bool,
    },
}

impl Fit {
    pub fn no(reason: impl Into<String>) -> Self {
        Fit::No { reason: reason.into(), resolvable: true }
    }

    pub fn never(reason: impl Into<String>) -> Self {
        Fit::No { reason: reason.into(), resolvable: false }
    }
}

/// A filter: can `pod` run on `node`?
pub trait FilterPlugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn filter(&self, pod: &PodInfo, node: &NodeInfo, snapshot: &Snapshot) -> Fit;
    /// True when the filter would let `pod` onto every node (it asks nothing this filter
    /// checks), so a search need not run it node by node: Kubernetes' PreFilter `Skip`.
    fn skips(&self, _pod: &PodInfo, _snapshot: &Snapshot) -> bool {
        false
    }
}

/// A score: how good is `node` for `pod`, from 0 to [`MAX_SCORE`] (after [`ScorePlugin::normalize`]).
pub trait ScorePlugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn weight(&self) -> u64 {
        1
    }
    fn score(&self, pod: &PodInfo, node: &NodeInfo, snapshot: &Snapshot) -> i64;
    /// The raw scores of `nodes`, in order. Plugins whose score needs a view of the whole cluster
    /// (counts per topology domain) override it to work that out once per pod rather than once
    /// per node, as Kubernetes' PreScore does; the result must equal scoring each node alone.
    fn score_all(&self, pod: &PodInfo, nodes: &[&NodeInfo], snapshot: &Snapshot) -> Vec<i64> {
        nodes.iter().map(|n| self.score(pod, n, snapshot)).collect()
    }
    /// Rescales the raw scores of all feasible nodes (e.g. to 0..=100 relative to the best).
    fn normalize(&self, _scores: &mut [i64]) {}
    /// True when the score would be the same on every node for `pod`, so it cannot change the
    /// choice and is not computed: Kubernetes' PreScore `Skip`.
    fn skips(&self, _pod: &PodInfo, _snapshot: &Snapshot) -> bool {
        false
    }
}

pub const MAX_SCORE: i64 = 100;

/// Why no node fits, worded as Kubernetes' FailedScheduling message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    pub message: String,
}

/// How many feasible nodes a pod's search looks for before it stops filtering and scores what it
/// found: every node in a small cluster; in a large one a share that shrinks from 50% by one
/// point per 125 nodes, down to 5%, and never fewer than 100 nodes. That is Kubernetes'
/// adaptive `percentageOfNodesToScore`: placement stays good while a pod's cost stops growing
/// with the cluster.
pub fn nodes_to_find(total: usize) -> usize {
    const MIN_FEASIBLE: usize = 100;
    if total < MIN_FEASIBLE {
        return total;
    }
    let percentage = 50usize.saturating_sub(total / 125).max(5);
    (total * percentage / 100).max(MIN_FEASIBLE)
}

/// The node for `pod`: the feasible node with the highest weighted score (ties: the first in
/// `snapshot` order, which callers keep sorted by name), or why there is none. Looks at every
/// node; see [`schedule_from`] for the search a scheduler makes.
pub fn schedule(
    pod: &Pod,
    snapshot: &Snapshot,
    filters: &[Box<dyn FilterPlugin>],
    scores: &[Box<dyn ScorePlugin>],
) -> Result<String, Unschedulable> {
    schedule_from(&PodInfo::new(pod.clone()), snapshot, filters, scores, 0, snapshot.nodes.len()).map(|(node, _)| node)
}

/// Like [`schedule`], filtering nodes from index `start` round the list and stopping once `find`
/// nodes fit (see [`nodes_to_find`]); returns the node and the index where the next pod's search
/// should start, so successive pods look at different nodes first (Kubernetes'
/// `nextStartNodeIndex`). A pod that fits nowhere has looked at every node, so its message
/// counts them all.
pub fn schedule_from(
    pod: &PodInfo,
    snapshot: &Snapshot,
    filters: &[Box<dyn FilterPlugin>],
    scores: &[Box<dyn ScorePlugin>],
    start: usize,
    find: usize,
) -> Result<(String, usize), Unschedulable> {
    let total = snapshot.nodes.len();
    let filters: Vec<&dyn FilterPlugin> =
        filters.iter().filter(|f| !f.skips(pod, snapshot)).map(|f| f.as_ref()).collect();
    let mut feasible: Vec<usize> = Vec::new();
    // reason → number of nodes it ruled out (each node counts once, under its first failing filter).
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut visited = 0;
    for i in 0..total {
        let index = (start + i) % total;
        let node = &snapshot.nodes[index];
        visited = i + 1;
        let failed = filters.iter().find_map(|f| match f.filter(pod, node, snapshot) {
            Fit::Fits => None,
            Fit::No { reason, .. } => Some(reason),
        });
        match failed {
            None => feasible.push(index),
            Some(reason) => *reasons.entry(reason).or_default() += 1,
        }
        if feasible.len() >= find.max(1) {
            break;
        }
    }
    if feasible.is_empty() {
        return Err(Unschedulable { message: unschedulable_message(total, &reasons) });
    }
    let next_start = (start + visited) % total.max(1);
    // Ties go to the first node in snapshot order, whichever node the search started from.
    feasible.sort_unstable();
    let feasible: Vec<&NodeInfo> = feasible.into_iter().map(|i| &snapshot.nodes[i]).collect();
    let mut totals = vec![0i64; feasible.len()];
    for plugin in scores.iter().filter(|s| !s.skips(pod, snapshot)) {
        let mut raw = plugin.score_all(pod, &feasible, snapshot);
        plugin.normalize(&mut raw);
        for (total, score) in totals.iter_mut().zip(raw) {
            *total += score.clamp(0, MAX_SCORE) * plugin.weight() as i64;
        }
    }
    let best = totals.iter().enumerate().max_by(|(ia, a), (ib, b)| a.cmp(b).then(ib.cmp(ia))).map(|(i, _)| i);
    Ok((feasible[best.unwrap_or(0)].name().to_string(), next_start))
}

/// "0/3 nodes are available: 1 Insufficient memory, 2 node(s) had untolerated taint {k: v}."
pub fn unschedulable_message(total: usize, reasons: &BTreeMap<String, usize>) -> String {
    if total == 0 {
        return "0/0 nodes are available: no nodes available to schedule pods.".to_string();
    }
    let parts: Vec<String> = reasons.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
    format!("0/{total} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    // The builders live with the plugins' tests; re-exported under their old path.
    pub(crate) use crate::scheduler::plugins::testing::{node, pod};

    #[test]
    fn requests_sum_containers_and_scoring_fills_in_defaults() {
        let p = pod(Some("250m"), None);
        assert_eq!(Resources::requested_by(&p), Resources { milli_cpu: 250, memory: 0, pods: 1 });
        assert_eq!(Resources::requested_for_scoring(&p), Resources { milli_cpu: 250, memory: DEFAULT_MEMORY, pods: 1 });
        let n = node("a", "2", "4Gi");
        assert_eq!(Resources::allocatable(&n), Resources { milli_cpu: 2000, memory: 4 << 30, pods: 110 });
    }

    struct Named(&'static str);
    impl FilterPlugin for Named {
        fn name(&self) -> &'static str {
            "only"
        }
        fn filter(&self, _: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Fit {
            if node.name() == self.0 { Fit::Fits } else { Fit::no("node(s) were not the chosen one") }
        }
    }

    #[test]
    fn the_message_counts_nodes_per_reason() {
        let snapshot = Snapshot::new(["a", "b", "c"].iter().map(|n| NodeInfo::new(node(n, "1", "1Gi"))).collect());
        let filters: Vec<Box<dyn FilterPlugin>> = vec![Box::new(Named("z"))];
        let err = schedule(&pod(None, None), &snapshot, &filters, &[]).expect_err("nothing fits");
        assert_eq!(err.message, "0/3 nodes are available: 3 node(s) were not the chosen one.");
        let filters: Vec<Box<dyn FilterPlugin>> = vec![Box::new(Named("b"))];
        assert_eq!(schedule(&pod(None, None), &snapshot, &filters, &[]).as_deref(), Ok("b"));
        let empty = Snapshot::default();
        assert!(schedule(&pod(None, None), &empty, &[], &[]).expect_err("no nodes").message.starts_with("0/0 nodes"));
    }

    #[test]
    fn large_clusters_search_a_shrinking_share_of_nodes() {
        // (nodes, feasible nodes to find): all below 100, then 50% less a point per 125 nodes,
        // at least 5% and at least 100.
        for (total, want) in [(0, 0), (99, 99), (100, 100), (200, 100), (1000, 420), (5000, 500), (50_000, 2500)] {
            assert_eq!(nodes_to_find(total), want, "{total} nodes");
        }
    }

    #[test]
    fn a_search_stops_at_enough_nodes_and_the_next_starts_after_it() {
        let names: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
        let snapshot = Snapshot::new(names.iter().map(|n| NodeInfo::new(node(n, "1", "1Gi"))).collect());
        let p = pod(None, None);
        // Every node fits and scores the same: the first found in snapshot order wins.
        assert_eq!(schedule_from(&PodInfo::new(p.clone()), &snapshot, &[], &[], 0, 3), Ok(("n0".to_string(), 3)));
        assert_eq!(schedule_from(&PodInfo::new(p.clone()), &snapshot, &[], &[], 3, 3), Ok(("n3".to_string(), 6)));
        assert_eq!(
            schedule_from(&PodInfo::new(p.clone()), &snapshot, &[], &[], 9, 3),
            Ok(("n0".to_string(), 2)),
            "wraps round"
        );
        // A pod that fits nowhere looked at every node, wherever it started.
        let filters: Vec<Box<dyn FilterPlugin>> = vec![Box::new(Named("z"))];
        let err = schedule_from(&PodInfo::new(p.clone()), &snapshot, &filters, &[], 7, 3).expect_err("nothing fits");
        assert_eq!(err.message, "0/10 nodes are available: 10 node(s) were not the chosen one.");
    }
}
