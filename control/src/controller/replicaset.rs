//! The ReplicaSet controller: keeps `spec.replicas` pods matching each ReplicaSet's selector
//! alive, and always writes its status.
//!
//! A sync reads the ReplicaSet and its namespace's pods as they are now (level-triggered): it
//! adopts matching orphans and releases owned pods that stopped matching (ownerReferences), then
//! creates missing pods from the template in slow-start batches (1, 2, 4, …, so a template that
//! cannot be created fails fast) or deletes surplus ones, choosing victims as Kubernetes does
//! (unscheduled, then pending, then not ready, then the newest). Kubernetes guards against double
//! creates with "expectations" because its informer caches lag its own writes; this controller
//! reads the store directly, and those reads are linearizable, so each sync sees every pod the
//! previous one created and no expectations are needed. Each pod created or deleted is an Event on
//! the ReplicaSet (`SuccessfulCreate`, `SuccessfulDelete`; `FailedCreate`, `FailedDelete`).
//!
//! Kubernetes leaves running pods alone when the template changes. A template that opts in to
//! in-place swaps (`wasmkube.dev/hot-swap: "true"`, as `wasmkube dev` applies them) is the
//! exception: its pods that opted in too are given the template's container images, and their
//! agents swap those containers in place (`SwappingInPlace` events). A Deployment's in-place
//! swap works through this, by changing its current ReplicaSet's images.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wasmkube_api::events::{EventType, InvolvedObject};
use wasmkube_api::kinds;
use wasmkube_api::meta;
use wasmkube_api::selector::LabelSelector;

use super::deployment::template::opts_in;
use super::{Changes, list_typed};
use crate::events::Recorder;
use crate::objects::{DeleteOptions, Objects, PatchKind, Subresource, Target, WriteOptions};
use crate::status::ApiError;

/// The component events are reported under.
pub const COMPONENT: &str = "replicaset-controller";
/// Pods a sync creates at most (Kubernetes' burstReplicas).
const BURST: usize = 500;
/// How soon a ReplicaSet is looked at again while it is not yet where it should be.
const REQUEUE: Duration = Duration::from_secs(1);
/// How long a burst of writes is gathered into one pass.
const BATCH: Duration = Duration::from_millis(5);

fn kind(group: &str, version: &str, resource: &str) -> &'static wasmkube_api::Kind {
    kinds::by_resource(group, version, resource).expect("built-in kinds are registered")
}

fn replica_sets() -> &'static wasmkube_api::Kind {
    kind("apps", "v1", "replicasets")
}

fn pods() -> &'static wasmkube_api::Kind {
    kind("", "v1", "pods")
}

/// Runs until `cancel` fires.
pub async fn run(objects: Objects, events: Recorder, cancel: CancellationToken) {
    let events = events.for_component(COMPONENT);
    // Every pod write counts, status included: readiness is what the ReplicaSet's status reports.
    let mut changes = Changes::new(&objects, vec![replica_sets().key_prefix(), pods().key_prefix()]);
    loop {
        let pending = match sync_all(&objects, &events).await {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(error = %e, "replicaset pass failed");
                true
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = changes.next() => {}
            _ = tokio::time::sleep(REQUEUE), if pending => {}
        }
        // Gather a burst of changes (pods reporting status) into one pass.
        changes.settle(BATCH).await;
    }
}

/// Syncs every ReplicaSet; true if some are not settled yet.
async fn sync_all(objects: &Objects, events: &Recorder) -> Result<bool, ApiError> {
    let sets: Vec<ReplicaSet> = list_typed(objects, replica_sets(), None).await?;
    if sets.is_empty() {
        return Ok(false);
    }
    let all_pods: Vec<Pod> = list_typed(objects, pods(), None).await?;
    let mut by_namespace: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for pod in all_pods {
        by_namespace.entry(pod.metadata.namespace.clone().unwrap_or_default()).or_default().push(pod);
    }
    let mut pending = false;
    for rs in &sets {
        let namespace = rs.metadata.namespace.clone().unwrap_or_default();
        let pods = by_namespace.get(&namespace).map(Vec::as_slice).unwrap_or_default();
        match sync(objects, events, rs, pods).await {
            Ok(settled) => pending |= !settled,
            Err(e) => {
                tracing::warn!(error = %e, replicaset = ?rs.metadata.name, "replicaset sync failed");
                pending = true;
            }
        }
    }
    Ok(pending)
}

fn selector_of(rs: &ReplicaSet) -> Option<LabelSelector> {
    let selector = serde_json::to_value(&rs.spec.as_ref()?.selector).ok()?;
    LabelSelector::from_spec(&selector).ok().filter(|s| !s.is_empty())
}

fn labels_of(pod: &Pod) -> serde_json::Map<String, Value> {
    pod.metadata.labels.iter().flatten().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect()
}

fn owner_uid(pod: &Pod) -> Option<&str> {
    pod.metadata.owner_references.iter().flatten().find(|r| r.controller == Some(true)).map(|r| r.uid.as_str())
}

fn active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// One ReplicaSet; true when it has the pods it wants.
async fn sync(objects: &Objects, events: &Recorder, rs: &ReplicaSet, namespace_pods: &[Pod]) -> Result<bool, ApiError> {
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let Some(selector) = selector_of(rs) else { return Ok(true) };
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let mut owned: Vec<Pod> = Vec::new();
    for pod in namespace_pods {
        let matches = selector.matches(Some(&labels_of(pod)));
        match owner_uid(pod) {
            Some(owner) if owner == uid => {
                if matches {
                    owned.push(pod.clone());
                } else {
                    release(objects, pod, &uid).await?;
                }
            }
            None if matches && !deleting && active(pod) => {
                adopt(objects, rs, pod).await?;
                owned.push(pod.clone());
            }
            _ => {}
        }
    }
    let live: Vec<Pod> = owned.into_iter().filter(active).collect();
    if !deleting {
        swap_images(objects, events, rs, &live).await?;
    }
    let want = if deleting { 0 } else { rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as usize };
    let settled = match live.len().cmp(&want) {
        std::cmp::Ordering::Less => {
            create_pods(objects, events, rs, (want - live.len()).min(BURST)).await?;
            false
        }
        std::cmp::Ordering::Greater => {
            for victim in victims(&live, live.len() - want) {
                delete_pod(objects, events, rs, victim).await?;
            }
            false
        }
        std::cmp::Ordering::Equal => true,
    };
    write_status(objects, rs, &live).await?;
    Ok(settled && live.iter().all(ready))
}

/// The pods to delete when scaling down by `count`, most expendable first: unscheduled, then
/// pending, then not ready, then the newest.
pub fn victims(pods: &[Pod], count: usize) -> Vec<&Pod> {
    let mut ranked: Vec<&Pod> = pods.iter().collect();
    ranked.sort_by_key(|p| {
        let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
        let phase_rank = match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Pending") | None => 0,
            Some("Unknown") => 1,
            _ => 2,
        };
        let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        // Newest first among equals: a reversed creation time sorts later timestamps first.
        (scheduled, phase_rank, ready(p), std::cmp::Reverse(created))
    });
    ranked.into_iter().take(count).collect()
}

async fn create_pods(objects: &Objects, events: &Recorder, rs: &ReplicaSet, count: usize) -> Result<(), ApiError> {
    let namespace = rs.metadata.namespace.clone().unwrap_or_default();
    let name = rs.metadata.name.clone().unwrap_or_default();
    let template = rs.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
    let template = serde_json::to_value(&template).map_err(|e| ApiError::Internal(e.to_string()))?;
    let target = Target { kind: pods(), namespace: Some(namespace), name: None };
    let mut created = 0;
    let mut batch = 1;
    while created < count {
        let this_batch = batch.min(count - created);
        let results = futures::future::join_all((0..this_batch).map(|_| {
            let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": template.get("metadata").cloned().unwrap_or_else(|| json!({})),
                "spec": template.get("spec").cloned().unwrap_or_else(|| json!({}))});
            pod["metadata"]["generateName"] = json!(format!("{name}-"));
            pod["metadata"]["ownerReferences"] = json!([owner_reference(rs)]);
            let target = &target;
            async move { objects.create(target, pod, &WriteOptions::default()).await }
        }))
        .await;
        let mut failed = None;
        for result in results {
            let (type_, reason, message) = match result {
                Ok(written) => {
                    (EventType::Normal, "SuccessfulCreate", format!("Created pod: {}", meta::name(&written.object)))
                }
                Err(e) => {
                    let message = format!("Error creating: {e}");
                    failed.get_or_insert(e);
                    (EventType::Warning, "FailedCreate", message)
                }
            };
            events.event(InvolvedObject::of(rs), type_, reason, &message).await;
        }
        if let Some(e) = failed {
            return Err(e);
        }
        created += this_batch;
        batch *= 2;
    }
    Ok(())
}

/// Gives each opted-in pod the images of an opted-in template, where they differ.
async fn swap_images(objects: &Objects, events: &Recorder, rs: &ReplicaSet, live: &[Pod]) -> Result<(), ApiError> {
    let Some(template) = rs.spec.as_ref().and_then(|s| s.template.as_ref()) else { return Ok(()) };
    if !opts_in(template.metadata.as_ref()) {
        return Ok(());
    }
    let wanted: BTreeMap<&str, &str> = template
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| (c.name.as_str(), c.image.as_deref().unwrap_or_default()))
        .collect();
    for pod in live.iter().filter(|p| p.metadata.deletion_timestamp.is_none() && opts_in(Some(&p.metadata))) {
        let changes: Vec<(&str, &str)> = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .filter_map(|c| {
                let image = *wanted.get(c.name.as_str())?;
                (c.image.as_deref() != Some(image)).then_some((c.name.as_str(), image))
            })
            .collect();
        if changes.is_empty() {
            continue;
        }
        let containers: Vec<Value> =
            changes.iter().map(|(name, image)| json!({"name": name, "image": image})).collect();
        let patch = json!({"spec": {"containers": containers}});
        let patched = objects
            .patch(&pod_target(pod), patch, PatchKind::Strategic, Subresource::Main, &WriteOptions::default())
            .await;
        let images: Vec<String> = changes.iter().map(|(name, image)| format!("{name}={image}")).collect();
        let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
        let message = format!("Swapping {} in place in pod: {pod_name}", images.join(", "));
        match patched {
            Ok(_) => events.event(InvolvedObject::of(rs), EventType::Normal, "SwappingInPlace", &message).await,
            // A pod deleted meanwhile needs nothing; its replacement comes from the template.
            Err(e) => ignore_races(Err::<(), _>(e))?,
        }
    }
    Ok(())
}

fn owner_reference(rs: &ReplicaSet) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs.metadata.name, "uid": rs.metadata.uid,
           "controller": true, "blockOwnerDeletion": true})
}

fn pod_target(pod: &Pod) -> Target {
    Target { kind: pods(), namespace: pod.metadata.namespace.clone(), name: pod.metadata.name.clone() }
}

async fn adopt(objects: &Objects, rs: &ReplicaSet, pod: &Pod) -> Result<(), ApiError> {
    let mut refs: Vec<Value> =
        pod.metadata.owner_references.iter().flatten().filter_map(|r| serde_json::to_value(r).ok()).collect();
    refs.push(owner_reference(rs));
    let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": pod.metadata.resource_version}});
    ignore_races(
        objects.patch(&pod_target(pod), patch, PatchKind::Merge, Subresource::Main, &WriteOptions::default()).await,
    )
}

async fn release(objects: &Objects, pod: &Pod, owner: &str) -> Result<(), ApiError> {
    let refs: Vec<Value> = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != owner)
        .filter_map(|r| serde_json::to_value(r).ok())
        .collect();
    let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": pod.metadata.resource_version}});
    ignore_races(
        objects.patch(&pod_target(pod), patch, PatchKind::Merge, Subresource::Main, &WriteOptions::default()).await,
    )
}

async fn delete_pod(objects: &Objects, events: &Recorder, rs: &ReplicaSet, pod: &Pod) -> Result<(), ApiError> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    match objects.delete(&pod_target(pod), &DeleteOptions::default()).await {
        Ok(_) => {
            let message = format!("Deleted pod: {name}");
            events.event(InvolvedObject::of(rs), EventType::Normal, "SuccessfulDelete", &message).await;
            Ok(())
        }
        // Changed or gone meanwhile: the next sync's business, as in `ignore_races`.
        Err(ApiError::Conflict { .. } | ApiError::NotFound { .. }) => Ok(()),
        Err(e) => {
            let message = format!("Error deleting: {e}");
            events.event(InvolvedObject::of(rs), EventType::Warning, "FailedDelete", &message).await;
            Err(e)
        }
    }
}

/// A pod that changed or went meanwhile is the next sync's business.
fn ignore_races<T>(result: Result<T, ApiError>) -> Result<(), ApiError> {
    match result {
        Ok(_) | Err(ApiError::Conflict { .. } | ApiError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The status Kubernetes reports for a ReplicaSet with these live pods.
pub fn status(rs: &ReplicaSet, live: &[Pod]) -> Value {
    let template_labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = live
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            template_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .count();
    let ready_count = live.iter().filter(|p| ready(p)).count();
    let min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0).max(0);
    let now = jiff::Timestamp::now();
    let available = live
        .iter()
        .filter(|p| ready(p))
        .filter(|p| {
            if min_ready == 0 {
                return true;
            }
            let since = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0);
            since.is_some_and(|t| now.duration_since(t).as_secs() >= i64::from(min_ready))
        })
        .count();
    json!({
        "replicas": live.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": ready_count,
        "availableReplicas": available,
        "observedGeneration": rs.metadata.generation.unwrap_or(0),
    })
}

async fn write_status(objects: &Objects, rs: &ReplicaSet, live: &[Pod]) -> Result<(), ApiError> {
    let status = status(rs, live);
    let current = serde_json::to_value(&rs.status).unwrap_or(Value::Null);
    let unchanged = ["replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas", "observedGeneration"]
        .iter()
        .all(|k| current.get(*k).cloned().unwrap_or(json!(0)) == status[*k]);
    if unchanged {
        return Ok(());
    }
    let target =
        Target { kind: replica_sets(), namespace: rs.metadata.namespace.clone(), name: rs.metadata.name.clone() };
    ignore_races(
        objects
            .patch(&target, json!({"status": status}), PatchKind::Merge, Subresource::Status, &WriteOptions::default())
            .await,
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Event;

    use super::*;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .expect("pod")
    }

    #[test]
    fn victims_are_unscheduled_then_pending_then_not_ready_then_newest() {
        let pods = vec![
            pod("old-ready", Some("n"), "Running", true, "2026-01-01T00:00:00Z"),
            pod("new-ready", Some("n"), "Running", true, "2026-01-02T00:00:00Z"),
            pod("not-ready", Some("n"), "Running", false, "2026-01-01T00:00:00Z"),
            pod("pending", Some("n"), "Pending", false, "2026-01-01T00:00:00Z"),
            pod("unscheduled", None, "Pending", false, "2026-01-01T00:00:00Z"),
        ];
        let order: Vec<&str> = victims(&pods, 5).iter().map(|p| p.metadata.name.as_deref().unwrap_or("")).collect();
        assert_eq!(order, ["unscheduled", "pending", "not-ready", "new-ready", "old-ready"]);
        assert_eq!(victims(&pods, 2).len(), 2);
    }

    #[test]
    fn status_counts_ready_and_available_pods() {
        let rs: ReplicaSet = serde_json::from_value(json!({"metadata": {"name": "rs", "generation": 3},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "a"}},
                     "template": {"metadata": {"labels": {"app": "a"}}}}}))
        .expect("rs");
        let live = vec![
            pod("a", Some("n"), "Running", true, "2026-01-01T00:00:00Z"),
            pod("b", Some("n"), "Running", false, "2026-01-01T00:00:00Z"),
        ];
        let s = status(&rs, &live);
        assert_eq!(
            (s["replicas"].as_u64(), s["readyReplicas"].as_u64(), s["availableReplicas"].as_u64()),
            (Some(2), Some(1), Some(1))
        );
        assert_eq!(s["observedGeneration"], 3);
        assert_eq!(s["fullyLabeledReplicas"], 0, "the test pods carry no labels");
    }

    /// `(reason, message, involvedObject kind/apiVersion/name, source component)` of every Event.
    async fn events(objects: &Objects) -> Vec<[String; 6]> {
        let listed: Vec<Event> =
            list_typed(objects, kind("", "v1", "events"), Some("default")).await.expect("events list");
        listed
            .into_iter()
            .map(|e| {
                let o = e.involved_object;
                let component = e.source.and_then(|s| s.component);
                [e.reason, e.message, o.kind, o.api_version, o.name, component].map(Option::unwrap_or_default)
            })
            .collect()
    }

    async fn wait_for_events(objects: &Objects, reason: &str, count: usize) -> Vec<[String; 6]> {
        for _ in 0..500 {
            let matching: Vec<[String; 6]> = events(objects).await.into_iter().filter(|e| e[0] == reason).collect();
            if matching.len() >= count {
                return matching;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no {count} {reason} events in {:?}", events(objects).await);
    }

    async fn objects(dir: &tempfile::TempDir) -> Objects {
        let store = crate::store::redb::RedbStore::open(
            &dir.path().join("store.redb"),
            crate::store::redb::RedbConfig::default(),
            crate::metrics::Metrics::new().store,
        )
        .expect("store opens");
        let objects = Objects::new(std::sync::Arc::new(store));
        crate::controller::namespace::ensure_built_in(&objects).await.expect("namespaces");
        objects
    }

    async fn images_of_pods(objects: &Objects) -> Vec<String> {
        let pods: Vec<Pod> = list_typed(objects, pods(), Some("default")).await.expect("pods");
        pods.iter().flat_map(|p| p.spec.iter().flat_map(|s| &s.containers)).filter_map(|c| c.image.clone()).collect()
    }

    #[tokio::test]
    async fn an_opted_in_template_gives_its_new_images_to_the_pods_it_has() {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = objects(&dir).await;
        let collection = Target { kind: replica_sets(), namespace: Some("default".into()), name: None };
        for (name, annotations) in [("swaps", json!({"wasmkube.dev/hot-swap": "true"})), ("rolls", json!({}))] {
            let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name, "namespace": "default"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}, "annotations": annotations},
                                      "spec": {"containers": [{"name": "c", "image": format!("{name}:1")}]}}}});
            objects.create(&collection, rs, &WriteOptions::default()).await.expect("create the replica set");
        }
        let cancel = CancellationToken::new();
        let controller = tokio::spawn(run(objects.clone(), Recorder::new(objects.clone()), cancel.clone()));
        wait_for_events(&objects, "SuccessfulCreate", 4).await;

        for name in ["swaps", "rolls"] {
            let one = Target { name: Some(name.into()), ..collection.clone() };
            let image =
                json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": format!("{name}:2")}]}}}});
            objects
                .patch(&one, image, PatchKind::Strategic, Subresource::Main, &WriteOptions::default())
                .await
                .expect("patch");
        }
        let swapping = wait_for_events(&objects, "SwappingInPlace", 2).await;
        assert!(
            swapping.iter().all(|e| e[1].starts_with("Swapping c=swaps:2 in place in pod: swaps-")),
            "{swapping:?}"
        );
        let mut images = images_of_pods(&objects).await;
        images.sort();
        // The same four pods: the opted-in ones run the new image, the others keep theirs.
        assert_eq!(images, ["rolls:1", "rolls:1", "swaps:2", "swaps:2"]);
        cancel.cancel();
        controller.await.expect("the controller stops");
    }

    #[tokio::test]
    async fn creating_and_deleting_pods_are_events_on_the_replica_set() {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = objects(&dir).await;
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let collection = Target { kind: replica_sets(), namespace: Some("default".into()), name: None };
        objects.create(&collection, rs, &WriteOptions::default()).await.expect("create the replica set");
        let cancel = CancellationToken::new();
        let controller = tokio::spawn(run(objects.clone(), Recorder::new(objects.clone()), cancel.clone()));

        let created = wait_for_events(&objects, "SuccessfulCreate", 2).await;
        assert_eq!(created.len(), 2, "{created:?}");
        for [_, message, kind, api_version, name, component] in &created {
            assert!(message.starts_with("Created pod: web-"), "{message}");
            assert_eq!([kind, api_version, name, component], ["ReplicaSet", "apps/v1", "web", COMPONENT]);
        }

        let one = Target { name: Some("web".into()), ..collection };
        let scale = json!({"spec": {"replicas": 1}});
        objects.patch(&one, scale, PatchKind::Merge, Subresource::Main, &WriteOptions::default()).await.expect("scale");
        let deleted = wait_for_events(&objects, "SuccessfulDelete", 1).await;
        let victim = deleted[0][1].trim_start_matches("Deleted pod: ");
        assert!(created.iter().any(|e| e[1] == format!("Created pod: {victim}")), "{deleted:?} {created:?}");
        cancel.cancel();
        controller.await.expect("the controller stops");
    }
}
