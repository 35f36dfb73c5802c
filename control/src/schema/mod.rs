//! The OpenAPI schemas of every served kind, and how each field merges.
//!
//! The schemas come from k8s-openapi (through schemars, as OpenAPI 3 `components.schemas`).
//! k8s-openapi leaves out the `x-kubernetes-*` extensions that say how a list or map merges, so
//! [`Schemas::build`] adds them from `list_semantics.tsv`, together with each kind's
//! `x-kubernetes-group-version-kind`. The result is one source of truth for two readers: the
//! `/openapi/v3` documents clients compute their patches from, and the server's own strategic
//! merge patch ([`crate::objects`]), which must merge exactly the way those clients expect.

use std::collections::HashMap;
use std::sync::LazyLock;

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};
use wasmkube_api::{Kind, kinds};

/// Where definitions live in an OpenAPI 3 document, as `$ref`s name them.
pub const REF_PREFIX: &str = "#/components/schemas/";

/// The definitions of every served kind and everything they refer to.
pub struct Schemas {
    definitions: Map<String, Value>,
    /// Each kind's definition name, by (group, kind).
    roots: HashMap<(&'static str, &'static str), String>,
}

/// The schemas, built once on first use.
pub fn schemas() -> &'static Schemas {
    static SCHEMAS: LazyLock<Schemas> = LazyLock::new(Schemas::build);
    &SCHEMAS
}

/// How a list or map field merges, from its `x-kubernetes-*` extensions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSemantics {
    /// `x-kubernetes-patch-merge-key`: what identifies a list element in a strategic merge patch.
    pub merge_key: Option<String>,
    /// `x-kubernetes-patch-strategy`, split on commas (`merge`, `retainKeys`, `replace`).
    pub strategies: Vec<String>,
}

impl FieldSemantics {
    pub fn merges(&self) -> bool {
        self.strategies.iter().any(|s| s == "merge")
    }

    pub fn retains_keys(&self) -> bool {
        self.strategies.iter().any(|s| s == "retainKeys")
    }
}

impl Schemas {
    fn build() -> Self {
        let mut generator = SchemaSettings::openapi3().into_generator();
        let mut roots = HashMap::new();
        for kind in kinds::ALL {
            let reference = kind.schema(&mut generator);
            let name = reference
                .as_value()
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(REF_PREFIX))
                .expect("a kind's schema is a named definition")
                .to_string();
            roots.insert((kind.group, kind.kind), name);
        }
        // What the paths' operations refer to besides the kinds.
        generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>();
        generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>();
        generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Patch>();
        generator.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>();
        let mut definitions = generator.take_definitions(true);
        add_list_semantics(&mut definitions);
        for kind in kinds::ALL {
            let gvk = json!([{"group": kind.group, "kind": kind.kind, "version": kind.version}]);
            if let Some(Value::Object(definition)) = definitions.get_mut(&roots[&(kind.group, kind.kind)]) {
                definition.insert("x-kubernetes-group-version-kind".into(), gvk);
            }
        }
        if let Some(Value::Object(scale)) = definitions.get_mut("io.k8s.api.autoscaling.v1.Scale") {
            let gvk = json!([{"group": "autoscaling", "kind": "Scale", "version": "v1"}]);
            scale.insert("x-kubernetes-group-version-kind".into(), gvk);
        }
        Self { definitions, roots }
    }

    pub fn definitions(&self) -> &Map<String, Value> {
        &self.definitions
    }

    /// The definition name of `kind` (`io.k8s.api.apps.v1.Deployment`).
    pub fn root_name(&self, kind: &Kind) -> &str {
        &self.roots[&(kind.group, kind.kind)]
    }

    /// The definition of `kind`.
    pub fn root(&self, kind: &Kind) -> &Value {
        &self.definitions[self.root_name(kind)]
    }

    /// Follows a `$ref` (bare or as the only member of `allOf`, as OpenAPI 3.0 wraps references
    /// that carry a description) to the definition it names.
    pub fn resolve<'a>(&'a self, node: &'a Value) -> &'a Value {
        let reference = node
            .get("$ref")
            .or_else(|| node.get("allOf").and_then(Value::as_array).filter(|a| a.len() == 1)?[0].get("$ref"));
        match reference.and_then(Value::as_str).and_then(|r| r.strip_prefix(REF_PREFIX)) {
            Some(name) => self.definitions.get(name).unwrap_or(node),
            None => node,
        }
    }

    /// The property node of field `name` in object schema `schema` (unresolved, so it still
    /// carries the field's own extensions).
    pub fn property<'a>(&'a self, schema: &'a Value, name: &str) -> Option<&'a Value> {
        self.resolve(schema).get("properties")?.get(name)
    }

    /// The schema of a list field's elements, or a map field's values.
    pub fn element<'a>(&'a self, node: &'a Value) -> Option<&'a Value> {
        let node = self.resolve(node);
        node.get("items").or_else(|| node.get("additionalProperties").filter(|v| v.is_object()))
    }
}

/// How a property node says its field merges.
pub fn semantics(node: &Value) -> FieldSemantics {
    FieldSemantics {
        merge_key: node.get("x-kubernetes-patch-merge-key").and_then(Value::as_str).map(String::from),
        strategies: node
            .get("x-kubernetes-patch-strategy")
            .and_then(Value::as_str)
            .map(|s| s.split(',').map(|p| p.trim().to_string()).collect())
            .unwrap_or_default(),
    }
}

/// Puts each line of `list_semantics.tsv` on the property (or definition) it names.
fn add_list_semantics(definitions: &mut Map<String, Value>) {
    const TABLE: &str = include_str!("list_semantics.tsv");
    for line in TABLE.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let [definition, property, merge_key, strategy, list_type, map_keys, map_type] = fields[..] else {
            panic!("list_semantics.tsv: a line without 7 fields: {line:?}");
        };
        let Some(Value::Object(definition)) = definitions.get_mut(definition) else {
            continue; // a type no served kind uses
        };
        let node = if property.is_empty() {
            definition
        } else {
            match definition.get_mut("properties").and_then(|p| p.get_mut(property)) {
                Some(Value::Object(node)) => node,
                _ => continue,
            }
        };
        let mut set = |key: &str, value: Value| {
            node.insert(key.into(), value);
        };
        if !merge_key.is_empty() {
            set("x-kubernetes-patch-merge-key", json!(merge_key));
        }
        if !strategy.is_empty() {
            set("x-kubernetes-patch-strategy", json!(strategy));
        }
        if !list_type.is_empty() {
            set("x-kubernetes-list-type", json!(list_type));
        }
        if !map_keys.is_empty() {
            set("x-kubernetes-list-map-keys", json!(map_keys.split(',').collect::<Vec<_>>()));
        }
        if !map_type.is_empty() {
            set("x-kubernetes-map-type", json!(map_type));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_merge_by_name_and_references_resolve() {
        let s = schemas();
        let deployment = kinds::by_resource("apps", "v1", "deployments").expect("deployments");
        assert_eq!(s.root_name(deployment), "io.k8s.api.apps.v1.Deployment");
        assert_eq!(
            s.root(deployment)["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
        let spec = s.property(s.root(deployment), "spec").expect("spec");
        let template = s.property(spec, "template").expect("template");
        let pod_spec = s.property(template, "spec").expect("template.spec");
        let containers = s.property(pod_spec, "containers").expect("containers");
        let meta = semantics(containers);
        assert_eq!(meta.merge_key.as_deref(), Some("name"));
        assert!(meta.merges());
        let env = s.property(s.element(containers).expect("container"), "env").expect("env");
        assert_eq!(semantics(env).merge_key.as_deref(), Some("name"));
        let strategy = s.property(spec, "strategy").expect("strategy");
        assert!(semantics(strategy).retains_keys());
        // Every reference in every definition names a definition that exists.
        let text = serde_json::to_string(s.definitions()).expect("serialize");
        for reference in text.split("\"$ref\":\"").skip(1) {
            let name = reference.split('"').next().expect("a string").trim_start_matches(REF_PREFIX);
            assert!(s.definitions().contains_key(name), "dangling reference {name}");
        }
    }
}
