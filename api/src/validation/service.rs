//! Services: the type, the ports (numbers, names, target ports, node ports, protocols), the
//! selector's labels and, for ExternalName Services, the external name.

use std::collections::HashSet;

use serde_json::Value;

use super::names::{dns1123_label_errors, dns1123_subdomain_errors, port_name_errors};
use super::object_meta::validate_labels;
use super::pod::{check_port_number, validate_protocol};
use super::{Cause, field, list_field, push_invalid, str_field};

/// Service types, in the (sorted) order Kubernetes lists them in its message.
const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
pub(super) fn validate_service(object: &Value, causes: &mut Vec<Cause>) {
    let spec = field(object, "spec");
    let service_type = match str_field(spec, "type").unwrap_or("") {
        "" => "ClusterIP",
        t if TYPES.contains(&t) => t,
        t => {
            causes.push(Cause::not_supported("spec.type", &Value::from(t), TYPES));
            t
        }
    };
    let headless = str_field(spec, "clusterIP") == Some("None");
    let ports = list_field(spec, "ports");
    if ports.is_empty() && service_type != "ExternalName" && !headless {
        causes.push(Cause::required("spec.ports", ""));
    }
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        validate_port(port, &format!("spec.ports[{i}]"), ports.len() > 1, &mut names, causes);
        validate_node_port(port, &format!("spec.ports[{i}].nodePort"), service_type, causes);
    }
    if service_type == "ExternalName" {
        validate_external_name(spec, causes);
    }
    validate_labels(spec.get("selector"), "spec.selector", causes);
}

/// One port: a number, a DNS-label name (required once there are several, so endpoints can tell
/// them apart), a protocol, and a target port given as a number or a container port's name.
fn validate_port<'a>(
    port: &'a Value,
    path: &str,
    name_required: bool,
    names: &mut HashSet<&'a str>,
    causes: &mut Vec<Cause>,
) {
    let name_path = format!("{path}.name");
    match str_field(port, "name").unwrap_or("") {
        "" if name_required => causes.push(Cause::required(name_path, "")),
        "" => {}
        name => {
            push_invalid(causes, &name_path, name, dns1123_label_errors(name));
            if !names.insert(name) {
                causes.push(Cause::duplicate(name_path, &Value::from(name)));
            }
        }
    }
    check_port_number(port.get("port").and_then(Value::as_i64).unwrap_or(0), &format!("{path}.port"), causes);
    validate_protocol(port, path, causes);
    // 0 and "" are how an absent target port reads: Kubernetes defaults it to `port`.
    let target_path = format!("{path}.targetPort");
    match port.get("targetPort") {
        Some(Value::Number(n)) => match n.as_i64() {
            Some(0) => {}
            Some(number) => check_port_number(number, &target_path, causes),
            None => causes.push(Cause::invalid(target_path, &Value::Number(n.clone()), "must be an integer")),
        },
        Some(Value::String(name)) if !name.is_empty() => {
            push_invalid(causes, &target_path, name, port_name_errors(name));
        }
        _ => {}
    }
}

/// Node ports only exist on NodePort and LoadBalancer Services. Whether one is in the cluster's
/// node port range (a server flag) is the allocator's to say, as in Kubernetes.
fn validate_node_port(port: &Value, path: &str, service_type: &str, causes: &mut Vec<Cause>) {
    let node_port = port.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
    if node_port == 0 {
        return;
    }
    if !matches!(service_type, "NodePort" | "LoadBalancer") {
        causes.push(Cause::forbidden(path, &format!("may not be used when `type` is '{service_type}'")));
    } else {
        check_port_number(node_port, path, causes);
    }
}

/// An ExternalName Service is a DNS CNAME: the name is required and a DNS subdomain (a trailing
/// dot, as in absolute DNS names, is allowed).
fn validate_external_name(spec: &Value, causes: &mut Vec<Cause>) {
    match str_field(spec, "externalName").unwrap_or("") {
        "" => causes.push(Cause::required("spec.externalName", "")),
        name => {
            let bare = name.strip_suffix('.').unwrap_or(name);
            push_invalid(causes, "spec.externalName", name, dns1123_subdomain_errors(bare));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(spec: Value) -> Vec<String> {
        let mut causes = Vec::new();
        validate_service(&json!({ "spec": spec }), &mut causes);
        causes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn well_formed_services_of_every_type_are_valid() {
        for spec in [
            json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}),
            json!({"type": "ClusterIP", "ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "dns", "port": 53, "protocol": "UDP"}]}),
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
            json!({"type": "LoadBalancer", "ports": [{"port": 443}]}),
            json!({"type": "ExternalName", "externalName": "db.example.com."}),
            json!({"clusterIP": "None", "selector": {"app": "db"}}),
        ] {
            assert_eq!(check(spec.clone()), Vec::<String>::new(), "{spec}");
        }
    }

    #[test]
    fn each_broken_field_is_reported_with_kubernetes_message() {
        // (spec, the expected causes)
        for (spec, want) in [
            (
                json!({"type": "Foo", "ports": [{"port": 80}]}),
                vec![
                    r#"spec.type: Unsupported value: "Foo": supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort""#,
                ],
            ),
            (json!({}), vec!["spec.ports: Required value"]),
            (
                json!({"ports": [{"port": 70000}]}),
                vec!["spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"],
            ),
            (
                json!({"ports": [{}]}),
                vec!["spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"],
            ),
            (
                json!({"ports": [{"port": 80, "targetPort": 65536}]}),
                vec!["spec.ports[0].targetPort: Invalid value: 65536: must be between 1 and 65535, inclusive"],
            ),
            (
                json!({"ports": [{"port": 80, "targetPort": "HTTP"}]}),
                vec![
                    r#"spec.ports[0].targetPort: Invalid value: "HTTP": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"#,
                    r#"spec.ports[0].targetPort: Invalid value: "HTTP": must contain at least one letter (a-z)"#,
                ],
            ),
            (
                json!({"ports": [{"port": 80, "protocol": "HTTP"}]}),
                vec![r#"spec.ports[0].protocol: Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP""#],
            ),
            (json!({"ports": [{"name": "web", "port": 80}, {"port": 81}]}), vec!["spec.ports[1].name: Required value"]),
            (
                json!({"ports": [{"name": "web", "port": 80}, {"name": "web", "port": 81}]}),
                vec![r#"spec.ports[1].name: Duplicate value: "web""#],
            ),
            (
                json!({"ports": [{"name": "Web", "port": 80}]}),
                vec![
                    r#"spec.ports[0].name: Invalid value: "Web": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"#,
                ],
            ),
            (
                json!({"ports": [{"port": 80, "nodePort": 30080}]}),
                vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"],
            ),
            (
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 70000}]}),
                vec!["spec.ports[0].nodePort: Invalid value: 70000: must be between 1 and 65535, inclusive"],
            ),
            (json!({"type": "ExternalName"}), vec!["spec.externalName: Required value"]),
            (
                json!({"ports": [{"port": 80}], "selector": {"app": "a b"}}),
                vec![
                    r#"spec.selector: Invalid value: "a b": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"#,
                ],
            ),
        ] {
            assert_eq!(check(spec.clone()), want, "{spec}");
        }
    }
}
