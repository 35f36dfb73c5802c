//! Tables of rollout cases, each checked against what Kubernetes' deployment controller does.

use super::*;
use k8s_openapi::api::apps::v1::{DeploymentStrategy, RollingUpdateDeployment};

fn int(n: i32) -> IntOrString {
    IntOrString::Int(n)
}

fn pct(s: &str) -> IntOrString {
    IntOrString::String(s.into())
}

/// A ReplicaSet created at second `age_rank` (lower is older) with spec and available replicas.
fn rs(name: &str, age_rank: i64, replicas: i32, available: i32) -> ReplicaSetView {
    ReplicaSetView {
        name: name.into(),
        uid: format!("uid-{name}"),
        created: Timestamp::from_second(1_700_000_000 + age_rank).ok(),
        replicas,
        status_replicas: replicas,
        ready: available,
        available,
        revision: Some(age_rank),
        ..Default::default()
    }
}

fn rolling(replicas: i32, max_surge: i32, max_unavailable: i32) -> Plan {
    Plan { replicas, strategy: Strategy::RollingUpdate { max_surge, max_unavailable } }
}

fn sizes(ops: &[ScaleOp]) -> Vec<(&str, i32)> {
    ops.iter().map(|op| (op.name.as_str(), op.to)).collect()
}

#[test]
fn fenceposts_round_surge_up_and_unavailability_down() {
    // (maxSurge, maxUnavailable, replicas, want)
    for (surge, unavailable, replicas, want) in [
        (pct("25%"), pct("25%"), 4, (1, 1)),
        (pct("25%"), pct("25%"), 1, (1, 0)),
        (pct("25%"), pct("25%"), 10, (3, 2)),
        (int(2), int(0), 5, (2, 0)),
        (int(0), int(0), 3, (0, 1)),
        (pct("0%"), pct("10%"), 3, (0, 1)),
        (pct("100%"), int(1), 3, (3, 1)),
    ] {
        assert_eq!(
            resolve_fenceposts(&surge, &unavailable, replicas),
            Ok(want),
            "{surge:?} {unavailable:?} {replicas}"
        );
    }
    assert_eq!(scaled_value(&pct("x"), 4, true), Err(PlanError::NotAPercentage("x".into())));
    assert_eq!(scaled_value(&pct("3"), 4, true), Err(PlanError::NotAPercentage("3".into())));
}

#[test]
fn plans_default_missing_fenceposts_to_a_quarter_and_cap_unavailability() {
    let spec = |replicas: i32, strategy: Option<DeploymentStrategy>| DeploymentSpec {
        replicas: Some(replicas),
        strategy,
        ..Default::default()
    };
    let partial = DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment { max_surge: Some(int(0)), max_unavailable: None }),
    };
    assert_eq!(Plan::from_spec(&spec(8, Some(partial))), Ok(rolling(8, 0, 2)));
    assert_eq!(Plan::from_spec(&spec(4, None)), Ok(rolling(4, 1, 1)));
    let recreate = DeploymentStrategy { type_: Some("Recreate".into()), rolling_update: None };
    let plan = Plan::from_spec(&spec(3, Some(recreate))).expect("valid");
    assert_eq!((plan.max_surge(), plan.max_unavailable()), (0, 0));
    let odd = DeploymentStrategy { type_: Some("Canary".into()), rolling_update: None };
    assert!(matches!(Plan::from_spec(&spec(3, Some(odd))), Err(PlanError::UnknownStrategy(_))));
    assert_eq!(rolling(2, 1, 5).max_unavailable(), 2, "never more than replicas");
    assert_eq!(rolling(0, 1, 5).max_unavailable(), 0);
}

#[test]
fn the_new_replica_set_grows_within_replicas_plus_surge() {
    // (plan, old replicas, new replicas, want)
    for (plan, old, new, want) in [
        (rolling(3, 1, 0), 3, 0, Some(1)),
        (rolling(3, 1, 0), 2, 1, Some(2)),
        (rolling(3, 1, 0), 3, 1, None), // at replicas + surge
        (rolling(3, 3, 0), 3, 0, Some(3)),
        (rolling(3, 1, 0), 0, 5, Some(3)), // too big: straight down
        (rolling(3, 1, 0), 0, 3, None),
        (Plan { replicas: 4, strategy: Strategy::Recreate }, 0, 0, Some(4)),
    ] {
        let (o, n) = (rs("old", 1, old, old), rs("new", 2, new, 0));
        assert_eq!(reconcile_new(&plan, &[&o, &n], &n), want, "{plan:?} old={old} new={new}");
    }
}

#[test]
fn old_replica_sets_shrink_only_while_enough_stay_available() {
    // (plan, old sets (name, replicas, available), new (replicas, available), want)
    type Case = (Plan, Vec<(&'static str, i32, i32)>, (i32, i32), Vec<(&'static str, i32)>);
    let cases: Vec<Case> = vec![
        // maxUnavailable 0: nothing goes until a new replica is available...
        (rolling(3, 1, 0), vec![("a", 3, 3)], (1, 0), vec![]),
        // ... then exactly one.
        (rolling(3, 1, 0), vec![("a", 3, 3)], (1, 1), vec![("a", 2)]),
        (rolling(3, 1, 0), vec![("a", 1, 1)], (3, 3), vec![("a", 0)]),
        // maxUnavailable 1 lets one go at once.
        (rolling(3, 1, 1), vec![("a", 3, 3)], (1, 0), vec![("a", 2)]),
        // Unhealthy old replicas are cleaned up first, oldest set first.
        (rolling(4, 0, 1), vec![("a", 2, 1), ("b", 2, 2)], (0, 0), vec![("a", 1)]),
        (rolling(4, 1, 2), vec![("a", 2, 0), ("b", 2, 2)], (1, 0), vec![("a", 0)]),
        // Both in one pass: the unhealthy replica, then one available as the new one is.
        (rolling(4, 1, 1), vec![("a", 2, 1), ("b", 2, 2)], (1, 1), vec![("a", 1), ("a", 0)]),
        // Nothing old left to scale.
        (rolling(3, 1, 1), vec![("a", 0, 0)], (3, 3), vec![]),
    ];
    for (plan, old, (new_replicas, new_available), want) in cases {
        let old: Vec<ReplicaSetView> = old.iter().enumerate().map(|(i, (n, r, a))| rs(n, i as i64, *r, *a)).collect();
        let new = rs("new", 10, new_replicas, new_available);
        let old_refs: Vec<&ReplicaSetView> = old.iter().collect();
        let all: Vec<&ReplicaSetView> = old.iter().chain([&new]).collect();
        let ops = reconcile_old(&plan, &all, &active(old_refs.iter().copied()), &new);
        assert_eq!(sizes(&ops), want, "{plan:?} {old:?} new={new_replicas}/{new_available}");
        assert!(ops.iter().all(|op| op.verb == Verb::Down));
    }
}

#[test]
fn scaling_a_deployment_resizes_its_replica_sets_as_kubernetes_does() {
    let annotated = |mut r: ReplicaSetView, desired: i32, max: i32| {
        r.desired = Some(desired);
        r.max_replicas = Some(max);
        r
    };
    // One active set takes the whole size.
    let only = rs("a", 1, 3, 3);
    assert_eq!(sizes(&scale(&rolling(5, 1, 1), Some(&only), &[], 3)), vec![("a", 5)]);
    // No active set: the new one (or the newest old one) takes it.
    let (idle_new, idle_old) = (rs("new", 2, 0, 0), rs("old", 1, 0, 0));
    assert_eq!(sizes(&scale(&rolling(2, 1, 1), Some(&idle_new), &[&idle_old], 0)), vec![("new", 2)]);
    assert_eq!(sizes(&scale(&rolling(2, 1, 1), None, &[&idle_old], 0)), vec![("old", 2)]);
    // A saturated new set: the old ones go to 0.
    let saturated = annotated(rs("new", 2, 3, 3), 3, 4);
    let leftover = rs("old", 1, 1, 1);
    assert_eq!(sizes(&scale(&rolling(3, 1, 1), Some(&saturated), &[&leftover], 4)), vec![("old", 0)]);
    // Mid-rollout 10 → 20 (maxSurge 3 → 5): the 12 extra are shared in proportion to 7:6.
    let new = annotated(rs("new", 2, 6, 0), 10, 13);
    let old = annotated(rs("old", 1, 7, 7), 10, 13);
    let plan = rolling(20, 5, 5);
    let ops = scale(&plan, Some(&new), &[&old], 13);
    let mut got = sizes(&ops);
    got.sort();
    assert_eq!(got, vec![("new", 12), ("old", 13)]);
    assert_eq!(got.iter().map(|(_, n)| n).sum::<i32>(), 25, "replicas + maxSurge");
    assert!(ops.iter().all(|op| op.verb == Verb::Up));
    // And back down to 0: everything goes.
    let ops = scale(&rolling(0, 0, 0), Some(&new), &[&old], 13);
    assert!(ops.iter().all(|op| op.to == 0 && op.verb == Verb::Down), "{ops:?}");
    // Recreate with two active sets does not scale proportionally.
    let recreate = Plan { replicas: 5, strategy: Strategy::Recreate };
    assert!(scale(&recreate, Some(&new), &[&old], 13).is_empty());
}

#[test]
fn a_scaling_event_is_a_set_sized_for_other_replicas() {
    let mut a = rs("a", 1, 3, 3);
    a.desired = Some(3);
    assert!(!is_scaling_event(&rolling(3, 1, 1), Some(&a), &[]));
    assert!(is_scaling_event(&rolling(4, 1, 1), Some(&a), &[]));
    a.replicas = 0;
    assert!(!is_scaling_event(&rolling(4, 1, 1), Some(&a), &[]), "inactive sets do not count");
}

#[test]
fn recreate_waits_for_old_pods_to_be_gone() {
    let new = rs("new", 2, 0, 0);
    let mut old = rs("old", 1, 0, 0);
    let pod = |owner: &str, phase: &str| (owner.to_string(), Some(phase.to_string()));
    // (old status.replicas, pods, running)
    for (reported, pods, want) in [
        (1, vec![], true),
        (0, vec![], false),
        (0, vec![pod("uid-old", "Running")], true),
        (0, vec![pod("uid-old", "Succeeded"), pod("uid-old", "Failed")], false),
        (0, vec![pod("uid-new", "Running")], false),
    ] {
        old.status_replicas = reported;
        assert_eq!(old_pods_running(Some(&new), &[&old], &pods), want, "{reported} {pods:?}");
    }
}

#[test]
fn history_beyond_the_limit_is_pruned_lowest_revision_first() {
    let mut sets: Vec<ReplicaSetView> = (1..=4).map(|i| rs(&format!("r{i}"), i, 0, 0)).collect();
    let names = |sets: &[ReplicaSetView], limit: Option<i32>| -> Vec<String> {
        let refs: Vec<&ReplicaSetView> = sets.iter().collect();
        history_to_prune(limit, &refs).iter().map(|rs| rs.name.clone()).collect()
    };
    assert_eq!(names(&sets, Some(2)), ["r1", "r2"]);
    assert_eq!(names(&sets, Some(4)), Vec::<String>::new());
    assert_eq!(names(&sets, None), Vec::<String>::new());
    sets[0].status_replicas = 1; // still has pods: kept, and not replaced by another
    sets[1].generation = 2; // its status has not caught up yet
    assert_eq!(names(&sets, Some(2)), Vec::<String>::new());
    sets[0].deleting = true; // already going: not counted
    assert_eq!(names(&sets, Some(2)), Vec::<String>::new());
    assert_eq!(names(&sets, Some(1)), ["r3"]);
}

#[test]
fn max_revision_ignores_unparsable_revisions() {
    let (mut a, b) = (rs("a", 3, 0, 0), rs("b", 5, 0, 0));
    assert_eq!(max_revision(&[&a, &b]), 5);
    a.revision = None;
    assert_eq!(max_revision(&[&a]), 0);
    assert_eq!(max_revision(&[]), 0);
}
