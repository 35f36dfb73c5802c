//! A Deployment's status, pure: the counts summed over its ReplicaSets and the `Available`,
//! `Progressing` and `ReplicaFailure` conditions, as Kubernetes' `calculateStatus`,
//! `syncRolloutStatus` and `checkPausedConditions` write them. `kubectl rollout status` reads
//! exactly these: observedGeneration, replicas, updatedReplicas, availableReplicas and the
//! Progressing reason `ProgressDeadlineExceeded`.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::rollout::ReplicaSetView;

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

/// Condition reasons, spelled as Kubernetes spells them (clients match on them).
pub mod reason {
    pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
    pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
    pub const RS_UPDATED: &str = "ReplicaSetUpdated";
    pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
    pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
    pub const PAUSED: &str = "DeploymentPaused";
    pub const RESUMED: &str = "DeploymentResumed";
    pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
    pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
    pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
}

/// Now, in whole seconds: conditions are stored at that precision, and a status compared with
/// its stored copy must not differ in nanoseconds.
pub fn now() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// What a Deployment's status is computed from.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub name: &'a str,
    pub generation: i64,
    /// `spec.replicas`.
    pub replicas: i32,
    pub max_unavailable: i32,
    /// `spec.progressDeadlineSeconds`, when the Deployment has a deadline.
    pub deadline: Option<i32>,
    pub all: &'a [&'a ReplicaSetView],
    pub new: Option<&'a ReplicaSetView>,
    /// The status the sync started from, with the conditions it set on the way.
    pub current: &'a DeploymentStatus,
    /// A `ReplicaFailure` condition carried over from the ReplicaSets ([`replica_failure`]).
    pub replica_failure: Option<&'a DeploymentCondition>,
}

impl Observed<'_> {
    /// Names the new ReplicaSet in messages when there is one, else the Deployment.
    fn subject(&self) -> String {
        match self.new {
            Some(rs) => format!("ReplicaSet {:?}", rs.name),
            None => format!("Deployment {:?}", self.name),
        }
    }
}

pub fn condition(type_: &str, status: &str, reason: &str, message: String, now: Timestamp) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

pub fn get<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status.conditions.iter().flatten().find(|c| c.type_ == type_)
}

pub fn remove(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
        if conditions.is_empty() {
            status.conditions = None;
        }
    }
}

/// `SetDeploymentCondition`: nothing changes when status and reason are the same; the transition
/// time is kept when only the reason changes.
pub fn set(status: &mut DeploymentStatus, mut condition: DeploymentCondition) {
    if let Some(current) = get(status, &condition.type_) {
        if current.status == condition.status && current.reason == condition.reason {
            return;
        }
        if current.status == condition.status {
            condition.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove(status, &condition.type_);
    status.conditions.get_or_insert_with(Vec::new).push(condition);
}

fn nonzero(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

fn count(status: &DeploymentStatus, field: fn(&DeploymentStatus) -> Option<i32>) -> i32 {
    field(status).unwrap_or(0)
}

/// `calculateStatus`: counts over the ReplicaSets (zeros omitted, as Kubernetes' JSON does) and
/// the `Available` condition. `unavailableReplicas` is the ReplicaSets' wanted replicas minus the
/// available ones — during a rollout that sum can exceed `spec.replicas` by the surge.
pub fn calculate(o: &Observed, now: Timestamp) -> DeploymentStatus {
    let sum = |f: fn(&ReplicaSetView) -> i32| o.all.iter().map(|rs| f(rs)).sum::<i32>();
    let available = sum(|rs| rs.available);
    let mut status = DeploymentStatus {
        observed_generation: Some(o.generation),
        replicas: nonzero(sum(|rs| rs.status_replicas)),
        updated_replicas: nonzero(o.new.map_or(0, |rs| rs.status_replicas)),
        ready_replicas: nonzero(sum(|rs| rs.ready)),
        available_replicas: nonzero(available),
        unavailable_replicas: nonzero((sum(|rs| rs.replicas) - available).max(0)),
        collision_count: o.current.collision_count,
        conditions: o.current.conditions.clone(),
        terminating_replicas: None,
    };
    let minimum = if available >= o.replicas - o.max_unavailable {
        condition(AVAILABLE, "True", reason::MIN_AVAILABLE, "Deployment has minimum availability.".into(), now)
    } else {
        let message = "Deployment does not have minimum availability.".to_string();
        condition(AVAILABLE, "False", reason::MIN_UNAVAILABLE, message, now)
    };
    set(&mut status, minimum);
    status
}

/// `DeploymentComplete`: every wanted replica updated and available, nothing old left.
pub fn complete(replicas: i32, generation: i64, status: &DeploymentStatus) -> bool {
    count(status, |s| s.updated_replicas) == replicas
        && count(status, |s| s.replicas) == replicas
        && count(status, |s| s.available_replicas) == replicas
        && status.observed_generation.unwrap_or(0) >= generation
}

/// `DeploymentProgressing`: more updated, ready or available replicas, or fewer old ones.
pub fn progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let c = |s: &DeploymentStatus, f: fn(&DeploymentStatus) -> Option<i32>| count(s, f);
    let old_old = c(old, |s| s.replicas) - c(old, |s| s.updated_replicas);
    let new_old = c(new, |s| s.replicas) - c(new, |s| s.updated_replicas);
    c(new, |s| s.updated_replicas) > c(old, |s| s.updated_replicas)
        || new_old < old_old
        || c(new, |s| s.ready_replicas) > c(old, |s| s.ready_replicas)
        || c(new, |s| s.available_replicas) > c(old, |s| s.available_replicas)
}

/// `DeploymentTimedOut`: no progress reported for `deadline` seconds.
pub fn timed_out(deadline: i32, status: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(cond) = get(status, PROGRESSING) else { return false };
    match cond.reason.as_deref() {
        Some(reason::NEW_RS_AVAILABLE) => false,
        Some(reason::TIMED_OUT) => true,
        _ => cond
            .last_update_time
            .as_ref()
            .is_some_and(|from| from.0 + SignedDuration::from_secs(i64::from(deadline)) < now),
    }
}

/// `syncRolloutStatus`: [`calculate`], then the `Progressing` condition — complete, progressing
/// (keeping the transition time, refreshing the update time) or timed out — and `ReplicaFailure`.
pub fn rollout(o: &Observed, now: Timestamp) -> DeploymentStatus {
    let mut status = calculate(o, now);
    let Some(deadline) = o.deadline else {
        remove(&mut status, PROGRESSING);
        return with_replica_failure(status, o);
    };
    let current = get(o.current, PROGRESSING);
    let was_complete = status.replicas == status.updated_replicas
        && current.is_some_and(|c| c.reason.as_deref() == Some(reason::NEW_RS_AVAILABLE));
    if !was_complete {
        let subject = o.subject();
        if complete(o.replicas, o.generation, &status) {
            let message = format!("{subject} has successfully progressed.");
            set(&mut status, condition(PROGRESSING, "True", reason::NEW_RS_AVAILABLE, message, now));
        } else if progressing(o.current, &status) {
            let mut cond =
                condition(PROGRESSING, "True", reason::RS_UPDATED, format!("{subject} is progressing."), now);
            if let Some(current) = current {
                if current.status == "True" {
                    cond.last_transition_time = current.last_transition_time.clone();
                }
                remove(&mut status, PROGRESSING);
            }
            set(&mut status, cond);
        } else if timed_out(deadline, &status, now) {
            let message = format!("{subject} has timed out progressing.");
            set(&mut status, condition(PROGRESSING, "False", reason::TIMED_OUT, message, now));
        }
    }
    with_replica_failure(status, o)
}

fn with_replica_failure(mut status: DeploymentStatus, o: &Observed) -> DeploymentStatus {
    match o.replica_failure {
        Some(failure) => set(&mut status, failure.clone()),
        None => remove(&mut status, REPLICA_FAILURE),
    }
    status
}

/// `getReplicaFailures`: the new ReplicaSet's `ReplicaFailure` condition, else any old one's.
pub fn replica_failure(new: Option<&ReplicaSet>, all: &[&ReplicaSet]) -> Option<DeploymentCondition> {
    let failure = |rs: &ReplicaSet| {
        let cond = rs.status.as_ref()?.conditions.iter().flatten().find(|c| c.type_ == REPLICA_FAILURE)?;
        Some(DeploymentCondition {
            type_: cond.type_.clone(),
            status: cond.status.clone(),
            reason: cond.reason.clone(),
            message: cond.message.clone(),
            last_update_time: cond.last_transition_time.clone(),
            last_transition_time: cond.last_transition_time.clone(),
        })
    };
    new.and_then(failure).or_else(|| all.iter().find_map(|rs| failure(rs)))
}

/// `checkPausedConditions`: `Progressing` Unknown `DeploymentPaused` / `DeploymentResumed` when
/// `spec.paused` flips, unless the rollout already timed out.
pub fn set_paused(paused: bool, has_deadline: bool, status: &mut DeploymentStatus, now: Timestamp) {
    if !has_deadline {
        return;
    }
    let reason = get(status, PROGRESSING).and_then(|c| c.reason.clone());
    if reason.as_deref() == Some(reason::TIMED_OUT) {
        return;
    }
    let shown_paused = reason.as_deref() == Some(reason::PAUSED);
    if paused && !shown_paused {
        set(status, condition(PROGRESSING, "Unknown", reason::PAUSED, "Deployment is paused".into(), now));
    } else if !paused && shown_paused {
        set(status, condition(PROGRESSING, "Unknown", reason::RESUMED, "Deployment is resumed".into(), now));
    }
}

/// `requeueStuckDeployment`: when to look again so a stalled rollout is marked timed out without
/// waiting for an unrelated change.
pub fn recheck_after(o: &Observed, status: &DeploymentStatus, now: Timestamp) -> Option<Duration> {
    let deadline = o.deadline?;
    let cond = get(status, PROGRESSING)?;
    if complete(o.replicas, o.generation, status) || cond.reason.as_deref() == Some(reason::TIMED_OUT) {
        return None;
    }
    let from = cond.last_update_time.as_ref()?.0;
    let after = (from + SignedDuration::from_secs(i64::from(deadline))).duration_since(now);
    let after = Duration::try_from(after).unwrap_or(Duration::ZERO);
    Some(if after < Duration::from_secs(1) { Duration::from_secs(1) } else { after + Duration::from_secs(1) })
}

#[cfg(test)]
mod tests;
