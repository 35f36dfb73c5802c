//! `rollout undo deployment/NAME [--to-revision N]`: puts an earlier revision's pod template back
//! into the Deployment with a JSON patch, exactly as kubectl's `DeploymentRollbacker` does; the
//! Deployment controller then finds the old ReplicaSet running that template, makes it the newest
//! revision and scales it up.

use std::collections::BTreeMap;
use std::io::Write;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use super::history::{self, REVISION};
use super::{Scope, fetch_deployments, group_kind};
use crate::ClientOptions;
use crate::apply::LAST_APPLIED;
use crate::error::{Error, render};
use wasmkube_api::Kind;

/// The label the controller adds to a ReplicaSet's template; a Deployment's template has none.
const HASH_LABEL: &str = "pod-template-hash";

/// Annotations the Deployment keeps through a rollback rather than taking the ReplicaSet's.
const KEPT_ANNOTATIONS: &[&str] = &[
    LAST_APPLIED,
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

#[derive(Debug, clap::Args)]
pub struct UndoArgs {
    /// `deployment/NAME` or `deployment NAME`.
    #[arg(required = true, value_name = "TYPE NAME | TYPE/NAME")]
    pub resources: Vec<String>,
    /// The revision to roll back to; 0 means the one before the current.
    #[arg(long, default_value_t = 0)]
    pub to_revision: i64,
}

pub async fn run(args: &UndoArgs, options: &ClientOptions, out: &mut impl Write) -> Result<(), Error> {
    let Scope { client, api, objects, mut report, .. } = Scope::of(&args.resources, options).await?;
    let unsupported =
        |kind: &Kind, _: &str| format!("error: no rollbacker has been implemented for {:?}", group_kind(kind));
    for deployment in fetch_deployments(&api, &objects, &mut report, unsupported).await {
        let name = deployment.metadata.name.clone().unwrap_or_default();
        if deployment.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(LAST_APPLIED)) {
            eprintln!(
                "Warning: resource deployments.apps/{name} was previously managed with 'wasmkube apply'. Rolling back \
                 will not update the {LAST_APPLIED} annotation, which may cause unexpected behavior on future \
                 'wasmkube apply' operations. Consider using 'wasmkube apply' with your previous configuration file \
                 instead."
            );
        }
        let sets = history::owned_replica_sets(client.clone(), &deployment).await?;
        let line = match rollback(&api, &deployment, &sets, args.to_revision).await {
            Ok(result) => result,
            Err(message) => {
                report.errors.push(format!("error: {message}"));
                continue;
            }
        };
        writeln!(out, "deployment.apps/{name} {line}")?;
    }
    report.finish()
}

/// Rolls `deployment` back; the result word(s) for the printed line, or kubectl's error message.
async fn rollback(
    api: &Api<Deployment>,
    deployment: &Deployment,
    sets: &[ReplicaSet],
    to_revision: i64,
) -> Result<String, String> {
    let name = deployment.metadata.name.as_deref().unwrap_or_default();
    let target = choose(name, sets, to_revision)?;
    if deployment.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
        return Err("you cannot rollback a paused deployment; resume it first with 'wasmkube rollout resume' and \
                    try again"
            .to_string());
    }
    let old = target.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
    let current = deployment.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    if without_hash(&old) == without_hash(&current) {
        return Ok(format!("skipped rollback (current template already matches revision {to_revision})"));
    }
    let ops = patch(deployment, target).map_err(|e| format!("failed restoring revision {to_revision}: {e}"))?;
    // kube takes a typed JSON patch; its type comes from the `Patch::Json` variant.
    let ops = serde_json::from_value(ops).map_err(|e| format!("failed restoring revision {to_revision}: {e}"))?;
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .map_err(|e| format!("failed restoring revision {to_revision}: {}", render(&e)))?;
    Ok("rolled back".to_string())
}

/// The ReplicaSet of `to_revision`, or for 0 the second-newest revision (kubectl's
/// `deploymentRevision`).
pub fn choose<'a>(name: &str, sets: &'a [ReplicaSet], to_revision: i64) -> Result<&'a ReplicaSet, String> {
    let revisions = history::by_revision(sets);
    if to_revision > 0 {
        return revisions.get(&to_revision).copied().ok_or_else(|| not_found(to_revision));
    }
    if to_revision < 0 {
        return Err(not_found(to_revision));
    }
    revisions.values().rev().nth(1).copied().ok_or_else(|| format!("no rollout history found for deployment {name:?}"))
}

fn not_found(revision: i64) -> String {
    format!("unable to find specified revision {revision} in history")
}

/// A template with the hash label removed and empty maps counted as absent, so templates compare
/// the way Kubernetes' semantic equality compares them.
fn without_hash(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = template.clone();
    if let Some(meta) = t.metadata.as_mut() {
        if let Some(labels) = meta.labels.as_mut() {
            labels.remove(HASH_LABEL);
        }
        meta.labels = meta.labels.take().filter(|l| !l.is_empty());
        meta.annotations = meta.annotations.take().filter(|a| !a.is_empty());
    }
    t
}

/// The RFC 6902 patch restoring `target`'s template: replace `/spec/template` with it (minus the
/// hash label) and `/metadata/annotations` with the ReplicaSet's annotations plus the ones the
/// Deployment keeps (its revision bookkeeping and last-applied configuration).
pub fn patch(deployment: &Deployment, target: &ReplicaSet) -> Result<Value, serde_json::Error> {
    let template = without_hash(&target.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default());
    let own = deployment.metadata.annotations.clone().unwrap_or_default();
    let mut annotations: BTreeMap<String, String> =
        own.into_iter().filter(|(k, _)| KEPT_ANNOTATIONS.contains(&k.as_str())).collect();
    for (k, v) in target.metadata.annotations.iter().flatten() {
        if !KEPT_ANNOTATIONS.contains(&k.as_str()) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    Ok(json!([
        {"op": "replace", "path": "/spec/template", "value": serde_json::to_value(&template)?},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(revision: &str, image: &str, extra: Value) -> ReplicaSet {
        let mut annotations = json!({REVISION: revision, "deployment.kubernetes.io/desired-replicas": "2"});
        if let (Some(map), Some(more)) = (annotations.as_object_mut(), extra.as_object()) {
            map.extend(more.clone());
        }
        serde_json::from_value(json!({
            "metadata": {"name": format!("web-{revision}"), "annotations": annotations},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web", HASH_LABEL: format!("h{revision}")}},
                    "spec": {"containers": [{"name": "web", "image": image}]}}},
        }))
        .expect("a valid replica set")
    }

    fn deployment(image: &str) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "annotations": {REVISION: "3", LAST_APPLIED: "{}", "team": "a"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": image}]}}},
        }))
        .expect("a valid deployment")
    }

    #[test]
    fn the_previous_revision_is_the_default_target() {
        let sets = [rs("3", "hello:3", json!({})), rs("1", "hello:1", json!({})), rs("2", "hello:2", json!({}))];
        let name = |r: Result<&ReplicaSet, String>| r.map(|rs| rs.metadata.name.clone().unwrap_or_default());
        assert_eq!(name(choose("web", &sets, 0)), Ok("web-2".to_string()));
        assert_eq!(name(choose("web", &sets, 1)), Ok("web-1".to_string()));
        assert_eq!(name(choose("web", &sets, 7)), Err("unable to find specified revision 7 in history".to_string()));
        let only = [rs("1", "hello:1", json!({}))];
        assert_eq!(name(choose("web", &only, 0)), Err("no rollout history found for deployment \"web\"".to_string()));
    }

    #[test]
    fn the_patch_replaces_the_template_without_the_hash_label_and_merges_annotations() {
        let target = rs("1", "hello:1", json!({"kubernetes.io/change-cause": "first"}));
        let ops = patch(&deployment("hello:3"), &target).expect("encodes");
        assert_eq!(
            ops,
            json!([
                {"op": "replace", "path": "/spec/template", "value": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "hello:1"}]}}},
                {"op": "replace", "path": "/metadata/annotations", "value": {
                    REVISION: "3", LAST_APPLIED: "{}", "kubernetes.io/change-cause": "first"}},
            ])
        );
        let typed: Result<Patch<()>, _> = serde_json::from_value(ops).map(Patch::Json);
        assert!(typed.is_ok(), "kube takes it as an RFC 6902 patch");
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        let current = deployment("hello:1").spec.map(|s| s.template).unwrap_or_default();
        let same = rs("1", "hello:1", json!({})).spec.and_then(|s| s.template).unwrap_or_default();
        let other = rs("2", "hello:2", json!({})).spec.and_then(|s| s.template).unwrap_or_default();
        assert_eq!(without_hash(&current), without_hash(&same));
        assert_ne!(without_hash(&current), without_hash(&other));
    }
}
