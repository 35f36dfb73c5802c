//! In-place image swaps for Deployments whose pod template opts in (`wasmkube.dev/hot-swap:
//! "true"`, which `wasmkube dev` sets). When the template differs from the newest ReplicaSet's
//! only in container images, no new ReplicaSet is rolled out: that ReplicaSet's template takes
//! the new images (keeping its name and `pod-template-hash`, so it stays the Deployment's current
//! one); the ReplicaSet controller passes them on to its pods, whose agents then swap each
//! container's version in place (`runtime::agent::hot_swap`). Anything else changing rolls out
//! as usual.

use serde_json::json;
use wasmkube_api::events::EventType;

use super::{DeploymentSync, SyncError, kind, template};
use crate::objects::{PatchKind, Subresource, Target, WriteOptions};

impl DeploymentSync<'_> {
    /// Swaps the new template's images into the newest ReplicaSet when the template opted in and
    /// changed only in images; that ReplicaSet's index, else `None`.
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

        // Pods it creates from now on run the new images, and the ReplicaSet controller gives
        // them to the pods it has, whose agents swap the containers in place.
        let containers: Vec<_> = changes.iter().map(|(c, image)| json!({"name": c, "image": image})).collect();
        let patch = json!({"spec": {"template": {"spec": {"containers": containers}}}});
        let rs_target = Target {
            kind: kind("apps", "replicasets"),
            namespace: Some(self.namespace.clone()),
            name: Some(name.clone()),
        };
        let written = self
            .objects
            .patch(&rs_target, patch, PatchKind::Strategic, Subresource::Main, &WriteOptions::default())
            .await
            .map_err(|source| SyncError::UpdateReplicaSet { name: name.clone(), source })?;
        self.owned[i] = serde_json::from_value(written.object).map_err(|e| SyncError::UpdateReplicaSet {
            name: name.clone(),
            source: crate::status::ApiError::Internal(e.to_string()),
        })?;

        let images: Vec<String> = changes.iter().map(|(c, image)| format!("{c}={image}")).collect();
        let message = format!("Swapping {} in place in replica set {name}", images.join(", "));
        self.event(EventType::Normal, "SwappingInPlace", &message).await;
        Ok(Some(i))
    }
}
