//! Controllers that run inside the control plane and act through the object service.

pub mod namespace;
pub mod node_ipam;
pub mod replicaset;
