//! What wasmkube's benchmark binaries share: one HTTP/1.1 connection per client ([`connection`]),
//! the closed-loop load ([`load`]), starting and stopping the servers under test as child
//! processes ([`servers`]), what `/proc` says about them ([`process`]), the machine's facts
//! ([`machine`]), the numbers and JSON file every report has ([`summary`]), and the copy of the
//! `hello` sample that `wasmkube dev` is exercised on ([`devhello`]).
//!
//! The binaries are `store-bench` (`src/main.rs`: durable writes against etcd), `pod-bench`
//! (`src/pod/main.rs`: pod start latency, pod density, and HTTP serving against `wasmtime serve`)
//! and `sched-bench` (`src/sched/main.rs`: scheduler throughput and the control plane's envelope,
//! with hollow nodes).

pub mod connection;
pub mod devhello;
pub mod load;
pub mod machine;
pub mod process;
pub mod servers;
pub mod summary;
