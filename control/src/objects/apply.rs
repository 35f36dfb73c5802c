//! Server-side apply (`PATCH` with `application/apply-patch+yaml`): `kubectl apply --server-side`
//! and every client that declares the fields it manages.
//!
//! The body is the manager's whole intent for the object. The server keeps, per manager, the set
//! of fields it applied ([`super::fields_v1`], stored in `metadata.managedFields`). Applying:
//! 1. the new intent's field set is computed from the kind's schema (lists keyed by their map keys);
//! 2. a field another manager owns and the intent sets to a different value is a conflict: the
//!    apply fails with 409 naming each one, unless `force` is set, which takes the fields over;
//! 3. fields the manager applied before and leaves out now are removed from the object, unless
//!    another manager owns them too;
//! 4. the intent is merged into the object: maps field by field, keyed lists element by element,
//!    sets as unions, everything else replaced.
//!
//! An apply to an object that does not exist creates it. Creates, updates and patches of the main
//! resource are recorded too ([`record_update`]): their manager owns what they changed, so an
//! applier conflicts with them as with another applier.

use serde_json::{Map, Value, json};
use wasmkube_api::Kind;

use super::fields_v1::{self, FieldSet, ListType, Step};
use super::{Objects, Subresource, Target, WriteOptions, Written};
use crate::schema::{Schemas, schemas};
use crate::status::ApiError;

impl Objects {
    /// A server-side apply of `intent` by `manager` to the object `target` names, or to its
    /// `status` (`sub`); creates the object when absent (not through `status`). Returns what was
    /// written and whether it was created.
    pub async fn server_side_apply(
        &self,
        target: &Target,
        (intent, sub): (Value, Subresource),
        manager: &str,
        force: bool,
        opts: &WriteOptions,
    ) -> Result<(Written, bool), ApiError> {
        if manager.is_empty() {
            return Err(ApiError::BadRequest(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
                    .into(),
            ));
        }
        if !intent.is_object() || intent.get("metadata").is_some_and(|m| !m.is_object()) {
            return Err(ApiError::BadRequest("an apply patch must be an object, and its metadata too".into()));
        }
        let kind = target.kind;
        // The apply records its own ownership; it is not an Update as well.
        let opts = &WriteOptions { field_manager: None, ..opts.clone() };
        // A resourceVersion in the intent is a precondition, as in an update.
        let client_rv = match intent.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
            Some(rv) if !rv.is_empty() => Some(super::parse_revision(rv)?),
            _ => None,
        };
        if sub == Subresource::Status {
            // Only the status is the subresource's: the rest of the intent is not applied, and
            // the manager's entry lists status fields only, as Kubernetes resets the others.
            // No status (or an empty one) applies nothing: the manager's entry goes.
            let status = match intent.get("status") {
                Some(status) if status.as_object().is_some_and(|o| !o.is_empty()) => json!({"status": status}),
                _ => json!({}),
            };
            let written = self
                .guaranteed_update(target, Subresource::Status, opts, client_rv, |current| {
                    apply_to(schemas(), kind, Some(current), &status, (manager, "status"), force)
                })
                .await?;
            return Ok((written, false));
        }
        let update = || {
            self.guaranteed_update(target, Subresource::Main, opts, client_rv, |current| {
                apply(schemas(), kind, Some(current), &intent, manager, force)
            })
        };
        match update().await {
            Err(ApiError::NotFound { .. }) if client_rv.is_none() => {
                let mut object = apply(schemas(), kind, None, &intent, manager, force)?;
                let name = target.name.clone().unwrap_or_default();
                match object.pointer("/metadata/name").and_then(Value::as_str) {
                    Some(n) if n != name => {
                        return Err(ApiError::BadRequest(format!(
                            "the name of the object ({n}) does not match the name on the URL ({name})"
                        )));
                    }
                    _ => object["metadata"]["name"] = json!(name),
                }
                let collection = Target { name: None, ..target.clone() };
                match self.create(&collection, object, opts).await {
                    // Another apply created it first: apply to what it created.
                    Err(ApiError::AlreadyExists { .. }) => update().await.map(|written| (written, false)),
                    created => created.map(|written| (written, true)),
                }
            }
            other => other.map(|written| (written, false)),
        }
    }
}

/// Applies `intent` from `manager` to `live` (`None`: the object is created); returns the object
/// to store, `metadata.managedFields` included.
pub fn apply(
    schemas: &Schemas,
    kind: &Kind,
    live: Option<&Value>,
    intent: &Value,
    manager: &str,
    force: bool,
) -> Result<Value, ApiError> {
    apply_to(schemas, kind, live, intent, (manager, ""), force)
}

/// [`apply`] through a subresource (`""` for the resource itself, or `status`): the manager's
/// entry is that subresource's own.
pub fn apply_to(
    schemas: &Schemas,
    kind: &Kind,
    live: Option<&Value>,
    intent: &Value,
    (manager, subresource): (&str, &str),
    force: bool,
) -> Result<Value, ApiError> {
    let schema = schemas.root(kind);
    let status_only = subresource == "status";
    let applied = if status_only {
        fields_v1::of_status(schemas, intent, schema)
    } else {
        fields_v1::of(schemas, intent, schema)
    };
    let mut entries: Vec<Value> =
        live.and_then(|l| l.pointer("/metadata/managedFields")).and_then(Value::as_array).cloned().unwrap_or_default();
    let is_mine = |e: &Value| is_entry_of(e, (manager, "Apply", subresource));
    let previous = entries.iter().find(|e| is_mine(e)).map(|e| FieldSet::from_json(&e["fieldsV1"])).unwrap_or_default();

    let mut object = live.cloned().unwrap_or_else(|| json!({}));
    let mut conflicts = Vec::new();
    let leaves = applied.leaves();
    for entry in entries.iter_mut().filter(|e| !is_mine(e)) {
        let mut owned = FieldSet::from_json(&entry["fieldsV1"]);
        let mut taken = false;
        for path in &leaves {
            if !owned.contains(path) {
                continue;
            }
            // An owned element with fields of its own (a container) conflicts through those
            // fields; only values are compared.
            let has_fields = applied.node(path).is_some_and(|n| !n.children.is_empty());
            let differs = !has_fields && value_at(&object, path) != value_at(intent, path);
            if !differs {
                continue; // the same value: both managers own it
            }
            if force {
                owned.remove(path);
                taken = true;
            } else {
                conflicts.push((printed_manager(entry), fields_v1::display(path)));
            }
        }
        if taken {
            entry["fieldsV1"] = owned.to_json();
        }
    }
    if !conflicts.is_empty() {
        return Err(ApiError::ApplyConflict(conflicts));
    }
    entries.retain(|e| is_mine(e) || !FieldSet::from_json(&e["fieldsV1"]).is_empty());

    // Fields this manager no longer applies go, unless someone else still owns them.
    for path in previous.leaves() {
        // A field that now holds applied fields (a map applied member by member) stays.
        let still_owned = applied.node(&path).is_some()
            || entries.iter().filter(|e| !is_mine(e)).any(|e| FieldSet::from_json(&e["fieldsV1"]).contains(&path));
        if !still_owned {
            remove_at(&mut object, &path);
        }
    }

    if status_only {
        if let (Some(status), Some(map)) = (intent.get("status"), object.as_object_mut()) {
            let slot = map.entry("status").or_insert(Value::Null);
            merge_value(schemas, slot, status, schemas.property(schema, "status"));
        }
    } else {
        merge_object(schemas, &mut object, intent, Some(schema), true);
    }
    let unchanged = entries.iter().find(|e| is_mine(e)).filter(|e| FieldSet::from_json(&e["fieldsV1"]) == applied);
    // The same fields applied again keep their entry, time included: an unchanged re-apply
    // must not be a write.
    let mine = unchanged.cloned().unwrap_or_else(|| new_entry(kind, (manager, "Apply", subresource), &applied));
    match entries.iter_mut().find(|e| is_mine(e)) {
        Some(entry) => *entry = mine,
        None => entries.push(mine),
    }
    object["metadata"]["managedFields"] = Value::Array(entries);
    Ok(object)
}

/// A manager as conflicts name it: `"kubectl"` for an applier, `"kubectl-edit" using apps/v1` for
/// an updater (its writes were in that version), `"kubectl" with subresource "scale" using
/// apps/v1` for a subresource's.
fn printed_manager(entry: &Value) -> String {
    let text = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or_default();
    let mut printed = format!("{:?}", text("manager"));
    if !text("subresource").is_empty() {
        printed = format!("{printed} with subresource {:?}", text("subresource"));
    }
    if text("operation") == "Update" {
        printed = format!("{printed} using {}", text("apiVersion"));
    }
    printed
}

/// Records a write by another verb than apply (create, update, patch, on the resource or on
/// `subresource` such as `scale`) from `manager`: it owns the fields whose values it changed, and
/// every other manager loses those and any field the write removed, as Kubernetes records
/// `Update` operations. Nothing changes when the write changed no field (so a no-op write stays
/// a no-op).
pub fn record_update(
    schemas: &Schemas,
    kind: &Kind,
    (old, new): (Option<&Value>, &mut Value),
    manager: &str,
    subresource: &str,
) {
    let schema = schemas.root(kind);
    let empty = json!({});
    let old = old.unwrap_or(&empty);
    let before = fields_v1::of(schemas, old, schema);
    let after = fields_v1::of(schemas, new, schema);
    let changed: Vec<Vec<String>> = after
        .leaves()
        .into_iter()
        .filter(|path| after.node(path).is_some_and(|n| n.children.is_empty()) || !before.contains(path))
        .filter(|path| value_at(old, path) != value_at(new, path))
        .collect();
    let removed: Vec<Vec<String>> = before.leaves().into_iter().filter(|path| !after.contains(path)).collect();
    if changed.is_empty() && removed.is_empty() {
        return;
    }
    // A body without managedFields keeps the stored ones, as in Kubernetes.
    let mut entries = match new.pointer("/metadata/managedFields").and_then(Value::as_array) {
        Some(entries) if !entries.is_empty() => entries.clone(),
        _ => old.pointer("/metadata/managedFields").and_then(Value::as_array).cloned().unwrap_or_default(),
    };
    let is_mine = |e: &Value| is_entry_of(e, (manager, "Update", subresource));
    for entry in entries.iter_mut().filter(|e| !is_mine(e)) {
        let mut owned = FieldSet::from_json(&entry["fieldsV1"]);
        for path in changed.iter().chain(&removed) {
            owned.remove(path);
        }
        entry["fieldsV1"] = owned.to_json();
    }
    let mut mine = entries.iter().find(|e| is_mine(e)).map(|e| FieldSet::from_json(&e["fieldsV1"])).unwrap_or_default();
    for path in &removed {
        mine.remove(path);
    }
    for path in &changed {
        mine.insert(path);
    }
    entries.retain(|e| !is_mine(e) && !FieldSet::from_json(&e["fieldsV1"]).is_empty());
    if !mine.is_empty() {
        entries.push(new_entry(kind, (manager, "Update", subresource), &mine));
    }
    if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("managedFields".into(), Value::Array(entries));
    }
}

/// Whether a managedFields entry is `(manager, operation, subresource)`'s (`""`: the resource
/// itself).
fn is_entry_of(entry: &Value, (manager, operation, subresource): (&str, &str, &str)) -> bool {
    let text = |k: &str| entry.get(k).and_then(Value::as_str);
    text("manager") == Some(manager)
        && text("operation") == Some(operation)
        && text("subresource").unwrap_or("") == subresource
}

/// A managedFields entry, dated now, for `(manager, operation, subresource)` owning `fields`.
fn new_entry(kind: &Kind, (manager, operation, subresource): (&str, &str, &str), fields: &FieldSet) -> Value {
    let mut entry = json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": kind.api_version(),
        "time": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "fieldsType": "FieldsV1",
        "fieldsV1": fields.to_json(),
    });
    if !subresource.is_empty() {
        entry["subresource"] = json!(subresource);
    }
    entry
}

/// The value at a field-set path, if the object has it.
fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut current = object;
    for step in path {
        current = match Step::parse(step)? {
            Step::Field(name) => current.get(&name)?,
            Step::Key(key) => current.as_array()?.iter().find(|item| matches_key(item, &key))?,
            Step::Value(value) => current.as_array()?.iter().find(|item| **item == value)?,
        };
    }
    Some(current)
}

fn matches_key(item: &Value, key: &Map<String, Value>) -> bool {
    key.iter().all(|(k, v)| item.get(k) == Some(v))
}

/// Removes the member a field-set path names.
fn remove_at(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut current = object;
    for step in parents {
        let next = match Step::parse(step) {
            Some(Step::Field(name)) => current.get_mut(&name),
            Some(Step::Key(key)) => current.as_array_mut().and_then(|a| a.iter_mut().find(|i| matches_key(i, &key))),
            Some(Step::Value(value)) => current.as_array_mut().and_then(|a| a.iter_mut().find(|i| **i == value)),
            None => None,
        };
        let Some(next) = next else { return };
        current = next;
    }
    match Step::parse(last) {
        Some(Step::Field(name)) => {
            if let Some(map) = current.as_object_mut() {
                map.remove(&name);
            }
        }
        Some(Step::Key(key)) => {
            if let Some(list) = current.as_array_mut() {
                list.retain(|i| !matches_key(i, &key));
            }
        }
        Some(Step::Value(value)) => {
            if let Some(list) = current.as_array_mut() {
                list.retain(|i| *i != value);
            }
        }
        None => {}
    }
}

/// Merges `intent` into `live` field by field (`root`: the status is not applied through the main
/// resource, and server-owned metadata is left as it is).
fn merge_object(schemas: &Schemas, live: &mut Value, intent: &Value, schema: Option<&Value>, root: bool) {
    let Some(intent) = intent.as_object() else { return };
    if !live.is_object() {
        *live = json!({});
    }
    let node = schema.map(|s| schemas.resolve(s));
    let is_struct = node.is_some_and(|n| n.get("properties").is_some());
    let element = node.and_then(|n| n.get("additionalProperties")).filter(|v| v.is_object());
    for (key, value) in intent {
        if root && key == "status" {
            continue;
        }
        let map = live.as_object_mut().expect("made an object above");
        if value.is_null() {
            map.remove(key);
            continue;
        }
        let property = if is_struct { schema.and_then(|s| schemas.property(s, key)) } else { element };
        let slot = map.entry(key.clone()).or_insert(Value::Null);
        merge_value(schemas, slot, value, property);
    }
}

fn merge_value(schemas: &Schemas, live: &mut Value, intent: &Value, property: Option<&Value>) {
    let atomic = |p: &Value| {
        p.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic")
            || schemas.resolve(p).get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic")
    };
    match (intent, property) {
        (Value::Object(_), Some(p)) if live.is_object() && !atomic(p) => {
            merge_object(schemas, live, intent, Some(p), false)
        }
        (Value::Array(items), Some(p)) => match fields_v1::list_keys(p) {
            ListType::Map(keys) => {
                let element = schemas.resolve(p).get("items");
                let mut merged = live.as_array().cloned().unwrap_or_default();
                for item in items {
                    let key: Map<String, Value> =
                        keys.iter().filter_map(|k| item.get(k).map(|v| (k.clone(), v.clone()))).collect();
                    match merged.iter_mut().find(|m| !key.is_empty() && matches_key(m, &key)) {
                        Some(existing) => merge_value(schemas, existing, item, element),
                        None => merged.push(item.clone()),
                    }
                }
                *live = Value::Array(merged);
            }
            ListType::Set => {
                let mut merged = live.as_array().cloned().unwrap_or_default();
                for item in items {
                    if !merged.contains(item) {
                        merged.push(item.clone());
                    }
                }
                *live = Value::Array(merged);
            }
            ListType::Atomic => *live = intent.clone(),
        },
        _ => *live = intent.clone(),
    }
}

#[cfg(test)]
mod tests {
    use wasmkube_api::kinds;

    use super::*;
    use crate::schema::schemas;

    fn deployment() -> &'static Kind {
        kinds::by_resource("apps", "v1", "deployments").expect("deployments")
    }

    fn intent(replicas: i64, containers: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}}}})
    }

    #[test]
    fn an_apply_records_its_fields_keyed_by_list_map_keys() {
        let created =
            apply(schemas(), deployment(), None, &intent(2, json!([{"name": "web", "image": "web:1"}])), "me", false)
                .expect("apply");
        let entry = &created["metadata"]["managedFields"][0];
        assert_eq!((entry["manager"].as_str(), entry["operation"].as_str()), (Some("me"), Some("Apply")));
        let fields = &entry["fieldsV1"];
        assert_eq!(fields["f:spec"]["f:replicas"], json!({}));
        assert_eq!(fields["f:metadata"], json!({"f:labels": {"f:app": {}}}), "no server-owned metadata");
        let container = &fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
        assert_eq!(container, &json!({".": {}, "f:image": {}, "f:name": {}}));
    }

    #[test]
    fn updates_record_what_they_changed_and_take_it_from_others() {
        let created =
            apply(schemas(), deployment(), None, &intent(2, json!([{"name": "web", "image": "web:1"}])), "a", false)
                .expect("apply");
        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(schemas(), deployment(), (Some(&created), &mut scaled), "ops", "");
        let entries = scaled["metadata"]["managedFields"].as_array().expect("entries");
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[1]["manager"].as_str(), entries[1]["operation"].as_str()), (Some("ops"), Some("Update")));
        assert_eq!(entries[1]["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
        assert!(entries[0]["fieldsV1"]["f:spec"].get("f:replicas").is_none(), "the applier lost replicas");
        // The applier setting replicas again now conflicts with the updater.
        let err = apply(
            schemas(),
            deployment(),
            Some(&scaled),
            &intent(2, json!([{"name": "web", "image": "web:1"}])),
            "a",
            false,
        )
        .expect_err("conflict");
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"ops\" using apps/v1: .spec.replicas"
        );
        // A write that changes nothing records nothing.
        let mut same = scaled.clone();
        record_update(schemas(), deployment(), (Some(&scaled), &mut same), "other", "");
        assert_eq!(same, scaled);
    }

    #[test]
    fn a_subresource_write_has_its_own_entry_and_conflicts_name_it() {
        let created = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}}});
        let applied = apply(schemas(), deployment(), Some(&created), &created, "kubectl", false).expect("applies");
        let mut scaled = applied.clone();
        scaled["spec"]["replicas"] = json!(2);
        record_update(schemas(), deployment(), (Some(&applied), &mut scaled), "kubectl", "scale");
        let entries = scaled["metadata"]["managedFields"].as_array().expect("entries").clone();
        let scale = entries.iter().find(|e| e["subresource"] == "scale").expect("a scale entry");
        assert_eq!(scale["manager"], "kubectl");
        assert_eq!(scale["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
        let main = entries.iter().find(|e| e.get("subresource").is_none()).expect("the applier's entry");
        assert!(main["fieldsV1"]["f:spec"].get("f:replicas").is_none(), "the applier lost the replicas");
        let err = apply(schemas(), deployment(), Some(&scaled), &created, "kubectl", false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl\" with subresource \"scale\" using apps/v1: .spec.replicas"
        );
    }

    #[test]
    fn conflicts_fail_unless_forced_and_dropped_fields_are_removed() {
        let a = apply(
            schemas(),
            deployment(),
            None,
            &intent(2, json!([{"name": "web", "image": "web:1"}, {"name": "side", "image": "s:1"}])),
            "a",
            false,
        )
        .expect("a applies");
        // Another manager setting replicas to the same value shares it; to another value, conflicts.
        let same = apply(
            schemas(),
            deployment(),
            Some(&a),
            &intent(2, json!([{"name": "web", "image": "web:1"}])),
            "b",
            false,
        );
        assert!(same.is_ok(), "{same:?}");
        let err = apply(
            schemas(),
            deployment(),
            Some(&a),
            &intent(3, json!([{"name": "web", "image": "web:2"}])),
            "b",
            false,
        )
        .expect_err("conflict");
        assert_eq!(
            err.to_string(),
            "Apply failed with 2 conflicts: conflicts with \"a\":\n- .spec.replicas\n\
             - .spec.template.spec.containers[name=\"web\"].image"
        );
        let forced =
            apply(schemas(), deployment(), Some(&a), &intent(3, json!([{"name": "web", "image": "web:2"}])), "b", true)
                .expect("forced");
        assert_eq!(forced["spec"]["replicas"], 3);
        let a_fields = &forced["metadata"]["managedFields"][0]["fieldsV1"];
        assert!(a_fields["f:spec"].get("f:replicas").is_none(), "b took replicas over: {a_fields}");

        // a drops its side container: it goes, as nobody else owns it.
        let dropped = apply(
            schemas(),
            deployment(),
            Some(&a),
            &intent(2, json!([{"name": "web", "image": "web:1"}])),
            "a",
            false,
        )
        .expect("re-apply");
        let names: Vec<_> = dropped["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].clone())
            .collect();
        assert_eq!(names, ["web"]);
    }
}
