//! The scheduler's cache (Kubernetes' informer plus scheduler cache): every pod and node as the
//! store has them, kept current from the watch, with which pods count on which node, the pods
//! waiting for one, and a [`Snapshot`] that is kept between passes.
//!
//! A pass used to rebuild the snapshot from every node and bound pod; with thousands of nodes
//! and pods arriving a few at a time that rebuild was most of the scheduler's work. Now each
//! change marks the nodes it touches, and a pass rebuilds only those nodes (the whole snapshot
//! only when nodes come or go). [`Cache::snapshot`] and a full rebuild must always agree; a
//! test replays random histories to hold it to that.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use super::framework::{NodeInfo, PodInfo, Requests, Snapshot};
use super::{kind, terminal, unscheduled};
use crate::controller::decode_stored;
use crate::objects::Objects;
use crate::status::ApiError;
use crate::store::{Event, EventStream, KeyValue, RangeRequest};

#[derive(Default)]
pub(super) struct Cache {
    /// Every pod with its requests (parsed once, when the pod arrives or changes).
    pods: HashMap<String, (Arc<Pod>, Requests)>,
    /// Each node without pods, by store key: snapshot nodes start from clones of these.
    nodes: HashMap<String, NodeInfo>,
    /// Pods this scheduler bound whose binding the watch has not delivered yet, and their node
    /// (Kubernetes' "assumed" pods): counted on that node, so the next pass does not place
    /// another pod into room that is already taken.
    assumed: HashMap<String, String>,
    /// The node each bound or assumed, non-terminal pod counts on (by node name), and the
    /// reverse.
    placed: HashMap<String, String>,
    on_node: HashMap<String, BTreeSet<String>>,
    /// Pods waiting for a node: neither bound nor assumed.
    waiting: HashSet<String>,
    /// The snapshot as of the last pass (`None`: rebuild it whole), and the nodes (by name)
    /// whose pods or object changed since.
    snapshot: Option<Snapshot>,
    dirty: HashSet<String>,
}

impl Cache {
    /// Reads every pod and node, and opens the watch that keeps them current. Events between the
    /// revision noted first and the read are applied again afterwards, in order, so the cache
    /// converges on the store whatever the read saw.
    pub(super) async fn load(objects: &Objects) -> Result<(Self, EventStream), ApiError> {
        let store = objects.store().clone();
        let revision = store.revision();
        let changes: EventStream = Box::pin(futures::stream::select(
            store.watch(&kind("pods").key_prefix(), revision),
            store.watch(&kind("nodes").key_prefix(), revision),
        ));
        // Straight from the stored bytes into the typed objects: the one full read of a large
        // cluster is on the path to the first binding.
        let list = |resource: &'static str| {
            let store = store.clone();
            async move {
                let request = RangeRequest { prefix: kind(resource).key_prefix(), ..RangeRequest::default() };
                Ok::<_, ApiError>(store.range(request).await?.items)
            }
        };
        let pods = decode_all(list("pods").await?, |kv| {
            let pod = decode_stored::<Pod>(&kv.value, kv.mod_revision)?;
            Some((kv.key, Requests::of(&pod), Arc::new(pod)))
        })
        .await;
        let nodes = decode_all(list("nodes").await?, |kv| {
            Some((kv.key, NodeInfo::new(decode_stored::<Node>(&kv.value, kv.mod_revision)?)))
        })
        .await;
        let mut cache = Self { nodes: nodes.into_iter().collect(), ..Self::default() };
        for (key, requests, pod) in pods {
            cache.pods.insert(key.clone(), (pod, requests));
            cache.place(&key);
        }
        Ok((cache, changes))
    }

    /// Applies one store event; true when it can change a scheduling decision.
    pub(super) fn apply(&mut self, event: &Event) -> bool {
        let is_pod = event.key.starts_with(&kind("pods").key_prefix());
        let worth_a_pass = !is_pod || crate::controller::beyond_status(event);
        match (is_pod, event.value.as_deref()) {
            // A status report of a bound pod matters only if the pod finished: its other fields
            // are as cached, and no decision reads the rest of a bound pod's status. (A waiting
            // pod is decoded again: the scheduler reads its PodScheduled condition.) Most pod
            // events of a busy cluster are these, so the pod is not decoded for them.
            (true, Some(bytes)) if !worth_a_pass && self.bound_and_still_as_terminal(&event.key, bytes) => {}
            (true, Some(bytes)) => {
                if let Some(pod) = decode_stored::<Pod>(bytes, event.revision) {
                    if !unscheduled(&pod) {
                        self.assumed.remove(&event.key);
                    }
                    let requests = Requests::of(&pod);
                    self.pods.insert(event.key.clone(), (Arc::new(pod), requests));
                    self.place(&event.key);
                }
            }
            (true, None) => {
                self.assumed.remove(&event.key);
                self.pods.remove(&event.key);
                self.place(&event.key);
            }
            (false, Some(bytes)) => {
                if let Some(node) = decode_stored::<Node>(bytes, event.revision) {
                    let info = NodeInfo::new(node);
                    let name = info.name().to_string();
                    match self.nodes.insert(event.key.clone(), info) {
                        // The same node changed: rebuild it alone.
                        Some(before) if before.name() == name => {
                            self.dirty.insert(name);
                        }
                        // A new node (or, defensively, one whose name no longer matches its key).
                        _ => self.snapshot = None,
                    }
                }
            }
            (false, None) => {
                self.nodes.remove(&event.key);
                self.snapshot = None;
            }
        }
        worth_a_pass
    }

    /// Whether the cached pod `key` is bound and the stored version `bytes` is as finished
    /// (or not) as it.
    fn bound_and_still_as_terminal(&self, key: &str, bytes: &[u8]) -> bool {
        let Some((cached, _)) = self.pods.get(key) else { return false };
        let bound = cached.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
        bound && stored_phase_is_terminal(bytes).is_some_and(|now| now == terminal(cached))
    }

    /// Counts `key` on `node` until its binding arrives (or fails: [`Cache::forget`]).
    pub(super) fn assume(&mut self, key: &str, node: &str) {
        self.assumed.insert(key.to_string(), node.to_string());
        self.place(key);
    }

    /// A binding failed: the pod waits again.
    pub(super) fn forget(&mut self, key: &str) {
        if self.assumed.remove(key).is_some() {
            self.place(key);
        }
    }

    /// The pods waiting for a node (neither bound nor assumed).
    pub(super) fn waiting(&self) -> Vec<PodInfo> {
        let pods = self.waiting.iter().filter_map(|key| self.pods.get(key));
        pods.map(|(pod, requests)| PodInfo::with_requests(pod.clone(), *requests)).collect()
    }

    /// Nodes (sorted by name) with their bound and assumed, non-terminal pods: the kept
    /// snapshot with the nodes changed since brought up to date. Give it back with
    /// [`Cache::keep`] after the pass.
    pub(super) fn snapshot(&mut self) -> Snapshot {
        let dirty = std::mem::take(&mut self.dirty);
        let Some(mut snapshot) = self.snapshot.take() else { return self.rebuild() };
        for name in dirty {
            let Some(index) = snapshot.index_of(&name) else { continue };
            match self.nodes.get(&kind("nodes").key(None, &name)) {
                Some(template) => snapshot.replace_node(index, self.node_info(template)),
                // Gone (its removal also dropped the kept snapshot; this is only a safeguard).
                None => return self.rebuild(),
            }
        }
        snapshot
    }

    /// Keeps `snapshot` for the next pass.
    pub(super) fn keep(&mut self, snapshot: Snapshot) {
        self.snapshot = Some(snapshot);
    }

    /// The whole snapshot from the nodes and the pods placed on them.
    fn rebuild(&self) -> Snapshot {
        let mut nodes: Vec<NodeInfo> = self.nodes.values().map(|template| self.node_info(template)).collect();
        nodes.sort_by(|a, b| a.name().cmp(b.name()));
        Snapshot::new(nodes)
    }

    /// A node's template (which holds no pods) with the pods placed on it.
    fn node_info(&self, template: &NodeInfo) -> NodeInfo {
        let mut info = template.clone();
        for key in self.on_node.get(template.name()).into_iter().flatten() {
            if let Some((pod, requests)) = self.pods.get(key) {
                info.add_pod_with(pod.clone(), *requests);
            }
        }
        info
    }

    /// Works out again where the pod `key` counts and whether it waits, marking the nodes it
    /// leaves or joins (or changes on) for the next snapshot.
    fn place(&mut self, key: &str) {
        let now = self.placement(key);
        let before = match &now {
            Some(node) => self.placed.insert(key.to_string(), node.clone()),
            None => self.placed.remove(key),
        };
        if let Some(node) = &before {
            if let Some(keys) = self.on_node.get_mut(node) {
                keys.remove(key);
            }
            self.dirty.insert(node.clone());
        }
        if let Some(node) = now {
            self.on_node.entry(node.clone()).or_default().insert(key.to_string());
            self.dirty.insert(node);
        }
        let waits = self.pods.get(key).is_some_and(|(pod, _)| unscheduled(pod)) && !self.assumed.contains_key(key);
        if waits {
            self.waiting.insert(key.to_string());
        } else {
            self.waiting.remove(key);
        }
    }

    /// The node the pod `key` counts on: its assumed node, else its bound one, unless it is
    /// finished (or gone).
    fn placement(&self, key: &str) -> Option<String> {
        let (pod, _) = self.pods.get(key)?;
        let assumed = self.assumed.get(key);
        if (unscheduled(pod) && assumed.is_none()) || terminal(pod) {
            return None;
        }
        let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_ref());
        assumed.or(bound).filter(|n| !n.is_empty()).cloned()
    }
}

/// Whether a stored pod's phase is Succeeded or Failed, read without building the pod (none if
/// the bytes are not a pod).
fn stored_phase_is_terminal(bytes: &[u8]) -> Option<bool> {
    #[derive(serde::Deserialize)]
    struct Stored {
        status: Option<Status>,
    }
    #[derive(serde::Deserialize)]
    struct Status {
        phase: Option<String>,
    }
    let stored: Stored = serde_json::from_slice(bytes).ok()?;
    let phase = stored.status.and_then(|s| s.phase);
    Some(matches!(phase.as_deref(), Some("Succeeded" | "Failed")))
}

/// `decode` applied to every item, on the blocking pool in one chunk per core: a large
/// cluster's full read is otherwise one core's work while the other waits.
async fn decode_all<T: Send + 'static>(items: Vec<KeyValue>, decode: fn(KeyValue) -> Option<T>) -> Vec<T> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = items.len().div_ceil(cores).max(1);
    let mut items = items.into_iter();
    let mut chunks = Vec::new();
    loop {
        let part: Vec<KeyValue> = items.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        chunks.push(tokio::task::spawn_blocking(move || part.into_iter().filter_map(decode).collect::<Vec<T>>()));
    }
    let mut decoded = Vec::new();
    // A chunk only fails to come back if the runtime is shutting down; then nothing is used.
    for part in futures::future::join_all(chunks).await.into_iter().flatten() {
        decoded.extend(part);
    }
    decoded
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::scheduler::plugins::testing::{NodeBuilder, PodBuilder};

    /// One thing that happens to the cache between passes.
    #[derive(Debug, Clone)]
    enum Step {
        /// Node `n` registers, or changes (a new label each time).
        PutNode(usize),
        DeleteNode(usize),
        /// Pod `p` arrives (or is recreated) waiting; `anti` gives it an anti-affinity term.
        CreatePod {
            p: usize,
            cpu: u32,
            anti: bool,
        },
        /// Pod `p`'s binding to node `n` arrives.
        BindPod(usize, usize),
        FinishPod(usize),
        /// Pod `p`'s agent reports its status (Running or Pending, with an IP): nothing else changes.
        ReportStatus(usize, bool),
        DeletePod(usize),
        /// A pass places pod `p` (if it waits) on node `n`, counting it in the kept snapshot.
        Assume(usize, usize),
        Forget(usize),
        /// A pass: take the snapshot and keep it.
        Pass,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..4usize).prop_map(Step::PutNode),
            (0..4usize).prop_map(Step::DeleteNode),
            (0..8usize, 1..500u32, any::<bool>()).prop_map(|(p, cpu, anti)| Step::CreatePod { p, cpu, anti }),
            (0..8usize, 0..4usize).prop_map(|(p, n)| Step::BindPod(p, n)),
            (0..8usize).prop_map(Step::FinishPod),
            (0..8usize, any::<bool>()).prop_map(|(p, running)| Step::ReportStatus(p, running)),
            (0..8usize).prop_map(Step::DeletePod),
            (0..8usize, 0..4usize).prop_map(|(p, n)| Step::Assume(p, n)),
            (0..8usize).prop_map(Step::Forget),
            Just(Step::Pass),
        ]
    }

    fn pod_key(p: usize) -> String {
        kind("pods").key(Some("default"), &format!("p{p}"))
    }

    /// The store the cache watches, as far as its events go: the latest bytes of each key, so
    /// each event carries the version it replaces, as the store's do.
    #[derive(Default)]
    struct Store(BTreeMap<String, Vec<u8>>);

    impl Store {
        fn put(&mut self, key: String, revision: u64, object: &impl serde::Serialize) -> Event {
            let value = serde_json::to_vec(object).expect("serializes");
            let prev = self.0.insert(key.clone(), value.clone());
            let prev = prev.map(|value| KeyValue { key: key.clone(), value, mod_revision: revision - 1 });
            Event { revision, key, value: Some(value), prev }
        }

        fn delete(&mut self, key: String, revision: u64) -> Event {
            let prev =
                self.0.remove(&key).map(|value| KeyValue { key: key.clone(), value, mod_revision: revision - 1 });
            Event { revision, key, value: None, prev }
        }

        /// A cache that read everything stored afresh, with the same pods assumed as `other`.
        fn fresh_cache(&self, other: &Cache) -> Cache {
            let mut cache = Cache::default();
            for (key, value) in &self.0 {
                cache.apply(&Event { revision: 1, key: key.clone(), value: Some(value.clone()), prev: None });
            }
            for (key, node) in &other.assumed {
                cache.assume(key, node);
            }
            cache
        }
    }

    /// One node as a snapshot has it: name, its `rev` label, its pods, what they request
    /// (cpu, memory, count), and those of them with affinity terms.
    type NodeSummary = (String, Option<String>, Vec<String>, (u64, u64, u64), Vec<String>);

    /// What a snapshot says, in a form two snapshots can be compared by.
    fn summary(s: &Snapshot) -> Vec<NodeSummary> {
        s.nodes
            .iter()
            .map(|n| {
                let mut pods: Vec<String> = n.pods.iter().filter_map(|p| p.metadata.name.clone()).collect();
                pods.sort();
                let mut with_terms: Vec<String> = s
                    .pods_with_affinity()
                    .filter(|(on, _)| on.name() == n.name())
                    .filter_map(|(_, p)| p.metadata.name.clone())
                    .collect();
                with_terms.sort();
                let r = n.requested;
                (
                    n.name().to_string(),
                    n.labels().get("rev").cloned(),
                    pods,
                    (r.milli_cpu, r.memory, r.pods),
                    with_terms,
                )
            })
            .collect()
    }

    proptest! {
        /// Whatever happens between passes, the kept snapshot brought up to date equals one
        /// built from scratch, and the waiting pods are exactly the unbound, unassumed ones.
        #[test]
        fn the_kept_snapshot_always_equals_a_rebuilt_one(steps in prop::collection::vec(step(), 1..60)) {
            let mut cache = Cache::default();
            let mut store = Store::default();
            let mut pods: HashMap<usize, Pod> = HashMap::new();
            for (revision, step) in (1u64..).zip(steps) {
                match step {
                    Step::PutNode(n) => {
                        let node = NodeBuilder::new(&format!("n{n}")).label("rev", &revision.to_string()).build();
                        cache.apply(&store.put(kind("nodes").key(None, &format!("n{n}")), revision, &node));
                    }
                    Step::DeleteNode(n) => {
                        cache.apply(&store.delete(kind("nodes").key(None, &format!("n{n}")), revision));
                    }
                    Step::CreatePod { p, cpu, anti } => {
                        let mut pod = PodBuilder::new(&format!("p{p}")).namespace("default").request("cpu", &format!("{cpu}m"));
                        if anti {
                            pod = pod.affinity(json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                                {"labelSelector": {"matchLabels": {"app": "x"}}, "topologyKey": "kubernetes.io/hostname"}]}}));
                        }
                        let pod = pod.build();
                        cache.apply(&store.put(pod_key(p), revision, &pod));
                        pods.insert(p, pod);
                    }
                    Step::BindPod(p, n) => {
                        if let Some(pod) = pods.get_mut(&p) {
                            pod.spec.as_mut().expect("a spec").node_name = Some(format!("n{n}"));
                            cache.apply(&store.put(pod_key(p), revision, &*pod));
                        }
                    }
                    Step::FinishPod(p) => {
                        if let Some(pod) = pods.get_mut(&p) {
                            pod.status.get_or_insert_with(Default::default).phase = Some("Succeeded".into());
                            cache.apply(&store.put(pod_key(p), revision, &*pod));
                        }
                    }
                    Step::ReportStatus(p, running) => {
                        if let Some(pod) = pods.get_mut(&p) {
                            let status = pod.status.get_or_insert_with(Default::default);
                            if status.phase.as_deref() != Some("Succeeded") {
                                status.phase = Some(if running { "Running" } else { "Pending" }.into());
                            }
                            status.pod_ip = Some(format!("10.1.0.{revision}"));
                            cache.apply(&store.put(pod_key(p), revision, &*pod));
                        }
                    }
                    Step::DeletePod(p) => {
                        pods.remove(&p);
                        cache.apply(&store.delete(pod_key(p), revision));
                    }
                    Step::Assume(p, n) => {
                        let waiting = cache.waiting();
                        if let Some(pod) = waiting.iter().find(|w| w.metadata.name.as_deref() == Some(&format!("p{p}"))) {
                            let mut snapshot = cache.snapshot();
                            let node = format!("n{n}");
                            snapshot.add_pod(&node, pod);
                            cache.assume(&pod_key(p), &node);
                            cache.keep(snapshot);
                        }
                    }
                    Step::Forget(p) => cache.forget(&pod_key(p)),
                    Step::Pass => {
                        let snapshot = cache.snapshot();
                        prop_assert_eq!(summary(&snapshot), summary(&cache.rebuild()));
                        cache.keep(snapshot);
                    }
                }
                let mut waiting: Vec<String> = cache.waiting().iter().filter_map(|p| p.metadata.name.clone()).collect();
                waiting.sort();
                let mut expected: Vec<String> = cache
                    .pods
                    .iter()
                    .filter(|(key, (pod, _))| unscheduled(pod) && !cache.assumed.contains_key(*key))
                    .filter_map(|(_, (pod, _))| pod.metadata.name.clone())
                    .collect();
                expected.sort();
                prop_assert_eq!(waiting, expected);
            }
            let snapshot = cache.snapshot();
            prop_assert_eq!(summary(&snapshot), summary(&cache.rebuild()));
            // And what the cache kept (it skips some status reports) decides as a fresh read would.
            let fresh = store.fresh_cache(&cache);
            prop_assert_eq!(summary(&snapshot), summary(&fresh.rebuild()));
            let names = |c: &Cache| {
                let mut w: Vec<String> = c.waiting().iter().filter_map(|p| p.metadata.name.clone()).collect();
                w.sort();
                w
            };
            prop_assert_eq!(names(&cache), names(&fresh));
        }
    }
}
