//! Properties of [`schedule`] with the default plugins over random small clusters: nodes with
//! random capacity, zones, taints, cordons and readiness, bound pods with random requests, host
//! ports and anti-affinity, and an incoming pod with random requests, selectors, tolerations,
//! affinity and spread constraints.

use k8s_openapi::api::core::v1::Pod;
use proptest::prelude::*;
use serde_json::json;

use super::testing::{NodeBuilder, PodBuilder, snapshot};
use super::{default_filters, default_scores};
use crate::scheduler::framework::{Fit, MAX_SCORE, NodeInfo, PodInfo, Snapshot, schedule};

#[derive(Debug, Clone)]
struct PodShape {
    cpu: usize,
    memory: usize,
    app: usize,
    host_port: bool,
    anti_web: bool,
    owned: bool,
    terminating: bool,
}

#[derive(Debug, Clone)]
struct NodeShape {
    cpu: usize,
    memory: usize,
    pods: u32,
    zone: Option<usize>,
    ssd: bool,
    taint: usize,
    cordoned: bool,
    ready: usize,
    bound: Vec<PodShape>,
}

#[derive(Debug, Clone)]
struct Incoming {
    shape: PodShape,
    wants_ssd: bool,
    prefers_ssd: bool,
    toleration: usize,
    affinity_db: bool,
    spread: usize,
    pinned: bool,
}

const APPS: [Option<&str>; 3] = [Some("web"), Some("db"), None];

fn pod_shape() -> impl Strategy<Value = PodShape> {
    (
        0..4usize,
        0..3usize,
        0..3usize,
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.2),
        any::<bool>(),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(cpu, memory, app, host_port, anti_web, owned, terminating)| PodShape {
            cpu,
            memory,
            app,
            host_port,
            anti_web,
            owned,
            terminating,
        })
}

fn node_shape() -> impl Strategy<Value = NodeShape> {
    (
        (0..4usize, 0..3usize, 1..8u32, prop::option::weighted(0.85, 0..2usize), any::<bool>()),
        (0..10usize, prop::bool::weighted(0.1), 0..10usize, prop::collection::vec(pod_shape(), 0..4)),
    )
        .prop_map(|((cpu, memory, pods, zone, ssd), (taint, cordoned, ready, bound))| NodeShape {
            cpu,
            memory,
            pods,
            zone,
            ssd,
            taint,
            cordoned,
            ready,
            bound,
        })
}

fn incoming() -> impl Strategy<Value = Incoming> {
    let options = (prop::bool::weighted(0.2), any::<bool>(), 0..4usize, prop::bool::weighted(0.2), 0..3usize);
    (pod_shape(), options, prop::bool::weighted(0.15)).prop_map(
        |(shape, (wants_ssd, prefers_ssd, toleration, affinity_db, spread), pinned)| Incoming {
            shape,
            wants_ssd,
            prefers_ssd,
            toleration,
            affinity_db,
            spread,
            pinned,
        },
    )
}

fn build_pod(name: &str, shape: &PodShape) -> PodBuilder {
    let mut pod = PodBuilder::new(name);
    if let Some(cpu) = [None, Some("100m"), Some("500m"), Some("1")][shape.cpu] {
        pod = pod.request("cpu", cpu);
    }
    if let Some(memory) = [None, Some("128Mi"), Some("1Gi")][shape.memory] {
        pod = pod.request("memory", memory);
    }
    if let Some(app) = APPS[shape.app] {
        pod = pod.label("app", app);
    }
    if shape.host_port {
        pod = pod.host_port(80, "TCP", "");
    }
    if shape.anti_web {
        pod = pod.affinity(json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}));
    }
    if shape.owned {
        pod = pod.owner("rs-1");
    }
    if shape.terminating {
        pod = pod.terminating();
    }
    pod
}

fn build_cluster(nodes: &[NodeShape]) -> Snapshot {
    let built = nodes.iter().enumerate().map(|(i, shape)| {
        let name = format!("n{i}");
        let mut node = NodeBuilder::new(&name)
            .allocatable(["500m", "1", "2", "4"][shape.cpu], ["512Mi", "1Gi", "4Gi"][shape.memory], shape.pods)
            .label("kubernetes.io/hostname", &name);
        if let Some(zone) = shape.zone {
            node = node.label("topology.kubernetes.io/zone", ["a", "b"][zone]);
        }
        if shape.ssd {
            node = node.label("disk", "ssd");
        }
        node = match shape.taint {
            1 => node.taint("dedicated", "gpu", "NoSchedule"),
            2 => node.taint("spot", "true", "PreferNoSchedule"),
            3 => node.taint("maintenance", "", "NoExecute"),
            _ => node,
        };
        if shape.cordoned {
            node = node.unschedulable();
        }
        // Mostly ready; sometimes not, unreachable, or not reported yet.
        node = match shape.ready {
            7 => node.ready("False"),
            8 => node.ready("Unknown"),
            9 => node,
            _ => node.ready("True"),
        };
        let bound =
            shape.bound.iter().enumerate().map(|(j, p)| build_pod(&format!("b{i}-{j}"), p).node_name(&name).build());
        (node.build(), bound.collect())
    });
    snapshot(built.collect())
}

fn build_incoming(incoming: &Incoming) -> Pod {
    let mut pod = build_pod("incoming", &incoming.shape);
    if incoming.wants_ssd {
        pod = pod.node_selector("disk", "ssd");
    }
    let tolerations = [
        None,
        Some(json!({"key": "dedicated", "operator": "Equal", "value": "gpu"})),
        Some(json!({"operator": "Exists"})),
        Some(json!({"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"})),
    ];
    if let Some(toleration) = tolerations[incoming.toleration].clone() {
        pod = pod.toleration(toleration);
    }
    let mut affinity = json!({});
    if incoming.affinity_db {
        affinity["podAffinity"] = json!({"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "topology.kubernetes.io/zone"}]});
    }
    if incoming.pinned {
        affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n0"]}]}]});
    }
    if incoming.prefers_ssd {
        affinity["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] = json!([
            {"weight": 10, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]);
    }
    // Added to any anti-affinity the shape set.
    pod = pod.affinity(affinity);
    let spread = |when: &str, key: &str| json!({"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": when, "labelSelector": {"matchLabels": {"app": "web"}}});
    pod = match incoming.spread {
        1 => pod.spread(spread("DoNotSchedule", "topology.kubernetes.io/zone")),
        2 => pod.spread(spread("ScheduleAnyway", "kubernetes.io/hostname")),
        _ => pod,
    };
    pod.build()
}

/// The first reason a default filter gives for `node`, if any rejects it.
fn rejection(pod: &Pod, node: &NodeInfo, snapshot: &Snapshot) -> Option<String> {
    let pod = &PodInfo::new(pod.clone());
    default_filters().iter().find_map(|f| match f.filter(pod, node, snapshot) {
        Fit::Fits => None,
        Fit::No { reason, .. } => Some(reason),
    })
}

/// The per-reason counts of "0/N nodes are available: 2 A, 1 B." summed.
fn counted_nodes(message: &str, total: usize) -> usize {
    if total == 0 {
        assert!(message.starts_with("0/0 nodes are available"), "{message}");
        return 0;
    }
    let prefix = format!("0/{total} nodes are available: ");
    let body = message.strip_prefix(&prefix).and_then(|m| m.strip_suffix('.')).unwrap_or_else(|| panic!("{message}"));
    body.split(", ").map(|part| part.split(' ').next().and_then(|n| n.parse::<usize>().ok()).expect("a count")).sum()
}

proptest! {
    // Cheap (well under a second): more cases reach the rarer reasons.
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn schedule_never_picks_a_rejected_node_and_explains_every_rejection(
        nodes in prop::collection::vec(node_shape(), 0..6),
        incoming in incoming(),
    ) {
        let snapshot = build_cluster(&nodes);
        let pod = build_incoming(&incoming);
        let rejections: Vec<Option<String>> = snapshot.nodes.iter().map(|n| rejection(&pod, n, &snapshot)).collect();
        match schedule(&pod, &snapshot, &default_filters(), &default_scores()) {
            Ok(chosen) => {
                let index = snapshot.nodes.iter().position(|n| n.name() == chosen).expect("a node of the snapshot");
                prop_assert_eq!(&rejections[index], &None, "picked {} which a filter rejects", chosen);
            }
            Err(unschedulable) => {
                prop_assert!(rejections.iter().all(Option::is_some), "a feasible node was passed over: {:?}", rejections);
                prop_assert_eq!(counted_nodes(&unschedulable.message, snapshot.nodes.len()), snapshot.nodes.len());
                for reason in rejections.iter().flatten() {
                    prop_assert!(unschedulable.message.contains(reason.as_str()), "{} lacks {}", unschedulable.message, reason);
                }
            }
        }
    }

    #[test]
    fn normalized_scores_stay_within_range(nodes in prop::collection::vec(node_shape(), 1..6), incoming in incoming()) {
        let snapshot = build_cluster(&nodes);
        let pod = build_incoming(&incoming);
        let feasible: Vec<&NodeInfo> = snapshot.nodes.iter().filter(|n| rejection(&pod, n, &snapshot).is_none()).collect();
        for plugin in default_scores() {
            let pod = PodInfo::new(pod.clone());
            let mut scores: Vec<i64> = feasible.iter().map(|n| plugin.score(&pod, n, &snapshot)).collect();
            plugin.normalize(&mut scores);
            prop_assert!(scores.iter().all(|s| (0..=MAX_SCORE).contains(s)), "{}: {:?}", plugin.name(), scores);
        }
    }

    /// A plugin may skip a pod (PreFilter / PreScore `Skip`) only when running it could not
    /// change the outcome: a skipping filter lets the pod onto every node, a skipping score
    /// gives every feasible node the same normalized score.
    #[test]
    fn plugins_skip_only_pods_they_would_not_tell_apart(
        nodes in prop::collection::vec(node_shape(), 1..6),
        incoming in incoming(),
    ) {
        let snapshot = build_cluster(&nodes);
        let pod = PodInfo::new(build_incoming(&incoming));
        for filter in default_filters().iter().filter(|f| f.skips(&pod, &snapshot)) {
            for node in &snapshot.nodes {
                prop_assert_eq!(filter.filter(&pod, node, &snapshot), Fit::Fits, "{} skipped but rejects {}", filter.name(), node.name());
            }
        }
        let feasible: Vec<&NodeInfo> = snapshot.nodes.iter().filter(|n| rejection(&pod, n, &snapshot).is_none()).collect();
        for plugin in default_scores().iter().filter(|s| s.skips(&pod, &snapshot)) {
            let mut scores = plugin.score_all(&pod, &feasible, &snapshot);
            plugin.normalize(&mut scores);
            prop_assert!(scores.windows(2).all(|w| w[0] == w[1]), "{} skipped but scores {:?}", plugin.name(), scores);
        }
    }
}
