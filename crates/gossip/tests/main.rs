//! The gossip crate's integration tests: one binary (see ARCHITECTURE.md).

mod captures;
mod cluster;
mod fuzz;
mod interop;
