//! `rollout history deployment/NAME [--revision N]`: the revisions a Deployment can roll back to,
//! read from the `deployment.kubernetes.io/revision` annotation of each ReplicaSet it controls
//! (and their `kubernetes.io/change-cause`), as kubectl's `DeploymentHistoryViewer` does.

use std::collections::BTreeMap;
use std::io::Write;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::Api;
use kube::api::ListParams;
use wasmkube_api::selector::LabelSelector;

use super::{Scope, fetch_deployments, group_kind, template};
use crate::ClientOptions;
use crate::error::{Error, render};
use crate::output::{self};
use wasmkube_api::Kind;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// Column gap of kubectl's history table (its tabwriter pads by two).
const GAP: usize = 2;

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// `deployment/NAME` or `deployment NAME`.
    #[arg(required = true, value_name = "TYPE NAME | TYPE/NAME")]
    pub resources: Vec<String>,
    /// Show this revision's pod template instead of the table.
    #[arg(long, default_value_t = 0)]
    pub revision: i64,
}

pub async fn run(args: &HistoryArgs, options: &ClientOptions, out: &mut impl Write) -> Result<(), Error> {
    let mut scope = Scope::of(&args.resources, options).await?;
    scope.note_if_empty();
    let Scope { client, api, objects, mut report, .. } = scope;
    let unsupported =
        |kind: &Kind, _: &str| format!("error: no history viewer has been implemented for {:?}", group_kind(kind));
    for deployment in fetch_deployments(&api, &objects, &mut report, unsupported).await {
        let name = deployment.metadata.name.clone().unwrap_or_default();
        let sets = owned_replica_sets(client.clone(), &deployment).await?;
        match view(&sets, args.revision) {
            Ok(text) => {
                let with = if args.revision > 0 { format!("with revision #{}", args.revision) } else { String::new() };
                // kubectl's name printer: `deployment.apps/web <operation>`, the operation being
                // the (possibly empty) revision note, a newline and the history.
                writeln!(out, "deployment.apps/{name} {with}\n{text}")?;
            }
            Err(message) => report.errors.push(format!("error: {message}")),
        }
    }
    report.finish()
}

/// The ReplicaSets `deployment` controls: those its selector lists whose controller reference is
/// the Deployment itself (kubectl's `GetAllReplicaSets`).
pub async fn owned_replica_sets(client: kube::Client, deployment: &Deployment) -> Result<Vec<ReplicaSet>, Error> {
    let name = deployment.metadata.name.as_deref().unwrap_or_default();
    let namespace = deployment.metadata.namespace.as_deref().unwrap_or("default");
    let spec_selector = deployment.spec.as_ref().map(|s| &s.selector);
    let raw = serde_json::to_value(spec_selector).map_err(|e| Error::Encode(e.to_string()))?;
    let selector = LabelSelector::from_spec(&raw)
        .map_err(|e| Error::Usage(format!("failed to retrieve replica sets from deployment {name}: {e}")))?;
    let api: Api<ReplicaSet> = Api::namespaced(client, namespace);
    let params = ListParams::default().labels(&selector.to_string());
    let listed = api
        .list(&params)
        .await
        .map_err(|e| Error::Usage(format!("failed to retrieve replica sets from deployment {name}: {}", render(&e))))?;
    let uid = deployment.metadata.uid.as_deref();
    let controlled = |rs: &ReplicaSet| {
        rs.metadata.owner_references.iter().flatten().any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
    };
    Ok(listed.items.into_iter().filter(controlled).collect())
}

/// A ReplicaSet's revision: 0 when unannotated, `None` when the annotation is not a number (such
/// sets are skipped, as kubectl skips them with a warning).
pub fn revision_of(rs: &ReplicaSet) -> Option<i64> {
    match rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)) {
        None => Some(0),
        Some(v) => v.parse().ok(),
    }
}

/// Each revision's ReplicaSet; if two claim one revision, the later listed wins, as in kubectl.
pub fn by_revision(sets: &[ReplicaSet]) -> BTreeMap<i64, &ReplicaSet> {
    let mut revisions = BTreeMap::new();
    for rs in sets {
        match revision_of(rs) {
            Some(revision) => {
                revisions.insert(revision, rs);
            }
            None => tracing::warn!(replicaset = ?rs.metadata.name, "unable to get the revision of a replica set"),
        }
    }
    revisions
}

/// What kubectl's `ViewHistory` returns: the REVISION / CHANGE-CAUSE table, one revision's pod
/// template (with its change-cause among the annotations), or "No rollout history found.".
pub fn view(sets: &[ReplicaSet], revision: i64) -> Result<String, String> {
    let revisions = by_revision(sets);
    if revisions.is_empty() {
        return Ok("No rollout history found.".to_string());
    }
    let change_cause = |rs: &ReplicaSet| rs.metadata.annotations.as_ref().and_then(|a| a.get(CHANGE_CAUSE)).cloned();
    if revision > 0 {
        let rs = revisions.get(&revision).ok_or_else(|| "unable to find the specified revision".to_string())?;
        let mut template = rs.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
        if let Some(cause) = change_cause(rs).filter(|c| !c.is_empty()) {
            let meta = template.metadata.get_or_insert_with(Default::default);
            meta.annotations.get_or_insert_with(Default::default).insert(CHANGE_CAUSE.to_string(), cause);
        }
        return Ok(template::describe(&template));
    }
    let rows: Vec<Vec<String>> = revisions
        .iter()
        .map(|(revision, rs)| {
            let cause = change_cause(rs).filter(|c| !c.is_empty()).unwrap_or_else(|| "<none>".to_string());
            vec![revision.to_string(), cause]
        })
        .collect();
    Ok(output::table(&["REVISION", "CHANGE-CAUSE"], &rows, GAP))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rs(name: &str, annotations: serde_json::Value, image: &str) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": name}},
                    "spec": {"containers": [{"name": "web", "image": image}]}}},
        }))
        .expect("a valid replica set")
    }

    #[test]
    fn the_table_lists_revisions_in_order_with_their_change_causes() {
        let sets = [
            rs("b", json!({REVISION: "10", CHANGE_CAUSE: "image hello:2"}), "hello:2"),
            rs("a", json!({REVISION: "2"}), "hello:1"),
            rs("x", json!({REVISION: "garbage"}), "hello:0"),
        ];
        assert_eq!(
            view(&sets, 0),
            Ok("REVISION  CHANGE-CAUSE\n2         <none>\n10        image hello:2\n".to_string())
        );
        assert_eq!(view(&[], 0), Ok("No rollout history found.".to_string()));
    }

    #[test]
    fn one_revision_shows_its_template_with_the_change_cause() {
        let sets = [rs("a", json!({REVISION: "1", CHANGE_CAUSE: "first"}), "hello:1")];
        let text = view(&sets, 1).expect("revision 1 exists");
        assert!(text.starts_with("Pod Template:\n  Labels:\tapp=web\n\tpod-template-hash=a\n"), "{text}");
        assert!(text.contains("  Annotations:\tkubernetes.io/change-cause: first\n"), "{text}");
        assert!(text.contains("    Image:\thello:1\n"), "{text}");
        assert_eq!(view(&sets, 2), Err("unable to find the specified revision".to_string()));
    }

    #[test]
    fn unannotated_sets_are_revision_zero() {
        assert_eq!(revision_of(&rs("a", json!(null), "hello:1")), Some(0));
        assert_eq!(revision_of(&rs("a", json!({REVISION: "x"}), "hello:1")), None);
    }
}
