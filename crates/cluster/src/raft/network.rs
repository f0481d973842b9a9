//! The Raft transport over the server port ([`crate::rpc::RPC_RAFT`]): one connection per peer,
//! one request at a time on it (openraft opens separate clients for replication and heartbeats, so a
//! heartbeat never queues behind an append batch), msgpack frames, snapshots sent in chunks.
//!
//! The receiving side ([`serve_raft`]) hands each message to the local Raft and notes when a leader
//! last reached this server, for `X-Consul-LastContact`.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, RaftNetworkV2};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{Raft, SnapshotMeta, TypeConfig, Vote};
use crate::rpc::{decode, dial, encode, read_frame, stopped, write_frame, MAX_RAFT_FRAME, RPC_RAFT};

/// Snapshot bytes per frame.
const SNAPSHOT_CHUNK: usize = 4 << 20;
/// A Raft connection with no message for this long is closed (heartbeats keep live ones busy).
const RAFT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The most snapshot bytes a server accepts in one transfer.
const MAX_SNAPSHOT_BYTES: u64 = 8 << 30;

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
enum RaftMsg {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    /// A piece of a snapshot; the last (`done`) installs it.
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    },
    TransferLeader(TransferLeaderRequest<TypeConfig>),
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
enum RaftReply {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    /// `None`: chunk taken, send the next.
    Snapshot(Option<SnapshotResponse<TypeConfig>>),
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    Err(String),
}

/// When a leader last reached this server, on the server's [`Clock`](crate::clock::Clock).
pub struct ContactTracker {
    clock: Arc<dyn crate::clock::Clock>,
    last: Mutex<Option<Instant>>,
}

impl ContactTracker {
    pub fn new(clock: Arc<dyn crate::clock::Clock>) -> Self {
        ContactTracker { clock, last: Mutex::new(None) }
    }

    fn touch(&self) {
        *self.last.lock().expect("contact") = Some(self.clock.now());
    }

    /// Time since a leader's append or heartbeat last arrived (`None`: never).
    pub fn since(&self) -> Option<Duration> {
        let now = self.clock.now();
        self.last.lock().expect("contact").map(|t| now.saturating_duration_since(t))
    }
}

/// Serves one Raft connection until it closes, idles out or the server stops.
pub async fn serve_raft(
    mut stream: TcpStream,
    raft: Raft,
    contact: Option<Arc<ContactTracker>>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let mut snap: Option<Vec<u8>> = None;
    loop {
        let frame = tokio::select! {
            r = tokio::time::timeout(RAFT_IDLE_TIMEOUT, read_frame(&mut stream, MAX_RAFT_FRAME)) => match r {
                Ok(f) => f?,
                Err(_) => return Ok(()),
            },
            _ = stopped(&mut stop) => return Ok(()),
        };
        let msg: RaftMsg = decode(&frame).inspect_err(|e| {
            tracing::warn!(target: "agent.server.raft", error = %e, "undecodable raft message; closing the connection")
        })?;
        let reply = match msg {
            RaftMsg::Append(req) => match raft.append_entries(req).await {
                Ok(r) => {
                    if !matches!(r, AppendEntriesResponse::HigherVote(_)) {
                        if let Some(c) = &contact {
                            c.touch();
                        }
                    }
                    RaftReply::Append(r)
                }
                Err(e) => RaftReply::Err(e.to_string()),
            },
            RaftMsg::Vote(req) => {
                raft.vote(req).await.map(RaftReply::Vote).unwrap_or_else(|e| RaftReply::Err(e.to_string()))
            }
            RaftMsg::PreVote(req) => {
                raft.pre_vote(req).await.map(RaftReply::Vote).unwrap_or_else(|e| RaftReply::Err(e.to_string()))
            }
            RaftMsg::Snapshot { vote, meta, offset, data, done } => {
                let buf = snap.get_or_insert_with(Vec::new);
                if offset != buf.len() as u64 || buf.len() as u64 + data.len() as u64 > MAX_SNAPSHOT_BYTES {
                    snap = None;
                    RaftReply::Err(format!("snapshot chunk at offset {offset} out of order or too large"))
                } else {
                    buf.extend_from_slice(&data);
                    if done {
                        let bytes = snap.take().unwrap_or_default();
                        let s = openraft::alias::SnapshotOf::<TypeConfig, Vec<u8>> { meta, snapshot: bytes };
                        match raft.install_full_snapshot(vote, s).await {
                            Ok(r) => RaftReply::Snapshot(Some(r)),
                            Err(e) => RaftReply::Err(e.to_string()),
                        }
                    } else {
                        RaftReply::Snapshot(None)
                    }
                }
            }
            RaftMsg::TransferLeader(req) => match raft.handle_transfer_leader(req).await {
                Ok(r) => RaftReply::TransferLeader(r),
                Err(e) => RaftReply::Err(e.to_string()),
            },
        };
        write_frame(&mut stream, &encode(&reply)?).await?;
    }
}

#[derive(Clone, Default)]
pub struct Network;

pub struct Peer {
    target: u64,
    addr: String,
    conn: Option<TcpStream>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        Peer { target, addr: node.addr.clone(), conn: None }
    }
}

/// A failed exchange: `unreachable` when no connection could be made (openraft backs off), else
/// a network error (it retries).
struct Failure {
    unreachable: bool,
    err: io::Error,
}

impl Failure {
    fn rpc(self) -> RPCError<TypeConfig> {
        if self.unreachable {
            RPCError::Unreachable(Unreachable::new(&self.err))
        } else {
            RPCError::Network(NetworkError::new(&self.err))
        }
    }

    fn streaming(self) -> StreamingError<TypeConfig> {
        if self.unreachable {
            StreamingError::Unreachable(Unreachable::new(&self.err))
        } else {
            StreamingError::Network(NetworkError::new(&self.err))
        }
    }
}

impl Peer {
    async fn exchange(&mut self, msg: &RaftMsg, timeout: Duration) -> Result<RaftReply, Failure> {
        let frame = encode(msg).map_err(|err| Failure { unreachable: false, err })?;
        if self.conn.is_none() {
            let c = dial(&self.addr, RPC_RAFT, timeout.min(Duration::from_secs(5)))
                .await
                .map_err(|err| Failure { unreachable: true, err })?;
            self.conn = Some(c);
        }
        let conn = self.conn.as_mut().expect("connected");
        let r = tokio::time::timeout(timeout, async {
            write_frame(conn, &frame).await?;
            read_frame(conn, MAX_RAFT_FRAME).await
        })
        .await;
        let bytes = match r {
            Ok(Ok(b)) => b,
            Ok(Err(err)) => {
                self.conn = None;
                return Err(Failure { unreachable: false, err });
            }
            Err(_) => {
                self.conn = None;
                let err = io::Error::new(io::ErrorKind::TimedOut, format!("raft rpc to {} timed out", self.target));
                return Err(Failure { unreachable: false, err });
            }
        };
        decode(&bytes).map_err(|err| {
            self.conn = None;
            Failure { unreachable: false, err }
        })
    }

    fn unexpected(&self, what: &str) -> io::Error {
        io::Error::other(format!("raft peer {} ({}): {what}", self.target, self.addr))
    }
}

impl RaftNetworkV2<TypeConfig> for Peer {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.exchange(&RaftMsg::Append(rpc), option.soft_ttl()).await.map_err(Failure::rpc)? {
            RaftReply::Append(r) => Ok(r),
            RaftReply::Err(e) => Err(RPCError::Network(NetworkError::new(&self.unexpected(&e)))),
            _ => Err(RPCError::Network(NetworkError::new(&self.unexpected("unexpected reply")))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.exchange(&RaftMsg::Vote(rpc), option.soft_ttl()).await.map_err(Failure::rpc)? {
            RaftReply::Vote(r) => Ok(r),
            RaftReply::Err(e) => Err(RPCError::Network(NetworkError::new(&self.unexpected(&e)))),
            _ => Err(RPCError::Network(NetworkError::new(&self.unexpected("unexpected reply")))),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.exchange(&RaftMsg::PreVote(rpc), option.soft_ttl()).await.map_err(Failure::rpc)? {
            RaftReply::Vote(r) => Ok(r),
            RaftReply::Err(e) => Err(RPCError::Network(NetworkError::new(&self.unexpected(&e)))),
            _ => Err(RPCError::Network(NetworkError::new(&self.unexpected("unexpected reply")))),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, Vec<u8>>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let data = snapshot.snapshot;
        let meta = snapshot.meta;
        let send = async {
            let mut offset = 0usize;
            loop {
                let end = (offset + SNAPSHOT_CHUNK).min(data.len());
                let done = end == data.len();
                let msg = RaftMsg::Snapshot {
                    vote,
                    meta: meta.clone(),
                    offset: offset as u64,
                    data: data[offset..end].to_vec(),
                    done,
                };
                // Installing the last piece may take a while on the other side: allow the hard limit.
                let ttl = if done { option.hard_ttl() } else { option.soft_ttl() };
                match self.exchange(&msg, ttl).await.map_err(Failure::streaming)? {
                    RaftReply::Snapshot(Some(r)) if done => return Ok(r),
                    RaftReply::Snapshot(None) if !done => offset = end,
                    RaftReply::Err(e) => {
                        return Err(StreamingError::Network(NetworkError::new(&self.unexpected(&e))));
                    }
                    _ => return Err(StreamingError::Network(NetworkError::new(&self.unexpected("unexpected reply")))),
                }
            }
        };
        tokio::select! {
            r = send => r,
            closed = cancel => {
                self.conn = None;
                Err(StreamingError::Closed(closed))
            }
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.exchange(&RaftMsg::TransferLeader(req), option.soft_ttl()).await.map_err(Failure::rpc)? {
            RaftReply::TransferLeader(r) => Ok(r),
            RaftReply::Err(e) => Err(RPCError::Network(NetworkError::new(&self.unexpected(&e)))),
            _ => Err(RPCError::Network(NetworkError::new(&self.unexpected("unexpected reply")))),
        }
    }
}
