//! The calling side of [`super::RPC_CAIRN`]: one multiplexed connection per server, opened on first
//! use and reopened after it breaks; many requests in flight on it, answers matched by id.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::proto::{Envelope, Request, Response};
use super::{decode, dial, encode, frame_reader, pump_frames, read_frame, MAX_RPC_FRAME, RPC_CAIRN};
use crate::Error;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Response, Error>>>>>;

struct Conn {
    tx: mpsc::Sender<Vec<u8>>,
    pending: Pending,
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
    /// own (which would also run into the server's `rpc_max_conns_per_client`).
    dialing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    next_id: AtomicU64,
}

/// How long a dial may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

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
        let lock = self.dialing.lock().expect("rpc dialing").entry(addr.to_string()).or_default().clone();
        let _dialing = lock.lock().await;
        if let Some(c) = self.open_conn(addr) {
            return Ok(c);
        }
        // Boxed: a dial is rare, and its future would otherwise be carried by every call's.
        let stream = Box::pin(dial(addr, RPC_CAIRN, DIAL_TIMEOUT)).await?;
        let (rd, wr) = stream.into_split();
        let mut rd = frame_reader(rd);
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
        let pending: Pending = Default::default();
        let c = Arc::new(Conn { tx, pending: pending.clone() });
        let writer = tokio::spawn(async move {
            let _ = pump_frames(wr, &mut rx).await;
        });
        tokio::spawn(async move {
            loop {
                let Ok(frame) = read_frame(&mut rd, MAX_RPC_FRAME).await else { break };
                let Ok(env) = decode::<Envelope<Result<Response, Error>>>(&frame) else { break };
                let tx = pending.lock().expect("rpc pending").remove(&env.id);
                if let Some(tx) = tx {
                    let _ = tx.send(env.body);
                }
            }
            // The connection is gone: whoever still waits learns it now (their senders drop).
            writer.abort();
            pending.lock().expect("rpc pending").clear();
        });
        self.conns.lock().expect("rpc conns").insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Sends `req` to the server at `addr` and waits up to `timeout` for its answer.
    pub async fn call(&self, addr: &str, req: Request, timeout: Duration) -> Result<Response, CallError> {
        let c = self.conn(addr).await.map_err(CallError::Unsent)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode(&Envelope { id, body: req }).map_err(CallError::Unsent)?;
        let (tx, rx) = oneshot::channel();
        c.pending.lock().expect("rpc pending").insert(id, tx);
        if c.tx.send(frame).await.is_err() {
            c.pending.lock().expect("rpc pending").remove(&id);
            self.conns.lock().expect("rpc conns").remove(addr);
            return Err(CallError::Unsent(io::Error::new(io::ErrorKind::BrokenPipe, "connection closed")));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(r))) => Ok(r),
            Ok(Ok(Err(e))) => Err(CallError::Remote(e)),
            Ok(Err(_)) => {
                self.conns.lock().expect("rpc conns").remove(addr);
                Err(CallError::Lost(format!("connection to {addr} lost")))
            }
            Err(_) => {
                c.pending.lock().expect("rpc pending").remove(&id);
                Err(CallError::Lost(format!("timed out waiting for {addr}")))
            }
        }
    }
}
