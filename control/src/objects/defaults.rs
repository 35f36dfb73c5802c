//! Server-side defaults and status preparation, as kube-apiserver applies them before validation.
//!
//! Only defaults that clients and controllers rely on are filled (restart policy, Service type and
//! target ports, Deployment strategy, ...); each is set only when the field is absent.

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
            }
        }
        ("", "Service") => default_service(object),
        ("apps", "Deployment") => {
            default_at(object, &["spec", "replicas"], json!(1));
            default_at(object, &["spec", "revisionHistoryLimit"], json!(10));
            default_at(object, &["spec", "progressDeadlineSeconds"], json!(600));
            default_at(
                object,
                &["spec", "strategy"],
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
            );
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
