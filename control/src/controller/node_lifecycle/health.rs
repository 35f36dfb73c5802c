//! A node's health, decided from what it reported: whether it is stale ([`Probe`]), the
//! conditions it then gets ([`unknown_conditions`]) and the lifecycle taints its Ready condition
//! calls for ([`lifecycle_taint`], [`with_lifecycle_taint`]), and the pod conditions its pods
//! then get ([`pod_not_ready`]). Pure: times are passed in.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{NodeCondition, PodCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::scheduler::plugins::{NOT_READY, UNREACHABLE};

const STALE_REASON: &str = "NodeStatusUnknown";
const STALE_MESSAGE: &str = "Kubelet stopped posting node status.";
const NEVER_REASON: &str = "NodeStatusNeverUpdated";
const NEVER_MESSAGE: &str = "Kubelet never posted node status.";

/// `now` to whole seconds, as `Time` fields are stored, so what is written and what the next
/// pass reads back are the same instant.
fn to_second(now: Timestamp) -> Timestamp {
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// A node's heartbeats as last read: the Ready condition's `lastHeartbeatTime` and the Lease's
/// `renewTime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heartbeat {
    pub status: Option<Timestamp>,
    pub lease: Option<Timestamp>,
}

/// What the controller remembers of a node: its last heartbeats and when, by the controller's
/// clock, they last changed (Kubernetes' `probeTimestamp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub heartbeat: Heartbeat,
    pub changed: Timestamp,
}

impl Probe {
    /// The probe after reading `heartbeat` at `now`. A changed heartbeat restarts the grace period,
    /// and so does a node seen for the first time (new, or after a control-plane restart).
    pub fn observe(previous: Option<&Probe>, heartbeat: Heartbeat, now: Timestamp) -> Probe {
        match previous {
            Some(p) if p.heartbeat == heartbeat => *p,
            _ => Probe { heartbeat, changed: now },
        }
    }

    /// When the node counts as lost unless it reports again.
    pub fn deadline(&self, grace: SignedDuration) -> Timestamp {
        self.changed.saturating_add(grace).unwrap_or(self.changed)
    }

    pub fn stale(&self, now: Timestamp, grace: SignedDuration) -> bool {
        now >= self.deadline(grace)
    }
}

/// The conditions of a node whose agent stopped reporting: each turned Unknown with Kubernetes'
/// reason and message (keeping its `lastHeartbeatTime`, so this write is no heartbeat), and a
/// Ready condition added if the agent never posted one. `None` when nothing changes.
pub fn unknown_conditions(
    conditions: &[NodeCondition],
    created: Option<Timestamp>,
    now: Timestamp,
) -> Option<Vec<NodeCondition>> {
    let now = Time(to_second(now));
    let mut changed = false;
    let mut out: Vec<NodeCondition> = conditions
        .iter()
        .map(|c| {
            if c.status == "Unknown" {
                return c.clone();
            }
            changed = true;
            NodeCondition {
                status: "Unknown".into(),
                reason: Some(STALE_REASON.into()),
                message: Some(STALE_MESSAGE.into()),
                last_transition_time: Some(now.clone()),
                ..c.clone()
            }
        })
        .collect();
    if !out.iter().any(|c| c.type_ == "Ready") {
        changed = true;
        out.insert(
            0,
            NodeCondition {
                type_: "Ready".into(),
                status: "Unknown".into(),
                reason: Some(NEVER_REASON.into()),
                message: Some(NEVER_MESSAGE.into()),
                last_heartbeat_time: created.map(Time),
                last_transition_time: Some(now),
            },
        );
    }
    changed.then_some(out)
}

/// The lifecycle taint key a node's Ready condition calls for: `not-ready` for False,
/// `unreachable` for Unknown, none for True — nor for a node that has not posted Ready yet (it is
/// given the grace period first, and then [`unknown_conditions`] adds an Unknown one).
pub fn lifecycle_taint(conditions: &[NodeCondition]) -> Option<&'static str> {
    match conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status.as_str()) {
        None | Some("True") => None,
        Some("False") => Some(NOT_READY),
        Some(_) => Some(UNREACHABLE),
    }
}

/// The effects a lifecycle taint key is written with: NoSchedule keeps new pods off the node
/// (the default tolerations only cover NoExecute, so without it the scheduler would place
/// replacements right back on a lost node), NoExecute evicts the pods already there.
const LIFECYCLE_EFFECTS: [&str; 2] = ["NoSchedule", "NoExecute"];

fn is_lifecycle(taint: &Taint) -> bool {
    (taint.key == NOT_READY || taint.key == UNREACHABLE) && LIFECYCLE_EFFECTS.contains(&taint.effect.as_str())
}

/// The node's taints with the lifecycle taints for key `want` (NoSchedule and NoExecute, as
/// Kubernetes' node lifecycle controller writes them) and without the other key's; `None` when
/// unchanged. A taint already there keeps its `timeAdded`: tolerations count from when it came.
pub fn with_lifecycle_taint(taints: &[Taint], want: Option<&str>, now: Timestamp) -> Option<Vec<Taint>> {
    let keep = |t: &&Taint| !is_lifecycle(t) || Some(t.key.as_str()) == want;
    let mut out: Vec<Taint> = taints.iter().filter(keep).cloned().collect();
    if let Some(key) = want {
        for effect in LIFECYCLE_EFFECTS {
            if !out.iter().any(|t| t.key == key && t.effect == effect) {
                // Only NoExecute taints carry the time tolerationSeconds count from.
                let time_added = (effect == "NoExecute").then(|| Time(to_second(now)));
                out.push(Taint { key: key.into(), effect: effect.into(), time_added, value: None });
            }
        }
    }
    (out.len() != taints.len() || out.iter().zip(taints).any(|(a, b)| a != b)).then_some(out)
}

/// The conditions of a pod on a node that is not Ready, with the pod's Ready condition turned
/// False (Kubernetes' MarkPodsNotReady): its agent may be gone and unable to say the pod stopped
/// serving, so Services stop sending it traffic, though the pod is only evicted once its
/// tolerations run out. `None` when Ready is not True already. An agent that is back reports the
/// pod's readiness again.
pub fn pod_not_ready(conditions: &[PodCondition], now: Timestamp) -> Option<Vec<PodCondition>> {
    if !conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True") {
        return None;
    }
    let out = conditions
        .iter()
        .map(|c| match c.type_.as_str() {
            "Ready" => {
                PodCondition { status: "False".into(), last_transition_time: Some(Time(to_second(now))), ..c.clone() }
            }
            _ => c.clone(),
        })
        .collect();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).expect("a valid time")
    }

    fn condition(kind: &str, status: &str) -> NodeCondition {
        NodeCondition {
            type_: kind.into(),
            status: status.into(),
            last_heartbeat_time: Some(Time(at(0))),
            ..NodeCondition::default()
        }
    }

    fn taint(key: &str, effect: &str, added: Option<i64>) -> Taint {
        Taint { key: key.into(), effect: effect.into(), time_added: added.map(|s| Time(at(s))), value: None }
    }

    #[test]
    fn a_node_is_stale_once_no_heartbeat_changed_for_the_grace_period() {
        let grace = SignedDuration::from_secs(40);
        let beat = |status: i64, lease: i64| Heartbeat { status: Some(at(status)), lease: Some(at(lease)) };
        let first = Probe::observe(None, beat(0, 0), at(100));
        // First seen: the grace period runs from then, however old the heartbeats are.
        assert_eq!(first.changed, at(100));
        assert!(!first.stale(at(139), grace));
        assert!(first.stale(at(140), grace));
        // The same heartbeats read again change nothing.
        let again = Probe::observe(Some(&first), beat(0, 0), at(130));
        assert_eq!(again, first);
        // A renewed Lease alone, or a status heartbeat alone, keeps the node alive.
        let leased = Probe::observe(Some(&first), beat(0, 130), at(130));
        assert!(!leased.stale(at(169), grace) && leased.stale(at(170), grace));
        let posted = Probe::observe(Some(&leased), beat(150, 130), at(151));
        assert_eq!((posted.changed, posted.deadline(grace)), (at(151), at(191)));
    }

    #[test]
    fn a_lost_node_has_its_conditions_turned_unknown_once() {
        let conditions = vec![condition("Ready", "True"), condition("MemoryPressure", "False")];
        let unknown = unknown_conditions(&conditions, Some(at(-50)), at(60)).expect("changed");
        for c in &unknown {
            assert_eq!(
                (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
                ("Unknown", Some("NodeStatusUnknown"), Some("Kubelet stopped posting node status."))
            );
            assert_eq!(c.last_heartbeat_time, Some(Time(at(0))), "the last heartbeat stays");
            assert_eq!(c.last_transition_time, Some(Time(at(60))));
        }
        assert_eq!(unknown_conditions(&unknown, Some(at(-50)), at(70)), None, "already Unknown");
        let never = unknown_conditions(&[], Some(at(-50)), at(60)).expect("changed");
        assert_eq!(
            (never[0].type_.as_str(), never[0].reason.as_deref(), never[0].last_heartbeat_time.clone()),
            ("Ready", Some("NodeStatusNeverUpdated"), Some(Time(at(-50))))
        );
    }

    #[test]
    fn pods_on_a_node_that_is_not_ready_turn_not_ready_once() {
        let pod_condition = |kind: &str, status: &str| PodCondition {
            type_: kind.into(),
            status: status.into(),
            last_transition_time: Some(Time(at(0))),
            ..PodCondition::default()
        };
        let ready = vec![pod_condition("Initialized", "True"), pod_condition("Ready", "True")];
        let marked = pod_not_ready(&ready, at(30)).expect("changed");
        let summary: Vec<(&str, &str, Option<Time>)> =
            marked.iter().map(|c| (c.type_.as_str(), c.status.as_str(), c.last_transition_time.clone())).collect();
        assert_eq!(summary, vec![("Initialized", "True", Some(Time(at(0)))), ("Ready", "False", Some(Time(at(30))))]);
        assert_eq!(pod_not_ready(&marked, at(40)), None, "already not ready");
        assert_eq!(pod_not_ready(&[pod_condition("Initialized", "True")], at(40)), None, "never ready");
    }

    #[test]
    fn the_ready_condition_picks_the_lifecycle_taints() {
        let (nr, ur) = (taint(NOT_READY, "NoExecute", Some(1)), taint(UNREACHABLE, "NoExecute", Some(2)));
        let (nr_ns, ur_ns) = (taint(NOT_READY, "NoSchedule", None), taint(UNREACHABLE, "NoSchedule", None));
        let other = taint("dedicated", "NoSchedule", None);
        let (nr_both, ur_both) = (vec![nr_ns.clone(), nr.clone()], vec![ur_ns.clone(), ur.clone()]);
        // (Ready status, taints before, expected "key:effect" after (None = unchanged))
        type Case<'a> = (Option<&'a str>, Vec<Taint>, Option<Vec<&'a str>>);
        let cases: Vec<Case> = vec![
            (Some("True"), vec![], None),
            (None, vec![], None),
            (Some("Unknown"), vec![], Some(vec!["unreachable:NoSchedule", "unreachable:NoExecute"])),
            (
                Some("False"),
                vec![other.clone()],
                Some(vec!["dedicated:NoSchedule", "not-ready:NoSchedule", "not-ready:NoExecute"]),
            ),
            (Some("Unknown"), ur_both.clone(), None),
            (Some("Unknown"), vec![ur.clone()], Some(vec!["unreachable:NoExecute", "unreachable:NoSchedule"])),
            (
                Some("Unknown"),
                vec![nr_ns, nr.clone(), other.clone()],
                Some(vec!["dedicated:NoSchedule", "unreachable:NoSchedule", "unreachable:NoExecute"]),
            ),
            (Some("False"), ur_both.clone(), Some(vec!["not-ready:NoSchedule", "not-ready:NoExecute"])),
            (Some("True"), vec![other.clone(), ur_ns, ur.clone()], Some(vec!["dedicated:NoSchedule"])),
            (Some("True"), nr_both, Some(vec![])),
            // Another effect under the same key is someone else's.
            (Some("True"), vec![taint(UNREACHABLE, "PreferNoSchedule", None)], None),
        ];
        for (i, (ready, taints, want)) in cases.into_iter().enumerate() {
            let conditions: Vec<NodeCondition> = ready.map(|s| condition("Ready", s)).into_iter().collect();
            let got = with_lifecycle_taint(&taints, lifecycle_taint(&conditions), at(9));
            let short = |t: &Taint| format!("{}:{}", t.key.trim_start_matches("node.kubernetes.io/"), t.effect);
            let keys = got.as_ref().map(|ts| ts.iter().map(short).collect::<Vec<_>>());
            assert_eq!(keys, want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>()), "case {i}");
            for t in got.iter().flatten().filter(|t| is_lifecycle(t) && !taints.contains(t)) {
                let stamp = (t.effect == "NoExecute").then(|| Time(at(9)));
                assert_eq!(t.time_added, stamp, "case {i}: a new NoExecute taint is stamped now");
            }
        }
        // Taints that stay keep their time.
        assert_eq!(with_lifecycle_taint(&[ur_both, vec![other]].concat(), Some(UNREACHABLE), at(9)), None);
    }
}
