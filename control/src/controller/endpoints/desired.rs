//! What a Service's EndpointSlices and Endpoints should hold, from the Service and the pods its
//! selector picks: pure, so every rule has a table test.
//!
//! As in Kubernetes:
//! - a pod counts once it has an IP, until it finishes (phase Succeeded or Failed);
//! - `serving` is its Ready condition; `ready` is that, false while it terminates, and always true
//!   with `publishNotReadyAddresses`; `terminating` is whether it has a deletion timestamp;
//! - each Service port's `targetPort` is resolved per pod (a name is looked up among the pod's
//!   container ports, a number taken as is); pods whose ports resolve alike share a slice, at most
//!   [`MAX_ENDPOINTS`] endpoints to a slice; a pod a named port cannot be resolved on is left out;
//! - Endpoints (the legacy API) lists ready pods under `addresses` and not-ready ones under
//!   `notReadyAddresses`, and leaves out terminating pods unless `publishNotReadyAddresses`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Endpoints in one EndpointSlice, as Kubernetes' controller caps them by default.
pub const MAX_ENDPOINTS: usize = 100;

/// One resolved port of a slice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Port {
    pub name: String,
    pub port: i32,
    pub protocol: String,
}

/// One pod as an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: String,
    pub pod: String,
    pub uid: String,
    pub node: Option<String>,
    /// The pod's `hostname`, when its `subdomain` is the Service's name.
    pub hostname: Option<String>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

/// One slice's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    pub ports: Vec<Port>,
    pub endpoints: Vec<Endpoint>,
}

/// Whether a Service's endpoints are this controller's to keep: it has a selector.
pub fn managed(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some_and(|s| !s.is_empty())
        && service.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("ExternalName")
}

/// Whether `pod` is one the Service's selector picks (in its namespace).
pub fn selects(service: &Service, pod: &Pod) -> bool {
    let Some(selector) = service.spec.as_ref().and_then(|s| s.selector.as_ref()) else { return false };
    let labels = pod.metadata.labels.as_ref();
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The slices of `service` over the pods its selector picks (any order), endpoints ordered by
/// pod name, slices by their ports.
pub fn slices<'a>(service: &Service, pods: impl IntoIterator<Item = &'a Pod>) -> Vec<Slice> {
    let publish_not_ready = service.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let name = service.metadata.name.as_deref().unwrap_or_default();
    let mut groups: BTreeMap<Vec<Port>, Vec<Endpoint>> = BTreeMap::new();
    for pod in pods {
        let Some(endpoint) = endpoint(pod, name, publish_not_ready) else { continue };
        let Some(ports) = resolve_ports(service, pod) else { continue };
        groups.entry(ports).or_default().push(endpoint);
    }
    let mut slices = Vec::new();
    for (ports, mut endpoints) in groups {
        endpoints.sort_by(|a, b| a.pod.cmp(&b.pod));
        for chunk in endpoints.chunks(MAX_ENDPOINTS) {
            slices.push(Slice { ports: ports.clone(), endpoints: chunk.to_vec() });
        }
    }
    slices
}

fn endpoint(pod: &Pod, service_name: &str, publish_not_ready: bool) -> Option<Endpoint> {
    let status = pod.status.as_ref()?;
    let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let serving = status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let spec = pod.spec.as_ref();
    let hostname = spec
        .filter(|s| s.subdomain.as_deref() == Some(service_name))
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty());
    Some(Endpoint {
        ip,
        pod: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        node: spec.and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()),
        hostname,
        ready: publish_not_ready || (serving && !terminating),
        serving,
        terminating,
    })
}

/// The Service's ports with their target ports resolved on `pod`; `None` if a named one is not
/// among its container ports.
fn resolve_ports(service: &Service, pod: &Pod) -> Option<Vec<Port>> {
    let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
    let mut resolved = Vec::new();
    for port in ports.into_iter().flatten() {
        let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
        let number = match &port.target_port {
            None => port.port,
            Some(IntOrString::Int(0)) => port.port,
            Some(IntOrString::Int(n)) => *n,
            Some(IntOrString::String(name)) => match name.parse::<i32>() {
                Ok(n) => n,
                Err(_) => named_port(pod, name, &protocol)?,
            },
        };
        resolved.push(Port { name: port.name.clone().unwrap_or_default(), port: number, protocol });
    }
    resolved.sort();
    Some(resolved)
}

fn named_port(pod: &Pod, name: &str, protocol: &str) -> Option<i32> {
    let spec = pod.spec.as_ref()?;
    let containers = spec.containers.iter().chain(spec.init_containers.iter().flatten());
    containers.flat_map(|c| c.ports.iter().flatten()).find_map(|p| {
        let same_protocol = p.protocol.as_deref().unwrap_or("TCP") == protocol;
        (p.name.as_deref() == Some(name) && same_protocol).then_some(p.container_port)
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn service(spec: Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})).unwrap()
    }

    /// A pod `name` with labels app=web, IP `ip`, Ready as given, and a container port `http` 8080.
    fn pod(name: &str, ip: Option<&str>, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x",
                "ports": [{"name": "http", "containerPort": 8080}, {"name": "dns", "containerPort": 5353, "protocol": "UDP"}]}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    /// A slice as `(name, port)` pairs and `(pod, ready, serving, terminating)` rows.
    type Summary = (Vec<(String, i32)>, Vec<(String, bool, bool, bool)>);

    fn summary(slices: &[Slice]) -> Vec<Summary> {
        slices
            .iter()
            .map(|s| {
                (
                    s.ports.iter().map(|p| (p.name.clone(), p.port)).collect(),
                    s.endpoints.iter().map(|e| (e.pod.clone(), e.ready, e.serving, e.terminating)).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn pods_with_an_ip_become_endpoints_with_their_readiness() {
        let svc =
            service(json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}));
        let mut finished = pod("done", Some("10.0.0.9"), false);
        finished.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let mut leaving = pod("leaving", Some("10.0.0.4"), true);
        leaving.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        let pods = [
            pod("b", Some("10.0.0.2"), false),
            pod("a", Some("10.0.0.1"), true),
            pod("no-ip", None, true),
            finished,
            leaving,
        ];
        let got = slices(&svc, &pods);
        assert_eq!(
            summary(&got),
            [(
                vec![("http".to_string(), 8080)],
                vec![
                    ("a".to_string(), true, true, false),
                    ("b".to_string(), false, false, false),
                    ("leaving".to_string(), false, true, true),
                ]
            )]
        );
        let a = &got[0].endpoints[0];
        assert_eq!((a.ip.as_str(), a.uid.as_str(), a.node.as_deref()), ("10.0.0.1", "uid-a", Some("n1")));
        // publishNotReadyAddresses: every pod with an IP is ready, terminating or not.
        let publish =
            service(json!({"selector": {"app": "web"}, "publishNotReadyAddresses": true, "ports": [{"port": 80}]}));
        let flags: Vec<(bool, bool)> =
            slices(&publish, &pods)[0].endpoints.iter().map(|e| (e.ready, e.serving)).collect();
        assert_eq!(flags, [(true, true), (true, false), (true, true)]);
    }

    #[test]
    fn named_target_ports_resolve_per_pod_and_split_slices() {
        let svc = service(json!({"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": "http"},
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"}]}));
        let mut other = pod("other", Some("10.0.0.3"), true);
        other.spec.as_mut().unwrap().containers[0].ports.as_mut().unwrap()[0].container_port = 9090;
        let mut missing = pod("missing", Some("10.0.0.4"), true);
        missing.spec.as_mut().unwrap().containers[0].ports = None;
        let got = slices(&svc, &[pod("a", Some("10.0.0.1"), true), other, missing]);
        let ports: Vec<Vec<(String, i32)>> = summary(&got).into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            ports,
            [
                vec![("dns".to_string(), 5353), ("http".to_string(), 8080)],
                vec![("dns".to_string(), 5353), ("http".to_string(), 9090)]
            ],
            "the pod without the named ports is left out"
        );
    }

    #[test]
    fn large_services_are_split_into_slices_of_at_most_a_hundred() {
        let svc = service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
        let pods: Vec<Pod> =
            (0..250).map(|i| pod(&format!("p{i:03}"), Some(&format!("10.0.{}.{}", i / 200, i % 200)), true)).collect();
        let sizes: Vec<usize> = slices(&svc, &pods).iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
    }

    #[test]
    fn selectors_pick_by_every_label_and_only_selector_services_are_managed() {
        let svc = service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
        assert!(managed(&svc) && selects(&svc, &pod("a", None, true)));
        let mut other = pod("o", None, true);
        other.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
        assert!(!selects(&svc, &other));
        assert!(!managed(&service(json!({"ports": [{"port": 80}]}))));
        assert!(!managed(&service(json!({"type": "ExternalName", "selector": {"app": "web"}, "externalName": "x.y"}))));
        let with_host = {
            let mut p = pod("h", Some("10.0.0.7"), true);
            let spec = p.spec.as_mut().unwrap();
            spec.hostname = Some("db-0".into());
            spec.subdomain = Some("web".into());
            p
        };
        assert_eq!(slices(&svc, &[with_host])[0].endpoints[0].hostname.as_deref(), Some("db-0"));
    }
}
