//! The wasmkube node agent: the kubelet of a cluster whose containers are WebAssembly components.
//!
//! It will watch the Pods bound to its Node through the API (never the store directly), run each
//! container in one shared wasmtime `Engine` (wasi:http handlers get a fresh instance per request,
//! wasi:cli commands run as processes, WASI p1 modules too), enforce limits and probes, and host the
//! node's L4 proxy for Services. This crate holds only this map until the node-agent work lands; see
//! `docs/ARCHITECTURE.md` for how it will meet the control plane.
