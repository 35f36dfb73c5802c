//! The cluster zone: the names Kubernetes' DNS specification gives Services and pods, kept from
//! Services and EndpointSlices, and how a query is answered from it. Pure: the server
//! ([`crate::server`]) turns answers into DNS messages.
//!
//! Under the cluster domain (`cluster.local` by default):
//! - `<svc>.<ns>.svc` — A: the ClusterIP; for a headless Service, the ready endpoints' IPs; for an
//!   ExternalName Service, a CNAME to its external name;
//! - `_<port>._<proto>.<svc>.<ns>.svc` — SRV for each named port: the Service name and port, or
//!   for a headless Service one record per ready endpoint, naming the endpoint;
//! - `<hostname>.<svc>.<ns>.svc` (a pod's `hostname` with `subdomain` set to the Service) and
//!   `a-b-c-d.<svc>.<ns>.svc` — A for a headless Service's endpoint;
//! - `a-b-c-d.<ns>.pod` — A: the address the name spells (CoreDNS' default "pods insecure" mode:
//!   no pod is looked up);
//! - `d.c.b.a.in-addr.arpa` — PTR for ClusterIPs and for endpoints' addresses.
//!
//! A name under the domain that is none of these is NXDOMAIN; a name that exists without records
//! of the asked type is NODATA; a name outside the domain (and outside `in-addr.arpa` addresses
//! the zone holds) is not the zone's to answer.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// One record's data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Data {
    A(Ipv4Addr),
    Cname(String),
    Srv { priority: u16, weight: u16, port: u16, target: String },
    Ptr(String),
}

/// The record types a query can ask for, as far as the zone knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    A,
    Aaaa,
    Cname,
    Srv,
    Ptr,
    /// Any other type: never held, so the answer is NODATA or NXDOMAIN.
    Other,
}

/// How a query is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The records (a CNAME answers every type but is returned as is).
    Records(Vec<(String, Data)>),
    /// The name exists, without records of that type.
    NoData,
    /// The name is in the zone's domain and does not exist.
    NxDomain,
    /// Not in the zone: forward it.
    NotOurs,
}

/// `(namespace, name)`.
type Key = (String, String);

/// The zone.
#[derive(Debug)]
pub struct Zone {
    /// `cluster.local.` (lowercase, with the trailing dot).
    domain: String,
    services: HashMap<Key, Service>,
    /// Slices by `(namespace, slice name)`, and the Service each belongs to.
    slices: HashMap<Key, (String, EndpointSlice)>,
    /// The names of each Service's slices.
    slices_of: HashMap<Key, BTreeSet<String>>,
    /// Records by owner name (lowercase, trailing dot), and which Service made them.
    names: HashMap<String, Vec<(Key, Data)>>,
    /// The names each Service's records sit at.
    made: HashMap<Key, BTreeSet<String>>,
    /// Every proper ancestor of a name with records (`default.svc.cluster.local.`…), with how
    /// many such names it has: an ancestor exists (NODATA, not NXDOMAIN). Kept here so a negative
    /// answer (most queries, with a pod's search path) never scans the zone.
    ancestors: HashMap<String, usize>,
    /// Whether a full read of Services, and of EndpointSlices, has come in.
    read: (bool, bool),
}

impl Zone {
    /// An empty zone for `domain` (e.g. `cluster.local`).
    pub fn new(domain: &str) -> Self {
        Self {
            domain: format!("{}.", domain.trim_end_matches('.').to_ascii_lowercase()),
            services: HashMap::new(),
            slices: HashMap::new(),
            slices_of: HashMap::new(),
            names: HashMap::new(),
            made: HashMap::new(),
            ancestors: HashMap::new(),
            read: (false, false),
        }
    }

    /// The domain, with its trailing dot.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Adds or replaces a Service.
    pub fn put_service(&mut self, service: Service) {
        let key = key_of(&service.metadata);
        self.services.insert(key.clone(), service);
        self.rebuild(&key);
    }

    pub fn remove_service(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        self.services.remove(&key);
        self.rebuild(&key);
    }

    /// Adds or replaces an EndpointSlice (its Service is in the `kubernetes.io/service-name` label).
    pub fn put_slice(&mut self, slice: EndpointSlice) {
        let key = key_of(&slice.metadata);
        let service = slice.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")).cloned();
        let previous = self.take_slice(&key);
        if let Some(service) = &service {
            self.slices_of.entry((key.0.clone(), service.clone())).or_default().insert(key.1.clone());
            self.slices.insert(key.clone(), (service.clone(), slice));
        }
        for service in [previous, service].into_iter().flatten().collect::<BTreeSet<_>>() {
            self.rebuild(&(key.0.clone(), service));
        }
    }

    pub fn remove_slice(&mut self, namespace: &str, name: &str) {
        if let Some(service) = self.take_slice(&(namespace.to_string(), name.to_string())) {
            self.rebuild(&(namespace.to_string(), service));
        }
    }

    /// Removes a slice without rebuilding; the name of the Service it belonged to.
    fn take_slice(&mut self, key: &Key) -> Option<String> {
        let (service, _) = self.slices.remove(key)?;
        let owner = (key.0.clone(), service.clone());
        if let Some(names) = self.slices_of.get_mut(&owner) {
            names.remove(&key.1);
            if names.is_empty() {
                self.slices_of.remove(&owner);
            }
        }
        Some(service)
    }

    /// Whether the zone has been read in full once (both kinds): before that, an unknown name
    /// may simply not have arrived yet.
    pub fn is_complete(&self) -> bool {
        self.read.0 && self.read.1
    }

    /// Whether `name` is under the zone's domain (or in-addr.arpa, which the zone answers for
    /// the addresses it holds).
    pub fn covers(&self, name: &str) -> bool {
        let name = fqdn(name);
        name == self.domain || name.ends_with(&format!(".{}", self.domain))
    }

    /// Replaces every Service with `services` (a fresh full read).
    pub fn replace_services(&mut self, services: Vec<Service>) {
        self.read.0 = true;
        let fresh: HashMap<Key, Service> = services.into_iter().map(|s| (key_of(&s.metadata), s)).collect();
        let keys: BTreeSet<Key> = self.services.keys().chain(fresh.keys()).cloned().collect();
        self.services = fresh;
        for key in keys {
            self.rebuild(&key);
        }
    }

    /// Replaces every EndpointSlice with `slices` (a fresh full read).
    pub fn replace_slices(&mut self, slices: Vec<EndpointSlice>) {
        self.read.1 = true;
        let old: Vec<Key> = self.slices.keys().cloned().collect();
        let mut touched = BTreeSet::new();
        for key in old {
            touched.extend(self.take_slice(&key).map(|service| (key.0.clone(), service)));
        }
        for slice in slices {
            let key = key_of(&slice.metadata);
            let labels = slice.metadata.labels.as_ref();
            if let Some(service) = labels.and_then(|l| l.get("kubernetes.io/service-name")).cloned() {
                self.slices_of.entry((key.0.clone(), service.clone())).or_default().insert(key.1.clone());
                touched.insert((key.0.clone(), service.clone()));
                self.slices.insert(key, (service, slice));
            }
        }
        for key in touched {
            self.rebuild(&key);
        }
    }

    /// Works out again the records of Service `key` from it and its slices.
    fn rebuild(&mut self, key: &Key) {
        for name in self.made.remove(key).unwrap_or_default() {
            for ancestor in ancestors_of(&name) {
                if let Some(count) = self.ancestors.get_mut(ancestor) {
                    *count -= 1;
                    if *count == 0 {
                        self.ancestors.remove(ancestor);
                    }
                }
            }
            if let Some(records) = self.names.get_mut(&name) {
                records.retain(|(owner, _)| owner != key);
                if records.is_empty() {
                    self.names.remove(&name);
                }
            }
        }
        let Some(service) = self.services.get(key) else { return };
        let names = self.slices_of.get(key).into_iter().flatten();
        let slices: Vec<&EndpointSlice> =
            names.filter_map(|n| self.slices.get(&(key.0.clone(), n.clone()))).map(|(_, s)| s).collect();
        let records = records_of(&self.domain, service, &slices);
        let mut names = BTreeSet::new();
        for (name, data) in records {
            names.insert(name.clone());
            self.names.entry(name).or_default().push((key.clone(), data));
        }
        for name in &names {
            for ancestor in ancestors_of(name) {
                *self.ancestors.entry(ancestor.to_string()).or_default() += 1;
            }
        }
        self.made.insert(key.clone(), names);
    }

    /// Answers a query for `name` (any case, with or without the trailing dot).
    pub fn answer(&self, name: &str, kind: Kind) -> Answer {
        let name = fqdn(name);
        if let Some(records) = self.names.get(&name) {
            let mut cnames = records.iter().filter(|(_, d)| matches!(d, Data::Cname(_))).peekable();
            if cnames.peek().is_some() {
                return Answer::Records(cnames.map(|(_, d)| (name.clone(), d.clone())).collect());
            }
            let mut matching: Vec<(String, Data)> = records
                .iter()
                .filter(|(_, d)| {
                    matches!(
                        (kind, d),
                        (Kind::A, Data::A(_)) | (Kind::Srv, Data::Srv { .. }) | (Kind::Ptr, Data::Ptr(_))
                    )
                })
                .map(|(_, d)| (name.clone(), d.clone()))
                .collect();
            matching.sort();
            matching.dedup();
            return if matching.is_empty() { Answer::NoData } else { Answer::Records(matching) };
        }
        if let Some(ip) = self.pod_address(&name) {
            return if kind == Kind::A { Answer::Records(vec![(name, Data::A(ip))]) } else { Answer::NoData };
        }
        if name == self.domain || name.ends_with(&format!(".{}", self.domain)) {
            // A name that is a proper prefix of existing ones (`svc.cluster.local`, `ns.svc…`) exists.
            return if self.ancestors.contains_key(&name) { Answer::NoData } else { Answer::NxDomain };
        }
        Answer::NotOurs
    }

    /// `a-b-c-d.<ns>.pod.<domain>`: the address the name spells.
    fn pod_address(&self, name: &str) -> Option<Ipv4Addr> {
        let rest = name.strip_suffix(&format!(".pod.{}", self.domain))?;
        let (address, namespace) = rest.split_once('.')?;
        if namespace.is_empty() || namespace.contains('.') {
            return None;
        }
        address.replace('-', ".").parse().ok()
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

/// `name` lowercase with a trailing dot.
fn fqdn(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with('.') { lower } else { format!("{lower}.") }
}

/// The proper ancestors of a fully qualified name (`b.c.` and `c.` for `a.b.c.`).
fn ancestors_of(name: &str) -> impl Iterator<Item = &str> {
    name.char_indices().filter(|&(i, c)| c == '.' && i + 1 < name.len()).map(|(i, _)| &name[i + 1..])
}

/// `d.c.b.a.in-addr.arpa.` for `a.b.c.d`.
pub fn reverse_name(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
}

/// `a-b-c-d`.
fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

/// Every record a Service and its slices make.
fn records_of(domain: &str, service: &Service, slices: &[&EndpointSlice]) -> Vec<(String, Data)> {
    let (namespace, name) = key_of(&service.metadata);
    let base = format!("{}.{}.svc.{domain}", name.to_ascii_lowercase(), namespace.to_ascii_lowercase());
    let spec = service.spec.clone().unwrap_or_default();
    let mut out = Vec::new();
    if spec.type_.as_deref() == Some("ExternalName") {
        if let Some(external) = spec.external_name.filter(|e| !e.is_empty()) {
            out.push((base, Data::Cname(fqdn(&external))));
        }
        return out;
    }
    let named_ports: Vec<(String, String, u16)> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let port_name = p.name.clone().filter(|n| !n.is_empty())?;
            Some((port_name, p.protocol.clone().unwrap_or_else(|| "TCP".into()), u16::try_from(p.port).ok()?))
        })
        .collect();
    let srv_name = |port: &str, protocol: &str| {
        format!("_{}._{}.{base}", port.to_ascii_lowercase(), protocol.to_ascii_lowercase())
    };
    match spec.cluster_ip.as_deref().and_then(|ip| ip.parse::<Ipv4Addr>().ok()) {
        Some(ip) => {
            out.push((base.clone(), Data::A(ip)));
            out.push((reverse_name(ip), Data::Ptr(base.clone())));
            for (port, protocol, number) in &named_ports {
                let srv = Data::Srv { priority: 0, weight: 100, port: *number, target: base.clone() };
                out.push((srv_name(port, protocol), srv));
            }
        }
        // Headless: the ready endpoints themselves.
        None if spec.cluster_ip.as_deref() == Some("None") => {
            for slice in slices {
                let ports: HashMap<(String, String), u16> = slice
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| {
                        let key =
                            (p.name.clone().unwrap_or_default(), p.protocol.clone().unwrap_or_else(|| "TCP".into()));
                        Some((key, u16::try_from(p.port?).ok()?))
                    })
                    .collect();
                for endpoint in &slice.endpoints {
                    let ready = endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    if !ready {
                        continue;
                    }
                    for ip in endpoint.addresses.iter().filter_map(|a| a.parse::<Ipv4Addr>().ok()) {
                        let label = endpoint.hostname.clone().unwrap_or_else(|| dashed(ip)).to_ascii_lowercase();
                        let host = format!("{label}.{base}");
                        out.push((base.clone(), Data::A(ip)));
                        out.push((host.clone(), Data::A(ip)));
                        out.push((reverse_name(ip), Data::Ptr(host.clone())));
                        for (port, protocol, _) in &named_ports {
                            if let Some(number) = ports.get(&(port.clone(), protocol.clone())) {
                                let srv = Data::Srv { priority: 0, weight: 100, port: *number, target: host.clone() };
                                out.push((srv_name(port, protocol), srv));
                            }
                        }
                    }
                }
            }
        }
        None => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn service(name: &str, spec: Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec})).unwrap()
    }

    fn slice(name: &str, service: &str, endpoints: Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    fn zone() -> Zone {
        let mut zone = Zone::new("cluster.local");
        zone.put_service(service(
            "web",
            json!({"clusterIP": "127.32.0.20",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 81}]}),
        ));
        zone.put_service(service("db", json!({"clusterIP": "None", "ports": [{"name": "http", "port": 80}]})));
        zone.put_service(service("ext", json!({"type": "ExternalName", "externalName": "example.com"})));
        zone.put_slice(slice(
            "db-abc",
            "db",
            json!([
            {"addresses": ["10.1.0.1"], "conditions": {"ready": true}, "hostname": "db-0"},
            {"addresses": ["10.1.0.2"], "conditions": {"ready": true}},
            {"addresses": ["10.1.0.3"], "conditions": {"ready": false}}]),
        ));
        zone
    }

    fn a(ip: &str) -> Data {
        Data::A(ip.parse().unwrap())
    }

    fn records(answer: Answer) -> Vec<Data> {
        match answer {
            Answer::Records(r) => r.into_iter().map(|(_, d)| d).collect(),
            other => panic!("expected records, got {other:?}"),
        }
    }

    #[test]
    fn services_answer_by_name_type_and_case() {
        let zone = zone();
        assert_eq!(records(zone.answer("web.default.svc.cluster.local", Kind::A)), [a("127.32.0.20")]);
        assert_eq!(records(zone.answer("WEB.Default.svc.cluster.local.", Kind::A)), [a("127.32.0.20")]);
        assert_eq!(zone.answer("web.default.svc.cluster.local", Kind::Aaaa), Answer::NoData);
        assert_eq!(
            records(zone.answer("_http._tcp.web.default.svc.cluster.local", Kind::Srv)),
            [Data::Srv { priority: 0, weight: 100, port: 80, target: "web.default.svc.cluster.local.".into() }]
        );
        assert_eq!(
            records(zone.answer("20.0.32.127.in-addr.arpa", Kind::Ptr)),
            [Data::Ptr("web.default.svc.cluster.local.".into())]
        );
        assert_eq!(
            records(zone.answer("ext.default.svc.cluster.local", Kind::A)),
            [Data::Cname("example.com.".into())]
        );
    }

    #[test]
    fn headless_services_answer_with_their_ready_endpoints() {
        let zone = zone();
        assert_eq!(records(zone.answer("db.default.svc.cluster.local", Kind::A)), [a("10.1.0.1"), a("10.1.0.2")]);
        assert_eq!(records(zone.answer("db-0.db.default.svc.cluster.local", Kind::A)), [a("10.1.0.1")]);
        assert_eq!(records(zone.answer("10-1-0-2.db.default.svc.cluster.local", Kind::A)), [a("10.1.0.2")]);
        let srv = records(zone.answer("_http._tcp.db.default.svc.cluster.local", Kind::Srv));
        let targets: Vec<(u16, String)> = srv
            .into_iter()
            .map(|d| match d {
                Data::Srv { port, target, .. } => (port, target),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            targets,
            [
                (8080, "10-1-0-2.db.default.svc.cluster.local.".to_string()),
                (8080, "db-0.db.default.svc.cluster.local.".to_string())
            ]
        );
        assert_eq!(
            records(zone.answer("1.0.1.10.in-addr.arpa", Kind::Ptr)),
            [Data::Ptr("db-0.db.default.svc.cluster.local.".into())]
        );
        assert_eq!(zone.answer("10-1-0-3.db.default.svc.cluster.local", Kind::A), Answer::NxDomain, "not ready");
    }

    #[test]
    fn pods_unknown_names_and_foreign_names() {
        let zone = zone();
        assert_eq!(records(zone.answer("10-1-2-3.default.pod.cluster.local", Kind::A)), [a("10.1.2.3")]);
        assert_eq!(zone.answer("nope.default.svc.cluster.local", Kind::A), Answer::NxDomain);
        assert_eq!(zone.answer("default.svc.cluster.local", Kind::A), Answer::NoData);
        assert_eq!(zone.answer("example.com", Kind::A), Answer::NotOurs);
        assert_eq!(zone.answer("9.9.9.9.in-addr.arpa", Kind::Ptr), Answer::NotOurs);
    }

    #[test]
    fn changes_replace_exactly_what_a_service_made() {
        let mut zone = zone();
        zone.put_service(service("web", json!({"clusterIP": "127.32.0.21", "ports": [{"port": 80}]})));
        assert_eq!(records(zone.answer("web.default.svc.cluster.local", Kind::A)), [a("127.32.0.21")]);
        assert_eq!(zone.answer("20.0.32.127.in-addr.arpa", Kind::Ptr), Answer::NotOurs);
        assert_eq!(zone.answer("_http._tcp.web.default.svc.cluster.local", Kind::Srv), Answer::NxDomain);
        zone.remove_slice("default", "db-abc");
        assert_eq!(zone.answer("db.default.svc.cluster.local", Kind::A), Answer::NxDomain);
        zone.remove_service("default", "web");
        assert_eq!(zone.answer("web.default.svc.cluster.local", Kind::A), Answer::NxDomain);
        zone.put_slice(slice("db-abc", "db", json!([{"addresses": ["10.1.0.9"], "conditions": {"ready": true}}])));
        assert_eq!(records(zone.answer("db.default.svc.cluster.local", Kind::A)), [a("10.1.0.9")]);

        // A fresh full read replaces everything of its kind; the zone is complete once both came.
        assert!(!zone.is_complete());
        zone.replace_slices(vec![slice(
            "db-new",
            "db",
            json!([{"addresses": ["10.1.0.8"], "conditions": {"ready": true}}]),
        )]);
        assert_eq!(records(zone.answer("db.default.svc.cluster.local", Kind::A)), [a("10.1.0.8")]);
        zone.replace_services(vec![service("web", json!({"clusterIP": "127.32.0.22", "ports": [{"port": 80}]}))]);
        assert_eq!(records(zone.answer("web.default.svc.cluster.local", Kind::A)), [a("127.32.0.22")]);
        assert_eq!(zone.answer("db.default.svc.cluster.local", Kind::A), Answer::NxDomain);
        assert_eq!(zone.answer("ext.default.svc.cluster.local", Kind::A), Answer::NxDomain);
        assert!(zone.is_complete());
        assert!(zone.covers("Web.default.svc.cluster.local") && !zone.covers("example.com"));
    }
}
