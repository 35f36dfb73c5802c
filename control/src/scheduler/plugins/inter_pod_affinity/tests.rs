use serde_json::{Value, json};

use super::*;
use crate::scheduler::plugins::testing::{NodeBuilder, PodBuilder, filter, scores, snapshot};

const ZONE: &str = "topology.kubernetes.io/zone";
const HOST: &str = "kubernetes.io/hostname";

/// a1 and a2 in zone a, b1 in zone b, bare without a zone; `web` runs on a1 and `db` on b1.
fn cluster(extra_on_b1: Vec<Pod>) -> Snapshot {
    let node = |name: &str, zone: Option<&str>| {
        let mut builder = NodeBuilder::new(name).label(HOST, name);
        if let Some(zone) = zone {
            builder = builder.label(ZONE, zone);
        }
        builder.build()
    };
    let mut on_b1 = vec![PodBuilder::new("db").label("app", "db").build()];
    on_b1.extend(extra_on_b1);
    snapshot(vec![
        (node("a1", Some("a")), vec![PodBuilder::new("web").label("app", "web").build()]),
        (node("a2", Some("a")), vec![]),
        (node("b1", Some("b")), on_b1),
        (node("bare", None), vec![]),
    ])
}

fn term(app: &str, topology_key: &str) -> Value {
    json!({"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": topology_key})
}

fn required(kind: &str, terms: Value) -> Value {
    json!({kind: {"requiredDuringSchedulingIgnoredDuringExecution": terms}})
}

fn preferred(kind: &str, weighted: &[(i32, Value)]) -> Value {
    let terms: Vec<Value> = weighted.iter().map(|(w, t)| json!({"weight": w, "podAffinityTerm": t})).collect();
    json!({kind: {"preferredDuringSchedulingIgnoredDuringExecution": terms}})
}

fn fits_on(pod: &Pod, snapshot: &Snapshot) -> Vec<Fit> {
    ["a1", "a2", "b1", "bare"].iter().map(|n| filter(&InterPodAffinity, pod, snapshot, n)).collect()
}

#[test]
fn required_affinity_needs_a_matching_pod_in_the_nodes_domain() {
    let miss = Fit::never("node(s) didn't match pod affinity rules");
    let in_namespace = |namespaces: Value, selector: Value| {
        let mut t = term("db", ZONE);
        t["namespaces"] = namespaces;
        if !selector.is_null() {
            t["namespaceSelector"] = selector;
        }
        PodBuilder::new("p").namespace("other").affinity(required("podAffinity", json!([t])))
    };
    // (pod, fit on a1, a2, b1, bare)
    for (i, (pod, expected)) in [
        (PodBuilder::new("p"), [Fit::Fits, Fit::Fits, Fit::Fits, Fit::Fits]),
        (
            PodBuilder::new("p").affinity(required("podAffinity", json!([term("db", ZONE)]))),
            [miss.clone(), miss.clone(), Fit::Fits, miss.clone()],
        ),
        (
            PodBuilder::new("p").affinity(required("podAffinity", json!([term("web", HOST)]))),
            [Fit::Fits, miss.clone(), miss.clone(), miss.clone()],
        ),
        // Both terms must hold, each in its own domain, by pods matching all terms: none does.
        (
            PodBuilder::new("p").affinity(required("podAffinity", json!([term("db", ZONE), term("web", ZONE)]))),
            [miss.clone(), miss.clone(), miss.clone(), miss.clone()],
        ),
        // Nothing matches yet and the pod matches itself: the first of its group goes anywhere
        // with the topology key.
        (
            PodBuilder::new("p").label("app", "cache").affinity(required("podAffinity", json!([term("cache", ZONE)]))),
            [Fit::Fits, Fit::Fits, Fit::Fits, miss.clone()],
        ),
        (
            PodBuilder::new("p").affinity(required("podAffinity", json!([term("cache", ZONE)]))),
            [miss.clone(), miss.clone(), miss.clone(), miss.clone()],
        ),
        // Terms look in the pod's own namespace unless told otherwise.
        (in_namespace(Value::Null, Value::Null), [miss.clone(), miss.clone(), miss.clone(), miss.clone()]),
        (in_namespace(json!(["default"]), Value::Null), [miss.clone(), miss.clone(), Fit::Fits, miss.clone()]),
        (in_namespace(Value::Null, json!({})), [miss.clone(), miss.clone(), Fit::Fits, miss.clone()]),
        (
            in_namespace(Value::Null, json!({"matchLabels": {"kubernetes.io/metadata.name": "default"}})),
            [miss.clone(), miss.clone(), Fit::Fits, miss.clone()],
        ),
        (
            in_namespace(Value::Null, json!({"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}})),
            [miss.clone(), miss.clone(), miss.clone(), miss.clone()],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(fits_on(&pod.build(), &cluster(vec![])), expected.to_vec(), "case {i}");
    }
}

#[test]
fn required_anti_affinity_keeps_away_from_matching_pods_both_ways() {
    let mine = Fit::no("node(s) didn't match pod anti-affinity rules");
    let theirs = Fit::no("node(s) didn't satisfy existing pods anti-affinity rules");
    let shy_db = PodBuilder::new("shy")
        .label("app", "db")
        .affinity(required("podAntiAffinity", json!([term("web", ZONE)])))
        .build();
    // (pod, pods added to b1, fit on a1, a2, b1, bare)
    for (i, (pod, extra, expected)) in [
        (
            PodBuilder::new("p").affinity(required("podAntiAffinity", json!([term("web", HOST)]))),
            vec![],
            [mine.clone(), Fit::Fits, Fit::Fits, Fit::Fits],
        ),
        (
            PodBuilder::new("p").affinity(required("podAntiAffinity", json!([term("web", ZONE)]))),
            vec![],
            [mine.clone(), mine.clone(), Fit::Fits, Fit::Fits],
        ),
        // A replica avoiding its siblings, as `app=web` with hostname anti-affinity does.
        (
            PodBuilder::new("p").label("app", "web").affinity(required("podAntiAffinity", json!([term("web", HOST)]))),
            vec![],
            [mine.clone(), Fit::Fits, Fit::Fits, Fit::Fits],
        ),
        // A placed pod that refuses web pods in its zone keeps a web pod out of zone b.
        (
            PodBuilder::new("p").label("app", "web"),
            vec![shy_db.clone()],
            [Fit::Fits, Fit::Fits, theirs.clone(), Fit::Fits],
        ),
        (PodBuilder::new("p").label("app", "api"), vec![shy_db.clone()], [Fit::Fits, Fit::Fits, Fit::Fits, Fit::Fits]),
        (
            PodBuilder::new("p").label("app", "web").namespace("other"),
            vec![shy_db],
            [Fit::Fits, Fit::Fits, Fit::Fits, Fit::Fits],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(fits_on(&pod.build(), &cluster(extra)), expected.to_vec(), "case {i}");
    }
}

#[test]
fn affinity_is_checked_before_anti_affinity() {
    let pod = PodBuilder::new("p")
        .affinity(json!({
            "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("db", ZONE)]},
            "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("web", ZONE)]},
        }))
        .build();
    let snapshot = cluster(vec![]);
    assert_eq!(filter(&InterPodAffinity, &pod, &snapshot, "a1"), Fit::never("node(s) didn't match pod affinity rules"));
    let web_in_b = cluster(vec![PodBuilder::new("web2").label("app", "web").build()]);
    assert_eq!(
        filter(&InterPodAffinity, &pod, &web_in_b, "b1"),
        Fit::no("node(s) didn't match pod anti-affinity rules")
    );
}

#[test]
fn preferred_terms_score_towards_wanted_and_away_from_unwanted_pods() {
    let snapshot = cluster(vec![]);
    // (pod, scores on a1, a2, b1, bare)
    for (i, (pod, expected)) in [
        (PodBuilder::new("p"), vec![0, 0, 0, 0]),
        (PodBuilder::new("p").affinity(preferred("podAffinity", &[(10, term("db", ZONE))])), vec![0, 0, 100, 0]),
        (PodBuilder::new("p").affinity(preferred("podAntiAffinity", &[(10, term("web", ZONE))])), vec![0, 0, 100, 100]),
        // -5 on a1, +10 on b1: spread linearly from the lowest to the highest.
        (
            PodBuilder::new("p").affinity(json!({
                "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
                    [{"weight": 10, "podAffinityTerm": term("db", ZONE)}]},
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
                    [{"weight": 5, "podAffinityTerm": term("web", HOST)}]},
            })),
            vec![0, 33, 100, 33],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(scores(&InterPodAffinity, &pod.build(), &snapshot), expected, "case {i}");
    }
}

#[test]
fn placed_pods_terms_pull_and_push_matching_pods() {
    let wants_web = PodBuilder::new("friendly").affinity(preferred("podAffinity", &[(20, term("web", ZONE))])).build();
    let needs_web = PodBuilder::new("needy").affinity(required("podAffinity", json!([term("web", HOST)]))).build();
    let avoids_web = PodBuilder::new("shy").affinity(preferred("podAntiAffinity", &[(20, term("web", ZONE))])).build();
    let web = PodBuilder::new("p").label("app", "web").build();
    // Placed on b1: a preferred affinity for web pulls web into zone b; a required one counts 1.
    assert_eq!(scores(&InterPodAffinity, &web, &cluster(vec![wants_web])), vec![0, 0, 100, 0]);
    assert_eq!(scores(&InterPodAffinity, &web, &cluster(vec![needs_web])), vec![0, 0, 100, 0]);
    assert_eq!(scores(&InterPodAffinity, &web, &cluster(vec![avoids_web])), vec![100, 100, 0, 100]);
    let api = PodBuilder::new("p").label("app", "api").build();
    assert_eq!(scores(&InterPodAffinity, &api, &cluster(vec![])), vec![0, 0, 0, 0]);
}
