//! The server port (Consul's 8300): one TCP listener whose first byte says what the connection
//! carries, as Consul's does. [`RPC_CAIRN`] is multiplexed request/response frames between agents
//! and servers ([`client::RpcClient`] on the calling side, [`serve`] here); [`RPC_RAFT`] carries
//! Raft's messages (see [`crate::raft::network`]); [`RPC_TLS`] and [`RPC_SNAPSHOT`] are kept for
//! TLS and snapshot streams. The byte after the first is the wire version: a peer of another
//! version is refused at once rather than misread.
//!
//! Every frame is a big-endian `u32` length and a msgpack body, with a size limit per protocol; a
//! bad frame closes that connection only. Idle connections time out (waiting for a frame to begin
//! never consumes a byte, so a timeout cannot cut a frame in two), a frame that stalls midway
//! closes its connection, and connections per client address are capped
//! (`limits.rpc_max_conns_per_client`).
//!
//! Must not: know about HTTP; decide anything a server endpoint decides (that is [`crate::server`]).

pub mod client;
pub mod proto;

pub use local::{LocalRpc, Rpc, RpcFuture};

mod local {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;

    use cairn_types::rpc::{
        OperatorRequest, OperatorResponse, QueryMeta, QueryOptions, ReadRequest, ReadResponse, WriteOptions,
        WriteRequest, WriteResponse,
    };

    use crate::error::Error;
    use crate::server::Server;

    pub type RpcFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

    /// How an agent reaches the servers: the one seam between what a user touches and what a
    /// server decides. In process on a server ([`LocalRpc`]); over the server port on a client
    /// agent (the next implementation).
    pub trait Rpc: Send + Sync {
        /// A read, run as a blocking query on the server under the consistency `q` asks.
        fn read<'a>(&'a self, req: ReadRequest, q: QueryOptions) -> RpcFuture<'a, (QueryMeta, ReadResponse)>;
        /// A write, proposed by the leader.
        fn write<'a>(&'a self, req: WriteRequest, w: WriteOptions) -> RpcFuture<'a, WriteResponse>;
        /// An operator, status or backup request (`?stale` in `q` lets the server asked answer).
        fn operator<'a>(&'a self, req: OperatorRequest, q: QueryOptions) -> RpcFuture<'a, OperatorResponse>;
    }

    /// A server agent's own server.
    pub struct LocalRpc(pub Arc<Server>);

    impl Rpc for LocalRpc {
        fn read<'a>(&'a self, req: ReadRequest, q: QueryOptions) -> RpcFuture<'a, (QueryMeta, ReadResponse)> {
            Box::pin(async move { crate::endpoints::read(&self.0, &req, &q).await })
        }
        fn write<'a>(&'a self, req: WriteRequest, w: WriteOptions) -> RpcFuture<'a, WriteResponse> {
            Box::pin(async move { crate::endpoints::write(&self.0, req, &w).await })
        }
        fn operator<'a>(&'a self, req: OperatorRequest, q: QueryOptions) -> RpcFuture<'a, OperatorResponse> {
            Box::pin(async move { crate::endpoints::operator::operator(&self.0, req, &q).await })
        }
    }
}

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::server::Server;
use proto::{Envelope, Request, Response};

/// Multiplexed RPC frames (Consul uses 0 for its msgpack RPC).
pub const RPC_CAIRN: u8 = 0x00;
/// Raft messages (Consul: 1).
pub const RPC_RAFT: u8 = 0x01;
/// Reserved: TLS, then an inner byte (Consul: 3).
pub const RPC_TLS: u8 = 0x03;
/// Reserved: snapshot streams (Consul: 5).
pub const RPC_SNAPSHOT: u8 = 0x05;
/// The version byte that follows the protocol byte. 2: byte strings (snapshot chunks, restores,
/// backup archives) are msgpack `bin`; a server of version 1 would misread them, so it is
/// refused at the handshake instead (no rolling upgrade across that change). 3: a frame may
/// carry several callers' ids ([`proto::Envelope::also`]); a server of version 2 would ignore
/// all but the first and leave the others waiting.
pub const WIRE_VERSION: u8 = 3;

/// Largest RPC frame (a request or an answer): a transaction or a large catalog answer fits.
pub const MAX_RPC_FRAME: usize = 16 << 20;
/// Most callers one gathered read carries ([`proto::Envelope::also`] and its first id); a
/// client starts another request past it, and a server refuses a frame with more.
pub const MAX_GATHERED: usize = 4096;
/// Largest answer frame a client reads: the largest frame, and the ids of a gathered read's
/// callers (at most 9 bytes each in msgpack) on top.
pub const MAX_ANSWER_FRAME: usize = MAX_RPC_FRAME + MAX_GATHERED * 9 + 64;
/// Largest Raft frame: an append batch or a snapshot chunk.
pub const MAX_RAFT_FRAME: usize = 160 << 20;
/// How long a new connection has to say what it is (`limits.rpc_handshake_timeout`'s default).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// An RPC connection with nothing in flight and no frame for this long is closed.
pub const RPC_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Once a frame has begun, the rest of it must arrive within this, or the connection is closed
/// (a peer that stalls mid-frame is broken or hostile).
pub const RPC_FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests one RPC connection may have in flight at once (blocking queries aside).
pub const MAX_IN_FLIGHT: usize = 512;
/// Blocking queries one RPC connection may hold at once. They wait for minutes, so they have an
/// allowance of their own and never hold back the requests behind them: a follower forwards all
/// its clients' blocking queries and its writes over one connection to the leader. Past it, a
/// blocking query is refused at once (the reader never stalls on them).
pub const MAX_BLOCKING_IN_FLIGHT: usize = 65_536;
/// Buffer of a connection's frame reader and writer: frames queued together leave in one write.
const FRAME_BUF: usize = 64 * 1024;

/// Resolves once `stop` is set (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(body).await
}

/// What a connection's writer sends: a frame, or something that becomes one when its turn comes.
pub trait Outgoing: Send {
    /// Whether it may still gather more (callers who will ask the same): the writer first lets
    /// the tasks already woken run, once.
    fn gathers(&self) -> bool {
        false
    }
    /// The frame's bytes (`None`: nothing to send after all).
    fn render(self) -> Option<Vec<u8>>;
}

impl Outgoing for Vec<u8> {
    fn render(self) -> Option<Vec<u8>> {
        Some(self)
    }
}

/// Writes the frames `rx` yields until it ends or the connection fails; frames that queue up
/// while one is written are sent together, in one flush.
pub async fn pump_frames<W: AsyncWrite + Unpin, T: Outgoing>(w: W, rx: &mut mpsc::Receiver<T>) -> io::Result<()> {
    let mut w = tokio::io::BufWriter::with_capacity(FRAME_BUF, w);
    while let Some(first) = rx.recv().await {
        // A burst (many answers one change released, or many callers at once): let the tasks
        // about to queue theirs run first, once, so that the burst leaves in a few writes rather
        // than one each. A lone frame is not held back, unless it gathers callers.
        let mut yielded = false;
        let mut next = Some(first);
        while let Some(f) = next.take() {
            if f.gathers() && !yielded {
                yielded = true;
                tokio::task::yield_now().await;
            }
            if let Some(b) = f.render() {
                write_frame(&mut w, &b).await?;
            }
            next = rx.try_recv().ok();
            if next.is_some() && !yielded {
                yielded = true;
                tokio::task::yield_now().await;
            }
        }
        w.flush().await?;
    }
    Ok(())
}

/// A buffered reader for a connection's frames.
pub fn frame_reader<R: AsyncRead>(r: R) -> tokio::io::BufReader<R> {
    tokio::io::BufReader::with_capacity(FRAME_BUF, r)
}

/// Reads one frame of at most `max` bytes (checked before anything is allocated).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let n = u32::from_be_bytes(len) as usize;
    if n > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {n} bytes is over the limit of {max}"),
        ));
    }
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

pub fn encode<T: serde::Serialize>(v: &T) -> io::Result<Vec<u8>> {
    // Named fields: the command types lean on serde attributes (skips, tags) that a positional
    // encoding cannot round-trip, as the log store found.
    // Room for a typical frame up front: growing from empty reallocates several times.
    let mut buf = Vec::with_capacity(256);
    rmp_serde::encode::write_named(&mut buf, v)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    Ok(buf)
}

pub fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> io::Result<T> {
    rmp_serde::from_slice(b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// Opens a connection to `addr` for protocol `kind` (within `timeout`).
pub async fn dial(addr: &str, kind: u8, timeout: Duration) -> io::Result<TcpStream> {
    let mut s = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("dial {addr}: timed out")))??;
    s.set_nodelay(true)?;
    s.write_all(&[kind, WIRE_VERSION]).await?;
    Ok(s)
}

/// Connections per client address, capped.
#[derive(Default)]
struct ConnCount {
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

struct ConnGuard {
    count: Arc<ConnCount>,
    ip: IpAddr,
}

impl ConnCount {
    fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ConnGuard> {
        let mut m = self.by_ip.lock().expect("conn count");
        let n = m.entry(ip).or_default();
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(ConnGuard { count: self.clone(), ip })
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut m = self.count.by_ip.lock().expect("conn count");
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// What a server-port connection is allowed.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// `limits.rpc_max_conns_per_client`: connections from one IP at once (0: no cap).
    pub max_conns_per_client: usize,
    /// `limits.rpc_handshake_timeout`: time to send the protocol and version bytes (0: no limit).
    pub handshake_timeout: Duration,
}

/// Accepts connections on the server port until `stop`, handing each to its protocol.
pub async fn serve(
    listener: TcpListener,
    server: Weak<Server>,
    raft: crate::raft::Raft,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) {
    let max_conns_per_client = limits.max_conns_per_client;
    let count = Arc::new(ConnCount::default());
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(target: "agent.server.rpc", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => return,
        };
        let Some(guard) = count.acquire(peer.ip(), max_conns_per_client) else {
            tracing::warn!(target: "agent.server.rpc", conn = %peer, limit = max_conns_per_client, "rejecting RPC conn from because rpc_max_conns_per_client exceeded");
            continue;
        };
        let (server, raft, stop) = (server.clone(), raft.clone(), stop.clone());
        tokio::spawn(async move {
            let _guard = guard;
            if let Err(e) = handle_conn(stream, peer, server, raft, limits.handshake_timeout, stop).await {
                if e.kind() != io::ErrorKind::UnexpectedEof {
                    tracing::debug!(target: "agent.server.rpc", conn = %peer, error = %e, "connection closed");
                }
            }
        });
    }
}

async fn handle_conn(
    mut stream: TcpStream,
    peer: SocketAddr,
    server: Weak<Server>,
    raft: crate::raft::Raft,
    handshake_timeout: Duration,
    stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut head = [0u8; 2];
    if handshake_timeout.is_zero() {
        stream.read_exact(&mut head).await?;
    } else {
        tokio::time::timeout(handshake_timeout, stream.read_exact(&mut head))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no protocol byte"))??;
    }
    if head[1] != WIRE_VERSION {
        tracing::warn!(target: "agent.server.rpc", conn = %peer, version = head[1], "unsupported wire version; closing");
        return Ok(());
    }
    match head[0] {
        RPC_CAIRN => serve_rpc(stream, server, stop).await,
        RPC_RAFT => {
            let contact = server.upgrade().map(|s| s.contact_tracker());
            let gate = server.upgrade().map_or(crate::raft::VoteGate::open(), |s| s.vote_gate());
            // The entropy seed of the append stream this connection may become.
            let seed = server.upgrade().map_or(0, |s| s.config().rng.next_u64());
            crate::raft::network::serve_raft(stream, raft, contact, gate, seed, stop).await
        }
        other => {
            tracing::warn!(target: "agent.server.rpc", conn = %peer, kind = other, "unrecognized RPC byte; closing");
            Ok(())
        }
    }
}

/// One multiplexed RPC connection: frames in, each request handled in its own task, answers out
/// in whatever order they finish (matched by id).
async fn serve_rpc(stream: TcpStream, server: Weak<Server>, mut stop: watch::Receiver<bool>) -> io::Result<()> {
    let (rd, wr) = stream.into_split();
    let mut rd = frame_reader(rd);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
    let writer = tokio::spawn(async move {
        let _ = pump_frames(wr, &mut rx).await;
    });
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let blocking_slots = Arc::new(Semaphore::new(MAX_BLOCKING_IN_FLIGHT));
    let idle = |slots: &Semaphore, blocking: &Semaphore| {
        slots.available_permits() == MAX_IN_FLIGHT && blocking.available_permits() == MAX_BLOCKING_IN_FLIGHT
    };
    let idle_timeout = server.upgrade().map_or(RPC_IDLE_TIMEOUT, |s| s.config().rpc_idle_timeout);
    let result = loop {
        // Waiting for a frame to begin may time out and go on (requests are still being
        // answered); waiting only looks at the buffer (`fill_buf` consumes nothing), so no part
        // of a frame is ever dropped by a timeout.
        tokio::select! {
            r = tokio::time::timeout(idle_timeout, rd.fill_buf()) => match r {
                Ok(Ok([])) => break Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => break Err(e),
                // Idle: close unless something is still being answered.
                Err(_) if idle(&slots, &blocking_slots) => break Ok(()),
                Err(_) => continue,
            },
            _ = stopped(&mut stop) => break Ok(()),
        }
        let frame = tokio::select! {
            r = tokio::time::timeout(RPC_FRAME_TIMEOUT, read_frame(&mut rd, MAX_RPC_FRAME)) => match r {
                Ok(Ok(f)) => f,
                Ok(Err(e)) => break Err(e),
                Err(_) => break Err(io::Error::new(io::ErrorKind::TimedOut, "a frame stalled midway")),
            },
            _ = stopped(&mut stop) => break Ok(()),
        };
        let req = match decode::<Envelope<Request>>(&frame) {
            Ok(r) if r.also.len() >= MAX_GATHERED => {
                break Err(io::Error::new(io::ErrorKind::InvalidData, "more callers in one request than allowed"))
            }
            Ok(r) => r,
            Err(e) => break Err(e),
        };
        // A request that gathers several callers (`also`) counts once: it is one query here.
        let blocks = matches!(&req.body, Request::Read(r) if r.1.min_query_index > 0);
        // The permit lives until the answer is queued for the writer (so answers waiting on a
        // slow reader still count); a blocking query over its allowance is answered at once, its
        // refusal under an ordinary permit.
        let (permit, refused) = match blocks.then(|| blocking_slots.clone().try_acquire_owned()) {
            Some(Ok(p)) => (p, false),
            other => {
                let Ok(p) = slots.clone().acquire_owned().await else { break Ok(()) };
                (p, other.is_some())
            }
        };
        let (tx, server) = (tx.clone(), server.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let body = if refused {
                Err(crate::Error::Rejected(cairn_types::Error::rejected(format!(
                    "too many blocking queries on one connection (limit {MAX_BLOCKING_IN_FLIGHT})"
                ))))
            } else {
                match server.upgrade() {
                    Some(s) => s.handle_rpc(req.body, 1 + req.also.len()).await,
                    None => Err(crate::Error::ShuttingDown),
                }
            };
            // Callers a client gathered into this one request share its answer.
            let answer = Envelope::<Result<Response, crate::Error>> { id: req.id, also: req.also, body };
            if let Ok(frame) = encode(&answer) {
                let _ = tx.send(frame).await;
            }
        });
    };
    drop(tx);
    let _ = writer.await;
    result
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cairn_types::command::KvOp;
    use cairn_types::rpc::{QueryOptions, ReadRequest, WriteRequest};
    use cairn_types::structs::DirEntry;

    use super::client::RpcClient;
    use super::proto::{Request, Response};
    use crate::server::{Server, ServerConfig};

    /// A lone server that leads, listening on a free loopback port (the rest of `cfg` as given).
    async fn lone_server(cfg: ServerConfig) -> (std::sync::Arc<Server>, std::net::SocketAddr) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let cfg = ServerConfig { bootstrap: true, listen: Some(addr), rpc_addr: addr.to_string(), ..cfg };
        let server = Server::start(cfg).await.unwrap();
        server.wait_ready(Duration::from_secs(10)).await.expect("leader");
        (server, addr)
    }

    fn put(key: &str) -> Request {
        let entry = DirEntry { key: key.into(), value: Some(b"v".to_vec()), ..Default::default() };
        Request::Write(Box::new(WriteRequest::KvsApply { op: KvOp::Set, entry }))
    }

    /// Writes `key` through `client` and returns the write's index.
    async fn written(client: &RpcClient, at: &str, key: &str) -> u64 {
        match client.call(at, put(key), Duration::from_secs(10)).await {
            Ok(Response::Written(w)) => w.index,
            other => panic!("write of {key}: {other:?}"),
        }
    }

    /// Many calls on a fresh client at once (a client agent's burst at start) share one
    /// connection: with the server allowing one connection per client address, all succeed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_calls_share_one_dial() {
        let (_server, addr) = lone_server(ServerConfig { max_conns_per_client: 1, ..Default::default() }).await;
        let client = std::sync::Arc::new(RpcClient::new());
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..200 {
            let (client, at) = (client.clone(), addr.to_string());
            calls.spawn(async move { client.call(&at, put(&format!("k{i}")), Duration::from_secs(10)).await });
        }
        while let Some(r) = calls.join_next().await {
            assert!(matches!(r.unwrap(), Ok(Response::Written(_))), "every call goes through the one connection");
        }
    }

    /// Callers that queue behind a dial that fails take its failure: against an address whose
    /// full accept queue drops new connections (each dial waits out its timeout), twenty calls at
    /// once all fail after about one dial's timeout, not twenty in turn.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_queued_on_a_failing_dial_share_its_failure() {
        use super::client::{CallError, DIAL_TIMEOUT};
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = sock.local_addr().unwrap();
        // Never accepts: once its queue is full, the kernel drops further connection attempts.
        let _listener = sock.listen(1).unwrap();
        let mut held = Vec::new();
        for _ in 0..4 {
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_millis(300), tokio::net::TcpStream::connect(addr)).await
            {
                held.push(s);
            }
        }
        let client = std::sync::Arc::new(RpcClient::new());
        let started = std::time::Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..20 {
            let (client, at) = (client.clone(), addr.to_string());
            calls.spawn(async move { client.call(&at, put(&format!("k{i}")), Duration::from_secs(1)).await });
        }
        while let Some(r) = calls.join_next().await {
            assert!(
                matches!(r.unwrap(), Err(CallError::Unsent(_))),
                "a dial that cannot connect leaves the call unsent"
            );
        }
        let took = started.elapsed();
        assert!(took >= DIAL_TIMEOUT, "the dials did wait for their timeout ({took:?})");
        assert!(took < DIAL_TIMEOUT * 3, "twenty callers took {took:?}: they dialled in turn");
    }

    /// More blocking queries than [`super::MAX_IN_FLIGHT`] on one connection (as a client agent
    /// or a follower sends all its callers' over one) are all held, a write sent behind them is
    /// answered while they wait, and one change of the key answers every one of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocking_queries_never_hold_back_the_requests_behind_them() {
        let (server, addr) = lone_server(ServerConfig::default()).await;
        let client = std::sync::Arc::new(RpcClient::new());
        let at = addr.to_string();
        let index = written(&client, &at, "held").await;
        let held = super::MAX_IN_FLIGHT + 100;
        let mut reads = tokio::task::JoinSet::new();
        for i in 0..held {
            let (client, at) = (client.clone(), at.clone());
            reads.spawn(async move {
                // Each waits a little longer than the one before: no two are the same request,
                // so none gather (see `identical_reads_queued_together_travel_as_one`).
                let q = QueryOptions {
                    min_query_index: index,
                    max_query_time: Duration::from_secs(120) + Duration::from_millis(i as u64),
                    ..Default::default()
                };
                let req = Request::Read(Box::new((ReadRequest::KvsGet { key: "held".into() }, q)));
                client.call(&at, req, Duration::from_secs(150)).await
            });
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while server.blocking_queries() < held {
            assert!(tokio::time::Instant::now() < deadline, "only {} of {held} held", server.blocking_queries());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Behind them on the same connection, a write is answered while they all still wait.
        assert!(matches!(client.call(&at, put("other"), Duration::from_secs(10)).await, Ok(Response::Written(_))));
        assert_eq!(server.blocking_queries(), held);
        assert!(reads.try_join_next().is_none(), "no blocking query may have returned yet");
        // One change answers every one of them.
        assert!(matches!(client.call(&at, put("held"), Duration::from_secs(10)).await, Ok(Response::Written(_))));
        let mut answered = 0;
        while let Some(r) = reads.join_next().await {
            match r.unwrap() {
                Ok(Response::Read(meta, _)) => assert!(meta.index > index),
                other => panic!("blocking read: {other:?}"),
            }
            answered += 1;
        }
        assert_eq!(answered, held);
    }

    /// Identical blocking reads that callers make together on one connection (watchers of one
    /// key behind one agent, re-arming on the same change) travel as one request, and its one
    /// answer reaches every caller. Single-threaded, the order is fixed: the 200 callers run
    /// before the connection's writer, which the first of them woke, so all join one request.
    #[tokio::test(flavor = "current_thread")]
    async fn identical_reads_queued_together_travel_as_one() {
        let (server, addr) = lone_server(ServerConfig::default()).await;
        let client = std::sync::Arc::new(RpcClient::new());
        let at = addr.to_string();
        let index = written(&client, &at, "watched").await;
        let read = move || {
            let q =
                QueryOptions { min_query_index: index, max_query_time: Duration::from_secs(120), ..Default::default() };
            Request::Read(Box::new((ReadRequest::KvsGet { key: "watched".into() }, q)))
        };
        let callers = 200;
        let mut reads = tokio::task::JoinSet::new();
        for _ in 0..callers {
            let (client, at) = (client.clone(), at.clone());
            reads.spawn(async move { client.call(&at, read(), Duration::from_secs(150)).await });
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while server.blocking_queries() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "no blocking query arrived");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A write sent after them on the same connection is answered after the server has
        // read (and started) everything sent before it.
        assert!(matches!(client.call(&at, put("other"), Duration::from_secs(10)).await, Ok(Response::Written(_))));
        assert_eq!(server.blocking_queries(), callers, "every caller's blocking query is held");
        assert_eq!(server.blocking_evaluations(), 1, "{callers} identical reads made together are one query");
        assert!(reads.try_join_next().is_none(), "no caller may have been answered yet");
        // A different read on the same connection is a request of its own.
        let other = Request::Read(Box::new((ReadRequest::KvsGet { key: "other".into() }, QueryOptions::default())));
        match client.call(&at, other, Duration::from_secs(10)).await {
            Ok(Response::Read(_, res)) => assert!(format!("{res:?}").contains("other"), "{res:?}"),
            r => panic!("read of another key: {r:?}"),
        }
        // One change answers every caller, with the same answer.
        let changed = written(&client, &at, "watched").await;
        let mut answered = 0;
        while let Some(r) = reads.join_next().await {
            match r.unwrap() {
                Ok(Response::Read(meta, _)) => assert_eq!(meta.index, changed),
                other => panic!("blocking read: {other:?}"),
            }
            answered += 1;
        }
        assert_eq!(answered, callers);
    }

    /// Callers gathered into one read on a connection that breaks learn it at once, not at
    /// their timeouts, and so do the callers that come after the break.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gathered_callers_learn_at_once_that_their_connection_broke() {
        use tokio::io::AsyncReadExt;

        use super::client::CallError;
        // A "server" that takes the handshake and one frame's length, then hangs up.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut head = [0u8; 6];
                let _ = s.read_exact(&mut head).await;
                drop(s);
            }
        });
        let client = std::sync::Arc::new(RpcClient::new());
        let read = || {
            let q = QueryOptions { min_query_index: 7, max_query_time: Duration::from_secs(60), ..Default::default() };
            Request::Read(Box::new((ReadRequest::KvsGet { key: "k".into() }, q)))
        };
        let rounds = async {
            for _ in 0..3 {
                let mut calls = tokio::task::JoinSet::new();
                for _ in 0..50 {
                    let (client, at) = (client.clone(), at.clone());
                    calls.spawn(async move { client.call(&at, read(), Duration::from_secs(60)).await });
                }
                while let Some(r) = calls.join_next().await {
                    match r.unwrap() {
                        Err(CallError::Lost(_) | CallError::Unsent(_)) => {}
                        other => panic!("a call on a broken connection: {other:?}"),
                    }
                }
            }
        };
        // Well within the calls' own 60 s timeouts.
        assert!(
            tokio::time::timeout(Duration::from_secs(20), rounds).await.is_ok(),
            "callers waited out their timeouts"
        );
    }

    /// A client that stalls in the middle of a frame, past the idle timeout, while a request of
    /// its is still being answered: the rest of the frame, when it comes, is read as the same
    /// frame (the idle timeout never drops the part already read).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frame_stalled_past_the_idle_timeout_is_not_misread() {
        use tokio::io::AsyncWriteExt;

        use super::proto::Envelope;
        use super::{decode, encode, read_frame, MAX_RPC_FRAME, RPC_CAIRN, WIRE_VERSION};

        let (_server, addr) =
            lone_server(ServerConfig { rpc_idle_timeout: Duration::from_millis(200), ..Default::default() }).await;
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut rd, mut wr) = stream.into_split();
        wr.write_all(&[RPC_CAIRN, WIRE_VERSION]).await.unwrap();
        let frame = |id: u64, body: Request| {
            let b = encode(&Envelope { id, also: Vec::new(), body }).unwrap();
            let mut f = (b.len() as u32).to_be_bytes().to_vec();
            f.extend(b);
            f
        };
        let mut answer = async || {
            let f = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut rd, MAX_RPC_FRAME))
                .await
                .expect("an answer in time")
                .expect("a frame");
            decode::<Envelope<Result<Response, crate::Error>>>(&f).expect("an answer")
        };
        wr.write_all(&frame(1, put("held"))).await.unwrap();
        let a = answer().await;
        let Ok(Response::Written(w)) = a.body else { panic!("write: {:?}", a.body) };
        // A blocking query stays in flight, so the idle timeout does not close the connection.
        let q =
            QueryOptions { min_query_index: w.index, max_query_time: Duration::from_secs(60), ..Default::default() };
        let read = Request::Read(Box::new((ReadRequest::KvsGet { key: "held".into() }, q)));
        wr.write_all(&frame(2, read)).await.unwrap();
        // Half of a frame's length, a stall of several idle timeouts (the fault under test),
        // then the rest.
        let f = frame(3, put("other"));
        wr.write_all(&f[..2]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        wr.write_all(&f[2..]).await.unwrap();
        let a = answer().await;
        assert_eq!(a.id, 3, "{:?}", a.body);
        assert!(matches!(a.body, Ok(Response::Written(_))), "{:?}", a.body);
        // The connection is still in step: a change answers the blocking query, and the write.
        wr.write_all(&frame(4, put("held"))).await.unwrap();
        let mut ids = vec![answer().await.id, answer().await.id];
        ids.sort();
        assert_eq!(ids, vec![2, 4]);
    }

    /// Hostile or broken connections on the server port: each is closed, alone, and the server
    /// goes on answering a well-behaved client. A wrong wire version, an unknown protocol byte, a
    /// frame over the size limit, a frame that is not msgpack, a connection that never says what
    /// it is (`limits.rpc_handshake_timeout`) and one over `limits.rpc_max_conns_per_client`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_connections_are_closed_alone() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        use super::{MAX_RPC_FRAME, RPC_CAIRN, WIRE_VERSION};

        let cfg = ServerConfig {
            rpc_handshake_timeout: Duration::from_millis(300),
            max_conns_per_client: 8,
            ..Default::default()
        };
        let (_server, addr) = lone_server(cfg).await;
        let client = RpcClient::new();
        let at = addr.to_string();
        assert!(matches!(client.call(&at, put("a"), Duration::from_secs(5)).await, Ok(Response::Written(_))));

        // Sends `bytes` on a new connection; true once the server has closed it (EOF or reset).
        let closed_after = |bytes: Vec<u8>| async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(&bytes).await.unwrap();
            let mut buf = [0u8; 64];
            matches!(tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
        };
        assert!(closed_after(vec![RPC_CAIRN, WIRE_VERSION + 7]).await, "another wire version");
        assert!(closed_after(vec![0x7f, WIRE_VERSION]).await, "an unknown protocol byte");
        let mut over = vec![RPC_CAIRN, WIRE_VERSION];
        over.extend(((MAX_RPC_FRAME + 1) as u32).to_be_bytes());
        assert!(closed_after(over).await, "a frame over the limit");
        let mut junk = vec![RPC_CAIRN, WIRE_VERSION];
        junk.extend(5u32.to_be_bytes());
        junk.extend([0xc1, 0xc1, 0xc1, 0xc1, 0xc1]);
        assert!(closed_after(junk).await, "a frame that is not msgpack");
        let t = std::time::Instant::now();
        assert!(closed_after(Vec::new()).await, "silence past the handshake timeout");
        assert!(t.elapsed() >= Duration::from_millis(250), "closed before the handshake timeout: {:?}", t.elapsed());

        // The cap: with the client's connection and seven idle ones from this address, the
        // ninth is closed at once; the client is still answered.
        let mut idle = Vec::new();
        for _ in 0..7 {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(&[RPC_CAIRN, WIRE_VERSION]).await.unwrap();
            idle.push(c);
        }
        // Each accepted connection counts once the server has taken it: wait for the ninth to be
        // refused rather than assume when that is.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if closed_after(vec![RPC_CAIRN, WIRE_VERSION]).await {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the connection over the cap was never refused");
        }
        assert!(matches!(client.call(&at, put("b"), Duration::from_secs(5)).await, Ok(Response::Written(_))));
        drop(idle);
    }

    /// Byte strings in commands are msgpack `bin` now; a command written before, with the bytes
    /// as an array of integers (a Raft log or snapshot from an older Cairn), still decodes.
    #[test]
    fn byte_strings_are_bin_and_old_integer_arrays_still_decode() {
        use cairn_types::command::Command;

        #[derive(serde::Serialize)]
        enum Old {
            Restore(Vec<u8>),
        }
        let bytes = vec![0u8, 1, 200, 255, 7];
        let new = super::encode(&Command::Restore(bytes.clone())).unwrap();
        let old = super::encode(&Old::Restore(bytes.clone())).unwrap();
        assert!(new.len() < old.len(), "bin is the compact form");
        for enc in [new, old] {
            match super::decode::<Command>(&enc).unwrap() {
                Command::Restore(b) => assert_eq!(b, bytes),
                other => panic!("{other:?}"),
            }
        }
    }
}
