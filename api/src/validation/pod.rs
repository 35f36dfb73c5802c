//! Pod specs wherever they appear: a Pod's `spec`, and the pod templates of workload controllers.
//!
//! Checks containers (names, images, ports, environment, volume mounts), volumes and the restart
//! policy, with Kubernetes' field paths (`spec.template.spec.containers[0].ports[1].containerPort`).

use std::collections::HashSet;

use serde_json::Value;

use crate::annotations::WasmSettings;

use super::names::{dns1123_label_errors, env_var_name_errors, port_name_errors, port_number_error};
use super::object_meta::{validate_annotations, validate_labels};
use super::{Cause, field, list_field, push_invalid, str_field};

/// Protocols a container or Service port may use, in the order Kubernetes lists them.
pub(super) const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// Which restart policies the owner of a pod spec accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RestartRule {
    /// A bare Pod: any policy, `Always` when absent.
    Any,
    /// Controllers that keep pods running (Deployment, ReplicaSet, DaemonSet, StatefulSet).
    AlwaysOnly,
    /// Jobs: pods run to completion, so the policy must be given and must not be `Always`.
    RunToCompletion,
}

impl RestartRule {
    fn allowed(self) -> &'static [&'static str] {
        match self {
            RestartRule::Any => &["Always", "OnFailure", "Never"],
            RestartRule::AlwaysOnly => &["Always"],
            RestartRule::RunToCompletion => &["OnFailure", "Never"],
        }
    }
}

pub(super) fn validate_pod(object: &Value, causes: &mut Vec<Cause>) {
    validate_wasm_settings(field(object, "metadata").get("annotations"), "metadata.annotations", causes);
    validate_pod_spec(field(object, "spec"), "spec", RestartRule::Any, causes);
}

/// The `wasmkube.dev/…` settings among a pod's annotations must parse.
fn validate_wasm_settings(annotations: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    if let Err(bad) = WasmSettings::from_annotations(annotations) {
        for b in bad {
            causes.push(Cause::invalid(format!("{path}[{}]", b.annotation), &Value::String(b.value), b.detail));
        }
    }
}

/// A `PodTemplateSpec` at `path` (`spec.template`): its labels, annotations and pod spec.
pub(super) fn validate_pod_template(template: &Value, path: &str, restart: RestartRule, causes: &mut Vec<Cause>) {
    let metadata = field(template, "metadata");
    validate_labels(metadata.get("labels"), &format!("{path}.metadata.labels"), causes);
    validate_annotations(metadata.get("annotations"), &format!("{path}.metadata.annotations"), causes);
    validate_wasm_settings(metadata.get("annotations"), &format!("{path}.metadata.annotations"), causes);
    validate_pod_spec(field(template, "spec"), &format!("{path}.spec"), restart, causes);
}

fn validate_pod_spec(spec: &Value, path: &str, restart: RestartRule, causes: &mut Vec<Cause>) {
    let volumes = validate_volumes(spec, path, causes);
    let containers = list_field(spec, "containers");
    if containers.is_empty() {
        causes.push(Cause::required(format!("{path}.containers"), ""));
    }
    // Init containers come second so a clash is reported on the init container, as Kubernetes does.
    let mut names = HashSet::new();
    for (key, list) in [("containers", containers), ("initContainers", list_field(spec, "initContainers"))] {
        for (i, container) in list.iter().enumerate() {
            validate_container(container, &format!("{path}.{key}[{i}]"), &volumes, &mut names, causes);
        }
    }
    validate_restart_policy(spec, path, restart, causes);
}

/// Volume names are unique DNS labels; returns them for the mounts to refer to.
fn validate_volumes<'a>(spec: &'a Value, path: &str, causes: &mut Vec<Cause>) -> HashSet<&'a str> {
    let mut names = HashSet::new();
    for (i, volume) in list_field(spec, "volumes").iter().enumerate() {
        let name_path = format!("{path}.volumes[{i}].name");
        match str_field(volume, "name").unwrap_or("") {
            "" => causes.push(Cause::required(name_path, "")),
            name => {
                push_invalid(causes, &name_path, name, dns1123_label_errors(name));
                if !names.insert(name) {
                    causes.push(Cause::duplicate(name_path, &Value::from(name)));
                }
            }
        }
    }
    names
}

fn validate_container<'a>(
    container: &'a Value,
    path: &str,
    volumes: &HashSet<&str>,
    names: &mut HashSet<&'a str>,
    causes: &mut Vec<Cause>,
) {
    let name_path = format!("{path}.name");
    match str_field(container, "name").unwrap_or("") {
        "" => causes.push(Cause::required(name_path, "")),
        name => {
            push_invalid(causes, &name_path, name, dns1123_label_errors(name));
            if !names.insert(name) {
                causes.push(Cause::duplicate(name_path, &Value::from(name)));
            }
        }
    }
    match str_field(container, "image").unwrap_or("") {
        "" => causes.push(Cause::required(format!("{path}.image"), "")),
        image if image.trim() != image => causes.push(Cause::invalid(
            format!("{path}.image"),
            &Value::from(image),
            "must not have leading or trailing whitespace",
        )),
        _ => {}
    }
    validate_container_ports(container, path, causes);
    validate_env(container, path, causes);
    validate_volume_mounts(container, path, volumes, causes);
}

/// Container ports: a port number, an optional host port, a protocol, and a unique IANA name.
fn validate_container_ports(container: &Value, path: &str, causes: &mut Vec<Cause>) {
    let mut names = HashSet::new();
    for (i, port) in list_field(container, "ports").iter().enumerate() {
        let port_path = format!("{path}.ports[{i}]");
        if let Some(name) = str_field(port, "name").filter(|n| !n.is_empty()) {
            let errors = port_name_errors(name);
            if !errors.is_empty() {
                push_invalid(causes, &format!("{port_path}.name"), name, errors);
            } else if !names.insert(name) {
                causes.push(Cause::duplicate(format!("{port_path}.name"), &Value::from(name)));
            }
        }
        match port.get("containerPort").and_then(Value::as_i64).unwrap_or(0) {
            0 => causes.push(Cause::required(format!("{port_path}.containerPort"), "")),
            number => check_port_number(number, &format!("{port_path}.containerPort"), causes),
        }
        match port.get("hostPort").and_then(Value::as_i64).unwrap_or(0) {
            0 => {}
            number => check_port_number(number, &format!("{port_path}.hostPort"), causes),
        }
        validate_protocol(port, &port_path, causes);
    }
}

/// `protocol` defaults to TCP; anything else must be one of [`PROTOCOLS`].
pub(super) fn validate_protocol(port: &Value, port_path: &str, causes: &mut Vec<Cause>) {
    if let Some(protocol) = str_field(port, "protocol").filter(|p| !p.is_empty() && !PROTOCOLS.contains(p)) {
        causes.push(Cause::not_supported(format!("{port_path}.protocol"), &Value::from(protocol), PROTOCOLS));
    }
}

pub(super) fn check_port_number(number: i64, path: &str, causes: &mut Vec<Cause>) {
    if let Some(message) = port_number_error(number) {
        causes.push(Cause::invalid(path, &Value::from(number), &message));
    }
}

fn validate_env(container: &Value, path: &str, causes: &mut Vec<Cause>) {
    for (i, var) in list_field(container, "env").iter().enumerate() {
        let name_path = format!("{path}.env[{i}].name");
        match str_field(var, "name").unwrap_or("") {
            "" => causes.push(Cause::required(name_path, "")),
            name => push_invalid(causes, &name_path, name, env_var_name_errors(name)),
        }
    }
}

fn validate_volume_mounts(container: &Value, path: &str, volumes: &HashSet<&str>, causes: &mut Vec<Cause>) {
    for (i, mount) in list_field(container, "volumeMounts").iter().enumerate() {
        let mount_path = format!("{path}.volumeMounts[{i}]");
        match str_field(mount, "name").unwrap_or("") {
            "" => causes.push(Cause::required(format!("{mount_path}.name"), "")),
            name if !volumes.contains(name) => {
                causes.push(Cause::not_found(format!("{mount_path}.name"), &Value::from(name)));
            }
            _ => {}
        }
        if str_field(mount, "mountPath").unwrap_or("").is_empty() {
            causes.push(Cause::required(format!("{mount_path}.mountPath"), ""));
        }
    }
}

/// An absent or empty policy means `Always` (Kubernetes defaults it), which Jobs do not accept.
fn validate_restart_policy(spec: &Value, path: &str, rule: RestartRule, causes: &mut Vec<Cause>) {
    let policy_path = format!("{path}.restartPolicy");
    match str_field(spec, "restartPolicy").unwrap_or("") {
        "" if rule == RestartRule::RunToCompletion => {
            causes.push(Cause::required(policy_path, r#"valid values: "OnFailure", "Never""#));
        }
        "" => {}
        policy if rule.allowed().contains(&policy) => {}
        policy => causes.push(Cause::not_supported(policy_path, &Value::from(policy), rule.allowed())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod_spec() -> Value {
        json!({
            "containers": [{
                "name": "web",
                "image": "registry.example/web:1",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": "MODE", "value": "prod"}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
            "volumes": [{"name": "data", "emptyDir": {}}],
        })
    }

    fn push(spec: &mut Value, pointer: &str, item: Value) {
        spec.pointer_mut(pointer).and_then(Value::as_array_mut).expect("pointer names a list").push(item);
    }

    fn check(spec: &Value, rule: RestartRule) -> Vec<String> {
        let mut causes = Vec::new();
        validate_pod_spec(spec, "spec", rule, &mut causes);
        causes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn wasm_settings_in_annotations_must_parse() {
        let pod = json!({"metadata": {"annotations": {"wasmkube.dev/max-concurrency": "lots"}}, "spec": pod_spec()});
        let mut causes = Vec::new();
        validate_pod(&pod, &mut causes);
        let rendered: Vec<String> = causes.iter().map(ToString::to_string).collect();
        assert_eq!(
            rendered,
            ["metadata.annotations[wasmkube.dev/max-concurrency]: Invalid value: \"lots\": must be a positive integer"]
        );
    }

    #[test]
    fn a_complete_pod_spec_is_valid() {
        assert_eq!(check(&pod_spec(), RestartRule::Any), Vec::<String>::new());
    }

    #[test]
    fn each_broken_field_is_reported_at_its_path() {
        // (JSON pointer into the spec, new value, the one expected cause)
        for (pointer, value, want) in [
            ("/containers", json!([]), "spec.containers: Required value"),
            ("/containers/0/name", json!(""), "spec.containers[0].name: Required value"),
            (
                "/containers/0/name",
                json!("Web"),
                "spec.containers[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            ),
            ("/containers/0/image", json!(""), "spec.containers[0].image: Required value"),
            (
                "/containers/0/image",
                json!(" web"),
                "spec.containers[0].image: Invalid value: \" web\": must not have leading or trailing whitespace",
            ),
            (
                "/containers/0/ports/0/containerPort",
                json!(70000),
                "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            ),
            (
                "/containers/0/ports/0/containerPort",
                json!(0),
                "spec.containers[0].ports[0].containerPort: Required value",
            ),
            (
                "/containers/0/ports/0/hostPort",
                json!(-1),
                "spec.containers[0].ports[0].hostPort: Invalid value: -1: must be between 1 and 65535, inclusive",
            ),
            (
                "/containers/0/ports/0/protocol",
                json!("HTTP"),
                "spec.containers[0].ports[0].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            ),
            (
                "/containers/0/ports/0/name",
                json!("8080"),
                "spec.containers[0].ports[0].name: Invalid value: \"8080\": must contain at least one letter (a-z)",
            ),
            ("/containers/0/env/0/name", json!(""), "spec.containers[0].env[0].name: Required value"),
            (
                "/containers/0/volumeMounts/0/name",
                json!("logs"),
                "spec.containers[0].volumeMounts[0].name: Not found: \"logs\"",
            ),
            (
                "/containers/0/volumeMounts/0/mountPath",
                json!(""),
                "spec.containers[0].volumeMounts[0].mountPath: Required value",
            ),
            (
                "/volumes/0/name",
                json!("data_1"),
                "spec.volumes[0].name: Invalid value: \"data_1\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            ),
            (
                "/restartPolicy",
                json!("Sometimes"),
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            ),
        ] {
            let mut spec = pod_spec();
            let (parent, key) = pointer.rsplit_once('/').expect("pointers start with /");
            match spec.pointer_mut(parent).expect("the parent exists in the base spec") {
                Value::Array(items) => items[key.parse::<usize>().expect("an index")] = value,
                parent => parent[key] = value,
            }
            let causes = check(&spec, RestartRule::Any);
            // A renamed volume also orphans its mount; only the first cause is the one under test.
            assert_eq!(causes.first().map(String::as_str), Some(want), "{pointer}: {causes:?}");
        }
    }

    #[test]
    fn container_names_are_unique_across_init_and_regular_containers() {
        let mut spec = pod_spec();
        spec["initContainers"] = json!([{"name": "web", "image": "init"}]);
        assert_eq!(check(&spec, RestartRule::Any), ["spec.initContainers[0].name: Duplicate value: \"web\""]);
        push(&mut spec, "/containers", json!({"name": "web", "image": "x"}));
        let causes = check(&spec, RestartRule::Any);
        assert_eq!(causes[0], "spec.containers[1].name: Duplicate value: \"web\"");
    }

    #[test]
    fn port_and_volume_names_are_unique() {
        let mut spec = pod_spec();
        push(&mut spec, "/containers/0/ports", json!({"name": "http", "containerPort": 9090}));
        push(&mut spec, "/volumes", json!({"name": "data", "emptyDir": {}}));
        assert_eq!(
            check(&spec, RestartRule::Any),
            [
                "spec.volumes[1].name: Duplicate value: \"data\"",
                "spec.containers[0].ports[1].name: Duplicate value: \"http\""
            ]
        );
    }

    #[test]
    fn the_restart_policy_depends_on_the_owner() {
        // (policy, rule, expected causes)
        for (policy, rule, want) in [
            (None, RestartRule::Any, vec![]),
            (Some("Never"), RestartRule::Any, vec![]),
            (None, RestartRule::AlwaysOnly, vec![]),
            (
                Some("Never"),
                RestartRule::AlwaysOnly,
                vec!["spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""],
            ),
            (
                None,
                RestartRule::RunToCompletion,
                vec!["spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\""],
            ),
            (Some("OnFailure"), RestartRule::RunToCompletion, vec![]),
            (
                Some("Always"),
                RestartRule::RunToCompletion,
                vec!["spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""],
            ),
        ] {
            let mut spec = pod_spec();
            if let Some(policy) = policy {
                spec["restartPolicy"] = json!(policy);
            }
            assert_eq!(check(&spec, rule), want, "{policy:?} {rule:?}");
        }
    }

    #[test]
    fn template_labels_are_checked_at_the_template_path() {
        let template = json!({"metadata": {"labels": {"app": "bad value"}}, "spec": pod_spec()});
        let mut causes = Vec::new();
        validate_pod_template(&template, "spec.template", RestartRule::AlwaysOnly, &mut causes);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
    }
}
