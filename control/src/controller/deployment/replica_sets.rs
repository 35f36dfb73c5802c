//! A Deployment sync's work on its ReplicaSets: claiming them (ownerReferences), creating the
//! one for the current template, scaling, pruning old history, and finding their pods. Each
//! write carries the ReplicaSet's resourceVersion, so a decision made on a ReplicaSet that changed
//! meanwhile fails with Conflict and is made again by the next pass instead of being applied
//! stale.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ReplicaSet;
use serde_json::{Value, json};
use wasmkube_api::events::EventType;
use wasmkube_api::selector::LabelSelector;

use super::rollout::{self, ReplicaSetView, ScaleOp, Verb};
use super::status::{self, PROGRESSING, reason};
use super::{
    DeploymentSync, SyncError, kind, label_selector, labels_of, list_typed, replica_sets, spec_replicas, template, view,
};
use crate::objects::{DeleteOptions, PatchKind, Subresource, Target, WriteOptions};
use crate::status::ApiError;

fn decode(object: Value) -> Result<ReplicaSet, ApiError> {
    serde_json::from_value(object).map_err(|e| ApiError::Internal(format!("a stored replica set does not decode: {e}")))
}

fn name_of(rs: &ReplicaSet) -> String {
    rs.metadata.name.clone().unwrap_or_default()
}

impl DeploymentSync<'_> {
    fn rs_target(&self, name: &str) -> Target {
        Target { kind: replica_sets(), namespace: Some(self.namespace.clone()), name: Some(name.to_string()) }
    }

    fn controller_ref(&self) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": self.name, "uid": self.d.metadata.uid,
               "controller": true, "blockOwnerDeletion": true})
    }

    /// Merge-patches ReplicaSet `i`, guarded by the resourceVersion it was read at, and keeps
    /// the result.
    async fn patch_rs(&mut self, i: usize, mut patch: Value) -> Result<(), ApiError> {
        patch["metadata"]["resourceVersion"] = json!(self.owned[i].metadata.resource_version);
        let target = self.rs_target(&name_of(&self.owned[i]));
        let written =
            self.objects.patch(&target, patch, PatchKind::Merge, Subresource::Main, &WriteOptions::default()).await?;
        self.owned[i] = decode(written.object)?;
        Ok(())
    }

    /// `ClaimReplicaSets`: the namespace's ReplicaSets this Deployment controls and still selects;
    /// matching orphans are adopted, controlled ones that stopped matching released. A Deployment
    /// being deleted neither adopts nor releases. (Kubernetes re-reads the Deployment before
    /// adopting because its cache may be stale; ours was read from the store this pass.)
    pub(super) async fn claim(&mut self, selector: &LabelSelector, candidates: &[ReplicaSet]) -> Result<(), SyncError> {
        let uid = self.d.metadata.uid.clone().unwrap_or_default();
        let deleting = self.d.metadata.deletion_timestamp.is_some();
        for rs in candidates {
            let matches = selector.matches(Some(&labels_of(&rs.metadata)));
            let refs = rs.metadata.owner_references.clone().unwrap_or_default();
            let claim_error = |source| SyncError::Claim { name: name_of(rs), source };
            match refs.iter().find(|r| r.controller == Some(true)) {
                Some(r) if r.uid == uid && matches => self.owned.push(rs.clone()),
                Some(r) if r.uid == uid && !deleting => {
                    let kept: Vec<_> = refs.iter().filter(|r| r.uid != uid).collect();
                    let kept = if kept.is_empty() { json!(null) } else { json!(kept) };
                    let patch = json!({"metadata": {"ownerReferences": kept,
                        "resourceVersion": rs.metadata.resource_version}});
                    self.write_rs(rs, patch).await.map_err(claim_error)?;
                    tracing::info!(replicaset = %name_of(rs), "released a replica set that no longer matches");
                }
                None if matches && !deleting && rs.metadata.deletion_timestamp.is_none() => {
                    let mut all = serde_json::to_value(&refs).unwrap_or_else(|_| json!([]));
                    if let Some(list) = all.as_array_mut() {
                        list.push(self.controller_ref());
                    }
                    let patch =
                        json!({"metadata": {"ownerReferences": all, "resourceVersion": rs.metadata.resource_version}});
                    let adopted = self.write_rs(rs, patch).await.map_err(claim_error)?;
                    tracing::info!(replicaset = %name_of(rs), "adopted an orphan replica set");
                    self.owned.push(adopted);
                }
                _ => {}
            }
        }
        self.owned.sort_by(|a, b| rollout::by_creation(&view(a), &view(b)));
        Ok(())
    }

    async fn write_rs(&self, rs: &ReplicaSet, patch: Value) -> Result<ReplicaSet, ApiError> {
        let target = self.rs_target(&name_of(rs));
        let written =
            self.objects.patch(&target, patch, PatchKind::Merge, Subresource::Main, &WriteOptions::default()).await?;
        decode(written.object)
    }

    /// `getNewReplicaSet`: the ReplicaSet of the current template, its annotations brought up to
    /// date (a set made current again by a rollback gets the next revision); created when missing
    /// and `create` is set.
    pub(super) async fn new_replica_set(&mut self, create: bool) -> Result<Option<usize>, SyncError> {
        let new = self.find_new();
        let old_views: Vec<ReplicaSetView> = self.old_of(new).into_iter().map(|i| view(&self.owned[i])).collect();
        let new_revision = rollout::max_revision(&old_views.iter().collect::<Vec<_>>()) + 1;
        match new {
            Some(i) => {
                self.refresh_new(i, new_revision).await?;
                Ok(Some(i))
            }
            None if create => match self.swap_in_place().await? {
                Some(i) => {
                    // Still the same ReplicaSet: its revision stays unless a newer one exists.
                    let others: Vec<ReplicaSetView> =
                        self.old_of(Some(i)).into_iter().map(|j| view(&self.owned[j])).collect();
                    let revision = rollout::max_revision(&others.iter().collect::<Vec<_>>()) + 1;
                    self.refresh_new(i, revision).await?;
                    Ok(Some(i))
                }
                None => self.create_new(new_revision, &old_views).await.map(Some),
            },
            None => Ok(None),
        }
    }

    async fn refresh_new(&mut self, i: usize, new_revision: i64) -> Result<(), SyncError> {
        let rs = &self.owned[i];
        let mut annotations = rs.metadata.annotations.clone().unwrap_or_default();
        let deployment_annotations = self.d.metadata.annotations.clone().unwrap_or_default();
        let changed =
            template::set_new_rs_annotations(&deployment_annotations, &mut annotations, new_revision, true, (0, 0));
        let min_ready = self.spec.min_ready_seconds.unwrap_or(0);
        if changed || rs.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0) != min_ready {
            let name = name_of(rs);
            let patch = json!({"metadata": {"annotations": annotations}, "spec": {"minReadySeconds": min_ready}});
            self.patch_rs(i, patch).await.map_err(|source| SyncError::UpdateReplicaSet { name, source })?;
        }
        let revision = self.owned[i].metadata.annotations.as_ref().and_then(|a| a.get(template::REVISION)).cloned();
        self.set_revision(&revision.unwrap_or_default()).await?;
        if self.deadline().is_some() && status::get(&self.status, PROGRESSING).is_none() {
            let message = format!("Found new replica set {:?}", name_of(&self.owned[i]));
            let cond = status::condition(PROGRESSING, "True", reason::FOUND_NEW_RS, message, self.now);
            status::set(&mut self.status, cond);
        }
        Ok(())
    }

    /// Creates `<deployment>-<pod-template-hash>` from the current template. A name taken by a
    /// ReplicaSet with another template is a hash collision: `collisionCount` goes up, so the
    /// next pass hashes to another name.
    async fn create_new(&mut self, new_revision: i64, old: &[ReplicaSetView]) -> Result<usize, SyncError> {
        let hash = template::pod_template_hash(&self.spec.template, self.status.collision_count);
        let name = format!("{}-{hash}", self.name);
        let mut pod_template = self.spec.template.clone();
        let meta = pod_template.metadata.get_or_insert_with(Default::default);
        meta.labels.get_or_insert_with(BTreeMap::new).insert(template::HASH_LABEL.into(), hash.clone());
        let labels = meta.labels.clone();
        let mut selector = self.spec.selector.clone();
        selector.match_labels.get_or_insert_with(BTreeMap::new).insert(template::HASH_LABEL.into(), hash);

        let empty = ReplicaSetView { name: name.clone(), ..Default::default() };
        let all: Vec<&ReplicaSetView> = old.iter().chain([&empty]).collect();
        let replicas = rollout::new_rs_new_replicas(&self.plan, &all, &empty);
        let mut annotations = BTreeMap::new();
        let sizes = (self.plan.replicas, self.plan.replicas + self.plan.max_surge());
        let deployment_annotations = self.d.metadata.annotations.clone().unwrap_or_default();
        template::set_new_rs_annotations(&deployment_annotations, &mut annotations, new_revision, false, sizes);
        let body = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels, "annotations": annotations,
                         "ownerReferences": [self.controller_ref()]},
            "spec": {"replicas": replicas, "minReadySeconds": self.spec.min_ready_seconds.unwrap_or(0),
                     "selector": selector, "template": pod_template}});
        let collection = Target { kind: replica_sets(), namespace: Some(self.namespace.clone()), name: None };
        let (index, created) = match self.objects.create(&collection, body, &WriteOptions::default()).await {
            Ok(written) => {
                let rs = decode(written.object).map_err(|source| SyncError::Create { name: name.clone(), source })?;
                self.owned.push(rs);
                (self.owned.len() - 1, true)
            }
            Err(ApiError::AlreadyExists { .. }) => (self.existing_new(&name).await?, false),
            // A terminating namespace takes no new objects; nothing to report on the Deployment.
            Err(source @ (ApiError::Forbidden { .. } | ApiError::NamespaceNotFound(_))) => {
                return Err(SyncError::Create { name, source });
            }
            Err(source) => {
                let message = format!("Failed to create new replica set {name:?}: {source}");
                if self.deadline().is_some() {
                    let cond =
                        status::condition(PROGRESSING, "False", reason::FAILED_RS_CREATE, message.clone(), self.now);
                    status::set(&mut self.status, cond);
                    // The failure to report matters more than a failure to report it.
                    let _ = self.write_status().await;
                }
                self.event(EventType::Warning, reason::FAILED_RS_CREATE, &message).await;
                return Err(SyncError::Create { name, source });
            }
        };
        if created && replicas > 0 {
            self.event(
                EventType::Normal,
                "ScalingReplicaSet",
                &format!("Scaled up replica set {name} from 0 to {replicas}"),
            )
            .await;
        }
        self.set_revision(&new_revision.to_string()).await?;
        if created && self.deadline().is_some() {
            let message = format!("Created new replica set {name:?}");
            status::set(
                &mut self.status,
                status::condition(PROGRESSING, "True", reason::NEW_RS_CREATED, message, self.now),
            );
        }
        Ok(index)
    }

    /// The ReplicaSet already named `name`: ours when this Deployment controls it and it runs the
    /// current template, else a hash collision.
    async fn existing_new(&mut self, name: &str) -> Result<usize, SyncError> {
        let create_error = |source| SyncError::Create { name: name.to_string(), source };
        let existing = self.objects.get(&self.rs_target(name)).await.map_err(create_error)?;
        let existing = decode(existing).map_err(create_error)?;
        let ours = existing
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.controller == Some(true) && Some(&r.uid) == self.d.metadata.uid.as_ref());
        let same = existing
            .spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| template::equal_ignore_hash(t, &self.spec.template));
        if ours && same {
            if let Some(i) = self.owned.iter().position(|rs| rs.metadata.uid == existing.metadata.uid) {
                return Ok(i);
            }
            self.owned.push(existing);
            return Ok(self.owned.len() - 1);
        }
        let count = self.status.collision_count.unwrap_or(0) + 1;
        self.status.collision_count = Some(count);
        self.write_status().await?;
        Err(SyncError::HashCollision { name: name.to_string(), count })
    }

    /// Applies one planned scale to the ReplicaSet it names.
    pub(super) async fn apply(&mut self, op: &ScaleOp) -> Result<bool, SyncError> {
        match self.owned.iter().position(|rs| rs.metadata.name.as_deref() == Some(op.name.as_str())) {
            Some(i) => self.scale(i, op.to, op.verb).await,
            None => Ok(false),
        }
    }

    /// `scaleReplicaSet`: sets ReplicaSet `i` to `to` replicas and its replicas annotations to the
    /// Deployment's current size; records a `ScalingReplicaSet` event when the size changed,
    /// which is what it returns.
    pub(super) async fn scale(&mut self, i: usize, to: i32, verb: Verb) -> Result<bool, SyncError> {
        let rs = &self.owned[i];
        let from = spec_replicas(rs);
        let (desired, max) = (self.plan.replicas, self.plan.replicas + self.plan.max_surge());
        let resized = from != to;
        if !resized && !template::replicas_annotations_need_update(rs.metadata.annotations.as_ref(), desired, max) {
            return Ok(false);
        }
        let name = name_of(rs);
        let patch = json!({"metadata": {"annotations": {
                template::DESIRED_REPLICAS: desired.to_string(), template::MAX_REPLICAS: max.to_string()}},
            "spec": {"replicas": to}});
        self.patch_rs(i, patch).await.map_err(|source| SyncError::UpdateReplicaSet { name: name.clone(), source })?;
        if resized {
            let message = format!("Scaled {} replica set {name} from {from} to {to}", verb.as_str());
            self.event(EventType::Normal, "ScalingReplicaSet", &message).await;
        }
        Ok(resized)
    }

    /// For Recreate: (controlling ReplicaSet's uid, phase) of every pod the Deployment selects
    /// that one of its ReplicaSets controls.
    pub(super) async fn pods_by_owner(&self) -> Result<Vec<(String, Option<String>)>, SyncError> {
        let Some(selector) = label_selector(&self.spec.selector) else { return Ok(Vec::new()) };
        let uids: Vec<&str> = self.owned.iter().filter_map(|rs| rs.metadata.uid.as_deref()).collect();
        let pods: Vec<k8s_openapi::api::core::v1::Pod> =
            list_typed(self.objects, kind("", "pods"), Some(&self.namespace)).await.map_err(SyncError::ListPods)?;
        Ok(pods
            .into_iter()
            .filter(|p| selector.matches(Some(&labels_of(&p.metadata))))
            .filter_map(|p| {
                let owner = p.metadata.owner_references.iter().flatten().find(|r| r.controller == Some(true))?;
                uids.contains(&owner.uid.as_str())
                    .then(|| (owner.uid.clone(), p.status.as_ref().and_then(|s| s.phase.clone())))
            })
            .collect())
    }

    /// `cleanupDeployment`: deletes old ReplicaSets beyond `revisionHistoryLimit`.
    pub(super) async fn prune_history(&mut self, old: &[usize]) -> Result<(), SyncError> {
        let views: Vec<ReplicaSetView> = old.iter().map(|i| view(&self.owned[*i])).collect();
        let refs: Vec<&ReplicaSetView> = views.iter().collect();
        let doomed: Vec<String> = rollout::history_to_prune(self.spec.revision_history_limit, &refs)
            .into_iter()
            .map(|rs| rs.name.clone())
            .collect();
        for name in doomed {
            match self.objects.delete(&self.rs_target(&name), &DeleteOptions::default()).await {
                Ok(_) | Err(ApiError::NotFound { .. }) => tracing::info!(replicaset = %name, "pruned old replica set"),
                Err(source) => return Err(SyncError::Prune { name, source }),
            }
        }
        Ok(())
    }
}
