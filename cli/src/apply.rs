//! `apply -f`: client-side apply, as kubectl does it without `--server-side`.
//!
//! Each document is created when absent, else merge-patched with a three-way patch: the document
//! itself plus `null` for every field the previous apply set (recorded in the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation) that the document no longer has.
//! Fields set by others (controllers, `kubectl scale`) are left alone. Container images given as
//! local `.wasm` paths are pushed to the cluster registry first ([`local_images`]).

use std::io::Write;

use kube::api::{Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use serde_json::{Map, Value};

use crate::error::{Error, is_unreachable, render_during};
use crate::local_images;
use crate::manifest::{self, Document};
use crate::output::Report;
use crate::resource;
use crate::{ClientOptions, config};

/// The annotation recording what the last apply sent.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The field manager kubectl uses for client-side apply, so managedFields read the same.
const FIELD_MANAGER: &str = "kubectl-client-side-apply";

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Manifest file, directory of `*.yaml`/`*.yml`/`*.json` files, or `-` for stdin; repeatable.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE|DIR|-")]
    pub files: Vec<String>,
}

/// What happened to one applied object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Created,
    Configured,
    /// The patch changed nothing: the server kept the resourceVersion.
    Unchanged,
}

impl Action {
    fn word(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Configured => "configured",
            Action::Unchanged => "unchanged",
        }
    }
}

/// One applied object: `deployment.apps/web` and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub object: String,
    pub action: Action,
}

/// The outcome of an apply: the objects written, and one kubectl-style line per rejected document.
#[derive(Debug, Default)]
pub struct ApplySummary {
    pub applied: Vec<Applied>,
    pub errors: Vec<String>,
}

pub async fn run(args: &ApplyArgs, options: &ClientOptions, out: &mut impl Write) -> Result<(), Error> {
    // Parse and resolve everything before connecting, so a bad manifest writes nothing. (Reading
    // blocks, stdin included; nothing else runs on the executor yet.)
    let mut documents = manifest::read(&args.files)?;
    if documents.is_empty() {
        return Err(Error::Usage("no objects passed to apply".to_string()));
    }
    let local_images = local_images::find(&documents)?;
    let cluster = config::connect(options).await?;
    manifest::assign_namespaces(&mut documents, &cluster.namespace, options.namespace.as_deref())?;
    let namespace = cluster.namespace_for(options);
    let notes = local_images::push_and_rewrite(&cluster.client, &mut documents, local_images).await?;
    let summary = apply(cluster.client, &namespace, documents, out).await?;
    Report { notes, errors: summary.errors }.finish()
}

/// Applies documents in order, printing `kind/name created|configured|unchanged` for each.
/// Namespaced documents without a namespace go to `default_namespace` (callers that honour `-n`
/// first run [`manifest::assign_namespaces`] to catch conflicts). A document the server rejects
/// is recorded in the summary and the rest continue; a request that gets no answer stops the run.
pub async fn apply(
    client: kube::Client,
    default_namespace: &str,
    mut documents: Vec<Document>,
    out: &mut impl Write,
) -> Result<ApplySummary, Error> {
    manifest::assign_namespaces(&mut documents, default_namespace, None)?;
    let mut summary = ApplySummary::default();
    for document in documents {
        let object = format!("{}/{}", document.kind.qualified_singular(), document.name());
        match apply_one(client.clone(), &document).await {
            Ok(action) => {
                writeln!(out, "{object} {}", action.word())?;
                summary.applied.push(Applied { object, action });
            }
            Err((err, _)) if is_unreachable(&err) => return Err(Error::request(&err)),
            Err((err, step)) => summary.errors.push(render_during(&err, Some((step, &document.source.file)))),
        }
    }
    Ok(summary)
}

/// Creates or patches one object; an error comes with the step that failed, for the message.
async fn apply_one(client: kube::Client, document: &Document) -> Result<Action, (kube::Error, &'static str)> {
    let api = resource::api(client, document.kind, document.namespace());
    let desired = with_last_applied(&document.object);
    let current = api.get_opt(document.name()).await.map_err(|e| (e, "retrieving current configuration of"))?;
    let Some(current) = current else {
        let object: DynamicObject =
            serde_json::from_value(desired).map_err(|e| (kube::Error::SerdeError(e), "creating"))?;
        let params = PostParams { field_manager: Some(FIELD_MANAGER.to_string()), ..PostParams::default() };
        api.create(&params, &object).await.map_err(|e| (e, "creating"))?;
        return Ok(Action::Created);
    };
    let previous = last_applied(&current);
    let patch = three_way_patch(previous.as_ref(), &desired);
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_string()), ..PatchParams::default() };
    tracing::debug!(object = document.name(), %patch, "patching");
    let patched = api.patch(document.name(), &params, &Patch::Merge(&patch)).await.map_err(|e| (e, "patching"))?;
    let as_json = |o: &DynamicObject| serde_json::to_value(o).unwrap_or(Value::Null);
    Ok(if same_where_patched(&patch, &as_json(&current), &as_json(&patched)) {
        Action::Unchanged
    } else {
        Action::Configured
    })
}

/// Whether every field the patch sets (or removes) reads the same before and after it. Only those
/// fields count: controllers keep writing status and their own annotations meanwhile, and the
/// server fills defaults into lists the patch replaces whole.
fn same_where_patched(patch: &Value, before: &Value, after: &Value) -> bool {
    match patch {
        Value::Object(fields) => fields.iter().all(|(key, sub)| {
            let pick = |v: &Value| v.get(key).cloned().unwrap_or(Value::Null);
            same_where_patched(sub, &pick(before), &pick(after))
        }),
        // A removal changed something only if the field was there.
        Value::Null => before.is_null(),
        _ => before == after,
    }
}

/// The configuration recorded by the previous apply, if the object has one that parses.
fn last_applied(object: &DynamicObject) -> Option<Value> {
    let annotations = object.metadata.annotations.as_ref()?;
    serde_json::from_str(annotations.get(LAST_APPLIED)?).ok()
}

/// The document with the last-applied annotation set to the document itself (without that
/// annotation, and with `annotations: {}` kept), as kubectl's `GetModifiedConfiguration` does.
pub fn with_last_applied(document: &Value) -> Value {
    let mut object = document.clone();
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return object;
    };
    let annotations = metadata.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
    if !annotations.is_object() {
        *annotations = Value::Object(Map::new());
    }
    if let Some(map) = annotations.as_object_mut() {
        map.remove(LAST_APPLIED);
    }
    let recorded = format!("{object}\n");
    if let Some(map) = object.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
        map.insert(LAST_APPLIED.to_string(), Value::String(recorded));
    }
    object
}

/// The JSON merge patch (RFC 7386) taking the live object to `desired`: `desired` itself, plus
/// `null` for each key the previous configuration had that `desired` dropped. Maps present in both
/// are compared recursively; lists and scalars are replaced whole, as merge patch requires.
pub fn three_way_patch(previous: Option<&Value>, desired: &Value) -> Value {
    match (previous, desired) {
        (Some(Value::Object(previous)), Value::Object(desired)) => {
            let mut patch = Map::new();
            for (key, value) in desired {
                patch.insert(key.clone(), three_way_patch(previous.get(key), value));
            }
            for key in previous.keys().filter(|k| !desired.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => desired.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_the_patched_fields_decide_whether_anything_changed() {
        let patch = json!({"metadata": {"labels": {"a": "1", "gone": null}}, "spec": {"containers": [{"name": "c"}]}});
        let before = json!({"metadata": {"labels": {"a": "1"}, "annotations": {"x": "1"}, "resourceVersion": "1"},
            "spec": {"containers": [{"name": "c", "imagePullPolicy": "Always"}]}, "status": {"n": 1}});
        let mut after = before.clone();
        after["metadata"]["annotations"]["x"] = json!("2");
        after["status"]["n"] = json!(2);
        assert!(same_where_patched(&patch, &before, &after), "controller-owned changes do not count");
        after["spec"]["containers"][0]["image"] = json!("new");
        assert!(!same_where_patched(&patch, &before, &after));
        let mut labelled = before.clone();
        labelled["metadata"]["labels"]["gone"] = json!("x");
        assert!(!same_where_patched(&patch, &labelled, &before), "removing a field is a change");
    }

    #[test]
    fn removed_keys_become_null_and_nested_maps_recurse() {
        let previous = json!({"metadata": {"name": "a", "labels": {"x": "1", "y": "2"}},
            "spec": {"replicas": 3, "paused": false}, "data": {"k": "v"}});
        let desired = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"replicas": 2}});
        assert_eq!(
            three_way_patch(Some(&previous), &desired),
            json!({"metadata": {"name": "a", "labels": {"x": "1", "y": null}},
                   "spec": {"replicas": 2, "paused": null}, "data": null})
        );
    }

    #[test]
    fn arrays_and_type_changes_replace_whole() {
        let previous =
            json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}], "selector": {"a": "b"}}});
        let desired = json!({"spec": {"ports": [{"port": 80}], "selector": "now-a-string"}});
        assert_eq!(three_way_patch(Some(&previous), &desired), desired);
    }

    #[test]
    fn without_a_previous_configuration_the_patch_is_the_document() {
        let desired = json!({"metadata": {"name": "a"}, "data": {"k": "v"}});
        assert_eq!(three_way_patch(None, &desired), desired);
        assert_eq!(three_way_patch(Some(&json!("garbage")), &desired), desired);
    }

    #[test]
    fn last_applied_records_the_document_without_itself() {
        let document = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "default",
            "annotations": {LAST_APPLIED: "stale"}}, "data": {"k": "v"}});
        let object = with_last_applied(&document);
        let recorded = object["metadata"]["annotations"][LAST_APPLIED].as_str().expect("annotation set");
        assert!(recorded.ends_with('\n'));
        let recorded: Value = serde_json::from_str(recorded).expect("recorded JSON");
        assert_eq!(recorded["metadata"]["annotations"], json!({}));
        assert_eq!(recorded["data"], json!({"k": "v"}));
        assert_eq!(recorded["metadata"]["name"], "a");
    }

    #[test]
    fn reapplying_the_same_document_patches_nothing_away() {
        let document = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}});
        let first = with_last_applied(&document);
        let previous: Value =
            serde_json::from_str(first["metadata"]["annotations"][LAST_APPLIED].as_str().expect("set")).expect("json");
        let patch = three_way_patch(Some(&previous), &with_last_applied(&document));
        assert_eq!(patch, first, "no nulls when nothing was removed");
    }
}
