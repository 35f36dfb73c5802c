//! A merge patch of nothing but an object's `status`, as every node agent sends for its pods
//! and its Node: the one write a busy cluster makes most.
//!
//! The general patch ([`Objects::guaranteed_update`]) parses the whole stored object, copies it,
//! patches the copy, compares it with the original, validates and serializes all of it again.
//! A status patch changes none of the object but its `status`, so here only the stored object's
//! top-level fields are split (as raw text), its status alone is parsed, patched and put in
//! canonical form, and the new object is the stored text with the status text replaced. The
//! result is byte for byte what the general path stores (a test checks this).
//!
//! The rest needs no validation again: it is the stored object's, which was validated when it
//! was written, and no validation reads a status (Kubernetes' status strategies likewise check
//! only what a status write can change).

use std::collections::BTreeMap;

use serde_json::Value;
use serde_json::value::RawValue;

use super::update::{CONFLICT_MESSAGE, MAX_RETRIES, PatchKind, Subresource};
use super::{Objects, Target, WriteOptions, Written, decode_at, fields, set_resource_version};
use crate::status::ApiError;
use crate::store::{Precondition, Revision, Write, WriteOutcome};

/// The fields a status-only merge patch may carry besides `status` (checked against the kind
/// on the way, as in any write).
const TYPE_FIELDS: [&str; 2] = ["apiVersion", "kind"];

/// Whether the patch is one this module applies: a merge patch on `status` whose body sets
/// nothing but `status` (and, at most, the type fields). A patch that names metadata (a
/// resourceVersion precondition, say) takes the general path.
pub(super) fn applies(target: &Target, patch: &Value, kind: PatchKind, sub: Subresource) -> bool {
    let Some(fields) = patch.as_object() else { return false };
    sub == Subresource::Status
        && kind == PatchKind::Merge
        && target.kind.has_status
        && fields.contains_key("status")
        && fields.keys().all(|k| k == "status" || TYPE_FIELDS.contains(&k.as_str()))
}

/// What became of one attempt.
enum Attempt {
    Done(Written),
    /// The object is one the general path must handle (it is being deleted).
    General,
    /// Someone else wrote first: read again.
    Raced,
}

impl Objects {
    /// Applies a patch for which [`applies`] holds; `None` when the object needs the general path.
    pub(super) async fn patch_status_only(
        &self,
        target: &Target,
        patch: &Value,
        opts: &WriteOptions,
    ) -> Result<Option<Written>, ApiError> {
        let kind = target.kind;
        let name = target.name.clone().unwrap_or_default();
        let key = target.key()?;
        for _ in 0..MAX_RETRIES {
            let Some(stored) = self.store.get(&key).await? else {
                return Err(ApiError::NotFound { kind, name });
            };
            match self.attempt(target, &key, &stored.value, stored.mod_revision, patch, opts).await? {
                Attempt::Done(written) => return Ok(Some(written)),
                Attempt::General => return Ok(None),
                Attempt::Raced => continue,
            }
        }
        Err(ApiError::Conflict { kind, name, message: CONFLICT_MESSAGE.into() })
    }

    async fn attempt(
        &self,
        target: &Target,
        key: &str,
        stored: &[u8],
        revision: Revision,
        patch: &Value,
        opts: &WriteOptions,
    ) -> Result<Attempt, ApiError> {
        let internal = |e: serde_json::Error| ApiError::Internal(format!("stored object is not a JSON object: {e}"));
        let mut fields: BTreeMap<String, &RawValue> = serde_json::from_slice(stored).map_err(internal)?;
        // An object marked for deletion may be removed by this very write (see the general path).
        if fields.get("metadata").is_some_and(|m| m.get().contains("\"deletionTimestamp\"")) {
            return Ok(Attempt::General);
        }
        let old_status = fields.remove("status");
        let (new_status, warnings) = patched_status(target, &fields, old_status, patch, opts)?;
        let new_text = new_status.as_ref().map(Value::to_string);
        if new_text.as_deref() == old_status.map(RawValue::get) {
            return Ok(Attempt::Done(Written { object: decode_at(stored, revision)?, warnings }));
        }
        let bytes = assemble(&fields, new_text.as_deref());
        let mut object = decode_at(&bytes, revision)?;
        if opts.dry_run {
            return Ok(Attempt::Done(Written { object, warnings }));
        }
        let write =
            Write::Put { key: key.to_string(), value: bytes, precondition: Some(Precondition::ModRevision(revision)) };
        match self.store.write(write).await? {
            WriteOutcome::Committed(new_revision) => {
                set_resource_version(&mut object, new_revision);
                Ok(Attempt::Done(Written { object, warnings }))
            }
            WriteOutcome::PreconditionFailed { .. } | WriteOutcome::NotFound => Ok(Attempt::Raced),
        }
    }
}

/// The stored status with `patch` merged in, in the kind's canonical form (`None`: no status),
/// and the warnings about unknown fields.
fn patched_status(
    target: &Target,
    fields: &BTreeMap<String, &RawValue>,
    old_status: Option<&RawValue>,
    patch: &Value,
    opts: &WriteOptions,
) -> Result<(Option<Value>, Vec<String>), ApiError> {
    let parse = |raw: &RawValue| {
        serde_json::from_str::<Value>(raw.get())
            .map_err(|e| ApiError::Internal(format!("stored object is not JSON: {e}")))
    };
    let mut part = serde_json::Map::new();
    for field in TYPE_FIELDS {
        if let Some(raw) = fields.get(field) {
            part.insert(field.to_string(), parse(raw)?);
        }
    }
    if let Some(raw) = old_status {
        part.insert("status".into(), parse(raw)?);
    }
    let mut part = Value::Object(part);
    json_patch::merge(&mut part, patch);
    let (mut canonical, warnings) = fields::canonicalize(target.kind, part, opts.field_validation)?;
    let status = canonical.as_object_mut().and_then(|c| c.remove("status"));
    Ok((status, warnings))
}

/// The stored form of an object from its top-level fields' text and the new status text: what
/// serializing the whole object writes, since both order an object's keys the same way.
fn assemble(fields: &BTreeMap<String, &RawValue>, status: Option<&str>) -> Vec<u8> {
    let mut texts: BTreeMap<&str, &str> = fields.iter().map(|(k, v)| (k.as_str(), v.get())).collect();
    if let Some(status) = status {
        texts.insert("status", status);
    }
    let size = texts.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>() + 2;
    let mut out = Vec::with_capacity(size);
    out.push(b'{');
    for (i, (key, text)) in texts.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key).expect("a string serializes");
        out.push(b':');
        out.extend_from_slice(text.as_bytes());
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::objects::encode;
    use crate::objects::fields::FieldValidation;
    use crate::objects::testing::objects_with_pod;

    /// The general path's answer to the same patch, computed without writing.
    async fn general(
        objects: &Objects,
        pod: &Target,
        patch: &Value,
        validation: FieldValidation,
    ) -> Result<Written, ApiError> {
        let opts = WriteOptions { dry_run: true, field_validation: validation, field_manager: None };
        objects
            .guaranteed_update(pod, Subresource::Status, &opts, None, |current| {
                let mut doc = current.clone();
                json_patch::merge(&mut doc, patch);
                Ok(doc)
            })
            .await
    }

    fn without_version(mut object: Value) -> Value {
        object["metadata"].as_object_mut().map(|m| m.remove("resourceVersion"));
        object
    }

    fn optional(values: Vec<Value>) -> impl Strategy<Value = Option<Value>> {
        proptest::option::of(proptest::sample::select(values))
    }

    /// A status merge patch: each field absent, removed (null) or set, sometimes an unknown
    /// field, a wrong apiVersion or the whole status removed.
    fn status_patch() -> impl Strategy<Value = Value> {
        let condition =
            |t: &str, s: &str| json!({"type": t, "status": s, "lastTransitionTime": "2026-01-01T00:00:00Z"});
        let container = json!([{"name": "app", "image": "hello:1", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]);
        (
            optional(vec![Value::Null, json!("Pending"), json!("Running"), json!("Succeeded")]),
            optional(vec![Value::Null, json!("10.0.0.1"), json!("10.0.0.2")]),
            optional(vec![
                Value::Null,
                json!([]),
                json!([condition("Ready", "True")]),
                json!([condition("Ready", "False"), condition("PodScheduled", "True")]),
            ]),
            optional(vec![Value::Null, container]),
            optional(vec![json!(1), Value::Null]),
            optional(vec![json!("v1"), json!("v2")]),
            0..12u8,
        )
            .prop_map(|(phase, ip, conditions, containers, bogus, api_version, dice)| {
                let mut status = serde_json::Map::new();
                for (field, value) in [
                    ("phase", phase),
                    ("podIP", ip),
                    ("conditions", conditions),
                    ("containerStatuses", containers),
                    ("bogus", bogus),
                ] {
                    if let Some(value) = value {
                        status.insert(field.into(), value);
                    }
                }
                let mut patch = json!({"status": if dice == 0 { Value::Null } else { Value::Object(status) }});
                if let Some(v) = api_version {
                    patch["apiVersion"] = v;
                }
                patch
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Every patch leaves the store exactly as the general path would have, answers the same
        /// object and warnings, fails where it fails, and writes nothing when nothing changes.
        #[test]
        fn a_status_patch_stores_what_the_general_path_would(
            patches in proptest::collection::vec((status_patch(), any::<bool>()), 1..8)
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                let dir = tempfile::tempdir().expect("tempdir");
                let (objects, pod) = objects_with_pod(dir.path()).await;
                let key = pod.key().expect("key");
                for (patch, strict) in patches {
                    let validation = if strict { FieldValidation::Strict } else { FieldValidation::Warn };
                    prop_assert!(applies(&pod, &patch, PatchKind::Merge, Subresource::Status));
                    let before = objects.store.get(&key).await.expect("get").expect("the pod is there");
                    let expected = general(&objects, &pod, &patch, validation).await;
                    let opts = WriteOptions { dry_run: false, field_validation: validation, field_manager: None };
                    let written = objects.patch_status_only(&pod, &patch, &opts).await;
                    let after = objects.store.get(&key).await.expect("get").expect("the pod is there");
                    match (expected, written) {
                        (Ok(expected), Ok(Some(written))) => {
                            prop_assert_eq!(String::from_utf8(after.value.clone()), String::from_utf8(encode(&expected.object)));
                            prop_assert_eq!(&written.warnings, &expected.warnings);
                            prop_assert_eq!(without_version(written.object.clone()), without_version(expected.object));
                            prop_assert_eq!(&written.object["metadata"]["resourceVersion"], &json!(after.mod_revision.to_string()));
                            if after.value == before.value {
                                prop_assert_eq!(after.mod_revision, before.mod_revision, "an unchanged status is not written");
                            }
                        }
                        (Err(expected), Err(written)) => {
                            prop_assert_eq!(written.to_string(), expected.to_string());
                            prop_assert_eq!(after.mod_revision, before.mod_revision);
                        }
                        (expected, written) => prop_assert!(false, "general {expected:?}, status-only {written:?}"),
                    }
                }
                Ok(())
            })?;
        }
    }

    #[tokio::test]
    async fn other_patches_and_objects_being_deleted_take_the_general_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (objects, pod) = objects_with_pod(dir.path()).await;
        let status = json!({"status": {"phase": "Running"}});
        assert!(!applies(
            &pod,
            &json!({"metadata": {"resourceVersion": "1"}, "status": {}}),
            PatchKind::Merge,
            Subresource::Status
        ));
        assert!(!applies(&pod, &status, PatchKind::Merge, Subresource::Main));
        assert!(!applies(
            &pod,
            &json!([{"op": "add", "path": "/status", "value": {}}]),
            PatchKind::Json,
            Subresource::Status
        ));
        assert!(!applies(&pod, &json!({"spec": {}}), PatchKind::Merge, Subresource::Status));

        let finalizer = json!({"metadata": {"finalizers": ["example.com/hold"]}});
        objects
            .patch(&pod, finalizer, PatchKind::Merge, Subresource::Main, &WriteOptions::default())
            .await
            .expect("patch");
        objects.delete(&pod, &crate::objects::DeleteOptions::default()).await.expect("delete");
        let opts = WriteOptions::default();
        assert!(objects.patch_status_only(&pod, &status, &opts).await.expect("read").is_none());
        let written = objects.patch(&pod, status, PatchKind::Merge, Subresource::Status, &opts).await.expect("patch");
        assert_eq!(written.object["status"]["phase"], "Running");
        let missing = Target { name: Some("gone".into()), ..pod };
        let err = objects.patch_status_only(&missing, &json!({"status": {}}), &opts).await;
        assert!(matches!(err, Err(ApiError::NotFound { .. })), "{err:?}");
    }
}
