//! Parsing Kubernetes REST paths into the resource they address.
//!
//! `/api/v1/...` is the core group, `/apis/<group>/<version>/...` the others; after that come
//! `[namespaces/<ns>/]<resource>[/<name>[/<subresource>]]`. `namespaces/<name>/<x>` is a namespace's
//! subresource unless `<x>` is a namespaced resource of the same group version.

use wasmkube_api::{Kind, kinds};

use crate::objects::Target;

/// A resource request's target and subresource.
#[derive(Debug, Clone)]
pub struct ResourcePath {
    pub target: Target,
    pub subresource: Option<String>,
}

/// Why a path is not a resource path we serve.
#[derive(Debug, PartialEq, Eq)]
pub enum PathError {
    /// Not under `/api/v1` or `/apis/<g>/<v>`, or malformed.
    NotAResourcePath,
    /// Under a known prefix, but no such resource.
    UnknownResource,
}

pub fn parse(path: &str) -> Result<ResourcePath, PathError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(PathError::NotAResourcePath),
    };
    if rest.is_empty() || rest.iter().any(|s| s.is_empty()) {
        return Err(PathError::NotAResourcePath);
    }
    let find = |plural: &str| kinds::by_resource(group, version, plural).ok_or(PathError::UnknownResource);
    let target = |kind: &'static Kind, namespace: Option<&str>, name: Option<&str>| Target {
        kind,
        namespace: namespace.map(String::from),
        name: name.map(String::from),
    };
    let namespaced_resource = |plural: &str| kinds::by_resource(group, version, plural).filter(|k| k.namespaced);
    let (target, sub) = match rest {
        ["namespaces", ns, resource, more @ ..] if namespaced_resource(resource).is_some() => {
            let kind = namespaced_resource(resource).expect("checked by the guard");
            match more {
                [] => (target(kind, Some(ns), None), None),
                [name] => (target(kind, Some(ns), Some(name)), None),
                [name, sub] => (target(kind, Some(ns), Some(name)), Some(*sub)),
                _ => return Err(PathError::NotAResourcePath),
            }
        }
        [resource] => (target(find(resource)?, None, None), None),
        [resource, name] => (target(find(resource)?, None, Some(name)), None),
        [resource, name, sub] => (target(find(resource)?, None, Some(name)), Some(*sub)),
        _ => return Err(PathError::NotAResourcePath),
    };
    // A namespaced kind addressed by name needs its namespace; a collection without one lists all.
    if target.kind.namespaced && target.namespace.is_none() && target.name.is_some() {
        return Err(PathError::UnknownResource);
    }
    Ok(ResourcePath { target, subresource: sub.map(String::from) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(path: &str) -> String {
        match parse(path) {
            Ok(p) => format!(
                "{}/{} ns={:?} name={:?} sub={:?}",
                p.target.kind.group, p.target.kind.plural, p.target.namespace, p.target.name, p.subresource
            ),
            Err(e) => format!("{e:?}"),
        }
    }

    #[test]
    fn paths_resolve_to_kind_namespace_name_and_subresource() {
        for (path, want) in [
            ("/api/v1/pods", "/pods ns=None name=None sub=None"),
            ("/api/v1/namespaces/default/pods", "/pods ns=Some(\"default\") name=None sub=None"),
            ("/api/v1/namespaces/default/pods/web", "/pods ns=Some(\"default\") name=Some(\"web\") sub=None"),
            (
                "/api/v1/namespaces/default/pods/web/status",
                "/pods ns=Some(\"default\") name=Some(\"web\") sub=Some(\"status\")",
            ),
            ("/api/v1/namespaces", "/namespaces ns=None name=None sub=None"),
            ("/api/v1/namespaces/default", "/namespaces ns=None name=Some(\"default\") sub=None"),
            ("/api/v1/namespaces/default/status", "/namespaces ns=None name=Some(\"default\") sub=Some(\"status\")"),
            ("/api/v1/nodes/n1", "/nodes ns=None name=Some(\"n1\") sub=None"),
            (
                "/apis/apps/v1/namespaces/x/deployments/web/scale",
                "apps/deployments ns=Some(\"x\") name=Some(\"web\") sub=Some(\"scale\")",
            ),
            ("/apis/apps/v1/deployments", "apps/deployments ns=None name=None sub=None"),
            ("/api/v1/widgets", "UnknownResource"),
            ("/apis/apps/v1/pods", "UnknownResource"),
            ("/api/v1/pods/web", "UnknownResource"),
            ("/healthz", "NotAResourcePath"),
            ("/api/v1", "NotAResourcePath"),
        ] {
            assert_eq!(show(path), want, "{path}");
        }
    }
}
