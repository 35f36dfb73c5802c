//! Server-side defaults and status preparation, as kube-apiserver applies them before validation.
//!
//! Only defaults that clients and controllers rely on are filled (restart policy, Service type and
//! target ports, Deployment strategy, ...); each is set only when the field is absent. Pods also
//! get what Kubernetes' DefaultTolerationSeconds, ServiceAccount and Priority admission add
//! ([`tolerate_lost_nodes`], [`admit_pod`]).

use serde_json::{Value, json};
use wasmkube_api::Kind;

/// Sets `object[path...] = value` when absent, creating intermediate objects.
fn default_at(object: &mut Value, path: &[&str], value: Value) {
    let mut cur = object;
    for (i, part) in path.iter().enumerate() {
        let Some(map) = cur.as_object_mut() else { return };
        if i == path.len() - 1 {
            map.entry(part.to_string()).or_insert(value);
            return;
        }
        cur = map.entry(part.to_string()).or_insert_with(|| json!({}));
    }
}

fn default_pod_spec(spec: &mut Value) {
    default_at(spec, &["restartPolicy"], json!("Always"));
    default_at(spec, &["terminationGracePeriodSeconds"], json!(30));
    default_at(spec, &["dnsPolicy"], json!("ClusterFirst"));
    default_at(spec, &["schedulerName"], json!("default-scheduler"));
    default_at(spec, &["securityContext"], json!({}));
    default_at(spec, &["enableServiceLinks"], json!(true));
    for list in ["initContainers", "containers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in containers {
                default_at(c, &["terminationMessagePath"], json!("/dev/termination-log"));
                default_at(c, &["terminationMessagePolicy"], json!("File"));
                default_at(c, &["imagePullPolicy"], json!("IfNotPresent"));
                default_at(c, &["resources"], json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        default_at(p, &["protocol"], json!("TCP"));
                    }
                }
            }
        }
    }
}

/// What Kubernetes' ServiceAccount and Priority admission plugins set on a pod (not on pod
/// templates): the namespace's `default` service account, and priority 0 without a class.
fn admit_pod(spec: &mut Value) {
    let account = spec
        .get("serviceAccountName")
        .or_else(|| spec.get("serviceAccount"))
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty())
        .unwrap_or("default")
        .to_string();
    default_at(spec, &["serviceAccountName"], json!(account));
    // The deprecated alias, kept equal as Kubernetes keeps it.
    default_at(spec, &["serviceAccount"], json!(account));
    if spec.get("priorityClassName").is_none_or(|c| c.as_str().is_none_or(str::is_empty)) {
        default_at(spec, &["priority"], json!(0));
    }
    default_at(spec, &["preemptionPolicy"], json!("PreemptLowerPriority"));
}

fn default_template(object: &mut Value, template_path: &[&str]) {
    let mut path: Vec<&str> = template_path.to_vec();
    path.push("spec");
    let mut cur = Some(&mut *object);
    for part in &path {
        cur = cur.and_then(|v| v.get_mut(*part));
    }
    if let Some(spec) = cur {
        default_pod_spec(spec);
    }
}

/// Applies the kind's defaults to an object about to be created or updated.
pub fn apply(kind: &Kind, object: &mut Value) {
    match (kind.group, kind.kind) {
        ("", "Pod") => {
            if let Some(spec) = object.get_mut("spec") {
                default_pod_spec(spec);
                admit_pod(spec);
            }
        }
        ("", "Service") => default_service(object),
        ("apps", "Deployment") => {
            default_at(object, &["spec", "replicas"], json!(1));
            default_at(object, &["spec", "revisionHistoryLimit"], json!(10));
            default_at(object, &["spec", "progressDeadlineSeconds"], json!(600));
            // Field by field, as Kubernetes does: `kubectl create deployment` sends `strategy: {}`.
            default_at(object, &["spec", "strategy", "type"], json!("RollingUpdate"));
            if object.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("RollingUpdate") {
                default_at(object, &["spec", "strategy", "rollingUpdate", "maxUnavailable"], json!("25%"));
                default_at(object, &["spec", "strategy", "rollingUpdate", "maxSurge"], json!("25%"));
            }
            default_template(object, &["spec", "template"]);
        }
        ("apps", "ReplicaSet") | ("apps", "StatefulSet") => {
            default_at(object, &["spec", "replicas"], json!(1));
            default_template(object, &["spec", "template"]);
        }
        ("apps", "DaemonSet") => default_template(object, &["spec", "template"]),
        ("batch", "Job") => {
            default_at(object, &["spec", "backoffLimit"], json!(6));
            default_at(object, &["spec", "completions"], json!(1));
            default_at(object, &["spec", "parallelism"], json!(1));
            default_template(object, &["spec", "template"]);
        }
        ("batch", "CronJob") => {
            default_at(object, &["spec", "concurrencyPolicy"], json!("Allow"));
            default_at(object, &["spec", "suspend"], json!(false));
            default_template(object, &["spec", "jobTemplate", "spec", "template"]);
        }
        _ => {}
    }
}

fn default_service(object: &mut Value) {
    default_at(object, &["spec", "type"], json!("ClusterIP"));
    default_at(object, &["spec", "sessionAffinity"], json!("None"));
    let service_type = object.pointer("/spec/type").and_then(Value::as_str).unwrap_or_default().to_string();
    if service_type != "ExternalName" {
        default_at(object, &["spec", "internalTrafficPolicy"], json!("Cluster"));
    }
    if matches!(service_type.as_str(), "NodePort" | "LoadBalancer") {
        default_at(object, &["spec", "externalTrafficPolicy"], json!("Cluster"));
    }
    if service_type == "LoadBalancer" {
        default_at(object, &["spec", "allocateLoadBalancerNodePorts"], json!(true));
    }
    if let Some(ports) = object.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for p in ports {
            default_at(p, &["protocol"], json!("TCP"));
            if p.get("targetPort").is_none()
                && let Some(port) = p.get("port").cloned()
            {
                default_at(p, &["targetPort"], port);
            }
        }
    }
}

/// How long a pod tolerates a not-ready or unreachable node unless configured otherwise
/// (kube-apiserver's `--default-not-ready-toleration-seconds`, `--default-unreachable-...`).
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// The node lifecycle controller's NoExecute taints (see `controller::node_lifecycle`).
const LOST_NODE_TAINTS: [&str; 2] = ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"];

/// Kubernetes' DefaultTolerationSeconds admission: a new pod that does not already tolerate the
/// `not-ready` / `unreachable` NoExecute taints tolerates each for `seconds`, so a node that stops
/// answering has its pods evicted (and replaced elsewhere by their controllers) after that long
/// instead of at once or never. A toleration with an empty key or empty effect counts as
/// tolerating them, as in Kubernetes.
pub fn tolerate_lost_nodes(kind: &Kind, object: &mut Value, seconds: i64) {
    if !(kind.group.is_empty() && kind.kind == "Pod") {
        return;
    }
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if tolerations.is_null() {
        *tolerations = json!([]);
    }
    let Some(list) = tolerations.as_array_mut() else { return };
    for key in LOST_NODE_TAINTS {
        let covered = list.iter().any(|t| {
            let field = |name: &str| t.get(name).and_then(Value::as_str).unwrap_or("");
            (field("key") == key || field("key").is_empty()) && matches!(field("effect"), "NoExecute" | "")
        });
        if !covered {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}));
        }
    }
}

/// Sets the status an object starts with: controllers own status, so most kinds start empty.
pub fn prepare_status_for_create(kind: &Kind, object: &mut Value) {
    let Some(map) = object.as_object_mut() else { return };
    match (kind.group, kind.kind) {
        ("", "Namespace") => {
            map.insert("status".into(), json!({"phase": "Active"}));
            let spec = map.entry("spec").or_insert_with(|| json!({}));
            default_at(spec, &["finalizers"], json!(["kubernetes"]));
        }
        ("", "Pod") => {
            map.insert("status".into(), json!({"phase": "Pending"}));
        }
        // Nodes report their own status at registration; Services keep what they are created with.
        ("", "Node") | ("", "Service") => {}
        _ if kind.has_status => {
            map.remove("status");
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static Kind {
        wasmkube_api::kinds::by_resource("", "v1", "pods").expect("registered")
    }

    fn keys(pod: &Value) -> Vec<(String, Option<i64>)> {
        let list = pod.pointer("/spec/tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
        list.iter().map(|t| (t["key"].as_str().unwrap_or("").to_string(), t["tolerationSeconds"].as_i64())).collect()
    }

    #[test]
    fn pods_get_lost_node_tolerations_unless_they_have_their_own() {
        let (nr, ur) = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable");
        // (tolerations given, (key, tolerationSeconds) after defaulting with 300)
        type Case<'a> = (Value, Vec<(&'a str, Option<i64>)>);
        let cases: Vec<Case> = vec![
            (Value::Null, vec![(nr, Some(300)), (ur, Some(300))]),
            (json!([{"key": "gpu", "operator": "Exists"}]), vec![("gpu", None), (nr, Some(300)), (ur, Some(300))]),
            (
                json!([{"key": ur, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]),
                vec![(ur, Some(5)), (nr, Some(300))],
            ),
            // No effect: tolerates every effect of that key, NoExecute included.
            (json!([{"key": nr, "operator": "Exists"}]), vec![(nr, None), (ur, Some(300))]),
            // Only NoSchedule: the NoExecute taint is still not tolerated.
            (
                json!([{"key": nr, "operator": "Exists", "effect": "NoSchedule"}]),
                vec![(nr, None), (nr, Some(300)), (ur, Some(300))],
            ),
            // An empty key with Exists tolerates everything.
            (json!([{"operator": "Exists"}]), vec![("", None)]),
        ];
        for (given, want) in cases {
            let mut pod = json!({"spec": {"containers": []}});
            if !given.is_null() {
                pod["spec"]["tolerations"] = given.clone();
            }
            tolerate_lost_nodes(pods(), &mut pod, 300);
            let want: Vec<(String, Option<i64>)> = want.into_iter().map(|(k, s)| (k.to_string(), s)).collect();
            assert_eq!(keys(&pod), want, "{given}");
        }
    }

    #[test]
    fn only_pods_get_lost_node_tolerations() {
        let rs = wasmkube_api::kinds::by_resource("apps", "v1", "replicasets").expect("registered");
        let mut object = json!({"spec": {"template": {"spec": {}}}});
        tolerate_lost_nodes(rs, &mut object, 300);
        assert_eq!(object, json!({"spec": {"template": {"spec": {}}}}));
    }
}
