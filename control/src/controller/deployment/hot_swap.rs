//! In-place image swaps for Deployments whose pod template opts in (`wasmkube.dev/hot-swap:
//! "true"`, which `wasmkube dev` sets). When the template differs from the newest ReplicaSet's
//! only in container images, no new ReplicaSet is rolled out: that ReplicaSet's template takes
//! the new images (keeping its name and `pod-template-hash`, so it stays the Deployment's current
//! one) and so do its pods, whose agents then swap each container's version in place
//! (`runtime::agent::hot_swap`). Anything else changing rolls out as usual.

use serde_json::json;
use wasmkube_api::events::EventType;

use super::{DeploymentSync, SyncError, kind, label_selector, labels_of, list_typed, template};
use crate::objects::{PatchKind, Subresource, Target, WriteOptions};

impl DeploymentSync<'_> {
    /// Swaps the new template's images into the newest ReplicaSet and its pods when the template
    /// opted in and changed only in images; that ReplicaSet's index, else `None`.
    pub(super) async fn swap_in_place(&mut self) -> Result<Option<usize>, SyncError> {
        if !template::hot_swap(&self.spec.template) {
            return Ok(None);
        }
        let newest = (0..self.owned.len())
            .filter(|i| self.owned[*i].spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0)
            .max_by_key(|i| template::revision(self.owned[*i].metadata.annotations.as_ref()).unwrap_or(0));
        let Some(i) = newest else { return Ok(None) };
        let Some(current) = self.owned[i].spec.as_ref().and_then(|s| s.template.clone()) else { return Ok(None) };
        let Some(changes) = template::image_changes(&current, &self.spec.template) else { return Ok(None) };
        let name = self.owned[i].metadata.name.clone().unwrap_or_default();

        // The ReplicaSet first: pods it creates from now on run the new images.
        let containers: Vec<_> = changes.iter().map(|(c, image)| json!({"name": c, "image": image})).collect();
        let patch = json!({"spec": {"template": {"spec": {"containers": containers}}}});
        let rs_target = Target {
            kind: kind("apps", "replicasets"),
            namespace: Some(self.namespace.clone()),
            name: Some(name.clone()),
        };
        let written = self
            .objects
            .patch(&rs_target, patch.clone(), PatchKind::Strategic, Subresource::Main, &WriteOptions::default())
            .await
            .map_err(|source| SyncError::UpdateReplicaSet { name: name.clone(), source })?;
        self.owned[i] = serde_json::from_value(written.object).map_err(|e| SyncError::UpdateReplicaSet {
            name: name.clone(),
            source: crate::status::ApiError::Internal(e.to_string()),
        })?;

        // Then the pods it controls: their agents swap the containers in place.
        let uid = self.owned[i].metadata.uid.clone().unwrap_or_default();
        let selector = label_selector(&self.spec.selector);
        let pods: Vec<k8s_openapi::api::core::v1::Pod> =
            list_typed(self.objects, kind("", "pods"), Some(&self.namespace)).await.map_err(SyncError::ListPods)?;
        let ours = pods.into_iter().filter(|p| {
            selector.as_ref().is_some_and(|s| s.matches(Some(&labels_of(&p.metadata))))
                && p.metadata.owner_references.iter().flatten().any(|r| r.controller == Some(true) && r.uid == uid)
                && p.metadata.deletion_timestamp.is_none()
        });
        let pod_patch = json!({"spec": {"containers": containers}});
        let mut swapped = 0;
        for pod in ours {
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            let target =
                Target { kind: kind("", "pods"), namespace: Some(self.namespace.clone()), name: Some(pod_name) };
            // A pod gone meanwhile needs nothing; its replacement comes from the new template.
            if self
                .objects
                .patch(&target, pod_patch.clone(), PatchKind::Strategic, Subresource::Main, &WriteOptions::default())
                .await
                .is_ok()
            {
                swapped += 1;
            }
        }
        let images: Vec<String> = changes.iter().map(|(c, image)| format!("{c}={image}")).collect();
        let message = format!("Swapping {} in place in replica set {name} ({swapped} pods)", images.join(", "));
        self.event(EventType::Normal, "SwappingInPlace", &message).await;
        Ok(Some(i))
    }
}
