//! Discovery and `/version`: which groups, versions and resources the server has, in both forms
//! kubectl reads.
//!
//! One model ([`served`]: every resource of a group version with its subresources) renders two
//! documents: the aggregated `apidiscovery.k8s.io` list on `/api` and `/apis`, which kubectl 1.30+
//! asks for first, and legacy discovery (`APIVersions`, `APIGroupList`, `APIResourceList`), which
//! older clients and `kubectl auth can-i` use. Which one `/api` and `/apis` answer is decided by
//! the Accept header ([`negotiate`]); a client gets the aggregated form only when it names its
//! exact media type, and the response says which form it is in its Content-Type, because that is
//! all kubectl goes by.

use axum::Json;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, APIVersions, GroupVersionForDiscovery,
};
use kube_core::discovery::v2 as aggregated;
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

/// A group, version and kind, as discovery names what a resource's requests take and answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gvk {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
}

/// A subresource as discovery declares it.
#[derive(Debug, Clone)]
pub struct Subresource {
    pub name: &'static str,
    /// What its requests answer (`autoscaling/v1 Scale` for `scale`).
    pub kind: Gvk,
    pub verbs: &'static [&'static str],
}

/// A resource of one group version: a stored kind, or a virtual one (a review that is answered
/// and never stored, like `selfsubjectaccessreviews`).
#[derive(Debug, Clone)]
pub struct Resource {
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub kind: Gvk,
    pub verbs: &'static [&'static str],
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: Vec<Subresource>,
}

const STORED_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
const READ_WRITE: &[&str] = &["get", "patch", "update"];

/// A resource that is answered rather than stored.
pub struct Virtual {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
}

/// The reviews of [`super::access`] and the resource metrics of [`super::resource_metrics`].
pub const VIRTUAL: &[Virtual] = &[
    Virtual {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectaccessreviews",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
        verbs: &["create"],
    },
    Virtual {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectrulesreviews",
        kind: "SelfSubjectRulesReview",
        namespaced: false,
        verbs: &["create"],
    },
    Virtual {
        group: "metrics.k8s.io",
        version: "v1beta1",
        plural: "nodes",
        kind: "NodeMetrics",
        namespaced: false,
        verbs: &["get", "list"],
    },
    Virtual {
        group: "metrics.k8s.io",
        version: "v1beta1",
        plural: "pods",
        kind: "PodMetrics",
        namespaced: true,
        verbs: &["get", "list"],
    },
];

fn gvk(kind: &'static Kind) -> Gvk {
    Gvk { group: kind.group, version: kind.version, kind: kind.kind }
}

fn subresources(kind: &'static Kind) -> Vec<Subresource> {
    let same = gvk(kind);
    let core = |kind| Gvk { group: "", version: "v1", kind };
    let mut subs = Vec::new();
    if kind.group.is_empty() && kind.kind == "Pod" {
        subs.push(Subresource { name: "attach", kind: core("PodAttachOptions"), verbs: &["create", "get"] });
        subs.push(Subresource { name: "binding", kind: core("Binding"), verbs: &["create"] });
        subs.push(Subresource {
            name: "eviction",
            kind: Gvk { group: "policy", version: "v1", kind: "Eviction" },
            verbs: &["create"],
        });
        subs.push(Subresource { name: "exec", kind: core("PodExecOptions"), verbs: &["create", "get"] });
        subs.push(Subresource { name: "log", kind: same, verbs: &["get"] });
        subs.push(Subresource { name: "portforward", kind: core("PodPortForwardOptions"), verbs: &["create", "get"] });
    }
    if kind.group.is_empty() && kind.kind == "Namespace" {
        subs.push(Subresource { name: "finalize", kind: same, verbs: &["update"] });
    }
    if kind.has_scale {
        subs.push(Subresource {
            name: "scale",
            kind: Gvk { group: "autoscaling", version: "v1", kind: "Scale" },
            verbs: READ_WRITE,
        });
    }
    if kind.has_status {
        subs.push(Subresource { name: "status", kind: same, verbs: READ_WRITE });
    }
    subs
}

/// Every resource served at `group`/`version`, in discovery order.
pub fn served(group: &str, version: &str) -> Vec<Resource> {
    let stored = kinds::ALL.iter().filter(|k| k.group == group && k.version == version).map(|k| Resource {
        plural: k.plural,
        singular: k.singular,
        namespaced: k.namespaced,
        kind: gvk(k),
        verbs: STORED_VERBS,
        short_names: k.short_names,
        categories: k.categories,
        subresources: subresources(k),
    });
    let answered = VIRTUAL.iter().filter(|v| v.group == group && v.version == version).map(|v| Resource {
        plural: v.plural,
        singular: "",
        namespaced: v.namespaced,
        kind: Gvk { group: v.group, version: v.version, kind: v.kind },
        verbs: v.verbs,
        short_names: &[],
        categories: &[],
        subresources: Vec::new(),
    });
    stored.chain(answered).collect()
}

/// Every group (core first, as `""`) with the one version it serves: the stored kinds' and the
/// answered ones'.
fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut all = kinds::group_versions();
    for v in VIRTUAL {
        if !all.contains(&(v.group, v.version)) {
            all.push((v.group, v.version));
        }
    }
    all
}

/// The form of discovery a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Legacy,
    /// `apidiscovery.k8s.io/<version>`, `v2` or `v2beta1`.
    Aggregated(&'static str),
}

/// Picks the first media range in `accept` that the server can answer, as Kubernetes does: the
/// aggregated list in the version the client names, else legacy for plain JSON or anything else.
pub fn negotiate(accept: &str) -> Form {
    for range in super::media::ranges(accept).filter(|r| r.json) {
        match (range.as_kind, range.group, range.version) {
            ("", _, _) => return Form::Legacy,
            ("APIGroupDiscoveryList", "apidiscovery.k8s.io", "v2") => return Form::Aggregated("v2"),
            ("APIGroupDiscoveryList", "apidiscovery.k8s.io", "v2beta1") => return Form::Aggregated("v2beta1"),
            _ => continue,
        }
    }
    Form::Legacy
}

fn accept(headers: &HeaderMap) -> &str {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// `/api`: the core group's versions, or the aggregated list of its resources.
pub async fn core_versions(headers: HeaderMap) -> Response {
    match negotiate(accept(&headers)) {
        Form::Aggregated(version) => aggregated_response(version, vec![aggregated_group("")]),
        Form::Legacy => {
            let versions = APIVersions { versions: vec!["v1".into()], server_address_by_client_cidrs: vec![] };
            legacy_response(&versions, "APIVersions", "")
        }
    }
}

/// `/apis`: every named group, or the aggregated list of their resources.
pub async fn groups(headers: HeaderMap) -> Response {
    let named: Vec<&str> = group_versions().into_iter().map(|(g, _)| g).filter(|g| !g.is_empty()).collect();
    match negotiate(accept(&headers)) {
        Form::Aggregated(version) => aggregated_response(version, named.into_iter().map(aggregated_group).collect()),
        Form::Legacy => {
            let list = APIGroupList { groups: named.into_iter().filter_map(legacy_group).collect() };
            legacy_response(&list, "APIGroupList", "v1")
        }
    }
}

pub async fn group(Path(group): Path<String>) -> Response {
    match legacy_group(&group) {
        Some(g) if !group.is_empty() => legacy_response(&g, "APIGroup", "v1"),
        _ => ApiError::NoSuchResource.into_response(),
    }
}

pub async fn core_resources() -> Response {
    resource_list("", "v1")
}

pub async fn group_resources(Path((group, version)): Path<(String, String)>) -> Response {
    resource_list(&group, &version)
}

fn legacy_group(group: &str) -> Option<APIGroup> {
    let (_, version) = group_versions().into_iter().find(|(g, _)| *g == group)?;
    let gv = GroupVersionForDiscovery { group_version: format!("{group}/{version}"), version: version.into() };
    Some(APIGroup {
        name: group.into(),
        preferred_version: Some(gv.clone()),
        server_address_by_client_cidrs: None,
        versions: vec![gv],
    })
}

fn legacy_response(body: &impl serde::Serialize, kind: &str, api_version: &str) -> Response {
    let mut value = serde_json::to_value(body).expect("discovery documents serialize");
    value["kind"] = json!(kind);
    if !api_version.is_empty() {
        value["apiVersion"] = json!(api_version);
    }
    Json(value).into_response()
}

fn resource_list(group: &str, version: &str) -> Response {
    let resources = served(group, version);
    if resources.is_empty() {
        return ApiError::NoSuchResource.into_response();
    }
    let strings = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let nonempty = |s: &[&str]| (!s.is_empty()).then(|| strings(s));
    let mut list = Vec::new();
    for r in &resources {
        list.push(APIResource {
            name: r.plural.into(),
            singular_name: r.singular.into(),
            namespaced: r.namespaced,
            kind: r.kind.kind.into(),
            verbs: strings(r.verbs),
            short_names: nonempty(r.short_names),
            categories: nonempty(r.categories),
            ..Default::default()
        });
        for sub in &r.subresources {
            // A subresource answering another group's kind names that group, as `pods/eviction` does.
            let foreign = sub.kind.group != r.kind.group || sub.kind.version != r.kind.version;
            list.push(APIResource {
                name: format!("{}/{}", r.plural, sub.name),
                singular_name: String::new(),
                namespaced: r.namespaced,
                kind: sub.kind.kind.into(),
                group: foreign.then(|| sub.kind.group.into()),
                version: foreign.then(|| sub.kind.version.into()),
                verbs: strings(sub.verbs),
                ..Default::default()
            });
        }
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    legacy_response(&APIResourceList { group_version, resources: list }, "APIResourceList", "v1")
}

fn aggregated_gvk(g: Gvk) -> aggregated::GroupVersionKind {
    aggregated::GroupVersionKind {
        group: Some(g.group.into()),
        version: Some(g.version.into()),
        kind: Some(g.kind.into()),
    }
}

/// One group's entry in the aggregated list (the core group's has no name).
fn aggregated_group(group: &str) -> aggregated::APIGroupDiscovery {
    let strings = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let versions = group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(_, version)| aggregated::APIVersionDiscovery {
            version: Some(version.into()),
            freshness: Some("Current".into()),
            resources: served(group, version)
                .into_iter()
                .map(|r| aggregated::APIResourceDiscovery {
                    resource: Some(r.plural.into()),
                    response_kind: Some(aggregated_gvk(r.kind)),
                    scope: Some(if r.namespaced { "Namespaced" } else { "Cluster" }.into()),
                    singular_resource: Some(if r.singular.is_empty() {
                        r.kind.kind.to_lowercase()
                    } else {
                        r.singular.into()
                    }),
                    verbs: strings(r.verbs),
                    short_names: strings(r.short_names),
                    categories: strings(r.categories),
                    subresources: r
                        .subresources
                        .iter()
                        .map(|s| aggregated::APISubresourceDiscovery {
                            subresource: Some(s.name.into()),
                            response_kind: Some(aggregated_gvk(s.kind)),
                            accepted_types: Vec::new(),
                            verbs: strings(s.verbs),
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    let metadata = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: (!group.is_empty()).then(|| group.to_string()),
        ..Default::default()
    };
    aggregated::APIGroupDiscovery { metadata: Some(metadata), versions }
}

fn aggregated_response(version: &str, items: Vec<aggregated::APIGroupDiscovery>) -> Response {
    let list = aggregated::APIGroupDiscoveryList { metadata: Some(Default::default()), items };
    let mut value = serde_json::to_value(&list).expect("discovery documents serialize");
    value["kind"] = json!("APIGroupDiscoveryList");
    value["apiVersion"] = json!(format!("apidiscovery.k8s.io/{version}"));
    let content_type = format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    let mut response = Json(value).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(&content_type).expect("a valid header"));
    headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_clients_order_and_exact_versions() {
        let kubectl_130 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,\
                           application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(negotiate(kubectl_130), Form::Aggregated("v2"));
        let kubectl_127 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(negotiate(kubectl_127), Form::Aggregated("v2beta1"));
        assert_eq!(negotiate("application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList"), Form::Legacy);
        assert_eq!(negotiate("application/json, */*"), Form::Legacy);
        assert_eq!(negotiate(""), Form::Legacy);
        assert_eq!(
            negotiate("application/json,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"),
            Form::Legacy
        );
    }

    #[test]
    fn scale_and_eviction_name_their_own_group() {
        let apps = served("apps", "v1");
        let deploy = apps.iter().find(|r| r.plural == "deployments").expect("deployments");
        let scale = deploy.subresources.iter().find(|s| s.name == "scale").expect("scale");
        assert_eq!(scale.kind, Gvk { group: "autoscaling", version: "v1", kind: "Scale" });
        let core = served("", "v1");
        let pods = core.iter().find(|r| r.plural == "pods").expect("pods");
        let names: Vec<_> = pods.subresources.iter().map(|s| s.name).collect();
        assert_eq!(names, ["attach", "binding", "eviction", "exec", "log", "portforward", "status"]);
        assert!(served("authorization.k8s.io", "v1").iter().any(|r| r.plural == "selfsubjectaccessreviews"));
    }
}
