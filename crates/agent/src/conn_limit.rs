//! The HTTP listener and connection loop: what a connection may cost the agent.
//!
//! - At most `limits.http_max_conns_per_client` (default 200) open connections per client IP. Over
//!   the cap a new connection is answered with Consul's raw `429 Too Many Requests` before any
//!   request is read, and closed.
//! - A request head must arrive within [`HEAD_TIMEOUT`] (this also closes idle keep-alive
//!   connections), and a request body within [`BODY_TIMEOUT`] of its head, so connections
//!   trickling a byte a second cannot pin descriptors and starve other clients. Consul's Go
//!   server sets no such timeouts; these are Cairn's, chosen far above what any real client needs.
//!   A blocking query waiting for its answer is unaffected: nothing is being read then.
//! - A client that sends a whole request and then shuts its sending side (half-close) still gets
//!   its answer: a write it made is acknowledged, not applied silently.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::Request;
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// Time a client has to send a request's head once the connection is open or idle.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to send a request's body once its head arrived.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an over-the-cap client gets to take its 429 before the socket closes.
const REJECT_WRITE_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest wait for in-flight requests when the agent stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Consul's answer over the per-client cap, written raw (go-connlimit's bytes).
const TOO_MANY: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: 81\r\nConnection: close\r\n\r\nYour IP is issuing too many concurrent connections, please rate limit your calls\n";

type Counts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// Binds the HTTP listener with Go's accept backlog (the kernel's `somaxconn`, where Consul's
/// `net.Listen` takes it from) rather than tokio's 1,024: thousands of clients that connect at
/// once (watchers re-connecting after a restart) would otherwise have their SYNs dropped and
/// retried seconds later. The address is reusable at once after a crash, as with `bind`.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let backlog = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(4096)
        .clamp(128, 65_535);
    socket.listen(backlog)
}

/// A request's peer address, for handlers that need it (`ConnectInfo<PeerAddr>`).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests finish (for
/// at most [`DRAIN_TIMEOUT`]).
pub async fn serve(listener: TcpListener, max_per_ip: usize, app: Router, shutdown: impl Future<Output = ()>) {
    let counts: Counts = Arc::default();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEAD_TIMEOUT).half_close(true).keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(target: "agent.http", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(stream) = Counted::take(stream, addr.ip(), &counts, max_per_ip) else {
            tracing::warn!(target: "agent.http", client = %addr.ip(), limit = max_per_ip, "too many connections from client; answering 429");
            continue;
        };
        let svc = app.clone().map_request(move |req: Request<hyper::body::Incoming>| {
            let mut req = req.map(|b| Body::new(DeadlineBody::new(b, BODY_TIMEOUT)));
            req.extensions_mut().insert(axum::extract::ConnectInfo(PeerAddr(addr)));
            req
        });
        let conn = builder.serve_connection(TokioIo::new(stream), hyper_util::service::TowerToHyperService::new(svc));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(target: "agent.http", client = %addr, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!(target: "agent.http", "in-flight HTTP requests did not finish in time; closing");
    }
}

/// A connection that holds one of its client's slots until dropped.
pub struct Counted {
    stream: TcpStream,
    ip: IpAddr,
    counts: Counts,
}

impl Counted {
    /// Takes a slot for `ip`, or answers 429 and closes when it has none left.
    fn take(stream: TcpStream, ip: IpAddr, counts: &Counts, max_per_ip: usize) -> Option<Counted> {
        {
            let mut c = counts.lock().expect("conn counts");
            let n = c.entry(ip).or_insert(0);
            if *n >= max_per_ip {
                tokio::spawn(reject(stream));
                return None;
            }
            *n += 1;
        }
        let _ = stream.set_nodelay(true);
        Some(Counted { stream, ip, counts: counts.clone() })
    }
}

async fn reject(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REJECT_WRITE_TIMEOUT, async {
        stream.write_all(TOO_MANY).await?;
        stream.shutdown().await
    })
    .await;
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut c = self.counts.lock().expect("conn counts");
        if let Some(n) = c.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.ip);
            }
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// A request body that fails once its deadline passes, however slowly its bytes trickle in.
struct DeadlineBody {
    inner: hyper::body::Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    fn new(inner: hyper::body::Incoming, after: Duration) -> Self {
        DeadlineBody { inner, deadline: Box::pin(tokio::time::sleep(after)) }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0:?}")]
struct BodyTimedOut(Duration);

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(BODY_TIMEOUT)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
