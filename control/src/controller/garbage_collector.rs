//! The garbage collector: ownerReference cascades, as kube-controller-manager's
//! (`pkg/controller/garbagecollector`).
//!
//! Background (the default delete): an owner goes at once, and afterwards its dependents — objects
//! whose `ownerReferences` name a uid that no longer exists — are deleted in turn; a dependent
//! with another owner left only loses the dangling reference. Foreground: the owner carries the
//! `foregroundDeletion` finalizer (see `objects::delete`) and stays until its dependents that
//! `blockOwnerDeletion` are gone; dependents with dependents of their own are deleted in the
//! foreground too, so the whole subtree goes first. Orphan: the owner's `orphan` finalizer has
//! the references to it removed from every dependent, then the finalizer goes.
//!
//! Level-triggered: on any change to a covered kind (with a short batching delay, so a burst of
//! writes is one pass) it reads every object of those kinds at one revision, plans with [`graph`]
//! and acts. An owner missing from the snapshot is confirmed gone with a live read before anything
//! is deleted for it, and every delete is conditional on the object's uid (and, while its owner
//! references are unchanged, its resourceVersion).

pub mod graph;

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wasmkube_api::Kind;

use super::{Changes, describe, ownership_changed, stored_metadata};
use crate::objects::{DeleteOptions, Objects, PatchKind, Subresource, Target, WriteOptions};
use crate::status::ApiError;
use crate::store::RangeRequest;
use graph::{Action, Graph, Object, OwnerRef};

/// How long a burst of changes is gathered into one pass.
const BATCH: Duration = Duration::from_millis(100);
/// How soon a failed pass is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// A pass now and then even without changes, in case a watch missed one.
const RESYNC: Duration = Duration::from_secs(30);
/// Attempts at a read-modify-write that keeps losing races.
const ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("listing {kind} for a snapshot")]
    Snapshot {
        kind: &'static str,
        #[source]
        source: ApiError,
    },
    #[error("checking whether the owner {kind} {name} still exists")]
    CheckOwner {
        kind: String,
        name: String,
        #[source]
        source: ApiError,
    },
    #[error("deleting {kind} {name}")]
    Delete {
        kind: &'static str,
        name: String,
        #[source]
        source: ApiError,
    },
    #[error("updating the owner references or finalizers of {kind} {name}")]
    Update {
        kind: &'static str,
        name: String,
        #[source]
        source: ApiError,
    },
}

/// Every registered kind but Events, which nothing owns and which come in floods.
pub fn covered_kinds() -> Vec<&'static Kind> {
    wasmkube_api::kinds::ALL.iter().filter(|k| !(k.group.is_empty() && k.kind == "Event")).collect()
}

/// Runs until `cancel` fires.
pub async fn run(objects: Objects, cancel: CancellationToken) {
    let kinds = covered_kinds();
    // Only ownership changes can leave something to collect; the periodic resync covers the rest.
    let mut changes = Changes::filtered(&objects, kinds.iter().map(|k| k.key_prefix()).collect(), ownership_changed);
    loop {
        let wait = match collect(&objects, &kinds).await {
            Ok(true) => RESYNC,
            // A step failed (and was logged): try again soon even without a change.
            Ok(false) => RETRY,
            Err(e) => {
                tracing::warn!(error = %describe(&e), "garbage collection pass failed");
                RETRY
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = changes.next() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        changes.settle(BATCH).await;
    }
}

/// Every covered object at one revision: only metadata matters here, so only metadata is
/// decoded (a full JSON list of a large cluster's pods took gigabytes for a moment each pass).
async fn snapshot(objects: &Objects, kinds: &[&'static Kind]) -> Result<Graph, GcError> {
    let store = objects.store();
    let at = store.revision();
    let mut all = Vec::new();
    for &kind in kinds {
        let request = RangeRequest { prefix: kind.key_prefix(), revision: Some(at), ..RangeRequest::default() };
        let listed = store
            .range(request)
            .await
            .map_err(|e| GcError::Snapshot { kind: kind.plural, source: ApiError::from(e) })?;
        for kv in &listed.items {
            let Some(mut metadata) = stored_metadata(&kv.value) else { continue };
            // The stored form leaves the resourceVersion to the store's revision.
            if let Some(fields) = metadata.as_object_mut() {
                fields.insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
            }
            all.extend(Object::from_value(kind, &json!({ "metadata": metadata })));
        }
    }
    Ok(Graph::new(all))
}

/// One pass: snapshot, plan, act. A failed step is logged and the others still run; returns
/// whether every step succeeded.
async fn collect(objects: &Objects, kinds: &[&'static Kind]) -> Result<bool, GcError> {
    let graph = snapshot(objects, kinds).await?;
    let mut all_done = true;
    for action in graph.plan() {
        if let Err(e) = execute(objects, &graph, &action).await {
            tracing::warn!(error = %describe(&e), ?action, "garbage collection step failed");
            all_done = false;
        }
    }
    Ok(all_done)
}

fn target_of(object: &Object) -> Target {
    Target { kind: object.kind, namespace: object.namespace.clone(), name: Some(object.name.clone()) }
}

async fn execute(objects: &Objects, graph: &Graph, action: &Action) -> Result<(), GcError> {
    match action {
        Action::Delete { object, propagation, dangling } => {
            let object = &graph.objects[*object];
            if confirmed_gone(objects, object, dangling).await? {
                delete(objects, object, propagation.as_policy()).await?;
            }
        }
        Action::RemoveReferences { object, uids, dangling } => {
            let object = &graph.objects[*object];
            if confirmed_gone(objects, object, dangling).await? {
                remove_references(objects, object, uids).await?;
            }
        }
        Action::Orphan { owner, dependents } => {
            let owner = &graph.objects[*owner];
            for &dependent in dependents {
                remove_references(objects, &graph.objects[dependent], std::slice::from_ref(&owner.uid)).await?;
            }
            remove_finalizer(objects, owner, DeleteOptions::ORPHAN_FINALIZER).await?;
            let count = dependents.len();
            tracing::info!(kind = owner.kind.kind, name = %owner.name, dependents = count, "orphaned dependents");
        }
        Action::FinishForeground { owner } => {
            remove_finalizer(objects, &graph.objects[*owner], DeleteOptions::FOREGROUND_FINALIZER).await?;
        }
    }
    Ok(())
}

/// Whether every owner the snapshot did not have is really gone (it may have been created after
/// the snapshot's revision, or be in it under another uid).
async fn confirmed_gone(objects: &Objects, dependent: &Object, dangling: &[OwnerRef]) -> Result<bool, GcError> {
    for reference in dangling {
        let Some(kind) = graph::owner_kind(reference) else { return Ok(false) };
        let namespace = if kind.namespaced { dependent.namespace.clone() } else { None };
        let target = Target { kind, namespace, name: Some(reference.name.clone()) };
        match objects.get(&target).await {
            Ok(owner) if owner.pointer("/metadata/uid").and_then(Value::as_str) == Some(reference.uid.as_str()) => {
                return Ok(false);
            }
            Ok(_) | Err(ApiError::NotFound { .. }) => {}
            Err(source) => {
                return Err(GcError::CheckOwner { kind: reference.kind.clone(), name: reference.name.clone(), source });
            }
        }
    }
    Ok(true)
}

/// Kubernetes' `deleteObject`: conditional on uid and resourceVersion; when the resourceVersion
/// moved on (a status write) but the owner references did not, again on the uid alone.
async fn delete(objects: &Objects, object: &Object, policy: &str) -> Result<(), GcError> {
    let target = target_of(object);
    let fail = |source| GcError::Delete { kind: object.kind.kind, name: object.name.clone(), source };
    let exact = DeleteOptions::exactly(&object.uid, Some(&object.resource_version), policy);
    match objects.delete(&target, &exact).await {
        Ok(_) | Err(ApiError::NotFound { .. }) => {}
        Err(ApiError::Conflict { .. }) => {
            let live = match objects.get(&target).await {
                Ok(live) => live,
                Err(ApiError::NotFound { .. }) => return Ok(()),
                Err(source) => return Err(fail(source)),
            };
            let same_uid = live.pointer("/metadata/uid").and_then(Value::as_str) == Some(object.uid.as_str());
            let refs: Vec<Value> = object.owners.iter().map(|r| r.raw.clone()).collect();
            let same_owners =
                live.pointer("/metadata/ownerReferences").cloned().unwrap_or_else(|| json!([])) == json!(refs);
            if !(same_uid && same_owners) {
                return Ok(()); // changed in a way that matters: the next pass decides again
            }
            match objects.delete(&target, &DeleteOptions::exactly(&object.uid, None, policy)).await {
                Ok(_) | Err(ApiError::NotFound { .. } | ApiError::Conflict { .. }) => {}
                Err(source) => return Err(fail(source)),
            }
        }
        Err(source) => return Err(fail(source)),
    }
    tracing::info!(kind = object.kind.kind, namespace = ?object.namespace, name = %object.name, policy,
        "deleted an object whose owners are gone");
    Ok(())
}

/// Reads the object fresh, lets `change` compute a merge patch from it (`None`: nothing to do),
/// and applies it at the revision read, retrying lost races.
async fn update_fresh(
    objects: &Objects,
    object: &Object,
    change: impl Fn(&Value) -> Option<Value>,
) -> Result<(), GcError> {
    let target = target_of(object);
    let fail = |source| GcError::Update { kind: object.kind.kind, name: object.name.clone(), source };
    for _ in 0..ATTEMPTS {
        let live = match objects.get(&target).await {
            Ok(live) => live,
            Err(ApiError::NotFound { .. }) => return Ok(()),
            Err(source) => return Err(fail(source)),
        };
        if live.pointer("/metadata/uid").and_then(Value::as_str) != Some(object.uid.as_str()) {
            return Ok(()); // another object by that name now
        }
        let Some(mut patch) = change(&live) else { return Ok(()) };
        patch["metadata"]["resourceVersion"] =
            live.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null);
        match objects.patch(&target, patch, PatchKind::Merge, Subresource::Main, &WriteOptions::default()).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => return Ok(()),
            Err(ApiError::Conflict { .. }) => continue,
            Err(source) => return Err(fail(source)),
        }
    }
    Ok(()) // still racing: the next pass tries again
}

/// Drops the references to owners with these uids.
async fn remove_references(objects: &Objects, object: &Object, uids: &[String]) -> Result<(), GcError> {
    update_fresh(objects, object, |live| {
        let refs = live.pointer("/metadata/ownerReferences").and_then(Value::as_array)?;
        let kept: Vec<&Value> = refs
            .iter()
            .filter(|r| r.get("uid").and_then(Value::as_str).is_none_or(|uid| !uids.iter().any(|u| u == uid)))
            .collect();
        (kept.len() != refs.len())
            .then(|| json!({"metadata": {"ownerReferences": if kept.is_empty() { Value::Null } else { json!(kept) }}}))
    })
    .await
}

/// Removes one finalizer; with none left, that update completes the deletion.
async fn remove_finalizer(objects: &Objects, object: &Object, finalizer: &str) -> Result<(), GcError> {
    update_fresh(objects, object, |live| {
        let finalizers = live.pointer("/metadata/finalizers").and_then(Value::as_array)?;
        let kept: Vec<&Value> = finalizers.iter().filter(|f| f.as_str() != Some(finalizer)).collect();
        (kept.len() != finalizers.len())
            .then(|| json!({"metadata": {"finalizers": if kept.is_empty() { Value::Null } else { json!(kept) }}}))
    })
    .await
}
