//! The disruption controller: keeps each PodDisruptionBudget's status — how many of its pods are
//! healthy, how many must be, and so how many voluntary disruptions (evictions) are allowed now —
//! as kube-controller-manager's does. The eviction subresource (`objects::eviction`) reads that
//! status and spends it.
//!
//! Level-triggered: any change to pods, budgets or the controllers whose scale sets a budget's
//! expected pod count starts a pass over every budget. [`budget`] is the pure arithmetic.
//!
//! `status.disruptedPods` records pods the eviction subresource has let go but whose deletion this
//! controller has not seen yet. They do not count as healthy, so two evictions racing past one
//! allowance cannot both succeed. An entry is dropped when the pod is gone or is being deleted,
//! or after two minutes (the eviction's delete must have failed).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wasmkube_api::Kind;
use wasmkube_api::selector::LabelSelector;

use super::{Changes, describe};
use crate::objects::{ListOptions, Objects, Subresource, Target, WriteOptions};
use crate::status::ApiError;

/// How long an eviction's entry in `disruptedPods` keeps its pod out of the healthy count.
pub const DISRUPTED_POD_TIMEOUT: Duration = Duration::from_secs(120);
/// How soon a failed pass is tried again; also the resync that expires `disruptedPods` entries.
const RESYNC: Duration = Duration::from_secs(5);
/// How long a burst of changes (a rollout) is gathered into one pass.
const BATCH: Duration = Duration::from_millis(20);

fn kind(group: &str, version: &str, plural: &str) -> &'static Kind {
    wasmkube_api::kinds::by_resource(group, version, plural).expect("built-in kinds are registered")
}

pub(crate) fn budgets_kind() -> &'static Kind {
    kind("policy", "v1", "poddisruptionbudgets")
}

/// Runs until `cancel` fires.
pub async fn run(objects: Objects, cancel: CancellationToken) {
    let prefixes = [
        budgets_kind(),
        kind("", "v1", "pods"),
        kind("apps", "v1", "replicasets"),
        kind("apps", "v1", "deployments"),
        kind("apps", "v1", "statefulsets"),
    ]
    .map(|k| k.key_prefix())
    .to_vec();
    let mut changes = Changes::filtered(&objects, prefixes, matters);
    loop {
        let waiting = match sync_all(&objects).await {
            Ok(waiting) => waiting,
            Err(e) => {
                tracing::warn!(error = %describe(&e), "disruption budget pass failed");
                true
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = changes.next() => {}
            _ = tokio::time::sleep(RESYNC), if waiting => {}
        }
        changes.settle(BATCH).await;
    }
}

/// Whether a store event can change some budget's status: a budget changing; a pod or controller
/// arriving or going; or a change to what a budget reads of it (a pod's labels, owners, deletion
/// mark and readiness; a controller's owners and replicas). Most writes in a busy cluster are pod
/// status reports that change none of these, and a pass reads every pod.
fn matters(event: &crate::store::Event) -> bool {
    if event.key.starts_with(&budgets_kind().key_prefix()) {
        return true;
    }
    let (Some(new), Some(prev)) = (&event.value, &event.prev) else { return true };
    let read = |bytes: &[u8]| {
        let object: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        let field = |path: &str| object.pointer(path).cloned();
        [
            field("/metadata/labels"),
            field("/metadata/ownerReferences"),
            field("/metadata/deletionTimestamp"),
            field("/spec/replicas"),
            Some(Value::Bool(is_ready(&object))),
        ]
    };
    read(new) != read(&prev.value)
}

fn items(list: Value) -> Vec<Value> {
    match list {
        Value::Object(mut o) => match o.remove("items") {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

async fn list(objects: &Objects, kind: &'static Kind) -> Result<Vec<Value>, ApiError> {
    let all = Target { kind, namespace: None, name: None };
    Ok(items(objects.list(&all, &ListOptions::default()).await?))
}

/// One pass over every budget; true while some `disruptedPods` entry still waits to expire.
async fn sync_all(objects: &Objects) -> Result<bool, ApiError> {
    let budgets = list(objects, budgets_kind()).await?;
    if budgets.is_empty() {
        return Ok(false);
    }
    let pods = list(objects, kind("", "v1", "pods")).await?;
    let scales = Scales::read(objects).await?;
    let now = Timestamp::now();
    let mut waiting = false;
    for pdb in &budgets {
        let namespace = wasmkube_api::meta::namespace(pdb).unwrap_or_default();
        let in_namespace: Vec<&Value> =
            pods.iter().filter(|p| wasmkube_api::meta::namespace(p) == Some(namespace)).collect();
        let status = budget(pdb, &in_namespace, &scales, now);
        waiting |= status.get("disruptedPods").and_then(Value::as_object).is_some_and(|d| !d.is_empty());
        if same_status(pdb.get("status"), &status) {
            continue;
        }
        // Guarded by the budget's resourceVersion: an eviction that spent an allowance meanwhile
        // wins, and the next pass (its write is a change) recomputes from it.
        let mut updated = pdb.clone();
        updated["status"] = status;
        let target = Target {
            kind: budgets_kind(),
            namespace: Some(namespace.to_string()),
            name: Some(wasmkube_api::meta::name(pdb).to_string()),
        };
        match objects.update(&target, updated, Subresource::Status, &WriteOptions::default()).await {
            Ok(_) | Err(ApiError::Conflict { .. } | ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(waiting)
}

/// Status equality ignoring the conditions' transition times (which `budget` sets to now).
fn same_status(old: Option<&Value>, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(conditions) = v.get_mut("conditions").and_then(Value::as_array_mut) {
            for c in conditions {
                if let Some(c) = c.as_object_mut() {
                    c.remove("lastTransitionTime");
                }
            }
        }
        v
    };
    old.is_some_and(|old| strip(old) == strip(new))
}

/// The replicas of every scalable controller, by uid, and which Deployment controls each
/// ReplicaSet: a budget's expected pod count is the sum of its pods' controllers' scales.
#[derive(Debug, Default)]
pub struct Scales {
    /// uid → (replicas, uid of its own controller, if a Deployment).
    by_uid: HashMap<String, (i64, Option<String>)>,
}

impl Scales {
    async fn read(objects: &Objects) -> Result<Self, ApiError> {
        let mut scales = Scales::default();
        for plural in ["replicasets", "deployments", "statefulsets"] {
            for object in list(objects, kind("apps", "v1", plural)).await? {
                scales.insert(&object);
            }
        }
        Ok(scales)
    }

    /// Records a controller (ReplicaSet, Deployment, StatefulSet) as stored.
    pub fn insert(&mut self, object: &Value) {
        let Some(uid) = object.pointer("/metadata/uid").and_then(Value::as_str) else { return };
        let replicas = object.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
        let deployment = controller_of(object).filter(|o| o.0 == "Deployment").map(|o| o.1.to_string());
        self.by_uid.insert(uid.to_string(), (replicas, deployment));
    }

    /// The scale that counts for a pod's controller: a ReplicaSet's Deployment's when it has one
    /// (a rollout's old and new ReplicaSets share one budget), else its own; `None` when unknown.
    fn controller_scale(&self, uid: &str) -> Option<(String, i64)> {
        let (replicas, deployment) = self.by_uid.get(uid)?;
        match deployment.as_ref().and_then(|d| self.by_uid.get(d).map(|(r, _)| (d.clone(), *r))) {
            Some(top) => Some(top),
            None => Some((uid.to_string(), *replicas)),
        }
    }
}

/// The (kind, uid) of an object's controlling owner.
fn controller_of(object: &Value) -> Option<(&str, &str)> {
    object.pointer("/metadata/ownerReferences")?.as_array()?.iter().find_map(|o| {
        (o.get("controller").and_then(Value::as_bool) == Some(true))
            .then(|| Some((o.get("kind")?.as_str()?, o.get("uid")?.as_str()?)))
            .flatten()
    })
}

pub(crate) fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten().any(|c| {
        c.get("type").and_then(Value::as_str) == Some("Ready")
            && c.get("status").and_then(Value::as_str) == Some("True")
    })
}

/// An IntOrString budget field against `expected` pods: a number as is, a percentage rounded up
/// (as Kubernetes rounds both minAvailable and maxUnavailable percentages).
fn resolve(value: &Value, expected: i64) -> Option<i64> {
    let value: IntOrString = serde_json::from_value(value.clone()).ok()?;
    let expected = i32::try_from(expected).ok()?;
    super::deployment::rollout::scaled_value(&value, expected, true).ok().map(i64::from)
}

/// The budget's status now: its pods in `pods` (already the budget's namespace), the
/// controllers' scales, and `disruptedPods` carried over from the stored status.
pub fn budget(pdb: &Value, pods: &[&Value], scales: &Scales, now: Timestamp) -> Value {
    let selector = LabelSelector::from_spec(pdb.pointer("/spec/selector").unwrap_or(&Value::Null));
    let matching: Vec<&Value> = match &selector {
        Ok(selector) => pods.iter().copied().filter(|p| selector.matches_object(p)).collect(),
        Err(_) => Vec::new(),
    };
    let present: HashMap<&str, &Value> = matching.iter().map(|p| (wasmkube_api::meta::name(p), *p)).collect();
    // Evictions the store has not seen finish: still pending, still not deleting, not expired.
    let mut disrupted = BTreeMap::new();
    if let Some(entries) = pdb.pointer("/status/disruptedPods").and_then(Value::as_object) {
        for (name, at) in entries {
            let pending =
                present.get(name.as_str()).is_some_and(|p| p.pointer("/metadata/deletionTimestamp").is_none());
            let fresh = at
                .as_str()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .is_some_and(|t| now.duration_since(t).unsigned_abs() < DISRUPTED_POD_TIMEOUT);
            if pending && fresh {
                disrupted.insert(name.clone(), at.clone());
            }
        }
    }
    let current_healthy = matching
        .iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .filter(|p| !disrupted.contains_key(wasmkube_api::meta::name(p)))
        .filter(|p| is_ready(p))
        .count() as i64;
    let spec = pdb.get("spec").cloned().unwrap_or(Value::Null);
    let (expected, desired) = match (spec.get("minAvailable"), spec.get("maxUnavailable")) {
        // A plain minimum needs no controller: the pods that exist are the expected ones.
        (Some(Value::Number(n)), None | Some(Value::Null)) => (matching.len() as i64, n.as_i64().unwrap_or(0)),
        (min, max) => {
            let expected = expected_pods(&matching, scales);
            let desired = match (min, max) {
                (_, Some(max)) if !max.is_null() => expected - resolve(max, expected).unwrap_or(0),
                (Some(min), _) if !min.is_null() => resolve(min, expected).unwrap_or(0),
                _ => 0,
            };
            (expected, desired.max(0))
        }
    };
    let allowed = (current_healthy - desired).max(0);
    let condition = if allowed > 0 {
        json!({"type": "DisruptionAllowed", "status": "True", "reason": "SufficientPods", "message": ""})
    } else {
        json!({"type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods", "message": ""})
    };
    let mut condition = condition;
    condition["lastTransitionTime"] = transition_time(pdb, &condition, now);
    condition["observedGeneration"] = pdb.pointer("/metadata/generation").cloned().unwrap_or(json!(1));
    let mut status = json!({
        "observedGeneration": pdb.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        "currentHealthy": current_healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "disruptionsAllowed": allowed,
        "conditions": [condition],
    });
    if !disrupted.is_empty() {
        status["disruptedPods"] = json!(disrupted);
    }
    status
}

/// Pods the budget's controllers want: the sum of their scales, each controller once. A pod
/// without a known controller counts as itself.
fn expected_pods(pods: &[&Value], scales: &Scales) -> i64 {
    let mut controllers = BTreeMap::new();
    let mut uncontrolled = 0;
    for pod in pods {
        match controller_of(pod).and_then(|(_, uid)| scales.controller_scale(uid)) {
            Some((uid, replicas)) => {
                controllers.insert(uid, replicas);
            }
            None => uncontrolled += 1,
        }
    }
    controllers.values().sum::<i64>() + uncontrolled
}

/// The condition's last transition time: kept while its status stays the same.
fn transition_time(pdb: &Value, condition: &Value, now: Timestamp) -> Value {
    let previous = pdb
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c.get("type") == condition.get("type")));
    match previous {
        Some(p) if p.get("status") == condition.get("status") && p.get("lastTransitionTime").is_some() => {
            p["lastTransitionTime"].clone()
        }
        _ => json!(now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool, owner: Option<&str>) -> Value {
        let mut pod = json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
        if let Some(uid) = owner {
            pod["metadata"]["ownerReferences"] = json!([{"kind": "ReplicaSet", "uid": uid, "controller": true}]);
        }
        pod
    }

    fn pdb(spec: Value) -> Value {
        let mut spec = spec;
        spec["selector"] = json!({"matchLabels": {"app": "web"}});
        json!({"metadata": {"name": "web", "namespace": "default", "generation": 2}, "spec": spec})
    }

    fn scales(replicas: i64) -> Scales {
        let mut scales = Scales::default();
        scales.insert(&json!({"metadata": {"uid": "rs", "ownerReferences": [
            {"kind": "Deployment", "uid": "d", "controller": true}]}, "spec": {"replicas": 1}}));
        scales.insert(&json!({"metadata": {"uid": "d"}, "spec": {"replicas": replicas}}));
        scales
    }

    fn numbers(status: &Value) -> [i64; 4] {
        ["expectedPods", "desiredHealthy", "currentHealthy", "disruptionsAllowed"]
            .map(|f| status.get(f).and_then(Value::as_i64).unwrap_or(-1))
    }

    #[test]
    fn budgets_count_healthy_pods_against_the_minimum_or_the_controllers_scale() {
        let pods = [pod("a", true, Some("rs")), pod("b", true, Some("rs")), pod("c", false, Some("rs"))];
        let refs: Vec<&Value> = pods.iter().collect();
        let now = Timestamp::now();
        // (spec, scale of the Deployment) → expected, desired, healthy, allowed
        let table = [
            (json!({"minAvailable": 2}), 3, [3, 2, 2, 0]),
            (json!({"minAvailable": 1}), 3, [3, 1, 2, 1]),
            (json!({"maxUnavailable": 1}), 3, [3, 2, 2, 0]),
            (json!({"maxUnavailable": 1}), 2, [2, 1, 2, 1]),
            (json!({"minAvailable": "50%"}), 3, [3, 2, 2, 0]),
            (json!({"maxUnavailable": "50%"}), 4, [4, 2, 2, 0]),
            (json!({"maxUnavailable": "34%"}), 3, [3, 1, 2, 1]),
            (json!({}), 3, [3, 0, 2, 2]),
        ];
        for (spec, replicas, want) in table {
            let status = budget(&pdb(spec.clone()), &refs, &scales(replicas), now);
            assert_eq!(numbers(&status), want, "{spec} at scale {replicas}");
            let allowed = status["conditions"][0]["status"] == "True";
            assert_eq!(allowed, want[3] > 0, "{spec}");
            assert_eq!(status["observedGeneration"], 2);
        }
    }

    #[test]
    fn an_evicted_pod_stays_out_of_the_healthy_count_until_deleted_or_expired() {
        let now = Timestamp::now();
        let mut budget_object = pdb(json!({"minAvailable": 1}));
        let recent = (now - jiff::SignedDuration::from_secs(10)).to_string();
        let old = (now - jiff::SignedDuration::from_secs(600)).to_string();
        budget_object["status"] = json!({"disruptedPods": {"a": recent, "b": old, "gone": recent}});
        let pods = [pod("a", true, None), pod("b", true, None)];
        let refs: Vec<&Value> = pods.iter().collect();
        let status = budget(&budget_object, &refs, &Scales::default(), now);
        assert_eq!(numbers(&status), [2, 1, 1, 0], "a is disrupted, b's entry expired");
        assert_eq!(
            status["disruptedPods"].as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["a".to_string()])
        );
        let mut deleting = pods.clone();
        deleting[0]["metadata"]["deletionTimestamp"] = json!(recent);
        let refs: Vec<&Value> = deleting.iter().collect();
        let status = budget(&budget_object, &refs, &Scales::default(), now);
        assert!(status.get("disruptedPods").is_none(), "a deleting pod's entry is done");
    }

    #[test]
    fn only_changes_a_budget_reads_start_a_pass() {
        use crate::store::{Event, KeyValue};
        let pods = kind("", "v1", "pods").key_prefix();
        let event = |key: &str, prev: Option<&Value>, new: Option<&Value>| Event {
            revision: 2,
            key: key.to_string(),
            value: new.map(|v| serde_json::to_vec(v).expect("json")),
            prev: prev.map(|v| KeyValue {
                key: key.to_string(),
                value: serde_json::to_vec(v).expect("json"),
                mod_revision: 1,
            }),
        };
        let key = format!("{pods}default/a");
        let running = pod("a", true, None);
        let mut reported = running.clone();
        reported["status"]["podIP"] = json!("10.0.0.1");
        assert!(!matters(&event(&key, Some(&running), Some(&reported))), "a status report");
        assert!(matters(&event(&key, Some(&running), Some(&pod("a", false, None)))), "readiness");
        let mut relabelled = running.clone();
        relabelled["metadata"]["labels"] = json!({"app": "other"});
        assert!(matters(&event(&key, Some(&running), Some(&relabelled))), "labels");
        assert!(matters(&event(&key, None, Some(&running))), "a new pod");
        assert!(matters(&event(&key, Some(&running), None)), "a pod gone");
        let budget = format!("{}default/web", budgets_kind().key_prefix());
        assert!(matters(&event(&budget, Some(&json!({})), Some(&json!({"status": {}})))), "budgets always");
    }

    #[test]
    fn the_selector_picks_the_pods() {
        let mut other = pod("x", true, None);
        other["metadata"]["labels"] = json!({"app": "db"});
        let pods = [pod("a", true, None), other];
        let refs: Vec<&Value> = pods.iter().collect();
        let status = budget(&pdb(json!({"minAvailable": 0})), &refs, &Scales::default(), Timestamp::now());
        assert_eq!(numbers(&status), [1, 0, 1, 1]);
    }
}
