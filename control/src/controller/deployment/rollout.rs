//! Rollout arithmetic, pure: how many replicas each of a Deployment's ReplicaSets should have
//! next. Every function mirrors the Kubernetes function named in its doc comment
//! (`pkg/controller/deployment`), over a [`ReplicaSetView`] of the numbers it reads.

use std::cmp::Ordering;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DeploymentSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// What the rollout reads of one ReplicaSet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicaSetView {
    pub name: String,
    pub uid: String,
    pub created: Option<Timestamp>,
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.replicas`, `readyReplicas`, `availableReplicas`.
    pub status_replicas: i32,
    pub ready: i32,
    pub available: i32,
    /// The `revision` annotation (0 when absent), `None` when it is not a number.
    pub revision: Option<i64>,
    /// The `desired-replicas` and `max-replicas` annotations.
    pub desired: Option<i32>,
    pub max_replicas: Option<i32>,
    pub generation: i64,
    pub observed_generation: i64,
    pub deleting: bool,
}

/// Why a Deployment's strategy cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("deployment strategy type {0:?} is not supported")]
    UnknownStrategy(String),
    #[error("invalid value for IntOrString: {0:?} is not a percentage")]
    NotAPercentage(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Recreate,
    /// With the fenceposts already resolved against `replicas`.
    RollingUpdate {
        max_surge: i32,
        max_unavailable: i32,
    },
}

/// The Deployment's desired size and strategy: all the rollout math needs of its spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub replicas: i32,
    pub strategy: Strategy,
}

/// Which way a scale goes, for the event message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Up,
    Down,
}

impl Verb {
    pub fn between(from: i32, to: i32) -> Verb {
        if to > from { Verb::Up } else { Verb::Down }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Up => "up",
            Verb::Down => "down",
        }
    }
}

/// One ReplicaSet to set to `to` replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleOp {
    pub name: String,
    pub to: i32,
    pub verb: Verb,
}

impl ScaleOp {
    fn new(rs: &ReplicaSetView, to: i32) -> ScaleOp {
        ScaleOp { name: rs.name.clone(), to, verb: Verb::between(rs.replicas, to) }
    }
}

/// `intstr.GetScaledValueFromIntOrPercent`: an int as is, `"N%"` of `total`, rounded up or down.
pub fn scaled_value(value: &IntOrString, total: i32, round_up: bool) -> Result<i32, PlanError> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let percent: f64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse::<i32>().ok())
                .map(f64::from)
                .ok_or_else(|| PlanError::NotAPercentage(s.clone()))?;
            let exact = percent * f64::from(total) / 100.0;
            Ok((if round_up { exact.ceil() } else { exact.floor() }) as i32)
        }
    }
}

/// `ResolveFenceposts`: surge rounds up, unavailability down; when both come to 0 (only possible
/// by rounding), one pod may be unavailable so the rollout can move at all.
pub fn resolve_fenceposts(
    max_surge: &IntOrString,
    max_unavailable: &IntOrString,
    desired: i32,
) -> Result<(i32, i32), PlanError> {
    let surge = scaled_value(max_surge, desired, true)?;
    let unavailable = scaled_value(max_unavailable, desired, false)?;
    Ok(if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) })
}

impl Plan {
    /// Reads replicas and strategy. Missing fenceposts are 25%, as the API server's defaulting
    /// would have set them (ours defaults only a wholly missing strategy).
    pub fn from_spec(spec: &DeploymentSpec) -> Result<Plan, PlanError> {
        let replicas = spec.replicas.unwrap_or(1).max(0);
        let strategy = spec.strategy.as_ref();
        let strategy = match strategy.and_then(|s| s.type_.as_deref()) {
            Some("Recreate") => Strategy::Recreate,
            None | Some("RollingUpdate") => {
                let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
                let quarter = IntOrString::String("25%".into());
                let surge = rolling.and_then(|r| r.max_surge.as_ref()).unwrap_or(&quarter);
                let unavailable = rolling.and_then(|r| r.max_unavailable.as_ref()).unwrap_or(&quarter);
                let (max_surge, max_unavailable) = resolve_fenceposts(surge, unavailable, replicas)?;
                Strategy::RollingUpdate { max_surge, max_unavailable }
            }
            Some(other) => return Err(PlanError::UnknownStrategy(other.to_string())),
        };
        Ok(Plan { replicas, strategy })
    }

    /// `MaxSurge`: 0 for Recreate.
    pub fn max_surge(&self) -> i32 {
        match self.strategy {
            Strategy::RollingUpdate { max_surge, .. } => max_surge,
            Strategy::Recreate => 0,
        }
    }

    /// `MaxUnavailable`: 0 for Recreate or no replicas, never more than `replicas`.
    pub fn max_unavailable(&self) -> i32 {
        match self.strategy {
            Strategy::RollingUpdate { max_unavailable, .. } if self.replicas > 0 => max_unavailable.min(self.replicas),
            _ => 0,
        }
    }

    fn rolling(&self) -> bool {
        matches!(self.strategy, Strategy::RollingUpdate { .. })
    }
}

/// `ReplicaSetsByCreationTimestamp`: oldest first, then by name.
pub fn by_creation(a: &ReplicaSetView, b: &ReplicaSetView) -> Ordering {
    a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name))
}

fn sum(sets: &[&ReplicaSetView], field: impl Fn(&ReplicaSetView) -> i32) -> i32 {
    sets.iter().map(|rs| field(rs)).sum()
}

/// `FilterActiveReplicaSets`: those with replicas wanted.
pub fn active<'a>(sets: impl IntoIterator<Item = &'a ReplicaSetView>) -> Vec<&'a ReplicaSetView> {
    sets.into_iter().filter(|rs| rs.replicas > 0).collect()
}

/// `NewRSNewReplicas`: the new ReplicaSet's size — up to `replicas`, without the total exceeding
/// `replicas + maxSurge` (rolling update), or straight to `replicas` (Recreate).
pub fn new_rs_new_replicas(plan: &Plan, all: &[&ReplicaSetView], new: &ReplicaSetView) -> i32 {
    match plan.strategy {
        Strategy::Recreate => plan.replicas,
        Strategy::RollingUpdate { max_surge, .. } => {
            let current = sum(all, |rs| rs.replicas);
            let max_total = plan.replicas + max_surge;
            if current >= max_total {
                return new.replicas;
            }
            new.replicas + (max_total - current).min(plan.replicas - new.replicas)
        }
    }
}

/// `reconcileNewReplicaSet`: the new ReplicaSet's next size, if it changes.
pub fn reconcile_new(plan: &Plan, all: &[&ReplicaSetView], new: &ReplicaSetView) -> Option<i32> {
    let to = match new.replicas.cmp(&plan.replicas) {
        Ordering::Equal => return None,
        Ordering::Greater => plan.replicas,
        Ordering::Less => new_rs_new_replicas(plan, all, new),
    };
    (to != new.replicas).then_some(to)
}

/// `reconcileOldReplicaSets`: scale-downs of old ReplicaSets that keep at least
/// `replicas - maxUnavailable` pods available — first their unavailable replicas (removing those
/// costs nothing), then available ones as the new ReplicaSet's become available, oldest set first.
/// `all` is every ReplicaSet (old and new); `old` the active old ones.
pub fn reconcile_old(
    plan: &Plan,
    all: &[&ReplicaSetView],
    old: &[&ReplicaSetView],
    new: &ReplicaSetView,
) -> Vec<ScaleOp> {
    if sum(old, |rs| rs.replicas) == 0 {
        return Vec::new();
    }
    let min_available = plan.replicas - plan.max_unavailable();
    let new_unavailable = new.replicas - new.available;
    let max_scaled_down = sum(all, |rs| rs.replicas) - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Vec::new();
    }
    let mut old: Vec<ReplicaSetView> = old.iter().map(|rs| (*rs).clone()).collect();
    old.sort_by(by_creation);
    let mut ops = Vec::new();

    // cleanupUnhealthyReplicas
    let mut cleaned = 0;
    for rs in old.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        if rs.replicas == 0 || rs.replicas == rs.available {
            continue;
        }
        let n = (max_scaled_down - cleaned).min(rs.replicas - rs.available);
        ops.push(ScaleOp::new(rs, rs.replicas - n));
        rs.replicas -= n;
        cleaned += n;
    }

    // scaleDownOldReplicaSetsForRollingUpdate
    let available = old.iter().map(|rs| rs.available).sum::<i32>() + new.available;
    if available <= min_available {
        return ops;
    }
    let budget = available - min_available;
    let mut scaled = 0;
    for rs in old.iter_mut() {
        if scaled >= budget {
            break;
        }
        if rs.replicas == 0 {
            continue;
        }
        let n = rs.replicas.min(budget - scaled);
        ops.push(ScaleOp::new(rs, rs.replicas - n));
        rs.replicas -= n;
        scaled += n;
    }
    ops
}

/// `IsSaturated`: the new ReplicaSet has all replicas, annotated for this size, all available.
pub fn is_saturated(plan: &Plan, new: Option<&ReplicaSetView>) -> bool {
    new.is_some_and(|rs| {
        rs.replicas == plan.replicas && rs.desired == Some(plan.replicas) && rs.available == plan.replicas
    })
}

/// `isScalingEvent`: some active ReplicaSet was sized for another `replicas`.
pub fn is_scaling_event(plan: &Plan, new: Option<&ReplicaSetView>, old: &[&ReplicaSetView]) -> bool {
    active(old.iter().copied().chain(new)).iter().any(|rs| rs.desired.is_some_and(|d| d != plan.replicas))
}

/// Kubernetes' `DeploymentController.scale`: a Deployment resized outside a template change. One
/// active (or, with none, the newest) ReplicaSet takes the whole size; with a saturated new set the
/// old ones go to 0; otherwise, during a rolling update, the difference is shared among the active
/// sets in proportion to their sizes, leftovers to the largest. `status_replicas` is the
/// Deployment's `status.replicas`, the fallback when a set lacks `max-replicas`.
pub fn scale(plan: &Plan, new: Option<&ReplicaSetView>, old: &[&ReplicaSetView], status_replicas: i32) -> Vec<ScaleOp> {
    let mut newest_first: Vec<&ReplicaSetView> = old.to_vec();
    newest_first.sort_by(|a, b| by_creation(b, a));
    let all_active = active(newest_first.iter().copied().chain(new));
    // FindActiveOrLatest
    let only = match all_active.len() {
        0 => new.or(newest_first.first().copied()),
        1 => Some(all_active[0]),
        _ => None,
    };
    if let Some(rs) = only {
        return if rs.replicas == plan.replicas { Vec::new() } else { vec![ScaleOp::new(rs, plan.replicas)] };
    }
    if all_active.is_empty() {
        return Vec::new();
    }
    if is_saturated(plan, new) {
        return active(old.iter().copied()).into_iter().map(|rs| ScaleOp::new(rs, 0)).collect();
    }
    if !plan.rolling() {
        return Vec::new();
    }
    let mut sets = all_active;
    let allowed = if plan.replicas > 0 { plan.replicas + plan.max_surge() } else { 0 };
    let to_add = allowed - sum(&sets, |rs| rs.replicas);
    match to_add.cmp(&0) {
        // ReplicaSetsBySizeNewer / ReplicaSetsBySizeOlder: largest first, then newest / oldest.
        Ordering::Greater => sets.sort_by(|a, b| b.replicas.cmp(&a.replicas).then_with(|| by_creation(b, a))),
        Ordering::Less => sets.sort_by(|a, b| b.replicas.cmp(&a.replicas).then_with(|| by_creation(a, b))),
        Ordering::Equal => {}
    }
    let verb = if to_add > 0 { Verb::Up } else { Verb::Down };
    let mut added = 0;
    let mut sizes: Vec<i32> = Vec::with_capacity(sets.len());
    for rs in &sets {
        let share = if to_add != 0 { proportion(rs, plan, to_add, added, status_replicas) } else { 0 };
        sizes.push(rs.replicas + share);
        added += share;
    }
    if to_add != 0 {
        sizes[0] = (sizes[0] + to_add - added).max(0);
    }
    // Every active set is written: besides the size, its replicas annotations follow the new size.
    sets.iter().zip(sizes).map(|(rs, to)| ScaleOp { name: rs.name.clone(), to, verb }).collect()
}

/// `GetProportion`: this set's share of `to_add`, capped by what is left of it.
fn proportion(rs: &ReplicaSetView, plan: &Plan, to_add: i32, added: i32, status_replicas: i32) -> i32 {
    if rs.replicas == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = fraction(rs, plan, status_replicas);
    let allowed = to_add - added;
    if to_add > 0 { fraction.min(allowed) } else { fraction.max(allowed) }
}

/// `getReplicaSetFraction`: the set's size scaled from the old maximum to the new one, minus its
/// size (rounded half away from zero, as Kubernetes' `RoundToInt32`).
fn fraction(rs: &ReplicaSetView, plan: &Plan, status_replicas: i32) -> i32 {
    if plan.replicas == 0 {
        return -rs.replicas;
    }
    let max = plan.replicas + plan.max_surge();
    let before = match rs.max_replicas.filter(|m| *m != 0) {
        Some(m) => m,
        None if status_replicas == 0 => return 0,
        None => status_replicas,
    };
    let scaled = f64::from(rs.replicas) * f64::from(max) / f64::from(before);
    scaled.round() as i32 - rs.replicas
}

/// `oldPodsRunning` (Recreate): old ReplicaSets still report pods, or a pod of an old set (one
/// entry per pod: its controlling set's uid and its phase) has not terminated.
pub fn old_pods_running(
    new: Option<&ReplicaSetView>,
    old: &[&ReplicaSetView],
    pods: &[(String, Option<String>)],
) -> bool {
    if sum(old, |rs| rs.status_replicas) > 0 {
        return true;
    }
    pods.iter().any(|(owner, phase)| {
        new.is_none_or(|n| n.uid != *owner) && !matches!(phase.as_deref(), Some("Succeeded" | "Failed"))
    })
}

/// `cleanupDeployment`: the old ReplicaSets beyond `revisionHistoryLimit`, lowest revision first,
/// that can go — no replicas wanted or reported, status caught up, not already being deleted.
pub fn history_to_prune<'a>(limit: Option<i32>, old: &[&'a ReplicaSetView]) -> Vec<&'a ReplicaSetView> {
    let Some(limit) = limit.filter(|l| *l != i32::MAX) else { return Vec::new() };
    let mut alive: Vec<&ReplicaSetView> = old.iter().copied().filter(|rs| !rs.deleting).collect();
    let excess = alive.len() as i64 - i64::from(limit);
    if excess <= 0 {
        return Vec::new();
    }
    alive.sort_by(|a, b| match (a.revision, b.revision) {
        (Some(x), Some(y)) if x != y => x.cmp(&y),
        _ => by_creation(a, b),
    });
    alive
        .into_iter()
        .take(excess as usize)
        .filter(|rs| rs.status_replicas == 0 && rs.replicas == 0 && rs.generation <= rs.observed_generation)
        .collect()
}

/// `MaxRevision` of the given sets (0 when none has one).
pub fn max_revision(sets: &[&ReplicaSetView]) -> i64 {
    sets.iter().filter_map(|rs| rs.revision).max().unwrap_or(0).max(0)
}

#[cfg(test)]
mod tests;
