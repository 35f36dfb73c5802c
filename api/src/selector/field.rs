//! Field selectors: `f=v`, `f==v` and `f!=v` terms over the few fields Kubernetes lets each kind
//! be selected by (`spec.nodeName` for pods, `involvedObject.name` for events, ...).
//!
//! A missing field reads as its Kubernetes default, usually "" (so `status.phase!=Failed` selects
//! a pod without status), booleans as `true`/`false`, numbers in decimal. Values may escape `\`,
//! `,` and `=` with a backslash, as in Kubernetes.

use std::borrow::Cow;
use std::fmt;

use serde_json::Value;

use super::SelectorError;
use crate::kinds::Kind;

/// Field requirements that must all hold; none matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

/// One `field=value` or `field!=value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: &'static str,
    pub operator: FieldOperator,
    pub value: String,
    source: &'static SelectableField,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOperator {
    /// `=` or `==`.
    Equals,
    NotEquals,
}

/// A field a kind can be selected by: its selector name, where it lives in the JSON object, and
/// what it reads as when absent.
#[derive(Debug, PartialEq, Eq)]
struct SelectableField {
    name: &'static str,
    pointer: &'static str,
    default: &'static str,
}

const fn selectable(name: &'static str, pointer: &'static str, default: &'static str) -> SelectableField {
    SelectableField { name, pointer, default }
}

/// Every kind has `metadata.name`; namespaced kinds also `metadata.namespace`.
static METADATA: &[SelectableField] =
    &[selectable("metadata.name", "/metadata/name", ""), selectable("metadata.namespace", "/metadata/namespace", "")];

static POD: &[SelectableField] = &[
    selectable("spec.nodeName", "/spec/nodeName", ""),
    selectable("spec.restartPolicy", "/spec/restartPolicy", ""),
    selectable("spec.schedulerName", "/spec/schedulerName", ""),
    selectable("spec.serviceAccountName", "/spec/serviceAccountName", ""),
    selectable("spec.hostNetwork", "/spec/hostNetwork", "false"),
    selectable("status.phase", "/status/phase", ""),
    selectable("status.podIP", "/status/podIP", ""),
    selectable("status.nominatedNodeName", "/status/nominatedNodeName", ""),
];

static EVENT: &[SelectableField] = &[
    selectable("involvedObject.kind", "/involvedObject/kind", ""),
    selectable("involvedObject.namespace", "/involvedObject/namespace", ""),
    selectable("involvedObject.name", "/involvedObject/name", ""),
    selectable("involvedObject.uid", "/involvedObject/uid", ""),
    selectable("involvedObject.apiVersion", "/involvedObject/apiVersion", ""),
    selectable("involvedObject.resourceVersion", "/involvedObject/resourceVersion", ""),
    selectable("involvedObject.fieldPath", "/involvedObject/fieldPath", ""),
    selectable("reason", "/reason", ""),
    selectable("reportingComponent", "/reportingComponent", ""),
    selectable("source", "/source/component", ""),
    selectable("type", "/type", ""),
];

static SECRET: &[SelectableField] = &[selectable("type", "/type", "")];
static NODE: &[SelectableField] = &[selectable("spec.unschedulable", "/spec/unschedulable", "false")];
static NAMESPACE: &[SelectableField] = &[selectable("status.phase", "/status/phase", "")];
static SERVICE: &[SelectableField] =
    &[selectable("spec.clusterIP", "/spec/clusterIP", ""), selectable("spec.type", "/spec/type", "")];
/// Kubernetes names the field `status.successful` but reads `status.succeeded`.
static JOB: &[SelectableField] = &[selectable("status.successful", "/status/succeeded", "0")];

/// The selectable field `name` of `kind`, if Kubernetes supports selecting by it.
fn lookup(kind: &Kind, name: &str) -> Option<&'static SelectableField> {
    let specific = match (kind.group, kind.kind) {
        ("", "Pod") => POD,
        ("", "Event") => EVENT,
        ("", "Secret") => SECRET,
        ("", "Node") => NODE,
        ("", "Namespace") => NAMESPACE,
        ("", "Service") => SERVICE,
        ("batch", "Job") => JOB,
        _ => &[],
    };
    let metadata = if kind.namespaced { METADATA } else { &METADATA[..1] };
    metadata.iter().chain(specific).find(|f| f.name == name)
}

impl FieldSelector {
    /// Parses a `fieldSelector` for objects of `kind`: comma-separated `f=v`, `f==v`, `f!=v`
    /// terms (whitespace around terms and field names ignored); "" matches everything.
    pub fn parse(input: &str, kind: &Kind) -> Result<FieldSelector, SelectorError> {
        let mut requirements = Vec::new();
        for term in split_unescaped_commas(input).into_iter().map(str::trim).filter(|t| !t.is_empty()) {
            let Some((field, operator, value)) = split_term(term) else {
                return Err(SelectorError::InvalidFieldTerm { selector: input.to_string(), term: term.to_string() });
            };
            let source =
                lookup(kind, field.trim()).ok_or_else(|| SelectorError::UnsupportedField(field.trim().to_string()))?;
            let value = unescape(value.trim())?;
            requirements.push(FieldRequirement { field: source.name, operator, value, source });
        }
        Ok(FieldSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// Whether `object` satisfies every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|r| r.matches(object))
    }
}

impl FieldRequirement {
    /// Whether the field of `object`, as Kubernetes reads it, compares as required.
    pub fn matches(&self, object: &Value) -> bool {
        let actual: Cow<'_, str> = match object.pointer(self.source.pointer) {
            Some(Value::String(s)) => Cow::Borrowed(s),
            Some(Value::Bool(b)) => Cow::Owned(b.to_string()),
            Some(Value::Number(n)) => Cow::Owned(n.to_string()),
            _ => Cow::Borrowed(self.source.default),
        };
        (actual == self.value.as_str()) == (self.operator == FieldOperator::Equals)
    }
}

/// The query syntax, values escaped; parses back to an equal selector.
impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            let operator = match r.operator {
                FieldOperator::Equals => "=",
                FieldOperator::NotEquals => "!=",
            };
            let value = r.value.replace('\\', r"\\").replace(',', r"\,").replace('=', r"\=");
            write!(f, "{}{}{operator}{value}", if i > 0 { "," } else { "" }, r.field)?;
        }
        Ok(())
    }
}

/// Splits on commas not escaped with a backslash.
fn split_unescaped_commas(input: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut start, mut escaped) = (0, false);
    for (i, c) in input.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => {
                terms.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&input[start..]);
    terms
}

/// Splits a term at its first operator, trying `!=` and `==` before `=` as Kubernetes does.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    term.char_indices().find_map(|(i, _)| {
        let rest = &term[i..];
        [("!=", FieldOperator::NotEquals), ("==", FieldOperator::Equals), ("=", FieldOperator::Equals)]
            .into_iter()
            .find(|(op, _)| rest.starts_with(op))
            .map(|(op, operator)| (&term[..i], operator, &rest[op.len()..]))
    })
}

fn unescape(raw: &str) -> Result<String, SelectorError> {
    let error = |reason| SelectorError::InvalidFieldValue { value: raw.to_string(), reason };
    let mut value = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(c @ ('\\' | ',' | '=')) => value.push(c),
                _ => {
                    return Err(error("invalid escape sequence (only \\\\, \\, and \\= are allowed)"));
                }
            },
            '=' | ',' => return Err(error("'=' and ',' must be escaped with '\\'")),
            c => value.push(c),
        }
    }
    Ok(value)
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
    fn each_kind_supports_the_fields_kubernetes_supports() {
        // (kind, selector, error message if unsupported)
        for (kind_name, selector, error) in [
            ("pod", "metadata.name=a,metadata.namespace=b", None),
            ("pod", "spec.nodeName=n1,status.phase!=Failed,spec.hostNetwork==false", None),
            ("pod", "spec.restartPolicy=Always,spec.schedulerName=s,spec.serviceAccountName=sa", None),
            ("pod", "status.podIP=10.0.0.1,status.nominatedNodeName=n", None),
            ("pod", "spec.containers=x", Some("field label not supported: spec.containers")),
            (
                "event",
                "involvedObject.kind=Pod,involvedObject.name=a,involvedObject.namespace=b,involvedObject.uid=u",
                None,
            ),
            ("event", "involvedObject.apiVersion=v1,involvedObject.resourceVersion=1,involvedObject.fieldPath=f", None),
            ("event", "reason=Started,reportingComponent=kubelet,source=kubelet,type=Normal", None),
            ("secret", "type=Opaque", None),
            ("cm", "type=Opaque", Some("field label not supported: type")),
            ("node", "metadata.name=n1,spec.unschedulable=true", None),
            ("node", "metadata.namespace=x", Some("field label not supported: metadata.namespace")),
            ("ns", "status.phase=Active", None),
            ("svc", "spec.clusterIP=None,spec.type!=ExternalName", None),
            ("job", "status.successful=1", None),
            ("deploy", "metadata.name=web", None),
            ("deploy", "status.replicas=1", Some("field label not supported: status.replicas")),
            ("clusterrole", "metadata.name=admin", None),
        ] {
            let parsed = FieldSelector::parse(selector, kind(kind_name));
            assert_eq!(parsed.as_ref().err().map(ToString::to_string).as_deref(), error, "{kind_name} {selector}");
        }
    }

    #[test]
    fn parse_accepts_all_operators_and_tolerates_whitespace() {
        let selector = FieldSelector::parse(" spec.nodeName == n1 , status.phase!=Failed,,metadata.name=", kind("pod"))
            .expect("valid selector");
        let terms: Vec<_> = selector.requirements().iter().map(|r| (r.field, r.operator, r.value.as_str())).collect();
        assert_eq!(
            terms,
            [
                ("spec.nodeName", FieldOperator::Equals, "n1"),
                ("status.phase", FieldOperator::NotEquals, "Failed"),
                ("metadata.name", FieldOperator::Equals, ""),
            ]
        );
        assert!(FieldSelector::parse("", kind("pod")).expect("empty selector").is_empty());
    }

    #[test]
    fn malformed_terms_and_values_are_explained() {
        for (selector, message) in [
            ("metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'"),
            (
                "metadata.name=a,status.phase",
                "invalid selector: 'metadata.name=a,status.phase'; can't understand 'status.phase'",
            ),
            ("metadata.name=a=b", "invalid field selector value \"a=b\": '=' and ',' must be escaped with '\\'"),
            (
                r"metadata.name=a\x",
                "invalid field selector value \"a\\\\x\": invalid escape sequence (only \\\\, \\, and \\= are allowed)",
            ),
        ] {
            let error = FieldSelector::parse(selector, kind("pod")).expect_err(selector);
            assert_eq!(error.to_string(), message, "{selector}");
        }
    }

    #[test]
    fn missing_fields_read_as_kubernetes_defaults() {
        let pending = json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"containers": []}});
        let running = json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"nodeName": "n1", "hostNetwork": true}, "status": {"phase": "Running", "podIP": "10.0.0.5"}});
        // (selector, matches `pending`, matches `running`)
        for (selector, on_pending, on_running) in [
            ("", true, true),
            ("metadata.name=web,metadata.namespace=default", true, true),
            ("spec.nodeName=n1", false, true),
            ("spec.nodeName=", true, false),
            ("spec.nodeName!=", false, true),
            ("status.phase!=Failed", true, true),
            ("status.phase=Running", false, true),
            ("spec.hostNetwork=false", true, false),
            ("spec.hostNetwork=true", false, true),
            ("status.podIP=10.0.0.5", false, true),
            ("metadata.name=web,spec.nodeName=n2", false, false),
        ] {
            let selector = FieldSelector::parse(selector, kind("pod")).expect("test selectors parse");
            assert_eq!(selector.matches(&pending), on_pending, "{selector} on pending");
            assert_eq!(selector.matches(&running), on_running, "{selector} on running");
        }
    }

    #[test]
    fn event_source_means_the_reporting_component_and_job_success_counts_from_zero() {
        let event = json!({"involvedObject": {"kind": "Pod", "name": "web"}, "source": {"component": "scheduler"}});
        let selector = FieldSelector::parse("source=scheduler,involvedObject.name=web", kind("event")).expect("parses");
        assert!(selector.matches(&event));
        let job = FieldSelector::parse("status.successful=0", kind("job")).expect("parses");
        assert!(job.matches(&json!({"status": {}})));
        assert!(!job.matches(&json!({"status": {"succeeded": 2}})));
    }

    #[test]
    fn escaped_values_match_and_print_back() {
        let selector = FieldSelector::parse(r"metadata.name=a\,b\=c\\d", kind("cm")).expect("parses");
        assert_eq!(selector.requirements()[0].value, r"a,b=c\d");
        assert!(selector.matches(&json!({"metadata": {"name": r"a,b=c\d"}})));
        assert_eq!(FieldSelector::parse(&selector.to_string(), kind("cm")), Ok(selector));
    }
}
