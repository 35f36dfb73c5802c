//! DELETE of one object or a whole collection, with Kubernetes' DeleteOptions.
//!
//! An object with finalizers is only marked (`deletionTimestamp`) and goes when the last finalizer
//! is removed; a namespace always goes through its lifecycle (Terminating, contents deleted, then
//! itself); a pod bound to an existing node is deleted gracefully, leaving the final delete to the
//! node agent once its containers stopped.

use serde::Deserialize;
use serde_json::{Value, json};

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
    fn dry_run(&self) -> bool {
        self.dry_run.iter().any(|d| d == "All")
    }
}

impl Objects {
    /// Deletes (or starts deleting) one object; answers with its last state.
    pub async fn delete(&self, target: &Target, opts: &DeleteOptions) -> Result<Written, ApiError> {
        let kind = target.kind;
        let name = target.name.clone().unwrap_or_default();
        let key = target.key()?;
        if let Some(policy) = opts.propagation_policy.as_deref()
            && !matches!(policy, "Background" | "Foreground" | "Orphan")
        {
            return Err(ApiError::BadRequest(format!(
                "propagationPolicy: Unsupported value: {policy:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            )));
        }
        if kind.group.is_empty() && kind.kind == "Namespace" && IMMORTAL_NAMESPACES.contains(&name.as_str()) {
            return Err(ApiError::Forbidden { kind, name, message: "this namespace may not be deleted".into() });
        }
        loop {
            let Some((current, rev)) = self.get_kv(&key).await? else {
                return Err(ApiError::NotFound { kind, name });
            };
            check_preconditions(target, &current, rev, opts)?;
            let marked = self.mark_for_deletion(target, &current, opts).await?;
            if opts.dry_run() {
                return Ok(Written { object: marked.unwrap_or(current), warnings: Vec::new() });
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
                    let mut object = marked.unwrap_or(current);
                    super::set_resource_version(&mut object, new_rev);
                    return Ok(Written { object, warnings: Vec::new() });
                }
                // Someone wrote in between: decide again on the fresh object.
                WriteOutcome::PreconditionFailed { .. } => continue,
                WriteOutcome::NotFound => return Err(ApiError::NotFound { kind, name }),
            }
        }
    }

    /// `Some(object)` marked for deletion when the object must wait (finalizers, namespace
    /// lifecycle, graceful pod termination); `None` when it can be removed now.
    async fn mark_for_deletion(
        &self,
        target: &Target,
        current: &Value,
        opts: &DeleteOptions,
    ) -> Result<Option<Value>, ApiError> {
        let kind = target.kind;
        let already_marked = current.pointer("/metadata/deletionTimestamp").is_some();
        let is_namespace = kind.group.is_empty() && kind.kind == "Namespace";
        if is_namespace || has_finalizers(current) {
            if already_marked {
                return Ok(Some(current.clone()));
            }
            let mut object = current.clone();
            let meta = metadata_mut(&mut object).expect("stored objects have metadata");
            meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            if is_namespace {
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
                let mut object = current.clone();
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
