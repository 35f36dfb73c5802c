//! The Deployment controller: rolls a Deployment's pod template out through ReplicaSets, as
//! kube-controller-manager's does (`pkg/controller/deployment`).
//!
//! A pass reads every Deployment and the ReplicaSets of its namespace as they are now and syncs
//! each Deployment (level-triggered): it claims its ReplicaSets (adopting matching orphans,
//! releasing those that stopped matching), finds or creates the ReplicaSet of its current template
//! (`<name>-<pod-template-hash>`, revision = highest + 1; a rollback makes an old set current and
//! newest again), then takes one step: proportional scaling when `spec.replicas` changed or the
//! Deployment is paused, else a RollingUpdate step (grow the new set within maxSurge, shrink old
//! ones within maxUnavailable) or a Recreate step (old sets to 0, wait for their pods to be gone,
//! then the new set). A complete rollout prunes history beyond `revisionHistoryLimit`. The status
//! is always written.
//!
//! The arithmetic is pure and tested as tables: [`rollout`] (how many replicas where),
//! [`status`] (counts and conditions) and [`template`] (hash, template equality, annotations); the
//! writes to ReplicaSets live in `replica_sets`. Kubernetes needs "expectations" because its
//! informer caches lag behind its own writes; this controller reads the store, whose reads are
//! linearizable, so each pass sees every ReplicaSet the previous one created or scaled.

mod hot_swap;
mod replica_sets;
pub mod rollout;
pub mod status;
pub mod template;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, ReplicaSet};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use wasmkube_api::Kind;
use wasmkube_api::events::{EventType, InvolvedObject};
use wasmkube_api::selector::LabelSelector;

use super::{Changes, beyond_status, describe, list_typed};
use crate::events::Recorder;
use crate::objects::{Objects, PatchKind, Subresource, Target, WriteOptions};
use crate::status::ApiError;
use rollout::{Plan, ReplicaSetView, Strategy, Verb};

pub use template::pod_template_hash;

/// The component events are reported under.
pub const COMPONENT: &str = "deployment-controller";
/// How long a burst of changes (a ReplicaSet's pods reporting in) is gathered into one pass.
const BATCH: Duration = Duration::from_millis(10);
/// How soon a failed or raced sync is tried again.
const RETRY: Duration = Duration::from_secs(1);

fn kind(group: &str, resource: &str) -> &'static Kind {
    wasmkube_api::kinds::by_resource(group, "v1", resource).expect("built-in kinds are registered")
}

fn deployments() -> &'static Kind {
    kind("apps", "deployments")
}

fn replica_sets() -> &'static Kind {
    kind("apps", "replicasets")
}

/// Why one Deployment's sync stopped; the next pass starts over from fresh objects.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("reading the deployment's strategy")]
    Strategy(#[from] rollout::PlanError),
    #[error("adopting or releasing replica set {name}")]
    Claim {
        name: String,
        #[source]
        source: ApiError,
    },
    #[error("creating replica set {name}")]
    Create {
        name: String,
        #[source]
        source: ApiError,
    },
    #[error("replica set {name} exists with another template; collisionCount is now {count}")]
    HashCollision { name: String, count: i32 },
    #[error("updating replica set {name}")]
    UpdateReplicaSet {
        name: String,
        #[source]
        source: ApiError,
    },
    #[error("deleting old replica set {name}")]
    Prune {
        name: String,
        #[source]
        source: ApiError,
    },
    #[error("listing the deployment's pods")]
    ListPods(#[source] ApiError),
    #[error("recording the revision on the deployment")]
    Revision(#[source] ApiError),
    #[error("writing the deployment's status")]
    Status(#[source] ApiError),
}

impl SyncError {
    /// Lost a race with another writer (or a hash collision, already counted): expected, and
    /// settled by the next pass.
    fn is_race(&self) -> bool {
        let source = match self {
            SyncError::HashCollision { .. } => return true,
            SyncError::Strategy(_) => return false,
            SyncError::Claim { source, .. }
            | SyncError::Create { source, .. }
            | SyncError::UpdateReplicaSet { source, .. }
            | SyncError::Prune { source, .. }
            | SyncError::ListPods(source)
            | SyncError::Revision(source)
            | SyncError::Status(source) => source,
        };
        matches!(source, ApiError::Conflict { .. } | ApiError::NotFound { .. } | ApiError::AlreadyExists { .. })
    }
}

/// Runs until `cancel` fires.
pub async fn run(objects: Objects, events: Recorder, cancel: CancellationToken) {
    let events = events.for_component(COMPONENT);
    let prefixes = [deployments(), replica_sets(), kind("", "pods")].map(Kind::key_prefix).to_vec();
    // Pods matter only as they come and go (Recreate waits for old ones); their status reaches
    // this controller through the ReplicaSets' status.
    let pods = kind("", "pods").key_prefix();
    let mut changes = Changes::filtered(&objects, prefixes, move |e| !e.key.starts_with(&pods) || beyond_status(e));
    loop {
        let next = match sync_all(&objects, &events).await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %describe(&e), "deployment pass failed");
                Some(RETRY)
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = changes.next() => {}
            _ = tokio::time::sleep(next.unwrap_or(RETRY)), if next.is_some() => {}
        }
        changes.settle(BATCH).await;
    }
}

/// Syncs every Deployment; returns how soon one needs looking at without any change (a rollout
/// whose progress deadline is running, or a sync that failed).
async fn sync_all(objects: &Objects, events: &Recorder) -> Result<Option<Duration>, ApiError> {
    let all: Vec<Deployment> = list_typed(objects, deployments(), None).await?;
    if all.is_empty() {
        return Ok(None);
    }
    let mut sets: BTreeMap<String, Vec<ReplicaSet>> = BTreeMap::new();
    for rs in list_typed::<ReplicaSet>(objects, replica_sets(), None).await? {
        sets.entry(rs.metadata.namespace.clone().unwrap_or_default()).or_default().push(rs);
    }
    let mut next: Option<Duration> = None;
    for d in all {
        let namespace = d.metadata.namespace.clone().unwrap_or_default();
        let span = tracing::info_span!("reconcile", deployment = %format!("{namespace}/{}", meta_name(&d)));
        let candidates = sets.get(&namespace).map(Vec::as_slice).unwrap_or_default();
        let after = match DeploymentSync::start(objects, events, d) {
            Ok(sync) => sync.run(candidates).instrument(span).await,
            Err(e) => Err(e),
        };
        let after = match after {
            Ok(after) => after,
            Err(e) => {
                if e.is_race() {
                    tracing::debug!(error = %describe(&e), "deployment sync raced; retrying");
                } else {
                    tracing::warn!(error = %describe(&e), "deployment sync failed");
                }
                Some(RETRY)
            }
        };
        next = match (next, after) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(next)
}

fn meta_name(d: &Deployment) -> String {
    d.metadata.name.clone().unwrap_or_default()
}

/// The selector a structured `LabelSelector` stands for; `None` when it is empty (it would select
/// everything, so Kubernetes refuses to act on it).
fn label_selector(selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> Option<LabelSelector> {
    let raw = serde_json::to_value(selector).ok()?;
    LabelSelector::from_spec(&raw).ok().filter(|s| !s.is_empty())
}

fn labels_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> serde_json::Map<String, Value> {
    meta.labels.iter().flatten().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect()
}

/// What the rollout reads of a ReplicaSet.
fn view(rs: &ReplicaSet) -> ReplicaSetView {
    let annotations = rs.metadata.annotations.as_ref();
    let number = |key: &str| annotations.and_then(|a| a.get(key)).and_then(|v| v.parse().ok());
    let status = rs.status.as_ref();
    ReplicaSetView {
        name: rs.metadata.name.clone().unwrap_or_default(),
        uid: rs.metadata.uid.clone().unwrap_or_default(),
        created: rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
        replicas: spec_replicas(rs),
        status_replicas: status.map_or(0, |s| s.replicas),
        ready: status.and_then(|s| s.ready_replicas).unwrap_or(0),
        available: status.and_then(|s| s.available_replicas).unwrap_or(0),
        revision: template::revision(annotations),
        desired: number(template::DESIRED_REPLICAS),
        max_replicas: number(template::MAX_REPLICAS),
        generation: rs.metadata.generation.unwrap_or(0),
        observed_generation: status.and_then(|s| s.observed_generation).unwrap_or(0),
        deleting: rs.metadata.deletion_timestamp.is_some(),
    }
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// One Deployment's sync: the Deployment as read, its ReplicaSets, the status being built.
struct DeploymentSync<'a> {
    objects: &'a Objects,
    events: &'a Recorder,
    d: Deployment,
    spec: DeploymentSpec,
    name: String,
    namespace: String,
    plan: Plan,
    /// The Deployment's ReplicaSets, oldest first, as last read or written by this sync.
    owned: Vec<ReplicaSet>,
    /// The stored status plus the conditions set along the way.
    status: DeploymentStatus,
    now: Timestamp,
}

impl<'a> DeploymentSync<'a> {
    fn start(objects: &'a Objects, events: &'a Recorder, d: Deployment) -> Result<Self, SyncError> {
        let spec = d.spec.clone().unwrap_or_default();
        let plan = Plan::from_spec(&spec)?;
        Ok(Self {
            objects,
            events,
            name: meta_name(&d),
            namespace: d.metadata.namespace.clone().unwrap_or_default(),
            status: d.status.clone().unwrap_or_default(),
            spec,
            plan,
            d,
            owned: Vec::new(),
            now: status::now(),
        })
    }

    async fn run(mut self, candidates: &[ReplicaSet]) -> Result<Option<Duration>, SyncError> {
        let Some(selector) = label_selector(&self.spec.selector) else {
            // Validation rejects it; a Deployment stored before that is left alone, as Kubernetes does.
            tracing::warn!("the deployment has an empty selector, which would select every pod; not syncing it");
            self.status.observed_generation = self.d.metadata.generation.max(self.status.observed_generation);
            self.write_status().await?;
            return Ok(None);
        };
        self.claim(&selector, candidates).await?;
        if self.d.metadata.deletion_timestamp.is_some() {
            let new = self.find_new();
            return self.finish(new, false).await;
        }
        let paused = self.spec.paused.unwrap_or(false);
        status::set_paused(paused, self.deadline().is_some(), &mut self.status, self.now);
        if paused || self.is_scaling_event() {
            return self.sync_scale(paused).await;
        }
        match self.plan.strategy {
            Strategy::Recreate => self.rollout_recreate().await,
            Strategy::RollingUpdate { .. } => self.rollout_rolling().await,
        }
    }

    fn generation(&self) -> i64 {
        self.d.metadata.generation.unwrap_or(0)
    }

    /// `spec.progressDeadlineSeconds`, unless unset or "never" (MaxInt32).
    fn deadline(&self) -> Option<i32> {
        self.spec.progress_deadline_seconds.filter(|s| *s != i32::MAX)
    }

    /// The ReplicaSet running the current template (the oldest, if several do).
    fn find_new(&self) -> Option<usize> {
        self.owned.iter().position(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| template::equal_ignore_hash(t, &self.spec.template))
        })
    }

    fn old_of(&self, new: Option<usize>) -> Vec<usize> {
        (0..self.owned.len()).filter(|i| Some(*i) != new).collect()
    }

    fn views(&self) -> Vec<ReplicaSetView> {
        self.owned.iter().map(view).collect()
    }

    fn is_scaling_event(&self) -> bool {
        let new = self.find_new();
        let views = self.views();
        let old: Vec<&ReplicaSetView> = self.old_of(new).into_iter().map(|i| &views[i]).collect();
        rollout::is_scaling_event(&self.plan, new.map(|i| &views[i]), &old)
    }

    /// Kubernetes' `sync`: scaling without a rollout (a paused Deployment never creates its new
    /// ReplicaSet; one that is resized outside a rollout shares the change among its sets).
    async fn sync_scale(&mut self, paused: bool) -> Result<Option<Duration>, SyncError> {
        let new = self.new_replica_set(false).await?;
        let old = self.old_of(new);
        let views = self.views();
        let old_views: Vec<&ReplicaSetView> = old.iter().map(|i| &views[*i]).collect();
        let status_replicas = self.status.replicas.unwrap_or(0);
        for op in rollout::scale(&self.plan, new.map(|i| &views[i]), &old_views, status_replicas) {
            self.apply(&op).await?;
        }
        if paused {
            self.prune_history(&old).await?;
        }
        self.finish(new, false).await
    }

    /// `rolloutRolling`: one step of a rolling update.
    async fn rollout_rolling(&mut self) -> Result<Option<Duration>, SyncError> {
        let new = self.new_replica_set(true).await?;
        let Some(n) = new else { return self.finish(None, true).await };
        let old = self.old_of(new);
        let views = self.views();
        let all: Vec<&ReplicaSetView> = views.iter().collect();
        if let Some(to) = rollout::reconcile_new(&self.plan, &all, &views[n])
            && self.scale(n, to, Verb::between(views[n].replicas, to)).await?
        {
            return self.finish(new, true).await;
        }
        let old_views: Vec<&ReplicaSetView> = old.iter().map(|i| &views[*i]).collect();
        let mut scaled = false;
        for op in rollout::reconcile_old(&self.plan, &all, &rollout::active(old_views), &views[n]) {
            scaled |= self.apply(&op).await?;
        }
        if !scaled && status::complete(self.plan.replicas, self.generation(), &self.status) {
            self.prune_history(&old).await?;
        }
        self.finish(new, true).await
    }

    /// `rolloutRecreate`: old ReplicaSets to 0; once none of their pods is left, the new one up.
    async fn rollout_recreate(&mut self) -> Result<Option<Duration>, SyncError> {
        let new = self.new_replica_set(false).await?;
        let old = self.old_of(new);
        let mut scaled = false;
        for &i in &old {
            if spec_replicas(&self.owned[i]) > 0 {
                scaled |= self.scale(i, 0, Verb::Down).await?;
            }
        }
        if scaled {
            return self.finish(new, true).await;
        }
        let pods = self.pods_by_owner().await?;
        let views = self.views();
        let old_views: Vec<&ReplicaSetView> = old.iter().map(|i| &views[*i]).collect();
        if rollout::old_pods_running(new.map(|i| &views[i]), &old_views, &pods) {
            return self.finish(new, true).await;
        }
        let new = match new {
            Some(n) => Some(n),
            None => self.new_replica_set(true).await?,
        };
        if let Some(n) = new {
            let from = spec_replicas(&self.owned[n]);
            if from != self.plan.replicas {
                self.scale(n, self.plan.replicas, Verb::between(from, self.plan.replicas)).await?;
            }
        }
        if status::complete(self.plan.replicas, self.generation(), &self.status) {
            self.prune_history(&old).await?;
        }
        self.finish(new, true).await
    }

    /// Computes the status from the ReplicaSets as they are now — with the `Progressing`
    /// condition for a rollout step (`syncRolloutStatus`), without for scaling
    /// (`syncDeploymentStatus`) — writes it, and says when to look again.
    async fn finish(&mut self, new: Option<usize>, rollout: bool) -> Result<Option<Duration>, SyncError> {
        let views = self.views();
        let all: Vec<&ReplicaSetView> = views.iter().collect();
        let typed: Vec<&ReplicaSet> = self.owned.iter().collect();
        let failure: Option<DeploymentCondition> = status::replica_failure(new.map(|i| &self.owned[i]), &typed);
        let (next, after) = {
            let o = status::Observed {
                name: &self.name,
                generation: self.generation(),
                replicas: self.plan.replicas,
                max_unavailable: self.plan.max_unavailable(),
                deadline: self.deadline(),
                all: &all,
                new: new.map(|i| &views[i]),
                current: &self.status,
                replica_failure: failure.as_ref(),
            };
            if rollout {
                let next = status::rollout(&o, self.now);
                let after = status::recheck_after(&o, &next, self.now);
                (next, after)
            } else {
                (status::calculate(&o, self.now), None)
            }
        };
        self.status = next;
        self.write_status().await?;
        Ok(after)
    }

    /// Writes `self.status` if it differs from what is stored.
    async fn write_status(&mut self) -> Result<(), SyncError> {
        if self.d.status.clone().unwrap_or_default() == self.status {
            return Ok(());
        }
        let mut body = self.d.clone();
        body.status = Some(self.status.clone());
        // No resourceVersion: the status replaces the stored one whatever else changed meanwhile
        // (a newer generation is simply not observed yet, and its change starts another pass).
        body.metadata.resource_version = None;
        let body = serde_json::to_value(&body).map_err(|e| SyncError::Status(ApiError::Internal(e.to_string())))?;
        match self.objects.update(&self.target(), body, Subresource::Status, &WriteOptions::default()).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => {
                self.d.status = Some(self.status.clone());
                Ok(())
            }
            Err(source) => Err(SyncError::Status(source)),
        }
    }

    fn target(&self) -> Target {
        Target { kind: deployments(), namespace: Some(self.namespace.clone()), name: Some(self.name.clone()) }
    }

    /// `SetDeploymentRevision`: the Deployment's `revision` annotation follows its new ReplicaSet.
    /// Kubernetes writes it along with the status; here status writes keep metadata, so it is a
    /// metadata-only patch (which leaves the generation alone).
    async fn set_revision(&mut self, revision: &str) -> Result<(), SyncError> {
        let annotations = self.d.metadata.annotations.get_or_insert_with(Default::default);
        if annotations.get(template::REVISION).map(String::as_str) == Some(revision) {
            return Ok(());
        }
        annotations.insert(template::REVISION.to_string(), revision.to_string());
        let patch = json!({"metadata": {"annotations": {template::REVISION: revision}}});
        match self
            .objects
            .patch(&self.target(), patch, PatchKind::Merge, Subresource::Main, &WriteOptions::default())
            .await
        {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
            Err(source) => Err(SyncError::Revision(source)),
        }
    }

    /// Records a core/v1 Event about the Deployment (best effort).
    async fn event(&self, type_: EventType, reason: &str, message: &str) {
        self.events.event(InvolvedObject::of(&self.d), type_, reason, message).await;
    }
}
