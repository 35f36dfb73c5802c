//! `pods/{name}/binding`: assigns a pod to a node, once. The scheduler's only write to a pod's
//! spec: it sets `spec.nodeName` and the `PodScheduled` condition in one durable write, refuses a
//! pod that is already bound (409, as Kubernetes does), and honours a `resourceVersion` in the
//! Binding's metadata as a precondition, so a decision made on a stale view of the pod is not
//! applied.

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use super::update::{CONFLICT_MESSAGE, MAX_RETRIES};
use super::{Objects, Target, WriteOptions};
use crate::status::ApiError;
use crate::store::{Precondition, Revision, Write, WriteOutcome};

impl Objects {
    /// Binds the pod `target` names to the node the Binding's `target.name` names.
    ///
    /// The scheduler binds every pod once, so this is the hottest write of a busy cluster. The
    /// stored pod is canonical and the binding changes two known fields, so the pod is decoded
    /// into its type, changed, and encoded straight back, rather than through the generic update
    /// (a JSON tree decoded, copied, compared and checked whole).
    pub async fn bind(&self, target: &Target, binding: &Value, opts: &WriteOptions) -> Result<(), ApiError> {
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
        let conflict = || ApiError::Conflict { kind, name: name.clone(), message: CONFLICT_MESSAGE.into() };
        let key = target.key()?;
        let now = jiff::Timestamp::now();
        for _ in 0..MAX_RETRIES {
            let Some(stored) = self.store.get(&key).await? else {
                return Err(ApiError::NotFound { kind, name: name.clone() });
            };
            if client_rv.is_some_and(|rv| rv != stored.mod_revision) {
                return Err(conflict());
            }
            let pod: Pod = serde_json::from_slice(&stored.value)
                .map_err(|e| ApiError::Internal(format!("stored pod {name} does not decode: {e}")))?;
            match self.write_bound(pod, &node, now, stored.mod_revision, opts.dry_run).await? {
                None | Some(WriteOutcome::Committed(_)) => return Ok(()),
                Some(WriteOutcome::PreconditionFailed { .. } | WriteOutcome::NotFound) if client_rv.is_none() => {
                    continue;
                }
                Some(_) => return Err(conflict()),
            }
        }
        Err(conflict())
    }

    /// Binds `pod`, as the caller read it at its `resourceVersion`, to `node`: the write
    /// [`Objects::bind`] makes for a Binding guarded by that version, computed from the caller's
    /// copy instead of a fresh read. The scheduler keeps every waiting pod current from its
    /// watch: when its copy is the stored version the result is the same, and when it is not the
    /// write is refused as a conflict, as that Binding would be.
    pub async fn bind_pod(&self, pod: &Pod, node: &str) -> Result<(), ApiError> {
        let (kind, name) = (pods(), pod.metadata.name.clone().unwrap_or_default());
        let read_at = pod
            .metadata
            .resource_version
            .as_deref()
            .ok_or_else(|| ApiError::BadRequest(format!("pod {name} has no resourceVersion to bind at")))?;
        let read_at = super::parse_revision(read_at)?;
        match self.write_bound(pod.clone(), node, jiff::Timestamp::now(), read_at, false).await? {
            None | Some(WriteOutcome::Committed(_)) => Ok(()),
            Some(WriteOutcome::PreconditionFailed { current: None } | WriteOutcome::NotFound) => {
                Err(ApiError::NotFound { kind, name })
            }
            Some(WriteOutcome::PreconditionFailed { .. }) => {
                Err(ApiError::Conflict { kind, name, message: CONFLICT_MESSAGE.into() })
            }
        }
    }

    /// Assigns `pod`, as read at revision `read_at`, to `node` and writes it back if it is still
    /// at that revision; on a dry run, only assigns it (`None`). A pod that cannot be assigned
    /// is a conflict.
    async fn write_bound(
        &self,
        mut pod: Pod,
        node: &str,
        now: jiff::Timestamp,
        read_at: Revision,
        dry_run: bool,
    ) -> Result<Option<WriteOutcome>, ApiError> {
        let (kind, name) = (pods(), pod.metadata.name.clone().unwrap_or_default());
        let key = kind.key(pod.metadata.namespace.as_deref(), &name);
        assign(&mut pod, node, now).map_err(|message| ApiError::Conflict { kind, name, message })?;
        if dry_run {
            return Ok(None);
        }
        pod.metadata.resource_version = None; // the store's revision is the truth
        let value = serde_json::to_vec(&pod).expect("a pod always serialises");
        let write = Write::Put { key, value, precondition: Some(Precondition::ModRevision(read_at)) };
        Ok(Some(self.store.write(write).await?))
    }
}

fn pods() -> &'static wasmkube_api::Kind {
    wasmkube_api::kinds::by_resource("", "v1", "pods").expect("pods are registered")
}

/// Sets `spec.nodeName` and `PodScheduled=True` on a pod that is neither bound nor being
/// deleted (otherwise the conflict's message, in Kubernetes' words). The spec changed, so the
/// generation goes up, as for any other write that changes a spec.
fn assign(pod: &mut Pod, node: &str, now: jiff::Timestamp) -> Result<(), String> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let spec = pod.spec.get_or_insert_default();
    if let Some(existing) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Err(format!("pod {name} is already assigned to node \"{existing}\""));
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Err(format!("pod {name} is being deleted, cannot be assigned to a host"));
    }
    spec.node_name = Some(node.to_string());
    let scheduled = PodCondition {
        type_: "PodScheduled".into(),
        status: "True".into(),
        last_transition_time: Some(Time(now)),
        ..PodCondition::default()
    };
    let conditions = pod.status.get_or_insert_default().conditions.get_or_insert_default();
    match conditions.iter_mut().find(|c| c.type_ == scheduled.type_) {
        Some(existing) => *existing = scheduled,
        None => conditions.push(scheduled),
    }
    pod.metadata.generation = Some(pod.metadata.generation.unwrap_or(1) + 1);
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::testing::objects_with_pod;

    fn binding(node: &str, resource_version: Option<&str>) -> Value {
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web", "resourceVersion": resource_version},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}})
    }

    #[tokio::test]
    async fn a_pod_is_bound_once_with_its_condition_and_a_stale_or_second_binding_is_a_conflict() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (objects, pod) = objects_with_pod(dir.path()).await;
        let before = objects.get(&pod).await.expect("get");
        let rv = before["metadata"]["resourceVersion"].as_str().map(str::to_string);

        let dry = WriteOptions { dry_run: true, ..WriteOptions::default() };
        objects.bind(&pod, &binding("n1", rv.as_deref()), &dry).await.expect("dry run");
        assert_eq!(objects.get(&pod).await.expect("get"), before, "a dry run writes nothing");

        objects.bind(&pod, &binding("n1", rv.as_deref()), &WriteOptions::default()).await.expect("bind");
        let bound = objects.get(&pod).await.expect("get");
        assert_eq!(bound["spec"]["nodeName"], "n1");
        let conditions = bound["status"]["conditions"].as_array().expect("conditions");
        let scheduled: Vec<&Value> = conditions.iter().filter(|c| c["type"] == "PodScheduled").collect();
        assert_eq!(scheduled.len(), 1);
        assert_eq!(scheduled[0]["status"], "True");
        assert!(scheduled[0]["lastTransitionTime"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(bound["metadata"]["uid"], before["metadata"]["uid"]);
        assert_eq!(bound["spec"]["containers"], before["spec"]["containers"]);

        let stale = objects.bind(&pod, &binding("n2", rv.as_deref()), &WriteOptions::default()).await;
        assert!(matches!(&stale, Err(ApiError::Conflict { message, .. }) if message == CONFLICT_MESSAGE), "{stale:?}");
        let again = objects.bind(&pod, &binding("n2", None), &WriteOptions::default()).await;
        assert!(
            matches!(&again, Err(ApiError::Conflict { message, .. }) if message == "pod web is already assigned to node \"n1\""),
            "{again:?}"
        );
        assert_eq!(objects.get(&pod).await.expect("get")["spec"]["nodeName"], "n1");
    }

    #[tokio::test]
    async fn a_binding_needs_a_node_a_matching_name_and_an_existing_pod() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (objects, pod) = objects_with_pod(dir.path()).await;
        let opts = WriteOptions::default();
        let no_node = objects.bind(&pod, &json!({"target": {"name": ""}}), &opts).await;
        assert!(matches!(no_node, Err(ApiError::BadRequest(m)) if m.contains("target.name")));
        let other = json!({"metadata": {"name": "other"}, "target": {"name": "n1"}});
        assert!(
            matches!(objects.bind(&pod, &other, &opts).await, Err(ApiError::BadRequest(m)) if m.contains("(other)"))
        );
        let missing = Target { name: Some("missing".into()), ..pod };
        let err = objects.bind(&missing, &json!({"target": {"name": "n1"}}), &opts).await;
        assert!(matches!(err, Err(ApiError::NotFound { .. })), "{err:?}");
    }

    #[tokio::test]
    async fn binding_a_copy_writes_what_a_binding_would_and_refuses_a_stale_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (objects, target) = objects_with_pod(dir.path()).await;
        let twin_dir = tempfile::tempdir().expect("tempdir");
        let (twin_objects, twin) = objects_with_pod(twin_dir.path()).await;
        let copy: Pod = serde_json::from_value(objects.get(&target).await.expect("get")).expect("a pod");
        let stale = copy.clone();

        objects.bind_pod(&copy, "n1").await.expect("bind a current copy");
        let twin_copy = twin_objects.get(&twin).await.expect("get");
        let rv = twin_copy["metadata"]["resourceVersion"].as_str().map(str::to_string);
        twin_objects.bind(&twin, &binding("n1", rv.as_deref()), &WriteOptions::default()).await.expect("bind");
        let (mut by_copy, mut by_binding) =
            (objects.get(&target).await.expect("get"), twin_objects.get(&twin).await.expect("get"));
        for pod in [&mut by_copy, &mut by_binding] {
            let meta = pod["metadata"].as_object_mut().expect("metadata");
            for differs in ["uid", "creationTimestamp", "resourceVersion"] {
                meta.remove(differs);
            }
            pod["status"]["conditions"][0].as_object_mut().map(|c| c.remove("lastTransitionTime"));
        }
        assert_eq!(by_copy, by_binding, "the same pod as a Binding would leave");

        let refused = objects.bind_pod(&stale, "n2").await;
        assert!(
            matches!(&refused, Err(ApiError::Conflict { message, .. }) if message == CONFLICT_MESSAGE),
            "{refused:?}"
        );
        assert_eq!(objects.get(&target).await.expect("get")["spec"]["nodeName"], "n1");
        let objects_kind = target.kind;
        let now = crate::objects::DeleteOptions { grace_period_seconds: Some(0), ..Default::default() };
        objects.delete(&target, &now).await.expect("delete");
        let gone = objects.bind_pod(&stale, "n2").await;
        assert!(matches!(gone, Err(ApiError::NotFound { kind, .. }) if std::ptr::eq(kind, objects_kind)), "{gone:?}");
    }

    #[test]
    fn a_pod_being_deleted_is_not_assigned() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        pod.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        let refused = assign(&mut pod, "n1", jiff::Timestamp::now());
        assert_eq!(refused, Err("pod web is being deleted, cannot be assigned to a host".to_string()));
        assert!(pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none());
    }
}
