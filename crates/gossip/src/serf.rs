//! Serf on top of memberlist, sans-IO: member status with Lamport-clocked join/leave intents, tags
//! in node meta, user events, queries with acks and relays, internal queries (`_serf_ping`,
//! `_serf_conflict`, the keyring queries), reaping, reconnects and Vivaldi coordinates.
//!
//! [`Serf`] owns a [`Memberlist`] and the Serf state, which is memberlist's [`Delegate`]. Every
//! entry point runs memberlist with the state as delegate, then [`Serf::flush`] carries out what
//! the state asked of memberlist (sends, removals, meta updates) and answers internal queries.
//! Facts: docs/gossip-facts/serf.md.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::broadcast::{self, Queue};
use crate::coordinate::{self, Coordinate};
use crate::env::Rng;
use crate::keyring::Keyring;
use crate::memberlist::{self, Delegate, Memberlist, Node, Output, StreamKind, StreamStep};
use crate::msgpack::{self, Bytes};
use crate::serf_wire as sw;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberStatus {
    None = 0,
    Alive = 1,
    Leaving = 2,
    Left = 3,
    Failed = 4,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::None => "none",
            MemberStatus::Alive => "alive",
            MemberStatus::Leaving => "leaving",
            MemberStatus::Left => "left",
            MemberStatus::Failed => "failed",
        }
    }
}

/// A member's tags, kept compact: one string buffer and the spans of each key and value, sorted
/// by key (a pool of thousands holds one of these per member).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Tags {
    buf: Box<str>,
    /// (key start, key end = value start, value end)
    spans: Box<[(u32, u32, u32)]>,
}

impl Tags {
    pub fn from_map(m: &BTreeMap<String, String>) -> Tags {
        let mut buf = String::with_capacity(m.iter().map(|(k, v)| k.len() + v.len()).sum());
        let mut spans = Vec::with_capacity(m.len());
        for (k, v) in m {
            let a = buf.len() as u32;
            buf.push_str(k);
            let b = buf.len() as u32;
            buf.push_str(v);
            spans.push((a, b, buf.len() as u32));
        }
        Tags { buf: buf.into_boxed_str(), spans: spans.into_boxed_slice() }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans.iter().map(|(a, b, c)| (&self.buf[*a as usize..*b as usize], &self.buf[*b as usize..*c as usize]))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        let i = self.spans.binary_search_by(|(a, b, _)| self.buf[*a as usize..*b as usize].cmp(key)).ok()?;
        let (_, b, c) = self.spans[i];
        Some(&self.buf[b as usize..c as usize])
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }
}

impl std::fmt::Debug for Tags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub addr: SocketAddr,
    pub tags: Tags,
    pub status: MemberStatus,
    /// memberlist protocol: min, max, current.
    pub protocol: [u8; 3],
    /// Serf protocol: min, max, current.
    pub delegate: [u8; 3],
    status_ltime: u64,
    leave_time: Option<Instant>,
}

impl Member {
    /// A member as an application (or a test) describes one; Lamport time and leave time unset.
    pub fn new(name: &str, addr: SocketAddr, tags: &BTreeMap<String, String>, status: MemberStatus) -> Member {
        Member {
            name: name.to_string(),
            addr,
            tags: Tags::from_map(tags),
            status,
            protocol: [1, 5, 2],
            delegate: [2, 5, 4],
            status_ltime: 0,
            leave_time: None,
        }
    }

    /// The Lamport time of the member's last status change.
    pub fn status_ltime(&self) -> u64 {
        self.status_ltime
    }

    /// When it left or failed, as we saw it.
    pub fn leave_time(&self) -> Option<Instant> {
        self.leave_time
    }

    fn from_node(n: &Node) -> Member {
        Member {
            name: n.name.clone(),
            addr: n.addr,
            tags: Tags::from_map(&sw::decode_tags(&n.meta)),
            status: MemberStatus::Alive,
            protocol: [n.vsn[0], n.vsn[1], n.vsn[2]],
            delegate: [n.vsn[3], n.vsn[4], n.vsn[5]],
            status_ltime: 0,
            leave_time: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub tags: BTreeMap<String, String>,
    pub memberlist: memberlist::Config,
    pub reap_interval: Duration,
    pub reconnect_interval: Duration,
    pub reconnect_timeout: Duration,
    pub tombstone_timeout: Duration,
    pub recent_intent_timeout: Duration,
    pub event_buffer: usize,
    pub query_buffer: usize,
    pub query_timeout_mult: u32,
    pub user_event_size_limit: usize,
    pub query_size_limit: usize,
    pub query_response_size_limit: usize,
    pub max_queue_depth: usize,
    pub disable_coordinates: bool,
    /// User-event coalescing, as the serf agent runs it (3 s / 1 s there; off in the library and
    /// in Consul): events sent with `coalesce` are held, only the newest of each name delivered,
    /// when `coalesce_period` has passed since the first or `quiescent_period` since the last.
    pub coalesce_period: Duration,
    pub quiescent_period: Duration,
    pub enable_name_conflict_resolution: bool,
    /// Serf's `ReconnectTimeoutOverride`: given a failed or left member and the pool's timeout,
    /// the timeout for that member (Consul reads a client's `rc_tm` tag here). Consulted by reap
    /// only, not by reconnect attempts.
    pub reconnect_timeout_override: Option<fn(&Member, Duration) -> Duration>,
}

impl Config {
    pub fn new(memberlist: memberlist::Config) -> Config {
        Config {
            tags: BTreeMap::new(),
            memberlist,
            reap_interval: Duration::from_secs(15),
            reconnect_interval: Duration::from_secs(30),
            reconnect_timeout: Duration::from_secs(24 * 3600),
            tombstone_timeout: Duration::from_secs(24 * 3600),
            recent_intent_timeout: Duration::from_secs(300),
            event_buffer: 512,
            query_buffer: 512,
            query_timeout_mult: 16,
            user_event_size_limit: 512,
            query_size_limit: 1024,
            query_response_size_limit: 1024,
            max_queue_depth: 4096,
            disable_coordinates: false,
            coalesce_period: Duration::ZERO,
            quiescent_period: Duration::ZERO,
            enable_name_conflict_resolution: true,
            reconnect_timeout_override: None,
        }
    }
}

/// Serf's hard cap on user events.
pub const USER_EVENT_SIZE_MAX: usize = 9 * 1024;
pub const INTERNAL_PREFIX: &str = "_serf_";

/// A query that reached us.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingQuery {
    pub ltime: u64,
    pub id: u32,
    pub name: String,
    pub payload: Vec<u8>,
    pub source_node: String,
    addr: SocketAddr,
    relay_factor: u8,
    pub deadline: Instant,
}

/// What happened, for the application.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    MemberJoin(Member),
    MemberLeave(Member),
    MemberFailed(Member),
    MemberUpdate(Member),
    MemberReap(Member),
    User {
        ltime: u64,
        name: String,
        payload: Vec<u8>,
        coalesce: bool,
    },
    Query(IncomingQuery),
    /// For a query we sent.
    QueryAck {
        ltime: u64,
        from: String,
    },
    QueryResponse {
        ltime: u64,
        from: String,
        payload: Vec<u8>,
    },
    QueryDone {
        ltime: u64,
    },
    /// The keyring changed (by a key query); persist it.
    KeyringChanged,
    /// Another node holds our name and the cluster sided with it: stop.
    Shutdown(String),
}

#[derive(Debug, Clone, Default)]
pub struct QueryParams {
    pub filter_nodes: Vec<String>,
    pub filter_tags: Vec<(String, String)>,
    pub request_ack: bool,
    pub relay_factor: u8,
    /// Zero is Serf's default: `gossip_interval × query_timeout_mult × ⌈log10(n+1)⌉`.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tracker {
    User,
    Conflict { responses: u32, matching: u32 },
}

#[derive(Debug, Clone)]
struct Pending {
    id: u32,
    deadline: Instant,
    acks: HashSet<String>,
    responses: HashSet<String>,
    kind: Tracker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IntentKind {
    Join,
    Leave,
}

#[derive(Debug, Clone)]
struct Intent {
    kind: IntentKind,
    ltime: u64,
    at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Alive,
    Leaving,
    Left,
    Shutdown,
}

/// A Lamport clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock(u64);

impl Clock {
    pub fn time(&self) -> u64 {
        self.0
    }
    pub fn increment(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
    pub fn witness(&mut self, v: u64) {
        if v >= self.0 {
            self.0 = v.saturating_add(1);
        }
    }
}

/// What Serf asks memberlist to do once the delegate call returns.
#[derive(Debug)]
enum MlOp {
    Send(SocketAddr, Vec<u8>),
    Remove(String),
    Join(SocketAddr),
}

struct Inner {
    config: Config,
    name: String,
    state: State,
    // Ordered where iterated (reap, reconnect, push/pull), so a seeded run replays exactly.
    members: BTreeMap<String, Member>,
    clock: Clock,
    event_clock: Clock,
    query_clock: Clock,
    event_min_time: u64,
    query_min_time: u64,
    event_join_ignore: bool,
    recent_intents: BTreeMap<String, Intent>,
    event_buf: Vec<Option<sw::UserEvents>>,
    query_buf: Vec<Option<(u64, Vec<u32>)>>,
    intents: Queue,
    events_q: Queue,
    queries_q: Queue,
    pending: BTreeMap<u64, Pending>,
    internal: Vec<IncomingQuery>,
    events: VecDeque<Event>,
    coord: coordinate::Client,
    coord_cache: HashMap<String, Coordinate>,
    ops: Vec<MlOp>,
    /// Coalesced user events by name: (ltime, events of that ltime), and the window.
    coalesced: BTreeMap<String, (u64, Vec<Event>)>,
    coalesce_first: Option<Instant>,
    coalesce_last: Option<Instant>,
    /// Set when another node claims our name: run the `_serf_conflict` query.
    start_conflict: Option<String>,
    rng: Box<dyn Rng>,
    /// memberlist's alive count, refreshed before each delegate call (for timeouts and relays).
    num_alive: usize,
    retransmit_mult: u32,
    local_addr: SocketAddr,
}

pub struct Serf {
    ml: Memberlist,
    s: Inner,
    next_reap: Instant,
    next_reconnect: Instant,
    join_tokens: HashSet<u64>,
}

impl std::fmt::Debug for Serf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serf").field("name", &self.s.name).field("members", &self.s.members.len()).finish()
    }
}

impl Serf {
    pub fn new(
        config: Config,
        keyring: Option<Keyring>,
        mut rng: Box<dyn Rng>,
        ml_rng: Box<dyn Rng>,
        now: Instant,
    ) -> Serf {
        let name = config.memberlist.name.clone();
        let local_addr = config.memberlist.addr;
        let ml = Memberlist::new(config.memberlist.clone(), keyring, ml_rng, now);
        let jitter = |rng: &mut Box<dyn Rng>, d: Duration| d.mul_f64((rng.next_u64() % 1000) as f64 / 1000.0);
        let next_reap = now + config.reap_interval;
        let next_reconnect = now + config.reconnect_interval + jitter(&mut rng, config.reconnect_interval);
        let mut s = Inner {
            event_buf: vec![None; config.event_buffer],
            query_buf: vec![None; config.query_buffer],
            intents: Queue::new(config.max_queue_depth),
            events_q: Queue::new(config.max_queue_depth),
            queries_q: Queue::new(config.max_queue_depth),
            start_conflict: None,
            coalesced: BTreeMap::new(),
            coalesce_first: None,
            coalesce_last: None,
            name,
            state: State::Alive,
            members: BTreeMap::new(),
            clock: Clock::default(),
            event_clock: Clock::default(),
            query_clock: Clock::default(),
            event_min_time: 0,
            query_min_time: 0,
            event_join_ignore: false,
            recent_intents: BTreeMap::new(),
            pending: BTreeMap::new(),
            internal: Vec::new(),
            events: VecDeque::new(),
            coord: coordinate::Client::default(),
            coord_cache: HashMap::new(),
            ops: Vec::new(),
            rng,
            num_alive: 1,
            retransmit_mult: config.memberlist.retransmit_mult,
            local_addr,
            config,
        };
        s.clock.increment();
        s.event_clock.increment();
        s.query_clock.increment();
        Serf { ml, s, next_reap, next_reconnect, join_tokens: HashSet::new() }
    }

    /// Enters ourselves into the member list (before any join).
    pub fn start(&mut self, now: Instant) {
        self.ml.start(&mut self.s, now);
        self.flush(now);
    }

    pub fn name(&self) -> &str {
        &self.s.name
    }

    pub fn state(&self) -> State {
        self.s.state
    }

    pub fn members(&self) -> Vec<Member> {
        let mut v: Vec<Member> = self.s.members.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn member(&self, name: &str) -> Option<&Member> {
        self.s.members.get(name)
    }

    pub fn local_member(&self) -> Option<&Member> {
        self.s.members.get(&self.s.name)
    }

    pub fn memberlist(&self) -> &Memberlist {
        &self.ml
    }

    pub fn tags(&self) -> &BTreeMap<String, String> {
        &self.s.config.tags
    }

    pub fn clocks(&self) -> (u64, u64, u64) {
        (self.s.clock.time(), self.s.event_clock.time(), self.s.query_clock.time())
    }

    /// Restores clocks from a snapshot: events and queries from before are not delivered again.
    pub fn restore_clocks(&mut self, clock: u64, event: u64, query: u64) {
        self.s.clock.witness(clock);
        self.s.event_clock.witness(event);
        self.s.query_clock.witness(query);
        self.s.event_min_time = event + 1;
        self.s.query_min_time = query + 1;
    }

    pub fn local_coordinate(&self) -> &Coordinate {
        self.s.coord.coordinate()
    }

    pub fn cached_coordinate(&self, name: &str) -> Option<&Coordinate> {
        self.s.coord_cache.get(name)
    }

    pub fn keyring(&self) -> Option<&Keyring> {
        self.ml.keyring()
    }

    pub fn keyring_mut(&mut self) -> Option<&mut Keyring> {
        self.ml.keyring_mut()
    }

    pub fn drain_events(&mut self) -> impl Iterator<Item = Event> + '_ {
        self.s.events.drain(..)
    }

    pub fn drain_output(&mut self) -> impl Iterator<Item = Output> + '_ {
        self.ml.drain_output()
    }

    pub fn next_deadline(&self) -> Instant {
        let mut t = self.ml.next_deadline().min(self.next_reap).min(self.next_reconnect);
        for p in self.s.pending.values() {
            t = t.min(p.deadline);
        }
        if let Some(c) = self.s.coalesce_deadline() {
            t = t.min(c);
        }
        t
    }

    fn pre(&mut self) {
        self.s.num_alive = self.ml.num_alive();
    }

    pub fn tick(&mut self, now: Instant) {
        if self.s.state == State::Shutdown {
            return;
        }
        self.pre();
        self.ml.tick(&mut self.s, now);
        if now >= self.next_reap {
            self.next_reap = now + self.s.config.reap_interval;
            self.s.reap(now);
        }
        if now >= self.next_reconnect {
            self.next_reconnect = now + self.s.config.reconnect_interval;
            self.s.reconnect();
        }
        if let Some(at) = self.s.coalesce_deadline() {
            if now >= at {
                let held = std::mem::take(&mut self.s.coalesced);
                self.s.coalesce_first = None;
                self.s.coalesce_last = None;
                for (_, (_, evs)) in held {
                    self.s.events.extend(evs);
                }
            }
        }
        let done: Vec<u64> = self.s.pending.iter().filter(|(_, p)| now >= p.deadline).map(|(l, _)| *l).collect();
        for ltime in done {
            if let Some(p) = self.s.pending.remove(&ltime) {
                self.s.query_done(ltime, p);
            }
        }
        self.flush(now);
    }

    pub fn handle_packet(&mut self, from: SocketAddr, buf: &[u8], now: Instant) {
        if self.s.state == State::Shutdown {
            return;
        }
        self.pre();
        self.ml.handle_packet(&mut self.s, from, buf, now);
        self.flush(now);
    }

    pub fn handle_stream(&mut self, from: SocketAddr, buf: &[u8], now: Instant) -> StreamStep {
        self.pre();
        let r = self.ml.handle_stream(&mut self.s, from, buf, now);
        self.flush(now);
        r
    }

    /// A reply to a stream we opened (token from the [`Output::Stream`]).
    pub fn handle_stream_reply(
        &mut self,
        token: u64,
        kind: StreamKind,
        from: SocketAddr,
        buf: &[u8],
        now: Instant,
    ) -> StreamStep {
        self.pre();
        let r = self.ml.handle_stream_reply(&mut self.s, token, kind, from, buf, now);
        if r == StreamStep::Close {
            self.join_tokens.remove(&token);
        }
        if r == StreamStep::Done && self.join_tokens.remove(&token) {
            // A join went through: announce ourselves (Serf's broadcastJoin).
            self.s.event_join_ignore = false;
            self.broadcast_join(now);
        }
        self.flush(now);
        r
    }

    pub fn stream_failed(&mut self, token: u64, kind: StreamKind, to: SocketAddr, err: &str) {
        self.join_tokens.remove(&token);
        self.ml.stream_failed(token, kind, to, err);
    }

    /// Simulation support: members known from the start, with nothing gossiped about them.
    #[doc(hidden)]
    pub fn seed_members(&mut self, nodes: Vec<crate::wire::Alive>, now: Instant) {
        self.pre();
        self.ml.seed_alive(&mut self.s, nodes, now);
        self.s.intents.clear();
        self.s.events.clear();
    }

    /// Joins through each address (push/pull). With `ignore_old`, events from before the join are
    /// not delivered. Returns the tokens of the streams that carry the joins.
    pub fn join(&mut self, addrs: &[SocketAddr], ignore_old: bool, now: Instant) -> Vec<u64> {
        self.pre();
        if ignore_old {
            self.s.event_join_ignore = true;
        }
        let mut tokens = Vec::new();
        for a in addrs {
            let t = self.ml.join(&mut self.s, *a, now);
            self.join_tokens.insert(t);
            tokens.push(t);
        }
        tokens
    }

    fn broadcast_join(&mut self, now: Instant) {
        let ltime = self.s.clock.time();
        let msg = sw::Join { ltime, node: self.s.name.clone() };
        self.s.clock.witness(ltime);
        self.s.handle_join_intent(&msg, now);
        let bytes = sw::encode(sw::JOIN, &msg);
        self.s.intents.push(None, bytes);
    }

    /// Starts a graceful leave: a leave intent about us. The driver then waits for
    /// [`Serf::leave_intent_sent`], calls [`Serf::leave_memberlist`], waits for
    /// [`Serf::leave_done`], and stops.
    pub fn leave(&mut self, now: Instant) {
        if self.s.state != State::Alive {
            return;
        }
        self.s.state = State::Leaving;
        let ltime = self.s.clock.time();
        let msg = sw::Leave { ltime, node: self.s.name.clone(), prune: false };
        self.s.clock.increment();
        self.s.handle_leave_intent(&msg, now);
        if self.ml.num_alive() > 1 {
            self.s.intents.push(None, sw::encode(sw::LEAVE, &msg));
        }
        self.flush(now);
    }

    pub fn leave_intent_sent(&self) -> bool {
        self.s.intents.is_empty() || self.ml.num_alive() <= 1
    }

    pub fn leave_memberlist(&mut self, now: Instant) {
        self.pre();
        self.ml.leave(&mut self.s, now);
        self.flush(now);
    }

    pub fn leave_done(&self) -> bool {
        self.ml.leave_sent()
    }

    pub fn set_left(&mut self) {
        self.s.state = State::Left;
    }

    pub fn shutdown(&mut self) {
        self.s.state = State::Shutdown;
    }

    /// Serf's `RemoveFailedNode`: a leave intent about another node (force-leave).
    pub fn force_leave(&mut self, node: &str, prune: bool, now: Instant) {
        let ltime = self.s.clock.time();
        let msg = sw::Leave { ltime, node: node.to_string(), prune };
        self.s.clock.increment();
        self.s.handle_leave_intent(&msg, now);
        if self.ml.num_alive() > 1 {
            self.s.intents.push(None, sw::encode(sw::LEAVE, &msg));
        }
        self.flush(now);
    }

    /// New tags, announced through memberlist's node meta.
    pub fn set_tags(&mut self, tags: BTreeMap<String, String>, now: Instant) -> Result<(), String> {
        let meta = sw::encode_tags(&tags);
        if meta.len() > crate::wire::META_MAX {
            return Err(format!("Encoded length of tags exceeds limit of {} bytes", crate::wire::META_MAX));
        }
        self.s.config.tags = tags;
        self.pre();
        self.ml.update_meta(&mut self.s, now);
        self.flush(now);
        Ok(())
    }

    /// Fires a user event to the whole pool.
    pub fn user_event(&mut self, name: &str, payload: &[u8], coalesce: bool, now: Instant) -> Result<(), String> {
        let limit = self.s.config.user_event_size_limit.min(USER_EVENT_SIZE_MAX);
        if name.len() + payload.len() > limit {
            return Err(format!("user event exceeds configured limit of {limit} bytes before encoding"));
        }
        let ltime = self.s.event_clock.time();
        let msg = sw::MessageUserEvent { ltime, name: name.into(), payload: Bytes(payload.to_vec()), cc: coalesce };
        let bytes = sw::encode(sw::USER_EVENT, &msg);
        if bytes.len() > limit {
            return Err(format!("encoded user event exceeds configured limit of {limit} bytes after encoding"));
        }
        self.s.event_clock.increment();
        self.s.handle_user_event(&msg, now);
        self.s.events_q.push(None, bytes);
        Ok(())
    }

    fn default_query_timeout(&self) -> Duration {
        let n = self.ml.num_alive() as f64;
        let scale = (n + 1.0).log10().ceil().max(1.0);
        self.s.config.memberlist.gossip_interval * self.s.config.query_timeout_mult * scale as u32
    }

    /// Sends a query; responses come back as [`Event::QueryAck`] / [`Event::QueryResponse`] with
    /// the returned Lamport time, and [`Event::QueryDone`] at the deadline.
    pub fn query(&mut self, name: &str, payload: &[u8], params: QueryParams, now: Instant) -> Result<u64, String> {
        self.query_kind(name, payload, params, Tracker::User, now)
    }

    fn query_kind(
        &mut self,
        name: &str,
        payload: &[u8],
        params: QueryParams,
        kind: Tracker,
        now: Instant,
    ) -> Result<u64, String> {
        self.pre();
        let timeout = if params.timeout.is_zero() { self.default_query_timeout() } else { params.timeout };
        let mut filters = Vec::new();
        if !params.filter_nodes.is_empty() {
            filters.push(sw::node_filter(&params.filter_nodes));
        }
        for (t, e) in &params.filter_tags {
            filters.push(sw::tag_filter(t, e));
        }
        let ltime = self.s.query_clock.time();
        let q = sw::Query {
            ltime,
            id: (self.s.rng.next_u64() & 0x7fff_ffff) as u32,
            addr: crate::wire::ip_bytes(self.s.local_addr.ip()),
            port: self.s.local_addr.port(),
            source_node: self.s.name.clone(),
            filters,
            flags: if params.request_ack { sw::QUERY_FLAG_ACK } else { 0 },
            relay_factor: params.relay_factor,
            timeout: timeout.as_nanos().min(i64::MAX as u128) as i64,
            name: name.into(),
            payload: Bytes(payload.to_vec()),
        };
        let bytes = sw::encode(sw::QUERY, &q);
        if bytes.len() > self.s.config.query_size_limit {
            return Err(format!("query exceeds limit of {} bytes", self.s.config.query_size_limit));
        }
        self.s.pending.insert(
            ltime,
            Pending { id: q.id, deadline: now + timeout, acks: HashSet::new(), responses: HashSet::new(), kind },
        );
        self.s.handle_query(&q, now);
        self.s.queries_q.push(None, bytes);
        self.flush(now);
        Ok(ltime)
    }

    /// Answers a query (once, before its deadline).
    pub fn respond(&mut self, q: &IncomingQuery, payload: &[u8], now: Instant) -> Result<(), String> {
        self.s.respond(q, payload, now)?;
        self.flush(now);
        Ok(())
    }

    /// Carries out what the state asked of memberlist, and answers internal queries.
    fn flush(&mut self, now: Instant) {
        for _ in 0..8 {
            let internal = std::mem::take(&mut self.s.internal);
            for q in internal {
                self.internal_query(q, now);
            }
            let ops = std::mem::take(&mut self.s.ops);
            if ops.is_empty() {
                break;
            }
            for op in ops {
                match op {
                    MlOp::Send(to, msg) => self.ml.send_user_packet(to, &msg),
                    MlOp::Remove(name) => self.ml.remove(&name),
                    MlOp::Join(addr) => {
                        self.ml.join(&mut self.s, addr, now);
                    }
                }
            }
        }
        // Conflict resolution runs a query of its own.
        if let Some(conflict) = self.s.start_conflict.take() {
            let p = QueryParams::default();
            let name = self.s.name.clone();
            let _ = self.query_kind(
                "_serf_conflict",
                name.as_bytes(),
                p,
                Tracker::Conflict { responses: 0, matching: 0 },
                now,
            );
            tracing::error!("serf: name conflict with {conflict}; asking the cluster");
        }
    }

    fn internal_query(&mut self, q: IncomingQuery, now: Instant) {
        let op = &q.name[INTERNAL_PREFIX.len()..];
        let reply: Option<Vec<u8>> = match op {
            "ping" => None,
            "conflict" => {
                let name = String::from_utf8_lossy(&q.payload).into_owned();
                if name == self.s.name {
                    None
                } else {
                    let mut e = msgpack::Enc::new();
                    e.buf.push(sw::CONFLICT_RESPONSE);
                    match self.s.members.get(&name) {
                        Some(m) => msgpack::Wire::encode(&wire_member(m), &mut e),
                        None => e.nil(),
                    }
                    Some(e.into_vec())
                }
            }
            "install-key" | "use-key" | "remove-key" | "list-keys" => Some(self.key_query(op, &q.payload)),
            _ => None,
        };
        if let Some(r) = reply {
            if let Err(e) = self.s.respond(&q, &r, now) {
                tracing::warn!("serf: failed to respond to {}: {e}", q.name);
            }
        }
    }

    fn key_query(&mut self, op: &str, payload: &[u8]) -> Vec<u8> {
        let b64 = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k);
        let mut resp = sw::KeyResponse::default();
        match self.ml.keyring_mut() {
            None => {
                resp.message = if op == "list-keys" {
                    "Keyring is empty (encryption not enabled)".into()
                } else {
                    "No keyring to modify (encryption not enabled)".into()
                };
            }
            Some(ring) => {
                let key = payload.get(1..).and_then(|p| msgpack::decode::<sw::KeyRequest>(p).ok()).map(|r| r.key.0);
                let r = match (op, key) {
                    ("list-keys", _) => Ok(()),
                    ("install-key", Some(k)) => ring.add(&k).map_err(|e| e.to_string()),
                    ("use-key", Some(k)) => ring.use_key(&k).map_err(|e| e.to_string()),
                    ("remove-key", Some(k)) => ring.remove(&k).map_err(|e| e.to_string()),
                    _ => Err("Failed to decode key request".to_string()),
                };
                match r {
                    Ok(()) => {
                        resp.result = true;
                        if op == "list-keys" {
                            let max = self.s.config.query_response_size_limit / 25;
                            let all: Vec<String> = ring.keys().map(b64).collect();
                            if all.len() > max {
                                resp.message =
                                    format!("truncated key list response, showing first {max} of {} keys", all.len());
                            }
                            resp.keys = all.into_iter().take(max).collect();
                            resp.primary_key = ring.primary().map(b64).unwrap_or_default();
                        } else {
                            self.s.events.push_back(Event::KeyringChanged);
                        }
                    }
                    Err(e) => resp.message = e,
                }
            }
        }
        sw::encode(sw::KEY_RESPONSE, &resp)
    }

    /// A key operation across the pool, as an internal query. Responses arrive as
    /// [`Event::QueryResponse`] payloads `[8] ++ KeyResponse` (see [`decode_key_response`]).
    pub fn key_query_all(
        &mut self,
        op: KeyOp,
        key: Option<&[u8]>,
        relay_factor: u8,
        now: Instant,
    ) -> Result<u64, String> {
        let name = format!("{INTERNAL_PREFIX}{}", op.name());
        let payload = match key {
            Some(k) => sw::encode(sw::KEY_REQUEST, &sw::KeyRequest { key: Bytes(k.to_vec()) }),
            None => Vec::new(),
        };
        let p = QueryParams { relay_factor, ..QueryParams::default() };
        self.query(&name, &payload, p, now)
    }

    pub fn set_keyring(&mut self, k: Option<Keyring>) {
        self.ml.set_keyring(k);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOp {
    Install,
    Use,
    Remove,
    List,
}

impl KeyOp {
    fn name(self) -> &'static str {
        match self {
            KeyOp::Install => "install-key",
            KeyOp::Use => "use-key",
            KeyOp::Remove => "remove-key",
            KeyOp::List => "list-keys",
        }
    }
}

/// A node's answer to a key query.
pub fn decode_key_response(payload: &[u8]) -> Option<sw::KeyResponse> {
    match payload.split_first() {
        Some((&sw::KEY_RESPONSE, rest)) => msgpack::decode(rest).ok(),
        _ => None,
    }
}

fn wire_member(m: &Member) -> sw::WireMember {
    sw::WireMember {
        name: m.name.clone(),
        addr: crate::wire::ip_bytes(m.addr.ip()),
        port: m.addr.port(),
        tags: m.tags.to_map(),
        status: m.status as i64,
        protocol_min: m.protocol[0],
        protocol_max: m.protocol[1],
        protocol_cur: m.protocol[2],
        delegate_min: m.delegate[0],
        delegate_max: m.delegate[1],
        delegate_cur: m.delegate[2],
    }
}

impl Inner {
    /// When held user events are due: `coalesce_period` after the first, or `quiescent_period`
    /// after the last, whichever comes first.
    fn coalesce_deadline(&self) -> Option<Instant> {
        let first = self.coalesce_first? + self.config.coalesce_period;
        let last = self.coalesce_last? + self.config.quiescent_period;
        Some(first.min(last))
    }

    fn retransmit(&self) -> u32 {
        broadcast::retransmit_limit(self.retransmit_mult, self.members.len())
    }

    fn emit(&mut self, e: Event) {
        self.events.push_back(e);
    }

    fn upsert_intent(&mut self, node: &str, kind: IntentKind, ltime: u64, now: Instant) -> bool {
        match self.recent_intents.get(node) {
            Some(i) if i.ltime >= ltime => false,
            _ => {
                self.recent_intents.insert(node.to_string(), Intent { kind, ltime, at: now });
                true
            }
        }
    }

    fn handle_join_intent(&mut self, j: &sw::Join, now: Instant) -> bool {
        self.clock.witness(j.ltime);
        let Some(m) = self.members.get_mut(&j.node) else {
            return self.upsert_intent(&j.node, IntentKind::Join, j.ltime, now);
        };
        if j.ltime <= m.status_ltime {
            return false;
        }
        m.status_ltime = j.ltime;
        if m.status == MemberStatus::Leaving {
            m.status = MemberStatus::Alive;
        }
        true
    }

    fn handle_leave_intent(&mut self, l: &sw::Leave, now: Instant) -> bool {
        self.clock.witness(l.ltime);
        let is_self = l.node == self.name;
        let self_alive = self.state == State::Alive;
        let Some(m) = self.members.get_mut(&l.node) else {
            return self.upsert_intent(&l.node, IntentKind::Leave, l.ltime, now);
        };
        if l.ltime <= m.status_ltime {
            return false;
        }
        if is_self && self_alive {
            // Someone says we left while we did not: refute with a join intent.
            let ltime = self.clock.time();
            self.clock.witness(ltime);
            let msg = sw::Join { ltime, node: self.name.clone() };
            if let Some(me) = self.members.get_mut(&self.name) {
                me.status_ltime = ltime;
            }
            self.intents.push(None, sw::encode(sw::JOIN, &msg));
            return false;
        }
        m.status_ltime = l.ltime;
        let r = match m.status {
            MemberStatus::Alive => {
                m.status = MemberStatus::Leaving;
                true
            }
            MemberStatus::Failed => {
                m.status = MemberStatus::Left;
                m.leave_time = Some(now);
                let m = m.clone();
                self.emit(Event::MemberLeave(m));
                true
            }
            MemberStatus::Leaving | MemberStatus::Left => true,
            MemberStatus::None => false,
        };
        if r && l.prune {
            self.erase(&l.node);
        }
        r
    }

    fn erase(&mut self, name: &str) {
        if let Some(m) = self.members.remove(name) {
            self.coord.forget(name);
            self.coord_cache.remove(name);
            self.ops.push(MlOp::Remove(name.to_string()));
            self.emit(Event::MemberReap(m));
        }
    }

    fn handle_user_event(&mut self, e: &sw::MessageUserEvent, _now: Instant) -> bool {
        self.event_clock.witness(e.ltime);
        if e.ltime < self.event_min_time {
            return false;
        }
        let cur = self.event_clock.time();
        let n = self.event_buf.len() as u64;
        if cur > n && e.ltime < cur - n {
            return false;
        }
        let idx = (e.ltime % n) as usize;
        let ev = sw::UserEvent { name: e.name.clone(), payload: e.payload.clone() };
        match &mut self.event_buf[idx] {
            Some(slot) if slot.ltime == e.ltime => {
                if slot.events.contains(&ev) {
                    return false;
                }
                slot.events.push(ev);
            }
            slot => *slot = Some(sw::UserEvents { ltime: e.ltime, events: vec![ev] }),
        }
        let ev = Event::User { ltime: e.ltime, name: e.name.clone(), payload: e.payload.0.clone(), coalesce: e.cc };
        if e.cc && !self.config.coalesce_period.is_zero() && !self.config.quiescent_period.is_zero() {
            // Keep only the newest Lamport time per name (all events of that time).
            let slot = self.coalesced.entry(e.name.clone()).or_insert((e.ltime, Vec::new()));
            if e.ltime > slot.0 {
                *slot = (e.ltime, Vec::new());
            }
            if e.ltime == slot.0 {
                slot.1.push(ev);
            }
            self.coalesce_first.get_or_insert(_now);
            self.coalesce_last = Some(_now);
        } else {
            self.emit(ev);
        }
        true
    }

    fn filters_pass(&self, filters: &[Bytes]) -> bool {
        for f in filters {
            let Some((&t, body)) = f.split_first() else { return false };
            match t {
                sw::FILTER_NODE => match msgpack::decode::<Vec<String>>(body) {
                    Ok(names) if names.contains(&self.name) => {}
                    _ => return false,
                },
                sw::FILTER_TAG => {
                    let Ok(ft) = msgpack::decode::<sw::FilterTag>(body) else { return false };
                    let Ok(re) = regex::Regex::new(&ft.expr) else { return false };
                    let v = self.config.tags.get(&ft.tag).map(String::as_str).unwrap_or("");
                    if !re.is_match(v) {
                        return false;
                    }
                }
                _ => return false,
            }
        }
        true
    }

    fn handle_query(&mut self, q: &sw::Query, now: Instant) -> bool {
        self.query_clock.witness(q.ltime);
        if q.ltime < self.query_min_time {
            return false;
        }
        let cur = self.query_clock.time();
        let n = self.query_buf.len() as u64;
        if cur > n && q.ltime < cur - n {
            return false;
        }
        let idx = (q.ltime % n) as usize;
        match &mut self.query_buf[idx] {
            Some((lt, ids)) if *lt == q.ltime => {
                if ids.contains(&q.id) {
                    return false;
                }
                ids.push(q.id);
            }
            slot => *slot = Some((q.ltime, vec![q.id])),
        }
        let rebroadcast = q.flags & sw::QUERY_FLAG_NO_BROADCAST == 0;
        if !self.filters_pass(&q.filters) {
            return rebroadcast;
        }
        let Some(addr) = crate::wire::socket_addr(&q.addr, q.port) else { return rebroadcast };
        let timeout = Duration::from_nanos(q.timeout.max(0) as u64);
        let inc = IncomingQuery {
            ltime: q.ltime,
            id: q.id,
            name: q.name.clone(),
            payload: q.payload.0.clone(),
            source_node: q.source_node.clone(),
            addr,
            relay_factor: q.relay_factor,
            deadline: now + timeout,
        };
        if q.flags & sw::QUERY_FLAG_ACK != 0 {
            let ack = sw::QueryResponse {
                ltime: q.ltime,
                id: q.id,
                from: self.name.clone(),
                flags: sw::QUERY_FLAG_ACK,
                payload: Bytes::default(),
            };
            let bytes = sw::encode(sw::QUERY_RESPONSE, &ack);
            self.send_response(addr, &q.source_node, bytes, q.relay_factor);
        }
        if q.name.starts_with(INTERNAL_PREFIX) {
            self.internal.push(inc);
        } else {
            self.emit(Event::Query(inc));
        }
        rebroadcast
    }

    fn send_response(&mut self, addr: SocketAddr, dest_name: &str, bytes: Vec<u8>, relay_factor: u8) {
        self.ops.push(MlOp::Send(addr, bytes.clone()));
        if relay_factor == 0 || self.members.len() < relay_factor as usize + 1 {
            return;
        }
        let header = sw::RelayHeader {
            dest_addr: sw::UdpAddr {
                ip: crate::wire::ip_bytes(addr.ip()),
                port: addr.port() as i64,
                zone: String::new(),
            },
            dest_name: dest_name.to_string(),
        };
        let mut relay = sw::encode(sw::RELAY, &header);
        relay.extend_from_slice(&bytes);
        if relay.len() > self.config.query_response_size_limit {
            return;
        }
        let cands: Vec<SocketAddr> = self
            .members
            .values()
            .filter(|m| m.name != self.name && m.status == MemberStatus::Alive && m.protocol[1] >= 5)
            .map(|m| m.addr)
            .collect();
        let mut picked = HashSet::new();
        for _ in 0..3 * relay_factor as usize {
            if picked.len() >= relay_factor as usize || cands.is_empty() {
                break;
            }
            picked.insert(cands[self.rng.below(cands.len())]);
        }
        for a in picked {
            self.ops.push(MlOp::Send(a, relay.clone()));
        }
    }

    fn respond(&mut self, q: &IncomingQuery, payload: &[u8], now: Instant) -> Result<(), String> {
        if now > q.deadline {
            return Err("response is past the deadline".into());
        }
        let r = sw::QueryResponse {
            ltime: q.ltime,
            id: q.id,
            from: self.name.clone(),
            flags: 0,
            payload: Bytes(payload.to_vec()),
        };
        let bytes = sw::encode(sw::QUERY_RESPONSE, &r);
        if bytes.len() > self.config.query_response_size_limit {
            return Err(format!("response exceeds limit of {} bytes", self.config.query_response_size_limit));
        }
        self.send_response(q.addr, &q.source_node, bytes, q.relay_factor);
        Ok(())
    }

    fn handle_query_response(&mut self, r: sw::QueryResponse, now: Instant) {
        let Some(p) = self.pending.get_mut(&r.ltime) else { return };
        if p.id != r.id || now > p.deadline {
            return;
        }
        if r.flags & sw::QUERY_FLAG_ACK != 0 {
            if p.acks.insert(r.from.clone()) {
                self.events.push_back(Event::QueryAck { ltime: r.ltime, from: r.from });
            }
            return;
        }
        if !p.responses.insert(r.from.clone()) {
            return;
        }
        match &mut p.kind {
            Tracker::User => {
                self.events.push_back(Event::QueryResponse { ltime: r.ltime, from: r.from, payload: r.payload.0 });
            }
            Tracker::Conflict { responses, matching } => {
                if let Some((&sw::CONFLICT_RESPONSE, body)) = r.payload.split_first() {
                    if let Ok(Some(m)) = msgpack::decode::<Option<sw::WireMember>>(body) {
                        *responses += 1;
                        if crate::wire::socket_addr(&m.addr, m.port) == Some(self.local_addr) {
                            *matching += 1;
                        }
                    }
                }
            }
        }
    }

    fn query_done(&mut self, ltime: u64, p: Pending) {
        match p.kind {
            Tracker::User => self.emit(Event::QueryDone { ltime }),
            Tracker::Conflict { responses, matching } => {
                // Serf keeps running with a strict majority: matching >= responses/2 + 1.
                if matching > responses / 2 {
                    tracing::info!("serf: name conflict resolution: we are the majority ({matching}/{responses})");
                } else {
                    tracing::error!("serf: name conflict resolution lost ({matching}/{responses}): shutting down");
                    self.state = State::Shutdown;
                    self.emit(Event::Shutdown(format!("node name {} is held by another node", self.name)));
                }
            }
        }
    }

    fn reap(&mut self, now: Instant) {
        let mut gone = Vec::new();
        for m in self.members.values() {
            let Some(t) = m.leave_time else { continue };
            let age = now.saturating_duration_since(t);
            let limit = match m.status {
                MemberStatus::Failed => self.config.reconnect_timeout,
                MemberStatus::Left => self.config.tombstone_timeout,
                _ => continue,
            };
            let limit = match self.config.reconnect_timeout_override {
                Some(f) => f(m, limit),
                None => limit,
            };
            if age > limit {
                gone.push(m.name.clone());
            }
        }
        for name in gone {
            tracing::info!("serf: EventMemberReap: {name}");
            self.erase(&name);
        }
        let t = self.config.recent_intent_timeout;
        self.recent_intents.retain(|_, i| now.saturating_duration_since(i.at) <= t);
    }

    fn reconnect(&mut self) {
        let failed: Vec<SocketAddr> =
            self.members.values().filter(|m| m.status == MemberStatus::Failed).map(|m| m.addr).collect();
        if failed.is_empty() {
            return;
        }
        let alive = self
            .members
            .values()
            .filter(|m| !matches!(m.status, MemberStatus::Failed | MemberStatus::Left))
            .count()
            .max(1);
        let p = failed.len() as f64 / alive as f64;
        if (self.rng.next_u64() as f64 / u64::MAX as f64) > p {
            return;
        }
        let addr = failed[self.rng.below(failed.len())];
        tracing::info!("serf: attempting reconnect to {addr}");
        self.ops.push(MlOp::Join(addr));
    }
}

impl Delegate for Inner {
    fn node_meta(&mut self) -> Vec<u8> {
        sw::encode_tags(&self.config.tags)
    }

    fn notify_msg(&mut self, msg: &[u8], now: Instant) {
        let Some((&t, body)) = msg.split_first() else { return };
        let rebroadcast = match t {
            sw::LEAVE => match msgpack::decode::<sw::Leave>(body) {
                Ok(l) => self.handle_leave_intent(&l, now).then_some(&mut self.intents),
                Err(_) => None,
            },
            sw::JOIN => match msgpack::decode::<sw::Join>(body) {
                Ok(j) => self.handle_join_intent(&j, now).then_some(&mut self.intents),
                Err(_) => None,
            },
            sw::USER_EVENT => match msgpack::decode::<sw::MessageUserEvent>(body) {
                Ok(e) => self.handle_user_event(&e, now).then_some(&mut self.events_q),
                Err(_) => None,
            },
            sw::QUERY => match msgpack::decode::<sw::Query>(body) {
                Ok(q) => self.handle_query(&q, now).then_some(&mut self.queries_q),
                Err(_) => None,
            },
            sw::QUERY_RESPONSE => {
                if let Ok(r) = msgpack::decode::<sw::QueryResponse>(body) {
                    self.handle_query_response(r, now);
                }
                None
            }
            sw::RELAY => {
                let mut d = msgpack::Dec::new(body);
                if let Ok(h) = <sw::RelayHeader as msgpack::Wire>::decode(&mut d) {
                    if let Some(to) = crate::wire::socket_addr(&h.dest_addr.ip, h.dest_addr.port.clamp(0, 65535) as u16)
                    {
                        self.ops.push(MlOp::Send(to, d.rest().to_vec()));
                    }
                }
                None
            }
            _ => {
                tracing::debug!("serf: unknown message type {t}");
                None
            }
        };
        if let Some(q) = rebroadcast {
            q.push(None, msg.to_vec());
        }
    }

    fn get_broadcasts(&mut self, overhead: usize, limit: usize) -> Vec<Vec<u8>> {
        let tx = self.retransmit();
        let mut out = self.intents.take(overhead, limit, tx);
        for q in [&mut self.queries_q, &mut self.events_q] {
            let used: usize = out.iter().map(|m| m.len() + overhead).sum();
            if used >= limit {
                break;
            }
            out.extend(q.take(overhead, limit - used, tx));
        }
        out
    }

    fn local_state(&mut self, _join: bool) -> Vec<u8> {
        let pp = sw::PushPull {
            ltime: self.clock.time(),
            status_ltimes: self.members.values().map(|m| (m.name.clone(), m.status_ltime)).collect(),
            left_members: self
                .members
                .values()
                .filter(|m| m.status == MemberStatus::Left)
                .map(|m| m.name.clone())
                .collect(),
            event_ltime: self.event_clock.time(),
            events: self.event_buf.clone(),
            query_ltime: self.query_clock.time(),
        };
        sw::encode(sw::PUSH_PULL, &pp)
    }

    fn merge_remote_state(&mut self, buf: &[u8], join: bool, now: Instant) {
        let Some((&sw::PUSH_PULL, body)) = buf.split_first() else { return };
        let Ok(pp) = msgpack::decode::<sw::PushPull>(body) else {
            tracing::warn!("serf: failed to decode remote state");
            return;
        };
        if pp.ltime > 0 {
            self.clock.witness(pp.ltime - 1);
        }
        if pp.event_ltime > 0 {
            self.event_clock.witness(pp.event_ltime - 1);
        }
        if pp.query_ltime > 0 {
            self.query_clock.witness(pp.query_ltime - 1);
        }
        let left: HashSet<&String> = pp.left_members.iter().collect();
        for name in &pp.left_members {
            let lt = pp.status_ltimes.get(name).copied().unwrap_or(0);
            self.handle_leave_intent(&sw::Leave { ltime: lt + 1, node: name.clone(), prune: false }, now);
        }
        for (name, lt) in &pp.status_ltimes {
            if !left.contains(name) {
                self.handle_join_intent(&sw::Join { ltime: *lt, node: name.clone() }, now);
            }
        }
        if join && self.event_join_ignore {
            self.event_min_time = self.event_min_time.max(pp.event_ltime);
        }
        for slot in pp.events.into_iter().flatten() {
            for e in slot.events {
                let m = sw::MessageUserEvent { ltime: slot.ltime, name: e.name, payload: e.payload, cc: false };
                self.handle_user_event(&m, now);
            }
        }
    }

    fn notify_join(&mut self, node: &Node, now: Instant) {
        let fresh = Member::from_node(node);
        let m = match self.members.get_mut(&node.name) {
            Some(m) => {
                m.status = MemberStatus::Alive;
                m.leave_time = None;
                m.addr = fresh.addr;
                m.tags = fresh.tags;
                m.protocol = fresh.protocol;
                m.delegate = fresh.delegate;
                m.clone()
            }
            None => {
                let mut m = fresh;
                if let Some(i) = self.recent_intents.remove(&node.name) {
                    m.status_ltime = i.ltime;
                    if i.kind == IntentKind::Leave {
                        m.status = MemberStatus::Leaving;
                    }
                }
                self.members.insert(node.name.clone(), m.clone());
                m
            }
        };
        let _ = now;
        tracing::info!("serf: EventMemberJoin: {} {}", m.name, m.addr.ip());
        self.emit(Event::MemberJoin(m));
    }

    fn notify_leave(&mut self, node: &Node, now: Instant) {
        let Some(m) = self.members.get_mut(&node.name) else { return };
        let ev = match m.status {
            MemberStatus::Leaving => {
                m.status = MemberStatus::Left;
                m.leave_time = Some(now);
                Event::MemberLeave(m.clone())
            }
            MemberStatus::Alive => {
                m.status = MemberStatus::Failed;
                m.leave_time = Some(now);
                Event::MemberFailed(m.clone())
            }
            _ => return,
        };
        match &ev {
            Event::MemberLeave(m) => tracing::info!("serf: EventMemberLeave: {} {}", m.name, m.addr.ip()),
            Event::MemberFailed(m) => tracing::info!("serf: EventMemberFailed: {} {}", m.name, m.addr.ip()),
            _ => {}
        }
        self.emit(ev);
    }

    fn notify_update(&mut self, node: &Node, _now: Instant) {
        let fresh = Member::from_node(node);
        let Some(m) = self.members.get_mut(&node.name) else { return };
        m.addr = fresh.addr;
        m.tags = fresh.tags;
        m.protocol = fresh.protocol;
        m.delegate = fresh.delegate;
        let m = m.clone();
        tracing::info!("serf: EventMemberUpdate: {}", m.name);
        self.emit(Event::MemberUpdate(m));
    }

    fn notify_conflict(&mut self, existing: &Node, other: &Node, _now: Instant) {
        if existing.name != self.name {
            tracing::warn!(
                "serf: name conflict for '{}' both {} and {} are claiming",
                existing.name,
                existing.addr,
                other.addr
            );
            return;
        }
        if self.config.enable_name_conflict_resolution {
            self.start_conflict = Some(other.addr.to_string());
        }
    }

    fn ack_payload(&mut self) -> Vec<u8> {
        if self.config.disable_coordinates {
            return Vec::new();
        }
        self.coord.coordinate().to_payload()
    }

    fn notify_ping_complete(&mut self, node: &Node, rtt: Duration, payload: &[u8], _now: Instant) {
        if self.config.disable_coordinates || payload.is_empty() {
            return;
        }
        let Some(c) = Coordinate::from_payload(payload) else { return };
        match self.coord.update(&mut *self.rng, &node.name, &c, rtt) {
            Ok(()) => {
                self.coord_cache.insert(node.name.clone(), c);
                let own = self.coord.coordinate().clone();
                self.coord_cache.insert(self.name.clone(), own);
            }
            Err(e) => tracing::debug!("serf: rejected coordinate from {}: {e}", node.name),
        }
    }
}
