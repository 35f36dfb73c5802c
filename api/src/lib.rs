//! The Kubernetes vocabulary shared by wasmkube's control plane and CLI: which kinds exist, how they
//! are named, scoped and stored, and how they print as table rows.
//!
//! Start at [`kinds::ALL`], the one registry every other part routes by, and at [`printers`], the
//! columns of every kind's table (the API server's `Table` responses and the CLI's `get`). [`meta`] has small readers
//! of object metadata used on both sides; [`oci`] is the shape of Wasm images in the cluster
//! registry; [`events`] decides how Events are compacted (create one, or count up an existing one),
//! for every component that records them.

pub mod annotations;
pub mod events;
pub mod kinds;
pub mod meta;
pub mod oci;
pub mod printers;
pub mod quantity;
pub mod selector;
pub mod validation;

pub use kinds::Kind;
