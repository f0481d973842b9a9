//! The calling side of [`super::RPC_CAIRN`]: one multiplexed connection per server, opened on first
//! use and reopened after it breaks; many requests in flight on it, answers matched by id.
//!
//! Identical reads gather: a read queued for a connection whose very same request (same query,
//! options and token) is queued there and not yet written joins it, and they travel as one
//! request with several ids ([`Envelope::also`]) and share one answer. The server evaluates the
//! request after every one of them was made, so each caller's answer is one it could have had
//! alone (this is why only requests not yet written gather: joining one already sent could
//! return a state from before the caller asked). Many watchers behind one agent that re-arm
//! their blocking queries on the same change cost the server one query, not one each. Reads
//! whose answer is drawn at random (a prepared query's shuffled instances) never gather: each
//! caller gets its own draw.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use cairn_types::rpc::{QueryOptions, ReadRequest};

use super::proto::{Envelope, Request, Response};
use super::{decode, dial, encode, frame_reader, pump_frames, read_frame, MAX_ANSWER_FRAME, MAX_GATHERED, RPC_CAIRN};
use crate::Error;

type Waiters = HashMap<u64, oneshot::Sender<Result<Response, Error>>>;

/// What a connection's callers, writer and reader share.
#[derive(Default)]
struct Shared {
    /// Callers waiting for an answer, by request id.
    pending: Mutex<Waiters>,
    unsent: Mutex<Unsent>,
}

/// Reads queued on a connection and not yet written, oldest first. At most one per slot of the
/// writer's queue: each lives from its first caller until the writer's turn.
#[derive(Default)]
struct Unsent {
    /// Set once the connection is gone: nothing joins or queues any more.
    closed: bool,
    reads: VecDeque<Gathering>,
}

impl Shared {
    /// Takes the gathered read that `first` names off the queue (`None`: already taken).
    fn take(&self, first: u64) -> Option<Gathering> {
        let mut unsent = self.unsent.lock().expect("rpc unsent");
        // The writer takes them in the order they were queued: the one wanted is at the front.
        let at = unsent.reads.iter().position(|g| g.ids[0] == first)?;
        unsent.reads.remove(at)
    }

    /// Enters `id`'s caller of `read` as waiting: joined to the same read queued and not yet
    /// written, or, given a place in the writer's queue, queued with it. Everything under the
    /// `unsent` lock, with nothing awaited, so no caller ever joins a read already taken.
    fn enter(self: &Arc<Self>, id: u64, entry: ReadEntry, place: Option<mpsc::Permit<'_, Out>>) -> Entered {
        let (read, tx) = entry;
        let mut unsent = self.unsent.lock().expect("rpc unsent");
        if unsent.closed {
            return Entered::Closed;
        }
        let same =
            unsent.reads.iter_mut().rev().take(GATHER_SCAN).find(|g| g.read == read && g.ids.len() < MAX_GATHERED);
        // Lock order: `unsent`, then `pending` (never the other way round).
        match (same, place) {
            (Some(g), _) => g.ids.push(id),
            (None, Some(place)) => {
                unsent.reads.push_back(Gathering { read, ids: vec![id] });
                place.send(Out::Read(self.clone(), id));
            }
            (None, None) => return Entered::NeedsPlace((read, tx)),
        }
        // The caller waits before its request can be written: an answer never finds no one.
        self.pending.lock().expect("rpc pending").insert(id, tx);
        Entered::Waiting
    }

    /// Drops the callers of `ids` (they learn that their request will not be answered).
    fn abandon(&self, ids: &[u64]) {
        let mut pending = self.pending.lock().expect("rpc pending");
        for id in ids {
            pending.remove(id);
        }
    }
}

/// One read queued on a connection and the callers waiting for its answer (its first caller's
/// id names it).
struct Gathering {
    read: Box<(ReadRequest, QueryOptions)>,
    ids: Vec<u64>,
}

/// A caller's read and where its answer goes.
type ReadEntry = (Box<(ReadRequest, QueryOptions)>, oneshot::Sender<Result<Response, Error>>);

/// What [`Shared::enter`] did with a caller.
enum Entered {
    Waiting,
    /// The connection is gone.
    Closed,
    /// Nothing to join: it needs a place in the writer's queue to queue its read.
    NeedsPlace(ReadEntry),
}

/// Whether callers of `read` may share one answer: not when the server draws it at random.
fn gathers(read: &ReadRequest) -> bool {
    !matches!(read, ReadRequest::PreparedQueryExecute { .. })
}

/// How many of the newest queued reads a caller compares its own with (callers woken together
/// ask together, so a match is among the newest).
const GATHER_SCAN: usize = 64;

struct Conn {
    tx: mpsc::Sender<Out>,
    shared: Arc<Shared>,
}

/// What a connection's writer is handed.
enum Out {
    /// An encoded frame.
    Frame(Vec<u8>),
    /// The gathered read in `Unsent` that this caller's id names: encoded once taken, so that
    /// callers who come along until then join it.
    Read(Arc<Shared>, u64),
}

impl super::Outgoing for Out {
    fn gathers(&self) -> bool {
        matches!(self, Out::Read(..))
    }

    fn render(mut self) -> Option<Vec<u8>> {
        match &mut self {
            Out::Frame(f) => Some(std::mem::take(f)),
            Out::Read(shared, first) => {
                let Gathering { read, ids } = shared.take(*first)?;
                match encode(&Envelope { id: ids[0], also: ids[1..].to_vec(), body: Request::Read(read) }) {
                    Ok(frame) => Some(frame),
                    Err(_) => {
                        shared.abandon(&ids);
                        None
                    }
                }
            }
        }
    }
}

/// A gathered read that is dropped unwritten (its connection's writer is gone) takes its
/// callers' hopes with it, at once, rather than leaving them to their timeouts.
impl Drop for Out {
    fn drop(&mut self) {
        if let Out::Read(shared, first) = self {
            if let Some(g) = shared.take(*first) {
                shared.abandon(&g.ids);
            }
        }
    }
}

/// Why a call failed: whether the request may have reached the server decides if it can be retried.
#[derive(Debug)]
pub enum CallError {
    /// Nothing was sent (no connection): safe to retry anywhere.
    Unsent(io::Error),
    /// Sent, but no answer came (connection lost or timed out): the request may have been applied.
    Lost(String),
    /// The server answered with an error.
    Remote(Error),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unsent(e) => write!(f, "rpc error: {e}"),
            CallError::Lost(e) => write!(f, "rpc error: {e}"),
            CallError::Remote(e) => write!(f, "{e}"),
        }
    }
}

#[derive(Default)]
pub struct RpcClient {
    conns: Mutex<HashMap<String, Arc<Conn>>>,
    /// One dial at a time per address: the many calls that find no connection at once (a burst
    /// at start, or after a break) wait for one dial and share it, rather than each opening its
    /// own (which would also run into the server's `rpc_max_conns_per_client`). Those who waited
    /// for a dial that failed take its error rather than each dialling again in turn (k waiters
    /// on an address that drops packets would otherwise wait k dials).
    dialing: Mutex<HashMap<String, Arc<DialSlot>>>,
    next_id: AtomicU64,
}

/// One address's dials: one at a time (the lock), how many failed, and why the last did.
#[derive(Default)]
struct DialSlot {
    failed: AtomicU64,
    last_failure: tokio::sync::Mutex<Option<(io::ErrorKind, String)>>,
}

/// How long a dial may take.
pub(crate) const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

impl RpcClient {
    pub fn new() -> RpcClient {
        RpcClient::default()
    }

    fn open_conn(&self, addr: &str) -> Option<Arc<Conn>> {
        self.conns.lock().expect("rpc conns").get(addr).filter(|c| !c.tx.is_closed()).cloned()
    }

    async fn conn(&self, addr: &str) -> io::Result<Arc<Conn>> {
        if let Some(c) = self.open_conn(addr) {
            return Ok(c);
        }
        let slot = self.dialing.lock().expect("rpc dialing").entry(addr.to_string()).or_default().clone();
        let failed_before = slot.failed.load(Ordering::Acquire);
        let mut last_failure = slot.last_failure.lock().await;
        if let Some(c) = self.open_conn(addr) {
            return Ok(c);
        }
        // A dial failed while this caller waited: that is its answer too.
        if let Some((kind, msg)) = last_failure.as_ref().filter(|_| slot.failed.load(Ordering::Acquire) > failed_before)
        {
            return Err(io::Error::new(*kind, msg.clone()));
        }
        // Boxed: a dial is rare, and its future would otherwise be carried by every call's.
        let stream = match Box::pin(dial(addr, RPC_CAIRN, DIAL_TIMEOUT)).await {
            Ok(s) => s,
            Err(e) => {
                *last_failure = Some((e.kind(), e.to_string()));
                slot.failed.fetch_add(1, Ordering::Release);
                return Err(e);
            }
        };
        let (rd, wr) = stream.into_split();
        let mut rd = frame_reader(rd);
        let (tx, mut rx) = mpsc::channel::<Out>(1024);
        let shared = Arc::new(Shared::default());
        let c = Arc::new(Conn { tx, shared: shared.clone() });
        let writer = tokio::spawn(async move {
            let _ = pump_frames(wr, &mut rx).await;
        });
        tokio::spawn(async move {
            loop {
                let Ok(frame) = read_frame(&mut rd, MAX_ANSWER_FRAME).await else { break };
                let Ok(env) = decode::<Envelope<Result<Response, Error>>>(&frame) else { break };
                let mut waiting: Vec<_> = {
                    let mut p = shared.pending.lock().expect("rpc pending");
                    std::iter::once(env.id).chain(env.also).filter_map(|id| p.remove(&id)).collect()
                };
                // Callers that gathered share the answer.
                if let Some(last) = waiting.pop() {
                    for tx in waiting {
                        let _ = tx.send(env.body.clone());
                    }
                    let _ = last.send(env.body);
                }
            }
            // The connection is gone: whoever still waits learns it now (their senders drop),
            // and no caller joins or queues from here on (see `call`).
            writer.abort();
            {
                let mut unsent = shared.unsent.lock().expect("rpc unsent");
                unsent.closed = true;
                unsent.reads.clear();
            }
            shared.pending.lock().expect("rpc pending").clear();
        });
        self.conns.lock().expect("rpc conns").insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Drops the connection `c` to `addr` from the pool, unless another has replaced it there.
    fn forget(&self, addr: &str, c: &Arc<Conn>) {
        let mut conns = self.conns.lock().expect("rpc conns");
        if conns.get(addr).is_some_and(|now| Arc::ptr_eq(now, c)) {
            conns.remove(addr);
        }
    }

    /// Sends `req` to the server at `addr` and waits up to `timeout` for its answer.
    pub async fn call(&self, addr: &str, req: Request, timeout: Duration) -> Result<Response, CallError> {
        let c = self.conn(addr).await.map_err(CallError::Unsent)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let closed = || {
            self.forget(addr, &c);
            CallError::Unsent(io::Error::new(io::ErrorKind::BrokenPipe, "connection closed"))
        };
        // A caller takes its place in the writer's queue before it queues anything, with
        // nothing awaited in between, so a caller dropped midway leaves nothing queued.
        match req {
            // A read joins the same one queued and not yet written (which needs no place in the
            // queue); anything else is one frame.
            Request::Read(read) if gathers(&read.0) => {
                let mut entered = c.shared.enter(id, (read, tx), None);
                while let Entered::NeedsPlace(entry) = entered {
                    let place = c.tx.reserve().await.map_err(|_| closed())?;
                    entered = c.shared.enter(id, entry, Some(place));
                }
                if let Entered::Closed = entered {
                    return Err(closed());
                }
            }
            other => {
                let frame = encode(&Envelope { id, also: Vec::new(), body: other }).map_err(CallError::Unsent)?;
                let permit = c.tx.reserve().await.map_err(|_| closed())?;
                let unsent = c.shared.unsent.lock().expect("rpc unsent");
                if unsent.closed {
                    return Err(closed());
                }
                c.shared.pending.lock().expect("rpc pending").insert(id, tx);
                drop(unsent);
                permit.send(Out::Frame(frame));
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(r))) => Ok(r),
            Ok(Ok(Err(e))) => Err(CallError::Remote(e)),
            Ok(Err(_)) => {
                self.forget(addr, &c);
                Err(CallError::Lost(format!("connection to {addr} lost")))
            }
            Err(_) => {
                c.shared.abandon(&[id]);
                Err(CallError::Lost(format!("timed out waiting for {addr}")))
            }
        }
    }
}
