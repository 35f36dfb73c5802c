//! Which addresses the proxy listens on and where each one's connections may go, from Services
//! and their EndpointSlices: pure, so the rules have table tests.
//!
//! - A Service with a ClusterIP gets a listener on `ClusterIP:port` for each TCP and UDP port; a NodePort
//!   or LoadBalancer Service also on `NODE_IP:nodePort`, and a LoadBalancer Service on
//!   `NODE_IP:port` (ServiceLB: the node's address is the load balancer's).
//! - A port's backends are the ready endpoints of the Service's slices, at the slice port of the
//!   same name and protocol (the target port resolved per pod by the endpoints controller).
//! - `sessionAffinity: ClientIP` keeps a client on one backend for `timeoutSeconds` (default
//!   10800, as in Kubernetes).
//! - A backend on this node, or on another node with the same node IP (another agent on this
//!   host: pod IPs are loopback addresses, so they are local too), is dialled directly; one on
//!   another host through that node's tunnel, at its node API (`InternalIP` and
//!   `daemonEndpoints.kubeletEndpoint` of its Node).
//!   Only an address inside that node's `spec.podCIDR` goes through its tunnel (which dials
//!   nothing else); any other address a slice names (a Service without a selector, say) is dialled
//!   directly.
//! - A pod on another host also gets a listener at its own `POD_IP:port`, going through its
//!   node's tunnel, for each TCP port its containers declare and each TCP port a Service's slices
//!   name it at: pod IPs are loopback addresses, so this is how a guest's raw connect to a remote
//!   pod IP (say, from a headless Service's DNS answer) reaches it. Only addresses inside that
//!   node's pod CIDR and outside this node's get one, so a slice naming some other address cannot
//!   make every node listen there.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Kubernetes' default ClientIP affinity timeout.
const DEFAULT_AFFINITY: Duration = Duration::from_secs(10800);

/// The transport a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A listener: an address and a transport.
pub type Listen = (Protocol, SocketAddr);

/// One ready endpoint of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    /// The pod's `IP:port`.
    pub addr: SocketAddr,
    /// The tunnel of the pod's node, when that is on another host.
    pub via: Option<SocketAddr>,
}

impl Backend {
    pub fn local(addr: SocketAddr) -> Self {
        Backend { addr, via: None }
    }
}

/// The node the proxy runs on.
#[derive(Debug, Clone)]
pub struct Me {
    pub node_name: String,
    pub node_ip: IpAddr,
}

/// Where one listener's connections go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `namespace/name:port` — for logs.
    pub name: String,
    /// Ready backends, in a stable order.
    pub backends: Vec<Backend>,
    /// `Some(timeout)` for ClientIP session affinity.
    pub affinity: Option<Duration>,
}

/// `(namespace, name)`.
type Key = (String, String);

/// What the proxy knows of a node: where its tunnel listens (its node API, at its `InternalIP`)
/// and the pod addresses behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Remote {
    tunnel: SocketAddr,
    pods: Option<ipnet::IpNet>,
}

/// Services and slices as the proxy last heard of them.
#[derive(Debug, Default)]
pub struct Routes {
    services: HashMap<Key, Service>,
    /// Slices by `(namespace, slice name)`, with their Service's name.
    slices: HashMap<Key, (String, EndpointSlice)>,
    /// Every node's tunnel and pod CIDR, when it has a tunnel.
    nodes: HashMap<String, Remote>,
    /// Pods on other nodes with an IP, by `(namespace, name)`.
    pods: HashMap<Key, RemotePod>,
}

/// What the proxy keeps of a pod on another node: where it is and the TCP ports it declares.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RemotePod {
    node: String,
    ip: IpAddr,
    ports: Vec<u16>,
}

impl RemotePod {
    fn of(pod: &Pod) -> Option<Self> {
        let spec = pod.spec.as_ref()?;
        let ip = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
        let ports = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| u16::try_from(p.container_port).ok())
            .collect();
        Some(RemotePod { node: spec.node_name.clone()?, ip, ports })
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

impl Routes {
    pub fn put_service(&mut self, service: Service) {
        self.services.insert(key_of(&service.metadata), service);
    }

    pub fn remove_service(&mut self, service: &Service) {
        self.services.remove(&key_of(&service.metadata));
    }

    pub fn put_slice(&mut self, slice: EndpointSlice) {
        let key = key_of(&slice.metadata);
        match slice.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")).cloned() {
            Some(service) => self.slices.insert(key, (service, slice)),
            None => self.slices.remove(&key),
        };
    }

    pub fn remove_slice(&mut self, slice: &EndpointSlice) {
        self.slices.remove(&key_of(&slice.metadata));
    }

    pub fn replace_services(&mut self, services: Vec<Service>) {
        self.services = services.into_iter().map(|s| (key_of(&s.metadata), s)).collect();
    }

    /// Notes a node's tunnel address; says whether that changed anything (most Node updates are
    /// heartbeats, which do not).
    pub fn put_node(&mut self, node: &Node) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        let pods = node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()).and_then(|c| c.parse().ok());
        set(&mut self.nodes, name, tunnel_of(node).map(|tunnel| Remote { tunnel, pods }))
    }

    pub fn remove_node(&mut self, node: &Node) -> bool {
        self.nodes.remove(node.metadata.name.as_deref().unwrap_or_default()).is_some()
    }

    pub fn replace_nodes(&mut self, nodes: Vec<Node>) {
        self.nodes.clear();
        for node in &nodes {
            self.put_node(node);
        }
    }

    /// Notes a pod on another node; says whether that changed anything (most pod updates are
    /// status changes that leave its address and ports as they were).
    pub fn put_pod(&mut self, pod: &Pod) -> bool {
        set(&mut self.pods, key_of(&pod.metadata), RemotePod::of(pod))
    }

    pub fn remove_pod(&mut self, pod: &Pod) -> bool {
        self.pods.remove(&key_of(&pod.metadata)).is_some()
    }

    pub fn replace_pods(&mut self, pods: Vec<Pod>) {
        self.pods.clear();
        for pod in &pods {
            self.put_pod(pod);
        }
    }

    pub fn replace_slices(&mut self, slices: Vec<EndpointSlice>) {
        self.slices.clear();
        for slice in slices {
            self.put_slice(slice);
        }
    }

    /// How this node reaches address `ip` of an endpoint on node `node`: through that node's
    /// tunnel when the node is on another host and `ip` is one of its pods; otherwise directly
    /// (this node, another agent on this host, an unknown node, or an address that is no pod's).
    fn via(&self, node: Option<&str>, ip: IpAddr, me: &Me) -> Option<SocketAddr> {
        let node = node.filter(|n| *n != me.node_name)?;
        let remote = self.nodes.get(node).filter(|r| r.tunnel.ip() != me.node_ip)?;
        remote.pods.is_some_and(|pods| pods.contains(&ip)).then_some(remote.tunnel)
    }

    /// Every listener and its route, for the proxy on node `me`.
    pub fn table(&self, me: &Me) -> BTreeMap<Listen, Route> {
        let node_ip = me.node_ip;
        let mut by_service: HashMap<Key, Vec<&EndpointSlice>> = HashMap::new();
        for ((namespace, _), (service, slice)) in &self.slices {
            by_service.entry((namespace.clone(), service.clone())).or_default().push(slice);
        }
        let mut table = BTreeMap::new();
        for (key, service) in &self.services {
            let Some(spec) = &service.spec else { continue };
            let Some(cluster_ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok()) else {
                continue;
            };
            let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
                let seconds = spec
                    .session_affinity_config
                    .as_ref()
                    .and_then(|c| c.client_ip.as_ref())
                    .and_then(|c| c.timeout_seconds);
                seconds.map_or(DEFAULT_AFFINITY, |s| Duration::from_secs(s.max(1) as u64))
            });
            let slices = by_service.get(key).map(Vec::as_slice).unwrap_or_default();
            for port in spec.ports.iter().flatten() {
                let protocol = port.protocol.as_deref().unwrap_or("TCP");
                let transport = match protocol {
                    "TCP" => Protocol::Tcp,
                    "UDP" => Protocol::Udp,
                    _ => continue,
                };
                let name = port.name.clone().unwrap_or_default();
                let route = Route {
                    name: format!("{}/{}:{}", key.0, key.1, port.port),
                    backends: backends(self, slices, &name, protocol, me),
                    affinity,
                };
                let Ok(number) = u16::try_from(port.port) else { continue };
                table.insert((transport, SocketAddr::new(cluster_ip, number)), route.clone());
                if let Some(node_port) = port.node_port.and_then(|n| u16::try_from(n).ok()).filter(|n| *n != 0) {
                    table.insert((transport, SocketAddr::new(node_ip, node_port)), route.clone());
                }
                // ServiceLB: a LoadBalancer Service is served on the node's own address, at its port.
                if spec.type_.as_deref() == Some("LoadBalancer") {
                    table.insert((transport, SocketAddr::new(node_ip, number)), route);
                }
            }
        }
        self.remote_pods(me, &mut table);
        table
    }

    /// The stand-in listeners of pods on other hosts (see the module doc).
    fn remote_pods(&self, me: &Me, table: &mut BTreeMap<Listen, Route>) {
        let mine = self.nodes.get(&me.node_name).and_then(|r| r.pods);
        let mut stand_in = |node: Option<&str>, ip: IpAddr, port: u16, name: String| {
            let Some(via) = self.via(node, ip, me) else { return };
            if mine.is_some_and(|mine| mine.contains(&ip)) {
                return;
            }
            let addr = SocketAddr::new(ip, port);
            let route = Route { name, backends: vec![Backend { addr, via: Some(via) }], affinity: None };
            table.insert((Protocol::Tcp, addr), route);
        };
        for ((namespace, name), pod) in &self.pods {
            for &port in &pod.ports {
                stand_in(Some(&pod.node), pod.ip, port, format!("pod {namespace}/{name}:{port}"));
            }
        }
        for (_, slice) in self.slices.values() {
            let ports: Vec<u16> = slice
                .ports
                .iter()
                .flatten()
                .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
                .filter_map(|p| p.port.and_then(|n| u16::try_from(n).ok()))
                .collect();
            let namespace = slice.metadata.namespace.clone().unwrap_or_default();
            for endpoint in &slice.endpoints {
                let pod = endpoint.target_ref.as_ref().and_then(|r| r.name.clone()).unwrap_or_default();
                for ip in endpoint.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                    for &port in &ports {
                        stand_in(endpoint.node_name.as_deref(), ip, port, format!("pod {namespace}/{pod}:{port}"));
                    }
                }
            }
        }
    }
}

/// Sets `map[key]` to `value` (removes it for `None`); says whether that changed anything.
fn set<K: std::hash::Hash + Eq, V: PartialEq>(map: &mut HashMap<K, V>, key: K, value: Option<V>) -> bool {
    if map.get(&key) == value.as_ref() {
        return false;
    }
    match value {
        Some(value) => map.insert(key, value),
        None => map.remove(&key),
    };
    true
}

/// The ready endpoints of `slices` at their port named `name` (and `protocol`).
fn backends(routes: &Routes, slices: &[&EndpointSlice], name: &str, protocol: &str, me: &Me) -> Vec<Backend> {
    let mut out = BTreeSet::new();
    for slice in slices {
        let port = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == name && p.protocol.as_deref().unwrap_or("TCP") == protocol
        });
        let Some(number) = port.and_then(|p| p.port).and_then(|p| u16::try_from(p).ok()) else { continue };
        for endpoint in &slice.endpoints {
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            out.extend(endpoint.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()).map(|ip| Backend {
                addr: SocketAddr::new(ip, number),
                via: routes.via(endpoint.node_name.as_deref(), ip, me),
            }));
        }
    }
    out.into_iter().collect()
}

/// Where a node's tunnel listens: its node API, at its `InternalIP`.
fn tunnel_of(node: &Node) -> Option<SocketAddr> {
    let status = node.status.as_ref()?;
    let ip = status.addresses.iter().flatten().find(|a| a.type_ == "InternalIP")?.address.parse::<IpAddr>().ok()?;
    let port = status.daemon_endpoints.as_ref()?.kubelet_endpoint.as_ref()?.port;
    Some(SocketAddr::new(ip, u16::try_from(port).ok().filter(|p| *p != 0)?))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn service(name: &str, spec: Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec})).unwrap()
    }

    fn slice(name: &str, service: &str, port: (&str, i32), endpoints: Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"name": port.0, "port": port.1, "protocol": "TCP"}], "endpoints": endpoints,
        }))
        .unwrap()
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn local(text: &str) -> Backend {
        Backend::local(addr(text))
    }

    fn me(ip: &str) -> Me {
        Me { node_name: "node-a".into(), node_ip: ip.parse().unwrap() }
    }

    /// Node `name` at `ip` with its tunnel at `port` and pod CIDR `127.64.N.0/24`.
    fn node(name: &str, ip: &str, port: i32, n: u8) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"podCIDR": format!("127.64.{n}.0/24")},
            "status": {
            "addresses": [{"type": "InternalIP", "address": ip}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}}))
        .unwrap()
    }

    fn tcp(text: &str) -> Listen {
        (Protocol::Tcp, addr(text))
    }

    #[test]
    fn cluster_ips_and_node_ports_route_to_the_ready_endpoints_of_the_named_port() {
        let mut routes = Routes::default();
        routes.put_service(service("web", json!({"type": "NodePort", "clusterIP": "127.32.0.20",
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}, {"name": "dns", "port": 53, "protocol": "UDP"}]})));
        routes.put_service(service("db", json!({"clusterIP": "None", "ports": [{"port": 5432}]})));
        routes.put_slice(slice(
            "web-a",
            "web",
            ("http", 8080),
            json!([
            {"addresses": ["127.64.0.2"], "conditions": {"ready": true}},
            {"addresses": ["127.64.0.3"], "conditions": {"ready": false}}]),
        ));
        routes.put_slice(slice("web-b", "web", ("http", 9090), json!([{"addresses": ["127.64.1.2"]}])));
        let table = routes.table(&me("10.0.0.5"));
        let listeners: Vec<Listen> = table.keys().copied().collect();
        assert_eq!(
            listeners,
            [tcp("10.0.0.5:30080"), tcp("127.32.0.20:80"), (Protocol::Udp, addr("127.32.0.20:53"))],
            "headless has none"
        );
        assert!(table[&(Protocol::Udp, addr("127.32.0.20:53"))].backends.is_empty(), "no slice has a dns port");
        let route = &table[&tcp("127.32.0.20:80")];
        assert_eq!(route.backends, [local("127.64.0.2:8080"), local("127.64.1.2:9090")]);
        assert_eq!(route.name, "default/web:80");
        assert_eq!(table[&tcp("10.0.0.5:30080")], *route);
        assert_eq!(route.affinity, None);

        routes.put_service(service(
            "lb",
            json!({"type": "LoadBalancer", "clusterIP": "127.32.0.30",
            "ports": [{"name": "http", "port": 8443, "nodePort": 30443}]}),
        ));
        let table = routes.table(&me("10.0.0.5"));
        for listener in ["127.32.0.30:8443", "10.0.0.5:30443", "10.0.0.5:8443"] {
            assert!(table.contains_key(&tcp(listener)), "a LoadBalancer listens on {listener}");
        }
        routes.remove_slice(&slice("web-a", "web", ("http", 8080), json!([])));
        assert_eq!(routes.table(&me("10.0.0.5"))[&tcp("127.32.0.20:80")].backends, [local("127.64.1.2:9090")]);
    }

    #[test]
    fn client_ip_affinity_has_kubernetes_default_timeout() {
        let mut routes = Routes::default();
        routes.put_service(service(
            "a",
            json!({"clusterIP": "127.32.0.21", "sessionAffinity": "ClientIP", "ports": [{"port": 80}]}),
        ));
        routes.put_service(service(
            "b",
            json!({"clusterIP": "127.32.0.22", "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}, "ports": [{"port": 80}]}),
        ));
        let table = routes.table(&me("127.0.0.1"));
        assert_eq!(table[&tcp("127.32.0.21:80")].affinity, Some(Duration::from_secs(10800)));
        assert_eq!(table[&tcp("127.32.0.22:80")].affinity, Some(Duration::from_secs(60)));
    }

    #[test]
    fn endpoints_on_other_hosts_go_through_their_node_tunnel() {
        let mut routes = Routes::default();
        routes
            .put_service(service("web", json!({"clusterIP": "127.32.0.20", "ports": [{"name": "http", "port": 80}]})));
        routes.put_slice(slice(
            "web-a",
            "web",
            ("http", 8080),
            json!([
            {"addresses": ["127.64.0.2"], "nodeName": "node-a"},
            {"addresses": ["127.64.1.2"], "nodeName": "node-b"},
            {"addresses": ["127.64.2.2"], "nodeName": "node-c"},
            {"addresses": ["127.64.3.2"], "nodeName": "node-gone"},
            {"addresses": ["127.64.4.2"]},
            // Not a pod of node-b (a Service without a selector may name anything): no tunnel.
            {"addresses": ["127.0.0.9", "127.64.0.9"], "nodeName": "node-b"}]),
        ));
        assert!(routes.put_node(&node("node-a", "10.0.0.1", 10250, 0)));
        assert!(routes.put_node(&node("node-b", "10.0.0.2", 10250, 1)));
        assert!(routes.put_node(&node("node-c", "10.0.0.1", 10251, 2)), "another agent on node-a's host");
        assert!(!routes.put_node(&node("node-b", "10.0.0.2", 10250, 1)), "a heartbeat changes nothing");
        let table = routes.table(&me("10.0.0.1"));
        let backends = table[&tcp("127.32.0.20:80")].backends.clone();
        let tunnel = Some(addr("10.0.0.2:10250"));
        // The pod on the other host also answers at its own IP here, through the tunnel.
        let listeners: Vec<Listen> = table.keys().copied().collect();
        assert_eq!(listeners, [tcp("127.32.0.20:80"), tcp("127.64.1.2:8080")]);
        assert_eq!(table[&tcp("127.64.1.2:8080")].backends, [Backend { addr: addr("127.64.1.2:8080"), via: tunnel }]);
        assert_eq!(
            backends,
            [
                local("127.0.0.9:8080"),
                local("127.64.0.2:8080"),
                local("127.64.0.9:8080"),
                Backend { addr: addr("127.64.1.2:8080"), via: tunnel },
                local("127.64.2.2:8080"),
                local("127.64.3.2:8080"),
                local("127.64.4.2:8080"),
            ]
        );
        // A pod no Service selects gets stand-ins for the ports it declares, once it has an address.
        let lone = |ip: Option<&str>| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "lone", "namespace": "default"},
                "spec": {"nodeName": "node-b", "containers": [{"name": "c", "image": "i", "ports": [
                    {"containerPort": 7000}, {"containerPort": 5353, "protocol": "UDP"}]}]},
                "status": {"podIP": ip}}))
            .unwrap()
        };
        assert!(!routes.put_pod(&lone(None)), "no address yet: nothing to do");
        assert!(routes.put_pod(&lone(Some("127.64.1.7"))));
        assert!(!routes.put_pod(&lone(Some("127.64.1.7"))), "a status update changes nothing");
        let table = routes.table(&me("10.0.0.1"));
        assert_eq!(table[&tcp("127.64.1.7:7000")].backends, [Backend { addr: addr("127.64.1.7:7000"), via: tunnel }]);
        assert_eq!(table.len(), 3, "TCP ports only");
        assert!(routes.remove_pod(&lone(None)));
        assert!(!routes.table(&me("10.0.0.1")).contains_key(&tcp("127.64.1.7:7000")));

        assert!(routes.put_node(&node("node-b", "10.0.0.3", 10250, 1)), "a new address matters");
        assert!(routes.remove_node(&node("node-b", "10.0.0.3", 10250, 1)));
        assert_eq!(routes.table(&me("10.0.0.1"))[&tcp("127.32.0.20:80")].backends[3], local("127.64.1.2:8080"));
    }
}
