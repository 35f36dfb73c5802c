//! `rollout status deployment/NAME [--watch] [--revision N] [--timeout D]`: prints what a
//! Deployment's rollout is waiting for, on every change, until it has rolled out — kubectl's
//! `DeploymentStatusViewer` over a watch of that one object.

use std::io::Write;
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{WatchEvent, WatchParams};

use super::{Scope, group_kind, is_deployment};
use crate::error::Error;
use crate::{ClientOptions, duration};

/// The Progressing condition's reason once `spec.progressDeadlineSeconds` passed without progress.
const TIMED_OUT_REASON: &str = "ProgressDeadlineExceeded";
const REVISION: &str = "deployment.kubernetes.io/revision";

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// `deployment/NAME` or `deployment NAME`.
    #[arg(required = true, value_name = "TYPE NAME | TYPE/NAME")]
    pub resources: Vec<String>,
    /// Keep watching until the rollout is done (`--watch=false` prints the status once).
    #[arg(short = 'w', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", require_equals = true)]
    pub watch: bool,
    /// Pin to this revision: fail if the Deployment has rolled on to another. 0 follows the latest.
    #[arg(long, default_value_t = 0)]
    pub revision: i64,
    /// How long to watch (`30s`, `5m`); 0 or absent waits for ever.
    #[arg(long, value_parser = duration::parse)]
    pub timeout: Option<Duration>,
}

/// What a Deployment's status says about its rollout: the line to print and whether it is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub message: String,
    pub done: bool,
}

impl Progress {
    fn waiting(message: String) -> Self {
        Progress { message, done: false }
    }
}

/// kubectl's `DeploymentStatusViewer.Status`: the checks in its order, worded as it words them.
/// An error is a rollout that cannot finish (deadline exceeded) or a pinned revision rolled over.
pub fn progress(deployment: &Deployment, revision: i64) -> Result<Progress, String> {
    let name = deployment.metadata.name.as_deref().unwrap_or_default();
    if revision > 0 {
        let current = match deployment.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)) {
            None => 0,
            Some(v) => v.parse::<i64>().map_err(|e| format!("cannot get the revision of deployment {name:?}: {e}"))?,
        };
        if current != revision {
            return Err(format!("desired revision ({revision}) is different from the running revision ({current})"));
        }
    }
    let status = deployment.status.clone().unwrap_or_default();
    if deployment.metadata.generation.unwrap_or(0) > status.observed_generation.unwrap_or(0) {
        return Ok(Progress::waiting("Waiting for deployment spec update to be observed...".to_string()));
    }
    let progressing = status.conditions.iter().flatten().find(|c| c.type_ == "Progressing");
    if progressing.is_some_and(|c| c.reason.as_deref() == Some(TIMED_OUT_REASON)) {
        return Err(format!("deployment {name:?} exceeded its progress deadline"));
    }
    let (replicas, updated) = (status.replicas.unwrap_or(0), status.updated_replicas.unwrap_or(0));
    let available = status.available_replicas.unwrap_or(0);
    let wanted = deployment.spec.as_ref().and_then(|s| s.replicas);
    let waiting =
        |what: String| Ok(Progress::waiting(format!("Waiting for deployment {name:?} rollout to finish: {what}...")));
    if let Some(wanted) = wanted.filter(|w| updated < *w) {
        return waiting(format!("{updated} out of {wanted} new replicas have been updated"));
    }
    if replicas > updated {
        return waiting(format!("{} old replicas are pending termination", replicas - updated));
    }
    if available < updated {
        return waiting(format!("{available} of {updated} updated replicas are available"));
    }
    Ok(Progress { message: format!("deployment {name:?} successfully rolled out"), done: true })
}

pub async fn run(args: &StatusArgs, options: &ClientOptions, out: &mut impl Write) -> Result<(), Error> {
    if args.revision < 0 {
        return Err(Error::Usage(format!("revision must be a positive integer: {}", args.revision)));
    }
    let mut scope = Scope::of(&args.resources, options).await?;
    if scope.objects.is_empty() {
        scope.note_if_empty();
        return scope.report.finish();
    }
    let Scope { api, objects, .. } = scope;
    for (kind, name) in &objects {
        if !is_deployment(kind) {
            return Err(Error::Usage(format!("no status viewer has been implemented for {}", group_kind(kind))));
        }
        let watching = follow(&api, name, args, out);
        match duration::limit(args.timeout) {
            Some(limit) => tokio::time::timeout(limit, watching)
                .await
                .map_err(|_| Error::Usage("timed out waiting for the condition".to_string()))??,
            None => watching.await?,
        }
    }
    Ok(())
}

/// Prints the status of `name` now and, when watching, after every change until it is done.
/// A watch the server ends (its timeout) is resumed from a fresh read, as kubectl's informer
/// re-lists; so is one whose resource version has expired.
async fn follow(api: &Api<Deployment>, name: &str, args: &StatusArgs, out: &mut impl Write) -> Result<(), Error> {
    let params = WatchParams::default().fields(&format!("metadata.name={name}"));
    loop {
        let deployment = api.get(name).await.map_err(|e| Error::request(&e))?;
        if report(&deployment, args.revision, out)? || !args.watch {
            return Ok(());
        }
        let version = deployment.metadata.resource_version.clone().unwrap_or_default();
        let events = api.watch(&params, &version).await.map_err(|e| Error::request(&e))?;
        futures::pin_mut!(events);
        while let Some(event) = events.try_next().await.map_err(|e| Error::request(&e))? {
            match event {
                WatchEvent::Added(d) | WatchEvent::Modified(d) => {
                    if report(&d, args.revision, out)? {
                        return Ok(());
                    }
                }
                // Stop rather than silently follow a new object of the same name.
                WatchEvent::Deleted(_) => return Err(Error::Usage("object has been deleted".to_string())),
                WatchEvent::Bookmark(_) => {}
                WatchEvent::Error(status) if status.code == 410 => break,
                WatchEvent::Error(status) => return Err(Error::Request(format!("error: {}", status.message))),
            }
        }
    }
}

/// Prints one status line; true when the rollout is done.
fn report(deployment: &Deployment, revision: i64, out: &mut impl Write) -> Result<bool, Error> {
    let progress = progress(deployment, revision).map_err(Error::Usage)?;
    writeln!(out, "{}", progress.message)?;
    out.flush()?;
    Ok(progress.done)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn deployment(generation: i64, replicas: i64, status: Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": generation,
                "annotations": {REVISION: "2"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}},
            "status": status,
        }))
        .expect("a valid deployment")
    }

    #[test]
    fn status_lines_follow_kubectls_checks_in_order() {
        let waiting =
            |what: &str| Ok(Progress::waiting(format!("Waiting for deployment \"web\" rollout to finish: {what}...")));
        let cases = [
            (
                deployment(3, 3, json!({"observedGeneration": 2})),
                Ok(Progress::waiting("Waiting for deployment spec update to be observed...".into())),
            ),
            (
                deployment(2, 3, json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1})),
                waiting("1 out of 3 new replicas have been updated"),
            ),
            (
                deployment(2, 3, json!({"observedGeneration": 2, "replicas": 5, "updatedReplicas": 3})),
                waiting("2 old replicas are pending termination"),
            ),
            (
                deployment(
                    2,
                    3,
                    json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 1}),
                ),
                waiting("1 of 3 updated replicas are available"),
            ),
            (
                deployment(
                    2,
                    3,
                    json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
                ),
                Ok(Progress { message: "deployment \"web\" successfully rolled out".into(), done: true }),
            ),
            (
                deployment(0, 0, json!({})),
                Ok(Progress { message: "deployment \"web\" successfully rolled out".into(), done: true }),
            ),
            (
                deployment(
                    2,
                    3,
                    json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1,
                    "conditions": [{"type": "Progressing", "status": "False", "reason": TIMED_OUT_REASON}]}),
                ),
                Err("deployment \"web\" exceeded its progress deadline".to_string()),
            ),
        ];
        for (d, want) in cases {
            assert_eq!(progress(&d, 0), want, "{:?}", d.status);
        }
    }

    #[test]
    fn a_pinned_revision_must_be_the_running_one() {
        let d = deployment(
            1,
            1,
            json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}),
        );
        assert!(progress(&d, 2).is_ok_and(|p| p.done));
        assert_eq!(progress(&d, 1), Err("desired revision (1) is different from the running revision (2)".into()));
    }
}
