//! The control plane's event recorder: every controller and the scheduler record core/v1 Events
//! through one [`Recorder`], which compacts them as Kubernetes does ([`wasmkube_api::events`]:
//! a repeated occurrence counts up its Event instead of adding another).
//!
//! [`ControlPlane::start`](crate::ControlPlane::start) makes one and hands a clone to each task;
//! each names itself with [`Recorder::for_component`]. The clones share one correlator, so the
//! cache is bounded once for the whole control plane. Recording is best effort: a failed write is
//! logged at debug level and never fails the caller's sync.

use std::sync::{Arc, Mutex, MutexGuard};

use jiff::Timestamp;
use wasmkube_api::events::{Correlator, Decision, EventType, InvolvedObject, Occurrence, Reporter, Write};

use crate::objects::{Objects, PatchKind, Subresource, Target, WriteOptions};
use crate::status::ApiError;

/// Records Events through the object service; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    objects: Objects,
    correlator: Arc<Mutex<Correlator>>,
    reporter: Reporter,
}

impl Recorder {
    /// A recorder reporting as `wasmkube-control` until renamed with [`Recorder::for_component`].
    pub fn new(objects: Objects) -> Self {
        Self {
            objects,
            correlator: Arc::new(Mutex::new(Correlator::default())),
            reporter: Reporter::new("wasmkube-control", None),
        }
    }

    /// The same recorder (same correlator), reporting as `component`.
    pub fn for_component(&self, component: &str) -> Self {
        Self { reporter: Reporter::new(component, None), ..self.clone() }
    }

    /// Records that `reason` happened to `object` (best effort).
    pub async fn event(&self, object: InvolvedObject, type_: EventType, reason: &str, message: &str) {
        let occurrence = Occurrence {
            object,
            type_,
            reason: reason.to_string(),
            message: message.to_string(),
            reporter: self.reporter.clone(),
        };
        if let Err(e) = self.record(&occurrence).await {
            tracing::debug!(error = %e, reason, component = %self.reporter.component, "recording an event failed");
        }
    }

    fn correlator(&self) -> MutexGuard<'_, Correlator> {
        // The correlator's state stays consistent whatever panicked while holding it.
        self.correlator.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn record(&self, occurrence: &Occurrence) -> Result<(), ApiError> {
        let decision = self.correlator().observe(occurrence, Timestamp::now());
        match self.write(occurrence, &decision).await {
            // The Event expired or was deleted: start a new one.
            Err(ApiError::NotFound { .. }) if decision.write == Write::Patch => {
                self.correlator().forget(&decision.key);
                let again = self.correlator().observe(occurrence, Timestamp::now());
                self.write(occurrence, &again).await
            }
            other => other,
        }
    }

    async fn write(&self, occurrence: &Occurrence, decision: &Decision) -> Result<(), ApiError> {
        let kind = wasmkube_api::kinds::by_resource("", "v1", "events").expect("events are registered");
        let namespace = Some(occurrence.event_namespace().to_string());
        let options = WriteOptions::default();
        match decision.write {
            Write::Create => {
                let target = Target { kind, namespace, name: None };
                // Serialized from a typed Event just now: canonical already.
                let created = self.objects.create_canonical(&target, decision.event(occurrence), &options).await;
                if created.is_err() {
                    // Never written: the next occurrence must create it, not patch nothing.
                    self.correlator().forget(&decision.key);
                }
                created.map(drop)
            }
            Write::Patch => {
                let target = Target { kind, namespace, name: Some(decision.name.clone()) };
                let patched =
                    self.objects.patch(&target, decision.patch(), PatchKind::Merge, Subresource::Main, &options).await;
                patched.map(drop)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::metrics::Metrics;
    use crate::objects::{DeleteOptions, ListOptions};
    use crate::store::redb::{RedbConfig, RedbStore};

    async fn objects(dir: &std::path::Path) -> Objects {
        let store =
            RedbStore::open(&dir.join("store.redb"), RedbConfig::default(), Metrics::new().store).expect("store opens");
        let objects = Objects::new(Arc::new(store));
        crate::controller::namespace::ensure_built_in(&objects).await.expect("namespaces");
        objects
    }

    async fn events(objects: &Objects) -> Vec<Value> {
        let kind = wasmkube_api::kinds::by_resource("", "v1", "events").expect("events");
        let all = Target { kind, namespace: Some("default".into()), name: None };
        let listed = objects.list(&all, &ListOptions::default()).await.expect("list");
        listed["items"].as_array().cloned().unwrap_or_default()
    }

    fn pod() -> InvolvedObject {
        InvolvedObject {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
            resource_version: None,
        }
    }

    #[tokio::test]
    async fn repeated_events_count_up_one_event_and_a_deleted_one_is_created_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = objects(dir.path()).await;
        let recorder = Recorder::new(objects.clone()).for_component("default-scheduler");
        for _ in 0..3 {
            recorder.event(pod(), EventType::Warning, "FailedScheduling", "0/1 nodes are available").await;
        }
        recorder.event(pod(), EventType::Normal, "Scheduled", "Successfully assigned default/web to n").await;
        let mut recorded = events(&objects).await;
        recorded.sort_by_key(|e| e["reason"].as_str().map(str::to_string));
        let summary: Vec<(&str, i64)> =
            recorded.iter().map(|e| (e["reason"].as_str().unwrap_or(""), e["count"].as_i64().unwrap_or(0))).collect();
        assert_eq!(summary, [("FailedScheduling", 3), ("Scheduled", 1)]);
        assert_eq!(recorded[0]["source"]["component"], "default-scheduler");

        // Someone deletes the Event: the next occurrence's patch finds nothing and creates it anew.
        let kind = wasmkube_api::kinds::by_resource("", "v1", "events").expect("events");
        let name = recorded[0]["metadata"]["name"].as_str().map(str::to_string);
        let target = Target { kind, namespace: Some("default".into()), name };
        objects.delete(&target, &DeleteOptions::default()).await.expect("delete");
        recorder.event(pod(), EventType::Warning, "FailedScheduling", "0/1 nodes are available").await;
        let again: Vec<Value> =
            events(&objects).await.into_iter().filter(|e| e["reason"] == "FailedScheduling").collect();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0]["count"], 1);
        assert_ne!(again[0]["metadata"]["name"], recorded[0]["metadata"]["name"]);
    }
}
