//! Service addresses: ClusterIPs from the service CIDR and node ports from the node port range,
//! taken when a Service is written and given back when it is removed, as kube-apiserver's
//! Service storage does with its IP and port allocators.
//!
//! What is taken lives in memory, read from the stored Services at first use. Every write that
//! can change it (a Service's create, an update of its spec, its final removal) holds the one
//! [`Allocator`] lock from choosing an address until the write is committed, so two writes never
//! take the same address and a failed write takes nothing.
//!
//! Where a user leaves a field empty it is filled: a free ClusterIP (the first free address above
//! the low band that explicit requests such as `kube-dns`'s `.10` use, then the low band), and a
//! free node port per port of a NodePort or LoadBalancer Service. An update keeps what the
//! Service already holds unless the user changes it; a ClusterIP never changes once set.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use ipnet::Ipv4Net;
use serde_json::{Value, json};
use tokio::sync::{Mutex, MutexGuard};
use wasmkube_api::validation::Cause;

use crate::status::ApiError;
use crate::store::{RangeRequest, Store};

/// Where Service addresses come from (kube-apiserver's `--service-cluster-ip-range` and
/// `--service-node-port-range`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNetwork {
    pub cidr: Ipv4Net,
    pub node_ports: RangeInclusive<u16>,
}

impl Default for ServiceNetwork {
    fn default() -> Self {
        Self::new("127.32.0.0/12", "30000-32767").expect("the default service network is valid")
    }
}

impl ServiceNetwork {
    /// `cidr` like `127.32.0.0/12` (at least a /28) and `ports` like `30000-32767`.
    pub fn new(cidr: &str, ports: &str) -> Result<Self, String> {
        let cidr: Ipv4Net =
            cidr.parse().map_err(|_| format!("invalid service CIDR {cidr:?}: expected like 127.32.0.0/12"))?;
        // The cluster DNS Service takes the tenth address.
        if cidr.prefix_len() > 28 {
            return Err(format!("service CIDR {cidr} is too small: it needs at least 16 addresses (/28)"));
        }
        let invalid = || format!("invalid node port range {ports:?}: expected like 30000-32767");
        let (low, high) = ports.split_once('-').ok_or_else(invalid)?;
        let (low, high): (u16, u16) =
            (low.trim().parse().map_err(|_| invalid())?, high.trim().parse().map_err(|_| invalid())?);
        if low == 0 || low > high {
            return Err(invalid());
        }
        Ok(Self { cidr: cidr.trunc(), node_ports: low..=high })
    }

    /// The first usable address: the `kubernetes` Service's.
    pub fn kubernetes_ip(&self) -> Ipv4Addr {
        self.nth(1)
    }

    /// The tenth: the cluster DNS Service's (`kube-dns`).
    pub fn dns_ip(&self) -> Ipv4Addr {
        self.nth(10)
    }

    fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + n)
    }

    fn size(&self) -> u32 {
        1u32.checked_shl(32 - u32::from(self.cidr.prefix_len())).unwrap_or(u32::MAX)
    }

    /// The addresses that may be handed out (neither the network's nor the broadcast address),
    /// as offsets into the CIDR.
    fn usable(&self) -> RangeInclusive<u32> {
        1..=self.size() - 2
    }

    /// Offsets below this are left to explicit requests unless the rest is full (Kubernetes'
    /// static band: 16 addresses for small ranges, up to 256).
    fn static_band(&self) -> u32 {
        (self.size() / 16).clamp(16, 256)
    }

    fn offset_of(&self, ip: Ipv4Addr) -> Option<u32> {
        self.cidr.contains(&ip).then(|| u32::from(ip) - u32::from(self.cidr.network()))
    }
}

/// What one Service holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Held {
    ip: Option<Ipv4Addr>,
    node_ports: Vec<u16>,
}

/// Everything held, by address and by Service key.
#[derive(Debug, Default)]
struct Allocations {
    ips: HashMap<Ipv4Addr, String>,
    node_ports: HashMap<u16, String>,
    services: HashMap<String, Held>,
}

impl Allocations {
    fn set(&mut self, key: &str, held: Held) {
        self.release(key);
        if let Some(ip) = held.ip {
            self.ips.entry(ip).or_insert_with(|| key.to_string());
        }
        for port in &held.node_ports {
            self.node_ports.entry(*port).or_insert_with(|| key.to_string());
        }
        self.services.insert(key.to_string(), held);
    }

    /// Gives back what `key` holds. An address is only freed by its owner: stored data from
    /// before allocation existed may have two Services naming one, and the other keeps it.
    fn release(&mut self, key: &str) {
        if let Some(held) = self.services.remove(key) {
            if let Some(ip) = held.ip
                && self.ips.get(&ip).is_some_and(|owner| owner == key)
            {
                self.ips.remove(&ip);
            }
            for port in held.node_ports {
                if self.node_ports.get(&port).is_some_and(|owner| owner == key) {
                    self.node_ports.remove(&port);
                }
            }
        }
    }

    fn ip_taken(&self, ip: Ipv4Addr, by_other_than: &str) -> bool {
        self.ips.get(&ip).is_some_and(|owner| owner != by_other_than)
    }

    fn port_taken(&self, port: u16, by_other_than: &str) -> bool {
        self.node_ports.get(&port).is_some_and(|owner| owner != by_other_than)
    }
}

/// The service network and what is taken from it; one per object service.
#[derive(Debug)]
pub(crate) struct Allocator {
    network: ServiceNetwork,
    state: Mutex<Option<Allocations>>,
}

/// The allocator, locked and loaded: held across one Service write.
pub(crate) struct Locked<'a> {
    network: &'a ServiceNetwork,
    state: MutexGuard<'a, Option<Allocations>>,
}

impl Allocator {
    pub(crate) fn new(network: ServiceNetwork) -> Self {
        Self { network, state: Mutex::new(None) }
    }

    pub(crate) fn network(&self) -> &ServiceNetwork {
        &self.network
    }

    /// Takes the lock, reading what the stored Services hold the first time.
    pub(crate) async fn lock(&self, store: &dyn Store) -> Result<Locked<'_>, ApiError> {
        let mut state = self.state.lock().await;
        if state.is_none() {
            let kind = wasmkube_api::kinds::by_resource("", "v1", "services").expect("services are registered");
            let stored = store.range(RangeRequest { prefix: kind.key_prefix(), ..RangeRequest::default() }).await?;
            let mut loaded = Allocations::default();
            for kv in stored.items {
                let service: Value = serde_json::from_slice(&kv.value)
                    .map_err(|e| ApiError::Internal(format!("stored Service {} is not JSON: {e}", kv.key)))?;
                loaded.set(&kv.key, held_by(&service));
            }
            *state = Some(loaded);
        }
        Ok(Locked { network: &self.network, state })
    }
}

impl Locked<'_> {
    fn allocations(&mut self) -> &mut Allocations {
        self.state.get_or_insert_with(Allocations::default)
    }

    /// Fills in and checks the addresses of Service `key` about to be written as `new` (`old`:
    /// its stored form, on an update). What it will hold is returned; [`Locked::commit`] it once
    /// the write is committed.
    pub(crate) fn assign(
        &mut self,
        key: &str,
        name: &str,
        old: Option<&Value>,
        new: &mut Value,
    ) -> Result<Held, ApiError> {
        let network = self.network;
        let allocations = self.allocations();
        let mut causes = Vec::new();
        let held = assign(network, allocations, key, old, new, &mut causes);
        if causes.is_empty() {
            Ok(held)
        } else {
            let kind = wasmkube_api::kinds::by_resource("", "v1", "services").expect("services are registered");
            Err(ApiError::Invalid { kind, name: name.to_string(), causes })
        }
    }

    /// Records what Service `key` holds now that its write is committed.
    pub(crate) fn commit(&mut self, key: &str, held: Held) {
        self.allocations().set(key, held);
    }

    /// Gives back what Service `key` held: it was removed.
    pub(crate) fn release(&mut self, key: &str) {
        self.allocations().release(key);
    }
}

/// What a stored Service holds.
fn held_by(service: &Value) -> Held {
    let ty = service_type(service);
    let ip = if ty == "ExternalName" { None } else { cluster_ip(service).parse().ok() };
    let node_ports = if has_node_ports(service) {
        let mut ports: Vec<u16> = ports_of(service).iter().filter_map(node_port).collect();
        ports.dedup();
        ports
    } else {
        Vec::new()
    };
    Held { ip, node_ports }
}

/// Whether a Service of this type may have node ports at all.
fn has_node_ports(service: &Value) -> bool {
    matches!(service_type(service), "NodePort" | "LoadBalancer")
}

fn ports_of(service: &Value) -> Vec<Value> {
    service.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default()
}

fn node_port(port: &Value) -> Option<u16> {
    port.get("nodePort").and_then(Value::as_u64).filter(|&n| n != 0).and_then(|n| u16::try_from(n).ok())
}

fn service_type(service: &Value) -> &str {
    service.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP")
}

fn cluster_ip(service: &Value) -> &str {
    let spec = service.get("spec");
    let ip = spec.and_then(|s| s.get("clusterIP")).and_then(Value::as_str).unwrap_or("");
    if ip.is_empty() {
        // `clusterIPs` alone is a request too; its first entry is the primary address.
        spec.and_then(|s| s.pointer("/clusterIPs/0")).and_then(Value::as_str).unwrap_or("")
    } else {
        ip
    }
}

/// Whether a Service of this type has node ports.
fn wants_node_ports(service: &Value) -> bool {
    match service_type(service) {
        "NodePort" => true,
        "LoadBalancer" => {
            service.pointer("/spec/allocateLoadBalancerNodePorts").and_then(Value::as_bool) != Some(false)
        }
        _ => false,
    }
}

/// Before validation of an update: what the user left out is what the Service already holds
/// (Kubernetes' `patchAllocatedValues`), and what only its old type had is dropped when the user
/// did not change it (`dropTypeDependentFields`).
pub(crate) fn keep_allocated(old: &Value, new: &mut Value) {
    let (old_type, new_type) = (service_type(old).to_string(), service_type(new).to_string());
    let old_ip = cluster_ip(old).to_string();
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let new_ip = spec.get("clusterIP").and_then(Value::as_str).unwrap_or("").to_string();
    if new_type == "ExternalName" {
        if old_type != "ExternalName" && (new_ip.is_empty() || new_ip == old_ip) {
            for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                spec.remove(field);
            }
        }
    } else if new_ip.is_empty() && !old_ip.is_empty() && old_type != "ExternalName" {
        spec.insert("clusterIP".into(), json!(old_ip));
        spec.insert("clusterIPs".into(), json!([old_ip]));
        for field in ["ipFamilies", "ipFamilyPolicy"] {
            if let Some(value) = old.pointer(&format!("/spec/{field}")).filter(|_| !spec.contains_key(field)) {
                spec.insert(field.into(), value.clone());
            }
        }
    }
    let external_policy = |s: &Value| s.pointer("/spec/externalTrafficPolicy").cloned();
    if !matches!(new_type.as_str(), "NodePort" | "LoadBalancer") && external_policy(new) == external_policy(old) {
        new.get_mut("spec").and_then(Value::as_object_mut).map(|s| s.remove("externalTrafficPolicy"));
    }
    let old_ports = ports_of(old);
    let keeps_ports = has_node_ports(new);
    let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else { return };
    // Ports the user names explicitly are theirs; a left-out one takes its old number (the port
    // of the same name, else of the same number and protocol) unless another port asks for it.
    let asked: Vec<u16> = ports.iter().filter_map(node_port).collect();
    for port in ports {
        let named = |p: &&Value| p.get("name").is_some_and(|n| n != "") && p.get("name") == port.get("name");
        let same = |p: &&Value| p.get("port") == port.get("port") && p.get("protocol") == port.get("protocol");
        let previous = old_ports.iter().find(named).or_else(|| old_ports.iter().find(same)).and_then(node_port);
        let previous = previous.filter(|p| node_port(port) == Some(*p) || !asked.contains(p));
        let current = node_port(port);
        match (keeps_ports, current, previous) {
            (true, None, Some(previous)) => {
                port["nodePort"] = json!(previous);
            }
            (false, Some(current), Some(previous)) if current == previous => {
                port.as_object_mut().map(|p| p.remove("nodePort"));
            }
            _ => {}
        }
    }
}

/// Fills in and checks `new`'s ClusterIP and node ports; returns what it will hold, or pushes
/// the causes of refusal. What the Service already holds (`old`) is kept without checking it
/// again: it may predate a change of the ranges.
fn assign(
    network: &ServiceNetwork,
    allocations: &Allocations,
    key: &str,
    old: Option<&Value>,
    new: &mut Value,
    causes: &mut Vec<Cause>,
) -> Held {
    let before = old.map(held_by).unwrap_or_default();
    let ty = service_type(new).to_string();
    let requested = cluster_ip(new).to_string();
    let old_ip = old.map(cluster_ip).unwrap_or("").to_string();
    let was_external = old.is_some_and(|o| service_type(o) == "ExternalName");
    let mut held = Held::default();
    if ty == "ExternalName" {
        if !requested.is_empty() {
            causes.push(Cause::forbidden("spec.clusterIPs", "may not be set for ExternalName services"));
        }
        return held;
    }
    if requested == "None" && has_node_ports(new) {
        let message = format!("may not be set to 'None' for {ty} services");
        causes.push(Cause::invalid("spec.clusterIPs[0]", &json!("None"), &message));
        return held;
    }
    if !old_ip.is_empty() && !was_external && requested != old_ip {
        causes.push(Cause::invalid("spec.clusterIPs[0]", &json!([requested]), "may not change once set"));
        return held;
    }
    held.ip = match requested.as_str() {
        "None" => None,
        "" => match next_free_ip(network, allocations, key) {
            Some(ip) => Some(ip),
            None => {
                let message = format!("failed to allocate a serviceIP: range is full ({})", network.cidr);
                causes.push(Cause::invalid("spec.clusterIPs", &json!([]), &message));
                return held;
            }
        },
        text => match text.parse::<Ipv4Addr>() {
            Err(_) => {
                causes.push(Cause::invalid("spec.clusterIPs[0]", &json!(text), "must be a valid IP address"));
                return held;
            }
            Ok(ip) if before.ip == Some(ip) => Some(ip),
            Ok(ip) => {
                let why = match network.offset_of(ip) {
                    Some(offset) if network.usable().contains(&offset) => {
                        allocations.ip_taken(ip, key).then(|| "provided IP is already allocated".to_string())
                    }
                    _ => Some(format!(
                        "the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                        network.cidr
                    )),
                };
                if let Some(why) = why {
                    let message = format!("failed to allocate IP {ip}: {why}");
                    causes.push(Cause::invalid("spec.clusterIPs", &json!([text]), &message));
                    return held;
                }
                Some(ip)
            }
        },
    };
    let address = held.ip.map_or_else(|| "None".to_string(), |ip| ip.to_string());
    if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("clusterIP".into(), json!(address));
        spec.insert("clusterIPs".into(), json!([address]));
        spec.entry("ipFamilies").or_insert_with(|| json!(["IPv4"]));
        spec.entry("ipFamilyPolicy").or_insert_with(|| json!("SingleStack"));
    }
    if has_node_ports(new) {
        held.node_ports = assign_node_ports(network, allocations, key, &before, wants_node_ports(new), new, causes);
    }
    held
}

/// The node ports of a NodePort or LoadBalancer Service: those asked for are checked (unless
/// the Service holds them already); the rest are filled in when `fill`, a TCP and a UDP port of
/// the same number sharing one, as in Kubernetes.
fn assign_node_ports(
    network: &ServiceNetwork,
    allocations: &Allocations,
    key: &str,
    before: &Held,
    fill: bool,
    new: &mut Value,
    causes: &mut Vec<Cause>,
) -> Vec<u16> {
    let mut held: Vec<u16> = Vec::new();
    let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else { return held };
    let protocol = |p: &Value| p.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string();
    let mut used: Vec<(u16, String)> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let Some(number) = port.get("nodePort").and_then(Value::as_i64).filter(|&n| n != 0) else { continue };
        let path = format!("spec.ports[{i}].nodePort");
        let Some(n) = u16::try_from(number).ok() else { continue }; // validation reports it
        if used.contains(&(n, protocol(port))) {
            causes.push(Cause::duplicate(path, &json!(number)));
            continue;
        }
        used.push((n, protocol(port)));
        if before.node_ports.contains(&n) {
            // Held already: kept whatever the range now says.
        } else if !network.node_ports.contains(&n) {
            let message = format!(
                "provided port is not in the valid range. The range of valid ports is {}-{}",
                network.node_ports.start(),
                network.node_ports.end()
            );
            causes.push(Cause::invalid(path, &json!(number), &message));
            continue;
        } else if allocations.port_taken(n, key) {
            causes.push(Cause::invalid(path, &json!(number), "provided port is already allocated"));
            continue;
        }
        if !held.contains(&n) {
            held.push(n);
        }
    }
    if !fill {
        return held;
    }
    for i in 0..ports.len() {
        if node_port(&ports[i]).is_some() {
            continue;
        }
        let (number, proto) = (ports[i].get("port").cloned(), protocol(&ports[i]));
        // A port of the same number (another protocol) already given one shares it.
        let sibling = ports
            .iter()
            .filter(|p| p.get("port") == number.as_ref())
            .filter_map(node_port)
            .find(|n| !used.contains(&(*n, proto.clone())) && held.contains(n));
        let free = || {
            network.node_ports.clone().find(|n| !allocations.port_taken(*n, key) && !used.iter().any(|(u, _)| u == n))
        };
        match sibling.or_else(free) {
            Some(n) => {
                ports[i]["nodePort"] = json!(n);
                used.push((n, proto));
                if !held.contains(&n) {
                    held.push(n);
                }
            }
            None => {
                let message = format!(
                    "failed to allocate a nodePort: range is full ({}-{})",
                    network.node_ports.start(),
                    network.node_ports.end()
                );
                causes.push(Cause::invalid("spec.ports", &json!(null), &message));
                break;
            }
        }
    }
    held
}

/// The lowest free address above the static band, else the lowest free one in it.
fn next_free_ip(network: &ServiceNetwork, allocations: &Allocations, key: &str) -> Option<Ipv4Addr> {
    let (first, last) = (*network.usable().start(), *network.usable().end());
    let band = network.static_band();
    let free = |offset: &u32| !allocations.ip_taken(network.nth(*offset), key);
    let above = (band.max(first)..=last).find(free);
    above.or_else(|| (first..=last.min(band - 1)).find(free)).map(|offset| network.nth(offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network() -> ServiceNetwork {
        ServiceNetwork::new("10.96.0.0/28", "30000-30002").expect("valid")
    }

    fn service(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": spec})
    }

    /// Assigns and, if accepted, commits; the causes as Kubernetes prints them otherwise.
    fn write(
        allocations: &mut Allocations,
        key: &str,
        old: Option<&Value>,
        new: &mut Value,
    ) -> Result<Held, Vec<String>> {
        let mut causes = Vec::new();
        if let Some(old) = old {
            keep_allocated(old, new);
        }
        let held = assign(&network(), allocations, key, old, new, &mut causes);
        if causes.is_empty() {
            allocations.set(key, held.clone());
            Ok(held)
        } else {
            Err(causes.iter().map(ToString::to_string).collect())
        }
    }

    #[test]
    fn the_network_names_its_well_known_addresses_and_parses_its_flags() {
        let n = ServiceNetwork::default();
        assert_eq!((n.kubernetes_ip(), n.dns_ip()), (Ipv4Addr::new(127, 32, 0, 1), Ipv4Addr::new(127, 32, 0, 10)));
        assert_eq!(n.node_ports, 30000..=32767);
        assert_eq!(network().static_band(), 16);
        assert!(ServiceNetwork::new("10.0.0.0/29", "1-2").unwrap_err().contains("too small"));
        assert!(ServiceNetwork::new("10.0.0.0", "1-2").unwrap_err().contains("invalid service CIDR"));
        assert!(ServiceNetwork::new("10.0.0.0/24", "9-2").unwrap_err().contains("invalid node port range"));
    }

    #[test]
    fn cluster_ips_are_given_from_the_range_honoured_when_asked_and_never_twice() {
        let mut a = Allocations::default();
        // A /28 is all static band (16 addresses): dynamic ones start at the first usable.
        let mut first = service(json!({"ports": [{"port": 80}]}));
        write(&mut a, "a", None, &mut first).expect("allocated");
        assert_eq!(first["spec"]["clusterIP"], "10.96.0.1");
        assert_eq!(first["spec"]["clusterIPs"], json!(["10.96.0.1"]));
        assert_eq!(first["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(first["spec"]["ipFamilyPolicy"], "SingleStack");
        let mut explicit = service(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 53}]}));
        write(&mut a, "dns", None, &mut explicit).expect("honoured");
        let mut twice = service(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 53}]}));
        assert_eq!(
            write(&mut a, "other", None, &mut twice).unwrap_err(),
            [
                r#"spec.clusterIPs: Invalid value: ["10.96.0.10"]: failed to allocate IP 10.96.0.10: provided IP is already allocated"#
            ]
        );
        let mut outside = service(json!({"clusterIP": "10.97.0.1", "ports": [{"port": 1}]}));
        assert_eq!(
            write(&mut a, "other", None, &mut outside).unwrap_err(),
            [
                r#"spec.clusterIPs: Invalid value: ["10.97.0.1"]: failed to allocate IP 10.97.0.1: the provided IP (10.97.0.1) is not in the valid range. The range of valid IPs is 10.96.0.0/28"#
            ]
        );
        let mut broadcast = service(json!({"clusterIP": "10.96.0.15", "ports": [{"port": 1}]}));
        assert!(write(&mut a, "other", None, &mut broadcast).is_err(), "the broadcast address is not usable");
        let mut garbage = service(json!({"clusterIP": "ten", "ports": [{"port": 1}]}));
        assert_eq!(
            write(&mut a, "other", None, &mut garbage).unwrap_err(),
            [r#"spec.clusterIPs[0]: Invalid value: "ten": must be a valid IP address"#]
        );
        // Headless and ExternalName Services hold no address.
        let mut headless = service(json!({"clusterIP": "None", "selector": {"app": "db"}}));
        assert_eq!(write(&mut a, "h", None, &mut headless), Ok(Held::default()));
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
        let mut external = service(json!({"type": "ExternalName", "externalName": "example.com"}));
        assert_eq!(write(&mut a, "e", None, &mut external), Ok(Held::default()));
        assert!(external["spec"].get("clusterIP").is_none());
        // The rest of the range fills up, then creates are refused until one is released.
        for i in 0..12 {
            write(&mut a, &format!("fill-{i}"), None, &mut service(json!({"ports": [{"port": 1}]}))).expect("room");
        }
        let full = write(&mut a, "more", None, &mut service(json!({"ports": [{"port": 1}]}))).unwrap_err();
        assert_eq!(
            full,
            ["spec.clusterIPs: Invalid value: []: failed to allocate a serviceIP: range is full (10.96.0.0/28)"]
        );
        a.release("fill-3");
        let mut again = service(json!({"ports": [{"port": 1}]}));
        write(&mut a, "more", None, &mut again).expect("the released address is free");
        assert_eq!(again["spec"]["clusterIP"], "10.96.0.5");
    }

    #[test]
    fn dynamic_addresses_prefer_the_range_above_the_static_band() {
        let network = ServiceNetwork::new("10.96.0.0/24", "30000-30002").expect("valid");
        let mut causes = Vec::new();
        let mut s = service(json!({"ports": [{"port": 80}]}));
        assign(&network, &Allocations::default(), "a", None, &mut s, &mut causes);
        assert_eq!(s["spec"]["clusterIP"], "10.96.0.16");
    }

    #[test]
    fn node_ports_are_given_per_port_honoured_when_asked_and_never_twice() {
        let mut a = Allocations::default();
        let mut web = service(
            json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "protocol": "TCP", "nodePort": 30000}]}),
        );
        let held = write(&mut a, "web", None, &mut web).expect("allocated");
        assert_eq!(held.node_ports, [30000, 30001], "the explicit port first, then the lowest free");
        assert_eq!(web["spec"]["ports"][0]["nodePort"], 30001);
        let mut clash = service(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30001}]}));
        assert_eq!(
            write(&mut a, "other", None, &mut clash).unwrap_err(),
            ["spec.ports[0].nodePort: Invalid value: 30001: provided port is already allocated"]
        );
        let mut outside = service(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}));
        assert_eq!(
            write(&mut a, "other", None, &mut outside).unwrap_err(),
            [
                "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-30002"
            ]
        );
        // A LoadBalancer has node ports unless it opts out.
        let mut lb = service(json!({"type": "LoadBalancer", "ports": [{"port": 80}]}));
        assert_eq!(write(&mut a, "lb", None, &mut lb).expect("allocated").node_ports, [30002]);
        let mut bare =
            service(json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "ports": [{"port": 80}]}));
        assert!(write(&mut a, "bare", None, &mut bare).expect("allocated").node_ports.is_empty());
        let mut none_left = service(json!({"type": "NodePort", "ports": [{"port": 80}]}));
        assert!(write(&mut a, "more", None, &mut none_left).unwrap_err()[0].contains("range is full (30000-30002)"));
    }

    #[test]
    fn an_update_keeps_what_the_service_holds_and_refuses_a_new_cluster_ip() {
        let mut a = Allocations::default();
        let mut web = service(json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}));
        let held = write(&mut a, "web", None, &mut web).expect("allocated");
        // A client that sends its manifest again (no clusterIP, no nodePort) keeps both.
        let mut again = service(json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}));
        assert_eq!(write(&mut a, "web", Some(&web), &mut again), Ok(held.clone()));
        assert_eq!(
            (&again["spec"]["clusterIP"], &again["spec"]["ports"][0]["nodePort"]),
            (&json!("10.96.0.1"), &json!(30000))
        );
        let mut moved = again.clone();
        moved["spec"]["clusterIP"] = json!("10.96.0.9");
        assert_eq!(
            write(&mut a, "web", Some(&again), &mut moved).unwrap_err(),
            [r#"spec.clusterIPs[0]: Invalid value: ["10.96.0.9"]: may not change once set"#]
        );
        // Back to ClusterIP: the unchanged node port is dropped and given back.
        let mut plain = again.clone();
        plain["spec"]["type"] = json!("ClusterIP");
        assert_eq!(write(&mut a, "web", Some(&again), &mut plain).expect("updated").node_ports, Vec::<u16>::new());
        assert!(plain["spec"]["ports"][0].get("nodePort").is_none());
        assert!(!a.port_taken(30000, "anyone"));
        // To ExternalName and back: the address goes, and a new one comes.
        let mut external = plain.clone();
        external["spec"]["type"] = json!("ExternalName");
        external["spec"]["externalName"] = json!("example.com");
        assert_eq!(write(&mut a, "web", Some(&plain), &mut external), Ok(Held::default()));
        assert!(external["spec"].get("clusterIP").is_none() && !a.ip_taken(Ipv4Addr::new(10, 96, 0, 1), "anyone"));
        let mut back = external.clone();
        back["spec"]["type"] = json!("ClusterIP");
        assert!(write(&mut a, "web", Some(&external), &mut back).expect("updated").ip.is_some());
    }
}
