//! The wasmkube cluster DNS, run by every node agent: the `cluster.local` zone built from
//! Services and EndpointSlices ([`zone`]), answering `<svc>.<ns>.svc.cluster.local`, SRV, PTR and
//! pod names as Kubernetes' DNS specification says, and forwarding other names upstream
//! ([`server`]); [`watch`] keeps the zone current from the API. Start with [`zone::Zone::answer`].

pub mod server;
pub mod watch;
pub mod zone;
