//! `pods/{name}/binding`: assigns a pod to a node, once. The scheduler's only write to a pod's
//! spec: it sets `spec.nodeName` and the `PodScheduled` condition in one durable write, refuses a
//! pod that is already bound (409, as Kubernetes does), and honours a `resourceVersion` in the
//! Binding's metadata as a precondition, so a decision made on a stale view of the pod is not
//! applied.

use serde_json::{Value, json};

use super::update::Subresource;
use super::{Objects, Target, WriteOptions, Written};
use crate::status::ApiError;

impl Objects {
    /// Binds the pod `target` names to `node`.
    pub async fn bind(&self, target: &Target, binding: &Value, opts: &WriteOptions) -> Result<Written, ApiError> {
        let kind = target.kind;
        let name = target.name.clone().unwrap_or_default();
        let node = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::BadRequest("a Binding needs target.name (the node)".to_string()))?
            .to_string();
        if let Some(bound) = binding.pointer("/metadata/name").and_then(Value::as_str)
            && !bound.is_empty()
            && bound != name
        {
            return Err(ApiError::BadRequest(format!(
                "the name of the Binding ({bound}) does not match the pod's name ({name})"
            )));
        }
        let client_rv = match binding.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
            Some(rv) if !rv.is_empty() => Some(super::parse_revision(rv)?),
            _ => None,
        };
        let now = wasmkube_api::meta::now_rfc3339();
        self.guaranteed_update(target, Subresource::Binding, opts, client_rv, |current| {
            if let Some(existing) = current.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty())
            {
                return Err(ApiError::Conflict {
                    kind,
                    name: name.clone(),
                    message: format!("pod {name} is already assigned to node \"{existing}\""),
                });
            }
            if current.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(ApiError::Conflict {
                    kind,
                    name: name.clone(),
                    message: format!("pod {name} is being deleted, cannot be assigned to a host"),
                });
            }
            let mut bound = current.clone();
            bound["spec"]["nodeName"] = json!(node);
            set_condition(&mut bound, json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": now}));
            Ok(bound)
        })
        .await
    }
}

/// Replaces (or adds) the condition of the same type in `status.conditions`.
pub(crate) fn set_condition(object: &mut Value, condition: Value) {
    let kind = condition.get("type").cloned();
    if !object.get("status").is_some_and(Value::is_object) {
        object["status"] = json!({});
    }
    let conditions =
        object["status"].as_object_mut().expect("status is an object").entry("conditions").or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let list = conditions.as_array_mut().expect("conditions is an array");
    match list.iter_mut().find(|c| c.get("type") == kind.as_ref()) {
        Some(existing) => *existing = condition,
        None => list.push(condition),
    }
}
