//! Field sets: which fields of an object a manager owns, in the `FieldsV1` form Kubernetes stores
//! in `metadata.managedFields`.
//!
//! A set is a tree. Each edge names a member: `f:<field>` for a struct field or map key,
//! `k:<json of the key fields>` for an element of a list keyed by `x-kubernetes-list-map-keys`
//! (containers by `{"name":"web"}`), `v:<json value>` for an element of a set. A node is owned
//! itself when it is a leaf (`{}` in JSON) or carries `".": {}` beside its children. [`of`] builds
//! the set of everything an object sets, following the schemas' list and map types.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::schema::Schemas;

/// One node of a field set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    /// The node itself is owned (a leaf, or `.` in FieldsV1).
    pub own: bool,
    pub children: BTreeMap<String, FieldSet>,
}

/// One step of a path: what a child name means.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Field(String),
    Key(Map<String, Value>),
    Value(Value),
}

impl Step {
    pub fn parse(name: &str) -> Option<Step> {
        let (tag, rest) = name.split_once(':')?;
        match tag {
            "f" => Some(Step::Field(rest.to_string())),
            "k" => match serde_json::from_str(rest) {
                Ok(Value::Object(key)) => Some(Step::Key(key)),
                _ => None,
            },
            "v" => serde_json::from_str(rest).ok().map(Step::Value),
            _ => None,
        }
    }
}

/// Metadata the server owns, and the type fields: never in a manager's set.
const UNMANAGED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

impl FieldSet {
    fn leaf() -> Self {
        FieldSet { own: true, children: BTreeMap::new() }
    }

    pub fn is_empty(&self) -> bool {
        !self.own && self.children.is_empty()
    }

    /// The FieldsV1 JSON of this set.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        if self.own && !self.children.is_empty() {
            map.insert(".".into(), Value::Object(Map::new()));
        }
        for (name, child) in &self.children {
            map.insert(name.clone(), child.to_json());
        }
        Value::Object(map)
    }

    pub fn from_json(value: &Value) -> Self {
        let Some(map) = value.as_object() else { return FieldSet::default() };
        if map.is_empty() {
            return FieldSet::leaf();
        }
        let children =
            map.iter().filter(|(k, _)| *k != ".").map(|(k, v)| (k.clone(), FieldSet::from_json(v))).collect();
        FieldSet { own: map.contains_key("."), children }
    }

    /// Every owned path, as child-name sequences.
    pub fn leaves(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.walk(&mut Vec::new(), &mut out);
        out
    }

    fn walk(&self, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if self.own {
            out.push(path.clone());
        }
        for (name, child) in &self.children {
            path.push(name.clone());
            child.walk(path, out);
            path.pop();
        }
    }

    /// The node at `path`.
    pub fn node(&self, path: &[String]) -> Option<&FieldSet> {
        match path.split_first() {
            None => Some(self),
            Some((first, rest)) => self.children.get(first)?.node(rest),
        }
    }

    pub fn contains(&self, path: &[String]) -> bool {
        match path.split_first() {
            None => self.own,
            Some((first, rest)) => self.children.get(first).is_some_and(|c| c.contains(rest)),
        }
    }

    /// Adds one owned path.
    pub fn insert(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.own = true,
            Some((first, rest)) => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    /// Removes one owned path (pruning nodes left empty).
    pub fn remove(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.own = false,
            Some((first, rest)) => {
                if let Some(child) = self.children.get_mut(first) {
                    child.remove(rest);
                    if child.is_empty() {
                        self.children.remove(first);
                    }
                }
            }
        }
    }
}

/// The fields `object` (of the kind whose definition is `schema`) sets, without the type,
/// server-owned metadata and the status.
pub fn of(schemas: &Schemas, object: &Value, schema: &Value) -> FieldSet {
    let mut set = FieldSet::default();
    let Some(map) = object.as_object() else { return set };
    for (key, value) in map {
        if matches!(key.as_str(), "apiVersion" | "kind" | "status") || value.is_null() {
            continue;
        }
        let property = schemas.property(schema, key);
        let mut child = of_value(schemas, value, property);
        if key == "metadata" {
            for unmanaged in UNMANAGED_META {
                child.children.remove(&format!("f:{unmanaged}"));
            }
            if child.children.is_empty() {
                continue;
            }
            child.own = false;
        }
        set.children.insert(format!("f:{key}"), child);
    }
    set
}

/// The fields `object`'s status sets: what a write through the `status` subresource owns.
pub fn of_status(schemas: &Schemas, object: &Value, schema: &Value) -> FieldSet {
    let mut set = FieldSet::default();
    if let Some(status) = object.get("status").filter(|s| !s.is_null()) {
        set.children.insert("f:status".into(), of_value(schemas, status, schemas.property(schema, "status")));
    }
    set
}

/// The set of one value at a property (unknown properties are leaves).
fn of_value(schemas: &Schemas, value: &Value, property: Option<&Value>) -> FieldSet {
    let Some(property) = property else { return FieldSet::leaf() };
    let node = schemas.resolve(property);
    let atomic_map = |n: &Value| n.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic");
    match value {
        Value::Object(map) if !map.is_empty() && !atomic_map(property) && !atomic_map(node) => {
            let mut set = FieldSet::default();
            let is_struct = node.get("properties").is_some();
            let element = node.get("additionalProperties").filter(|v| v.is_object());
            for (key, v) in map {
                if v.is_null() {
                    continue;
                }
                let child_schema = if is_struct { schemas.property(property, key) } else { element };
                set.children.insert(format!("f:{key}"), of_value(schemas, v, child_schema));
            }
            if set.children.is_empty() { FieldSet::leaf() } else { set }
        }
        Value::Array(items) => match list_keys(property) {
            ListType::Map(keys) => {
                let element = node.get("items");
                let mut set = FieldSet::default();
                for item in items {
                    let Some(name) = key_name(item, &keys) else { continue };
                    let mut child = of_value(schemas, item, element);
                    child.own = true;
                    set.children.insert(name, child);
                }
                if set.children.is_empty() { FieldSet::leaf() } else { set }
            }
            ListType::Set => {
                let children: BTreeMap<String, FieldSet> = items
                    .iter()
                    .map(|v| (format!("v:{}", serde_json::to_string(v).unwrap_or_default()), FieldSet::leaf()))
                    .collect();
                if children.is_empty() { FieldSet::leaf() } else { FieldSet { own: false, children } }
            }
            ListType::Atomic => FieldSet::leaf(),
        },
        _ => FieldSet::leaf(),
    }
}

/// How a list field merges under server-side apply.
pub enum ListType {
    Atomic,
    Set,
    /// Keyed by these fields of each element.
    Map(Vec<String>),
}

/// From `x-kubernetes-list-type`, falling back (as Kubernetes does) to the patch strategy.
pub fn list_keys(property: &Value) -> ListType {
    let text = |k: &str| property.get(k).and_then(Value::as_str);
    match text("x-kubernetes-list-type") {
        Some("map") => {
            let keys = property.get("x-kubernetes-list-map-keys").and_then(Value::as_array);
            ListType::Map(keys.into_iter().flatten().filter_map(Value::as_str).map(String::from).collect())
        }
        Some("set") => ListType::Set,
        Some(_) => ListType::Atomic,
        None => match (text("x-kubernetes-patch-strategy"), text("x-kubernetes-patch-merge-key")) {
            (Some(s), Some(key)) if s.split(',').any(|p| p == "merge") => ListType::Map(vec![key.to_string()]),
            _ => ListType::Atomic,
        },
    }
}

/// `k:{"name":"web"}` for an element keyed by `keys`.
pub fn key_name(item: &Value, keys: &[String]) -> Option<String> {
    let mut key = Map::new();
    for k in keys {
        // A key field may be defaulted by the server (`protocol`), so an element may lack it.
        if let Some(v) = item.get(k) {
            key.insert(k.clone(), v.clone());
        }
    }
    (!key.is_empty()).then(|| format!("k:{}", Value::Object(key)))
}

/// A path as Kubernetes prints it in conflicts: `.spec.replicas`, `.spec.containers[name="web"].image`.
pub fn display(path: &[String]) -> String {
    let mut out = String::new();
    for step in path {
        match Step::parse(step) {
            Some(Step::Field(f)) => {
                out.push('.');
                out.push_str(&f);
            }
            Some(Step::Key(key)) => {
                let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
            Some(Step::Value(v)) => out.push_str(&format!("[={v}]")),
            None => out.push_str(step),
        }
    }
    out
}
