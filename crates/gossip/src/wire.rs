//! memberlist's messages and framing (docs/gossip-facts/memberlist.md).
//!
//! A UDP packet is, from the outside in: an optional label header `[244][len][label]`, optional
//! AES-GCM encryption (see [`crate::keyring`]), an optional CRC `[12][crc32 BE]`, then one message:
//! `[type][msgpack body]`, where the type may be a compound `[7][n][n × u16 BE length][messages]` or
//! an LZW-compressed `[9][msgpack {Algo, Buf}]` holding another message.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::msgpack::{self, Bytes, Dec, Enc, Error, Result, Wire};
use crate::wire_struct;

pub const PING: u8 = 0;
pub const INDIRECT_PING: u8 = 1;
pub const ACK: u8 = 2;
pub const SUSPECT: u8 = 3;
pub const ALIVE: u8 = 4;
pub const DEAD: u8 = 5;
pub const PUSH_PULL: u8 = 6;
pub const COMPOUND: u8 = 7;
pub const USER: u8 = 8;
pub const COMPRESS: u8 = 9;
pub const ENCRYPT: u8 = 10;
pub const NACK: u8 = 11;
pub const HAS_CRC: u8 = 12;
pub const ERR: u8 = 13;
pub const HAS_LABEL: u8 = 244;

/// Largest label memberlist accepts.
pub const MAX_LABEL: usize = 255;
/// The payload budget of one UDP packet (memberlist's `udpSendBuf`).
pub const UDP_BUDGET: usize = 1400;
/// Largest UDP datagram read.
pub const UDP_RECV_BUF: usize = 65536;
/// Largest node meta (memberlist's `MetaMaxSize`).
pub const META_MAX: usize = 512;
/// Bound on what a decompression may produce, and on a whole push/pull stream.
pub const MAX_INFLATED: usize = 10 * 1024 * 1024;
/// Bound on a compound's nesting (a compound inside a compressed message inside a compound...).
const MAX_NESTING: usize = 4;

/// memberlist node states as carried in push/pull.
pub const STATE_ALIVE: u8 = 0;
pub const STATE_SUSPECT: u8 = 1;
pub const STATE_DEAD: u8 = 2;
pub const STATE_LEFT: u8 = 3;

wire_struct! {
    pub struct Ping {
        "Node" => pub node: String,
        "SeqNo" => pub seq_no: u32,
        "SourceAddr" [omitempty] => pub source_addr: Bytes,
        "SourceNode" [omitempty] => pub source_node: String,
        "SourcePort" [omitempty] => pub source_port: u16,
    }
}

wire_struct! {
    pub struct IndirectPing {
        "Nack" => pub nack: bool,
        "Node" => pub node: String,
        "Port" => pub port: u16,
        "SeqNo" => pub seq_no: u32,
        "SourceAddr" [omitempty] => pub source_addr: Bytes,
        "SourceNode" [omitempty] => pub source_node: String,
        "SourcePort" [omitempty] => pub source_port: u16,
        "Target" => pub target: Bytes,
    }
}

wire_struct! {
    pub struct Ack {
        "Payload" => pub payload: Bytes,
        "SeqNo" => pub seq_no: u32,
    }
}

wire_struct! {
    pub struct Nack {
        "SeqNo" => pub seq_no: u32,
    }
}

wire_struct! {
    pub struct ErrResp {
        "Error" => pub error: String,
    }
}

wire_struct! {
    /// Also the shape of `dead`.
    pub struct Suspect {
        "From" => pub from: String,
        "Incarnation" => pub incarnation: u32,
        "Node" => pub node: String,
    }
}

pub type Dead = Suspect;

wire_struct! {
    pub struct Alive {
        "Addr" => pub addr: Bytes,
        "Incarnation" => pub incarnation: u32,
        "Meta" => pub meta: Bytes,
        "Node" => pub node: String,
        "Port" => pub port: u16,
        "Vsn" => pub vsn: Bytes,
    }
}

wire_struct! {
    pub struct PushPullHeader {
        "Join" => pub join: bool,
        "Nodes" => pub nodes: i64,
        "UserStateLen" => pub user_state_len: i64,
    }
}

wire_struct! {
    pub struct PushNodeState {
        "Addr" => pub addr: Bytes,
        "Incarnation" => pub incarnation: u32,
        "Meta" => pub meta: Bytes,
        "Name" => pub name: String,
        "Port" => pub port: u16,
        "State" => pub state: u8,
        "Vsn" => pub vsn: Bytes,
    }
}

wire_struct! {
    pub struct UserMsgHeader {
        "UserMsgLen" => pub user_msg_len: i64,
    }
}

wire_struct! {
    pub struct Compress {
        "Algo" => pub algo: u8,
        "Buf" => pub buf: Bytes,
    }
}

/// One decoded memberlist message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Ping(Ping),
    IndirectPing(IndirectPing),
    Ack(Ack),
    Nack(Nack),
    Suspect(Suspect),
    Alive(Alive),
    Dead(Dead),
    User(Vec<u8>),
    Err(ErrResp),
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        match self {
            Message::Ping(m) => tagged(&mut e, PING, m),
            Message::IndirectPing(m) => tagged(&mut e, INDIRECT_PING, m),
            Message::Ack(m) => tagged(&mut e, ACK, m),
            Message::Nack(m) => tagged(&mut e, NACK, m),
            Message::Suspect(m) => tagged(&mut e, SUSPECT, m),
            Message::Alive(m) => tagged(&mut e, ALIVE, m),
            Message::Dead(m) => tagged(&mut e, DEAD, m),
            Message::Err(m) => tagged(&mut e, ERR, m),
            Message::User(p) => {
                e.buf.push(USER);
                e.buf.extend_from_slice(p);
            }
        }
        e.into_vec()
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Message::Ping(_) => "ping",
            Message::IndirectPing(_) => "indirect_ping",
            Message::Ack(_) => "ack",
            Message::Nack(_) => "nack",
            Message::Suspect(_) => "suspect",
            Message::Alive(_) => "alive",
            Message::Dead(_) => "dead",
            Message::User(_) => "user",
            Message::Err(_) => "err",
        }
    }
}

fn tagged<T: Wire>(e: &mut Enc, t: u8, m: &T) {
    e.buf.push(t);
    m.encode(e);
}

/// Decodes one message (after label, decryption and CRC), expanding compound and compressed
/// messages into `out`.
pub fn decode_message(buf: &[u8], out: &mut Vec<Message>) -> Result<()> {
    decode_nested(buf, out, 0)
}

fn decode_nested(buf: &[u8], out: &mut Vec<Message>, depth: usize) -> Result<()> {
    if depth > MAX_NESTING {
        return Err(Error::Invalid("messages nested too deep"));
    }
    let (&t, body) = buf.split_first().ok_or(Error::Incomplete)?;
    let m = match t {
        PING => Message::Ping(msgpack::decode(body)?),
        INDIRECT_PING => Message::IndirectPing(msgpack::decode(body)?),
        ACK => Message::Ack(msgpack::decode(body)?),
        NACK => Message::Nack(msgpack::decode(body)?),
        SUSPECT => Message::Suspect(msgpack::decode(body)?),
        ALIVE => Message::Alive(msgpack::decode(body)?),
        DEAD => Message::Dead(msgpack::decode(body)?),
        ERR => Message::Err(msgpack::decode(body)?),
        USER => Message::User(body.to_vec()),
        COMPOUND => {
            for part in split_compound(body)? {
                decode_nested(part, out, depth + 1)?;
            }
            return Ok(());
        }
        COMPRESS => {
            let inner = decompress(body)?;
            return decode_nested(&inner, out, depth + 1);
        }
        HAS_CRC => {
            let inner = check_crc(buf)?;
            return decode_nested(inner, out, depth + 1);
        }
        _ => return Err(Error::Invalid("unknown message type")),
    };
    out.push(m);
    Ok(())
}

/// `[7][n][n × u16 BE length][parts]`. A truncated last part is an error (memberlist drops the
/// rest of such a compound too, but keeps the whole parts; we keep none of a damaged packet).
pub fn split_compound(body: &[u8]) -> Result<Vec<&[u8]>> {
    let (&n, rest) = body.split_first().ok_or(Error::Incomplete)?;
    let n = n as usize;
    if rest.len() < 2 * n {
        return Err(Error::Invalid("compound lengths truncated"));
    }
    let (lens, mut data) = rest.split_at(2 * n);
    let mut parts = Vec::with_capacity(n);
    for l in lens.chunks_exact(2) {
        let l = u16::from_be_bytes([l[0], l[1]]) as usize;
        if data.len() < l {
            return Err(Error::Invalid("compound part truncated"));
        }
        let (p, r) = data.split_at(l);
        parts.push(p);
        data = r;
    }
    Ok(parts)
}

/// Builds compound messages of at most 255 parts each.
pub fn make_compounds(msgs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    msgs.chunks(255)
        .map(|chunk| {
            let total: usize = chunk.iter().map(|m| m.len() + 2).sum();
            let mut out = Vec::with_capacity(2 + total);
            out.push(COMPOUND);
            out.push(chunk.len() as u8);
            for m in chunk {
                out.extend_from_slice(&(m.len() as u16).to_be_bytes());
            }
            for m in chunk {
                out.extend_from_slice(m);
            }
            out
        })
        .collect()
}

/// The overhead one more part adds to a compound.
pub const COMPOUND_OVERHEAD: usize = 2;
/// The fixed header of a compound.
pub const COMPOUND_HEADER: usize = 2;

pub fn add_crc(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 5);
    out.push(HAS_CRC);
    out.extend_from_slice(&crc32fast::hash(msg).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// Checks `[12][crc][msg]` and returns `msg`.
pub fn check_crc(buf: &[u8]) -> Result<&[u8]> {
    if buf.len() < 5 {
        return Err(Error::Incomplete);
    }
    let want = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    let msg = &buf[5..];
    if crc32fast::hash(msg) != want {
        return Err(Error::Invalid("bad CRC"));
    }
    Ok(msg)
}

/// LZW (least significant bit first, 8-bit literals), as Go's `compress/lzw` writes it.
pub fn lzw_compress(data: &[u8]) -> Vec<u8> {
    let mut enc = weezl::encode::Encoder::new(weezl::BitOrder::Lsb, 8);
    enc.encode(data).unwrap_or_default()
}

pub fn lzw_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>> {
    let mut dec = weezl::decode::Decoder::new(weezl::BitOrder::Lsb, 8);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let mut input = data;
    loop {
        let r = dec.decode_bytes(input, &mut buf);
        input = &input[r.consumed_in..];
        out.extend_from_slice(&buf[..r.consumed_out]);
        if out.len() > limit {
            return Err(Error::Invalid("decompressed message too large"));
        }
        match r.status {
            Ok(weezl::LzwStatus::Done) => return Ok(out),
            Ok(weezl::LzwStatus::Ok) => {}
            Ok(weezl::LzwStatus::NoProgress) => {
                // Go's writer ends with an end code; a stream without it ends with the input.
                if input.is_empty() {
                    return Ok(out);
                }
                return Err(Error::Invalid("lzw stream stuck"));
            }
            Err(_) => return Err(Error::Invalid("bad lzw stream")),
        }
    }
}

/// The body of a `[9]` message: `{Algo: 0, Buf: lzw}` expanded.
pub fn decompress(body: &[u8]) -> Result<Vec<u8>> {
    let c: Compress = msgpack::decode(body)?;
    if c.algo != 0 {
        return Err(Error::Invalid("unknown compression algorithm"));
    }
    lzw_decompress(&c.buf, MAX_INFLATED)
}

/// `[9][{Algo: 0, Buf}]` around `msg`.
pub fn compress(msg: &[u8]) -> Vec<u8> {
    let c = Compress { algo: 0, buf: Bytes(lzw_compress(msg)) };
    let mut e = Enc::new();
    tagged(&mut e, COMPRESS, &c);
    e.into_vec()
}

/// Splits a label header off `buf`: `(label, rest)`; no header is the empty label.
pub fn strip_label(buf: &[u8]) -> Result<(&[u8], &[u8])> {
    match buf.first() {
        Some(&HAS_LABEL) => {
            let n = *buf.get(1).ok_or(Error::Incomplete)? as usize;
            if n == 0 {
                return Err(Error::Invalid("empty label header"));
            }
            if buf.len() < 2 + n {
                return Err(Error::Incomplete);
            }
            Ok((&buf[2..2 + n], &buf[2 + n..]))
        }
        _ => Ok((&[], buf)),
    }
}

pub fn label_header(label: &str) -> Vec<u8> {
    if label.is_empty() {
        return Vec::new();
    }
    let mut v = vec![HAS_LABEL, label.len() as u8];
    v.extend_from_slice(label.as_bytes());
    v
}

/// A push/pull exchange: the TCP message behind `[6]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PushPull {
    pub join: bool,
    pub nodes: Vec<PushNodeState>,
    pub user_state: Vec<u8>,
}

/// Largest number of node states a push/pull may claim.
pub const MAX_PUSH_NODES: i64 = 1 << 20;

impl PushPull {
    /// `[6][header][states][user state]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.buf.push(PUSH_PULL);
        PushPullHeader {
            join: self.join,
            nodes: self.nodes.len() as i64,
            user_state_len: self.user_state.len() as i64,
        }
        .encode(&mut e);
        for n in &self.nodes {
            n.encode(&mut e);
        }
        e.buf.extend_from_slice(&self.user_state);
        e.into_vec()
    }

    /// Decodes the body after `[6]`; returns the bytes it used.
    pub fn decode(body: &[u8]) -> Result<(Self, usize)> {
        let mut d = Dec::new(body);
        let h = PushPullHeader::decode(&mut d)?;
        if h.nodes < 0 || h.nodes > MAX_PUSH_NODES || h.user_state_len < 0 || h.user_state_len as usize > MAX_INFLATED {
            return Err(Error::Invalid("push/pull header out of range"));
        }
        let mut nodes = Vec::with_capacity((h.nodes as usize).min(4096));
        for _ in 0..h.nodes {
            nodes.push(PushNodeState::decode(&mut d)?);
        }
        let rest = d.rest();
        let n = h.user_state_len as usize;
        if rest.len() < n {
            return Err(Error::Incomplete);
        }
        let used = d.position() + n;
        Ok((PushPull { join: h.join, nodes, user_state: rest[..n].to_vec() }, used))
    }
}

/// An address as memberlist carries it: 4 or 16 bytes.
pub fn ip_bytes(ip: IpAddr) -> Bytes {
    match ip {
        IpAddr::V4(v4) => Bytes(v4.octets().to_vec()),
        IpAddr::V6(v6) => Bytes(v6.octets().to_vec()),
    }
}

pub fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        16 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(b);
            let v6 = Ipv6Addr::from(o);
            // Go stores IPv4 addresses in 16 bytes at times (::ffff:a.b.c.d).
            Some(v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)))
        }
        _ => None,
    }
}

pub fn socket_addr(ip: &[u8], port: u16) -> Option<SocketAddr> {
    ip_from_bytes(ip).map(|ip| SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compound_round_trip() {
        let a = Message::Nack(Nack { seq_no: 7 }).encode();
        let b = Message::User(b"hi".to_vec()).encode();
        let c = &make_compounds(&[a, b])[0];
        let mut out = Vec::new();
        decode_message(c, &mut out).unwrap();
        assert_eq!(out, vec![Message::Nack(Nack { seq_no: 7 }), Message::User(b"hi".to_vec())]);
    }

    #[test]
    fn lzw_round_trip() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8 ^ (i / 100) as u8).collect();
        let c = compress(&data);
        assert_eq!(decompress(&c[1..]).unwrap(), data);
    }

    #[test]
    fn crc_detects_damage() {
        let mut p = add_crc(b"\x0b\x81\xa5SeqNo\x01");
        assert!(check_crc(&p).is_ok());
        let last = p.len() - 1;
        p[last] ^= 1;
        assert!(check_crc(&p).is_err());
    }
}
