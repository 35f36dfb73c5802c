//! Label selectors: the `labelSelector` query syntax (parsed in [`super::query`]) and the
//! structured `metav1.LabelSelector`, both turned into one list of requirements that must all
//! hold, each checked with the label rules of [`crate::validation`].

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use super::{SelectorError, query};
use crate::validation::{validate_label_key, validate_label_value};

/// Requirements on an object's labels, all of which must hold; none matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

/// One requirement: `key` compared by `operator` with `values` (sorted, without duplicates; one
/// value for `=`/`!=`, none for `exists`/`!`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `k=v` or `k==v`.
    Equals,
    /// `k!=v`: also true when the object has no label `k`.
    NotEquals,
    In,
    /// `k notin (a,b)`: also true when the object has no label `k`.
    NotIn,
    /// A bare `k`.
    Exists,
    /// `!k`.
    DoesNotExist,
}

impl Operator {
    /// The word a structured selector or an error message uses for the operator.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Equals => "=",
            Operator::NotEquals => "!=",
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
        }
    }
}

impl Requirement {
    /// Checks the key and values with Kubernetes' label rules and the value count with the
    /// operator's arity.
    pub fn new(key: &str, operator: Operator, mut values: Vec<String>) -> Result<Requirement, SelectorError> {
        validate_label_key(key).map_err(|reason| SelectorError::InvalidKey { key: key.to_string(), reason })?;
        let error_key = || key.to_string();
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(SelectorError::EmptyValues { key: error_key(), operator: operator.as_str() });
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(SelectorError::UnexpectedValues { key: error_key(), operator: operator.as_str() });
            }
            _ => {}
        }
        for value in &values {
            validate_label_value(value).map_err(|reason| SelectorError::InvalidValue {
                key: error_key(),
                value: value.clone(),
                reason,
            })?;
        }
        values.sort();
        values.dedup();
        Ok(Requirement { key: key.to_string(), operator, values })
    }

    /// Whether `labels` (an object's `metadata.labels`, absent when it has none) satisfy this.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let label = labels.and_then(|l| l.get(&self.key));
        let listed = || label.and_then(Value::as_str).is_some_and(|v| self.values.iter().any(|x| x == v));
        match self.operator {
            Operator::Equals | Operator::In => listed(),
            Operator::NotEquals | Operator::NotIn => !listed(),
            Operator::Exists => label.is_some(),
            Operator::DoesNotExist => label.is_none(),
        }
    }
}

/// The query syntax: `k=v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`.
impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (key, values) = (&self.key, self.values.join(","));
        match self.operator {
            Operator::Equals => write!(f, "{key}={values}"),
            Operator::NotEquals => write!(f, "{key}!={values}"),
            Operator::In => write!(f, "{key} in ({values})"),
            Operator::NotIn => write!(f, "{key} notin ({values})"),
            Operator::Exists => write!(f, "{key}"),
            Operator::DoesNotExist => write!(f, "!{key}"),
        }
    }
}

impl LabelSelector {
    /// Parses the `labelSelector` query syntax: comma-separated requirements, whitespace between
    /// tokens ignored; the empty string matches everything.
    pub fn parse(input: &str) -> Result<LabelSelector, SelectorError> {
        Ok(LabelSelector { requirements: query::parse(input)? })
    }

    /// Converts a structured `metav1.LabelSelector` (`matchLabels` and `matchExpressions` with
    /// operators In, NotIn, Exists, DoesNotExist); `null` or `{}` matches everything.
    pub fn from_spec(spec: &Value) -> Result<LabelSelector, SelectorError> {
        let spec = match spec {
            Value::Null => return Ok(LabelSelector::default()),
            Value::Object(spec) => spec,
            other => return Err(malformed(format!("expected an object, found {other}"))),
        };
        let mut selector = match spec.get("matchLabels") {
            None | Some(Value::Null) => LabelSelector::default(),
            Some(Value::Object(labels)) => LabelSelector::from_labels(labels)?,
            Some(other) => {
                return Err(malformed(format!("matchLabels must be a map of strings, found {other}")));
            }
        };
        match spec.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(expressions)) => {
                for expression in expressions {
                    selector.requirements.push(expression_requirement(expression)?);
                }
            }
            Some(other) => {
                return Err(malformed(format!("matchExpressions must be a list, found {other}")));
            }
        }
        Ok(selector)
    }

    /// One equality requirement per label, as in `matchLabels` or a Service's `spec.selector`.
    pub fn from_labels(labels: &Map<String, Value>) -> Result<LabelSelector, SelectorError> {
        let requirements = labels
            .iter()
            .map(|(key, value)| match value.as_str() {
                Some(value) => Requirement::new(key, Operator::Equals, vec![value.to_string()]),
                None => Err(malformed(format!("the value of label {key:?} must be a string, found {value}"))),
            })
            .collect::<Result<_, _>>()?;
        Ok(LabelSelector { requirements })
    }

    /// Whether the selector has no requirements (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether `labels` (absent when the object has none) satisfy every requirement.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// [`LabelSelector::matches`] on the object's `metadata.labels`.
    pub fn matches_object(&self, object: &Value) -> bool {
        self.matches(object.pointer("/metadata/labels").and_then(Value::as_object))
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(input: &str) -> Result<LabelSelector, SelectorError> {
        LabelSelector::parse(input)
    }
}

/// The query syntax, requirements joined by `,`; parses back to an equal selector.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

fn expression_requirement(expression: &Value) -> Result<Requirement, SelectorError> {
    let key = expression
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed(format!("a match expression needs a string key, found {expression}")))?;
    let operator = match expression.get("operator").and_then(Value::as_str) {
        Some("In") => Operator::In,
        Some("NotIn") => Operator::NotIn,
        Some("Exists") => Operator::Exists,
        Some("DoesNotExist") => Operator::DoesNotExist,
        Some(other) => {
            return Err(SelectorError::UnknownOperator { operator: other.to_string() });
        }
        None => {
            return Err(malformed(format!("the match expression on key {key:?} needs an operator")));
        }
    };
    let values = match expression.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(values)) => values
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| malformed(format!("the values of key {key:?} must be strings")))?,
        Some(other) => {
            return Err(malformed(format!("the values of key {key:?} must be a list, found {other}")));
        }
    };
    Requirement::new(key, operator, values)
}

fn malformed(message: String) -> SelectorError {
    SelectorError::Malformed(message)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labels(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("test labels are an object")
    }

    #[test]
    fn parse_reads_every_operator_and_prints_it_back() {
        // (input, canonical form)
        for (input, canonical) in [
            ("", ""),
            ("   ", ""),
            ("app=web", "app=web"),
            ("app==web", "app=web"),
            (" app = web , tier!=db ", "app=web,tier!=db"),
            ("app=", "app="),
            ("env in (prod, qa,prod)", "env in (prod,qa)"),
            ("env in (prod,)", "env in (,prod)"),
            ("env notin (dev)", "env notin (dev)"),
            ("app.kubernetes.io/name", "app.kubernetes.io/name"),
            ("!canary", "!canary"),
            ("a,!b,c in (x),d notin (y),e=f,g!=h", "a,!b,c in (x),d notin (y),e=f,g!=h"),
            ("in=x", "in=x"),
        ] {
            let selector = LabelSelector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(selector.to_string(), canonical, "{input:?}");
            assert_eq!(LabelSelector::parse(canonical), Ok(selector), "{canonical:?} parses back");
        }
    }

    #[test]
    fn negative_requirements_match_objects_without_the_key() {
        let web = labels(json!({"app": "web", "env": "prod", "canary": ""}));
        let bare = labels(json!({}));
        // (selector, matches `web`, matches `bare`)
        for (selector, on_web, on_bare) in [
            ("", true, true),
            ("app=web", true, false),
            ("app=api", false, false),
            ("app!=api", true, true),
            ("app!=web", false, true),
            ("env in (prod,qa)", true, false),
            ("env notin (prod)", false, true),
            ("env notin (dev)", true, true),
            ("canary", true, false),
            ("canary=", true, false),
            ("!canary", false, true),
            ("app=web,env=qa", false, false),
            ("app=web,!missing", true, false),
        ] {
            let selector = LabelSelector::parse(selector).expect("test selectors parse");
            assert_eq!(selector.matches(Some(&web)), on_web, "{selector} on web");
            assert_eq!(selector.matches(Some(&bare)), on_bare, "{selector} on no labels");
            assert_eq!(selector.matches(None), on_bare, "{selector} on absent labels");
        }
    }

    #[test]
    fn matches_object_reads_metadata_labels() {
        let selector = LabelSelector::parse("app=web").expect("parses");
        assert!(selector.matches_object(&json!({"metadata": {"name": "a", "labels": {"app": "web"}}})));
        assert!(!selector.matches_object(&json!({"metadata": {"name": "a"}})));
        assert!(LabelSelector::parse("!app").expect("parses").matches_object(&json!({})));
    }

    #[test]
    fn from_spec_converts_match_labels_and_expressions() {
        // (structured selector, equivalent query)
        for (spec, query) in [
            (Value::Null, ""),
            (json!({}), ""),
            (json!({"matchLabels": {"app": "web"}}), "app=web"),
            (
                json!({"matchLabels": {"app": "web"}, "matchExpressions": [
                    {"key": "env", "operator": "In", "values": ["qa", "prod"]},
                    {"key": "tier", "operator": "NotIn", "values": ["db"]},
                    {"key": "canary", "operator": "Exists"},
                    {"key": "legacy", "operator": "DoesNotExist", "values": []},
                ]}),
                "app=web,env in (prod,qa),tier notin (db),canary,!legacy",
            ),
        ] {
            let selector = LabelSelector::from_spec(&spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(selector, LabelSelector::parse(query).expect("query parses"), "{spec}");
        }
    }

    #[test]
    fn from_spec_rejects_bad_operators_arities_and_shapes() {
        for (spec, message) in [
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
                "\"Gt\" is not a valid label selector operator",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
                "unable to parse requirement: values for 'in' on key \"a\" must not be empty",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
                "unable to parse requirement: operator 'exists' on key \"a\" takes no values",
            ),
            (
                json!({"matchLabels": {"a b": "x"}}),
                "unable to parse requirement: invalid label key \"a b\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            ),
            (
                json!({"matchLabels": {"a": 1}}),
                "invalid label selector: the value of label \"a\" must be a string, found 1",
            ),
            (json!({"matchExpressions": {}}), "invalid label selector: matchExpressions must be a list, found {}"),
            (json!("app=web"), "invalid label selector: expected an object, found \"app=web\""),
        ] {
            let error = LabelSelector::from_spec(&spec).expect_err("invalid selector");
            assert_eq!(error.to_string(), message, "{spec}");
        }
    }
}
