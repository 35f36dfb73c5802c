//! List selectors: which objects a `labelSelector` or `fieldSelector` query parameter, or a
//! structured `metav1.LabelSelector` in a spec, picks out.
//!
//! [`LabelSelector`] parses the query syntax (`app=web,tier in (a,b),!canary`) and the structured
//! form (`matchLabels`/`matchExpressions`) into one type that controllers, the store and
//! validation all match with. [`FieldSelector`] supports, per kind, the fields Kubernetes lets
//! clients select on. Both are pure: no I/O, errors are [`SelectorError`] values whose messages
//! become the message of a 400 BadRequest `Status`.

mod field;
mod label;
mod query;

pub use field::{FieldOperator, FieldRequirement, FieldSelector};
pub use label::{LabelSelector, Operator, Requirement};

/// Why a selector could not be parsed; each message names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("unable to parse requirement: invalid label key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("unable to parse requirement: invalid label value {value:?} for key {key:?}: {reason}")]
    InvalidValue { key: String, value: String, reason: String },
    /// The query syntax broke off: `found` is the token (quoted) or `end of input`.
    #[error("unable to parse requirement: found {found}, expected {expected}")]
    Syntax { found: String, expected: &'static str },
    #[error("unable to parse requirement: values for '{operator}' on key {key:?} must not be empty")]
    EmptyValues { key: String, operator: &'static str },
    #[error("unable to parse requirement: operator '{operator}' on key {key:?} takes no values")]
    UnexpectedValues { key: String, operator: &'static str },
    #[error("{operator:?} is not a valid label selector operator")]
    UnknownOperator { operator: String },
    /// A structured selector of the wrong JSON shape (`matchLabels` not a map of strings, ...).
    #[error("invalid label selector: {0}")]
    Malformed(String),
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    InvalidFieldTerm { selector: String, term: String },
    #[error("invalid field selector value {value:?}: {reason}")]
    InvalidFieldValue { value: String, reason: &'static str },
}
