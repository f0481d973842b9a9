//! The DNS listeners: UDP and TCP sockets feeding [`super::Handler`], one task per request.
//!
//! hickory's own server loop encodes answers behind its response handle, always compressing
//! names; this loop encodes them here, so `dns_config.disable_compression` can be honoured. Its
//! limits: at most [`MAX_IN_FLIGHT`] UDP requests being answered at once (more are dropped, and the
//! client retries), [`MAX_TCP_CONNS`] TCP connections, and [`TCP_IDLE`] to send each message.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::proto::op::{Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, Mutex, Semaphore};

use super::Handler;

/// How long a TCP client has to send each message (and an idle connection stays open).
pub const TCP_IDLE: Duration = Duration::from_secs(10);
pub const MAX_TCP_CONNS: usize = 64;
pub const MAX_IN_FLIGHT: usize = 1024;

/// Serves `udp` and `tcp` until `shutdown` turns true.
pub fn spawn(udp: UdpSocket, tcp: TcpListener, handler: Arc<Handler>, compress: bool, shutdown: watch::Receiver<bool>) {
    tokio::spawn(udp_loop(Arc::new(udp), handler.clone(), compress, shutdown.clone()));
    tokio::spawn(tcp_loop(tcp, handler, compress, shutdown));
}

async fn udp_loop(sock: Arc<UdpSocket>, handler: Arc<Handler>, compress: bool, mut shutdown: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, src) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(target: "agent.dns", error = %e, "UDP receive failed");
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => return,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else { continue };
        // Bytes that are no query (garbage, or a response) get no answer.
        let Some(req) = request(&buf[..n], src, Protocol::Udp) else { continue };
        // A UDP answer fits what the client advertised (512 bytes without EDNS, RFC 1035).
        let max = req.edns.as_ref().map_or(512, |e| e.max_payload().max(512));
        let reply = Reply { out: Out::Udp(sock.clone(), src), max, compress, id: req.metadata.id };
        let h = handler.clone();
        tokio::spawn(async move {
            h.handle_request::<_, TokioTime>(&req, reply).await;
            drop(permit);
        });
    }
}

async fn tcp_loop(l: TcpListener, handler: Arc<Handler>, compress: bool, mut shutdown: watch::Receiver<bool>) {
    let conns = Arc::new(Semaphore::new(MAX_TCP_CONNS));
    loop {
        let (stream, src) = tokio::select! {
            r = l.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(target: "agent.dns", error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => return,
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else { continue };
        let h = handler.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tcp_conn(stream, src, h, compress, stop).await;
            drop(permit);
        });
    }
}

/// One TCP connection: length-prefixed messages, answered in order.
async fn tcp_conn(
    stream: TcpStream,
    src: SocketAddr,
    handler: Arc<Handler>,
    compress: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut rd, wr) = stream.into_split();
    let wr = Arc::new(Mutex::new(wr));
    loop {
        let next = async {
            let len = rd.read_u16().await?;
            let mut buf = vec![0u8; usize::from(len)];
            rd.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        let buf = tokio::select! {
            r = tokio::time::timeout(TCP_IDLE, next) => match r {
                Ok(Ok(b)) => b,
                _ => return,
            },
            _ = stopped(&mut shutdown) => return,
        };
        let Some(req) = request(&buf, src, Protocol::Tcp) else { return };
        let reply = Reply { out: Out::Tcp(wr.clone()), max: u16::MAX, compress, id: req.metadata.id };
        handler.handle_request::<_, TokioTime>(&req, reply).await;
    }
}

/// Resolves once the agent stops (the watch guard is not held across the caller's awaits).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn request(bytes: &[u8], src: SocketAddr, protocol: Protocol) -> Option<Request> {
    let req = Request::from_bytes(bytes.to_vec(), src, protocol).ok()?;
    (req.metadata.message_type == MessageType::Query).then_some(req)
}

#[derive(Clone)]
enum Out {
    Udp(Arc<UdpSocket>, SocketAddr),
    Tcp(Arc<Mutex<tokio::net::tcp::OwnedWriteHalf>>),
}

/// Encodes an answer (compressing names unless told not to) and writes it to where its question
/// came from.
#[derive(Clone)]
struct Reply {
    out: Out,
    max: u16,
    compress: bool,
    /// The question's ID, for the SERVFAIL sent when the answer cannot be encoded.
    id: u16,
}

impl Reply {
    async fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        match &self.out {
            Out::Udp(sock, dst) => sock.send_to(bytes, dst).await.map(|_| ()),
            Out::Tcp(w) => {
                let len = u16::try_from(bytes.len()).map_err(|_| std::io::Error::other("answer too long"))?;
                let mut w = w.lock().await;
                w.write_all(&len.to_be_bytes()).await?;
                w.write_all(bytes).await
            }
        }
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Reply {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::with_capacity(512);
        let encoded = {
            let mut enc = BinEncoder::new(&mut bytes);
            enc.set_max_size(self.max);
            if !self.compress {
                enc.set_name_encoding(NameEncoding::Uncompressed);
            }
            response.destructive_emit(&mut enc)
        };
        let info = match encoded {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(target: "agent.dns", error = %e, "failed to encode a DNS answer; answering SERVFAIL");
                bytes.clear();
                let mut metadata = Metadata::new(self.id, MessageType::Response, OpCode::Query);
                metadata.response_code = ResponseCode::ServFail;
                let header = Header { metadata, counts: HeaderCounts::default() };
                header.emit(&mut BinEncoder::new(&mut bytes))?;
                ResponseInfo::from(header)
            }
        };
        self.write(&bytes).await?;
        Ok(info)
    }
}
