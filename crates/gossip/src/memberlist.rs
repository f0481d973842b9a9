//! memberlist's SWIM with Lifeguard, as a sans-IO state machine.
//!
//! Inputs: packets ([`Memberlist::handle_packet`]), stream messages ([`Memberlist::handle_stream`],
//! [`Memberlist::handle_stream_reply`]) and time ([`Memberlist::tick`]), each with the current
//! `Instant`. Outputs: [`Output`]s (packets to send, streams to open) drained by the driver, and
//! calls into the [`Delegate`] (Serf) for membership changes, user messages and broadcasts.
//!
//! Facts (timings, formulas, message shapes) are in docs/gossip-facts/memberlist.md.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::broadcast::{self, Queue};
use crate::env::Rng;
use crate::keyring::{self, Keyring};
use crate::msgpack::{self, Bytes, Error as DecodeError};
use crate::wire::{self, Message};

/// What a node is to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Alive,
    Suspect,
    Dead,
    Left,
}

impl State {
    fn wire(self) -> u8 {
        match self {
            State::Alive => wire::STATE_ALIVE,
            State::Suspect => wire::STATE_SUSPECT,
            State::Dead => wire::STATE_DEAD,
            State::Left => wire::STATE_LEFT,
        }
    }
}

/// A member as memberlist knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub addr: SocketAddr,
    pub meta: Vec<u8>,
    pub incarnation: u32,
    pub state: State,
    pub state_change: Instant,
    /// `[pmin, pmax, pcur, dmin, dmax, dcur]`
    pub vsn: [u8; 6],
}

impl Node {
    pub fn is_alive(&self) -> bool {
        self.state == State::Alive
    }
    fn pmax(&self) -> u8 {
        self.vsn[1]
    }
}

fn vsn_array(b: &[u8]) -> [u8; 6] {
    let mut v = [0u8; 6];
    for (i, x) in b.iter().take(6).enumerate() {
        v[i] = *x;
    }
    v
}

/// memberlist's tunables (LAN defaults; [`Config::wan`] for the WAN profile).
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    /// The address others reach us at (the advertise address).
    pub addr: SocketAddr,
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    pub suspicion_mult: u32,
    pub suspicion_max_timeout_mult: u32,
    pub retransmit_mult: u32,
    pub gossip_interval: Duration,
    pub gossip_nodes: usize,
    pub gossip_to_the_dead_time: Duration,
    pub push_pull_interval: Duration,
    pub tcp_timeout: Duration,
    pub indirect_checks: usize,
    pub awareness_max_multiplier: u32,
    pub dead_node_reclaim_time: Duration,
    pub enable_compression: bool,
    pub disable_tcp_pings: bool,
    pub label: String,
    pub gossip_verify_incoming: bool,
    pub gossip_verify_outgoing: bool,
    /// memberlist protocol: what we speak (min, max, current).
    pub protocol: [u8; 3],
    /// The delegate's (Serf's) protocol versions: min, max, current.
    pub delegate_protocol: [u8; 3],
    /// Lifeguard's refinements (local health awareness, nacks, dynamic suspicion timeouts). Off is
    /// plain SWIM with a fixed suspicion timeout, for comparison in the simulation.
    pub lifeguard: bool,
    /// Cairn's addition to memberlist: a suspicion that runs out without the confirmations
    /// Lifeguard waits for is checked with the suspect itself (a push/pull over TCP) before it is
    /// declared dead. See [`Memberlist::suspicion_expired`].
    pub suspect_check: bool,
}

impl Config {
    pub fn lan(name: &str, addr: SocketAddr) -> Config {
        Config {
            name: name.to_string(),
            addr,
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            suspicion_mult: 4,
            suspicion_max_timeout_mult: 6,
            retransmit_mult: 4,
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            gossip_to_the_dead_time: Duration::from_secs(30),
            push_pull_interval: Duration::from_secs(30),
            tcp_timeout: Duration::from_secs(10),
            indirect_checks: 3,
            awareness_max_multiplier: 8,
            dead_node_reclaim_time: Duration::ZERO,
            enable_compression: true,
            disable_tcp_pings: false,
            label: String::new(),
            gossip_verify_incoming: true,
            gossip_verify_outgoing: true,
            protocol: [1, 5, 2],
            delegate_protocol: [2, 5, 4],
            lifeguard: true,
            suspect_check: true,
        }
    }

    pub fn wan(name: &str, addr: SocketAddr) -> Config {
        Config {
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
            suspicion_mult: 6,
            gossip_interval: Duration::from_millis(500),
            gossip_nodes: 4,
            gossip_to_the_dead_time: Duration::from_secs(60),
            push_pull_interval: Duration::from_secs(60),
            tcp_timeout: Duration::from_secs(30),
            ..Config::lan(name, addr)
        }
    }

    fn vsn(&self) -> Bytes {
        let p = self.protocol;
        let d = self.delegate_protocol;
        Bytes(vec![p[0], p[1], p[2], d[0], d[1], d[2]])
    }
}

/// The layer above (Serf) as memberlist sees it.
pub trait Delegate {
    /// Our node meta (at most [`wire::META_MAX`] bytes).
    fn node_meta(&mut self) -> Vec<u8>;
    /// A user message arrived (by packet or stream).
    fn notify_msg(&mut self, msg: &[u8], now: Instant);
    /// Broadcasts to piggy-back, each costing `overhead` more, within `limit` bytes.
    fn get_broadcasts(&mut self, overhead: usize, limit: usize) -> Vec<Vec<u8>>;
    /// The user state of a push/pull.
    fn local_state(&mut self, join: bool) -> Vec<u8>;
    fn merge_remote_state(&mut self, buf: &[u8], join: bool, now: Instant);
    fn notify_join(&mut self, node: &Node, now: Instant);
    fn notify_leave(&mut self, node: &Node, now: Instant);
    fn notify_update(&mut self, node: &Node, now: Instant);
    /// Another node claims our name (or a known name) from another address.
    fn notify_conflict(&mut self, existing: &Node, other: &Node, now: Instant);
    /// The payload of our acks (Serf: our Vivaldi coordinate).
    fn ack_payload(&mut self) -> Vec<u8>;
    /// A probe of `node` was answered after `rtt` with `payload`.
    fn notify_ping_complete(&mut self, node: &Node, rtt: Duration, payload: &[u8], now: Instant);
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this datagram.
    Packet { to: SocketAddr, data: Vec<u8> },
    /// Open a stream to `to`, write `data`, read the reply into
    /// [`Memberlist::handle_stream_reply`] with `token` (or report [`Memberlist::stream_failed`]).
    Stream { to: SocketAddr, data: Vec<u8>, token: u64, kind: StreamKind, deadline: Instant },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    PushPull {
        join: bool,
    },
    Ping {
        seq: u32,
    },
    /// A one-way user message (no reply expected).
    User,
    /// A push/pull with a suspect whose suspicion ran out unconfirmed: an answer withdraws the
    /// suspicion, a failure declares it dead.
    SuspectCheck,
}

/// What became of an incoming stream so far.
#[derive(Debug, PartialEq)]
pub enum StreamStep {
    /// Read more bytes and call again with all of them.
    NeedMore,
    /// Write this reply, then close.
    Reply(Vec<u8>),
    /// Close the stream (after an error, or when nothing is to be said).
    Close,
    /// A reply to our stream was read and applied.
    Done,
}

#[derive(Debug, Clone)]
enum AckWait {
    /// Our own probe of `target`.
    Probe { target: String, sent: Instant, acked: bool, nacks: u32, expected_nacks: u32, indirect_sent: bool },
    /// A ping we sent on behalf of `requester`, who used sequence number `seq`.
    Relay { requester: SocketAddr, seq: u32, nack: bool, nack_at: Instant },
}

#[derive(Debug, Clone)]
struct Suspicion {
    start: Instant,
    min: Duration,
    max: Duration,
    /// Confirmations expected.
    k: u32,
    from: Vec<String>,
    deadline: Instant,
    /// A push/pull with the suspect is under way (it ran out unconfirmed); `deadline` is then
    /// the end of that check.
    checking: bool,
    /// The stream token of that check: only its own answer or failure settles it.
    check_token: u64,
}

impl Suspicion {
    /// Lifeguard expected confirmations from other members and did not get them all.
    fn unconfirmed(&self) -> bool {
        self.k > 0 && (self.from.len().saturating_sub(1) as u32) < self.k
    }

    /// Lifeguard's dynamic timeout: from `max` down to `min` as independent confirmations arrive.
    fn timeout(&self) -> Duration {
        let n = self.from.len().saturating_sub(1) as f64; // the first accuser is not a confirmation
        if self.k == 0 {
            return self.min;
        }
        let frac = (n + 1.0).ln() / (self.k as f64 + 1.0).ln();
        let raw = self.max.as_secs_f64() - frac * (self.max.as_secs_f64() - self.min.as_secs_f64());
        let ms = (raw * 1000.0).floor().max(self.min.as_millis() as f64);
        Duration::from_millis(ms as u64)
    }
}

/// Counters for what was dropped, exposed as metrics by the driver.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub packets_in: u64,
    pub packets_bad: u64,
    pub packets_unauthenticated: u64,
    pub streams_bad: u64,
    /// Probes that failed and made us suspect their target.
    pub suspicions_raised: u64,
    /// Suspicions of ours that ran out: we declared the node dead.
    pub deaths_declared: u64,
    /// Suspicions that ran out unconfirmed and were checked with the suspect itself.
    pub suspects_checked: u64,
    /// Of those, the suspects that answered, so the suspicion was withdrawn.
    pub suspicions_withdrawn: u64,
    pub bytes_out: u64,
    pub packets_out: u64,
}

/// The probe in flight.
#[derive(Debug, Clone)]
struct Probe {
    seq: u32,
    /// When to give up on a direct ack and ask others.
    indirect_at: Instant,
    /// When the probe ends (one probe interval).
    end_at: Instant,
}

pub struct Memberlist {
    pub config: Config,
    keyring: Option<Keyring>,
    incarnation: u32,
    nodes: Vec<Node>,
    index: HashMap<String, usize>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Nodes in state Alive (kept as states change; read on every packet).
    alive_count: usize,
    probe_index: usize,
    seq: u32,
    awareness: u32,
    // Ordered maps where the core iterates, so a seeded run replays exactly (the simulation).
    acks: BTreeMap<u32, AckWait>,
    probe: Option<Probe>,
    suspicions: BTreeMap<String, Suspicion>,
    broadcasts: Queue,
    next_probe: Instant,
    next_gossip: Instant,
    next_push_pull: Instant,
    next_token: u64,
    out: VecDeque<Output>,
    leaving: bool,
    rng: Box<dyn Rng>,
    pub stats: Stats,
}

impl std::fmt::Debug for Memberlist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memberlist").field("name", &self.config.name).field("nodes", &self.nodes.len()).finish()
    }
}

/// Packets smaller than this are not worth an LZW attempt.
const COMPRESS_MIN: usize = 256;

/// The overhead a CRC adds.
const CRC_OVERHEAD: usize = 5;

impl Memberlist {
    pub fn new(config: Config, keyring: Option<Keyring>, mut rng: Box<dyn Rng>, now: Instant) -> Memberlist {
        // memberlist starts each ticker after a random stagger, so a pool's members do not probe
        // and gossip in lock-step.
        let mut stagger = |d: Duration| d.mul_f64((rng.next_u64() % 10_000) as f64 / 10_000.0);
        let (p, g, pp) =
            (stagger(config.probe_interval), stagger(config.gossip_interval), stagger(config.push_pull_interval));
        Memberlist {
            keyring: keyring.filter(|k| !k.is_empty()),
            incarnation: 0,
            nodes: Vec::new(),
            index: HashMap::new(),
            by_addr: HashMap::new(),
            alive_count: 0,
            probe_index: 0,
            seq: 0,
            awareness: 0,
            acks: BTreeMap::new(),
            probe: None,
            suspicions: BTreeMap::new(),
            broadcasts: Queue::new(0),
            next_probe: now + p,
            next_gossip: now + g,
            next_push_pull: now + pp,
            next_token: 0,
            out: VecDeque::new(),
            leaving: false,
            rng,
            stats: Stats::default(),
            config,
        }
    }

    /// Puts ourselves in the member list and announces us.
    pub fn start(&mut self, d: &mut dyn Delegate, now: Instant) {
        self.incarnation = self.incarnation.wrapping_add(1);
        let a = wire::Alive {
            incarnation: self.incarnation,
            node: self.config.name.clone(),
            addr: wire::ip_bytes(self.config.addr.ip()),
            port: self.config.addr.port(),
            meta: Bytes(d.node_meta()),
            vsn: self.config.vsn(),
        };
        self.alive_node(d, a, true, now);
    }

    pub fn keyring(&self) -> Option<&Keyring> {
        self.keyring.as_ref()
    }

    pub fn keyring_mut(&mut self) -> Option<&mut Keyring> {
        self.keyring.as_mut()
    }

    pub fn set_keyring(&mut self, k: Option<Keyring>) {
        self.keyring = k.filter(|k| !k.is_empty());
    }

    pub fn members(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.index.get(name).map(|i| &self.nodes[*i])
    }

    pub fn local(&self) -> Option<&Node> {
        self.node(&self.config.name)
    }

    pub fn num_alive(&self) -> usize {
        self.alive_count
    }

    /// Sets a node's state, keeping the alive count.
    fn set_state(&mut self, idx: usize, st: State, now: Instant) {
        let n = &mut self.nodes[idx];
        if n.state == st {
            return;
        }
        if n.state == State::Alive {
            self.alive_count -= 1;
        }
        if st == State::Alive {
            self.alive_count += 1;
        }
        n.state = st;
        n.state_change = now;
    }

    /// Lifeguard's local health score (0 is healthy).
    pub fn health_score(&self) -> u32 {
        self.awareness
    }

    pub fn drain_output(&mut self) -> impl Iterator<Item = Output> + '_ {
        self.out.drain(..)
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    pub fn pending_broadcasts(&self) -> usize {
        self.broadcasts.len()
    }

    fn scale(&self, d: Duration) -> Duration {
        d * (self.awareness + 1)
    }

    fn apply_awareness(&mut self, delta: i32) {
        if !self.config.lifeguard {
            return;
        }
        let max = self.config.awareness_max_multiplier.saturating_sub(1);
        self.awareness = (self.awareness as i64 + delta as i64).clamp(0, max as i64) as u32;
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    // ---- timers ----------------------------------------------------------------------------

    /// The next instant [`Memberlist::tick`] has work.
    pub fn next_deadline(&self) -> Instant {
        let mut t = self.next_probe.min(self.next_gossip).min(self.next_push_pull);
        if let Some(p) = &self.probe {
            // Once the indirect probes are out, only the end of the probe is a deadline (a past
            // `indirect_at` would make the driver spin).
            let indirect_pending = matches!(self.acks.get(&p.seq), Some(AckWait::Probe { indirect_sent: false, .. }));
            if indirect_pending {
                t = t.min(p.indirect_at);
            }
            t = t.min(p.end_at);
        }
        for s in self.suspicions.values() {
            t = t.min(s.deadline);
        }
        for a in self.acks.values() {
            if let AckWait::Relay { nack: true, nack_at, .. } = a {
                t = t.min(*nack_at);
            }
        }
        t
    }

    /// Runs every timer that is due.
    pub fn tick(&mut self, d: &mut dyn Delegate, now: Instant) {
        self.check_probe(d, now);
        if now >= self.next_probe {
            self.next_probe = now + self.scale(self.config.probe_interval);
            if self.probe.is_none() {
                self.start_probe(d, now);
            }
        }
        if now >= self.next_gossip {
            self.next_gossip = now + self.config.gossip_interval;
            self.gossip(d, now);
        }
        if now >= self.next_push_pull {
            self.next_push_pull = now + self.push_pull_interval();
            self.periodic_push_pull(d, now);
        }
        let expired: Vec<String> =
            self.suspicions.iter().filter(|(_, s)| now >= s.deadline).map(|(n, _)| n.clone()).collect();
        for name in expired {
            self.suspicion_expired(d, &name, now);
        }
        let mut nacks = Vec::new();
        self.acks.retain(|_, a| match a {
            AckWait::Relay { requester, seq, nack, nack_at } if now >= *nack_at => {
                if *nack {
                    nacks.push((*requester, *seq));
                }
                false
            }
            _ => true,
        });
        for (to, seq) in nacks {
            self.send_msg(d, to, Message::Nack(wire::Nack { seq_no: seq }), None, now);
        }
    }

    /// Push/pull less often in big clusters: memberlist's `pushPullScale` (above 32 nodes, one more
    /// interval per doubling).
    fn push_pull_interval(&self) -> Duration {
        let n = self.num_alive();
        let base = self.config.push_pull_interval;
        if n <= 32 {
            return base;
        }
        let mult = ((n as f64).log2() - 32f64.log2()).ceil() as u32 + 1;
        base * mult
    }

    // ---- sending ---------------------------------------------------------------------------

    /// Frames a packet for `to_node` (its protocol decides the CRC): compression, CRC, encryption,
    /// label.
    fn frame_packet(&mut self, msg: Vec<u8>, pmax: u8) -> Vec<u8> {
        let mut msg = msg;
        // memberlist tries compression on every packet and keeps it when smaller; below a few
        // hundred bytes LZW never wins, so small packets skip the attempt (receivers accept both).
        if self.config.enable_compression && msg.len() >= COMPRESS_MIN {
            let c = wire::compress(&msg);
            if c.len() < msg.len() {
                msg = c;
            }
        }
        if pmax >= 5 {
            msg = wire::add_crc(&msg);
        }
        if let Some(k) = self.keyring.as_ref().filter(|_| self.config.gossip_verify_outgoing) {
            let mut nonce = [0u8; keyring::NONCE_SIZE];
            self.rng.fill(&mut nonce);
            if let Some(enc) = k.encrypt(1, nonce, &msg, self.config.label.as_bytes()) {
                msg = enc;
            }
        }
        let mut out = wire::label_header(&self.config.label);
        out.extend_from_slice(&msg);
        self.stats.bytes_out += out.len() as u64;
        self.stats.packets_out += 1;
        out
    }

    fn pmax_of(&self, to: SocketAddr) -> u8 {
        self.by_addr.get(&to).map(|i| self.nodes[*i].pmax()).unwrap_or(0)
    }

    fn packet_budget(&self) -> usize {
        let mut b = wire::UDP_BUDGET - CRC_OVERHEAD - wire::COMPOUND_HEADER;
        if self.keyring.is_some() {
            b -= keyring::OVERHEAD;
        }
        b.saturating_sub(wire::label_header(&self.config.label).len())
    }

    /// Sends one message, piggy-backing what broadcasts fit, optionally with an extra message.
    fn send_msg(&mut self, d: &mut dyn Delegate, to: SocketAddr, msg: Message, extra: Option<Message>, _now: Instant) {
        let mut parts = vec![msg.encode()];
        if let Some(x) = extra {
            parts.push(x.encode());
        }
        let used: usize = parts.iter().map(|p| p.len() + wire::COMPOUND_OVERHEAD).sum();
        let avail = self.packet_budget().saturating_sub(used);
        parts.extend(self.get_broadcasts(d, wire::COMPOUND_OVERHEAD, avail));
        let data =
            if parts.len() == 1 { parts.pop().unwrap_or_default() } else { wire::make_compounds(&parts).remove(0) };
        let pmax = self.pmax_of(to);
        let data = self.frame_packet(data, pmax);
        self.out.push_back(Output::Packet { to, data });
    }

    fn get_broadcasts(&mut self, d: &mut dyn Delegate, overhead: usize, limit: usize) -> Vec<Vec<u8>> {
        let limit_tx = broadcast::retransmit_limit(self.config.retransmit_mult, self.nodes.len());
        let mut out = self.broadcasts.take(overhead, limit, limit_tx);
        let used: usize = out.iter().map(|m| m.len() + overhead).sum();
        if limit > used {
            for m in d.get_broadcasts(overhead + 1, limit - used) {
                let mut v = Vec::with_capacity(m.len() + 1);
                v.push(wire::USER);
                v.extend_from_slice(&m);
                out.push(v);
            }
        }
        out
    }

    fn queue_broadcast(&mut self, node: &str, msg: Message) {
        self.broadcasts.push(Some(node.to_string()), msg.encode());
    }

    /// Sends a user message to `to` by UDP (memberlist's `SendBestEffort`/`SendToAddress`).
    pub fn send_user_packet(&mut self, to: SocketAddr, payload: &[u8]) {
        let mut msg = vec![wire::USER];
        msg.extend_from_slice(payload);
        let pmax = self.pmax_of(to);
        let data = self.frame_packet(msg, pmax);
        self.out.push_back(Output::Packet { to, data });
    }

    /// Sends a user message over a stream (memberlist's `SendReliable`).
    pub fn send_user_stream(&mut self, to: SocketAddr, payload: &[u8], now: Instant) {
        let mut e = msgpack::Enc::new();
        e.buf.push(wire::USER);
        msgpack::Wire::encode(&wire::UserMsgHeader { user_msg_len: payload.len() as i64 }, &mut e);
        e.buf.extend_from_slice(payload);
        let data = self.frame_stream(e.into_vec(), true);
        let token = self.token();
        let deadline = now + self.config.tcp_timeout;
        self.out.push_back(Output::Stream { to, data, token, kind: StreamKind::User, deadline });
    }

    fn gossip(&mut self, d: &mut dyn Delegate, now: Instant) {
        let dead_window = self.config.gossip_to_the_dead_time;
        let me = self.index.get(&self.config.name).copied();
        let eligible = |i: usize, n: &Node| {
            Some(i) != me
                && match n.state {
                    State::Alive | State::Suspect => true,
                    State::Dead => now.saturating_duration_since(n.state_change) <= dead_window,
                    State::Left => false,
                }
        };
        let k = self.config.gossip_nodes;
        let mut cands: Vec<usize> = Vec::with_capacity(k);
        if self.nodes.len() <= 64 {
            cands.extend((0..self.nodes.len()).filter(|i| eligible(*i, &self.nodes[*i])));
            crate::env::shuffle(&mut *self.rng, &mut cands);
            cands.truncate(k);
        } else {
            // Large pools: sample instead of scanning every node on every gossip round.
            for _ in 0..8 * k {
                if cands.len() >= k {
                    break;
                }
                let i = self.rng.below(self.nodes.len());
                if eligible(i, &self.nodes[i]) && !cands.contains(&i) {
                    cands.push(i);
                }
            }
        }
        let budget = self.packet_budget();
        for i in cands {
            let (addr, pmax) = (self.nodes[i].addr, self.nodes[i].pmax());
            let msgs = self.get_broadcasts(d, wire::COMPOUND_OVERHEAD, budget);
            if msgs.is_empty() {
                return;
            }
            let data = if msgs.len() == 1 {
                msgs.into_iter().next().unwrap_or_default()
            } else {
                wire::make_compounds(&msgs).remove(0)
            };
            let data = self.frame_packet(data, pmax);
            self.out.push_back(Output::Packet { to: addr, data });
        }
    }

    // ---- probing ---------------------------------------------------------------------------

    fn start_probe(&mut self, d: &mut dyn Delegate, now: Instant) {
        let n = self.nodes.len();
        let mut checked = 0;
        let target = loop {
            if checked >= n {
                return;
            }
            if self.probe_index >= self.nodes.len() {
                self.reset_nodes(now);
                self.probe_index = 0;
                checked += 1;
                continue;
            }
            let node = &self.nodes[self.probe_index];
            self.probe_index += 1;
            checked += 1;
            if node.name == self.config.name || matches!(node.state, State::Dead | State::Left) {
                continue;
            }
            break node.clone();
        };
        let seq = self.next_seq();
        let ping = wire::Ping {
            seq_no: seq,
            node: target.name.clone(),
            source_addr: wire::ip_bytes(self.config.addr.ip()),
            source_port: self.config.addr.port(),
            source_node: self.config.name.clone(),
        };
        let interval = self.scale(self.config.probe_interval);
        // Lifeguard scales the probe interval, not the timeout.
        let timeout = self.config.probe_timeout;
        self.acks.insert(
            seq,
            AckWait::Probe {
                target: target.name.clone(),
                sent: now,
                acked: false,
                nacks: 0,
                expected_nacks: 0,
                indirect_sent: false,
            },
        );
        self.probe = Some(Probe { seq, indirect_at: now + timeout, end_at: now + interval });
        let extra = if target.state == State::Suspect {
            // Tell a suspect node it is suspected so it can refute.
            Some(Message::Suspect(wire::Suspect {
                incarnation: target.incarnation,
                node: target.name.clone(),
                from: self.config.name.clone(),
            }))
        } else {
            None
        };
        self.send_msg(d, target.addr, Message::Ping(ping), extra, now);
    }

    /// Drops dead nodes past the gossip-to-the-dead window and reshuffles the probe order.
    fn reset_nodes(&mut self, now: Instant) {
        let window = self.config.gossip_to_the_dead_time;
        let me = self.config.name.clone();
        self.nodes.retain(|n| {
            n.name == me
                || !matches!(n.state, State::Dead | State::Left)
                || now.saturating_duration_since(n.state_change) <= window
        });
        crate::env::shuffle(&mut *self.rng, &mut self.nodes);
        self.reindex();
    }

    fn reindex(&mut self) {
        self.index = self.nodes.iter().enumerate().map(|(i, n)| (n.name.clone(), i)).collect();
        self.by_addr = self.nodes.iter().enumerate().map(|(i, n)| (n.addr, i)).collect();
        self.alive_count = self.nodes.iter().filter(|n| n.state == State::Alive).count();
    }

    /// Updates the indexes of the nodes at `a` and `b` (after a swap).
    fn reindex_at(&mut self, a: usize, b: usize) {
        for i in [a, b] {
            let n = &self.nodes[i];
            self.index.insert(n.name.clone(), i);
            self.by_addr.insert(n.addr, i);
        }
    }

    fn check_probe(&mut self, d: &mut dyn Delegate, now: Instant) {
        let Some(p) = self.probe.clone() else { return };
        let Some(AckWait::Probe { target, acked, nacks, expected_nacks, indirect_sent, .. }) =
            self.acks.get(&p.seq).cloned()
        else {
            self.probe = None;
            return;
        };
        if acked {
            self.acks.remove(&p.seq);
            self.probe = None;
            self.apply_awareness(-1);
            return;
        }
        if now >= p.indirect_at && !indirect_sent {
            let expected = self.send_indirect(d, &target, p.seq, now);
            if let Some(AckWait::Probe { indirect_sent, expected_nacks, .. }) = self.acks.get_mut(&p.seq) {
                *indirect_sent = true;
                *expected_nacks = expected;
            }
        }
        if now >= p.end_at {
            self.acks.remove(&p.seq);
            self.probe = None;
            // Lifeguard: missing nacks mean our own links may be the problem.
            let delta = if expected_nacks > 0 { expected_nacks.saturating_sub(nacks) as i32 } else { 1 };
            self.apply_awareness(delta);
            if let Some(n) = self.node(&target).cloned() {
                if n.state == State::Alive || n.state == State::Suspect {
                    self.stats.suspicions_raised += 1;
                    let s = wire::Suspect {
                        incarnation: n.incarnation,
                        node: n.name.clone(),
                        from: self.config.name.clone(),
                    };
                    self.suspect_node(d, s, now);
                }
            }
        }
    }

    /// Asks up to `indirect_checks` other nodes to ping `target`, and pings it over TCP too.
    /// Returns how many nacks to expect.
    fn send_indirect(&mut self, d: &mut dyn Delegate, target: &str, seq: u32, now: Instant) -> u32 {
        let Some(t) = self.node(target).cloned() else { return 0 };
        let me = self.config.name.clone();
        let mut peers: Vec<Node> = self
            .nodes
            .iter()
            .filter(|n| n.name != me && n.name != target && n.state == State::Alive)
            .cloned()
            .collect();
        crate::env::shuffle(&mut *self.rng, &mut peers);
        peers.truncate(self.config.indirect_checks);
        let mut expected = 0;
        for p in &peers {
            let nack = p.pmax() >= 4 && self.config.lifeguard;
            if nack {
                expected += 1;
            }
            let req = wire::IndirectPing {
                seq_no: seq,
                target: wire::ip_bytes(t.addr.ip()),
                port: t.addr.port(),
                node: t.name.clone(),
                nack,
                source_addr: wire::ip_bytes(self.config.addr.ip()),
                source_port: self.config.addr.port(),
                source_node: me.clone(),
            };
            self.send_msg(d, p.addr, Message::IndirectPing(req), None, now);
        }
        if !self.config.disable_tcp_pings && t.pmax() >= 3 {
            let ping = wire::Ping {
                seq_no: seq,
                node: t.name.clone(),
                source_addr: wire::ip_bytes(self.config.addr.ip()),
                source_port: self.config.addr.port(),
                source_node: me,
            };
            let data = self.frame_stream(Message::Ping(ping).encode(), true);
            let token = self.token();
            let deadline = self.probe.as_ref().map(|p| p.end_at).unwrap_or(now + self.config.probe_interval);
            self.out.push_back(Output::Stream { to: t.addr, data, token, kind: StreamKind::Ping { seq }, deadline });
        }
        expected
    }

    fn handle_ack(&mut self, d: &mut dyn Delegate, ack: wire::Ack, now: Instant) {
        match self.acks.get_mut(&ack.seq_no) {
            Some(AckWait::Probe { target, sent, acked, .. }) => {
                if *acked {
                    return;
                }
                *acked = true;
                let rtt = now.saturating_duration_since(*sent);
                let target = target.clone();
                if let Some(n) = self.node(&target).cloned() {
                    d.notify_ping_complete(&n, rtt, &ack.payload, now);
                }
                self.check_probe(d, now);
            }
            Some(AckWait::Relay { requester, seq, .. }) => {
                let (to, seq) = (*requester, *seq);
                self.acks.remove(&ack.seq_no);
                self.send_msg(d, to, Message::Ack(wire::Ack { seq_no: seq, payload: Bytes::default() }), None, now);
            }
            None => {}
        }
    }

    // ---- incoming packets ------------------------------------------------------------------

    /// Unwraps label and encryption. `None` if the packet may not be processed.
    fn open_packet<'a>(&mut self, buf: &'a [u8]) -> Option<std::borrow::Cow<'a, [u8]>> {
        let (label, rest) = wire::strip_label(buf).ok()?;
        if label != self.config.label.as_bytes() {
            return None;
        }
        match &self.keyring {
            Some(k) => match k.decrypt(rest, label) {
                Some(p) => Some(p.into()),
                None if !self.config.gossip_verify_incoming => Some(rest.into()),
                None => {
                    self.stats.packets_unauthenticated += 1;
                    None
                }
            },
            None => Some(rest.into()),
        }
    }

    /// A datagram from `from`.
    pub fn handle_packet(&mut self, d: &mut dyn Delegate, from: SocketAddr, buf: &[u8], now: Instant) {
        self.stats.packets_in += 1;
        let Some(plain) = self.open_packet(buf) else {
            if self.keyring.is_some() {
                tracing::warn!(%from, "memberlist: failed to decrypt packet: No installed keys could decrypt the message");
            }
            return;
        };
        let mut msgs = Vec::new();
        if let Err(e) = wire::decode_message(&plain, &mut msgs) {
            self.stats.packets_bad += 1;
            tracing::debug!(%from, "memberlist: dropping packet: {e}");
            return;
        }
        for m in msgs {
            self.handle_message(d, from, m, now);
        }
    }

    fn handle_message(&mut self, d: &mut dyn Delegate, from: SocketAddr, m: Message, now: Instant) {
        match m {
            Message::Ping(p) => {
                if !p.node.is_empty() && p.node != self.config.name {
                    return;
                }
                let to =
                    wire::socket_addr(&p.source_addr, p.source_port).filter(|_| p.source_port != 0).unwrap_or(from);
                let payload = Bytes(d.ack_payload());
                self.send_msg(d, to, Message::Ack(wire::Ack { seq_no: p.seq_no, payload }), None, now);
            }
            Message::IndirectPing(r) => {
                let Some(target) = wire::socket_addr(&r.target, r.port) else { return };
                let requester =
                    wire::socket_addr(&r.source_addr, r.source_port).filter(|_| r.source_port != 0).unwrap_or(from);
                let seq = self.next_seq();
                self.acks.insert(
                    seq,
                    AckWait::Relay { requester, seq: r.seq_no, nack: r.nack, nack_at: now + self.config.probe_timeout },
                );
                let ping = wire::Ping {
                    seq_no: seq,
                    node: r.node,
                    source_addr: wire::ip_bytes(self.config.addr.ip()),
                    source_port: self.config.addr.port(),
                    source_node: self.config.name.clone(),
                };
                self.send_msg(d, target, Message::Ping(ping), None, now);
            }
            Message::Ack(a) => self.handle_ack(d, a, now),
            Message::Nack(n) => {
                if let Some(AckWait::Probe { nacks, .. }) = self.acks.get_mut(&n.seq_no) {
                    *nacks += 1;
                }
            }
            Message::Suspect(s) => self.suspect_node(d, s, now),
            Message::Alive(a) => {
                // memberlist drops an alive whose address is not usable.
                if wire::ip_from_bytes(&a.addr).is_none() {
                    return;
                }
                self.alive_node(d, a, false, now)
            }
            Message::Dead(x) => self.dead_node(d, x, now),
            Message::User(p) => d.notify_msg(&p, now),
            Message::Err(e) => tracing::debug!(%from, "memberlist: remote error: {}", e.error),
        }
    }

    // ---- state changes ---------------------------------------------------------------------

    fn alive_node(&mut self, d: &mut dyn Delegate, a: wire::Alive, bootstrap: bool, now: Instant) {
        let is_local = a.node == self.config.name;
        if self.leaving && is_local {
            return;
        }
        let Some(addr) = wire::socket_addr(&a.addr, a.port) else { return };
        // The common case in a push/pull merge: news we already have. Same answer as the full
        // path below (no conflict, not new, not newer), without cloning the node.
        if !is_local {
            if let Some(&i) = self.index.get(&a.node) {
                let o = &self.nodes[i];
                if o.incarnation != 0 && o.addr == addr && a.incarnation <= o.incarnation {
                    return;
                }
            }
        }
        let vsn = vsn_array(&a.vsn);
        let idx = match self.index.get(&a.node) {
            Some(i) => *i,
            None => {
                let n = Node {
                    name: a.node.clone(),
                    addr,
                    meta: a.meta.0.clone(),
                    incarnation: 0,
                    state: State::Dead,
                    state_change: now,
                    vsn,
                };
                // Insert at a random position so probe order is not join order.
                self.nodes.push(n);
                let last = self.nodes.len() - 1;
                let j = self.rng.below(last + 1);
                self.nodes.swap(last, j);
                self.reindex_at(last, j);
                j
            }
        };
        let old = self.nodes[idx].clone();
        let is_new =
            old.incarnation == 0 && old.state == State::Dead && !bootstrap && !is_local && old.meta == a.meta.0;
        if old.addr != addr && old.incarnation != 0 {
            // Another node claims this name from another address.
            let can_reclaim = !self.config.dead_node_reclaim_time.is_zero()
                && matches!(old.state, State::Dead | State::Left)
                && now.saturating_duration_since(old.state_change) > self.config.dead_node_reclaim_time;
            if old.state == State::Left || (old.state == State::Dead && can_reclaim) {
                tracing::info!(
                    "memberlist: updating address for left or failed node {} from {} to {}",
                    old.name,
                    old.addr,
                    addr
                );
            } else {
                let other = Node { addr, meta: a.meta.0.clone(), incarnation: a.incarnation, vsn, ..old.clone() };
                tracing::error!("memberlist: conflicting address for {}: mine {}, theirs {}", old.name, old.addr, addr);
                d.notify_conflict(&old, &other, now);
                return;
            }
        }
        if is_local {
            if bootstrap {
                // our own announcement
            } else {
                // Someone gossips about us: refute if it is not what we said.
                if a.incarnation < self.incarnation {
                    return;
                }
                if a.incarnation == self.incarnation && a.meta.0 == old.meta && vsn == old.vsn {
                    return;
                }
                self.refute(d, a.incarnation, now);
                tracing::warn!(
                    "memberlist: refuting an alive message for '{}' (incarnation {})",
                    a.node,
                    a.incarnation
                );
                return;
            }
        } else if a.incarnation <= old.incarnation && !(is_new || old.addr != addr) {
            return;
        }
        self.suspicions.remove(&a.node);
        self.queue_broadcast(&a.node, Message::Alive(a.clone()));
        let n = &mut self.nodes[idx];
        n.incarnation = a.incarnation;
        n.meta = a.meta.0.clone();
        let moved = n.addr != addr;
        n.addr = addr;
        n.vsn = vsn;
        if moved {
            self.by_addr.retain(|_, i| *i != idx);
            self.by_addr.insert(addr, idx);
        }
        self.set_state(idx, State::Alive, now);
        let n = self.nodes[idx].clone();
        if is_local {
            self.incarnation = a.incarnation;
        }
        if matches!(old.state, State::Dead | State::Left) || old.incarnation == 0 {
            d.notify_join(&n, now);
        } else if old.meta != n.meta || old.addr != n.addr {
            d.notify_update(&n, now);
        }
    }

    /// Announces ourselves with an incarnation above `accused`.
    fn refute(&mut self, d: &mut dyn Delegate, accused: u32, now: Instant) {
        let inc = self.incarnation.max(accused).wrapping_add(1);
        self.incarnation = inc;
        // Being accused is a sign our own links are bad (Lifeguard).
        self.apply_awareness(1);
        let meta = d.node_meta();
        let a = wire::Alive {
            incarnation: inc,
            node: self.config.name.clone(),
            addr: wire::ip_bytes(self.config.addr.ip()),
            port: self.config.addr.port(),
            meta: Bytes(meta.clone()),
            vsn: self.config.vsn(),
        };
        if let Some(i) = self.index.get(&self.config.name).copied() {
            let n = &mut self.nodes[i];
            n.incarnation = inc;
            n.meta = meta;
            self.set_state(i, State::Alive, now);
        }
        let name = self.config.name.clone();
        self.queue_broadcast(&name, Message::Alive(a));
    }

    /// Simulation support: enters nodes as alive without gossiping about them, as if the pool had
    /// converged long ago. Not for production paths.
    #[doc(hidden)]
    pub fn seed_alive(&mut self, d: &mut dyn Delegate, nodes: Vec<wire::Alive>, now: Instant) {
        for a in nodes {
            self.alive_node(d, a, false, now);
        }
        self.broadcasts.clear();
    }

    /// Announces new node meta (Serf's tags changed).
    pub fn update_meta(&mut self, d: &mut dyn Delegate, now: Instant) {
        let inc = self.incarnation.wrapping_add(1);
        self.incarnation = inc;
        let a = wire::Alive {
            incarnation: inc,
            node: self.config.name.clone(),
            addr: wire::ip_bytes(self.config.addr.ip()),
            port: self.config.addr.port(),
            meta: Bytes(d.node_meta()),
            vsn: self.config.vsn(),
        };
        if let Some(i) = self.index.get(&self.config.name).copied() {
            self.nodes[i].incarnation = inc;
            self.nodes[i].meta = a.meta.0.clone();
            let n = self.nodes[i].clone();
            d.notify_update(&n, now);
        }
        let name = self.config.name.clone();
        self.queue_broadcast(&name, Message::Alive(a));
    }

    fn suspect_node(&mut self, d: &mut dyn Delegate, s: wire::Suspect, now: Instant) {
        let Some(&idx) = self.index.get(&s.node) else { return };
        let n = self.nodes[idx].clone();
        if s.incarnation < n.incarnation {
            return;
        }
        if let Some(sus) = self.suspicions.get_mut(&s.node) {
            if !sus.from.contains(&s.from) {
                sus.from.push(s.from.clone());
                // While the suspect is being checked, the check's end is the deadline.
                if !sus.checking {
                    let t = sus.timeout();
                    sus.deadline = sus.start + t;
                }
                let key = s.node.clone();
                self.queue_broadcast(&key, Message::Suspect(s));
            }
            return;
        }
        if n.state != State::Alive {
            return;
        }
        if s.node == self.config.name {
            if !self.leaving {
                self.refute(d, s.incarnation, now);
                tracing::warn!("memberlist: refuting a suspect message (from: {})", s.from);
            }
            return;
        }
        self.nodes[idx].incarnation = s.incarnation;
        self.set_state(idx, State::Suspect, now);
        // memberlist counts every node it holds here, dead ones included.
        let alive = self.nodes.len();
        let k = if !self.config.lifeguard
            || alive.saturating_sub(2) < self.config.suspicion_mult.saturating_sub(2) as usize
        {
            0
        } else {
            self.config.suspicion_mult.saturating_sub(2)
        };
        let n_scale = (alive.max(1) as f64).log10().max(1.0);
        let min = self.config.probe_interval.mul_f64(self.config.suspicion_mult as f64 * n_scale);
        let max = min * self.config.suspicion_max_timeout_mult;
        let mut sus = Suspicion {
            start: now,
            min,
            max,
            k,
            from: vec![s.from.clone()],
            deadline: now,
            checking: false,
            check_token: 0,
        };
        sus.deadline = now + sus.timeout();
        self.suspicions.insert(s.node.clone(), sus);
        let key = s.node.clone();
        self.queue_broadcast(&key, Message::Suspect(s));
    }

    /// A suspicion's timer ran out. memberlist declares the node dead here. Cairn first checks a
    /// suspicion that Lifeguard expected confirmations for and did not get them: no other member
    /// found the node unreachable, so the likelier story is that we missed its refutation (an
    /// epidemic broadcast reaches each member with probability about 1 - e^-retransmits, and at
    /// 1,000 nodes a member misses one in 10^7; see docs/benchmarks.md). We push/pull with the
    /// suspect, as a periodic push/pull would: its answer carries its refuted incarnation (and
    /// tells it of the suspicion if it had not heard), and any answer proves it alive. Only a
    /// failed or unanswered check declares it dead, two probe intervals later. A node that is
    /// really down draws confirmations from the others' probes and is declared at once; the wire
    /// is memberlist's, so Go peers see an ordinary push/pull.
    fn suspicion_expired(&mut self, d: &mut dyn Delegate, name: &str, now: Instant) {
        let Some(n) = self.node(name).cloned() else {
            self.suspicions.remove(name);
            return;
        };
        if n.state != State::Suspect {
            self.suspicions.remove(name);
            return;
        }
        let window = self.scale(self.config.probe_interval) * 2;
        if self.suspicions.get(name).is_some_and(|s| self.config.suspect_check && !s.checking && s.unconfirmed()) {
            let token = self.push_pull_kind(d, n.addr, StreamKind::SuspectCheck, now + window);
            let sus = self.suspicions.get_mut(name).expect("suspicion");
            sus.checking = true;
            sus.check_token = token;
            sus.deadline = now + window;
            self.stats.suspects_checked += 1;
            tracing::debug!("memberlist: suspicion of {name} ran out unconfirmed; checking with it directly");
            return;
        }
        self.suspicions.remove(name);
        tracing::info!("memberlist: marking {} as failed, suspect timeout reached", name);
        self.stats.deaths_declared += 1;
        let dead = wire::Dead { incarnation: n.incarnation, node: n.name.clone(), from: self.config.name.clone() };
        self.dead_node(d, dead, now);
    }

    fn dead_node(&mut self, d: &mut dyn Delegate, x: wire::Dead, now: Instant) {
        let Some(&idx) = self.index.get(&x.node) else { return };
        let n = self.nodes[idx].clone();
        if x.incarnation < n.incarnation {
            return;
        }
        self.suspicions.remove(&x.node);
        if matches!(n.state, State::Dead | State::Left) {
            return;
        }
        if x.node == self.config.name && !self.leaving {
            self.refute(d, x.incarnation, now);
            tracing::warn!("memberlist: refuting a dead message (from: {})", x.from);
            return;
        }
        let left = x.node == x.from;
        self.queue_broadcast(&x.node, Message::Dead(x.clone()));
        self.nodes[idx].incarnation = x.incarnation;
        self.set_state(idx, if left { State::Left } else { State::Dead }, now);
        let m = self.nodes[idx].clone();
        d.notify_leave(&m, now);
    }

    /// Leaves gracefully: broadcasts that we are dead, by our own word (= left). The driver waits
    /// for [`Memberlist::leave_sent`] (or a timeout) before shutting down.
    pub fn leave(&mut self, d: &mut dyn Delegate, now: Instant) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        let me = self.config.name.clone();
        if let Some(idx) = self.index.get(&me).copied() {
            let x = wire::Dead { incarnation: self.nodes[idx].incarnation, node: me.clone(), from: me.clone() };
            self.dead_node(d, x, now);
        }
    }

    /// Whether our leave has been gossiped (or there is no one to tell).
    pub fn leave_sent(&self) -> bool {
        self.broadcasts.is_empty() || !self.nodes.iter().any(|n| n.name != self.config.name && n.is_alive())
    }

    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    // ---- streams ---------------------------------------------------------------------------

    /// Frames a stream message: compression, then encryption as `[10][u32 len][payload]` with
    /// the 5-byte header (and the label) as associated data; a label header goes first, in clear.
    fn frame_stream(&mut self, msg: Vec<u8>, dialer: bool) -> Vec<u8> {
        let mut msg = msg;
        if self.config.enable_compression {
            msg = wire::compress(&msg);
        }
        // Only the side that opens a stream sends the label header.
        let mut out = if dialer { wire::label_header(&self.config.label) } else { Vec::new() };
        if let Some(k) = self.keyring.as_ref().filter(|_| self.config.gossip_verify_outgoing) {
            let mut nonce = [0u8; keyring::NONCE_SIZE];
            self.rng.fill(&mut nonce);
            let len = (keyring::OVERHEAD + msg.len()) as u32;
            let mut header = vec![wire::ENCRYPT];
            header.extend_from_slice(&len.to_be_bytes());
            let mut aad = header.clone();
            aad.extend_from_slice(self.config.label.as_bytes());
            if let Some(enc) = k.encrypt(1, nonce, &msg, &aad) {
                out.extend_from_slice(&header);
                out.extend_from_slice(&enc);
                return out;
            }
        }
        out.extend_from_slice(&msg);
        out
    }

    /// Unwraps a stream's label, encryption and compression. `Ok(None)`: need more bytes.
    fn open_stream(&mut self, buf: &[u8], dialed: bool) -> Result<Option<Vec<u8>>, DecodeError> {
        let (label, rest) = if dialed {
            match wire::strip_label(buf) {
                Err(DecodeError::Incomplete) => return Ok(None),
                r => r?,
            }
        } else {
            (self.config.label.as_bytes(), buf)
        };
        if label != self.config.label.as_bytes() {
            return Err(DecodeError::Invalid("label mismatch"));
        }
        let label = label.to_vec();
        let Some(&first) = rest.first() else { return Ok(None) };
        let plain = if first == wire::ENCRYPT {
            if rest.len() < 5 {
                return Ok(None);
            }
            let n = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            if n > wire::MAX_INFLATED {
                return Err(DecodeError::Invalid("encrypted stream too large"));
            }
            if rest.len() < 5 + n {
                return Ok(None);
            }
            let Some(k) = &self.keyring else {
                return Err(DecodeError::Invalid("Remote state is encrypted and encryption is not configured"));
            };
            let mut aad = rest[..5].to_vec();
            aad.extend_from_slice(&label);
            match k.decrypt(&rest[5..5 + n], &aad) {
                Some(p) => p,
                None => {
                    self.stats.packets_unauthenticated += 1;
                    return Err(DecodeError::Invalid("No installed keys could decrypt the message"));
                }
            }
        } else {
            if self.keyring.is_some() && self.config.gossip_verify_incoming {
                self.stats.packets_unauthenticated += 1;
                return Err(DecodeError::Invalid("Encryption is configured but remote state is not encrypted"));
            }
            rest.to_vec()
        };
        if plain.first() == Some(&wire::COMPRESS) {
            match wire::decompress(&plain[1..]) {
                Ok(v) => Ok(Some(v)),
                Err(DecodeError::Incomplete) => Ok(None),
                Err(e) => Err(e),
            }
        } else {
            Ok(Some(plain))
        }
    }

    fn local_push_pull(&mut self, d: &mut dyn Delegate, join: bool, dialer: bool) -> Vec<u8> {
        let nodes = self
            .nodes
            .iter()
            .map(|n| wire::PushNodeState {
                name: n.name.clone(),
                addr: wire::ip_bytes(n.addr.ip()),
                port: n.addr.port(),
                meta: Bytes(n.meta.clone()),
                incarnation: n.incarnation,
                state: n.state.wire(),
                vsn: Bytes(n.vsn.to_vec()),
            })
            .collect();
        let pp = wire::PushPull { join, nodes, user_state: d.local_state(join) };
        self.frame_stream(pp.encode(), dialer)
    }

    /// Starts a join: a push/pull with `join` set to `addr`.
    pub fn join(&mut self, d: &mut dyn Delegate, addr: SocketAddr, now: Instant) -> u64 {
        self.push_pull_to(d, addr, true, now)
    }

    fn push_pull_to(&mut self, d: &mut dyn Delegate, addr: SocketAddr, join: bool, now: Instant) -> u64 {
        self.push_pull_kind(d, addr, StreamKind::PushPull { join }, now + self.config.tcp_timeout)
    }

    fn push_pull_kind(&mut self, d: &mut dyn Delegate, addr: SocketAddr, kind: StreamKind, deadline: Instant) -> u64 {
        let join = matches!(kind, StreamKind::PushPull { join: true });
        let data = self.local_push_pull(d, join, true);
        let token = self.token();
        self.out.push_back(Output::Stream { to: addr, data, token, kind, deadline });
        token
    }

    /// The node whose suspicion the check with stream `token` is about, if it is still under way.
    fn checked_by(&self, token: u64) -> Option<String> {
        self.suspicions.iter().find(|(_, s)| s.checking && s.check_token == token).map(|(n, _)| n.clone())
    }

    /// The suspect `name` answered our check. Its answer usually carries its refutation, which
    /// merging has applied; if it had not heard of the suspicion, its answer (even an error)
    /// still proves it alive, and our push/pull has told it to refute.
    fn suspect_answered(&mut self, name: &str, now: Instant) {
        let Some(&idx) = self.index.get(name) else { return };
        if self.nodes[idx].state == State::Suspect && self.suspicions.get(name).is_some_and(|s| s.checking) {
            self.suspicions.remove(name);
            self.set_state(idx, State::Alive, now);
        }
        if self.nodes[idx].state == State::Alive {
            self.stats.suspicions_withdrawn += 1;
            tracing::info!("memberlist: {name} answered directly; suspicion withdrawn");
        }
    }

    fn periodic_push_pull(&mut self, d: &mut dyn Delegate, now: Instant) {
        let me = &self.config.name;
        let cands: Vec<SocketAddr> =
            self.nodes.iter().filter(|n| &n.name != me && n.is_alive()).map(|n| n.addr).collect();
        if cands.is_empty() {
            return;
        }
        let addr = cands[self.rng.below(cands.len())];
        self.push_pull_to(d, addr, false, now);
    }

    fn merge_state(&mut self, d: &mut dyn Delegate, nodes: Vec<wire::PushNodeState>, now: Instant) {
        for r in nodes {
            match r.state {
                wire::STATE_ALIVE => {
                    let a = wire::Alive {
                        incarnation: r.incarnation,
                        node: r.name,
                        addr: r.addr,
                        port: r.port,
                        meta: r.meta,
                        vsn: r.vsn,
                    };
                    if wire::ip_from_bytes(&a.addr).is_some() {
                        self.alive_node(d, a, false, now);
                    }
                }
                wire::STATE_LEFT => {
                    let x = wire::Dead { incarnation: r.incarnation, node: r.name.clone(), from: r.name };
                    self.dead_node(d, x, now);
                }
                // A remote "dead" is only a suspicion to us: we will find out ourselves.
                _ => {
                    let s = wire::Suspect { incarnation: r.incarnation, node: r.name, from: self.config.name.clone() };
                    self.suspect_node(d, s, now);
                }
            }
        }
    }

    /// Bytes of an incoming stream from `from`. Call again with more bytes on `NeedMore`.
    pub fn handle_stream(&mut self, d: &mut dyn Delegate, from: SocketAddr, buf: &[u8], now: Instant) -> StreamStep {
        let msg = match self.open_stream(buf, true) {
            Ok(Some(m)) => m,
            Ok(None) => return StreamStep::NeedMore,
            Err(e) => {
                self.stats.streams_bad += 1;
                tracing::warn!(%from, "memberlist: failed to receive stream: {e}");
                return StreamStep::Close;
            }
        };
        let Some((&t, body)) = msg.split_first() else { return StreamStep::NeedMore };
        match t {
            wire::PUSH_PULL => match wire::PushPull::decode(body) {
                Ok((pp, _)) => {
                    let reply = self.local_push_pull(d, pp.join, false);
                    self.merge_state(d, pp.nodes, now);
                    if !pp.user_state.is_empty() {
                        d.merge_remote_state(&pp.user_state, pp.join, now);
                    }
                    StreamStep::Reply(reply)
                }
                Err(DecodeError::Incomplete) => StreamStep::NeedMore,
                Err(e) => {
                    self.stats.streams_bad += 1;
                    tracing::warn!(%from, "memberlist: bad push/pull: {e}");
                    StreamStep::Close
                }
            },
            wire::PING => match msgpack::decode::<wire::Ping>(body) {
                Ok(p) => {
                    if !p.node.is_empty() && p.node != self.config.name {
                        return StreamStep::Close;
                    }
                    let ack = Message::Ack(wire::Ack { seq_no: p.seq_no, payload: Bytes::default() }).encode();
                    StreamStep::Reply(self.frame_stream(ack, false))
                }
                Err(DecodeError::Incomplete) => StreamStep::NeedMore,
                Err(_) => StreamStep::Close,
            },
            wire::USER => {
                let mut dec = msgpack::Dec::new(body);
                match msgpack::Wire::decode(&mut dec) {
                    Ok(wire::UserMsgHeader { user_msg_len }) => {
                        let n = user_msg_len.max(0) as usize;
                        let rest = dec.rest();
                        if rest.len() < n {
                            return StreamStep::NeedMore;
                        }
                        d.notify_msg(&rest[..n], now);
                        StreamStep::Close
                    }
                    Err(DecodeError::Incomplete) => StreamStep::NeedMore,
                    Err(_) => StreamStep::Close,
                }
            }
            _ => {
                self.stats.streams_bad += 1;
                StreamStep::Close
            }
        }
    }

    /// The reply to a stream we opened. `Err(NeedMore)` until it is complete.
    pub fn handle_stream_reply(
        &mut self,
        d: &mut dyn Delegate,
        token: u64,
        kind: StreamKind,
        from: SocketAddr,
        buf: &[u8],
        now: Instant,
    ) -> StreamStep {
        let msg = match self.open_stream(buf, false) {
            Ok(Some(m)) => m,
            Ok(None) => return StreamStep::NeedMore,
            Err(e) => {
                self.stats.streams_bad += 1;
                tracing::warn!(%from, "memberlist: failed to read stream reply: {e}");
                return StreamStep::Close;
            }
        };
        let Some((&t, body)) = msg.split_first() else { return StreamStep::NeedMore };
        match (kind, t) {
            (StreamKind::PushPull { .. } | StreamKind::SuspectCheck, wire::PUSH_PULL) => {
                match wire::PushPull::decode(body) {
                    Ok((pp, _)) => {
                        let join = matches!(kind, StreamKind::PushPull { join: true });
                        let checked = (kind == StreamKind::SuspectCheck).then(|| self.checked_by(token)).flatten();
                        self.merge_state(d, pp.nodes, now);
                        if !pp.user_state.is_empty() {
                            d.merge_remote_state(&pp.user_state, join, now);
                        }
                        if let Some(name) = checked {
                            self.suspect_answered(&name, now);
                        }
                        StreamStep::Done
                    }
                    Err(DecodeError::Incomplete) => StreamStep::NeedMore,
                    Err(_) => StreamStep::Close,
                }
            }
            (StreamKind::Ping { seq }, wire::ACK) => match msgpack::decode::<wire::Ack>(body) {
                Ok(a) if a.seq_no == seq => {
                    self.handle_ack(d, a, now);
                    StreamStep::Done
                }
                Err(DecodeError::Incomplete) => StreamStep::NeedMore,
                _ => StreamStep::Close,
            },
            (_, wire::ERR) => {
                if let Ok(e) = msgpack::decode::<wire::ErrResp>(body) {
                    tracing::warn!(%from, "memberlist: remote error: {}", e.error);
                }
                // A suspect that answers with an error is alive all the same.
                if let Some(name) = (kind == StreamKind::SuspectCheck).then(|| self.checked_by(token)).flatten() {
                    self.suspect_answered(&name, now);
                }
                StreamStep::Close
            }
            _ => StreamStep::Close,
        }
    }

    /// A stream we asked for could not be made or answered.
    pub fn stream_failed(&mut self, token: u64, kind: StreamKind, to: SocketAddr, err: &str) {
        match kind {
            StreamKind::PushPull { .. } => tracing::warn!("memberlist: push/pull with {to} failed: {err}"),
            StreamKind::Ping { .. } => tracing::debug!("memberlist: TCP fallback ping to {to} failed: {err}"),
            StreamKind::User => tracing::debug!("memberlist: stream to {to} failed: {err}"),
            StreamKind::SuspectCheck => {
                tracing::debug!("memberlist: check of suspect {to} failed: {err}");
                // Due at once: the next tick declares it dead (a suspect that already answered
                // this check has no suspicion left to settle).
                if let Some(name) = self.checked_by(token) {
                    if let Some(sus) = self.suspicions.get_mut(&name) {
                        sus.deadline = sus.start;
                    }
                }
            }
        }
    }

    /// Forgets a node entirely (Serf's prune / reap).
    pub fn remove(&mut self, name: &str) {
        if name == self.config.name {
            return;
        }
        self.nodes.retain(|n| n.name != name);
        self.suspicions.remove(name);
        self.reindex();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspicion_timeout_shrinks_with_confirmations() {
        let mut s = Suspicion {
            start: Instant::now(),
            min: Duration::from_secs(2),
            max: Duration::from_secs(12),
            k: 3,
            from: vec!["a".into()],
            deadline: Instant::now(),
            checking: false,
            check_token: 0,
        };
        assert_eq!(s.timeout(), Duration::from_secs(12));
        s.from.push("b".into());
        let one = s.timeout();
        assert!(one < Duration::from_secs(12) && one > Duration::from_secs(2));
        s.from.extend(["c".into(), "d".into()]);
        assert_eq!(s.timeout(), Duration::from_secs(2));
    }
}
