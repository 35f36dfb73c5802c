//! The service account controller: every namespace has a ServiceAccount named `default`, created
//! when the namespace appears and again if it is deleted, as kube-controller-manager's does.
//!
//! Level-triggered: a pass reads all namespaces and all `default` ServiceAccounts and creates the
//! missing ones. A Terminating namespace is left alone — the namespace lifecycle is emptying it,
//! and the API refuses new content there anyway.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wasmkube_api::Kind;

use super::{Changes, describe};
use crate::objects::{ListOptions, Objects, Target, WriteOptions, namespace_kind};
use crate::status::ApiError;

/// The ServiceAccount every namespace gets.
pub const DEFAULT: &str = "default";
/// How soon a failed pass is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How long a burst of changes (several namespaces created at once) is gathered into one pass.
const BATCH: Duration = Duration::from_millis(10);

fn service_accounts() -> &'static Kind {
    wasmkube_api::kinds::by_resource("", "v1", "serviceaccounts").expect("built-in kinds are registered")
}

/// Runs until `cancel` fires.
pub async fn run(objects: Objects, cancel: CancellationToken) {
    let prefixes = vec![namespace_kind().key_prefix(), service_accounts().key_prefix()];
    let mut changes = Changes::new(&objects, prefixes);
    loop {
        let failed = match ensure_all(&objects).await {
            Ok(()) => false,
            Err(e) => {
                tracing::warn!(error = %describe(&e), "service account pass failed");
                true
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = changes.next() => {}
            _ = tokio::time::sleep(RETRY), if failed => {}
        }
        changes.settle(BATCH).await;
    }
}

fn items(list: &Value) -> impl Iterator<Item = &Value> {
    list.get("items").and_then(Value::as_array).into_iter().flatten()
}

/// The active namespaces (listed as stored) that have no `default` ServiceAccount among `accounts`.
pub fn missing<'a>(
    namespaces: impl Iterator<Item = &'a Value>,
    accounts: impl Iterator<Item = &'a Value>,
) -> Vec<String> {
    let have: BTreeSet<&str> =
        accounts.filter(|a| wasmkube_api::meta::name(a) == DEFAULT).filter_map(wasmkube_api::meta::namespace).collect();
    namespaces
        .filter(|ns| ns.pointer("/metadata/deletionTimestamp").is_none())
        .filter(|ns| ns.pointer("/status/phase").and_then(Value::as_str) != Some("Terminating"))
        .map(wasmkube_api::meta::name)
        .filter(|name| !have.contains(name))
        .map(String::from)
        .collect()
}

async fn ensure_all(objects: &Objects) -> Result<(), ApiError> {
    let all = |kind| Target { kind, namespace: None, name: None };
    let namespaces = objects.list(&all(namespace_kind()), &ListOptions::default()).await?;
    let accounts = objects.list(&all(service_accounts()), &ListOptions::default()).await?;
    for namespace in missing(items(&namespaces), items(&accounts)) {
        let target = Target { kind: service_accounts(), namespace: Some(namespace.clone()), name: None };
        let body = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": DEFAULT}});
        match objects.create(&target, body, &WriteOptions::default()).await {
            Ok(_) => tracing::info!(%namespace, "created the default service account"),
            // Created meanwhile, or the namespace started terminating or went: nothing to do.
            Err(ApiError::AlreadyExists { .. } | ApiError::Forbidden { .. } | ApiError::NamespaceNotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_namespaces_without_a_default_account_are_missing_one() {
        let namespaces = [
            json!({"metadata": {"name": "has"}, "status": {"phase": "Active"}}),
            json!({"metadata": {"name": "lacks"}, "status": {"phase": "Active"}}),
            json!({"metadata": {"name": "other-only"}}),
            json!({"metadata": {"name": "going", "deletionTimestamp": "2026-01-01T00:00:00Z"},
                   "status": {"phase": "Terminating"}}),
        ];
        let accounts = [
            json!({"metadata": {"name": "default", "namespace": "has"}}),
            json!({"metadata": {"name": "builder", "namespace": "other-only"}}),
        ];
        assert_eq!(missing(namespaces.iter(), accounts.iter()), ["lacks", "other-only"]);
    }
}
