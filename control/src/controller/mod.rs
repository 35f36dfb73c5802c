//! Controllers that run inside the control plane and act through the object service.

pub mod built_in_services;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod garbage_collector;
pub mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod replicaset;
pub mod service_account;
pub mod service_lb;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::{SelectAll, select_all};
use futures::{FutureExt, StreamExt};
use serde_json::value::RawValue;

use crate::objects::Objects;
use crate::store::{Event, EventStream};

/// Whether an event can matter to ownership: an object going, one arriving with owners, or a
/// change to its owners, finalizers or deletion mark. Creating ownerless objects and every status
/// or spec write leave the garbage collector nothing to do.
pub(crate) fn ownership_changed(event: &Event) -> bool {
    let Some(new) = &event.value else { return true };
    let parse = |bytes: &[u8]| stored_metadata(bytes).unwrap_or(serde_json::Value::Null);
    let fields =
        |meta: &serde_json::Value| ["ownerReferences", "finalizers", "deletionTimestamp"].map(|f| meta.get(f).cloned());
    let new = fields(&parse(new));
    match &event.prev {
        None => new[0].as_ref().and_then(|o| o.as_array()).is_some_and(|owners| !owners.is_empty()),
        Some(prev) => fields(&parse(&prev.value)) != new,
    }
}

/// The `metadata` of a stored object, without building the rest of it (the parser still reads
/// past the other fields, but allocates nothing for them): what ownership and garbage
/// collection look at, for every object.
pub(crate) fn stored_metadata(bytes: &[u8]) -> Option<serde_json::Value> {
    #[derive(serde::Deserialize)]
    struct MetadataOnly {
        metadata: serde_json::Value,
    }
    serde_json::from_slice::<MetadataOnly>(bytes).ok().map(|m| m.metadata)
}

/// Every object of `kind` (in `namespace`, or all), typed; objects that do not decode are skipped
/// (the API validated them on the way in).
pub(crate) async fn list_typed<T: Stored>(
    objects: &Objects,
    kind: &'static wasmkube_api::Kind,
    namespace: Option<&str>,
) -> Result<Vec<T>, crate::status::ApiError> {
    // Straight from the stored bytes into the type: going through the API's JSON list (and a
    // copy of each item) made a large cluster's re-lists most of a controller's cost.
    let target = crate::objects::Target { kind, namespace: namespace.map(str::to_string), name: None };
    let request = crate::store::RangeRequest { prefix: target.collection_prefix(), ..Default::default() };
    let listed = objects.store().range(request).await?;
    Ok(listed.items.iter().filter_map(|kv| decode_stored(&kv.value, kv.mod_revision)).collect())
}

/// A Kubernetes object type as controllers read it from the store.
pub(crate) trait Stored:
    k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta> + serde::de::DeserializeOwned
{
}

impl<T> Stored for T where
    T: k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>
        + serde::de::DeserializeOwned
{
}

/// A stored object as of `revision` (its `resourceVersion`), decoded straight into its type;
/// `None` if the bytes are not one.
pub(crate) fn decode_stored<T: Stored>(bytes: &[u8], revision: crate::store::Revision) -> Option<T> {
    let mut object: T = serde_json::from_slice(bytes).ok()?;
    object.metadata_mut().resource_version = Some(revision.to_string());
    Some(object)
}

/// An error with its causes (`deleting Pod web-x: Operation cannot be fulfilled ...`), for the log.
pub(crate) fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Changes under a few store prefixes, for controllers that re-read what they need on any change
/// (level-triggered), so a change only says "look again", never what to do.
pub(crate) struct Changes {
    objects: Objects,
    prefixes: Vec<String>,
    stream: SelectAll<EventStream>,
    /// Which events count as a change (default: all).
    relevant: Box<dyn Fn(&Event) -> bool + Send>,
    /// When the last [`Changes::settle`] let a pass start.
    last_pass: Option<tokio::time::Instant>,
}

/// Whether an event changed more than an object's status: a create, a delete, or a write to its
/// metadata or spec. Status reports (agents, controllers) are most writes in a busy cluster, and
/// most controllers need not look again for them.
///
/// Every watcher asks this of every pod event, so the two versions are compared as stored text,
/// field by top-level field, without building either: the store writes one canonical encoding,
/// so equal fields are equal text. Text that differs only in form (which the store does not
/// write) counts as a change, which costs a needless look, never a missed one.
pub(crate) fn beyond_status(event: &Event) -> bool {
    let (Some(new), Some(prev)) = (&event.value, &event.prev) else { return true };
    let (Some(new), Some(prev)) = (top_level_fields(new), top_level_fields(&prev.value)) else { return true };
    !without_status(&new).eq(without_status(&prev))
}

fn without_status<'a>(fields: &'a BTreeMap<&'a str, &'a RawValue>) -> impl Iterator<Item = (&'a str, &'a str)> {
    fields.iter().filter(|(k, _)| **k != "status").map(|(k, v)| (*k, v.get()))
}

/// A stored object's top-level fields as their JSON text, borrowed from `bytes` (none if the
/// bytes are not an object, or a key needs unescaping).
fn top_level_fields(bytes: &[u8]) -> Option<BTreeMap<&str, &RawValue>> {
    serde_json::from_slice(bytes).ok()
}

impl Changes {
    pub(crate) fn new(objects: &Objects, prefixes: Vec<String>) -> Self {
        Self::filtered(objects, prefixes, |_| true)
    }

    /// Like [`Changes::new`], counting only the events `relevant` accepts.
    pub(crate) fn filtered(
        objects: &Objects,
        prefixes: Vec<String>,
        relevant: impl Fn(&Event) -> bool + Send + 'static,
    ) -> Self {
        let stream = Self::watch(objects, &prefixes);
        Self { objects: objects.clone(), prefixes, stream, relevant: Box::new(relevant), last_pass: None }
    }

    fn watch(objects: &Objects, prefixes: &[String]) -> SelectAll<EventStream> {
        let store = objects.store();
        let revision = store.revision();
        select_all(prefixes.iter().map(|p| store.watch(p, revision)))
    }

    /// Waits for the next change. A broken watch (compaction, shutdown) is started again from the
    /// current revision and counts as a change: the full pass that follows misses nothing.
    pub(crate) async fn next(&mut self) {
        loop {
            match self.stream.next().await {
                Some(Ok(event)) if (self.relevant)(&event) => return,
                Some(Ok(_)) => continue,
                _ => break,
            }
        }
        self.stream = Self::watch(&self.objects, &self.prefixes);
        // A store that is shutting down ends every new watch at once: do not spin on it.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Gathers a burst: takes every change queued, after waiting until `window` has passed since
    /// the last pass started. So a burst of writes (a ReplicaSet's pods reporting in) costs a
    /// pass per window, not one per write, while a change after a quiet spell (a user's apply,
    /// on the path of a hot swap) is handled at once.
    pub(crate) async fn settle(&mut self, window: Duration) {
        if let Some(last) = self.last_pass {
            tokio::time::sleep_until(last + window).await;
        }
        self.last_pass = Some(tokio::time::Instant::now());
        loop {
            match self.stream.next().now_or_never() {
                Some(Some(Ok(_))) => continue,
                Some(_) => {
                    self.stream = Self::watch(&self.objects, &self.prefixes);
                    return;
                }
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::store::KeyValue;

    fn event(prev: Option<serde_json::Value>, new: Option<serde_json::Value>) -> Event {
        let bytes = |v: serde_json::Value| serde_json::to_vec(&v).expect("json");
        Event {
            revision: 2,
            key: "/registry/core/pods/default/p".into(),
            value: new.map(bytes),
            prev: prev.map(|v| KeyValue {
                key: "/registry/core/pods/default/p".into(),
                value: bytes(v),
                mod_revision: 1,
            }),
        }
    }

    #[test]
    fn only_ownership_changes_wake_the_garbage_collector() {
        let owned = json!({"metadata": {"ownerReferences": [{"uid": "u"}]}, "status": {"phase": "Pending"}});
        let running = json!({"metadata": {"ownerReferences": [{"uid": "u"}]}, "status": {"phase": "Running"}});
        let orphan = json!({"metadata": {}});
        assert!(ownership_changed(&event(None, Some(owned.clone()))), "an owned object arrives");
        assert!(!ownership_changed(&event(None, Some(orphan.clone()))), "an ownerless one does not matter");
        assert!(!ownership_changed(&event(Some(owned.clone()), Some(running.clone()))), "a status report");
        assert!(ownership_changed(&event(Some(running), Some(orphan.clone()))), "released");
        assert!(ownership_changed(&event(Some(orphan), None)), "deleted");
        assert!(!beyond_status(&event(
            Some(owned.clone()),
            Some(json!({"metadata": {"ownerReferences": [{"uid": "u"}]}}))
        )));
    }

    #[test]
    fn only_writes_beyond_the_status_count_as_more_than_a_status_report() {
        let pod = |image: &str, phase: &str, labels: Value| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": labels},
                "spec": {"containers": [{"name": "a", "image": image}]}, "status": {"phase": phase}})
        };
        let base = pod("x:1", "Pending", json!({"app": "web"}));
        let change = |new: Value| beyond_status(&event(Some(base.clone()), Some(new)));
        assert!(!change(pod("x:1", "Running", json!({"app": "web"}))), "a status report");
        assert!(
            !change(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "a", "image": "x:1"}]}})),
            "the status removed"
        );
        assert!(change(pod("x:2", "Pending", json!({"app": "web"}))), "the spec");
        assert!(change(pod("x:1", "Pending", json!({"app": "api"}))), "the metadata");
        let mut extra = base.clone();
        extra["data"] = json!({});
        assert!(change(extra), "a new top-level field");
        assert!(beyond_status(&event(None, Some(base.clone()))), "a create");
        assert!(beyond_status(&event(Some(base), None)), "a delete");
    }
}
