//! The registry of every Kubernetes kind wasmkube stores and serves.
//!
//! One table, [`ALL`], names each kind's group, version, resource names, scope and subresources. The
//! API server routes and validates by it, discovery is rendered from it, and the CLI resolves the
//! names users type (`po`, `deploy`, `deployments.apps`) through [`resolve`].

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use k8s_openapi::api::{
    apps::v1 as apps, autoscaling::v2 as autoscaling, batch::v1 as batch, coordination::v1 as coordination,
    core::v1 as core, discovery::v1 as discovery, networking::v1 as networking, policy::v1 as policy, rbac::v1 as rbac,
};

/// One served kind: what the REST paths, discovery documents and storage keys are made of.
#[derive(Debug)]
pub struct Kind {
    /// API group; empty for the core ("legacy") group served under `/api/v1`.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Lower-case plural, the resource name in paths (`pods`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// Whether the kind has a `status` subresource (main-resource writes then keep the old status).
    pub has_status: bool,
    /// Whether the kind has a `scale` subresource (autoscaling/v1 Scale over `spec.replicas`).
    pub has_scale: bool,
    /// Discovery categories (`all` makes `kubectl get all` include the kind).
    pub categories: &'static [&'static str],
    /// Decodes into the typed k8s-openapi struct and encodes back: the canonical stored form. It fails
    /// on wrongly typed fields and drops fields the type does not know.
    normalize: fn(&Value) -> Result<Value, serde_json::Error>,
    /// Registers the kind's OpenAPI schema (and every schema it refers to) with a generator and
    /// returns a reference to it.
    schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
}

impl Kind {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// `pods` for core kinds, `deployments.apps` otherwise: how kubectl names a resource in messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// `pod` / `deployment.apps`, as in kubectl's result lines (`deployment.apps/web created`).
    pub fn qualified_singular(&self) -> String {
        if self.group.is_empty() { self.singular.to_string() } else { format!("{}.{}", self.singular, self.group) }
    }

    /// The canonical form of `object`: see [`Kind::normalize`].
    pub fn normalize(&self, object: &Value) -> Result<Value, serde_json::Error> {
        (self.normalize)(object)
    }

    /// Adds the kind's schema to `generator`'s definitions; returns a `$ref` to it.
    pub fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        (self.schema)(generator)
    }

    /// The storage key prefix of this resource: `/registry/<group>/<plural>/`, with `core` for the
    /// core group. Namespaced keys continue `<namespace>/<name>`, cluster-scoped ones `<name>`.
    pub fn key_prefix(&self) -> String {
        let group = if self.group.is_empty() { "core" } else { self.group };
        format!("/registry/{group}/{}/", self.plural)
    }

    /// The storage key of one object (`namespace` is ignored for cluster-scoped kinds).
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{ns}/{name}", self.key_prefix()),
            _ => format!("{}{name}", self.key_prefix()),
        }
    }
}

/// Decoded from the borrowed tree (not a copy of it: the caller still needs the input, to name
/// the fields that did not survive) and encoded back.
fn roundtrip<T: DeserializeOwned + Serialize>(object: &Value) -> Result<Value, serde_json::Error> {
    serde_json::to_value(T::deserialize(object)?)
}

macro_rules! kind {
    ($ty:ty, $group:literal, $version:literal, $kind:literal, $plural:literal, $singular:literal,
     short: [$($short:literal),*], namespaced: $ns:literal, status: $status:literal,
     scale: $scale:literal, categories: [$($cat:literal),*]) => {
        Kind {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            short_names: &[$($short),*],
            namespaced: $ns,
            has_status: $status,
            has_scale: $scale,
            categories: &[$($cat),*],
            normalize: roundtrip::<$ty>,
            schema: |generator| generator.subschema_for::<$ty>(),
        }
    };
}

/// Every kind the control plane serves, in discovery order.
pub static ALL: &[Kind] = &[
    kind!(core::Namespace, "", "v1", "Namespace", "namespaces", "namespace", short: ["ns"], namespaced: false, status: true, scale: false, categories: []),
    kind!(core::Pod, "", "v1", "Pod", "pods", "pod", short: ["po"], namespaced: true, status: true, scale: false, categories: ["all"]),
    kind!(core::Service, "", "v1", "Service", "services", "service", short: ["svc"], namespaced: true, status: true, scale: false, categories: ["all"]),
    kind!(core::Endpoints, "", "v1", "Endpoints", "endpoints", "endpoints", short: ["ep"], namespaced: true, status: false, scale: false, categories: []),
    kind!(core::ConfigMap, "", "v1", "ConfigMap", "configmaps", "configmap", short: ["cm"], namespaced: true, status: false, scale: false, categories: []),
    kind!(core::Secret, "", "v1", "Secret", "secrets", "secret", short: [], namespaced: true, status: false, scale: false, categories: []),
    kind!(core::Node, "", "v1", "Node", "nodes", "node", short: ["no"], namespaced: false, status: true, scale: false, categories: []),
    kind!(core::Event, "", "v1", "Event", "events", "event", short: ["ev"], namespaced: true, status: false, scale: false, categories: []),
    kind!(core::ServiceAccount, "", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", short: ["sa"], namespaced: true, status: false, scale: false, categories: []),
    kind!(apps::Deployment, "apps", "v1", "Deployment", "deployments", "deployment", short: ["deploy"], namespaced: true, status: true, scale: true, categories: ["all"]),
    kind!(apps::ReplicaSet, "apps", "v1", "ReplicaSet", "replicasets", "replicaset", short: ["rs"], namespaced: true, status: true, scale: true, categories: ["all"]),
    kind!(apps::DaemonSet, "apps", "v1", "DaemonSet", "daemonsets", "daemonset", short: ["ds"], namespaced: true, status: true, scale: false, categories: ["all"]),
    kind!(apps::StatefulSet, "apps", "v1", "StatefulSet", "statefulsets", "statefulset", short: ["sts"], namespaced: true, status: true, scale: true, categories: ["all"]),
    kind!(batch::Job, "batch", "v1", "Job", "jobs", "job", short: [], namespaced: true, status: true, scale: false, categories: ["all"]),
    kind!(batch::CronJob, "batch", "v1", "CronJob", "cronjobs", "cronjob", short: ["cj"], namespaced: true, status: true, scale: false, categories: ["all"]),
    kind!(discovery::EndpointSlice, "discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", short: [], namespaced: true, status: false, scale: false, categories: []),
    kind!(coordination::Lease, "coordination.k8s.io", "v1", "Lease", "leases", "lease", short: [], namespaced: true, status: false, scale: false, categories: []),
    kind!(autoscaling::HorizontalPodAutoscaler, "autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", short: ["hpa"], namespaced: true, status: true, scale: false, categories: ["all"]),
    kind!(rbac::Role, "rbac.authorization.k8s.io", "v1", "Role", "roles", "role", short: [], namespaced: true, status: false, scale: false, categories: []),
    kind!(rbac::ClusterRole, "rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", short: [], namespaced: false, status: false, scale: false, categories: []),
    kind!(rbac::RoleBinding, "rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", short: [], namespaced: true, status: false, scale: false, categories: []),
    kind!(rbac::ClusterRoleBinding, "rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", short: [], namespaced: false, status: false, scale: false, categories: []),
    kind!(policy::PodDisruptionBudget, "policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", short: ["pdb"], namespaced: true, status: true, scale: false, categories: []),
    kind!(networking::NetworkPolicy, "networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", "networkpolicy", short: ["netpol"], namespaced: true, status: false, scale: false, categories: []),
];

/// The kind served at `group`/`version` under resource name `plural`.
pub fn by_resource(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    // Looked up on every write: an index rather than a scan of every kind.
    static INDEX: LazyLock<HashMap<(&str, &str, &str), &Kind>> =
        LazyLock::new(|| ALL.iter().map(|k| ((k.group, k.version, k.plural), k)).collect());
    INDEX.get(&(group, version, plural)).copied()
}

/// The kind named by a manifest's `apiVersion` and `kind`.
pub fn by_api_version_kind(api_version: &str, kind: &str) -> Option<&'static Kind> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    ALL.iter().find(|k| k.group == group && k.version == version && k.kind == kind)
}

/// Resolves a resource name as a user types it: plural, singular, short name or kind, any case,
/// optionally qualified with its group (`deployments.apps`, `deploy.apps`).
pub fn resolve(name: &str) -> Option<&'static Kind> {
    let name = name.to_ascii_lowercase();
    let matches = |k: &Kind, n: &str| {
        k.plural == n || k.singular == n || k.short_names.contains(&n) || k.kind.eq_ignore_ascii_case(n)
    };
    ALL.iter().find(|k| matches(k, &name)).or_else(|| {
        let (short, group) = name.split_once('.')?;
        ALL.iter().find(|k| k.group == group && matches(k, short))
    })
}

/// Every group version with at least one kind, in first-seen order (the core group is `""`).
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut all: Vec<(&'static str, &'static str)> = Vec::new();
    for kind in ALL {
        if !all.contains(&(kind.group, kind.version)) {
            all.push((kind.group, kind.version));
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_accepts_plural_singular_short_kind_and_group_qualified_names() {
        for (typed, kind) in [
            ("pods", "Pod"),
            ("pod", "Pod"),
            ("po", "Pod"),
            ("Pod", "Pod"),
            ("deploy", "Deployment"),
            ("deployments.apps", "Deployment"),
            ("deploy.apps", "Deployment"),
            ("hpa", "HorizontalPodAutoscaler"),
            ("netpol", "NetworkPolicy"),
            ("endpoints", "Endpoints"),
        ] {
            assert_eq!(resolve(typed).map(|k| k.kind), Some(kind), "{typed}");
        }
        assert!(resolve("widgets").is_none());
        assert!(resolve("pods.apps").is_none());
    }

    #[test]
    fn every_kind_is_found_by_its_api_version_and_kind() {
        for kind in ALL {
            let found = by_api_version_kind(&kind.api_version(), kind.kind).expect("registered");
            assert_eq!(found.plural, kind.plural);
            assert!(by_resource(kind.group, kind.version, kind.plural).is_some());
        }
    }

    #[test]
    fn keys_separate_scopes_and_groups() {
        let pod = resolve("pod").expect("pods are registered");
        assert_eq!(pod.key(Some("default"), "web"), "/registry/core/pods/default/web");
        let ns = resolve("ns").expect("namespaces are registered");
        assert_eq!(ns.key(None, "default"), "/registry/core/namespaces/default");
        let deploy = resolve("deploy").expect("deployments are registered");
        assert_eq!(deploy.key_prefix(), "/registry/apps/deployments/");
    }

    #[test]
    fn every_kind_is_found_by_its_resource_and_by_its_api_version_and_kind() {
        for kind in ALL {
            let found = by_resource(kind.group, kind.version, kind.plural).expect("by resource");
            assert!(std::ptr::eq(found, kind), "{}", kind.kind);
            let found = by_api_version_kind(&kind.api_version(), kind.kind).expect("by apiVersion and kind");
            assert!(std::ptr::eq(found, kind), "{}", kind.kind);
        }
        assert!(by_resource("apps", "v1", "pods").is_none());
        assert!(by_api_version_kind("apps/v1", "Pod").is_none());
        assert!(by_api_version_kind("x/apps/v1", "Deployment").is_none());
    }

    #[test]
    fn normalize_drops_unknown_fields_and_rejects_wrong_types() {
        let cm = resolve("cm").expect("configmaps are registered");
        let out = cm
            .normalize(&serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "a"}, "data": {"k": "v"}, "bogus": 1}))
            .expect("valid configmap");
        assert!(out.get("bogus").is_none());
        assert_eq!(out["data"]["k"], "v");
        assert!(cm.normalize(&serde_json::json!({"metadata": {"name": 5}})).is_err());
    }
}
