//! Selectors as the plugins match them: a pod's `labelSelector`s, parsed by the API's
//! [`LabelSelector`] so the rules are the ones the API server validates with, and the
//! `nodeSelectorTerms` of node affinity, whose requirements also know `Gt` and `Lt` and may
//! select on the node's name (`matchFields` on `metadata.name`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector as LabelSelectorSpec, LabelSelectorRequirement};
use wasmkube_api::selector::{LabelSelector, Operator};

use crate::scheduler::framework::NodeInfo;

/// A compiled `metav1.LabelSelector`. As with Kubernetes' `LabelSelectorAsSelector`, an absent
/// selector selects nothing and `{}` everything; one that does not parse selects nothing (the
/// API server rejects those, so only a hand-written object gets here).
#[derive(Debug, Clone)]
pub(crate) struct Selector(Option<LabelSelector>);

impl Selector {
    pub(crate) fn new(spec: Option<&LabelSelectorSpec>) -> Self {
        let parsed = spec.and_then(|s| serde_json::to_value(s).ok()).and_then(|v| LabelSelector::from_spec(&v).ok());
        Self(parsed)
    }

    /// `spec` with `key In (value)` added for each of `keys` that `labels` has: how
    /// `matchLabelKeys` narrows a spread constraint to the pod's own revision. An absent `spec`
    /// stays "nothing", as in Kubernetes.
    pub(crate) fn with_label_keys(
        spec: Option<&LabelSelectorSpec>,
        keys: &[String],
        labels: &BTreeMap<String, String>,
    ) -> Self {
        let Some(spec) = spec else { return Self(None) };
        let mut spec = spec.clone();
        for key in keys {
            if let Some(value) = labels.get(key) {
                spec.match_expressions.get_or_insert_with(Vec::new).push(LabelSelectorRequirement {
                    key: key.clone(),
                    operator: "In".to_string(),
                    values: Some(vec![value.clone()]),
                });
            }
        }
        Self::new(Some(&spec))
    }

    /// Selects everything (no requirements at all).
    pub(crate) fn is_everything(&self) -> bool {
        self.0.as_ref().is_some_and(LabelSelector::is_empty)
    }

    pub(crate) fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let Some(selector) = &self.0 else { return false };
        selector.requirements().iter().all(|r| {
            let listed = || labels.get(&r.key).is_some_and(|v| r.values.contains(v));
            match r.operator {
                Operator::Equals | Operator::In => listed(),
                Operator::NotEquals | Operator::NotIn => !listed(),
                Operator::Exists => labels.contains_key(&r.key),
                Operator::DoesNotExist => !labels.contains_key(&r.key),
            }
        })
    }
}

/// A pod's labels (none: empty).
pub(crate) fn pod_labels(pod: &Pod) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    pod.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

pub(crate) fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("")
}

/// Whether `node` matches any of `terms` (they are ORed).
pub(crate) fn matches_any_term(terms: &[NodeSelectorTerm], node: &NodeInfo) -> bool {
    terms.iter().any(|t| matches_term(t, node))
}

/// Whether `node` matches every requirement of `term`. An empty term matches nothing, and so does
/// a requirement Kubernetes would fail to parse (wrong number of values, `Gt` on a non-integer).
pub(crate) fn matches_term(term: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions.iter().all(|r| label_requirement(r, node.labels())) && fields.iter().all(|r| field_requirement(r, node))
}

fn label_requirement(requirement: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    let label = labels.get(&requirement.key);
    let listed = || label.is_some_and(|v| values.contains(v));
    // Compared as integers; a label that is absent or not an integer satisfies neither.
    let compare = |ordering: std::cmp::Ordering| {
        let bound = values.first().and_then(|b| b.parse::<i64>().ok());
        let value = label.and_then(|v| v.parse::<i64>().ok());
        matches!((value, bound), (Some(v), Some(b)) if v.cmp(&b) == ordering)
    };
    match (requirement.operator.as_str(), values.len()) {
        ("In", 1..) => listed(),
        ("NotIn", 1..) => !listed(),
        ("Exists", 0) => label.is_some(),
        ("DoesNotExist", 0) => label.is_none(),
        ("Gt", 1) => compare(std::cmp::Ordering::Greater),
        ("Lt", 1) => compare(std::cmp::Ordering::Less),
        _ => false,
    }
}

/// `matchFields`: only `metadata.name` exists on a node, with `In`/`NotIn` and exactly one value.
fn field_requirement(requirement: &NodeSelectorRequirement, node: &NodeInfo) -> bool {
    let field = if requirement.key == "metadata.name" { node.name() } else { "" };
    match (requirement.operator.as_str(), requirement.values.as_deref().unwrap_or_default()) {
        ("In", [value]) => field == value,
        ("NotIn", [value]) => field != value,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::scheduler::plugins::testing::NodeBuilder;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn label_selectors_select_nothing_when_absent_and_everything_when_empty() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        // (selector, matches `web`, matches no labels)
        for (spec, on_web, on_bare) in [
            (Value::Null, false, false),
            (json!({}), true, true),
            (json!({"matchLabels": {"app": "web"}}), true, false),
            (json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]}), true, true),
            (json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}), true, false),
            (json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}), false, true),
            (json!({"matchExpressions": [{"key": "app", "operator": "In"}]}), false, false),
        ] {
            let spec: Option<LabelSelectorSpec> = serde_json::from_value(spec.clone()).expect("selector");
            let selector = Selector::new(spec.as_ref());
            assert_eq!(selector.matches(&web), on_web, "{spec:?} on web");
            assert_eq!(selector.matches(&BTreeMap::new()), on_bare, "{spec:?} on no labels");
        }
    }

    #[test]
    fn match_label_keys_narrow_to_the_pods_own_values() {
        let spec: LabelSelectorSpec = serde_json::from_value(json!({"matchLabels": {"app": "web"}})).expect("selector");
        let own = labels(&[("app", "web"), ("pod-template-hash", "1")]);
        let keys = vec!["pod-template-hash".to_string(), "missing".to_string()];
        let selector = Selector::with_label_keys(Some(&spec), &keys, &own);
        assert!(selector.matches(&own));
        assert!(!selector.matches(&labels(&[("app", "web"), ("pod-template-hash", "2")])));
        assert!(!Selector::with_label_keys(None, &keys, &own).matches(&own));
    }

    #[test]
    fn node_selector_terms_know_every_operator_and_the_node_name() {
        let node = NodeInfo::new(NodeBuilder::new("n1").label("zone", "a").label("cores", "8").build());
        // (matchExpressions, matchFields, matches)
        for (expressions, fields, expected) in [
            (json!([]), json!([]), false),
            (json!([{"key": "zone", "operator": "In", "values": ["a", "b"]}]), json!([]), true),
            (json!([{"key": "zone", "operator": "In", "values": []}]), json!([]), false),
            (json!([{"key": "zone", "operator": "NotIn", "values": ["a"]}]), json!([]), false),
            (json!([{"key": "gpu", "operator": "NotIn", "values": ["x"]}]), json!([]), true),
            (json!([{"key": "zone", "operator": "Exists"}]), json!([]), true),
            (json!([{"key": "zone", "operator": "Exists", "values": ["a"]}]), json!([]), false),
            (json!([{"key": "gpu", "operator": "DoesNotExist"}]), json!([]), true),
            (json!([{"key": "cores", "operator": "Gt", "values": ["4"]}]), json!([]), true),
            (json!([{"key": "cores", "operator": "Gt", "values": ["8"]}]), json!([]), false),
            (json!([{"key": "cores", "operator": "Lt", "values": ["10"]}]), json!([]), true),
            (json!([{"key": "zone", "operator": "Lt", "values": ["10"]}]), json!([]), false),
            (json!([{"key": "cores", "operator": "Gt", "values": ["x"]}]), json!([]), false),
            (json!([]), json!([{"key": "metadata.name", "operator": "In", "values": ["n1"]}]), true),
            (json!([]), json!([{"key": "metadata.name", "operator": "In", "values": ["n2"]}]), false),
            (json!([]), json!([{"key": "metadata.name", "operator": "NotIn", "values": ["n2"]}]), true),
            (json!([]), json!([{"key": "metadata.name", "operator": "In", "values": ["n1", "n2"]}]), false),
            (
                json!([{"key": "zone", "operator": "In", "values": ["a"]}]),
                json!([{"key": "metadata.name", "operator": "In", "values": ["n2"]}]),
                false,
            ),
        ] {
            let term: NodeSelectorTerm =
                serde_json::from_value(json!({"matchExpressions": expressions, "matchFields": fields})).expect("term");
            assert_eq!(matches_term(&term, &node), expected, "{expressions} / {fields}");
        }
    }
}
