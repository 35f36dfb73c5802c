//! Namespace lifecycle: creates the built-in namespaces, and finishes deleting a namespace once it
//! is Terminating — every object in it is deleted, then its `kubernetes` finalizer is removed and
//! the namespace itself goes.
//!
//! Level-triggered: each pass looks at every terminating namespace as it is now, so a missed
//! event only delays the work until the next pass.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use wasmkube_api::kinds;

use crate::objects::{
    DeleteOptions, ListOptions, Objects, PatchKind, Subresource, Target, WriteOptions, namespace_kind,
};
use crate::status::ApiError;

/// The namespaces every cluster has from the start.
pub const BUILT_IN: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// How often terminating namespaces are looked at again while they still have content.
const REQUEUE: Duration = Duration::from_secs(1);

/// Creates the built-in namespaces that do not exist yet.
pub async fn ensure_built_in(objects: &Objects) -> Result<(), ApiError> {
    for name in BUILT_IN {
        let target = Target { kind: namespace_kind(), namespace: None, name: None };
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match objects.create(&target, body, &WriteOptions::default()).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Runs until `cancel` fires.
pub async fn run(objects: Objects, cancel: CancellationToken) {
    let prefix = namespace_kind().key_prefix();
    let mut changes = objects.store().watch(&prefix, objects.store().revision());
    loop {
        let pending = match reconcile_all(&objects).await {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(error = %e, "namespace lifecycle pass failed");
                true
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            change = changes.next() => {
                if change.is_none_or(|c| c.is_err()) {
                    // The watch ended (compaction or shutdown): start a fresh one and keep going.
                    changes = objects.store().watch(&prefix, objects.store().revision());
                }
            }
            _ = tokio::time::sleep(REQUEUE), if pending => {}
        }
    }
}

/// One pass over all namespaces; returns whether any is still terminating.
async fn reconcile_all(objects: &Objects) -> Result<bool, ApiError> {
    let all = Target { kind: namespace_kind(), namespace: None, name: None };
    let list = objects.list(&all, &ListOptions::default()).await?;
    let mut pending = false;
    for ns in list.get("items").and_then(Value::as_array).into_iter().flatten() {
        if ns.pointer("/metadata/deletionTimestamp").is_some() {
            let name = wasmkube_api::meta::name(ns).to_string();
            let span = tracing::info_span!("reconcile", namespace = %name);
            pending |= !finish_deletion(objects, &name).instrument(span).await?;
        }
    }
    Ok(pending)
}

/// Deletes the namespace's content; once none is left, removes the namespace. Returns whether the
/// namespace is gone.
async fn finish_deletion(objects: &Objects, namespace: &str) -> Result<bool, ApiError> {
    let mut remaining = 0usize;
    for kind in kinds::ALL.iter().filter(|k| k.namespaced) {
        let collection = Target { kind, namespace: Some(namespace.to_string()), name: None };
        let list = objects.list(&collection, &ListOptions::default()).await?;
        for item in list.get("items").and_then(Value::as_array).into_iter().flatten() {
            remaining += 1;
            if item.pointer("/metadata/deletionTimestamp").is_some() {
                continue; // already on its way out (finalizers or graceful termination)
            }
            let one = Target {
                kind,
                namespace: Some(namespace.to_string()),
                name: Some(wasmkube_api::meta::name(item).into()),
            };
            match objects.delete(&one, &DeleteOptions::default()).await {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    if remaining > 0 {
        return Ok(false);
    }
    // Empty: drop the namespace's own finalizer; with no others left the update deletes it.
    let ns = Target { kind: namespace_kind(), namespace: None, name: Some(namespace.to_string()) };
    let patch = json!({"spec": {"finalizers": []}});
    match objects.patch(&ns, patch, PatchKind::Merge, Subresource::Finalize, &WriteOptions::default()).await {
        Ok(_) | Err(ApiError::NotFound { .. }) => Ok(true),
        Err(e) => Err(e),
    }
}
