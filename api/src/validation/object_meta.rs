//! Checks of `metadata` shared by every kind: the name rule each kind's names follow, the
//! namespace, and label and annotation keys, values and sizes.

use serde_json::Value;

use super::names::{
    dns1035_label_errors, dns1123_label_errors, dns1123_subdomain_errors, label_value_errors, path_segment_errors,
    qualified_name_errors,
};
use super::{Cause, field, push_invalid, str_field};
use crate::kinds::Kind;

/// Total bytes of annotation keys and values an object may carry (Kubernetes' 256 KiB).
pub(crate) const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// Which rule a kind's names follow: they end up in DNS names, other objects' names, or paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameRule {
    /// `example.com`-shaped; most kinds.
    Subdomain,
    /// One DNS label; namespaces (they appear inside Service DNS names).
    Label,
    /// A DNS label starting with a letter; Services (they become environment variables and DNS).
    Dns1035,
    /// Anything that is one URL path segment; RBAC objects (`system:node-proxier`).
    PathSegment,
}

impl NameRule {
    fn of(kind: &Kind) -> NameRule {
        match (kind.group, kind.kind) {
            ("", "Namespace") => NameRule::Label,
            ("", "Service") => NameRule::Dns1035,
            ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
            _ => NameRule::Subdomain,
        }
    }

    /// The rule's messages for `name`; a `generateName` prefix may end in `-`, as the server adds
    /// a random suffix after it.
    fn errors(self, name: &str, prefix: bool) -> Vec<String> {
        let masked;
        let name = if prefix && name.len() > 1 && name.ends_with('-') {
            masked = format!("{}a", &name[..name.len() - 1]);
            masked.as_str()
        } else {
            name
        };
        match self {
            NameRule::Subdomain => dns1123_subdomain_errors(name),
            NameRule::Label => dns1123_label_errors(name),
            NameRule::Dns1035 => dns1035_label_errors(name),
            NameRule::PathSegment => path_segment_errors(name, prefix),
        }
    }
}

pub(super) fn validate_object_meta(kind: &Kind, object: &Value, causes: &mut Vec<Cause>) {
    let metadata = field(object, "metadata");
    validate_name(kind, metadata, causes);
    validate_namespace(kind, metadata, causes);
    validate_labels(metadata.get("labels"), "metadata.labels", causes);
    validate_annotations(metadata.get("annotations"), "metadata.annotations", causes);
}

/// `metadata.name` is required unless `generateName` is set: the server then names the object
/// after validation, so only the prefix can be checked here.
fn validate_name(kind: &Kind, metadata: &Value, causes: &mut Vec<Cause>) {
    let rule = NameRule::of(kind);
    let generate_name = str_field(metadata, "generateName").unwrap_or("");
    if !generate_name.is_empty() {
        push_invalid(causes, "metadata.generateName", generate_name, rule.errors(generate_name, true));
    }
    match str_field(metadata, "name").unwrap_or("") {
        "" if generate_name.is_empty() => {
            causes.push(Cause::required("metadata.name", "name or generateName is required"));
        }
        "" => {}
        name => push_invalid(causes, "metadata.name", name, rule.errors(name, false)),
    }
}

/// A namespace, when given, must be a namespace's name. Cluster-scoped kinds are not checked: the
/// server drops their namespace, as Kubernetes does.
fn validate_namespace(kind: &Kind, metadata: &Value, causes: &mut Vec<Cause>) {
    match str_field(metadata, "namespace") {
        Some(namespace) if kind.namespaced && !namespace.is_empty() => {
            push_invalid(causes, "metadata.namespace", namespace, dns1123_label_errors(namespace));
        }
        _ => {}
    }
}

/// Label keys are qualified names and values label values; used for `metadata.labels`, template
/// labels and Service selectors alike.
pub(super) fn validate_labels(labels: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let Some(labels) = labels.and_then(Value::as_object) else {
        return;
    };
    for (key, value) in labels {
        push_invalid(causes, path, key, qualified_name_errors(key));
        match value.as_str() {
            Some(value) => push_invalid(causes, path, value, label_value_errors(value)),
            None => causes.push(Cause::invalid(path, value, "label values must be strings")),
        }
    }
}

/// Annotation keys are qualified names (compared lower-cased, as Kubernetes does); the values
/// are free-form but all keys and values together fit in [`ANNOTATIONS_MAX_BYTES`].
pub(super) fn validate_annotations(annotations: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let Some(annotations) = annotations.and_then(Value::as_object) else {
        return;
    };
    let mut total = 0;
    for (key, value) in annotations {
        push_invalid(causes, path, key, qualified_name_errors(&key.to_ascii_lowercase()));
        total += key.len() + value.as_str().map_or(0, str::len);
    }
    if total > ANNOTATIONS_MAX_BYTES {
        causes.push(Cause::too_long(path, ANNOTATIONS_MAX_BYTES));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kinds;
    use crate::validation::CauseReason;

    fn kind(name: &str) -> &'static Kind {
        kinds::resolve(name).expect("kind is registered")
    }

    fn check(kind_name: &str, metadata: Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        validate_object_meta(kind(kind_name), &json!({ "metadata": metadata }), &mut causes);
        causes
    }

    #[test]
    fn names_follow_the_rule_of_their_kind() {
        // (kind, name, valid)
        for (kind_name, name, valid) in [
            ("pod", "web-1.example", true),
            ("pod", "Bad_Name", false),
            ("ns", "team-a", true),
            ("ns", "team.a", false),
            ("svc", "web", true),
            ("svc", "1web", false),
            ("svc", "web.a", false),
            ("clusterrole", "system:controller:web", true),
            ("role", "a/b", false),
            ("rolebinding", "..", false),
            ("cm", "a".repeat(254).as_str(), false),
            ("deploy", "a".repeat(253).as_str(), true),
        ] {
            let causes = check(kind_name, json!({"name": name, "namespace": "default"}));
            assert_eq!(causes.is_empty(), valid, "{kind_name} {name:?}: {causes:?}");
            assert!(causes.iter().all(|c| c.field == "metadata.name"), "{causes:?}");
        }
    }

    #[test]
    fn an_invalid_name_reports_kubernetes_message() {
        let causes = check("pod", json!({"name": "Bad_Name"}));
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].reason, CauseReason::Invalid);
        assert_eq!(
            causes[0].message,
            r#"Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"#
        );
    }

    #[test]
    fn a_missing_name_is_required_unless_generate_name_is_set() {
        let causes = check("pod", json!({}));
        assert_eq!(causes, [Cause::required("metadata.name", "name or generateName is required")]);
        assert!(check("pod", json!({"generateName": "web-"})).is_empty());
        assert!(check("svc", json!({"generateName": "web-"})).is_empty());
        let causes = check("pod", json!({"generateName": "Web-"}));
        assert_eq!(causes.iter().map(|c| c.field.as_str()).collect::<Vec<_>>(), ["metadata.generateName"]);
    }

    #[test]
    fn namespaces_must_be_dns_labels_on_namespaced_kinds_only() {
        assert_eq!(check("pod", json!({"name": "a", "namespace": "Team_A"}))[0].field, "metadata.namespace");
        assert!(check("pod", json!({"name": "a", "namespace": "team-a"})).is_empty());
        assert!(check("node", json!({"name": "a", "namespace": "Team_A"})).is_empty());
    }

    #[test]
    fn label_keys_and_values_are_checked() {
        // (labels, number of causes)
        for (labels, count) in [
            (json!({"app": "web", "app.kubernetes.io/name": "web", "empty": ""}), 0),
            (json!({"bad key": "web"}), 1),
            (json!({"app": "bad value"}), 1),
            (json!({"app": "a".repeat(64)}), 1),
            (json!({"-bad": "-bad"}), 2),
            (json!({"app": 5}), 1),
        ] {
            let causes = check("pod", json!({"name": "a", "labels": labels}));
            assert_eq!(causes.len(), count, "{labels}: {causes:?}");
            assert!(causes.iter().all(|c| c.field == "metadata.labels"));
        }
    }

    #[test]
    fn annotations_need_qualified_keys_and_fit_in_256_kib() {
        assert!(check("pod", json!({"name": "a", "annotations": {"Example.com/Note": "any text at all"}})).is_empty());
        let causes = check("pod", json!({"name": "a", "annotations": {"a b": ""}}));
        assert_eq!(causes[0].field, "metadata.annotations");
        let causes = check("pod", json!({"name": "a", "annotations": {"big": "x".repeat(ANNOTATIONS_MAX_BYTES)}}));
        assert_eq!(causes, [Cause::too_long("metadata.annotations", ANNOTATIONS_MAX_BYTES)]);
    }
}
