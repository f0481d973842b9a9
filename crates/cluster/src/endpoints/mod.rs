//! The server side of each Consul RPC the agent makes ([`cairn_types::rpc`]): [`read::read`] runs
//! reads as blocking queries under the consistency asked, [`write::write`] forwards writes to the
//! leader, which validates, decides what depends on time, and proposes; [`operator::operator`]
//! answers `Operator.*`, `Status.*` and backups.
//!
//! Must not: know about HTTP or DNS (the agent parses and renders; everything decided is here).

pub mod operator;
pub mod prepared_query;
pub mod read;
pub mod write;

pub use read::{read, read_for};
pub use write::write;
