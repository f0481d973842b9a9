//! The Raft transport over the server port ([`crate::rpc::RPC_RAFT`]): msgpack frames, one
//! connection per openraft client (replication, heartbeats and snapshots each have their own, so
//! a heartbeat never queues behind an append batch or a snapshot). Replication is pipelined
//! ([`RaftMsg::StreamAppend`]: requests go out without waiting for replies); votes and the rest
//! are one request at a time; snapshots travel in chunks.
//!
//! The receiving side ([`serve_raft`]) hands each message to the local Raft and notes when a leader
//! last reached this server, for `X-Consul-LastContact`.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, RaftNetworkV2};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{Raft, SnapshotMeta, TypeConfig, Vote};
use crate::rpc::{decode, dial, encode, read_frame, stopped, write_frame, MAX_RAFT_FRAME, RPC_RAFT};

/// Snapshot bytes per frame.
const SNAPSHOT_CHUNK: usize = 4 << 20;
/// How long one snapshot chunk may take to be sent and taken. openraft's
/// `install_snapshot_timeout` (200 ms) suits one small request, not megabytes: with it, a state
/// of a few megabytes could never reach a follower that needs it. hashicorp/raft scales its
/// InstallSnapshot deadline with the snapshot's size (more generously); here each chunk gets this,
/// and the last one, which installs the whole state, a second more per MiB of it.
const SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(10);
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
        // msgpack `bin`: an array of integers costs up to twice the bytes and a decode per byte.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        done: bool,
    },
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    /// One request of a pipelined append stream: the connection carries only these from the first
    /// one on, the replies come back in order, and the stream ends at the first error.
    StreamAppend(AppendEntriesRequest<TypeConfig>),
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
    /// The result of one [`RaftMsg::StreamAppend`].
    StreamAppend(StreamAppendResult<TypeConfig>),
}

/// Requests one append stream may have in flight (openraft's own pipeline holds 64).
const STREAM_IN_FLIGHT: usize = 64;

/// What an append stream's writer and reader share.
struct StreamState {
    /// Requests that may still be sent before a reply comes back.
    slots: tokio::sync::Semaphore,
    /// Requests written so far.
    sent: std::sync::atomic::AtomicU64,
    /// The input has ended: once every request has its reply, so does the stream.
    input_done: std::sync::atomic::AtomicBool,
    /// Signalled on every write and at the end of the input.
    progress: tokio::sync::Notify,
}

/// Closes an append stream's slots when its reader goes, which stops its writer.
struct CloseOnDrop(Arc<StreamState>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.slots.close();
    }
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
    gate: crate::raft::VoteGate,
    seed: u64,
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
                gate.wait().await;
                raft.vote(req).await.map(RaftReply::Vote).unwrap_or_else(|e| RaftReply::Err(e.to_string()))
            }
            RaftMsg::PreVote(req) => {
                gate.wait().await;
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
            RaftMsg::StreamAppend(first) => {
                // The rest of this connection is one pipelined stream.
                return super::with_seed(seed, serve_stream(stream, raft, contact, stop, first)).await;
            }
        };
        write_frame(&mut stream, &encode(&reply)?).await?;
    }
}

/// The receiving end of a pipelined append stream: requests are read as they come and handed to
/// Raft's own pipeline (so the follower's log batches their writes), replies are written in order
/// as each completes. The connection closes after the first error, as the stream ends there.
async fn serve_stream(
    stream: TcpStream,
    raft: Raft,
    contact: Option<Arc<ContactTracker>>,
    mut stop: watch::Receiver<bool>,
    first: AppendEntriesRequest<TypeConfig>,
) -> io::Result<()> {
    tracing::debug!(target: "agent.server.raft", "append stream opened");
    let (mut rd, mut wr) = stream.into_split();
    let (tx, rx) = tokio::sync::mpsc::channel::<AppendEntriesRequest<TypeConfig>>(STREAM_IN_FLIGHT);
    let _ = tx.send(first).await;
    let reader = async move {
        loop {
            let frame = match tokio::time::timeout(RAFT_IDLE_TIMEOUT, read_frame(&mut rd, MAX_RAFT_FRAME)).await {
                Ok(Ok(f)) => f,
                _ => return,
            };
            let Ok(RaftMsg::StreamAppend(req)) = decode::<RaftMsg>(&frame) else {
                tracing::warn!(target: "agent.server.raft", "a message other than an append on an append stream; closing it");
                return;
            };
            if tx.send(req).await.is_err() {
                return;
            }
        }
    };
    let input = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let mut results = std::pin::pin!(raft.stream_append(input));
    let writer = async move {
        while let Some(r) = results.next().await {
            // A conflict is still word from the leader; a higher vote is not.
            let (reply, last, from_leader) = match r {
                Ok(Ok(log_id)) => (RaftReply::StreamAppend(Ok(log_id)), false, true),
                Ok(Err(e)) => {
                    let conflict = matches!(e, openraft::raft::StreamAppendError::Conflict(_));
                    (RaftReply::StreamAppend(Err(e)), true, conflict)
                }
                Err(fatal) => (RaftReply::Err(fatal.to_string()), true, false),
            };
            if from_leader {
                if let Some(c) = &contact {
                    c.touch();
                }
            }
            write_frame(&mut wr, &encode(&reply)?).await?;
            if last {
                break;
            }
        }
        Ok::<(), io::Error>(())
    };
    tokio::select! {
        r = writer => r,
        _ = reader.then(|_| std::future::pending::<()>()) => Ok(()),
        _ = stopped(&mut stop) => Ok(()),
    }
}

#[derive(Clone, Default)]
pub struct Network;

pub struct Peer {
    target: u64,
    addr: String,
    conn: Option<TcpStream>,
    /// Pipeline appends on a connection of their own (replication); otherwise send them one at a
    /// time on this peer's connection (heartbeats: one request per stream, every 100 ms).
    pipelined: bool,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        Peer { target, addr: node.addr.clone(), conn: None, pipelined: true }
    }

    /// Heartbeats (the leader's lease and read-index probes) get a connection of their own, so
    /// they never wait behind an append batch or a snapshot.
    async fn new_heartbeat_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        Peer { target, addr: node.addr.clone(), conn: None, pipelined: false }
    }

    /// Snapshots too: a long transfer must not hold up replication or heartbeats.
    async fn new_snapshot_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        Peer { target, addr: node.addr.clone(), conn: None, pipelined: false }
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

    /// Pipelined replication: requests go out on a connection of their own as openraft produces
    /// them (up to [`STREAM_IN_FLIGHT`] unanswered), without waiting for each reply; replies come
    /// back in order. The far side feeds them to its Raft's pipeline, so its log writes batch.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> futures::future::BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>, RPCError<TypeConfig>>,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        if !self.pipelined {
            return openraft::network::stream_append_sequential(self, input, option);
        }
        let addr = self.addr.clone();
        let target = self.target;
        async move {
            let ttl = option.soft_ttl();
            let conn = dial(&addr, RPC_RAFT, ttl.min(Duration::from_secs(5)))
                .await
                .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
            let (rd, mut wr) = conn.into_split();
            let shared = Arc::new(StreamState {
                slots: tokio::sync::Semaphore::new(STREAM_IN_FLIGHT),
                sent: std::sync::atomic::AtomicU64::new(0),
                input_done: std::sync::atomic::AtomicBool::new(false),
                progress: tokio::sync::Notify::new(),
            });
            let w = shared.clone();
            // The writer runs on its own until the input ends or the connection breaks; dropping
            // the returned stream closes the slots, which stops a writer waiting for one.
            tokio::spawn(async move {
                let mut input = input;
                while let Some(req) = input.next().await {
                    let Ok(permit) = w.slots.acquire().await else { break };
                    permit.forget();
                    let Ok(frame) = encode(&RaftMsg::StreamAppend(req)) else { break };
                    if write_frame(&mut wr, &frame).await.is_err() {
                        break;
                    }
                    w.sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    w.progress.notify_one();
                }
                w.input_done.store(true, std::sync::atomic::Ordering::SeqCst);
                w.progress.notify_one();
            });
            let state = (rd, CloseOnDrop(shared), 0u64);
            let replies = futures::stream::unfold(Some(state), move |state| async move {
                let (mut rd, shared, received) = state?;
                let net = |e: io::Error| RPCError::Network(NetworkError::new(&e));
                // Wait until a reply is owed; the stream ends once the input has ended and every
                // request has its reply. An idle stream (nothing sent) never times out.
                loop {
                    let notified = shared.0.progress.notified();
                    if shared.0.sent.load(std::sync::atomic::Ordering::SeqCst) > received {
                        break;
                    }
                    if shared.0.input_done.load(std::sync::atomic::Ordering::SeqCst) {
                        return None;
                    }
                    notified.await;
                }
                let frame =
                    match tokio::time::timeout(ttl.max(Duration::from_secs(1)), read_frame(&mut rd, MAX_RAFT_FRAME))
                        .await
                    {
                        Ok(Ok(f)) => f,
                        Ok(Err(e)) => return Some((Err(net(e)), None)),
                        Err(_) => {
                            let e =
                                io::Error::new(io::ErrorKind::TimedOut, format!("append stream to {target} timed out"));
                            return Some((Err(net(e)), None));
                        }
                    };
                shared.0.slots.add_permits(1);
                match decode::<RaftReply>(&frame) {
                    Ok(RaftReply::StreamAppend(r)) => {
                        let more = r.is_ok();
                        Some((Ok(r), more.then_some((rd, shared, received + 1))))
                    }
                    Ok(RaftReply::Err(e)) => Some((Err(net(io::Error::other(e))), None)),
                    Ok(_) => Some((Err(net(io::Error::other("unexpected reply on an append stream"))), None)),
                    Err(e) => Some((Err(net(e)), None)),
                }
            });
            Ok(replies.boxed())
        }
        .boxed()
    }

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
                let ttl = if done {
                    SNAPSHOT_CHUNK_TIMEOUT + Duration::from_secs((data.len() >> 20) as u64)
                } else {
                    SNAPSHOT_CHUNK_TIMEOUT
                };
                let ttl = ttl.max(option.hard_ttl());
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
