//! From what the user typed (`pods,svc web`, `deploy/web`, `all`) to kinds, names and API handles.

use kube::Api;
use kube::core::{ApiResource, DynamicObject};
use serde_json::Value;
use wasmkube_api::{Kind, kinds};

use crate::Error;

/// One kind to act on and the names given for it (empty: every object the query selects).
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: &'static Kind,
    pub names: Vec<String>,
}

/// Parses `TYPE[,TYPE...] [NAME...]` or `TYPE/NAME...` as kubectl does. `all` expands to the kinds
/// in the `all` category. Targets keep the order the kinds were first named.
pub fn parse_targets(args: &[String]) -> Result<Vec<Target>, Error> {
    let Some(first) = args.first() else {
        return Err(Error::Usage("you must specify the type of resource".to_string()));
    };
    if first.contains('/') {
        return parse_slash_form(args);
    }
    let names: Vec<String> = args[1..].to_vec();
    if names.iter().any(|n| n.contains('/')) {
        return Err(Error::Usage(
            "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form"
                .to_string(),
        ));
    }
    let mut targets: Vec<Target> = Vec::new();
    for typed in first.split(',').filter(|t| !t.is_empty()) {
        for kind in kinds_named(typed)? {
            if !targets.iter().any(|t| std::ptr::eq(t.kind, kind)) {
                targets.push(Target { kind, names: names.clone() });
            }
        }
    }
    Ok(targets)
}

fn parse_slash_form(args: &[String]) -> Result<Vec<Target>, Error> {
    let mut targets: Vec<Target> = Vec::new();
    for arg in args {
        let Some((typed, name)) = arg.split_once('/').filter(|(t, n)| !t.is_empty() && !n.is_empty()) else {
            return Err(Error::Usage(format!(
                "arguments in resource/name form must have a single resource and name, got \"{arg}\""
            )));
        };
        let kind = resolve_kind(typed)?;
        match targets.iter_mut().find(|t| std::ptr::eq(t.kind, kind)) {
            Some(target) => target.names.push(name.to_string()),
            None => targets.push(Target { kind, names: vec![name.to_string()] }),
        }
    }
    Ok(targets)
}

fn kinds_named(typed: &str) -> Result<Vec<&'static Kind>, Error> {
    if typed.eq_ignore_ascii_case("all") {
        return Ok(kinds::ALL.iter().filter(|k| k.categories.contains(&"all")).collect());
    }
    Ok(vec![resolve_kind(typed)?])
}

/// A registered kind by any of its names, or kubectl's error for an unknown type.
pub fn resolve_kind(typed: &str) -> Result<&'static Kind, Error> {
    kinds::resolve(typed).ok_or_else(|| Error::Usage(format!("the server doesn't have a resource type \"{typed}\"")))
}

/// The dynamic-API description of a registered kind.
pub fn api_resource(kind: &Kind) -> ApiResource {
    ApiResource {
        group: kind.group.to_string(),
        version: kind.version.to_string(),
        api_version: kind.api_version(),
        kind: kind.kind.to_string(),
        plural: kind.plural.to_string(),
    }
}

/// An API handle for `kind`: in `namespace` for namespaced kinds, else across all namespaces
/// (`None`) or cluster-scoped.
pub fn api(client: kube::Client, kind: &Kind, namespace: Option<&str>) -> Api<DynamicObject> {
    let resource = api_resource(kind);
    match namespace {
        Some(ns) if kind.namespaced => Api::namespaced_with(client, ns, &resource),
        _ => Api::all_with(client, &resource),
    }
}

/// An object as JSON with `apiVersion` and `kind` filled in: list items often arrive without them,
/// but printed objects and `-o yaml` need them.
pub fn to_value(kind: &Kind, object: &DynamicObject) -> Result<Value, Error> {
    let mut value = serde_json::to_value(object).map_err(|e| Error::Encode(e.to_string()))?;
    if let Some(map) = value.as_object_mut() {
        map.entry("apiVersion").or_insert_with(|| Value::String(kind.api_version()));
        map.entry("kind").or_insert_with(|| Value::String(kind.kind.to_string()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn summary(targets: &[Target]) -> Vec<String> {
        targets.iter().map(|t| format!("{}:{}", t.kind.plural, t.names.join(","))).collect()
    }

    #[test]
    fn types_and_names_parse_in_both_kubectl_forms() {
        let targets = parse_targets(&args(&["po,svc", "a", "b"])).expect("valid");
        assert_eq!(summary(&targets), ["pods:a,b", "services:a,b"]);
        let targets = parse_targets(&args(&["deploy/web", "pod/x", "deployments.apps/api"])).expect("valid");
        assert_eq!(summary(&targets), ["deployments:web,api", "pods:x"]);
        let targets = parse_targets(&args(&["all"])).expect("valid");
        assert!(summary(&targets).contains(&"pods:".to_string()));
        assert!(!summary(&targets).contains(&"configmaps:".to_string()));
    }

    #[test]
    fn unknown_types_and_mixed_forms_are_errors() {
        let err = parse_targets(&args(&["widgets"])).expect_err("unknown");
        assert_eq!(err.to_string(), "error: the server doesn't have a resource type \"widgets\"");
        assert!(parse_targets(&args(&["pods", "deploy/web"])).is_err());
        assert!(parse_targets(&args(&["pod/"])).is_err());
        assert!(parse_targets(&[]).is_err());
    }
}
