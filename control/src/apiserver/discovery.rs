//! Legacy discovery (`/api`, `/apis`, `/api/v1`, `/apis/<g>`, `/apis/<g>/<v>`) and `/version`,
//! rendered from the kind registry. Clients use it to map kinds to resource paths.

use axum::Json;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use wasmkube_api::{Kind, kinds};

use crate::status::ApiError;

/// The Kubernetes release whose API (k8s-openapi `v1_33`) is served.
pub const KUBERNETES_MINOR: &str = "33";

pub async fn version() -> Json<Value> {
    Json(json!({
        "major": "1",
        "minor": KUBERNETES_MINOR,
        "gitVersion": format!("v1.{KUBERNETES_MINOR}.0-wasmkube.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    }))
}

pub async fn core_versions() -> Json<Value> {
    Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [],
    }))
}

fn group_json(group: &str) -> Value {
    let version = kinds::ALL.iter().find(|k| k.group == group).map(|k| k.version).unwrap_or("v1");
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

pub async fn groups() -> Json<Value> {
    let groups: Vec<Value> = kinds::groups().into_iter().filter(|g| !g.is_empty()).map(group_json).collect();
    Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
}

pub async fn group(Path(group): Path<String>) -> Response {
    if group.is_empty() || !kinds::groups().contains(&group.as_str()) {
        return ApiError::NoSuchResource.into_response();
    }
    let mut body = group_json(&group);
    body["kind"] = json!("APIGroup");
    body["apiVersion"] = json!("v1");
    Json(body).into_response()
}

pub async fn core_resources() -> Response {
    resource_list("", "v1")
}

pub async fn group_resources(Path((group, version)): Path<(String, String)>) -> Response {
    resource_list(&group, &version)
}

const VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

fn resource_list(group: &str, version: &str) -> Response {
    let kinds: Vec<&Kind> = kinds::ALL.iter().filter(|k| k.group == group && k.version == version).collect();
    if kinds.is_empty() {
        return ApiError::NoSuchResource.into_response();
    }
    let mut resources = Vec::new();
    for kind in kinds {
        let mut main = json!({
            "name": kind.plural,
            "singularName": kind.singular,
            "namespaced": kind.namespaced,
            "kind": kind.kind,
            "verbs": VERBS,
        });
        if !kind.short_names.is_empty() {
            main["shortNames"] = json!(kind.short_names);
        }
        if !kind.categories.is_empty() {
            main["categories"] = json!(kind.categories);
        }
        resources.push(main);
        if kind.has_status {
            resources.push(json!({
                "name": format!("{}/status", kind.plural), "singularName": "", "namespaced": kind.namespaced,
                "kind": kind.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        if kind.group.is_empty() && kind.kind == "Pod" {
            resources.push(json!({
                "name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"],
            }));
            resources.push(json!({
                "name": "pods/binding", "singularName": "", "namespaced": true, "kind": "Binding", "verbs": ["create"],
            }));
            resources.push(json!({
                "name": "pods/eviction", "singularName": "", "namespaced": true, "group": "policy",
                "version": "v1", "kind": "Eviction", "verbs": ["create"],
            }));
            resources.push(json!({
                "name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions",
                "verbs": ["create", "get"],
            }));
        }
        if kind.has_scale {
            resources.push(json!({
                "name": format!("{}/scale", kind.plural), "singularName": "", "namespaced": kind.namespaced,
                "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Json(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
    .into_response()
}
