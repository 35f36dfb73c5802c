//! Strategic merge patch (`application/strategic-merge-patch+json`): what `kubectl apply`, `edit`,
//! `set image`, `rollout restart` and a default `kubectl patch` send.
//!
//! Like a JSON merge patch, but a list whose field declares `x-kubernetes-patch-strategy: merge`
//! merges element by element: by its `x-kubernetes-patch-merge-key` for lists of objects
//! (containers by `name`), as a set for lists of scalars (finalizers). The field semantics come
//! from [`crate::schema`], the same documents kubectl computes its patches from, so the two sides
//! agree. Directives, as Kubernetes defines them:
//! - `null` deletes a key;
//! - `$patch: replace | delete | merge` in a map replaces it, deletes it, or merges (the default);
//!   in a merge list, an element `{"$patch": "replace"}` replaces the whole list and an element
//!   `{"name": x, "$patch": "delete"}` deletes the element with that key;
//! - `$setElementOrder/<field>` gives the order of a merge list after the patch;
//! - `$deleteFromPrimitiveList/<field>` removes values from a merge list of scalars;
//! - `$retainKeys` lists the keys a map keeps (for fields with strategy `retainKeys`, such as a
//!   Deployment's `strategy`, so that changing `type` drops the other type's settings).

use serde_json::{Map, Value};

use crate::schema::{self, Schemas};

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_FROM: &str = "$deleteFromPrimitiveList/";

/// What went wrong applying a patch (the message is Kubernetes').
pub type PatchError = String;

/// Applies `patch` to `original`, an object whose schema is `schema` (a definition or a reference
/// to one), or with plain merge-patch semantics for every list where `schema` is `None`.
pub fn apply(schemas: &Schemas, original: &Value, patch: &Value, schema: Option<&Value>) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err("a strategic merge patch must be a JSON object".into());
    };
    let original = match original {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    Ok(merge_map(schemas, original, patch, schema)?.map(Value::Object).unwrap_or_else(|| Value::Object(Map::new())))
}

/// Merges a patch map into `original`; `None` when the patch deletes the map.
fn merge_map(
    schemas: &Schemas,
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    schema: Option<&Value>,
) -> Result<Option<Map<String, Value>>, PatchError> {
    match patch.get(PATCH).map(|v| v.as_str()) {
        None | Some(Some("merge")) => {}
        Some(Some("delete")) => return Ok(None),
        Some(Some("replace")) => {
            // The map becomes the patch, itself free of directives.
            return merge_map(schemas, Map::new(), &without(patch, PATCH), schema);
        }
        Some(other) => return Err(format!("Unknown patch type: {}", other.unwrap_or("(not a string)"))),
    }
    let mut orders = Vec::new();
    let mut deletions = Vec::new();
    for (key, value) in patch {
        if key == PATCH || key == RETAIN_KEYS {
            continue;
        }
        if let Some(field) = key.strip_prefix(SET_ORDER) {
            orders.push((field, value));
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_FROM) {
            deletions.push((field, value));
            continue;
        }
        let property = schema.and_then(|s| schemas.property(s, key));
        match value {
            Value::Null => {
                original.remove(key);
            }
            Value::Object(patch_map) => {
                let current = match original.remove(key) {
                    Some(Value::Object(map)) => map,
                    _ => Map::new(),
                };
                // A map from names to values (labels, data) merges key by key with no further
                // semantics inside; a struct merges field by field by its own schema.
                let sub_schema = property.filter(|p| !is_map_of_values(schemas, p));
                if let Some(merged) = merge_map(schemas, current, patch_map, sub_schema)? {
                    original.insert(key.clone(), Value::Object(merged));
                }
            }
            Value::Array(patch_list) => {
                let semantics = property.map(schema::semantics).unwrap_or_default();
                let current = match original.remove(key) {
                    Some(Value::Array(list)) => list,
                    _ => Vec::new(),
                };
                let merged = if semantics.merges() {
                    let element = property.and_then(|p| schemas.element(p));
                    match &semantics.merge_key {
                        Some(merge_key) => merge_keyed(schemas, current, patch_list, merge_key, element)?,
                        None => merge_set(current, patch_list),
                    }
                } else {
                    let element = property.and_then(|p| schemas.element(p));
                    patch_list.iter().map(|v| clean(schemas, v, element)).collect::<Result<_, _>>()?
                };
                original.insert(key.clone(), Value::Array(merged));
            }
            scalar => {
                original.insert(key.clone(), scalar.clone());
            }
        }
    }
    for (field, values) in deletions {
        let Value::Array(values) = values else {
            return Err(format!("{DELETE_FROM}{field} must be a list"));
        };
        if let Some(Value::Array(list)) = original.get_mut(field) {
            list.retain(|v| !values.contains(v));
        }
    }
    for (field, order) in orders {
        let Value::Array(order) = order else {
            return Err(format!("{SET_ORDER}{field} must be a list"));
        };
        let property = schema.and_then(|s| schemas.property(s, field));
        let merge_key = property.map(schema::semantics).and_then(|s| s.merge_key);
        if let Some(Value::Array(list)) = original.get_mut(field) {
            reorder(list, order, merge_key.as_deref());
        }
    }
    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let Value::Array(keep) = retain else {
            return Err(format!("{RETAIN_KEYS} must be a list of keys"));
        };
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        original.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(Some(original))
}

/// Whether a property is a map from keys to values (`additionalProperties`), not a struct.
fn is_map_of_values(schemas: &Schemas, property: &Value) -> bool {
    let node = schemas.resolve(property);
    node.get("properties").is_none() && node.get("additionalProperties").is_some_and(Value::is_object)
}

/// A map free of one key.
fn without(map: &Map<String, Value>, key: &str) -> Map<String, Value> {
    map.iter().filter(|(k, _)| *k != key).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A value from a patch that lands where nothing was: merged into nothing, so that its own nulls
/// and directives are resolved rather than stored.
fn clean(schemas: &Schemas, value: &Value, schema: Option<&Value>) -> Result<Value, PatchError> {
    match value {
        Value::Object(map) => Ok(Value::Object(merge_map(schemas, Map::new(), map, schema)?.unwrap_or_default())),
        other => Ok(other.clone()),
    }
}

/// A merge list of objects: elements of the patch merge into the element with the same key, are
/// added when there is none, or delete it with `$patch: delete`.
fn merge_keyed(
    schemas: &Schemas,
    mut current: Vec<Value>,
    patch: &[Value],
    merge_key: &str,
    element: Option<&Value>,
) -> Result<Vec<Value>, PatchError> {
    if patch.iter().any(|p| p.get(PATCH).and_then(Value::as_str) == Some("replace")) {
        let rest = patch.iter().filter(|p| p.get(PATCH).and_then(Value::as_str) != Some("replace"));
        return rest.map(|v| clean(schemas, v, element)).collect();
    }
    for item in patch {
        let Value::Object(item_map) = item else {
            // Scalars in an object list: nothing to key them by, so they are added as they are.
            current.push(item.clone());
            continue;
        };
        let key = item_map
            .get(merge_key)
            .ok_or_else(|| format!("map: {item} does not contain declared merge key: {merge_key}"))?;
        let position = current.iter().position(|c| c.get(merge_key) == Some(key));
        match item_map.get(PATCH).and_then(Value::as_str) {
            Some("delete") => {
                if let Some(i) = position {
                    current.remove(i);
                }
            }
            _ => match position {
                Some(i) => {
                    let existing = match std::mem::take(&mut current[i]) {
                        Value::Object(map) => map,
                        _ => Map::new(),
                    };
                    match merge_map(schemas, existing, item_map, element)? {
                        Some(merged) => current[i] = Value::Object(merged),
                        None => {
                            current.remove(i);
                        }
                    }
                }
                None => current.push(clean(schemas, item, element)?),
            },
        }
    }
    Ok(current)
}

/// A merge list of scalars: a set union that keeps the current order.
fn merge_set(mut current: Vec<Value>, patch: &[Value]) -> Vec<Value> {
    for value in patch {
        if !current.contains(value) {
            current.push(value.clone());
        }
    }
    current
}

/// Orders `list` as `order` says; elements it does not mention (added by the server, not by the
/// patch's author) follow in their current order.
fn reorder(list: &mut Vec<Value>, order: &[Value], merge_key: Option<&str>) {
    let identity = |v: &Value| -> Value {
        match merge_key {
            Some(key) => v.get(key).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let mut rest = std::mem::take(list);
    for wanted in order {
        let wanted = identity(wanted);
        if let Some(i) = rest.iter().position(|v| identity(v) == wanted) {
            list.push(rest.remove(i));
        }
    }
    list.append(&mut rest);
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wasmkube_api::kinds;

    use super::*;
    use crate::schema::schemas;

    fn deployment() -> Value {
        json!({
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "a"}, "finalizers": ["a"]},
            "spec": {
                "replicas": 2,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                "template": {"spec": {"containers": [
                    {"name": "web", "image": "web:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                    {"name": "log", "image": "log:1"},
                ]}},
            },
        })
    }

    fn patch(p: Value) -> Value {
        let kind = kinds::by_resource("apps", "v1", "deployments").expect("deployments");
        let s = schemas();
        apply(s, &deployment(), &p, Some(s.root(kind))).expect("patch applies")
    }

    #[test]
    fn containers_merge_by_name_and_nulls_delete() {
        // What `kubectl apply` sends to change one env var and remove another.
        let out = patch(json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "log"}],
            "containers": [{"name": "web", "image": "web:2", "env": [{"name": "A", "value": "9"}, {"name": "B", "$patch": "delete"}]}],
        }}}}));
        let containers = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0], json!({"name": "web", "image": "web:2", "env": [{"name": "A", "value": "9"}]}));
        assert_eq!(containers[1], json!({"name": "log", "image": "log:1"}));
        let out = patch(
            json!({"metadata": {"labels": {"tier": null}}, "spec": {"template": {"spec": {"containers": [{"name": "web", "env": null}]}}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(out["spec"]["template"]["spec"]["containers"][0], json!({"name": "web", "image": "web:1"}));
    }

    #[test]
    fn element_order_replace_and_delete_directives() {
        let out = patch(json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "log"}, {"name": "new"}, {"name": "web"}],
            "containers": [{"name": "new", "image": "new:1"}],
        }}}}));
        let names: Vec<_> = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].clone())
            .collect();
        assert_eq!(names, ["log", "new", "web"]);
        let out = patch(
            json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "o:1"}]}}}}),
        );
        assert_eq!(out["spec"]["template"]["spec"]["containers"], json!([{"name": "only", "image": "o:1"}]));
        let out = patch(json!({"spec": {"template": {"spec": {"containers": [{"name": "log", "$patch": "delete"}]}}}}));
        assert_eq!(out["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 1);
        let out = patch(json!({"metadata": {"labels": {"$patch": "replace", "only": "x"}}}));
        assert_eq!(out["metadata"]["labels"], json!({"only": "x"}));
    }

    #[test]
    fn sets_retain_keys_and_unkeyed_lists() {
        let out = patch(json!({"metadata": {"finalizers": ["b", "a"], "$deleteFromPrimitiveList/finalizers": ["a"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        // Switching strategy type with retainKeys drops the old type's settings.
        let out = patch(json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        // A list without a merge strategy (args) is replaced whole.
        let out = patch(json!({"spec": {"template": {"spec": {"containers": [{"name": "log", "args": ["x"]}]}}}}));
        assert_eq!(out["spec"]["template"]["spec"]["containers"][1]["args"], json!(["x"]));
        let out = patch(json!({"spec": {"template": {"spec": {"containers": [{"name": "log", "args": ["y"]}]}}}}));
        assert_eq!(out["spec"]["template"]["spec"]["containers"][1]["args"], json!(["y"]));
        let err = apply(
            schemas(),
            &deployment(),
            &json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
            Some(schemas().root(kinds::by_resource("apps", "v1", "deployments").unwrap())),
        );
        assert_eq!(err.unwrap_err(), "map: {\"image\":\"x\"} does not contain declared merge key: name");
    }
}
