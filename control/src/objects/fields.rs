//! Decoding a request body into a kind's canonical form, and `fieldValidation`.
//!
//! The canonical form is what the typed k8s-openapi struct encodes back to; any field of the body
//! that does not survive that round trip is unknown to the kind. Kubernetes rejects those under
//! `fieldValidation=Strict`, warns under `Warn` (the default) and drops them silently under `Ignore`.

use serde_json::Value;
use wasmkube_api::Kind;

use crate::status::ApiError;

/// The `fieldValidation` query parameter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value {
            None | Some("") | Some("Warn") => Ok(Self::Warn),
            Some("Strict") => Ok(Self::Strict),
            Some("Ignore") => Ok(Self::Ignore),
            Some(other) => Err(ApiError::BadRequest(format!(
                "fieldValidation parameter unsupported: {other:?}; supported values: \"Ignore\", \"Warn\", \"Strict\""
            ))),
        }
    }
}

/// Checks `apiVersion`/`kind` against the endpoint (filling them when absent), converts the body to
/// the canonical form and applies `validation` to its unknown fields. Returns the canonical object
/// and the warnings to send.
pub fn canonicalize(
    kind: &Kind,
    mut body: Value,
    validation: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let obj =
        body.as_object_mut().ok_or_else(|| ApiError::BadRequest("the request body must be a JSON object".into()))?;
    let expected_version = kind.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != expected_version => {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({v}) does not match the expected API version ({expected_version})"
            )));
        }
        _ => {
            obj.insert("apiVersion".into(), Value::String(expected_version));
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        Some(k) if k != kind.kind => {
            return Err(ApiError::BadRequest(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                kind.kind
            )));
        }
        _ => {
            obj.insert("kind".into(), Value::String(kind.kind.to_string()));
        }
    }
    let canonical = kind
        .normalize(&body)
        .map_err(|e| ApiError::BadRequest(format!("unable to decode {} object: {e}", kind.kind)))?;
    let mut unknown = Vec::new();
    if validation != FieldValidation::Ignore {
        unknown_fields(&body, &canonical, "", &mut unknown);
    }
    let messages: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
    if validation == FieldValidation::Strict && !messages.is_empty() {
        return Err(ApiError::BadRequest(format!("strict decoding error: {}", messages.join(", "))));
    }
    Ok((canonical, messages))
}

/// Collects the paths (`spec.foo`, `spec.containers[0].bar`) of fields set in `input` that are
/// absent from `known`. Nulls count as unset.
pub fn unknown_fields(input: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    let mut at = Vec::new();
    if !path.is_empty() {
        at.push(Step::Field(path));
    }
    collect_unknown(input, known, &mut at, out);
}

/// One step of a field path.
enum Step<'a> {
    Field(&'a str),
    Index(usize),
}

/// Walks `input` and `known` together. The path is kept as steps and written out only for an
/// unknown field: every write walks the whole object, and almost every field is known.
fn collect_unknown<'a>(input: &'a Value, known: &'a Value, at: &mut Vec<Step<'a>>, out: &mut Vec<String>) {
    match (input, known) {
        (Value::Object(input), Value::Object(known)) => {
            for (key, value) in input {
                if value.is_null() {
                    continue;
                }
                at.push(Step::Field(key));
                match known.get(key) {
                    Some(k) => collect_unknown(value, k, at, out),
                    None => out.push(render(at)),
                }
                at.pop();
            }
        }
        (Value::Array(input), Value::Array(known)) => {
            for (i, (value, k)) in input.iter().zip(known).enumerate() {
                at.push(Step::Index(i));
                collect_unknown(value, k, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn render(steps: &[Step]) -> String {
    let mut path = String::new();
    for step in steps {
        match step {
            Step::Field(name) if path.is_empty() => path.push_str(name),
            Step::Field(name) => {
                path.push('.');
                path.push_str(name);
            }
            Step::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pods() -> &'static Kind {
        wasmkube_api::kinds::resolve("pods").expect("pods are registered")
    }

    #[test]
    fn unknown_fields_are_named_by_their_full_path() {
        let body = json!({"metadata": {"name": "p", "bogus": 1}, "spec": {"containers": [
            {"name": "a", "image": "x", "extra": true}]}, "top": null});
        let err = canonicalize(pods(), body.clone(), FieldValidation::Strict).expect_err("strict rejects");
        assert_eq!(
            err.to_string(),
            "strict decoding error: unknown field \"metadata.bogus\", unknown field \"spec.containers[0].extra\""
        );
        let (object, warnings) = canonicalize(pods(), body.clone(), FieldValidation::Warn).expect("warn accepts");
        assert_eq!(warnings.len(), 2);
        assert!(object.pointer("/metadata/bogus").is_none());
        let (_, warnings) = canonicalize(pods(), body, FieldValidation::Ignore).expect("ignore accepts");
        assert!(warnings.is_empty());
    }

    #[test]
    fn mismatched_kind_or_version_is_a_bad_request() {
        let err = canonicalize(pods(), json!({"apiVersion": "apps/v1", "kind": "Pod"}), FieldValidation::Warn);
        assert!(matches!(err, Err(ApiError::BadRequest(m)) if m.contains("(apps/v1)")));
        let err = canonicalize(pods(), json!({"kind": "Service"}), FieldValidation::Warn);
        assert!(matches!(err, Err(ApiError::BadRequest(m)) if m.contains("(Service)")));
    }

    #[test]
    fn wrongly_typed_fields_are_a_bad_request() {
        let err = canonicalize(pods(), json!({"metadata": {"name": 3}}), FieldValidation::Ignore);
        assert!(matches!(err, Err(ApiError::BadRequest(m)) if m.starts_with("unable to decode Pod")));
    }
}
