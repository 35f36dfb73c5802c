//! Builders for scheduler tests: nodes, pods and snapshots from a few chained calls, so a table
//! case reads as the cluster it describes. JSON underneath, because that is how the objects
//! arrive from the API and it keeps each builder method one line.

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};

use crate::scheduler::framework::{FilterPlugin, Fit, MAX_SCORE, NodeInfo, PodInfo, ScorePlugin, Snapshot};

/// A node with `cpu`/`memory` allocatable and room for 110 pods.
pub(crate) fn node(name: &str, cpu: &str, memory: &str) -> Node {
    NodeBuilder::new(name).allocatable(cpu, memory, 110).build()
}

/// A pod in `default` with one container requesting `cpu` and `memory` (either may be absent).
pub(crate) fn pod(cpu: Option<&str>, memory: Option<&str>) -> Pod {
    let mut builder = PodBuilder::new("p");
    if let Some(cpu) = cpu {
        builder = builder.request("cpu", cpu);
    }
    if let Some(memory) = memory {
        builder = builder.request("memory", memory);
    }
    builder.build()
}

/// Appends `item` to the list at `slot`, creating the list.
fn push(slot: &mut Value, item: Value) {
    if !slot.is_array() {
        *slot = json!([]);
    }
    if let Some(list) = slot.as_array_mut() {
        list.push(item);
    }
}

pub(crate) struct NodeBuilder(Value);

impl NodeBuilder {
    /// 4 CPUs, 8Gi, 110 pods, no labels, taints or conditions.
    pub(crate) fn new(name: &str) -> Self {
        Self(json!({"metadata": {"name": name},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}))
    }

    pub(crate) fn allocatable(mut self, cpu: &str, memory: &str, pods: u32) -> Self {
        self.0["status"]["allocatable"] = json!({"cpu": cpu, "memory": memory, "pods": pods.to_string()});
        self
    }

    pub(crate) fn label(mut self, key: &str, value: &str) -> Self {
        self.0["metadata"]["labels"][key] = json!(value);
        self
    }

    /// `effect` is NoSchedule, PreferNoSchedule or NoExecute; an empty `value` is left out.
    pub(crate) fn taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        let mut taint = json!({"key": key, "effect": effect});
        if !value.is_empty() {
            taint["value"] = json!(value);
        }
        push(&mut self.0["spec"]["taints"], taint);
        self
    }

    pub(crate) fn unschedulable(mut self) -> Self {
        self.0["spec"]["unschedulable"] = json!(true);
        self
    }

    /// The Ready condition's status: "True", "False" or "Unknown".
    pub(crate) fn ready(mut self, status: &str) -> Self {
        push(&mut self.0["status"]["conditions"], json!({"type": "Ready", "status": status}));
        self
    }

    pub(crate) fn build(self) -> Node {
        serde_json::from_value(self.0).expect("test nodes are valid")
    }
}

pub(crate) struct PodBuilder(Value);

impl PodBuilder {
    /// A pod in `default` with one container `c` and no requests.
    pub(crate) fn new(name: &str) -> Self {
        Self(json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}))
    }

    pub(crate) fn namespace(mut self, namespace: &str) -> Self {
        self.0["metadata"]["namespace"] = json!(namespace);
        self
    }

    pub(crate) fn label(mut self, key: &str, value: &str) -> Self {
        self.0["metadata"]["labels"][key] = json!(value);
        self
    }

    /// A request of the first container ("cpu" or "memory").
    pub(crate) fn request(mut self, resource: &str, quantity: &str) -> Self {
        self.0["spec"]["containers"][0]["resources"]["requests"][resource] = json!(quantity);
        self
    }

    /// A `hostPort` on the first container; empty `protocol`/`host_ip` are left out.
    pub(crate) fn host_port(mut self, port: i32, protocol: &str, host_ip: &str) -> Self {
        let mut entry = json!({"containerPort": port, "hostPort": port});
        if !protocol.is_empty() {
            entry["protocol"] = json!(protocol);
        }
        if !host_ip.is_empty() {
            entry["hostIP"] = json!(host_ip);
        }
        push(&mut self.0["spec"]["containers"][0]["ports"], entry);
        self
    }

    /// A toleration as JSON, e.g. `{"key": "k", "operator": "Exists"}`.
    pub(crate) fn toleration(mut self, toleration: Value) -> Self {
        push(&mut self.0["spec"]["tolerations"], toleration);
        self
    }

    pub(crate) fn node_selector(mut self, key: &str, value: &str) -> Self {
        self.0["spec"]["nodeSelector"][key] = json!(value);
        self
    }

    /// Sets the kinds of `spec.affinity` given as JSON (`nodeAffinity`, `podAffinity`,
    /// `podAntiAffinity`), keeping the others.
    pub(crate) fn affinity(mut self, affinity: Value) -> Self {
        if let Value::Object(kinds) = affinity {
            for (kind, value) in kinds {
                self.0["spec"]["affinity"][kind.as_str()] = value;
            }
        }
        self
    }

    /// One `topologySpreadConstraints` entry as JSON.
    pub(crate) fn spread(mut self, constraint: Value) -> Self {
        push(&mut self.0["spec"]["topologySpreadConstraints"], constraint);
        self
    }

    /// A controller owner reference to a ReplicaSet with this uid.
    pub(crate) fn owner(mut self, uid: &str) -> Self {
        let owner = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": uid, "uid": uid, "controller": true});
        push(&mut self.0["metadata"]["ownerReferences"], owner);
        self
    }

    pub(crate) fn node_name(mut self, node: &str) -> Self {
        self.0["spec"]["nodeName"] = json!(node);
        self
    }

    pub(crate) fn terminating(mut self) -> Self {
        self.0["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        self
    }

    pub(crate) fn build(self) -> Pod {
        serde_json::from_value(self.0).expect("test pods are valid")
    }
}

/// Nodes (in this order) with the pods bound to them.
pub(crate) fn snapshot(nodes: Vec<(Node, Vec<Pod>)>) -> Snapshot {
    let nodes = nodes
        .into_iter()
        .map(|(node, pods)| {
            let mut info = NodeInfo::new(node);
            for pod in pods {
                info.add_pod(pod);
            }
            info
        })
        .collect();
    Snapshot::new(nodes)
}

/// `plugin`'s verdict for `pod` on the node named `node`.
pub(crate) fn filter(plugin: &dyn FilterPlugin, pod: &Pod, snapshot: &Snapshot, node: &str) -> Fit {
    let info = snapshot.node(node).unwrap_or_else(|| panic!("no node {node} in the test snapshot"));
    plugin.filter(&PodInfo::new(pod.clone()), info, snapshot)
}

/// `plugin`'s normalized scores for `pod` on every node of `snapshot`, in order.
pub(crate) fn scores(plugin: &dyn ScorePlugin, pod: &Pod, snapshot: &Snapshot) -> Vec<i64> {
    let nodes: Vec<&NodeInfo> = snapshot.nodes.iter().collect();
    let pod = &PodInfo::new(pod.clone());
    let mut scores = plugin.score_all(pod, &nodes, snapshot);
    let one_by_one: Vec<i64> = nodes.iter().map(|n| plugin.score(pod, n, snapshot)).collect();
    assert_eq!(scores, one_by_one, "{}: scoring all nodes at once differs from one at a time", plugin.name());
    plugin.normalize(&mut scores);
    assert!(
        scores.iter().all(|s| (0..=MAX_SCORE).contains(s)),
        "{} normalized out of range: {scores:?}",
        plugin.name()
    );
    scores
}
