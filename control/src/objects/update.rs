//! PUT and PATCH on an object or its `status`/`scale` subresource.
//!
//! Every path goes through [`Objects::guaranteed_update`]: read the current object, compute the
//! new one, keep what the server owns, validate, and compare-and-put against the revision read. A
//! client-supplied `resourceVersion` turns a lost race into 409 Conflict; without one the update
//! is retried on the fresh object, as kube-apiserver's GuaranteedUpdate does.

use serde_json::{Value, json};

use super::{
    Objects, Target, WriteOptions, Written, committed, defaults, encode, fields, is_service, parse_revision, services,
    status_patch,
};
use crate::status::ApiError;
use crate::store::{Precondition, Revision, Write, WriteOutcome};

/// Which part of the object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    Main,
    Status,
    Scale,
    /// A namespace's `finalize`: only `spec.finalizers` changes.
    Finalize,
}

/// The supported PATCH bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/strategic-merge-patch+json` ([`super::strategic`]).
    Strategic,
}

pub(super) const CONFLICT_MESSAGE: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// How many times an unconditional update is retried after losing a race.
pub(super) const MAX_RETRIES: usize = 16;

impl Objects {
    /// PUT: replaces the object (or its status/scale) with `body`.
    pub async fn update(
        &self,
        target: &Target,
        body: Value,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let client_rv = match body.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
            Some(rv) if !rv.is_empty() => Some(parse_revision(rv)?),
            _ => None,
        };
        self.check_body_name(target, &body)?;
        self.guaranteed_update(target, sub, opts, client_rv, |_current| Ok(body.clone())).await
    }

    /// PATCH: applies `patch` to the current object (or its status/scale).
    pub async fn patch(
        &self,
        target: &Target,
        patch: Value,
        patch_kind: PatchKind,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if status_patch::applies(target, &patch, patch_kind, sub)
            && let Some(written) = self.patch_status_only(target, &patch, opts).await?
        {
            return Ok(written);
        }
        let kind = target.kind;
        let apply_patch = |current: &Value| -> Result<Value, ApiError> {
            let mut doc = current.clone();
            match patch_kind {
                PatchKind::Merge => json_patch::merge(&mut doc, &patch),
                PatchKind::Strategic => {
                    let schemas = crate::schema::schemas();
                    // A Scale has no list fields: plain merge semantics are exact for it.
                    let schema = (sub != Subresource::Scale).then(|| schemas.root(kind));
                    doc = super::strategic::apply(schemas, &doc, &patch, schema).map_err(ApiError::BadRequest)?;
                }
                PatchKind::Json => {
                    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                        .map_err(|e| ApiError::BadRequest(format!("invalid JSON patch: {e}")))?;
                    json_patch::patch(&mut doc, &ops).map_err(|e| ApiError::Invalid {
                        kind,
                        name: target.name.clone().unwrap_or_default(),
                        causes: vec![wasmkube_api::validation::Cause {
                            field: String::new(),
                            reason: wasmkube_api::validation::CauseReason::Invalid,
                            message: format!("the JSON patch could not be applied: {e}"),
                        }],
                    })?;
                }
            }
            Ok(doc)
        };
        // A patch that sets resourceVersion is a precondition on it.
        let explicit_rv = patch_sets_resource_version(&patch, patch_kind);
        let client_rv = match explicit_rv {
            Some(rv) => Some(parse_revision(&rv)?),
            None => None,
        };
        self.guaranteed_update(target, sub, opts, client_rv, |current| {
            let patched = apply_patch(current)?;
            self.check_body_name(target, &patched)?;
            Ok(patched)
        })
        .await
    }

    /// GET on the `scale` subresource.
    pub async fn get_scale(&self, target: &Target) -> Result<Value, ApiError> {
        let object = self.get(target).await?;
        Ok(to_scale(&object))
    }

    fn check_body_name(&self, target: &Target, body: &Value) -> Result<(), ApiError> {
        let url_name = target.name.as_deref().unwrap_or_default();
        match body.pointer("/metadata/name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() && name != url_name => Err(ApiError::BadRequest(format!(
                "the name of the object ({name}) does not match the name on the URL ({url_name})"
            ))),
            _ => Ok(()),
        }
    }

    /// The read-compute-compare-and-put loop behind every update. `desired` maps the current
    /// object (or, for `scale`, its Scale) to the requested one.
    pub(super) async fn guaranteed_update(
        &self,
        target: &Target,
        sub: Subresource,
        opts: &WriteOptions,
        client_rv: Option<Revision>,
        desired: impl Fn(&Value) -> Result<Value, ApiError>,
    ) -> Result<Written, ApiError> {
        let kind = target.kind;
        let name = target.name.clone().unwrap_or_default();
        let key = target.key()?;
        let conflict = || ApiError::Conflict { kind, name: name.clone(), message: CONFLICT_MESSAGE.into() };
        // A Service's spec holds its addresses: they are checked and written under the lock.
        let mut services = if is_service(kind) && sub == Subresource::Main {
            Some(self.services.lock(&*self.store).await?)
        } else {
            None
        };
        for _ in 0..MAX_RETRIES {
            let Some((current, rev)) = self.get_kv(&key).await? else {
                return Err(ApiError::NotFound { kind, name: name.clone() });
            };
            if client_rv.is_some_and(|rv| rv != rev) {
                return Err(conflict());
            }
            let (new, warnings) = match sub {
                Subresource::Scale => {
                    let scale = desired(&to_scale(&current))?;
                    (from_scale(&current, &scale)?, Vec::new())
                }
                _ => {
                    let requested = desired(&current)?;
                    let validation = opts.field_validation;
                    if sub == Subresource::Status && same_but_status(&requested, &current) {
                        // The rest of the body is the stored object unchanged (a patch of the
                        // status, as every node agent sends): canonical already, and all the
                        // server owns is as stored. Only the status goes through the kind's type.
                        with_canonical_status(kind, requested, validation)?
                    } else {
                        let (mut canonical, warnings) = fields::canonicalize(kind, requested, validation)?;
                        if services.is_some() {
                            // Before the spec is compared for `generation`: a Service sent
                            // again without its addresses keeps them and is unchanged.
                            services::keep_allocated(&current, &mut canonical);
                        }
                        (merge_server_owned(target, &current, canonical, sub), warnings)
                    }
                }
            };
            let mut new = new;
            let causes = wasmkube_api::validation::validate(kind, &new);
            if !causes.is_empty() {
                return Err(ApiError::Invalid { kind, name: name.clone(), causes });
            }
            let finished = new.pointer("/metadata/deletionTimestamp").is_some()
                && new.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64) == Some(0)
                && !has_finalizers(&new);
            // A Service being removed needs no addresses checked: it gives them back.
            let held = match &mut services {
                Some(locked) if !finished => Some(locked.assign(&key, &name, Some(&current), &mut new)?),
                _ => None,
            };
            // After the Service allocator has filled in what it keeps, so that only the client's
            // own changes count as changed. Status writes (the agents' and controllers' constant
            // traffic) are not recorded.
            let recorded = match sub {
                Subresource::Main => Some(""),
                Subresource::Scale => Some("scale"),
                _ => None,
            };
            if let (Some(manager), Some(subresource)) = (opts.field_manager.as_deref(), recorded) {
                let schemas = crate::schema::schemas();
                super::apply::record_update(schemas, kind, (Some(&current), &mut new), manager, subresource);
            }
            if opts.dry_run {
                // Nothing is written, so the object keeps the version it has (`kubectl diff`
                // would otherwise show the resourceVersion as removed).
                new["metadata"]["resourceVersion"] = Value::String(rev.to_string());
                return Ok(Written { object: new, warnings });
            }
            if same_object(&new, &current) {
                return Ok(Written { object: current, warnings });
            }
            let bytes = encode(&new);
            let write = if finished {
                Write::Delete { key: key.clone(), precondition: Some(Precondition::ModRevision(rev)) }
            } else {
                Write::Put { key: key.clone(), value: bytes, precondition: Some(Precondition::ModRevision(rev)) }
            };
            match self.store.write(write).await? {
                WriteOutcome::Committed(new_rev) => {
                    match (&mut services, held) {
                        (Some(locked), _) if finished => locked.release(&key),
                        (Some(locked), Some(held)) => locked.commit(&key, held),
                        _ => {}
                    }
                    let object = if finished { new } else { committed(new, new_rev) };
                    return Ok(Written { object, warnings });
                }
                WriteOutcome::PreconditionFailed { .. } | WriteOutcome::NotFound if client_rv.is_none() => continue,
                _ => return Err(conflict()),
            }
        }
        Err(conflict())
    }
}

/// Whether an object still waits for finalizers (`metadata.finalizers`, and a namespace's
/// `spec.finalizers`).
pub(crate) fn has_finalizers(object: &Value) -> bool {
    let non_empty = |p: &str| object.pointer(p).and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    non_empty("/metadata/finalizers") || non_empty("/spec/finalizers")
}

/// `object` with its `status` in canonical form (its other fields are canonical already), and
/// the warnings about unknown fields in the status.
fn with_canonical_status(
    kind: &wasmkube_api::Kind,
    mut object: Value,
    validation: fields::FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let fields = object.as_object_mut().ok_or_else(|| ApiError::BadRequest("the body must be an object".into()))?;
    let mut part = serde_json::Map::new();
    for key in ["apiVersion", "kind"] {
        if let Some(value) = fields.get(key) {
            part.insert(key.to_string(), value.clone());
        }
    }
    if let Some(status) = fields.remove("status") {
        part.insert("status".into(), status);
    }
    let (mut canonical, warnings) = fields::canonicalize(kind, Value::Object(part), validation)?;
    if let Some(status) = canonical.as_object_mut().and_then(|c| c.remove("status")) {
        fields.insert("status".into(), status);
    }
    Ok((object, warnings))
}

/// Whether two objects are equal but for `metadata.resourceVersion` (compared in place: this
/// runs on every update).
fn same_object(a: &Value, b: &Value) -> bool {
    same_but(a, b, None)
}

/// Whether two objects are equal but for `status` and `metadata.resourceVersion`.
fn same_but_status(a: &Value, b: &Value) -> bool {
    same_but(a, b, Some("status"))
}

/// Whether two objects are equal but for `metadata.resourceVersion` and the top-level field
/// `skip`, compared in place.
fn same_but(a: &Value, b: &Value, skip: Option<&str>) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return a == b };
    let kept = |m: &serde_json::Map<String, Value>| m.keys().filter(|k| Some(k.as_str()) != skip).count();
    let without_version =
        |m: &serde_json::Map<String, Value>| m.iter().filter(|(k, _)| *k != "resourceVersion").count();
    let same_metadata = |x: &serde_json::Map<String, Value>, y: &serde_json::Map<String, Value>| {
        without_version(x) == without_version(y)
            && x.iter().filter(|(k, _)| *k != "resourceVersion").all(|(k, v)| y.get(k) == Some(v))
    };
    kept(a) == kept(b)
        && a.iter().filter(|(key, _)| Some(key.as_str()) != skip).all(|(key, value)| {
            match (key.as_str(), value, b.get(key)) {
                ("metadata", Value::Object(x), Some(Value::Object(y))) => same_metadata(x, y),
                (_, _, other) => other == Some(value),
            }
        })
}

/// The new object: `canonical` with the server-owned parts of `current` kept, the status taken
/// from the side the subresource owns, and `generation` bumped when the spec changed.
fn merge_server_owned(target: &Target, current: &Value, canonical: Value, sub: Subresource) -> Value {
    let kind = target.kind;
    let mut new = match sub {
        Subresource::Status => {
            let mut canonical = canonical;
            let mut out = current.clone();
            match canonical.as_object_mut().and_then(|o| o.remove("status")) {
                Some(status) => out["status"] = status,
                None => {
                    out.as_object_mut().map(|o| o.remove("status"));
                }
            }
            // The body's managedFields stand (a server-side apply of the status records its
            // entry there); Kubernetes resets the rest of the metadata for status writes.
            match canonical.pointer("/metadata/managedFields") {
                Some(Value::Array(entries)) if !entries.is_empty() => {
                    out["metadata"]["managedFields"] = Value::Array(entries.clone());
                }
                _ => {}
            }
            out
        }
        Subresource::Finalize => {
            let mut out = current.clone();
            out["spec"]["finalizers"] = canonical.pointer("/spec/finalizers").cloned().unwrap_or_else(|| json!([]));
            out
        }
        Subresource::Main | Subresource::Scale => {
            let mut out = canonical;
            if kind.has_status {
                match current.get("status") {
                    Some(status) => out["status"] = status.clone(),
                    None => {
                        out.as_object_mut().map(|o| o.remove("status"));
                    }
                }
            }
            if kind.kind == "Namespace" && kind.group.is_empty() {
                // spec.finalizers belong to the namespace lifecycle, not to clients.
                out["spec"] = current.get("spec").cloned().unwrap_or_else(|| json!({}));
            }
            defaults::apply(kind, &mut out);
            out
        }
    };
    let empty = serde_json::Map::new();
    let current_meta = current.get("metadata").and_then(Value::as_object).unwrap_or(&empty);
    let spec_changed = !same_but_meta_and_status(current, &new);
    if let Some(meta) = super::metadata_mut(&mut new) {
        for owned in
            ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace", "name"]
        {
            match current_meta.get(owned) {
                Some(v) => meta.insert(owned.to_string(), v.clone()),
                None => meta.remove(owned),
            };
        }
        meta.remove("resourceVersion");
        // A body without managedFields (or with none) keeps the stored ones, as in Kubernetes.
        let sent = meta.get("managedFields").and_then(Value::as_array).is_some_and(|m| !m.is_empty());
        if let (false, Some(stored)) = (sent, current_meta.get("managedFields")) {
            meta.insert("managedFields".into(), stored.clone());
        }
        let generation = current_meta.get("generation").and_then(Value::as_i64).unwrap_or(1);
        meta.insert("generation".into(), json!(if spec_changed { generation + 1 } else { generation }));
    }
    new
}

/// Whether two objects are equal apart from `metadata` and `status` (compared in place: this
/// runs on every update).
fn same_but_meta_and_status(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return a == b };
    let rest = |m: &serde_json::Map<String, Value>| m.keys().filter(|k| *k != "metadata" && *k != "status").count();
    rest(a) == rest(b) && a.iter().filter(|(k, _)| *k != "metadata" && *k != "status").all(|(k, v)| b.get(k) == Some(v))
}

fn patch_sets_resource_version(patch: &Value, kind: PatchKind) -> Option<String> {
    match kind {
        PatchKind::Merge | PatchKind::Strategic => {
            patch.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(String::from)
        }
        PatchKind::Json => patch.as_array()?.iter().find_map(|op| {
            let path = op.get("path")?.as_str()?;
            let is_set = matches!(op.get("op")?.as_str()?, "add" | "replace");
            (is_set && path == "/metadata/resourceVersion").then(|| op.get("value")?.as_str().map(String::from))?
        }),
    }
}

/// The autoscaling/v1 Scale view of a scalable object.
fn to_scale(object: &Value) -> Value {
    let meta = object.get("metadata").cloned().unwrap_or_default();
    let pick = |k: &str| meta.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": pick("name"),
            "namespace": pick("namespace"),
            "uid": pick("uid"),
            "resourceVersion": pick("resourceVersion"),
            "creationTimestamp": pick("creationTimestamp"),
        },
        "spec": {"replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector_string(object.pointer("/spec/selector")),
        },
    })
}

/// Applies a Scale's `spec.replicas` to the object it views.
fn from_scale(current: &Value, scale: &Value) -> Result<Value, ApiError> {
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .ok_or_else(|| ApiError::BadRequest("Scale.spec.replicas must be an integer".into()))?;
    let mut new = current.clone();
    new["spec"]["replicas"] = json!(replicas);
    if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        let generation = meta.get("generation").and_then(Value::as_i64).unwrap_or(1);
        if current.pointer("/spec/replicas").and_then(Value::as_i64) != Some(replicas) {
            meta.insert("generation".into(), json!(generation + 1));
        }
    }
    Ok(new)
}

/// A structured label selector in its query-string form (`app=web,tier in (a,b)`).
fn selector_string(selector: Option<&Value>) -> String {
    let Some(selector) = selector else { return String::new() };
    let mut parts = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        parts.extend(labels.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())));
    }
    for expr in selector.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> =
            expr.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        match expr.get("operator").and_then(Value::as_str).unwrap_or_default() {
            "In" => parts.push(format!("{key} in ({})", values.join(","))),
            "NotIn" => parts.push(format!("{key} notin ({})", values.join(","))),
            "Exists" => parts.push(key.to_string()),
            "DoesNotExist" => parts.push(format!("!{key}")),
            _ => {}
        }
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::fields::FieldValidation;
    use crate::objects::testing::objects_with_pod;

    fn strict() -> WriteOptions {
        WriteOptions { field_validation: FieldValidation::Strict, ..WriteOptions::default() }
    }

    #[test]
    fn a_status_is_canonicalized_alone_and_the_rest_kept_as_it_is() {
        let pods = wasmkube_api::kinds::by_resource("", "v1", "pods").expect("pods");
        let body = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "resourceVersion": "4"},
            "spec": {"containers": [{"name": "a", "image": "x"}]},
            "status": {"phase": "Running", "hostIP": "10.0.0.1", "made_up": 2}});
        let (object, warnings) = with_canonical_status(pods, body.clone(), FieldValidation::Warn).expect("decodes");
        assert_eq!(object["status"], json!({"phase": "Running", "hostIP": "10.0.0.1"}));
        assert_eq!((&object["metadata"], &object["spec"]), (&body["metadata"], &body["spec"]));
        assert_eq!(warnings, ["unknown field \"status.made_up\""]);
        let refused = with_canonical_status(pods, body, FieldValidation::Strict);
        assert!(matches!(refused, Err(ApiError::BadRequest(m)) if m.contains("status.made_up")));
    }

    #[test]
    fn every_kind_with_a_status_decodes_from_its_status_alone() {
        for kind in wasmkube_api::kinds::ALL.iter().filter(|k| k.has_status) {
            let decoded = with_canonical_status(kind, json!({"status": {}}), FieldValidation::Strict);
            assert!(decoded.is_ok(), "{}: {:?}", kind.kind, decoded.err());
        }
    }

    #[tokio::test]
    async fn status_writes_check_unknown_fields_wherever_they_are_and_change_only_the_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (objects, pod) = objects_with_pod(dir.path()).await;
        let strict = strict();
        let status = |body| objects.patch(&pod, body, PatchKind::Merge, Subresource::Status, &strict);

        // A patch of the status alone: the status is decoded, its unknown fields named in full.
        let refused = status(json!({"status": {"phase": "Running", "bogus": 1}})).await;
        assert!(matches!(&refused, Err(ApiError::BadRequest(m)) if m.contains("unknown field \"status.bogus\"")));
        let written = status(json!({"status": {"phase": "Running", "podIP": "10.1.0.4"}})).await.expect("patch");
        assert_eq!(written.object["status"]["phase"], "Running");
        assert_eq!(written.object["status"]["podIP"], "10.1.0.4");

        // A body that also changes the rest: still checked whole, and only its status is kept.
        let mut whole = objects.get(&pod).await.expect("get");
        whole["spec"]["containers"][0]["extra"] = json!(true);
        let refused = objects.update(&pod, whole.clone(), Subresource::Status, &strict).await;
        assert!(
            matches!(&refused, Err(ApiError::BadRequest(m)) if m.contains("unknown field \"spec.containers[0].extra\"")),
            "{refused:?}"
        );
        whole["spec"]["containers"][0].as_object_mut().map(|c| c.remove("extra"));
        whole["spec"]["containers"][0]["image"] = json!("hello:2");
        whole["status"]["phase"] = json!("Succeeded");
        let written = objects.update(&pod, whole, Subresource::Status, &strict).await.expect("update");
        assert_eq!(written.object["status"]["phase"], "Succeeded");
        assert_eq!(written.object["spec"]["containers"][0]["image"], "hello:1", "a status write keeps the spec");
    }

    #[test]
    fn selector_string_renders_labels_and_expressions() {
        let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "gone", "operator": "DoesNotExist"}]});
        assert_eq!(selector_string(Some(&sel)), "app=web,tier in (a,b),!gone");
    }

    #[test]
    fn a_patch_that_sets_resource_version_is_a_precondition() {
        let merge = json!({"metadata": {"resourceVersion": "7"}});
        assert_eq!(patch_sets_resource_version(&merge, PatchKind::Merge).as_deref(), Some("7"));
        let ops = json!([{"op": "replace", "path": "/metadata/resourceVersion", "value": "9"}]);
        assert_eq!(patch_sets_resource_version(&ops, PatchKind::Json).as_deref(), Some("9"));
        assert_eq!(patch_sets_resource_version(&json!({"data": {}}), PatchKind::Merge), None);
    }
}
