//! The wasmkube cluster DNS server, run by every node agent.
//!
//! It will build the `cluster.local` zone from watches of Services, EndpointSlices and Pods and answer
//! `<svc>.<ns>.svc.cluster.local`, SRV, PTR and pod records with hickory, forwarding other names
//! upstream. This crate holds only this map until the service-networking work lands; see
//! `docs/ARCHITECTURE.md`.
