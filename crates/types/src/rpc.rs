//! The requests an agent sends a server and what the server answers: one per Consul RPC the HTTP
//! API and DNS use (`KVS.Get`, `Catalog.ServiceNodes`, `Health.ServiceNodes`, `Session.Apply`, …).
//! Each read carries [`QueryOptions`] (datacenter, token, blocking index and wait, consistency,
//! `max_stale`, `filter`, `near`, node-meta) and each write [`WriteOptions`], as Consul's
//! `QueryOptions`/`WriteRequest` do; answers carry [`QueryMeta`].
//!
//! These travel between processes (a client agent and its server, a follower and the leader), so
//! enum variants are append-only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::command::KvOp;
use crate::coordinate::CoordinateEntry;
use crate::query::PreparedQuery;
use crate::structs::{AutopilotConfig, DirEntry, HealthCheck, Node, NodeService, ServiceEntry, ServiceNode, Session};
use crate::structs::{DeregisterRequest, RegisterRequest};
use crate::txn::TxnOp;
use crate::{Command, CommandResult};

/// Which server may answer a read, and after what (Consul's consistency modes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    /// The leader, under its lease (a follower first catches up to the leader's read point).
    #[default]
    Default,
    /// Any server, from what it has.
    Stale,
    /// After the leader confirms with a quorum that it still leads.
    Consistent,
}

/// Where a query comes from, for `near` sorting: Consul's `QuerySource`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuerySource {
    /// The asking agent's node name (what `near=_agent` means).
    pub node: String,
    /// The address the request came from (what a prepared query's `near=_ip` means).
    pub ip: Option<String>,
}

/// Options every read carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryOptions {
    /// The datacenter asked (empty: the agent's own).
    pub datacenter: String,
    /// The ACL token (for the ACL issue; carried, not yet checked).
    pub token: String,
    /// Block until the result's index passes this (0: answer now).
    pub min_query_index: u64,
    /// The longest a blocking query waits (the server clamps it and adds jitter).
    pub max_query_time: Duration,
    pub consistency: Consistency,
    /// A stale read from a server that heard from the leader longer ago than this is re-read at
    /// the leader's read point.
    pub max_stale: Option<Duration>,
    /// A `?filter=` expression over the result's rows.
    pub filter: Option<String>,
    /// Sort rows by round-trip time from this node (`_agent`: `source.node`).
    pub near: Option<String>,
    /// `?node-meta=key:value` pairs a row's node must carry.
    pub node_meta: BTreeMap<String, String>,
    /// `?peer=`: rows imported from a cluster peer (Cairn has none, so always empty).
    pub peer: Option<String>,
    pub source: QuerySource,
}

/// Options every write carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOptions {
    pub datacenter: String,
    pub token: String,
}

/// What a read answer says about itself (`X-Consul-Index`, `X-Consul-KnownLeader`,
/// `X-Consul-LastContact`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryMeta {
    pub index: u64,
    pub known_leader: bool,
    pub last_contact_ms: u64,
}

/// A read, by the Consul RPC it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadRequest {
    /// `KVS.Get`.
    KvsGet { key: String },
    /// `KVS.List`.
    KvsList { prefix: String },
    /// `KVS.ListKeys`.
    KvsListKeys { prefix: String, separator: String },
    /// `Catalog.ListNodes`.
    CatalogListNodes,
    /// `Catalog.ListServices`.
    CatalogListServices,
    /// `Catalog.ServiceNodes`: instances having every tag in `tags`.
    CatalogServiceNodes { service: String, tags: Vec<String> },
    /// `Catalog.NodeServices`.
    CatalogNodeServices { node: String },
    /// `Health.NodeChecks`.
    HealthNodeChecks { node: String },
    /// `Health.ServiceChecks`.
    HealthServiceChecks { service: String },
    /// `Health.ServiceNodes`.
    HealthServiceNodes { service: String, tags: Vec<String>, passing: bool },
    /// `Health.ChecksInState` (`any`, `passing`, `warning`, `critical`).
    HealthChecksInState { state: String },
    /// `Session.Get`.
    SessionGet { id: String },
    /// `Session.NodeSessions`.
    SessionNodeSessions { node: String },
    /// `Session.List`.
    SessionList,
    /// `PreparedQuery.List`.
    PreparedQueryList,
    /// `PreparedQuery.Get` (by ID only).
    PreparedQueryGet { id: String },
    /// `PreparedQuery.Execute`: by ID, name or template; `limit` 0 for all.
    PreparedQueryExecute { id_or_name: String, limit: usize },
    /// `PreparedQuery.Explain`: the query a name resolves to, its template rendered.
    PreparedQueryExplain { id_or_name: String },
    /// `Coordinate.ListNodes`, in one segment if given.
    CoordinateListNodes { segment: Option<String> },
    /// `Coordinate.Node`.
    CoordinateNode { node: String, segment: Option<String> },
    /// `Txn.Read`: a transaction of reads only.
    TxnRead(Vec<TxnOp>),
    /// `Catalog.ServiceNodes` by `ServiceAddress` alone: every instance with this address of its
    /// own, whatever its service (what a DNS reverse lookup asks).
    CatalogServiceAddress { address: String },
}

/// A prepared query's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryExecuted {
    pub service: String,
    pub nodes: Vec<ServiceEntry>,
    pub dns_ttl: String,
    pub datacenter: String,
}

/// What a read returns; each [`ReadRequest`] has one shape. Rows are shared with the store's
/// snapshot in process (`Arc`) and travel as plain values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReadResponse {
    Entry(Option<Arc<DirEntry>>),
    Entries(Vec<Arc<DirEntry>>),
    Keys(Vec<String>),
    Nodes(Vec<Arc<Node>>),
    /// Service names and the union of their tags.
    Services(BTreeMap<String, Vec<String>>),
    ServiceNodes(Vec<ServiceNode>),
    NodeServices(Option<(Arc<Node>, Vec<Arc<NodeService>>)>),
    Checks(Vec<Arc<HealthCheck>>),
    ServiceEntries(Vec<ServiceEntry>),
    Sessions(Vec<Arc<Session>>),
    Queries(Vec<Arc<PreparedQuery>>),
    Executed(Box<QueryExecuted>),
    Explained(Box<PreparedQuery>),
    Coordinates(Vec<CoordinateEntry>),
    Txn(CommandResult),
}

/// A write, by the Consul RPC it stands for. The server that takes it forwards it to the leader,
/// which validates, decides what depends on time, and proposes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteRequest {
    /// `KVS.Apply` (answers `Bool`; an acquire inside a lock-delay is `false`).
    KvsApply { op: KvOp, entry: DirEntry },
    /// `Catalog.Register`.
    CatalogRegister(RegisterRequest),
    /// `Catalog.Deregister`.
    CatalogDeregister(DeregisterRequest),
    /// An agent's anti-entropy round: registrations and deregistrations of its own node, applied
    /// together (only `Register`/`Deregister` commands are accepted).
    CatalogSync(Vec<Command>),
    /// `Session.Apply` create: the server picks the ID (answered as `Id`). `legacy_checks` are the
    /// deprecated `Checks`, each a node or a service check of the session's node, by what it names.
    SessionCreate { session: Session, legacy_checks: Vec<String> },
    /// `Session.Apply` destroy.
    SessionDestroy { id: String },
    /// `Session.Renew`: resets the TTL timer the leader keeps (answered as `Session`).
    SessionRenew { id: String },
    /// `Txn.Apply` (answered as `Result` with the results or the rollback's errors).
    TxnApply(Vec<TxnOp>),
    /// `PreparedQuery.Apply` create (answered as `Id`).
    PreparedQueryCreate(PreparedQuery),
    /// `PreparedQuery.Apply` update of the query `query.id`.
    PreparedQueryUpdate(PreparedQuery),
    /// `PreparedQuery.Apply` delete.
    PreparedQueryDelete { id: String },
    /// `Coordinate.Update` (batched).
    CoordinateUpdate(Vec<CoordinateEntry>),
}

/// What a write returns, and the index it committed at (0 when nothing was proposed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteResponse {
    pub index: u64,
    pub result: WriteResult,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WriteResult {
    /// What the state machine answered.
    Result(CommandResult),
    /// The ID of what was created.
    Id(String),
    /// The renewed session.
    Session(Arc<Session>),
}

/// An operator request: Consul's `Operator.*` and `Status.*` RPCs, backups, and
/// `Internal.EventFire`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorRequest {
    /// `Operator.RaftGetConfiguration` (with `?stale`, answered by the server asked).
    RaftGetConfiguration,
    /// `Operator.RaftRemovePeerByID` / `ByAddress`: exactly one of the two.
    RaftRemovePeer { id: Option<String>, address: Option<String> },
    /// `Operator.RaftTransferLeader`: to the server with this node ID, or the best other voter.
    RaftTransferLeader { id: Option<String> },
    /// `Operator.AutopilotGetConfiguration`.
    AutopilotGetConfiguration,
    /// `Operator.AutopilotSetConfiguration`, with `?cas=` (answered as `Bool`).
    AutopilotSetConfiguration { config: AutopilotConfig, cas: Option<u64> },
    /// `Operator.ServerHealth` (autopilot's state is drawn from it too).
    AutopilotServerHealth,
    /// `Status.Leader`.
    StatusLeader,
    /// `Status.Peers`.
    StatusPeers,
    /// A backup archive of the state (`GET /v1/snapshot`).
    SnapshotSave,
    /// Restore a backup archive into the cluster (`PUT /v1/snapshot`).
    SnapshotRestore(#[serde(with = "serde_bytes")] Vec<u8>),
    /// `Internal.EventFire`: the server asked broadcasts the user event in its LAN pool (any
    /// server will do, as in Consul: gossip carries it to every agent).
    EventFire(crate::structs::UserEvent),
}

/// A server in the Raft configuration, as `/v1/operator/raft/configuration` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftServerInfo {
    /// Its node ID (the Raft ID where gossip does not know the server).
    pub id: String,
    /// Its node name (`(unknown)` where gossip does not know it).
    pub node: String,
    pub address: String,
    pub leader: bool,
    pub protocol_version: String,
    pub voter: bool,
    pub last_index: u64,
}

/// One server's health as autopilot judges it: known to gossip as alive, heard from within
/// `last_contact_threshold`, and no more than `max_trailing_logs` behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHealth {
    pub id: String,
    pub name: String,
    pub address: String,
    /// `alive`, `leaving`, `left`, `failed` or `none`.
    pub serf_status: String,
    pub version: String,
    pub leader: bool,
    pub voter: bool,
    /// Since the leader last heard from it (`None`: never, or unknown).
    pub last_contact_ms: Option<u64>,
    pub last_term: u64,
    pub last_index: u64,
    pub healthy: bool,
}

/// `Operator.ServerHealth`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHealthReport {
    pub healthy: bool,
    /// How many more voters may fail with a quorum left.
    pub failure_tolerance: usize,
    pub servers: Vec<ServerHealth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorResponse {
    RaftConfiguration {
        servers: Vec<RaftServerInfo>,
        index: u64,
    },
    Done,
    Bool(bool),
    Autopilot(AutopilotConfig),
    Health(ServerHealthReport),
    Leader(String),
    Peers(Vec<String>),
    /// A backup archive; `meta.index` is the index of the state it holds, and the rest says
    /// how current the server that made it was (a `?stale` save may come from a follower).
    Snapshot {
        #[serde(with = "serde_bytes")]
        archive: Vec<u8>,
        meta: QueryMeta,
    },
}
