//! The Services every cluster has, made at start when missing (kube-apiserver's bootstrap
//! controller does the same): `kubernetes` in `default`, the API server at the service
//! network's first address, and `kube-dns` in `kube-system`, the cluster DNS at its tenth.
//!
//! An existing Service of either name is left as it is, whatever it says.

use serde_json::{Value, json};

use crate::objects::{Objects, Target, WriteOptions};
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

/// Creates whichever of the two is missing. One that cannot be created (its address taken by a
/// user's Service, say) is reported and left out: the cluster works without it.
pub async fn ensure(objects: &Objects, api_port: u16) -> Result<(), ApiError> {
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
