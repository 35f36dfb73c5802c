//! NodePorts: a pod asking for a `hostPort` fits only where no bound pod holds the same port and
//! protocol on an overlapping host IP (`0.0.0.0`, the default, overlaps every IP).

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::scheduler::framework::{FilterPlugin, Fit, NodeInfo, PodInfo, Snapshot};

pub struct NodePorts;

impl FilterPlugin for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Fit {
        let wanted = host_ports(pod);
        if wanted.is_empty() {
            return Fit::Fits;
        }
        let used: Vec<HostPort> = node.pods.iter().flat_map(|p| host_ports(p)).collect();
        if wanted.iter().any(|w| used.iter().any(|u| w.conflicts_with(u))) {
            Fit::no("node(s) didn't have free ports for the requested pod ports")
        } else {
            Fit::Fits
        }
    }

    fn skips(&self, pod: &PodInfo, _: &Snapshot) -> bool {
        host_ports(pod).is_empty()
    }
}

/// One `hostPort` with its defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPort {
    ip: String,
    protocol: String,
    port: i32,
}

const ANY_IP: &str = "0.0.0.0";

impl HostPort {
    fn conflicts_with(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == ANY_IP || other.ip == ANY_IP)
    }
}

/// The host ports of the containers that run for the pod's whole life: the regular containers
/// and sidecars (init containers with `restartPolicy: Always`); other init containers have
/// exited before the pod runs.
fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = &pod.spec else { return Vec::new() };
    let sidecars = spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always"));
    let ports = |c: &Container| -> Vec<HostPort> {
        c.ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let port = p.host_port.filter(|&port| port > 0)?;
                let ip = p.host_ip.as_deref().filter(|ip| !ip.is_empty()).unwrap_or(ANY_IP).to_string();
                let protocol = p.protocol.as_deref().filter(|p| !p.is_empty()).unwrap_or("TCP").to_string();
                Some(HostPort { ip, protocol, port })
            })
            .collect()
    };
    sidecars.chain(spec.containers.iter()).flat_map(ports).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{NodeBuilder, PodBuilder, filter, snapshot};

    #[test]
    fn host_ports_clash_on_same_port_protocol_and_overlapping_ip() {
        let taken = Fit::no("node(s) didn't have free ports for the requested pod ports");
        // (bound pod's port, incoming pod's port, expected) as (port, protocol, hostIP)
        for (bound, wanted, expected) in [
            ((80, "", ""), (80, "", ""), taken.clone()),
            ((80, "TCP", ""), (80, "", ANY_IP), taken.clone()),
            ((80, "", ""), (8080, "", ""), Fit::Fits),
            ((53, "UDP", ""), (53, "TCP", ""), Fit::Fits),
            ((53, "UDP", ""), (53, "UDP", ""), taken.clone()),
            ((80, "", "10.0.0.1"), (80, "", "10.0.0.2"), Fit::Fits),
            ((80, "", "10.0.0.1"), (80, "", "10.0.0.1"), taken.clone()),
            ((80, "", "10.0.0.1"), (80, "", ""), taken.clone()),
            ((80, "", ""), (80, "", "10.0.0.1"), taken.clone()),
        ] {
            let node = NodeBuilder::new("n").build();
            let bound_pod = PodBuilder::new("bound").host_port(bound.0, bound.1, bound.2).build();
            let snapshot = snapshot(vec![(node, vec![bound_pod])]);
            let pod = PodBuilder::new("p").host_port(wanted.0, wanted.1, wanted.2).build();
            assert_eq!(filter(&NodePorts, &pod, &snapshot, "n"), expected, "{bound:?} then {wanted:?}");
        }
    }

    #[test]
    fn container_ports_without_a_host_port_never_clash() {
        let bound: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "b"},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}]}}))
        .expect("pod");
        let snapshot = snapshot(vec![(NodeBuilder::new("n").build(), vec![bound.clone()])]);
        assert_eq!(filter(&NodePorts, &bound, &snapshot, "n"), Fit::Fits);
    }

    #[test]
    fn sidecars_hold_their_host_ports_and_other_init_containers_do_not() {
        let with_init = |restart: Option<&str>| -> Pod {
            let mut init =
                serde_json::json!({"name": "init", "image": "i", "ports": [{"containerPort": 9, "hostPort": 9}]});
            if let Some(restart) = restart {
                init["restartPolicy"] = serde_json::json!(restart);
            }
            serde_json::from_value(serde_json::json!({"metadata": {"name": "b"},
                "spec": {"initContainers": [init], "containers": [{"name": "c", "image": "i"}]}}))
            .expect("pod")
        };
        let pod = PodBuilder::new("p").host_port(9, "", "").build();
        let sidecar = snapshot(vec![(NodeBuilder::new("n").build(), vec![with_init(Some("Always"))])]);
        assert_eq!(
            filter(&NodePorts, &pod, &sidecar, "n"),
            Fit::no("node(s) didn't have free ports for the requested pod ports")
        );
        let init = snapshot(vec![(NodeBuilder::new("n").build(), vec![with_init(None)])]);
        assert_eq!(filter(&NodePorts, &pod, &init, "n"), Fit::Fits);
    }
}
