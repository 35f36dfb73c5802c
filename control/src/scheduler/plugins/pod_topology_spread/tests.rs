use serde_json::{Value, json};

use super::*;
use crate::scheduler::framework::{PodInfo, schedule};
use crate::scheduler::plugins::testing::{NodeBuilder, PodBuilder, filter, scores, snapshot};
use crate::scheduler::plugins::{default_filters, default_scores};

fn web(name: &str) -> Pod {
    PodBuilder::new(name).label("app", "web").build()
}

fn webs(n: usize) -> Vec<Pod> {
    (0..n).map(|i| web(&format!("web-{i}"))).collect()
}

fn zoned(name: &str, zone: &str) -> NodeBuilder {
    NodeBuilder::new(name).label(ZONE, zone)
}

fn constraint(when: &str, key: &str, max_skew: i32) -> Value {
    json!({"maxSkew": max_skew, "topologyKey": key, "whenUnsatisfiable": when,
           "labelSelector": {"matchLabels": {"app": "web"}}})
}

fn spread_web(constraint: Value) -> PodBuilder {
    PodBuilder::new("p").label("app", "web").spread(constraint)
}

const SKEWED: &str = "node(s) didn't match pod topology spread constraints";

#[test]
fn do_not_schedule_keeps_the_skew_within_max_skew() {
    let no = Fit::no(SKEWED);
    let with = |c: Value, key: &str, value: Value| {
        let mut c = c;
        c[key] = value;
        c
    };
    let zone = || constraint(DO_NOT_SCHEDULE, ZONE, 1);
    // (pod, placed web pods on a1/a2/b1, fit on a1, b1)
    for (i, (pod, placed, expected)) in [
        (spread_web(zone()), [0, 0, 0], [Fit::Fits, Fit::Fits]),
        (spread_web(zone()), [2, 0, 0], [no.clone(), Fit::Fits]),
        (spread_web(zone()), [1, 0, 1], [Fit::Fits, Fit::Fits]),
        (spread_web(constraint(DO_NOT_SCHEDULE, ZONE, 2)), [1, 0, 0], [Fit::Fits, Fit::Fits]),
        // A pod the selector does not match adds nothing to its domain.
        (PodBuilder::new("p").label("app", "api").spread(zone()), [1, 0, 0], [Fit::Fits, Fit::Fits]),
        // ScheduleAnyway never filters.
        (spread_web(constraint(SCHEDULE_ANYWAY, ZONE, 1)), [5, 0, 0], [Fit::Fits, Fit::Fits]),
        // Fewer domains than minDomains: the global minimum is 0.
        (spread_web(with(zone(), "minDomains", json!(3))), [1, 0, 1], [no.clone(), no.clone()]),
        (spread_web(with(zone(), "minDomains", json!(2))), [1, 0, 1], [Fit::Fits, Fit::Fits]),
        // Only nodes the pod may run on count (nodeAffinityPolicy Honor by default)...
        (spread_web(zone()).node_selector("disk", "ssd"), [0, 0, 1], [Fit::Fits, Fit::Fits]),
        (
            spread_web(with(zone(), "nodeAffinityPolicy", json!("Ignore"))).node_selector("disk", "ssd"),
            [0, 0, 1],
            [Fit::Fits, no.clone()],
        ),
        (spread_web(zone()), [0, 0, 1], [Fit::Fits, no.clone()]),
    ]
    .into_iter()
    .enumerate()
    {
        let snapshot = snapshot(vec![
            (zoned("a1", "a").build(), webs(placed[0])),
            (zoned("a2", "a").build(), webs(placed[1])),
            (zoned("b1", "b").label("disk", "ssd").build(), webs(placed[2])),
        ]);
        let pod = pod.build();
        let got =
            [filter(&PodTopologySpread, &pod, &snapshot, "a1"), filter(&PodTopologySpread, &pod, &snapshot, "b1")];
        assert_eq!(got, expected, "case {i}");
    }
}

#[test]
fn tainted_domains_count_only_when_taints_are_honored() {
    let snapshot = snapshot(vec![
        (zoned("a1", "a").build(), webs(1)),
        (zoned("t1", "t").taint("dedicated", "x", "NoSchedule").build(), vec![]),
    ]);
    let honoring = || {
        let mut c = constraint(DO_NOT_SCHEDULE, ZONE, 1);
        c["nodeTaintsPolicy"] = json!("Honor");
        spread_web(c)
    };
    let tolerating = honoring().toleration(json!({"key": "dedicated", "operator": "Exists"}));
    // (pod, fits a1): the empty zone t drags the minimum to 0 only when it counts.
    for (i, (pod, expected)) in [
        (spread_web(constraint(DO_NOT_SCHEDULE, ZONE, 1)), Fit::no(SKEWED)),
        (honoring(), Fit::Fits),
        (tolerating, Fit::no(SKEWED)),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(filter(&PodTopologySpread, &pod.build(), &snapshot, "a1"), expected, "case {i}");
    }
}

#[test]
fn nodes_without_the_topology_key_are_unresolvable() {
    let snapshot = snapshot(vec![(zoned("a1", "a").build(), vec![]), (NodeBuilder::new("bare").build(), vec![])]);
    let pod = spread_web(constraint(DO_NOT_SCHEDULE, ZONE, 1)).build();
    assert_eq!(filter(&PodTopologySpread, &pod, &snapshot, "a1"), Fit::Fits);
    assert_eq!(
        filter(&PodTopologySpread, &pod, &snapshot, "bare"),
        Fit::never(format!("{SKEWED} (missing required label)"))
    );
}

#[test]
fn only_live_pods_of_the_same_namespace_and_revision_count() {
    let terminating = PodBuilder::new("old").label("app", "web").terminating().build();
    let elsewhere = PodBuilder::new("other").label("app", "web").namespace("other").build();
    let old_revision = PodBuilder::new("rev1").label("app", "web").label("pod-template-hash", "1").build();
    let mut keyed = constraint(DO_NOT_SCHEDULE, ZONE, 1);
    keyed["matchLabelKeys"] = json!(["pod-template-hash"]);
    let everything =
        json!({"maxSkew": 1, "topologyKey": ZONE, "whenUnsatisfiable": DO_NOT_SCHEDULE, "labelSelector": {}});
    // (placed on a1, pod, fits a1)
    for (i, (placed, pod, expected)) in [
        (vec![web("w1"), web("w2")], spread_web(constraint(DO_NOT_SCHEDULE, ZONE, 1)), Fit::no(SKEWED)),
        (vec![terminating.clone(), terminating], spread_web(constraint(DO_NOT_SCHEDULE, ZONE, 1)), Fit::Fits),
        (vec![elsewhere.clone(), elsewhere], spread_web(constraint(DO_NOT_SCHEDULE, ZONE, 1)), Fit::Fits),
        (
            vec![old_revision.clone(), old_revision.clone()],
            spread_web(keyed.clone()).label("pod-template-hash", "2"),
            Fit::Fits,
        ),
        (vec![old_revision.clone(), old_revision], spread_web(keyed).label("pod-template-hash", "1"), Fit::no(SKEWED)),
        // Kubernetes counts no pods for an empty selector.
        (vec![web("w1"), web("w2")], spread_web(everything), Fit::Fits),
    ]
    .into_iter()
    .enumerate()
    {
        let snapshot = snapshot(vec![(zoned("a1", "a").build(), placed), (zoned("b1", "b").build(), vec![])]);
        assert_eq!(filter(&PodTopologySpread, &pod.build(), &snapshot, "a1"), expected, "case {i}");
    }
}

#[test]
fn schedule_anyway_scores_emptier_domains_higher_and_nodes_missing_keys_lowest() {
    let snapshot = snapshot(vec![
        (zoned("a1", "a").build(), webs(2)),
        (zoned("a2", "a").build(), vec![]),
        (zoned("b1", "b").build(), webs(1)),
        (NodeBuilder::new("bare").build(), vec![]),
    ]);
    // Zone a: 2 pods × ln(2 zones + 2) ≈ 2.8 → 3; zone b: 1.4 → 1; bare lacks the key.
    let pod = spread_web(constraint(SCHEDULE_ANYWAY, ZONE, 1)).build();
    assert_eq!(scores(&PodTopologySpread, &pod, &snapshot), vec![33, 33, 100, 0]);
    // Only DoNotSchedule constraints: nothing to score, and no default spreading either.
    let pod = spread_web(constraint(DO_NOT_SCHEDULE, ZONE, 1)).owner("rs-1").build();
    assert_eq!(scores(&PodTopologySpread, &pod, &snapshot), vec![100, 100, 100, 100]);
}

#[test]
fn default_spreading_counts_pods_of_the_same_controller_per_node() {
    let replica = |name: &str, owner: &str| PodBuilder::new(name).owner(owner).build();
    let snapshot = snapshot(vec![
        (NodeBuilder::new("n1").build(), vec![replica("a", "rs-1"), replica("b", "rs-1")]),
        (NodeBuilder::new("n2").build(), vec![replica("c", "rs-1"), replica("d", "rs-2")]),
        (NodeBuilder::new("n3").build(), vec![replica("e", "rs-2")]),
    ]);
    // n1: 2 × ln(3 + 2) + 2 ≈ 5.2 → 5, n2: 3.6 → 4, n3: 2 (maxSkew 3 - 1).
    assert_eq!(scores(&PodTopologySpread, &replica("new", "rs-1"), &snapshot), vec![40, 60, 100]);
    assert_eq!(scores(&PodTopologySpread, &PodBuilder::new("bare").build(), &snapshot), vec![100, 100, 100]);
}

#[test]
fn replicas_of_a_replica_set_land_on_different_nodes() {
    let (filters, scorers) = (default_filters(), default_scores());
    for nodes in 2..=4 {
        let mut snapshot = snapshot((0..nodes).map(|i| (NodeBuilder::new(&format!("n{i}")).build(), vec![])).collect());
        let mut placed = BTreeSet::new();
        for r in 0..nodes {
            let replica = PodBuilder::new(&format!("web-{r}")).label("app", "web").owner("rs-1").build();
            let node = schedule(&replica, &snapshot, &filters, &scorers).expect("room for every replica");
            assert!(placed.insert(node.clone()), "replica {r} of {nodes} joined another on {node}");
            snapshot.add_pod(&node, &PodInfo::new(replica));
        }
    }
}
