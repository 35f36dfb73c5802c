//! DELETE of one object or a whole collection, with Kubernetes' DeleteOptions.
//!
//! An object with finalizers is only marked (`deletionTimestamp`) and goes when the last finalizer
//! is removed; a namespace always goes through its lifecycle (Terminating, contents deleted, then
//! itself); a pod bound to an existing node is deleted gracefully, leaving the final delete to the
//! node agent once its containers stopped.
//!
//! `propagationPolicy` becomes finalizers the garbage collector acts on, as in kube-apiserver:
//! `Foreground` adds `foregroundDeletion` (dependents go first), `Orphan` adds `orphan` (their
//! owner references are removed first); `Background`, the default for all kinds but batch/v1
//! Jobs, adds none — the object goes now and the collector deletes its dependents afterwards.

use serde::Deserialize;
use serde_json::{Value, json};

use wasmkube_api::Kind;

use super::update::has_finalizers;
use super::{Objects, Target, Written, metadata_mut, now_rfc3339, parse_revision};
use crate::status::ApiError;
use crate::store::{Precondition, Write, WriteOutcome};

/// Namespaces Kubernetes refuses to delete.
const IMMORTAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// The `DeleteOptions` body (or query parameters) of a DELETE.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub preconditions: Option<Preconditions>,
    pub propagation_policy: Option<String>,
    #[serde(default)]
    pub dry_run: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl DeleteOptions {
    /// The finalizer that has the garbage collector orphan an object's dependents before it goes.
    pub const ORPHAN_FINALIZER: &'static str = "orphan";
    /// The finalizer that keeps an object until its dependents are deleted (foreground deletion).
    pub const FOREGROUND_FINALIZER: &'static str = "foregroundDeletion";

    /// A delete of exactly the object as it was read (its uid, and its resourceVersion when
    /// given), with a propagation policy: how the garbage collector deletes.
    pub fn exactly(uid: &str, resource_version: Option<&str>, propagation_policy: &str) -> Self {
        Self {
            propagation_policy: Some(propagation_policy.to_string()),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: resource_version.map(String::from),
            }),
            ..Self::default()
        }
    }

    fn dry_run(&self) -> bool {
        self.dry_run.iter().any(|d| d == "All")
    }

    /// The requested `propagationPolicy`, if any.
    fn propagation(&self) -> Result<Option<Propagation>, ApiError> {
        match self.propagation_policy.as_deref() {
            None => Ok(None),
            Some("Orphan") => Ok(Some(Propagation::Orphan)),
            Some("Background") => Ok(Some(Propagation::Background)),
            Some("Foreground") => Ok(Some(Propagation::Foreground)),
            Some(policy) => Err(ApiError::BadRequest(format!(
                "propagationPolicy: Unsupported value: {policy:?}: \
                 supported values: \"Foreground\", \"Background\", \"Orphan\""
            ))),
        }
    }
}

/// How a delete treats the object's dependents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Propagation {
    Orphan,
    Background,
    Foreground,
}

/// What a delete without a policy does: batch/v1 Jobs orphan their pods (Kubernetes keeps that for
/// compatibility, and warns); every other kind deletes its dependents in the background.
fn default_propagation(kind: &Kind) -> Propagation {
    if kind.group == "batch" && kind.kind == "Job" { Propagation::Orphan } else { Propagation::Background }
}

/// The warning kube-apiserver sends when a Job is deleted without a policy.
const JOB_DELETE_WARNING: &str = "child pods are preserved by default when jobs are deleted; \
set propagationPolicy=Background to remove them or set propagationPolicy=Orphan to suppress this warning";

/// Kubernetes' `deletionFinalizersForGarbageCollection`: the object's finalizers after this
/// delete, or `None` when they stay as they are. The request's policy wins, then a GC finalizer
/// already on the object (from an earlier delete), then the kind's default.
fn gc_finalizers(kind: &Kind, current: &[String], requested: Option<Propagation>) -> Option<Vec<String>> {
    let (orphan_f, foreground_f) = (DeleteOptions::ORPHAN_FINALIZER, DeleteOptions::FOREGROUND_FINALIZER);
    let has = |f: &str| current.iter().any(|c| c == f);
    let policy = requested.unwrap_or(if has(orphan_f) {
        Propagation::Orphan
    } else if has(foreground_f) {
        Propagation::Foreground
    } else {
        default_propagation(kind)
    });
    let mut wanted: Vec<String> = current.iter().filter(|f| *f != orphan_f && *f != foreground_f).cloned().collect();
    match policy {
        Propagation::Orphan => wanted.push(orphan_f.to_string()),
        Propagation::Foreground => wanted.push(foreground_f.to_string()),
        Propagation::Background => {}
    }
    let same = wanted.len() == current.len() && wanted.iter().all(|f| current.contains(f));
    (!same).then_some(wanted)
}

fn finalizers_of(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(String::from))
        .collect()
}

impl Objects {
    /// Deletes (or starts deleting) one object; answers with its last state.
    pub async fn delete(&self, target: &Target, opts: &DeleteOptions) -> Result<Written, ApiError> {
        let kind = target.kind;
        let name = target.name.clone().unwrap_or_default();
        let key = target.key()?;
        let requested = opts.propagation()?;
        let warnings = match requested {
            None if default_propagation(kind) == Propagation::Orphan => vec![JOB_DELETE_WARNING.to_string()],
            _ => Vec::new(),
        };
        if kind.group.is_empty() && kind.kind == "Namespace" && IMMORTAL_NAMESPACES.contains(&name.as_str()) {
            return Err(ApiError::Forbidden { kind, name, message: "this namespace may not be deleted".into() });
        }
        // A Service's removal gives its addresses back under the allocator's lock, held from
        // before the write so that a create of the same name cannot slip in between.
        let mut services = if super::is_service(kind) { Some(self.services.lock(&*self.store).await?) } else { None };
        loop {
            let Some((current, rev)) = self.get_kv(&key).await? else {
                return Err(ApiError::NotFound { kind, name });
            };
            check_preconditions(target, &current, rev, opts)?;
            let marked = self.mark_for_deletion(target, &current, opts, requested).await?;
            if opts.dry_run() {
                return Ok(Written { object: marked.unwrap_or(current), warnings });
            }
            let write = match &marked {
                Some(object) => Write::Put {
                    key: key.clone(),
                    value: super::encode(object),
                    precondition: Some(Precondition::ModRevision(rev)),
                },
                None => Write::Delete { key: key.clone(), precondition: Some(Precondition::ModRevision(rev)) },
            };
            match self.store.write(write).await? {
                WriteOutcome::Committed(new_rev) => {
                    if let (None, Some(locked)) = (&marked, &mut services) {
                        locked.release(&key);
                    }
                    let mut object = marked.unwrap_or(current);
                    super::set_resource_version(&mut object, new_rev);
                    return Ok(Written { object, warnings });
                }
                // Someone wrote in between: decide again on the fresh object.
                WriteOutcome::PreconditionFailed { .. } => continue,
                WriteOutcome::NotFound => return Err(ApiError::NotFound { kind, name }),
            }
        }
    }

    /// `Some(object)` marked for deletion when the object must wait (finalizers, including the
    /// garbage collector's from `propagationPolicy`; namespace lifecycle; graceful pod
    /// termination); `None` when it can be removed now.
    async fn mark_for_deletion(
        &self,
        target: &Target,
        current: &Value,
        opts: &DeleteOptions,
        requested: Option<Propagation>,
    ) -> Result<Option<Value>, ApiError> {
        let kind = target.kind;
        let already_marked = current.pointer("/metadata/deletionTimestamp").is_some();
        let is_namespace = kind.group.is_empty() && kind.kind == "Namespace";
        let mut object = current.clone();
        // A namespace's contents go through its own lifecycle, not the garbage collector.
        if !is_namespace && let Some(finalizers) = gc_finalizers(kind, &finalizers_of(current), requested) {
            let meta = metadata_mut(&mut object).expect("stored objects have metadata");
            if finalizers.is_empty() {
                meta.remove("finalizers");
            } else {
                meta.insert("finalizers".into(), json!(finalizers));
            }
        }
        if is_namespace {
            if !already_marked {
                let meta = metadata_mut(&mut object).expect("stored objects have metadata");
                meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
                meta.insert("deletionGracePeriodSeconds".into(), json!(0));
                object["status"] = json!({"phase": "Terminating"});
            }
            return Ok(Some(object));
        }
        let is_pod = kind.group.is_empty() && kind.kind == "Pod";
        if is_pod {
            let grace = opts
                .grace_period_seconds
                .or_else(|| current.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
                .unwrap_or(30)
                .max(0);
            if grace > 0 && self.pod_on_live_node(current).await? {
                let meta = metadata_mut(&mut object).expect("stored objects have metadata");
                let shorter = meta.get("deletionGracePeriodSeconds").and_then(Value::as_i64).is_none_or(|g| grace < g);
                if shorter {
                    let deadline = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
                    let deadline = jiff::Timestamp::from_second(deadline.as_second()).unwrap_or(deadline);
                    meta.insert("deletionTimestamp".into(), json!(deadline.to_string()));
                    meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
                }
                return Ok(Some(object));
            }
        }
        if has_finalizers(&object) {
            // Waits for its finalizers; once the last goes, the update that removes it deletes it.
            let meta = metadata_mut(&mut object).expect("stored objects have metadata");
            if !already_marked {
                meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            }
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            return Ok(Some(object));
        }
        Ok(None)
    }

    /// Whether the pod is bound to a Node that exists (so an agent will finish its deletion).
    async fn pod_on_live_node(&self, pod: &Value) -> Result<bool, ApiError> {
        let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
            return Ok(false);
        };
        let nodes = wasmkube_api::kinds::by_resource("", "v1", "nodes").expect("nodes are registered");
        Ok(self.store.get(&nodes.key(None, node)).await?.is_some())
    }

    /// DELETE on a collection: deletes every object the selectors match, one by one.
    pub async fn delete_collection(
        &self,
        target: &Target,
        list: &super::ListOptions,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let listed = self.list(target, list).await?;
        let mut items = Vec::new();
        for item in listed.get("items").and_then(Value::as_array).into_iter().flatten() {
            let one = Target {
                kind: target.kind,
                namespace: wasmkube_api::meta::namespace(item).map(String::from),
                name: Some(wasmkube_api::meta::name(item).to_string()),
            };
            match self.delete(&one, opts).await {
                Ok(written) => items.push(written.object),
                Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(json!({
            "apiVersion": target.kind.api_version(),
            "kind": target.kind.list_kind(),
            "metadata": {"resourceVersion": self.store.revision().to_string()},
            "items": items,
        }))
    }
}

fn check_preconditions(target: &Target, current: &Value, rev: u64, opts: &DeleteOptions) -> Result<(), ApiError> {
    let Some(pre) = &opts.preconditions else { return Ok(()) };
    let conflict = |message: String| ApiError::Conflict {
        kind: target.kind,
        name: target.name.clone().unwrap_or_default(),
        message,
    };
    let uid = current.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
    if let Some(want) = pre.uid.as_deref()
        && want != uid
    {
        return Err(conflict(format!("Precondition failed: UID in precondition: {want}, UID in object meta: {uid}")));
    }
    if let Some(want) = pre.resource_version.as_deref()
        && parse_revision(want)? != rev
    {
        return Err(conflict(format!(
            "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rev}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(group: &str, resource: &str) -> &'static Kind {
        wasmkube_api::kinds::by_resource(group, "v1", resource).expect("registered")
    }

    #[test]
    fn propagation_policies_become_garbage_collector_finalizers() {
        let deploy = kind("apps", "deployments");
        let list = |fs: &[&str]| fs.iter().map(|f| f.to_string()).collect::<Vec<_>>();
        // (kind, finalizers on the object, requested, want: None = unchanged)
        type Case<'a> = (&'a Kind, &'a [&'a str], Option<Propagation>, Option<&'a [&'a str]>);
        let cases: &[Case] = &[
            (deploy, &[], None, None),
            (deploy, &[], Some(Propagation::Background), None),
            (deploy, &[], Some(Propagation::Foreground), Some(&["foregroundDeletion"])),
            (deploy, &[], Some(Propagation::Orphan), Some(&["orphan"])),
            (deploy, &["example.com/hold"], Some(Propagation::Orphan), Some(&["example.com/hold", "orphan"])),
            // A later delete's policy replaces the earlier one's finalizer...
            (deploy, &["orphan"], Some(Propagation::Foreground), Some(&["foregroundDeletion"])),
            (deploy, &["foregroundDeletion"], Some(Propagation::Background), Some(&[])),
            // ... and without a policy the earlier one stands.
            (deploy, &["foregroundDeletion"], None, None),
            (deploy, &["orphan"], None, None),
            // batch/v1 Jobs orphan by default.
            (kind("batch", "jobs"), &[], None, Some(&["orphan"])),
            (kind("batch", "jobs"), &[], Some(Propagation::Background), None),
        ];
        for (kind, current, requested, want) in cases {
            let got = gc_finalizers(kind, &list(current), *requested);
            assert_eq!(got, want.map(list), "{} {current:?} {requested:?}", kind.kind);
        }
    }

    #[test]
    fn unknown_propagation_policies_are_rejected() {
        let opts = DeleteOptions { propagation_policy: Some("Sideways".into()), ..Default::default() };
        assert!(matches!(opts.propagation(), Err(ApiError::BadRequest(m)) if m.contains("Unsupported value")));
        let opts = DeleteOptions { propagation_policy: Some("Orphan".into()), ..Default::default() };
        assert_eq!(opts.propagation().ok().flatten(), Some(Propagation::Orphan));
    }
}
