//! The taint manager's decision: when a pod on a node with NoExecute taints has to go. Pure:
//! times are passed in.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Taint, Toleration};

use crate::scheduler::plugins::tolerates;

/// What the taint manager does with a pod on a node with NoExecute taints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Every taint is tolerated without a time limit (or there is none).
    Keep,
    /// A taint is not tolerated, or a toleration's time is up.
    Now,
    /// Tolerated until then.
    At(Timestamp),
}

/// Kubernetes' `processPodOnNode`: each NoExecute taint (with the time it has held since) must be
/// tolerated, by the first toleration matching it; the pod goes when the shortest
/// `tolerationSeconds` among those runs out, counted from its taint's time. Zero or negative
/// seconds mean at once.
pub fn eviction(tolerations: &[Toleration], taints: &[(Taint, Timestamp)], now: Timestamp) -> Eviction {
    let mut until: Option<Timestamp> = None;
    for (taint, since) in taints {
        let Some(toleration) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Eviction::Now;
        };
        if let Some(seconds) = toleration.toleration_seconds {
            let end = since.saturating_add(SignedDuration::from_secs(seconds.max(0))).unwrap_or(*since);
            until = Some(until.map_or(end, |u| u.min(end)));
        }
    }
    match until {
        None => Eviction::Keep,
        Some(end) if end <= now => Eviction::Now,
        Some(end) => Eviction::At(end),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::{Value, json};

    use super::*;
    use crate::scheduler::plugins::UNREACHABLE;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).expect("a valid time")
    }

    fn taint(key: &str, effect: &str, added: Option<i64>) -> Taint {
        Taint { key: key.into(), effect: effect.into(), time_added: added.map(|s| Time(at(s))), value: None }
    }

    fn toleration(value: Value) -> Toleration {
        serde_json::from_value(value).expect("toleration")
    }

    #[test]
    fn pods_are_evicted_when_their_tolerations_run_out() {
        let ur = (taint(UNREACHABLE, "NoExecute", Some(10)), at(10));
        let user = (taint("maintenance", "NoExecute", None), at(20));
        let tol = |key: &str, seconds: Option<i64>| {
            toleration(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}))
        };
        // (tolerations, taints with their start, now, expected)
        type Case = (Vec<Toleration>, Vec<(Taint, Timestamp)>, i64, Eviction);
        let cases: Vec<Case> = vec![
            (vec![], vec![], 10, Eviction::Keep),
            (vec![], vec![ur.clone()], 10, Eviction::Now),
            (vec![tol(UNREACHABLE, Some(300))], vec![ur.clone()], 11, Eviction::At(at(310))),
            (vec![tol(UNREACHABLE, Some(300))], vec![ur.clone()], 310, Eviction::Now),
            (vec![tol(UNREACHABLE, None)], vec![ur.clone()], 10_000, Eviction::Keep),
            (vec![tol(UNREACHABLE, Some(0))], vec![ur.clone()], 10, Eviction::Now),
            (vec![tol(UNREACHABLE, Some(-5))], vec![ur.clone()], 10, Eviction::Now),
            // A NoSchedule toleration does not tolerate NoExecute.
            (
                vec![toleration(json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"}))],
                vec![ur.clone()],
                10,
                Eviction::Now,
            ),
            // Every taint must be tolerated; the shortest time, from each taint's own start, wins.
            (vec![tol(UNREACHABLE, Some(300))], vec![ur.clone(), user.clone()], 11, Eviction::Now),
            (
                vec![tol(UNREACHABLE, Some(300)), tol("maintenance", Some(30))],
                vec![ur.clone(), user.clone()],
                11,
                Eviction::At(at(50)),
            ),
            (vec![toleration(json!({"operator": "Exists"}))], vec![ur, user], 10_000, Eviction::Keep),
        ];
        for (i, (tolerations, taints, now, want)) in cases.into_iter().enumerate() {
            assert_eq!(eviction(&tolerations, &taints, at(now)), want, "case {i}");
        }
    }
}
