//! Consul-shaped data: the JSON types of the `/v1` API, the Raft `Command` log entries, request options
//! and validation. Pure data: no I/O, no tokio. Every other crate depends on this one.
//!
//! Map:
//! - [`structs`]: catalog, health, KV and agent JSON types (PascalCase on the wire).
//! - [`coordinate`]: network coordinates and RTT estimates.
//! - [`command`]: the replicated `Command` enum and its results (on disk: tags append-only).
//! - [`normalize`]: Consul's lenient input decoding (case-insensitive, snake_case keys).
//! - [`duration`]: Go-style durations (`"10s"`, `"1m30s"`, `"0.001s"`).
//! - [`filter`]: the `?filter=` expression language.
//! - [`query`]: prepared queries and their templates.
//! - [`txn`]: `/v1/txn` operations and results.
//! - [`rpc`]: the typed requests agents send servers (one per Consul RPC) and their answers.
//! - [`schema`]: strict type checks for bodies read as JSON values (Go's decode errors).
//! - [`error`]: why a request or command was refused, by what the caller decides.

pub mod command;
pub mod coordinate;
pub mod duration;
pub mod error;
pub mod filter;
pub mod normalize;
pub mod query;
pub mod rpc;
pub mod schema;
pub mod structs;
pub mod txn;

pub use command::{Command, CommandResult};
pub use error::Error;

/// Consul version reported to clients (`/v1/agent/self` `Config.Version`); tools gate features on it.
pub const CONSUL_COMPAT_VERSION: &str = "1.22.0";
/// Cairn's own version.
pub const CAIRN_VERSION: &str = env!("CARGO_PKG_VERSION");
