//! What travels in [`super::RPC_CAIRN`] frames. The forwarding requests a server sends its leader;
//! the typed Consul endpoints join this enum as they move behind the RPC seam.
//!
//! Variants are append-only (a mixed-version cluster must keep reading them).

use cairn_types::rpc::{QueryMeta, QueryOptions, ReadRequest, ReadResponse, WriteRequest, WriteResponse};
use cairn_types::{Command, CommandResult};
use serde::{Deserialize, Serialize};

/// A frame: a request or an answer, with the id that pairs them on a multiplexed connection.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub id: u64,
    /// More callers' ids for the very same request: identical reads that a client queued
    /// together travel as one request and come back as one answer (see [`super::client`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<u64>,
    pub body: T,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Propose a command (a write a follower forwards to the leader).
    Apply(Box<Command>),
    /// The leader's read point for a follower's read: after a quorum confirms the leadership
    /// (`consistent`), or under the leader's lease (default mode).
    ReadIndex { consistent: bool },
    /// Reset a session's TTL timer, which only the leader keeps.
    SessionRenew { id: String, ttl_ms: u64 },
    /// Whether this server already belongs to a Raft cluster (asked before bootstrapping).
    RaftState,
    /// Remove a server from the Raft configuration (operator).
    RemovePeer { id: u64 },
    /// Hand leadership to `id`, or to the most up-to-date other voter (operator).
    TransferLeader { id: Option<u64> },
    /// The leader's view of the Raft configuration (operator).
    RaftConfiguration,
    /// A typed write, for the leader only (a server forwards what it does not lead).
    Write(Box<WriteRequest>),
    /// A typed read, answered by the server asked (after the barrier its consistency needs).
    Read(Box<(ReadRequest, QueryOptions)>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    Applied {
        index: u64,
        result: CommandResult,
    },
    ReadIndex(u64),
    Ok,
    RaftState {
        initialized: bool,
        voters: Vec<String>,
    },
    /// Leadership was handed to this server.
    Transferred(u64),
    RaftConfiguration {
        servers: Vec<crate::RaftServer>,
        index: u64,
    },
    Written(WriteResponse),
    Read(QueryMeta, Box<ReadResponse>),
}
