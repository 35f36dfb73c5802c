//! `rollout status|history|undo|pause|resume|restart`: managing a Deployment's rollout, as kubectl's
//! `rollout` subcommands do. Only Deployments roll out here (no DaemonSet or StatefulSet controller
//! exists yet); other kinds get kubectl's "not implemented" / "not supported" errors.
//!
//! Each subcommand has a pure core tested as tables: [`status::progress`] (the wording of a
//! Deployment's status), [`history::view`] (the revision table), [`undo::patch`] (the JSON patch
//! restoring an old template) and [`toggle`] (pause, resume and restart patches). The I/O around
//! them reads the Deployment and the ReplicaSets it controls and writes one patch.

pub mod history;
pub mod status;
pub mod template;
pub mod undo;

use std::io::Write;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use wasmkube_api::Kind;

use crate::error::{Error, render};
use crate::{ClientOptions, config, resource};

/// The template annotation `rollout restart` sets; a new value is a new template, so a new rollout.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

#[derive(Debug, clap::Args)]
pub struct RolloutArgs {
    #[command(subcommand)]
    pub command: RolloutCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum RolloutCommand {
    /// Watch a rollout until it completes (or its progress deadline is exceeded).
    Status(status::StatusArgs),
    /// List a Deployment's revisions, or show one revision's pod template.
    History(history::HistoryArgs),
    /// Roll back to the previous revision, or to `--to-revision`.
    Undo(undo::UndoArgs),
    /// Pause a Deployment: template changes no longer roll out until it is resumed.
    Pause(ObjectArgs),
    /// Resume a paused Deployment.
    Resume(ObjectArgs),
    /// Restart a Deployment's pods with a rolling update (sets the `restartedAt` template annotation).
    Restart(ObjectArgs),
}

/// The objects a rollout subcommand acts on.
#[derive(Debug, clap::Args)]
pub struct ObjectArgs {
    /// `TYPE NAME...` or `TYPE/NAME...` (`deployment/web`, `deploy web`); a type alone means all of it.
    #[arg(required = true, value_name = "TYPE NAME | TYPE/NAME")]
    pub resources: Vec<String>,
}

pub async fn run(args: &RolloutArgs, options: &ClientOptions, out: &mut impl Write) -> Result<(), Error> {
    let (resources, toggle) = match &args.command {
        RolloutCommand::Status(a) => return status::run(a, options, out).await,
        RolloutCommand::History(a) => return history::run(a, options, out).await,
        RolloutCommand::Undo(a) => return undo::run(a, options, out).await,
        RolloutCommand::Pause(a) => (&a.resources, Toggle::Pause),
        RolloutCommand::Resume(a) => (&a.resources, Toggle::Resume),
        RolloutCommand::Restart(a) => (&a.resources, Toggle::Restart),
    };
    let mut scope = Scope::of(resources, options).await?;
    scope.note_if_empty();
    let Scope { api, objects, mut report, .. } = scope;
    let unsupported =
        |kind: &Kind, name: &str| format!("error: {} \"{name}\" {}", kind.qualified_plural(), toggle.unsupported());
    for deployment in fetch_deployments(&api, &objects, &mut report, unsupported).await {
        let name = deployment.metadata.name.clone().unwrap_or_default();
        let patch = match toggle.patch(&deployment, &restart_stamp()) {
            Ok(patch) => patch,
            Err(refusal) => {
                report.errors.push(format!("error: {refusal}"));
                continue;
            }
        };
        // kubectl sends a strategic merge patch; this server takes merge patches, which say the
        // same for these fields (a scalar and one map key).
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => writeln!(out, "deployment.apps/{name} {}", toggle.done())?,
            Err(err) => report.errors.push(format!("error: failed to patch: {}", render(&err))),
        }
    }
    report.finish()
}

/// What `pause`, `resume` and `restart` change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toggle {
    Pause,
    Resume,
    Restart,
}

impl Toggle {
    /// The merge patch for `deployment`, or why kubectl would refuse (the whole message).
    pub fn patch(self, deployment: &Deployment, now: &str) -> Result<Value, String> {
        let name = deployment.metadata.name.as_deref().unwrap_or_default();
        let spec = deployment.spec.as_ref();
        let paused = spec.and_then(|s| s.paused).unwrap_or(false);
        let refuse = |why: &str| Err(format!("deployments.apps \"{name}\" {why}"));
        match self {
            Toggle::Pause if paused => refuse("is already paused"),
            Toggle::Pause => Ok(json!({"spec": {"paused": true}})),
            Toggle::Resume if !paused => refuse("is not paused"),
            // `null` removes the field, as the strategic patch kubectl computes for `false` does.
            Toggle::Resume => Ok(json!({"spec": {"paused": null}})),
            Toggle::Restart if paused => refuse("can't restart paused deployment (run rollout resume first)"),
            Toggle::Restart => {
                let current = spec
                    .and_then(|s| s.template.metadata.as_ref())
                    .and_then(|m| m.annotations.as_ref())
                    .and_then(|a| a.get(RESTARTED_AT));
                if current.map(String::as_str) == Some(now) {
                    return Err(format!(
                        "failed to create patch for {name}: if restart has already been triggered within the \
                         past second, please wait before attempting to trigger another"
                    ));
                }
                Ok(json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}))
            }
        }
    }

    fn done(self) -> &'static str {
        match self {
            Toggle::Pause => "paused",
            Toggle::Resume => "resumed",
            Toggle::Restart => "restarted",
        }
    }

    fn unsupported(self) -> &'static str {
        match self {
            Toggle::Pause => "pausing is not supported",
            Toggle::Resume => "resuming is not supported",
            Toggle::Restart => "restarting is not supported",
        }
    }
}

/// Now in RFC 3339 at whole seconds, as kubectl stamps `restartedAt` (kubectl uses local time;
/// UTC is the same instant and keeps the value independent of the machine).
fn restart_stamp() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second()).unwrap_or(now).to_string()
}

pub(crate) fn is_deployment(kind: &Kind) -> bool {
    kind.group == "apps" && kind.kind == "Deployment"
}

/// `Kind.group` (`Deployment.apps`, `Pod`), as Go prints a GroupKind in kubectl's messages.
pub(crate) fn group_kind(kind: &Kind) -> String {
    if kind.group.is_empty() { kind.kind.to_string() } else { format!("{}.{}", kind.kind, kind.group) }
}

/// What a rollout verb works on: the namespace's Deployments API, the objects the arguments
/// name, and a report for the refusals along the way.
pub(crate) struct Scope {
    pub client: kube::Client,
    pub namespace: String,
    pub api: kube::Api<Deployment>,
    pub objects: Vec<(&'static Kind, String)>,
    pub report: crate::output::Report,
}

impl Scope {
    /// Connects and resolves `resources` (`deployment/NAME`, `deployment NAME`, ...).
    pub(crate) async fn of(resources: &[String], options: &ClientOptions) -> Result<Self, Error> {
        let targets = resource::parse_targets(resources)?;
        let cluster = config::connect(options).await?;
        let namespace = cluster.namespace_for(options);
        let objects = named_objects(cluster.client.clone(), &targets, &namespace).await?;
        let api = kube::Api::namespaced(cluster.client.clone(), &namespace);
        Ok(Self { client: cluster.client, namespace, api, objects, report: crate::output::Report::default() })
    }

    /// kubectl's note when the arguments select nothing.
    pub(crate) fn note_if_empty(&mut self) {
        if self.objects.is_empty() {
            self.report.notes.push(format!("No resources found in {} namespace.", self.namespace));
        }
    }
}

/// The named objects that are Deployments, fetched in order. Other kinds (`unsupported` words
/// their refusal) and failed reads become errors in `report`, and the rest go on, as kubectl's
/// rollout verbs do.
pub(crate) async fn fetch_deployments(
    api: &kube::Api<Deployment>,
    objects: &[(&'static Kind, String)],
    report: &mut crate::output::Report,
    unsupported: impl Fn(&Kind, &str) -> String,
) -> Vec<Deployment> {
    let mut found = Vec::new();
    for (kind, name) in objects {
        if !is_deployment(kind) {
            report.errors.push(unsupported(kind, name));
            continue;
        }
        match api.get(name).await {
            Ok(d) => found.push(d),
            Err(err) => report.errors.push(crate::error::render(&err)),
        }
    }
    found
}

/// The named objects, in order; a target without names stands for every object of its kind in
/// the namespace (kubectl's `rollout` verbs select them all the same way).
pub(crate) async fn named_objects(
    client: kube::Client,
    targets: &[resource::Target],
    namespace: &str,
) -> Result<Vec<(&'static Kind, String)>, Error> {
    let mut objects = Vec::new();
    for target in targets {
        if target.names.is_empty() {
            let api = resource::api(client.clone(), target.kind, Some(namespace));
            let list = api.list(&ListParams::default()).await.map_err(|e| Error::request(&e))?;
            objects.extend(list.items.into_iter().filter_map(|o| o.metadata.name).map(|name| (target.kind, name)));
        } else {
            objects.extend(target.names.iter().map(|name| (target.kind, name.clone())));
        }
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(paused: Option<bool>, restarted_at: Option<&str>) -> Deployment {
        let annotations = restarted_at.map(|at| json!({RESTARTED_AT: at}));
        serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"paused": paused, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}, "annotations": annotations},
                    "spec": {"containers": [{"name": "web", "image": "hello:1"}]}}},
        }))
        .expect("a valid deployment")
    }

    #[test]
    fn pause_resume_and_restart_patch_or_refuse_as_kubectl_does() {
        let now = "2026-01-02T03:04:05Z";
        let running = deployment(None, None);
        let paused = deployment(Some(true), None);
        let cases = [
            (Toggle::Pause, &running, Ok(json!({"spec": {"paused": true}}))),
            (Toggle::Pause, &paused, Err("deployments.apps \"web\" is already paused".to_string())),
            (Toggle::Resume, &paused, Ok(json!({"spec": {"paused": null}}))),
            (Toggle::Resume, &running, Err("deployments.apps \"web\" is not paused".to_string())),
            (
                Toggle::Restart,
                &running,
                Ok(json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}})),
            ),
            (
                Toggle::Restart,
                &paused,
                Err("deployments.apps \"web\" can't restart paused deployment (run rollout resume first)".to_string()),
            ),
        ];
        for (toggle, d, want) in cases {
            assert_eq!(toggle.patch(d, now), want, "{toggle:?}");
        }
        let just_restarted = deployment(Some(false), Some(now));
        let refused = Toggle::Restart.patch(&just_restarted, now).expect_err("same second");
        assert!(refused.starts_with("failed to create patch for web: if restart has already been triggered"));
    }

    #[test]
    fn the_restart_stamp_is_rfc3339_at_whole_seconds() {
        let stamp = restart_stamp();
        let parsed: jiff::Timestamp = stamp.parse().expect("RFC 3339");
        assert_eq!(parsed.subsec_nanosecond(), 0, "{stamp}");
    }
}
