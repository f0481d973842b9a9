//! Serf's messages, carried inside memberlist user messages as `[type][msgpack]`
//! (docs/gossip-facts/serf.md §1-2). Keys are written sorted, as go-msgpack writes them.

use std::collections::BTreeMap;

use crate::msgpack::{self, Bytes, Enc, Wire};
use crate::wire_struct;

pub const LEAVE: u8 = 0;
pub const JOIN: u8 = 1;
pub const PUSH_PULL: u8 = 2;
pub const USER_EVENT: u8 = 3;
pub const QUERY: u8 = 4;
pub const QUERY_RESPONSE: u8 = 5;
pub const CONFLICT_RESPONSE: u8 = 6;
pub const KEY_REQUEST: u8 = 7;
pub const KEY_RESPONSE: u8 = 8;
pub const RELAY: u8 = 9;

pub const QUERY_FLAG_ACK: u32 = 1;
pub const QUERY_FLAG_NO_BROADCAST: u32 = 2;

pub const FILTER_NODE: u8 = 0;
pub const FILTER_TAG: u8 = 1;

/// Tags in node meta: `0xFF` then a msgpack map.
pub const TAG_MAGIC: u8 = 0xff;

wire_struct! {
    pub struct Join {
        "LTime" => pub ltime: u64,
        "Node" => pub node: String,
    }
}

wire_struct! {
    pub struct Leave {
        "LTime" => pub ltime: u64,
        "Node" => pub node: String,
        "Prune" => pub prune: bool,
    }
}

wire_struct! {
    pub struct UserEvent {
        "Name" => pub name: String,
        "Payload" => pub payload: Bytes,
    }
}

wire_struct! {
    pub struct UserEvents {
        "Events" => pub events: Vec<UserEvent>,
        "LTime" => pub ltime: u64,
    }
}

wire_struct! {
    pub struct PushPull {
        "EventLTime" => pub event_ltime: u64,
        "Events" => pub events: Vec<Option<UserEvents>>,
        "LTime" => pub ltime: u64,
        "LeftMembers" => pub left_members: Vec<String>,
        "QueryLTime" => pub query_ltime: u64,
        "StatusLTimes" => pub status_ltimes: BTreeMap<String, u64>,
    }
}

wire_struct! {
    pub struct MessageUserEvent {
        "CC" => pub cc: bool,
        "LTime" => pub ltime: u64,
        "Name" => pub name: String,
        "Payload" => pub payload: Bytes,
    }
}

wire_struct! {
    pub struct Query {
        "Addr" => pub addr: Bytes,
        "Filters" => pub filters: Vec<Bytes>,
        "Flags" => pub flags: u32,
        "ID" => pub id: u32,
        "LTime" => pub ltime: u64,
        "Name" => pub name: String,
        "Payload" => pub payload: Bytes,
        "Port" => pub port: u16,
        "RelayFactor" => pub relay_factor: u8,
        "SourceNode" => pub source_node: String,
        /// Nanoseconds (Go's `time.Duration`).
        "Timeout" => pub timeout: i64,
    }
}

wire_struct! {
    pub struct QueryResponse {
        "Flags" => pub flags: u32,
        "From" => pub from: String,
        "ID" => pub id: u32,
        "LTime" => pub ltime: u64,
        "Payload" => pub payload: Bytes,
    }
}

wire_struct! {
    pub struct UdpAddr {
        "IP" => pub ip: Bytes,
        "Port" => pub port: i64,
        "Zone" => pub zone: String,
    }
}

wire_struct! {
    pub struct RelayHeader {
        "DestAddr" => pub dest_addr: UdpAddr,
        "DestName" => pub dest_name: String,
    }
}

wire_struct! {
    pub struct FilterTag {
        "Expr" => pub expr: String,
        "Tag" => pub tag: String,
    }
}

wire_struct! {
    pub struct KeyRequest {
        "Key" => pub key: Bytes,
    }
}

wire_struct! {
    pub struct KeyResponse {
        "Keys" => pub keys: Vec<String>,
        "Message" => pub message: String,
        "PrimaryKey" => pub primary_key: String,
        "Result" => pub result: bool,
    }
}

wire_struct! {
    /// A member as a `_serf_conflict` response carries it.
    pub struct WireMember {
        "Addr" => pub addr: Bytes,
        "DelegateCur" => pub delegate_cur: u8,
        "DelegateMax" => pub delegate_max: u8,
        "DelegateMin" => pub delegate_min: u8,
        "Name" => pub name: String,
        "Port" => pub port: u16,
        "ProtocolCur" => pub protocol_cur: u8,
        "ProtocolMax" => pub protocol_max: u8,
        "ProtocolMin" => pub protocol_min: u8,
        "Status" => pub status: i64,
        "Tags" => pub tags: BTreeMap<String, String>,
    }
}

/// `[type] ++ msgpack(msg)`.
pub fn encode<T: Wire>(t: u8, msg: &T) -> Vec<u8> {
    let mut e = Enc::new();
    e.buf.push(t);
    msg.encode(&mut e);
    e.into_vec()
}

pub fn encode_tags(tags: &BTreeMap<String, String>) -> Vec<u8> {
    let mut e = Enc::new();
    e.buf.push(TAG_MAGIC);
    tags.encode(&mut e);
    e.into_vec()
}

/// Serf's reading of node meta: `0xFF` + map, or (older protocols) the bare role.
pub fn decode_tags(meta: &[u8]) -> BTreeMap<String, String> {
    match meta.split_first() {
        Some((&TAG_MAGIC, rest)) => msgpack::decode(rest).unwrap_or_default(),
        _ => BTreeMap::from([("role".to_string(), String::from_utf8_lossy(meta).into_owned())]),
    }
}

/// A node-name filter: `[0] ++ msgpack([]string)`.
pub fn node_filter(names: &[String]) -> Bytes {
    let mut e = Enc::new();
    e.buf.push(FILTER_NODE);
    names.to_vec().encode(&mut e);
    Bytes(e.into_vec())
}

/// A tag filter: `[1] ++ msgpack({Tag, Expr})`.
pub fn tag_filter(tag: &str, expr: &str) -> Bytes {
    Bytes(encode(FILTER_TAG, &FilterTag { tag: tag.into(), expr: expr.into() }))
}
