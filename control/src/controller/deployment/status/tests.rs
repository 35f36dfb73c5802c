//! Status and condition cases, checked against Kubernetes' `sync.go` and `progress.go`.

use super::*;

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + second).expect("valid")
}

fn view(name: &str, replicas: i32, reported: i32, ready: i32, available: i32) -> ReplicaSetView {
    ReplicaSetView { name: name.into(), replicas, status_replicas: reported, ready, available, ..Default::default() }
}

fn observed<'a>(
    all: &'a [&'a ReplicaSetView],
    new: Option<&'a ReplicaSetView>,
    current: &'a DeploymentStatus,
) -> Observed<'a> {
    Observed {
        name: "web",
        generation: 2,
        replicas: 3,
        max_unavailable: 0,
        deadline: Some(600),
        all,
        new,
        current,
        replica_failure: None,
    }
}

fn reason_of(status: &DeploymentStatus, type_: &str) -> Option<String> {
    get(status, type_).and_then(|c| c.reason.clone())
}

#[test]
fn counts_are_summed_over_replica_sets_and_zeros_are_omitted() {
    let old = view("web-a", 1, 1, 1, 1);
    let new = view("web-b", 3, 2, 1, 1);
    let current = DeploymentStatus { collision_count: Some(1), ..Default::default() };
    let all = [&old, &new];
    let s = calculate(&observed(&all, Some(&new), &current), at(0));
    assert_eq!(
        (s.observed_generation, s.replicas, s.updated_replicas, s.ready_replicas, s.available_replicas),
        (Some(2), Some(3), Some(2), Some(2), Some(2))
    );
    assert_eq!(s.unavailable_replicas, Some(2), "4 wanted by the sets, 2 available");
    assert_eq!(s.collision_count, Some(1), "kept");
    let none = calculate(&observed(&[], None, &current), at(0));
    assert_eq!((none.replicas, none.available_replicas, none.unavailable_replicas), (None, None, None));
}

#[test]
fn available_means_at_least_replicas_minus_max_unavailable() {
    let current = DeploymentStatus::default();
    // (available, maxUnavailable, want status, want reason)
    for (available, max_unavailable, want, want_reason) in [
        (3, 0, "True", reason::MIN_AVAILABLE),
        (2, 0, "False", reason::MIN_UNAVAILABLE),
        (2, 1, "True", reason::MIN_AVAILABLE),
    ] {
        let rs = view("web-a", 3, 3, available, available);
        let all = [&rs];
        let mut o = observed(&all, Some(&rs), &current);
        o.max_unavailable = max_unavailable;
        let s = calculate(&o, at(0));
        let cond = get(&s, AVAILABLE).expect("Available is always set");
        assert_eq!((cond.status.as_str(), cond.reason.as_deref()), (want, Some(want_reason)));
        let message = if want == "True" {
            "Deployment has minimum availability."
        } else {
            "Deployment does not have minimum availability."
        };
        assert_eq!(cond.message.as_deref(), Some(message));
    }
}

#[test]
fn set_keeps_a_condition_whose_status_and_reason_are_unchanged() {
    let mut s = DeploymentStatus::default();
    set(&mut s, condition(PROGRESSING, "True", reason::RS_UPDATED, "a".into(), at(0)));
    set(&mut s, condition(PROGRESSING, "True", reason::RS_UPDATED, "b".into(), at(5)));
    let c = get(&s, PROGRESSING).expect("set");
    assert_eq!((c.message.as_deref(), c.last_update_time.clone()), (Some("a"), Some(Time(at(0)))));
    // New reason, same status: the transition time stays.
    set(&mut s, condition(PROGRESSING, "True", reason::NEW_RS_AVAILABLE, "c".into(), at(9)));
    let c = get(&s, PROGRESSING).expect("set");
    assert_eq!((c.last_update_time.clone(), c.last_transition_time.clone()), (Some(Time(at(9))), Some(Time(at(0)))));
    set(&mut s, condition(PROGRESSING, "False", reason::TIMED_OUT, "d".into(), at(12)));
    assert_eq!(get(&s, PROGRESSING).and_then(|c| c.last_transition_time.clone()), Some(Time(at(12))));
    remove(&mut s, PROGRESSING);
    assert_eq!(s.conditions, None);
}

#[test]
fn progressing_follows_the_rollout_to_completion_or_its_deadline() {
    let new = view("web-b", 3, 3, 3, 3);
    let all = [&new];
    // Complete: NewReplicaSetAvailable, with Kubernetes' message.
    let s = rollout(&observed(&all, Some(&new), &DeploymentStatus::default()), at(0));
    let c = get(&s, PROGRESSING).expect("set");
    assert_eq!(c.reason.as_deref(), Some(reason::NEW_RS_AVAILABLE));
    assert_eq!(c.message.as_deref(), Some("ReplicaSet \"web-b\" has successfully progressed."));

    // Progress (one more available) refreshes lastUpdateTime, keeps lastTransitionTime.
    let partial = view("web-b", 3, 2, 1, 1);
    let mut before = DeploymentStatus { replicas: Some(2), updated_replicas: Some(2), ..Default::default() };
    set(&mut before, condition(PROGRESSING, "True", reason::NEW_RS_CREATED, "Created".into(), at(0)));
    let all = [&partial];
    let s = rollout(&observed(&all, Some(&partial), &before), at(30));
    let c = get(&s, PROGRESSING).expect("set");
    assert_eq!(c.reason.as_deref(), Some(reason::RS_UPDATED));
    assert_eq!(c.message.as_deref(), Some("ReplicaSet \"web-b\" is progressing."));
    assert_eq!((c.last_update_time.clone(), c.last_transition_time.clone()), (Some(Time(at(30))), Some(Time(at(0)))));

    // No progress past the deadline: timed out.
    let stalled = s.clone();
    let mut o = observed(&all, Some(&partial), &stalled);
    o.deadline = Some(10);
    assert_eq!(reason_of(&rollout(&o, at(35)), PROGRESSING).as_deref(), Some(reason::RS_UPDATED), "within");
    let timed_out = rollout(&o, at(41));
    let c = get(&timed_out, PROGRESSING).expect("set");
    assert_eq!((c.status.as_str(), c.reason.as_deref()), ("False", Some(reason::TIMED_OUT)));
    assert_eq!(c.message.as_deref(), Some("ReplicaSet \"web-b\" has timed out progressing."));

    // Without a deadline there is no Progressing condition at all.
    o.deadline = None;
    assert!(get(&rollout(&o, at(41)), PROGRESSING).is_none());
}

#[test]
fn a_complete_rollout_is_not_reevaluated() {
    let rs = view("web-b", 3, 3, 1, 1);
    let mut done = DeploymentStatus { replicas: Some(3), updated_replicas: Some(3), ..Default::default() };
    set(&mut done, condition(PROGRESSING, "True", reason::NEW_RS_AVAILABLE, "done".into(), at(0)));
    let all = [&rs];
    let mut o = observed(&all, Some(&rs), &done);
    o.deadline = Some(1);
    let s = rollout(&o, at(100));
    assert_eq!(reason_of(&s, PROGRESSING).as_deref(), Some(reason::NEW_RS_AVAILABLE), "a pod failing later");
}

#[test]
fn replica_failures_are_carried_over() {
    let rs = view("web-b", 3, 3, 3, 3);
    let failure = condition(REPLICA_FAILURE, "True", "FailedCreate", "quota".into(), at(0));
    let all = [&rs];
    let current = DeploymentStatus::default();
    let mut o = observed(&all, Some(&rs), &current);
    o.replica_failure = Some(&failure);
    assert_eq!(reason_of(&rollout(&o, at(1)), REPLICA_FAILURE).as_deref(), Some("FailedCreate"));
    o.replica_failure = None;
    assert!(get(&rollout(&o, at(1)), REPLICA_FAILURE).is_none());
}

#[test]
fn pausing_and_resuming_show_in_progressing() {
    let mut s = DeploymentStatus::default();
    set_paused(true, false, &mut s, at(0));
    assert!(get(&s, PROGRESSING).is_none(), "no deadline, no condition");
    set_paused(true, true, &mut s, at(0));
    assert_eq!(reason_of(&s, PROGRESSING).as_deref(), Some(reason::PAUSED));
    set_paused(false, true, &mut s, at(1));
    assert_eq!(reason_of(&s, PROGRESSING).as_deref(), Some(reason::RESUMED));
    set(&mut s, condition(PROGRESSING, "False", reason::TIMED_OUT, "late".into(), at(2)));
    set_paused(true, true, &mut s, at(3));
    assert_eq!(reason_of(&s, PROGRESSING).as_deref(), Some(reason::TIMED_OUT), "a timeout is not hidden");
}

#[test]
fn a_stalled_rollout_is_looked_at_again_when_its_deadline_passes() {
    let rs = view("web-b", 3, 1, 0, 0);
    let all = [&rs];
    let current = DeploymentStatus::default();
    let mut o = observed(&all, Some(&rs), &current);
    o.deadline = Some(60);
    let mut s = DeploymentStatus::default();
    assert_eq!(recheck_after(&o, &s, at(0)), None, "no Progressing condition");
    set(&mut s, condition(PROGRESSING, "True", reason::RS_UPDATED, "p".into(), at(0)));
    assert_eq!(recheck_after(&o, &s, at(20)), Some(Duration::from_secs(41)));
    assert_eq!(recheck_after(&o, &s, at(90)), Some(Duration::from_secs(1)));
    set(&mut s, condition(PROGRESSING, "False", reason::TIMED_OUT, "t".into(), at(61)));
    assert_eq!(recheck_after(&o, &s, at(90)), None);
}
