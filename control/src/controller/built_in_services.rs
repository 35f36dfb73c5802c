//! The Services every cluster has, made at start when missing (kube-apiserver's bootstrap
//! controller does the same): `kubernetes` in `default`, the API server at the service
//! network's first address, and `kube-dns` in `kube-system`, the cluster DNS at its tenth.
//!
//! An existing Service of either name is left as it is, whatever it says. The `kubernetes`
//! Service's Endpoints and EndpointSlice name the API server's address, rewritten on every start.

use serde_json::{Value, json};

use std::net::{IpAddr, SocketAddr};

use crate::objects::{Objects, PatchKind, Subresource, Target, WriteOptions};
use crate::status::ApiError;

/// The port the `kubernetes` Service is reached on, as in Kubernetes.
const API_SERVICE_PORT: u16 = 443;

fn services(namespace: &str) -> Target {
    let kind = wasmkube_api::kinds::by_resource("", "v1", "services").expect("services are registered");
    Target { kind, namespace: Some(namespace.into()), name: None }
}

/// The `kubernetes` Service, forwarding to the API server's `api_port`.
fn kubernetes(objects: &Objects, api_port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "clusterIP": objects.service_network().kubernetes_ip().to_string(),
            "ports": [{"name": "https", "port": API_SERVICE_PORT, "protocol": "TCP", "targetPort": api_port}],
        },
    })
}

/// The `kube-dns` Service: DNS on port 53 over UDP and TCP.
fn kube_dns(objects: &Objects) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "KubeDNS"}},
        "spec": {
            "clusterIP": objects.service_network().dns_ip().to_string(),
            "selector": {"k8s-app": "kube-dns"},
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
    })
}

/// The `kubernetes` Service's endpoints: the API server itself, as kube-apiserver's endpoint
/// reconciler writes them (an Endpoints object and an EndpointSlice, both named `kubernetes`),
/// put right on every start (the address may have changed).
async fn ensure_api_endpoints(objects: &Objects, api: SocketAddr) -> Result<(), ApiError> {
    let ip = if api.ip().is_unspecified() { IpAddr::from([127, 0, 0, 1]) } else { api.ip() };
    let target = |resource: &str, group: &str| {
        let kind = wasmkube_api::kinds::by_resource(group, "v1", resource).expect("built-in kinds are registered");
        Target { kind, namespace: Some("default".into()), name: Some("kubernetes".into()) }
    };
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip.to_string()}], "ports": [{"name": "https", "port": api.port(), "protocol": "TCP"}]}],
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": if ip.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": api.port(), "protocol": "TCP"}],
    });
    let endpoints_now = json!({"subsets": endpoints["subsets"]});
    let slice_now = json!({"endpoints": slice["endpoints"], "ports": slice["ports"]});
    for (target, body, now) in [
        (target("endpoints", ""), endpoints, endpoints_now),
        (target("endpointslices", "discovery.k8s.io"), slice, slice_now),
    ] {
        let collection = Target { name: None, ..target.clone() };
        match objects.create(&collection, body, &WriteOptions::default()).await {
            Ok(_) => {}
            Err(ApiError::AlreadyExists { .. }) => {
                objects.patch(&target, now, PatchKind::Merge, Subresource::Main, &WriteOptions::default()).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Creates whichever of the two is missing. One that cannot be created (its address taken by a
/// user's Service, say) is reported and left out: the cluster works without it.
pub async fn ensure(objects: &Objects, api: SocketAddr) -> Result<(), ApiError> {
    let api_port = api.port();
    ensure_api_endpoints(objects, api).await?;
    for (namespace, service) in [("default", kubernetes(objects, api_port)), ("kube-system", kube_dns(objects))] {
        match objects.create(&services(namespace), service, &WriteOptions::default()).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(ApiError::Invalid { name, causes, .. }) => {
                let causes: Vec<String> = causes.iter().map(ToString::to_string).collect();
                tracing::warn!(service = %name, %namespace, causes = %causes.join("; "), "built-in Service not created");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
