//! The tokio driver: runs one [`Serf`] core on a UDP socket and a TCP listener bound to the same
//! address. One task owns the core; sockets, streams and callers talk to it through channels, so
//! the core stays single-threaded and deterministic.
//!
//! Limits: a datagram is at most [`wire::UDP_RECV_BUF`]; a stream is read in chunks up to
//! [`wire::MAX_INFLATED`] bytes and must finish within the TCP timeout; at most
//! [`MAX_INBOUND_STREAMS`] inbound streams run at once (memberlist's 128).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::coordinate::Coordinate;
use crate::env::OsRng;
use crate::keyring::Keyring;
use crate::memberlist::{Output, StreamKind, StreamStep};
use crate::serf::{self, Event, IncomingQuery, KeyOp, Member, QueryParams, Serf};
use crate::snapshot::Snapshotter;
use crate::wire;

pub const MAX_INBOUND_STREAMS: usize = 128;
/// Events waiting for the application before new ones are dropped.
pub const EVENT_QUEUE: usize = 4096;

#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub serf: serf::Config,
    pub bind: SocketAddr,
    pub keyring: Option<Keyring>,
    /// How long a graceful leave waits for its broadcasts.
    pub broadcast_timeout: Duration,
    /// How long to linger after leaving so the news spreads.
    pub leave_propagate_delay: Duration,
    /// Serf's snapshot file (members and clocks), replayed to rejoin after a restart.
    pub snapshot_path: Option<std::path::PathBuf>,
    /// Ignore a leave recorded in the snapshot.
    pub rejoin_after_leave: bool,
}

/// A query's answers, for whoever sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryEvent {
    Ack(String),
    Response(String, Vec<u8>),
}

/// The result of a key operation across the pool, as Serf's `KeyResponse`.
#[derive(Debug, Clone, Default)]
pub struct KeyResult {
    pub messages: BTreeMap<String, String>,
    pub num_nodes: usize,
    pub num_resp: usize,
    pub num_err: usize,
    pub keys: BTreeMap<String, usize>,
    pub primary_keys: BTreeMap<String, usize>,
}

enum Command {
    Join(Vec<SocketAddr>, bool, oneshot::Sender<Result<usize, String>>),
    Leave(oneshot::Sender<()>),
    ForceLeave(String, bool, oneshot::Sender<Result<(), String>>),
    UserEvent(String, Vec<u8>, bool, oneshot::Sender<Result<(), String>>),
    Query(String, Vec<u8>, QueryParams, mpsc::Sender<QueryEvent>, oneshot::Sender<Result<(), String>>),
    Respond(IncomingQuery, Vec<u8>),
    SetTags(BTreeMap<String, String>, oneshot::Sender<Result<(), String>>),
    Key(KeyOp, Option<Vec<u8>>, u8, oneshot::Sender<KeyResult>),
    Members(oneshot::Sender<Vec<Member>>),
    Coordinates(oneshot::Sender<(Coordinate, HashMap<String, Coordinate>)>),
    Keys(oneshot::Sender<Option<Keyring>>),
    Stats(oneshot::Sender<crate::memberlist::Stats>),
    Shutdown,
}

/// Bytes that arrived on a stream, and where the core's verdict goes.
struct StreamChunk {
    /// `Some` for a reply to a stream we opened.
    outgoing: Option<(u64, StreamKind)>,
    peer: SocketAddr,
    buf: Vec<u8>,
    verdict: oneshot::Sender<StreamStep>,
}

/// A handle to a running pool member. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    pub local_addr: SocketAddr,
    pub name: String,
}

fn closed<T>(_: T) -> String {
    "gossip is shut down".to_string()
}

impl Handle {
    async fn call<T>(&self, f: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(f(tx)).await.map_err(closed)?;
        rx.await.map_err(closed)
    }

    /// Joins through `addrs`; returns how many answered.
    pub async fn join(&self, addrs: Vec<SocketAddr>, ignore_old: bool) -> Result<usize, String> {
        self.call(|r| Command::Join(addrs, ignore_old, r)).await?
    }

    pub async fn leave(&self) -> Result<(), String> {
        self.call(Command::Leave).await
    }

    pub async fn force_leave(&self, node: &str, prune: bool) -> Result<(), String> {
        self.call(|r| Command::ForceLeave(node.to_string(), prune, r)).await?
    }

    pub async fn user_event(&self, name: &str, payload: Vec<u8>, coalesce: bool) -> Result<(), String> {
        self.call(|r| Command::UserEvent(name.to_string(), payload, coalesce, r)).await?
    }

    /// Sends a query; its acks and responses arrive on the returned channel, which closes at the
    /// query's deadline.
    pub async fn query(
        &self,
        name: &str,
        payload: Vec<u8>,
        params: QueryParams,
    ) -> Result<mpsc::Receiver<QueryEvent>, String> {
        let (etx, erx) = mpsc::channel(1024);
        self.call(|r| Command::Query(name.to_string(), payload, params, etx, r)).await??;
        Ok(erx)
    }

    pub async fn respond(&self, q: IncomingQuery, payload: Vec<u8>) -> Result<(), String> {
        self.tx.send(Command::Respond(q, payload)).await.map_err(closed)
    }

    pub async fn set_tags(&self, tags: BTreeMap<String, String>) -> Result<(), String> {
        self.call(|r| Command::SetTags(tags, r)).await?
    }

    pub async fn key_op(&self, op: KeyOp, key: Option<Vec<u8>>, relay_factor: u8) -> Result<KeyResult, String> {
        self.call(|r| Command::Key(op, key, relay_factor, r)).await
    }

    pub async fn members(&self) -> Result<Vec<Member>, String> {
        self.call(Command::Members).await
    }

    /// Our coordinate and the last coordinate seen from each member.
    pub async fn coordinates(&self) -> Result<(Coordinate, HashMap<String, Coordinate>), String> {
        self.call(Command::Coordinates).await
    }

    pub async fn keyring(&self) -> Result<Option<Keyring>, String> {
        self.call(Command::Keys).await
    }

    pub async fn stats(&self) -> Result<crate::memberlist::Stats, String> {
        self.call(Command::Stats).await
    }

    /// Stops without leaving (as a crash would look to others, once they notice).
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown).await;
    }
}

/// Binds UDP and TCP on `addr` (TCP with SO_REUSEADDR, so a restart after a crash can bind at
/// once). Port 0 picks one free port for both.
async fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    for _ in 0..20 {
        let udp = UdpSocket::bind(addr).await?;
        let port = udp.local_addr()?.port();
        let tcp_addr = SocketAddr::new(addr.ip(), port);
        let sock = if tcp_addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        sock.set_reuseaddr(true)?;
        match sock.bind(tcp_addr) {
            Ok(()) => return Ok((udp, sock.listen(1024)?)),
            Err(e) if addr.port() != 0 => return Err(e),
            Err(_) => continue,
        }
    }
    Err(std::io::Error::other("no port free for both UDP and TCP"))
}

/// Starts a member: binds, starts the core, and returns its handle and its event stream.
pub async fn start(mut cfg: DriverConfig) -> std::io::Result<(Handle, mpsc::Receiver<Event>)> {
    let (udp, tcp) = bind(cfg.bind).await?;
    let port = udp.local_addr()?.port();
    if cfg.serf.memberlist.addr.port() == 0 {
        cfg.serf.memberlist.addr.set_port(port);
    }
    let local_addr = udp.local_addr()?;
    let name = cfg.serf.memberlist.name.clone();
    let now = Instant::now();
    let mut serf = Serf::new(cfg.serf.clone(), cfg.keyring.clone(), Box::new(OsRng), Box::new(OsRng), now);
    let mut snapshot = None;
    let mut rejoin = Vec::new();
    if let Some(path) = &cfg.snapshot_path {
        let (snap, replay) = Snapshotter::open(path, cfg.rejoin_after_leave)?;
        if replay.clock > 0 || replay.event_clock > 0 || replay.query_clock > 0 {
            serf.restore_clocks(replay.clock, replay.event_clock, replay.query_clock);
        }
        rejoin = replay.alive.into_iter().filter(|(n, _)| *n != name).map(|(_, a)| a).collect();
        snapshot = Some(snap);
    }
    serf.start(now);
    if !rejoin.is_empty() {
        tracing::info!("serf: Attempting re-join to previously known nodes: {rejoin:?}");
        serf.join(&rejoin, true, now);
    }
    let (tx, rx) = mpsc::channel(256);
    let (etx, erx) = mpsc::channel(EVENT_QUEUE);
    let (stx, srx) = mpsc::channel(1024);
    let d = Driver {
        serf,
        udp: Arc::new(udp),
        cfg,
        events: etx,
        streams: stx,
        queries: HashMap::new(),
        keys: HashMap::new(),
        joins: HashMap::new(),
        inbound: Arc::new(Semaphore::new(MAX_INBOUND_STREAMS)),
        snapshot,
        last_metrics: None,
    };
    tokio::spawn(d.run(rx, srx, tcp));
    Ok((Handle { tx, local_addr, name }, erx))
}

struct PendingJoin {
    left: usize,
    ok: usize,
    reply: oneshot::Sender<Result<usize, String>>,
    errors: Vec<String>,
}

struct PendingKey {
    result: KeyResult,
    reply: oneshot::Sender<KeyResult>,
}

struct Driver {
    serf: Serf,
    udp: Arc<UdpSocket>,
    cfg: DriverConfig,
    events: mpsc::Sender<Event>,
    streams: mpsc::Sender<StreamChunk>,
    queries: HashMap<u64, mpsc::Sender<QueryEvent>>,
    keys: HashMap<u64, PendingKey>,
    /// Join token → the join call it belongs to.
    joins: HashMap<u64, usize>,
    inbound: Arc<Semaphore>,
    snapshot: Option<Snapshotter>,
    last_metrics: Option<Instant>,
}

/// Stream outcomes reported by the tasks that run them.
enum StreamDone {
    Failed(u64, StreamKind, SocketAddr, String),
}

impl Driver {
    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Command>,
        mut chunks: mpsc::Receiver<StreamChunk>,
        tcp: TcpListener,
    ) {
        let mut buf = vec![0u8; wire::UDP_RECV_BUF];
        let (dtx, mut drx) = mpsc::channel::<StreamDone>(1024);
        let mut join_calls: HashMap<usize, PendingJoin> = HashMap::new();
        let mut next_join = 0usize;
        loop {
            let deadline = tokio::time::Instant::from_std(self.serf.next_deadline());
            tokio::select! {
                r = self.udp.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        self.serf.handle_packet(from, &buf[..n], Instant::now());
                    }
                }
                r = tcp.accept() => {
                    if let Ok((conn, peer)) = r {
                        match self.inbound.clone().try_acquire_owned() {
                            Ok(permit) => {
                                let chunks = self.streams.clone();
                                let timeout = self.cfg.serf.memberlist.tcp_timeout;
                                tokio::spawn(async move {
                                    let _ = tokio::time::timeout(timeout, serve_inbound(conn, peer, chunks)).await;
                                    drop(permit);
                                });
                            }
                            Err(_) => tracing::warn!("memberlist: too many pending push/pull requests, dropping {peer}"),
                        }
                    }
                }
                Some(c) = chunks.recv() => {
                    let now = Instant::now();
                    let step = match c.outgoing {
                        None => self.serf.handle_stream(c.peer, &c.buf, now),
                        Some((token, kind)) => {
                            let step = self.serf.handle_stream_reply(token, kind, c.peer, &c.buf, now);
                            if step == StreamStep::Done {
                                if let Some(call) = self.joins.remove(&token) {
                                    if let Some(p) = join_calls.get_mut(&call) {
                                        p.left -= 1;
                                        p.ok += 1;
                                    }
                                }
                            }
                            step
                        }
                    };
                    let _ = c.verdict.send(step);
                }
                Some(StreamDone::Failed(token, kind, to, err)) = drx.recv() => {
                    self.serf.stream_failed(token, kind, to, &err);
                    if let Some(call) = self.joins.remove(&token) {
                        if let Some(p) = join_calls.get_mut(&call) {
                            p.left -= 1;
                            p.errors.push(format!("Failed to join {to}: {err}"));
                        }
                    }
                }
                cmd = cmds.recv() => {
                    let Some(cmd) = cmd else { break };
                    match cmd {
                        Command::Join(addrs, ignore_old, reply) => {
                            if addrs.is_empty() {
                                let _ = reply.send(Ok(0));
                            } else {
                                let call = next_join;
                                next_join += 1;
                                for t in self.serf.join(&addrs, ignore_old, Instant::now()) {
                                    self.joins.insert(t, call);
                                }
                                join_calls.insert(call, PendingJoin { left: addrs.len(), ok: 0, reply, errors: Vec::new() });
                            }
                        }
                        Command::Leave(reply) => {
                            self.leave(&mut cmds, &mut chunks, &dtx).await;
                            let _ = reply.send(());
                        }
                        Command::ForceLeave(node, prune, reply) => {
                            let r = if self.serf.member(&node).is_none() {
                                Err(format!("node not found: {node}"))
                            } else {
                                self.serf.force_leave(&node, prune, Instant::now());
                                Ok(())
                            };
                            let _ = reply.send(r);
                        }
                        Command::UserEvent(name, payload, cc, reply) => {
                            let _ = reply.send(self.serf.user_event(&name, &payload, cc, Instant::now()));
                        }
                        Command::Query(name, payload, params, sink, reply) => {
                            match self.serf.query(&name, &payload, params, Instant::now()) {
                                Ok(lt) => {
                                    self.queries.insert(lt, sink);
                                    let _ = reply.send(Ok(()));
                                }
                                Err(e) => {
                                    let _ = reply.send(Err(e));
                                }
                            }
                        }
                        Command::Respond(q, payload) => {
                            if let Err(e) = self.serf.respond(&q, &payload, Instant::now()) {
                                tracing::warn!("serf: failed to respond to query {}: {e}", q.name);
                            }
                        }
                        Command::SetTags(tags, reply) => {
                            let _ = reply.send(self.serf.set_tags(tags, Instant::now()));
                        }
                        Command::Key(op, key, relay, reply) => {
                            let num_nodes = self.serf.memberlist().num_alive();
                            match self.serf.key_query_all(op, key.as_deref(), relay, Instant::now()) {
                                Ok(lt) => {
                                    let result = KeyResult { num_nodes, ..KeyResult::default() };
                                    self.keys.insert(lt, PendingKey { result, reply });
                                }
                                Err(e) => {
                                    let mut r = KeyResult::default();
                                    r.messages.insert(self.serf.name().to_string(), e);
                                    r.num_err = 1;
                                    let _ = reply.send(r);
                                }
                            }
                        }
                        Command::Members(reply) => {
                            let _ = reply.send(self.serf.members());
                        }
                        Command::Coordinates(reply) => {
                            let mut cache = HashMap::new();
                            for m in self.serf.members() {
                                if let Some(c) = self.serf.cached_coordinate(&m.name) {
                                    cache.insert(m.name.clone(), c.clone());
                                }
                            }
                            let _ = reply.send((self.serf.local_coordinate().clone(), cache));
                        }
                        Command::Keys(reply) => {
                            let _ = reply.send(self.serf.keyring().cloned());
                        }
                        Command::Stats(reply) => {
                            let _ = reply.send(self.serf.memberlist().stats.clone());
                        }
                        Command::Shutdown => break,
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    self.serf.tick(Instant::now());
                    self.publish_metrics();
                }
            }
            // Finished joins.
            let done: Vec<usize> = join_calls.iter().filter(|(_, p)| p.left == 0).map(|(k, _)| *k).collect();
            for k in done {
                if let Some(p) = join_calls.remove(&k) {
                    let r = if p.ok > 0 { Ok(p.ok) } else { Err(p.errors.join("; ")) };
                    let _ = p.reply.send(r);
                }
            }
            self.flush(&dtx);
            if self.serf.state() == serf::State::Shutdown {
                break;
            }
        }
        if let Some(s) = self.snapshot.as_mut() {
            s.flush();
        }
    }

    /// Publishes the core's counters (at most once a second): what was received, and what was
    /// dropped as malformed or unauthenticated.
    fn publish_metrics(&mut self) {
        let now = Instant::now();
        if self.last_metrics.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1)) {
            return;
        }
        self.last_metrics = Some(now);
        let st = &self.serf.memberlist().stats;
        let node = self.serf.name().to_string();
        for (name, v) in [
            ("memberlist_packets_received", st.packets_in),
            ("memberlist_packets_malformed", st.packets_bad),
            ("memberlist_packets_unauthenticated", st.packets_unauthenticated),
            ("memberlist_streams_rejected", st.streams_bad),
            ("memberlist_packets_sent", st.packets_out),
            ("memberlist_bytes_sent", st.bytes_out),
            ("memberlist_suspicions_raised", st.suspicions_raised),
        ] {
            metrics::counter!(name, "node" => node.clone()).absolute(v);
        }
        metrics::gauge!("memberlist_health_score", "node" => node.clone())
            .set(self.serf.memberlist().health_score() as f64);
        metrics::gauge!("serf_members", "node" => node).set(self.serf.memberlist().num_alive() as f64);
    }

    /// Sends what the core produced and routes its events.
    fn flush(&mut self, done: &mpsc::Sender<StreamDone>) {
        let outs: Vec<Output> = self.serf.drain_output().collect();
        for o in outs {
            match o {
                Output::Packet { to, data } => {
                    if let Err(e) = self.udp.try_send_to(&data, to) {
                        tracing::debug!("memberlist: failed to send packet to {to}: {e}");
                    }
                }
                Output::Stream { to, data, token, kind, deadline } => {
                    let chunks = self.streams.clone();
                    let done = done.clone();
                    let deadline = tokio::time::Instant::from_std(deadline);
                    let encrypted = self.serf.keyring().is_some();
                    tokio::spawn(async move {
                        let r =
                            tokio::time::timeout_at(deadline, serve_outbound(to, data, token, kind, chunks, encrypted))
                                .await;
                        let err = match r {
                            Ok(Ok(())) => return,
                            Ok(Err(e)) => e,
                            Err(_) => "i/o timeout".to_string(),
                        };
                        let _ = done.send(StreamDone::Failed(token, kind, to, err)).await;
                    });
                }
            }
        }
        let events: Vec<Event> = self.serf.drain_events().collect();
        if let Some(snap) = self.snapshot.as_mut() {
            for e in &events {
                match e {
                    Event::MemberJoin(m) => snap.alive(&m.name, m.addr),
                    Event::MemberLeave(m) | Event::MemberFailed(m) => snap.not_alive(&m.name),
                    _ => {}
                }
            }
            let (c, ev, q) = self.serf.clocks();
            snap.clocks(c, ev, q, Instant::now());
        }
        for e in events {
            match e {
                Event::QueryAck { ltime, from } => {
                    if let Some(s) = self.queries.get(&ltime) {
                        let _ = s.try_send(QueryEvent::Ack(from));
                    }
                }
                Event::QueryResponse { ltime, from, payload } => {
                    if let Some(p) = self.keys.get_mut(&ltime) {
                        p.result.num_resp += 1;
                        match serf::decode_key_response(&payload) {
                            Some(r) => {
                                if !r.result {
                                    p.result.num_err += 1;
                                }
                                if !r.message.is_empty() {
                                    p.result.messages.insert(from, r.message);
                                }
                                for k in r.keys {
                                    *p.result.keys.entry(k).or_default() += 1;
                                }
                                if !r.primary_key.is_empty() {
                                    *p.result.primary_keys.entry(r.primary_key).or_default() += 1;
                                }
                            }
                            None => {
                                p.result.num_err += 1;
                                p.result.messages.insert(from, "Failed to decode key response".into());
                            }
                        }
                        if p.result.num_resp >= p.result.num_nodes {
                            if let Some(p) = self.keys.remove(&ltime) {
                                let _ = p.reply.send(p.result);
                            }
                        }
                    } else if let Some(s) = self.queries.get(&ltime) {
                        let _ = s.try_send(QueryEvent::Response(from, payload));
                    }
                }
                Event::QueryDone { ltime } => {
                    self.queries.remove(&ltime);
                    if let Some(p) = self.keys.remove(&ltime) {
                        let _ = p.reply.send(p.result);
                    }
                }
                e => {
                    if let Event::KeyringChanged = e {
                        // Also surfaced so the owner can persist the ring.
                    }
                    if self.events.try_send(e).is_err() {
                        tracing::warn!("serf: event queue full, dropping an event");
                    }
                }
            }
        }
    }

    /// Serf's graceful leave: the leave intent, then memberlist's dead-by-own-word, each given
    /// the broadcast timeout to spread, then a short linger.
    async fn leave(
        &mut self,
        cmds: &mut mpsc::Receiver<Command>,
        chunks: &mut mpsc::Receiver<StreamChunk>,
        dtx: &mpsc::Sender<StreamDone>,
    ) {
        let _ = cmds;
        if let Some(s) = self.snapshot.as_mut() {
            s.leave();
        }
        self.serf.leave(Instant::now());
        self.flush(dtx);
        let mut buf = vec![0u8; wire::UDP_RECV_BUF];
        for phase in 0..3 {
            let until = tokio::time::Instant::now()
                + if phase == 2 { self.cfg.leave_propagate_delay } else { self.cfg.broadcast_timeout };
            loop {
                let done = match phase {
                    0 => self.serf.leave_intent_sent(),
                    1 => self.serf.leave_done(),
                    _ => false,
                };
                if done || tokio::time::Instant::now() >= until {
                    break;
                }
                let deadline = tokio::time::Instant::from_std(self.serf.next_deadline()).min(until);
                tokio::select! {
                    r = self.udp.recv_from(&mut buf) => {
                        if let Ok((n, from)) = r {
                            self.serf.handle_packet(from, &buf[..n], Instant::now());
                        }
                    }
                    Some(c) = chunks.recv() => {
                        let now = Instant::now();
                        let step = match c.outgoing {
                            None => self.serf.handle_stream(c.peer, &c.buf, now),
                            Some((token, kind)) => self.serf.handle_stream_reply(token, kind, c.peer, &c.buf, now),
                        };
                        let _ = c.verdict.send(step);
                    }
                    _ = tokio::time::sleep_until(deadline) => self.serf.tick(Instant::now()),
                }
                self.flush(dtx);
            }
            if phase == 0 {
                self.serf.leave_memberlist(Instant::now());
                self.flush(dtx);
            }
        }
        self.serf.set_left();
    }
}

/// Reads an inbound stream, handing each chunk to the core until it answers.
async fn serve_inbound(mut conn: TcpStream, peer: SocketAddr, chunks: mpsc::Sender<StreamChunk>) {
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 64 * 1024];
    loop {
        let n = match conn.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&tmp[..n]);
        if buf.len() > wire::MAX_INFLATED {
            tracing::warn!("memberlist: stream from {peer} too large");
            return;
        }
        let (vtx, vrx) = oneshot::channel();
        if chunks.send(StreamChunk { outgoing: None, peer, buf: buf.clone(), verdict: vtx }).await.is_err() {
            return;
        }
        match vrx.await {
            Ok(StreamStep::NeedMore) => continue,
            Ok(StreamStep::Reply(r)) => {
                let _ = conn.write_all(&r).await;
                let _ = conn.shutdown().await;
                return;
            }
            _ => return,
        }
    }
}

/// Opens a stream, writes our message and feeds the reply to the core.
async fn serve_outbound(
    to: SocketAddr,
    data: Vec<u8>,
    token: u64,
    kind: StreamKind,
    chunks: mpsc::Sender<StreamChunk>,
    encrypted: bool,
) -> Result<(), String> {
    let mut conn = TcpStream::connect(to).await.map_err(|e| e.to_string())?;
    conn.write_all(&data).await.map_err(|e| e.to_string())?;
    if kind == StreamKind::User {
        let _ = conn.shutdown().await;
        return Ok(());
    }
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 64 * 1024];
    loop {
        let n = conn.read(&mut tmp).await.map_err(|e| e.to_string())?;
        if n == 0 {
            // memberlist closes without a word on a stream it cannot decrypt.
            return Err(if encrypted && buf.is_empty() {
                "EOF (the remote closed without a reply: it may not have our gossip encryption key)".into()
            } else {
                "EOF".into()
            });
        }
        buf.extend_from_slice(&tmp[..n]);
        if buf.len() > wire::MAX_INFLATED {
            return Err("reply too large".into());
        }
        let (vtx, vrx) = oneshot::channel();
        chunks
            .send(StreamChunk { outgoing: Some((token, kind)), peer: to, buf: buf.clone(), verdict: vtx })
            .await
            .map_err(closed)?;
        match vrx.await.map_err(closed)? {
            StreamStep::NeedMore => continue,
            StreamStep::Done => return Ok(()),
            _ => return Err("the reply could not be read (see earlier log lines)".into()),
        }
    }
}
