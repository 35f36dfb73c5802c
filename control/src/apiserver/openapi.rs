//! `/openapi/v3`: the OpenAPI documents of every served group version, as kubectl reads them.
//!
//! kubectl needs three things from them: each kind's `patch` operation must list the
//! `fieldValidation` parameter (or `apply` validates client-side against `/openapi/v2`, which we do
//! not serve, and fails); the operation and the kind's definition must carry the same
//! `x-kubernetes-group-version-kind` (`explain` and client-side apply find schemas by it); and the
//! definitions must be whole and carry Kubernetes' patch metadata, because kubectl computes
//! strategic merge patches from them ([`crate::schema`]). The root lists one URL per group version
//! with a `hash` of the document, which then is served as immutable, as Kubernetes does, so
//! kubectl downloads each document once.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha512};
use wasmkube_api::{Kind, kinds};

use super::discovery::KUBERNETES_MINOR;
use crate::schema::{REF_PREFIX, schemas};
use crate::status::ApiError;

/// One rendered group-version document.
struct Document {
    json: Vec<u8>,
    /// Upper-case hex SHA-512 of `json`: the `hash` in its URL and its ETag.
    hash: String,
}

/// Every group version's document, keyed as the root lists them (`api/v1`, `apis/apps/v1`).
static DOCUMENTS: LazyLock<BTreeMap<String, Document>> = LazyLock::new(|| {
    kinds::group_versions()
        .into_iter()
        .map(|(group, version)| {
            let json = serde_json::to_vec(&document(group, version)).expect("documents serialize");
            let hash = format!("{:X}", Sha512::digest(&json));
            (gv_path(group, version), Document { json, hash })
        })
        .collect()
});

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

/// Builds the documents now, off the async workers, so the first `kubectl apply` does not wait
/// for every schema to be generated and hashed.
pub fn prepare() {
    std::thread::spawn(|| LazyLock::force(&DOCUMENTS));
}

/// `GET /openapi/v3`.
pub async fn root() -> Response {
    let paths: Map<String, Value> = DOCUMENTS
        .iter()
        .map(|(path, doc)| {
            (path.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", doc.hash)}))
        })
        .collect();
    let mut response = axum::Json(json!({"paths": paths})).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    response
}

#[derive(Debug, Deserialize)]
pub struct DocumentQuery {
    hash: Option<String>,
}

/// `GET /openapi/v3/<group version>[?hash=…]`.
pub async fn group_version(
    Path(path): Path<String>,
    Query(query): Query<DocumentQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(doc) = DOCUMENTS.get(path.trim_matches('/')) else {
        return ApiError::NoSuchResource.into_response();
    };
    let etag = format!("\"{}\"", doc.hash);
    if let Some(hash) = query.hash.as_deref().filter(|h| *h != doc.hash) {
        // A stale link (the server changed since the client read the root): send it to the current one.
        tracing::debug!(%path, hash, "stale OpenAPI document hash");
        let location = format!("/openapi/v3/{}?hash={}", path.trim_matches('/'), doc.hash);
        return (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, location)]).into_response();
    }
    let mut response = if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Body::from(doc.json.clone()).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex is a valid header"));
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    let cache = if query.hash.is_some() { "public, immutable, max-age=31536000" } else { "no-cache, private" };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

fn query_parameter(name: &str, kind: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": kind, "uniqueItems": true}})
}

fn path_parameter(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("{REF_PREFIX}{name}")})
}

fn content(schema: &Value, types: &[&str]) -> Value {
    Value::Object(types.iter().map(|t| (t.to_string(), json!({"schema": schema}))).collect())
}

/// An operation on a resource path.
struct Operation<'a> {
    action: &'static str,
    /// The kind the operation reads or writes (`autoscaling/v1 Scale` on `scale`).
    gvk: (&'a str, &'a str, &'a str),
    /// The definition of that kind (`io.k8s.api.apps.v1.Deployment`).
    schema: &'a str,
    id: String,
}

impl Operation<'_> {
    fn render(&self, list_schema: Option<&Value>) -> Value {
        let (group, version, kind) = self.gvk;
        let object = reference(self.schema);
        let answer_types = ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"];
        let ok = |code: &str, schema: &Value| {
            (code.to_string(), json!({"description": "OK", "content": content(schema, &answer_types)}))
        };
        let write = ["dryRun", "fieldManager", "fieldValidation"].map(|p| query_parameter(p, "string"));
        let (parameters, body, responses): (Vec<Value>, Option<Value>, Vec<(String, Value)>) = match self.action {
            "get" => (vec![], None, vec![ok("200", &object)]),
            "list" => {
                let list = list_schema.cloned().unwrap_or_else(|| json!({"type": "object"}));
                let mut params: Vec<Value> =
                    ["continue", "fieldSelector", "labelSelector", "resourceVersion", "resourceVersionMatch"]
                        .map(|p| query_parameter(p, "string"))
                        .into();
                params.extend(["allowWatchBookmarks", "watch"].map(|p| query_parameter(p, "boolean")));
                params.extend(["limit", "timeoutSeconds"].map(|p| query_parameter(p, "integer")));
                (params, None, vec![ok("200", &list)])
            }
            "post" | "put" => (
                write.to_vec(),
                Some(json!({"required": true, "content": content(&object, &["*/*"])})),
                vec![ok("200", &object), ok("201", &object)],
            ),
            "patch" => {
                let mut params = write.to_vec();
                params.push(query_parameter("force", "boolean"));
                let patch = reference("io.k8s.apimachinery.pkg.apis.meta.v1.Patch");
                let types = [
                    "application/apply-patch+yaml",
                    "application/json-patch+json",
                    "application/merge-patch+json",
                    "application/strategic-merge-patch+json",
                ];
                (
                    params,
                    Some(json!({"required": true, "content": content(&patch, &types)})),
                    vec![ok("200", &object), ok("201", &object)],
                )
            }
            "delete" | "deletecollection" => {
                let mut params =
                    vec![query_parameter("dryRun", "string"), query_parameter("propagationPolicy", "string")];
                params.push(query_parameter("gracePeriodSeconds", "integer"));
                params.push(query_parameter("orphanDependents", "boolean"));
                let options = reference("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions");
                let status = reference("io.k8s.apimachinery.pkg.apis.meta.v1.Status");
                (
                    params,
                    Some(json!({"content": content(&options, &["*/*"])})),
                    vec![ok("200", &status), ok("202", &status)],
                )
            }
            other => unreachable!("no operation {other}"),
        };
        let mut op = json!({
            "operationId": self.id,
            "responses": Value::Object(responses.into_iter().chain([("401".to_string(), json!({"description": "Unauthorized"}))]).collect()),
            "x-kubernetes-action": self.action,
            "x-kubernetes-group-version-kind": {"group": group, "kind": kind, "version": version},
        });
        if !parameters.is_empty() {
            op["parameters"] = Value::Array(parameters);
        }
        if let Some(body) = body {
            op["requestBody"] = body;
        }
        op
    }
}

/// `readAppsV1NamespacedDeployment`-style operation ids.
fn operation_id(verb: &str, kind: &Kind, namespaced: bool, suffix: &str) -> String {
    // `rbac.authorization.k8s.io` is `RbacAuthorization`: every label before the `k8s.io` suffix.
    let labels = kind.group.trim_end_matches(".k8s.io").split(['.', '-']);
    let group: String = labels.filter(|l| !l.is_empty()).map(capitalize).collect();
    let group = if group.is_empty() { "Core".to_string() } else { group };
    let scope = if namespaced { "Namespaced" } else { "" };
    format!("{verb}{group}{}{scope}{}{suffix}", capitalize(kind.version), kind.kind)
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// The document of one group version: its resource paths and the definitions they reach.
fn document(group: &str, version: &str) -> Value {
    let s = schemas();
    let prefix = if group.is_empty() { format!("/api/{version}") } else { format!("/apis/{group}/{version}") };
    let mut paths = Map::new();
    for kind in kinds::ALL.iter().filter(|k| k.group == group && k.version == version) {
        let schema = s.root_name(kind);
        let gvk = (kind.group, kind.version, kind.kind);
        let op = |action, id| Operation { action, gvk, schema, id };
        let list_schema = json!({"type": "object", "description": format!("A list of {}.", kind.plural)});
        let ns = kind.namespaced;
        let (collection, item) = if ns {
            (
                format!("{prefix}/namespaces/{{namespace}}/{}", kind.plural),
                format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", kind.plural),
            )
        } else {
            (format!("{prefix}/{}", kind.plural), format!("{prefix}/{}/{{name}}", kind.plural))
        };
        let scope_params = |with_name: bool| {
            let mut p = Vec::new();
            if with_name {
                p.push(path_parameter("name"));
            }
            if ns {
                p.push(path_parameter("namespace"));
            }
            Value::Array(p)
        };
        if ns {
            paths.insert(
                format!("{prefix}/{}", kind.plural),
                json!({"get": op("list", operation_id("list", kind, false, "ForAllNamespaces")).render(Some(&list_schema))}),
            );
        }
        paths.insert(
            collection,
            json!({
                "parameters": scope_params(false),
                "get": op("list", operation_id("list", kind, ns, "")).render(Some(&list_schema)),
                "post": op("post", operation_id("create", kind, ns, "")).render(None),
                "delete": op("deletecollection", operation_id("deleteCollection", kind, ns, "")).render(None),
            }),
        );
        paths.insert(
            item.clone(),
            json!({
                "parameters": scope_params(true),
                "get": op("get", operation_id("read", kind, ns, "")).render(None),
                "put": op("put", operation_id("replace", kind, ns, "")).render(None),
                "patch": op("patch", operation_id("patch", kind, ns, "")).render(None),
                "delete": op("delete", operation_id("delete", kind, ns, "")).render(None),
            }),
        );
        let subresources = [
            (kind.has_status, "status", gvk, schema),
            (kind.has_scale, "scale", ("autoscaling", "v1", "Scale"), "io.k8s.api.autoscaling.v1.Scale"),
        ];
        for (_, name, gvk, schema) in subresources.into_iter().filter(|s| s.0) {
            let op =
                |action, verb| Operation { action, gvk, schema, id: operation_id(verb, kind, ns, &capitalize(name)) };
            paths.insert(
                format!("{item}/{name}"),
                json!({
                    "parameters": scope_params(true),
                    "get": op("get", "read").render(None),
                    "put": op("put", "replace").render(None),
                    "patch": op("patch", "patch").render(None),
                }),
            );
        }
    }
    let schemas_used = reachable(s.definitions(), &Value::Object(paths.clone()));
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{KUBERNETES_MINOR}.0")},
        "paths": paths,
        "components": {
            "schemas": schemas_used,
            "securitySchemes": {"BearerToken": {"type": "apiKey", "in": "header", "name": "authorization", "description": "Bearer Token authentication"}},
        },
    })
}

/// The definitions `from` refers to, directly or through other definitions.
fn reachable(definitions: &Map<String, Value>, from: &Value) -> Map<String, Value> {
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(name) = map.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix(REF_PREFIX)) {
                    out.push(name.to_string());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(list) => list.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut found = Map::new();
    let mut pending = Vec::new();
    refs(from, &mut pending);
    while let Some(name) = pending.pop() {
        if found.contains_key(&name) {
            continue;
        }
        if let Some(definition) = definitions.get(&name) {
            refs(definition, &mut pending);
            found.insert(name, definition.clone());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_operations_list_field_validation_and_kinds_match_their_definitions() {
        let doc = document("apps", "v1");
        let item = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
        let patch = &item["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"],
            json!({"group": "apps", "kind": "Deployment", "version": "v1"})
        );
        let params: Vec<&str> =
            patch["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert!(params.contains(&"fieldValidation"), "{params:?}");
        assert!(patch["requestBody"]["content"].get("application/strategic-merge-patch+json").is_some());
        assert_eq!(patch["operationId"], "patchAppsV1NamespacedDeployment");
        let definition = &doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            definition["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
        assert!(doc["components"]["schemas"].get("io.k8s.api.core.v1.Container").is_some());
        assert!(doc["components"]["schemas"].get("io.k8s.api.autoscaling.v1.Scale").is_some());
        assert_eq!(
            doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"]["x-kubernetes-group-version-kind"]
                ["kind"],
            "Scale"
        );
        let core = document("", "v1");
        assert_eq!(core["paths"]["/api/v1/namespaces/{name}"]["get"]["operationId"], "readCoreV1Namespace");
        let rbac = document("rbac.authorization.k8s.io", "v1");
        assert_eq!(
            rbac["paths"]["/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}"]["get"]["operationId"],
            "readRbacAuthorizationV1ClusterRole"
        );
    }
}
