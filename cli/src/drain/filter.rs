//! Which of a node's pods `drain` removes, and why it refuses: kubectl's pod filters (DaemonSet,
//! mirror, local storage, unreplicated), applied in its order with its short-circuit. Pure: the
//! DaemonSets the pods name are looked up beforehand.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

const DAEMON_SET_FATAL: &str = "DaemonSet-managed Pods (use --ignore-daemonsets to ignore)";
const DAEMON_SET_WARNING: &str = "ignoring DaemonSet-managed Pods";
const LOCAL_STORAGE_FATAL: &str = "Pods with local storage (use --delete-emptydir-data to override)";
const LOCAL_STORAGE_WARNING: &str = "deleting Pods with local storage";
const UNMANAGED_FATAL: &str = "Pods that declare no controller (use --force to override)";
const UNMANAGED_WARNING: &str = "deleting Pods that declare no controller";
/// Static pods' API copies carry this; the kubelet, not the API, owns them.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The drain flags the filters read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    pub force: bool,
    pub ignore_daemonsets: bool,
    pub delete_emptydir_data: bool,
}

/// Whether the DaemonSet a pod names as its controller exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonSet {
    Found,
    /// Not found; the message is the API's.
    Missing(String),
    /// The lookup failed otherwise.
    Failed(String),
}

/// One filter's (and finally the pod's) verdict, as kubectl's `PodDeleteStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delete,
    Skip,
    Warn { delete: bool, message: String },
    Refuse(String),
}

impl Verdict {
    fn deletes(&self) -> bool {
        matches!(self, Verdict::Delete | Verdict::Warn { delete: true, .. })
    }

    fn warn(delete: bool, message: &str) -> Self {
        Verdict::Warn { delete, message: message.to_string() }
    }
}

/// What to do with a node's pods.
#[derive(Debug, Default)]
pub struct Plan {
    pub pods: Vec<Pod>,
    /// kubectl's warning line (without `Warning: `): `message: ns/a, ns/b; message: ...`.
    pub warnings: Option<String>,
    /// kubectl's refusals: `cannot delete <why>: ns/a, ns/b`.
    pub errors: Vec<String>,
}

/// `(namespace, name)` of the DaemonSet controlling `pod`, if one does.
pub fn daemon_set_of(pod: &Pod) -> Option<(String, String)> {
    let owner = controller(pod)?;
    let is_daemon_set = owner.kind == "DaemonSet" && owner.api_version == "apps/v1";
    is_daemon_set.then(|| (pod.metadata.namespace.clone().unwrap_or_default(), owner.name.clone()))
}

fn controller(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true))
}

fn finished(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn daemon_set_filter(pod: &Pod, policy: Policy, daemon_sets: &BTreeMap<(String, String), DaemonSet>) -> Verdict {
    let Some(key) = daemon_set_of(pod) else { return Verdict::Delete };
    if finished(pod) {
        return Verdict::Delete;
    }
    match daemon_sets.get(&key).unwrap_or(&DaemonSet::Found) {
        // Orphans of a deleted DaemonSet go with --force, like other unmanaged pods.
        DaemonSet::Missing(message) if policy.force => Verdict::warn(true, message),
        DaemonSet::Missing(message) | DaemonSet::Failed(message) => Verdict::Refuse(message.clone()),
        DaemonSet::Found if !policy.ignore_daemonsets => Verdict::Refuse(DAEMON_SET_FATAL.to_string()),
        DaemonSet::Found => Verdict::warn(false, DAEMON_SET_WARNING),
    }
}

fn mirror_filter(pod: &Pod) -> Verdict {
    let mirror = pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(MIRROR_ANNOTATION));
    if mirror { Verdict::Skip } else { Verdict::Delete }
}

fn local_storage_filter(pod: &Pod, policy: Policy) -> Verdict {
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    if !volumes.into_iter().flatten().any(|v| v.empty_dir.is_some()) || finished(pod) {
        return Verdict::Delete;
    }
    if policy.delete_emptydir_data {
        Verdict::warn(true, LOCAL_STORAGE_WARNING)
    } else {
        Verdict::Refuse(LOCAL_STORAGE_FATAL.to_string())
    }
}

fn unreplicated_filter(pod: &Pod, policy: Policy) -> Verdict {
    if finished(pod) || controller(pod).is_some() {
        Verdict::Delete
    } else if policy.force {
        Verdict::warn(true, UNMANAGED_WARNING)
    } else {
        Verdict::Refuse(UNMANAGED_FATAL.to_string())
    }
}

/// The filters in kubectl's order; the first that keeps the pod decides, else the last speaks
/// (so, as in kubectl, an earlier filter's warning is lost when a later one is silent).
pub fn verdict(pod: &Pod, policy: Policy, daemon_sets: &BTreeMap<(String, String), DaemonSet>) -> Verdict {
    let filters: [&dyn Fn() -> Verdict; 4] = [
        &|| daemon_set_filter(pod, policy, daemon_sets),
        &|| mirror_filter(pod),
        &|| local_storage_filter(pod, policy),
        &|| unreplicated_filter(pod, policy),
    ];
    let mut verdict = Verdict::Delete;
    for filter in filters {
        verdict = filter();
        if !verdict.deletes() {
            break;
        }
    }
    verdict
}

/// Sorts a node's pods into those to remove, the warnings and the refusals.
pub fn plan(pods: Vec<Pod>, policy: Policy, daemon_sets: &BTreeMap<(String, String), DaemonSet>) -> Plan {
    // Messages keep the order they were first seen in (kubectl's map order is random).
    let mut warnings: Vec<(String, Vec<String>)> = Vec::new();
    let mut refusals: Vec<(String, Vec<String>)> = Vec::new();
    let mut plan = Plan::default();
    for pod in pods {
        let who = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        let verdict = verdict(&pod, policy, daemon_sets);
        match &verdict {
            Verdict::Warn { message, .. } => group(&mut warnings, message, who),
            Verdict::Refuse(message) => group(&mut refusals, message, who),
            Verdict::Delete | Verdict::Skip => {}
        }
        if verdict.deletes() {
            plan.pods.push(pod);
        }
    }
    let joined = |(message, pods): (String, Vec<String>)| format!("{message}: {}", pods.join(", "));
    let warnings: Vec<String> = warnings.into_iter().map(joined).collect();
    plan.warnings = (!warnings.is_empty()).then(|| warnings.join("; "));
    plan.errors = refusals.into_iter().map(|r| format!("cannot delete {}", joined(r))).collect();
    plan
}

fn group(groups: &mut Vec<(String, Vec<String>)>, message: &str, who: String) {
    let message = if message.is_empty() { "unexpected error" } else { message };
    match groups.iter_mut().find(|(m, _)| m == message) {
        Some((_, pods)) => pods.push(who),
        None => groups.push((message.to_string(), vec![who])),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn pod(name: &str, owner: Option<&str>, extra: Value) -> Pod {
        let owners = owner.map(|kind| {
            let api_version = if kind == "Node" { "v1" } else { "apps/v1" };
            json!([{"apiVersion": api_version, "kind": kind, "name": "owner", "uid": "u", "controller": true}])
        });
        let mut value = json!({"metadata": {"name": name, "namespace": "default", "ownerReferences": owners},
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        if let (Some(map), Some(more)) = (value.as_object_mut(), extra.as_object()) {
            for (k, v) in more {
                map.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(value).expect("a valid pod")
    }

    fn names(plan: &Plan) -> Vec<&str> {
        plan.pods.iter().map(|p| p.metadata.name.as_deref().unwrap_or_default()).collect()
    }

    #[test]
    fn controller_owned_pods_go_and_bare_pods_need_force() {
        let pods = || vec![pod("web", Some("ReplicaSet"), json!({})), pod("bare", None, json!({}))];
        let none = BTreeMap::new();
        let refused = plan(pods(), Policy::default(), &none);
        assert_eq!(names(&refused), ["web"]);
        assert_eq!(
            refused.errors,
            ["cannot delete Pods that declare no controller (use --force to override): default/bare"]
        );
        let forced = plan(pods(), Policy { force: true, ..Policy::default() }, &none);
        assert_eq!(names(&forced), ["web", "bare"]);
        assert!(forced.errors.is_empty());
        assert_eq!(forced.warnings.as_deref(), Some("deleting Pods that declare no controller: default/bare"));
    }

    #[test]
    fn daemon_set_pods_are_refused_or_ignored_and_orphans_need_force() {
        let ds = || vec![pod("agent", Some("DaemonSet"), json!({}))];
        let found = BTreeMap::from([(("default".to_string(), "owner".to_string()), DaemonSet::Found)]);
        let refused = plan(ds(), Policy::default(), &found);
        assert_eq!(
            refused.errors,
            ["cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): default/agent"]
        );
        let ignored = plan(ds(), Policy { ignore_daemonsets: true, ..Policy::default() }, &found);
        assert!(ignored.pods.is_empty() && ignored.errors.is_empty());
        assert_eq!(ignored.warnings.as_deref(), Some("ignoring DaemonSet-managed Pods: default/agent"));
        let gone =
            BTreeMap::from([(("default".to_string(), "owner".to_string()), DaemonSet::Missing("not found".into()))]);
        assert_eq!(plan(ds(), Policy::default(), &gone).errors, ["cannot delete not found: default/agent"]);
        assert_eq!(names(&plan(ds(), Policy { force: true, ..Policy::default() }, &gone)), ["agent"]);
    }

    #[test]
    fn local_storage_needs_its_flag_and_finished_or_mirror_pods_are_special() {
        let scratch =
            json!({"spec": {"containers": [{"name": "c", "image": "i"}], "volumes": [{"name": "s", "emptyDir": {}}]}});
        let with_data = || vec![pod("cache", Some("ReplicaSet"), scratch.clone())];
        let none = BTreeMap::new();
        assert_eq!(
            plan(with_data(), Policy::default(), &none).errors,
            ["cannot delete Pods with local storage (use --delete-emptydir-data to override): default/cache"]
        );
        let allowed = plan(with_data(), Policy { delete_emptydir_data: true, ..Policy::default() }, &none);
        assert_eq!(names(&allowed), ["cache"]);
        // The unreplicated filter comes last and is silent, so the storage warning is dropped, as in kubectl.
        assert_eq!(allowed.warnings, None);
        let done = pod("job", None, json!({"status": {"phase": "Succeeded"}}));
        let mirror = pod(
            "static",
            Some("Node"),
            json!({"metadata": {"name": "static", "namespace": "default",
            "annotations": {MIRROR_ANNOTATION: "x"}}}),
        );
        let mixed = plan(vec![done, mirror], Policy::default(), &none);
        assert_eq!(names(&mixed), ["job"]);
        assert!(mixed.errors.is_empty());
    }
}
