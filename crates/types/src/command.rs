//! The replicated log entry. Every state change goes through Raft as one `Command`; the state machine
//! applies it at a log index. Variants are serialized by name: never rename or reuse one, only add.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::coordinate::CoordinateEntry;
use crate::query::PreparedQuery;
use crate::structs::{DeregisterRequest, DirEntry, RegisterRequest, Session};
use crate::txn::{TxnError, TxnOp, TxnResult};

/// The KV verbs of Consul's `KVSRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    /// Plain set: ignores locks.
    Set,
    /// Check-and-set on `ModifyIndex` (`entry.modify_index`); 0 means create-only.
    Cas,
    Delete,
    /// Delete if `ModifyIndex` matches (`entry.modify_index`).
    DeleteCas,
    /// Delete every key under the prefix `entry.key`.
    DeleteTree,
    /// Acquire the key's lock for `entry.session` (and set the value).
    Lock,
    /// Release the key's lock held by `entry.session` (and set the value).
    Unlock,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvRequest {
    pub op: KvOp,
    pub entry: DirEntry,
}

// Commands are built once per write and moved into the log; boxing the large variants would only
// add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Kv(KvRequest),
    Register(RegisterRequest),
    Deregister(DeregisterRequest),
    /// Several commands applied at one log index, all or nothing (used by anti-entropy to sync a
    /// node's services and checks in one entry).
    Batch(Vec<Command>),
    /// Forget KV tombstones at or below this index. The leader proposes it once tombstones are old
    /// enough that no blocking query still needs them (Consul's tombstone GC).
    ReapTombstones(u64),
    /// Create a session (the ID is chosen by the proposer, so every server agrees on it).
    SessionCreate(Session),
    /// Destroy (invalidate) a session: its locks are released or its keys deleted per `Behavior`.
    SessionDestroy(String),
    /// A `/v1/txn` transaction: every operation or none.
    Txn(Vec<TxnOp>),
    /// Create or replace a prepared query (the ID is chosen by the proposer).
    QuerySet(PreparedQuery),
    /// Delete a prepared query by ID.
    QueryDelete(String),
    /// Set nodes' network coordinates (entries for nodes not in the catalog are skipped).
    CoordinateBatchUpdate(Vec<CoordinateEntry>),
    /// Replace the whole state with a backup's (`PUT /v1/snapshot`): the encoded state store. The
    /// state machine decodes and installs it; every table index moves to this entry's index.
    Restore(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Set autopilot's configuration; with `cas`, only if its ModifyIndex is that (0: only if
    /// none is set). Answers true/false.
    AutopilotSet {
        config: crate::structs::AutopilotConfig,
        cas: Option<u64>,
    },
}

impl Command {
    /// A cheap estimate of the command's size in memory, for budgets that must not pay for an
    /// encoding (the in-memory Raft log of `-dev`). Values dominate; everything else is counted
    /// as a small constant.
    pub fn approx_bytes(&self) -> usize {
        const SMALL: usize = 256;
        match self {
            Command::Kv(r) => SMALL + r.entry.key.len() + r.entry.value.as_ref().map_or(0, Vec::len),
            Command::Txn(ops) => {
                SMALL
                    + ops
                        .iter()
                        .map(|o| {
                            o.kv.as_ref().map_or(SMALL, |k| SMALL + k.key.len() + k.value.as_ref().map_or(0, Vec::len))
                        })
                        .sum::<usize>()
            }
            Command::Batch(v) => v.iter().map(Command::approx_bytes).sum(),
            Command::CoordinateBatchUpdate(v) => SMALL * (1 + v.len()),
            Command::Restore(b) => SMALL + b.len(),
            _ => SMALL,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Kv(r) => write!(f, "Kv({:?} {})", r.op, r.entry.key),
            Command::Register(r) => write!(f, "Register({})", r.node),
            Command::Deregister(r) => write!(f, "Deregister({})", r.node),
            Command::Batch(v) => write!(f, "Batch({})", v.len()),
            Command::ReapTombstones(i) => write!(f, "ReapTombstones({i})"),
            Command::SessionCreate(s) => write!(f, "SessionCreate({})", s.id),
            Command::SessionDestroy(id) => write!(f, "SessionDestroy({id})"),
            Command::Txn(ops) => write!(f, "Txn({})", ops.len()),
            Command::QuerySet(q) => write!(f, "QuerySet({})", q.id),
            Command::QueryDelete(id) => write!(f, "QueryDelete({id})"),
            Command::Restore(b) => write!(f, "Restore({} bytes)", b.len()),
            Command::AutopilotSet { cas, .. } => write!(f, "AutopilotSet(cas {cas:?})"),
            Command::CoordinateBatchUpdate(v) => write!(f, "CoordinateBatchUpdate({})", v.len()),
        }
    }
}

/// What applying a command returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Entries with no state change (blank, membership).
    None,
    /// KV verbs answer true/false (CAS failure is `false`, not an error).
    Bool(bool),
    /// Applied.
    Ok,
    /// Rejected by the state machine (e.g. a check names an unknown service). Nothing was changed.
    Error(crate::Error),
    /// A transaction applied: its results.
    TxnResults(Vec<TxnResult>),
    /// A transaction rolled back: why, per operation. Nothing was changed.
    TxnErrors(Vec<TxnError>),
}

impl fmt::Display for CommandResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}
