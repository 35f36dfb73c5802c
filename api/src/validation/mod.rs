//! Admission validation: the field checks Kubernetes makes before an object is stored, with its
//! field paths, cause types and messages, so `kubectl` shows the errors users know.
//!
//! Start at [`validate`], which routes by [`Kind`] to one small module per family: metadata for
//! every kind (`object_meta`), pods and pod templates (`pod`), the controllers that own pod
//! templates (`workload`), Services (`service`) and ConfigMaps/Secrets (`data`). All of it is
//! pure functions over the JSON form of an object; a [`Cause`] becomes one entry of a 422 `Status`.
//! The string rules shared with label selectors live in `names`.

mod data;
mod names;
mod object_meta;
mod pod;
mod service;
mod workload;

use std::fmt;

use serde_json::Value;

use crate::kinds::Kind;

pub use names::{
    LABEL_MAX_LENGTH, SUBDOMAIN_MAX_LENGTH, is_dns1035_label, is_dns1123_label, is_dns1123_subdomain,
    validate_label_key, validate_label_value, validate_qualified_name,
};

/// One invalid field: a `StatusCause` of a 422 Invalid `Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Kubernetes' field path: `metadata.name`, `spec.containers[0].image`, `data[key]`.
    pub field: String,
    pub reason: CauseReason,
    /// The message without the field: `Required value`, `Invalid value: "x": must be ...`.
    pub message: String,
}

/// The `reason` of a `StatusCause`, one per kind of field error Kubernetes reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CauseReason {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    TooLong,
    Forbidden,
    /// A reference to something that does not exist (a volume mount naming no volume).
    NotFound,
}

impl CauseReason {
    /// The `StatusCause.reason` string (`FieldValueRequired`).
    pub fn as_str(self) -> &'static str {
        match self {
            CauseReason::Required => "FieldValueRequired",
            CauseReason::Invalid => "FieldValueInvalid",
            CauseReason::NotSupported => "FieldValueNotSupported",
            CauseReason::Duplicate => "FieldValueDuplicate",
            CauseReason::TooLong => "FieldValueTooLong",
            CauseReason::Forbidden => "FieldValueForbidden",
            CauseReason::NotFound => "FieldValueNotFound",
        }
    }
}

impl Cause {
    /// `Required value`, or `Required value: <detail>`.
    pub fn required(field: impl Into<String>, detail: &str) -> Cause {
        Cause::new(field, CauseReason::Required, with_detail("Required value".to_string(), detail))
    }

    /// `Invalid value: <value>: <detail>`; strings are quoted, maps and lists print as JSON.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Cause {
        let message = with_detail(format!("Invalid value: {}", render(value)), detail);
        Cause::new(field, CauseReason::Invalid, message)
    }

    /// `Unsupported value: "x": supported values: "A", "B"`.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Cause {
        let quoted: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        let message = format!("Unsupported value: {}: supported values: {}", render(value), quoted.join(", "));
        Cause::new(field, CauseReason::NotSupported, message)
    }

    /// `Duplicate value: "x"`.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Cause {
        Cause::new(field, CauseReason::Duplicate, format!("Duplicate value: {}", render(value)))
    }

    /// `Too long: may not be more than <max> bytes`.
    pub fn too_long(field: impl Into<String>, max: usize) -> Cause {
        Cause::new(field, CauseReason::TooLong, format!("Too long: may not be more than {max} bytes"))
    }

    /// `Forbidden: <detail>`.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Cause {
        Cause::new(field, CauseReason::Forbidden, with_detail("Forbidden".to_string(), detail))
    }

    /// `Not found: "x"`.
    pub fn not_found(field: impl Into<String>, value: &Value) -> Cause {
        Cause::new(field, CauseReason::NotFound, format!("Not found: {}", render(value)))
    }

    fn new(field: impl Into<String>, reason: CauseReason, message: String) -> Cause {
        Cause { field: field.into(), reason, message }
    }
}

/// `spec.containers[0].image: Required value`: one line of an Invalid `Status` message.
impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every field error of `object` as a `kind`; empty when it may be stored.
///
/// Runs after [`Kind::normalize`], so fields have their declared types; a field of another type is
/// treated as absent rather than reported twice. Defaults Kubernetes fills before validating
/// (`restartPolicy: Always`, `type: ClusterIP`, `protocol: TCP`) are assumed when a field is absent.
pub fn validate(kind: &Kind, object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    object_meta::validate_object_meta(kind, object, &mut causes);
    match (kind.group, kind.kind) {
        ("", "Pod") => pod::validate_pod(object, &mut causes),
        ("", "Service") => service::validate_service(object, &mut causes),
        ("", "ConfigMap") => data::validate_config_map(object, &mut causes),
        ("", "Secret") => data::validate_secret(object, &mut causes),
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet") => {
            workload::validate_replicated(kind, object, &mut causes)
        }
        ("batch", "Job") => workload::validate_job(object, &mut causes),
        ("batch", "CronJob") => workload::validate_cron_job(object, &mut causes),
        _ => {}
    }
    causes
}

fn with_detail(mut message: String, detail: &str) -> String {
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(detail);
    }
    message
}

/// A bad value as Kubernetes prints it: quoted strings, bare numbers and booleans, JSON otherwise.
fn render(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// `object[key]` as a string, if it is one.
fn str_field<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str)
}

/// `object[key]` as a list; absent or mistyped reads as empty.
fn list_field<'a>(object: &'a Value, key: &str) -> &'a [Value] {
    object.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

/// `object[key]`, or `null` when absent, so nested reads need no `Option` plumbing.
fn field<'a>(object: &'a Value, key: &str) -> &'a Value {
    object.get(key).unwrap_or(&Value::Null)
}

/// Reports each message as an Invalid cause of `value` at `path`.
fn push_invalid(causes: &mut Vec<Cause>, path: &str, value: &str, messages: Vec<String>) {
    let value = Value::from(value);
    causes.extend(messages.iter().map(|m| Cause::invalid(path, &value, m)));
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kinds;

    fn kind(name: &str) -> &'static Kind {
        kinds::resolve(name).expect("kind is registered")
    }

    #[test]
    fn causes_render_in_kubernetes_form() {
        let cases = [
            (Cause::required("metadata.name", ""), "FieldValueRequired", "Required value"),
            (
                Cause::invalid("spec.ports[0].port", &json!(70000), "must be between 1 and 65535, inclusive"),
                "FieldValueInvalid",
                "Invalid value: 70000: must be between 1 and 65535, inclusive",
            ),
            (Cause::invalid("x", &json!({"app": "x"}), "d"), "FieldValueInvalid", r#"Invalid value: {"app":"x"}: d"#),
            (
                Cause::not_supported("spec.type", &json!("Foo"), &["ClusterIP", "NodePort"]),
                "FieldValueNotSupported",
                r#"Unsupported value: "Foo": supported values: "ClusterIP", "NodePort""#,
            ),
            (
                Cause::duplicate("spec.containers[1].name", &json!("web")),
                "FieldValueDuplicate",
                r#"Duplicate value: "web""#,
            ),
            (
                Cause::too_long("metadata.annotations", 262144),
                "FieldValueTooLong",
                "Too long: may not be more than 262144 bytes",
            ),
            (Cause::forbidden("f", "not allowed"), "FieldValueForbidden", "Forbidden: not allowed"),
            (Cause::not_found("f", &json!("data")), "FieldValueNotFound", r#"Not found: "data""#),
        ];
        for (cause, reason, message) in cases {
            assert_eq!(cause.reason.as_str(), reason);
            assert_eq!(cause.message, message);
        }
        assert_eq!(Cause::required("metadata.name", "").to_string(), "metadata.name: Required value");
    }

    #[test]
    fn a_valid_object_of_every_kind_without_a_spec_passes_metadata_checks() {
        for kind in kinds::ALL {
            let object = json!({"metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}}});
            let causes = validate(kind, &object);
            let metadata_causes: Vec<_> = causes.iter().filter(|c| c.field.starts_with("metadata")).collect();
            assert!(metadata_causes.is_empty(), "{}: {metadata_causes:?}", kind.kind);
        }
    }

    #[test]
    fn validate_routes_each_kind_to_its_own_checks() {
        // (kind, object, the first field reported)
        for (name, object, field) in [
            ("pod", json!({"metadata": {"name": "a"}, "spec": {}}), "spec.containers"),
            ("svc", json!({"metadata": {"name": "a"}, "spec": {"type": "Foo"}}), "spec.type"),
            ("cm", json!({"metadata": {"name": "a"}, "data": {"a/b": ""}}), "data[a/b]"),
            ("secret", json!({"metadata": {"name": "a"}, "data": {"": ""}}), "data[]"),
            ("deploy", json!({"metadata": {"name": "a"}, "spec": {}}), "spec.selector"),
            (
                "job",
                json!({"metadata": {"name": "a"}, "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "i"}]}}}}),
                "spec.template.spec.restartPolicy",
            ),
            ("cronjob", json!({"metadata": {"name": "a"}, "spec": {}}), "spec.schedule"),
        ] {
            let causes = validate(kind(name), &object);
            assert_eq!(causes.first().map(|c| c.field.as_str()), Some(field), "{name}: {causes:?}");
        }
        assert!(validate(kind("lease"), &json!({"metadata": {"name": "a"}, "spec": {"bogus": 1}})).is_empty());
    }
}
