//! `/v1/txn`: operations on KV, nodes, services and checks, applied all or nothing in one Raft entry.
//! Wire shapes follow Consul: a list of `{"KV": {...}}` / `{"Node": {...}}` / `{"Service": {...}}` /
//! `{"Check": {...}}` objects in, `{"Results": [...], "Errors": [...]}` out.

use serde::{Deserialize, Serialize};

use crate::structs::{b64opt, DirEntry, HealthCheck, Node, NodeService};

/// Consul 1.14+ allows 128 operations per transaction (64 before); Cairn's default, configurable
/// with `limits.txn_max_ops`.
pub const MAX_TXN_OPS: usize = 128;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnKvOp {
    #[serde(rename = "Verb", default)]
    pub verb: String,
    #[serde(rename = "Key", default)]
    pub key: String,
    #[serde(rename = "Value", default, with = "b64opt")]
    pub value: Option<Vec<u8>>,
    #[serde(rename = "Flags", default)]
    pub flags: u64,
    #[serde(rename = "Index", default)]
    pub index: u64,
    #[serde(rename = "Session", default)]
    pub session: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnNodeOp {
    #[serde(rename = "Verb", default)]
    pub verb: String,
    #[serde(rename = "Node", default)]
    pub node: Node,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnServiceOp {
    #[serde(rename = "Verb", default)]
    pub verb: String,
    #[serde(rename = "Node", default)]
    pub node: String,
    #[serde(rename = "Service", default)]
    pub service: NodeService,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnCheckOp {
    #[serde(rename = "Verb", default)]
    pub verb: String,
    #[serde(rename = "Check", default)]
    pub check: HealthCheck,
}

/// One operation: exactly one of the four fields is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOp {
    #[serde(rename = "KV", default, skip_serializing_if = "Option::is_none")]
    pub kv: Option<TxnKvOp>,
    #[serde(rename = "Node", default, skip_serializing_if = "Option::is_none")]
    pub node: Option<TxnNodeOp>,
    #[serde(rename = "Service", default, skip_serializing_if = "Option::is_none")]
    pub service: Option<TxnServiceOp>,
    #[serde(rename = "Check", default, skip_serializing_if = "Option::is_none")]
    pub check: Option<TxnCheckOp>,
}

impl TxnOp {
    /// True for verbs that change nothing (a transaction of only these needs no Raft entry).
    pub fn is_read(&self) -> bool {
        let v = |s: &str| {
            matches!(s, "get" | "get-tree" | "get-or-empty" | "check-index" | "check-session" | "check-not-exists")
        };
        match (&self.kv, &self.node, &self.service, &self.check) {
            (Some(k), None, None, None) => v(&k.verb),
            (None, Some(n), None, None) => n.verb == "get",
            (None, None, Some(s), None) => s.verb == "get",
            (None, None, None, Some(c)) => c.verb == "get",
            _ => false,
        }
    }
}

/// One result, in the order of the operations that produced one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnResult {
    KV(DirEntry),
    Node(Node),
    Service(NodeService),
    Check(HealthCheck),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnError {
    #[serde(rename = "OpIndex")]
    pub op_index: usize,
    #[serde(rename = "What")]
    pub what: String,
}

/// The body of a `/v1/txn` answer. `Results` is null on rollback, `Errors` null on success.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    #[serde(rename = "Results")]
    pub results: Option<Vec<serde_json::Value>>,
    #[serde(rename = "Errors")]
    pub errors: Option<Vec<TxnError>>,
}

impl TxnResult {
    /// `{"KV": {...}}` and so on.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}
