//! Everything between agents and servers: Raft (openraft glue, a write-ahead log store with group commit,
//! the state machine over the store, snapshots), and the server side of each request: propose a
//! command, answer reads with the consistency the caller asked for.
//!
//! Must not: know about HTTP or DNS.
//!
//! Map: [`clock`] is the time decisions read;
//! [`raft`] wires openraft; [`server::Server`] is what the agent talks to; [`error::Error`] is what
//! the caller must decide on; [`endpoints`] is the server side of each typed request and
//! [`rpc::Rpc`] the seam the agent reaches it through; [`read_batch`] shares a follower's read-index requests; [`gossip`] holds what travels over the gossip pools (user events).

pub mod clock;
pub mod endpoints;
pub mod error;
pub mod gossip;
pub mod leader;
pub mod raft;
pub mod read_batch;
pub mod recover;
pub mod rpc;
pub mod server;
pub mod snapshot;

pub use error::Error;
pub use server::{raft_id, RaftServer, Server, ServerConfig, ServerInfo};
