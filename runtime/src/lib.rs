//! The wasmkube node agent: the kubelet of a cluster whose containers are WebAssembly components.
//!
//! Start at [`agent::Agent::start`]: it registers the Node, keeps its Lease fresh, watches the
//! Pods bound to it through the API (never the store directly, so it can run on another machine)
//! and gives each one a [`agent::sandbox`] that runs its containers. [`host`] is the wasmtime side:
//! one `Engine` per node, compiled workloads, wasi:http handlers served with a fresh instance per
//! request and commands run as processes. [`image`] resolves container images to Wasm bytes.
//! [`proxy`] carries Services' TCP traffic to their endpoints.

pub mod agent;
pub mod host;
pub mod image;
pub mod proxy;
