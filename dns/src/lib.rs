//! The wasmkube cluster DNS, run by every node agent: the `cluster.local` zone built from
//! Services and EndpointSlices ([`zone`]), answering `<svc>.<ns>.svc.cluster.local`, SRV, PTR and
//! pod names as Kubernetes' DNS specification says. Start with [`zone::Zone::answer`].

pub mod zone;
