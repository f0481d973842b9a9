//! Deterministic simulation of a gossip pool: many sans-IO Serf cores on a virtual network in
//! virtual time, replayable from a seed. The network delays each packet (a base latency plus
//! jitter), drops a share of them, and may make one node slow (everything it receives and every
//! timer it runs is late by up to a bound, as on a starved machine). Streams (push/pull, TCP
//! pings) are delivered the same way, their replies after another trip.
//!
//! Must not: ship in the binary. Used by `gossip-sim` (the benchmark) and the tests.

pub mod linearizability;
pub mod raft_sim;
pub mod sim_disk;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cairn_gossip::env::{Rng, SeededRng};
use cairn_gossip::memberlist::{self, Output, StreamKind, StreamStep};
use cairn_gossip::serf::{self, Event, MemberStatus, Serf};

#[derive(Debug, Clone)]
pub struct NetConfig {
    pub latency: Duration,
    pub jitter: Duration,
    /// Share of packets lost (0..1). Streams are not lost (TCP retransmits), only delayed.
    pub loss: f64,
    /// A node whose input and timers are late by up to `slow_delay`.
    pub slow_node: Option<usize>,
    pub slow_delay: Duration,
    pub lifeguard: bool,
    /// Cairn's check of a suspicion that ran out unconfirmed (`memberlist::Config::suspect_check`).
    pub suspect_check: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            latency: Duration::from_millis(1),
            jitter: Duration::from_millis(2),
            loss: 0.0,
            slow_node: None,
            slow_delay: Duration::ZERO,
            lifeguard: true,
            suspect_check: true,
        }
    }
}

enum Delivery {
    Packet { from: usize, data: Vec<u8> },
    Stream { from: usize, data: Vec<u8>, token: u64, kind: StreamKind },
    Reply { from: usize, data: Option<Vec<u8>>, token: u64, kind: StreamKind },
    Tick,
}

/// What the harness observed of one node's events.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub failed: HashMap<String, Duration>,
    pub user: HashMap<String, Duration>,
}

pub struct Sim {
    pub nodes: Vec<Serf>,
    pub up: Vec<bool>,
    pub seen: Vec<Seen>,
    addrs: Vec<SocketAddr>,
    by_addr: HashMap<SocketAddr, usize>,
    queue: BinaryHeap<Reverse<(Duration, u64, usize)>>,
    pending: HashMap<u64, Delivery>,
    next_tick: Vec<Option<Duration>>,
    seq: u64,
    rng: SeededRng,
    net: NetConfig,
    base: Instant,
    /// Virtual time since the start.
    pub now: Duration,
    pub bytes_sent: u64,
    pub packets_sent: u64,
    pub packets_lost: u64,
    /// `SIM_DEBUG` is set: trace failure declarations.
    pub debug: bool,
    /// `SIM_WATCH=OBSERVER,SUBJECT` (node numbers): trace how the observer sees the subject, and
    /// the subject's own incarnation, at every change.
    watch: Option<(usize, usize, String)>,
}

/// Independent streams per (seed, node): neighbouring seeds must not share node streams.
fn mix(seed: u64, i: u64) -> u64 {
    let mut r = SeededRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xC2B2_AE3D_27D4_EB4F));
    r.next_u64()
}

pub fn name(i: usize) -> String {
    format!("node{i}")
}

impl Sim {
    pub fn new(n: usize, seed: u64, net: NetConfig) -> Sim {
        let base = Instant::now();
        let mut sim = Sim {
            nodes: Vec::with_capacity(n),
            up: vec![true; n],
            seen: vec![Seen::default(); n],
            addrs: Vec::with_capacity(n),
            by_addr: HashMap::new(),
            queue: BinaryHeap::new(),
            pending: HashMap::new(),
            next_tick: vec![None; n],
            seq: 0,
            rng: SeededRng(mix(seed, u64::MAX)),
            net,
            base,
            now: Duration::ZERO,
            bytes_sent: 0,
            packets_sent: 0,
            packets_lost: 0,
            debug: std::env::var("SIM_DEBUG").is_ok(),
            watch: std::env::var("SIM_WATCH").ok().and_then(|w| {
                let (a, b) = w.split_once(',')?;
                Some((a.parse().ok()?, b.parse().ok()?, String::new()))
            }),
        };
        for i in 0..n {
            let addr: SocketAddr =
                format!("10.{}.{}.{}:8301", i / 65536, (i / 256) % 256, i % 256).parse().expect("addr");
            let mut ml = memberlist::Config::lan(&name(i), addr);
            ml.lifeguard = sim.net.lifeguard;
            ml.suspect_check = sim.net.suspect_check;
            let mut c = serf::Config::new(ml);
            c.tags.insert("role".into(), "node".into());
            let mut s = Serf::new(
                c,
                None,
                Box::new(SeededRng(mix(seed, 2 * i as u64))),
                Box::new(SeededRng(mix(seed, 2 * i as u64 + 1))),
                base,
            );
            s.start(base);
            sim.nodes.push(s);
            sim.addrs.push(addr);
            sim.by_addr.insert(addr, i);
            sim.schedule_tick(i);
        }
        sim
    }

    fn instant(&self) -> Instant {
        self.base + self.now
    }

    fn push(&mut self, at: Duration, to: usize, d: Delivery) {
        self.seq += 1;
        self.pending.insert(self.seq, d);
        self.queue.push(Reverse((at, self.seq, to)));
    }

    fn slow_extra(&mut self, to: usize) -> Duration {
        if self.net.slow_node == Some(to) && !self.net.slow_delay.is_zero() {
            let us = self.net.slow_delay.as_micros() as u64;
            Duration::from_micros(self.rng.next_u64() % us.max(1))
        } else {
            Duration::ZERO
        }
    }

    fn trip(&mut self, to: usize) -> Duration {
        let j = self.net.jitter.as_micros() as u64;
        let jitter = if j == 0 { 0 } else { self.rng.next_u64() % j };
        self.net.latency + Duration::from_micros(jitter) + self.slow_extra(to)
    }

    fn schedule_tick(&mut self, i: usize) {
        if !self.up[i] {
            return;
        }
        let at = self.nodes[i].next_deadline().saturating_duration_since(self.base).max(self.now);
        let at = at + self.slow_extra(i);
        if self.next_tick[i].is_some_and(|t| t <= at) {
            return;
        }
        self.next_tick[i] = Some(at);
        self.push(at, i, Delivery::Tick);
    }

    /// Sends what node `i` produced and records its events.
    fn drain(&mut self, i: usize) {
        let outs: Vec<Output> = self.nodes[i].drain_output().collect();
        for o in outs {
            if !self.up[i] {
                continue;
            }
            match o {
                Output::Packet { to, data } => {
                    self.bytes_sent += data.len() as u64;
                    self.packets_sent += 1;
                    let Some(&j) = self.by_addr.get(&to) else { continue };
                    if self.net.loss > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < self.net.loss {
                        self.packets_lost += 1;
                        continue;
                    }
                    let at = self.now + self.trip(j);
                    self.push(at, j, Delivery::Packet { from: i, data });
                }
                Output::Stream { to, data, token, kind, .. } => {
                    self.bytes_sent += data.len() as u64;
                    match self.by_addr.get(&to).copied() {
                        Some(j) => {
                            let at = self.now + self.trip(j);
                            self.push(at, j, Delivery::Stream { from: i, data, token, kind });
                        }
                        None => self.nodes[i].stream_failed(token, kind, to, "no route"),
                    }
                }
            }
        }
        let now = self.now;
        for e in self.nodes[i].drain_events() {
            match e {
                Event::MemberFailed(m) => {
                    if self.debug {
                        eprintln!("{:.3}s: {} sees {} failed", now.as_secs_f64(), name(i), m.name);
                    }
                    self.seen[i].failed.entry(m.name).or_insert(now);
                }
                Event::User { name, .. } => {
                    self.seen[i].user.entry(name).or_insert(now);
                }
                _ => {}
            }
        }
        self.schedule_tick(i);
    }

    /// Runs until virtual time `until` (or `stop` says so, checked after every delivery).
    pub fn run_until(&mut self, until: Duration, mut stop: impl FnMut(&Sim) -> bool) {
        while let Some(Reverse((at, seq, to))) = self.queue.peek().copied() {
            if at > until {
                break;
            }
            self.queue.pop();
            let Some(d) = self.pending.remove(&seq) else { continue };
            self.now = self.now.max(at);
            let now = self.instant();
            let up = self.up[to];
            match d {
                Delivery::Tick => {
                    if self.next_tick[to] != Some(at) {
                        continue;
                    }
                    self.next_tick[to] = None;
                    if up {
                        self.nodes[to].tick(now);
                    }
                }
                Delivery::Packet { from, data } => {
                    if up {
                        let a = self.addrs[from];
                        self.nodes[to].handle_packet(a, &data, now);
                    }
                }
                Delivery::Stream { from, data, token, kind } => {
                    let reply = if up {
                        match self.nodes[to].handle_stream(self.addrs[from], &data, now) {
                            StreamStep::Reply(r) => Some(r),
                            _ => None,
                        }
                    } else {
                        None
                    };
                    if let Some(r) = &reply {
                        self.bytes_sent += r.len() as u64;
                    }
                    let at = self.now + self.trip(from);
                    self.push(at, from, Delivery::Reply { from: to, data: reply, token, kind });
                }
                Delivery::Reply { from, data, token, kind } => {
                    if up {
                        let a = self.addrs[from];
                        match data {
                            Some(d) => {
                                self.nodes[to].handle_stream_reply(token, kind, a, &d, now);
                            }
                            None => self.nodes[to].stream_failed(token, kind, a, "connection refused"),
                        }
                    }
                }
            }
            if let Some((obs, subj, last)) = &self.watch {
                if to == *obs || to == *subj {
                    let view = self.nodes[*obs].memberlist().node(&name(*subj)).map(|n| (n.state, n.incarnation));
                    let own = self.nodes[*subj].memberlist().local().map(|n| n.incarnation);
                    let suspecting = self
                        .nodes
                        .iter()
                        .filter(|x| {
                            x.memberlist().node(&name(*subj)).is_some_and(|n| n.state == memberlist::State::Suspect)
                        })
                        .count();
                    let line = format!("view {view:?} own {own:?} suspecting {suspecting}");
                    if line != *last {
                        eprintln!("{:.3}s: delivery to node{to}: {line}", self.now.as_secs_f64());
                        self.watch.as_mut().expect("watch").2 = line;
                    }
                }
            }
            self.drain(to);
            if stop(self) {
                return;
            }
        }
        self.now = self.now.max(until);
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until, |_| false);
    }

    /// Every node joins through node 0, one after another (each join is a push/pull).
    pub fn join_all(&mut self) {
        let first = self.addrs[0];
        let now = self.instant();
        for i in 1..self.nodes.len() {
            self.nodes[i].join(&[first], true, now);
            self.drain(i);
        }
    }

    /// Starts from a converged pool: every node knows every other alive (nothing gossiped).
    pub fn seed_converged(&mut self) {
        let now = self.instant();
        let alives: Vec<cairn_gossip::wire::Alive> = (0..self.nodes.len())
            .map(|j| {
                let m = self.nodes[j].memberlist().local().expect("started").clone();
                cairn_gossip::wire::Alive {
                    incarnation: m.incarnation,
                    node: m.name,
                    addr: cairn_gossip::wire::ip_bytes(m.addr.ip()),
                    port: m.addr.port(),
                    meta: m.meta.into(),
                    vsn: m.vsn.to_vec().into(),
                }
            })
            .collect();
        for i in 0..self.nodes.len() {
            let others: Vec<_> = alives.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, a)| a.clone()).collect();
            self.nodes[i].seed_members(others, now);
            let _ = self.nodes[i].drain_events().count();
            self.schedule_tick(i);
        }
    }

    /// How many up nodes see `of` as `status`.
    pub fn count_seeing(&self, of: usize, status: MemberStatus) -> usize {
        let n = name(of);
        (0..self.nodes.len())
            .filter(|i| self.up[*i] && *i != of && self.nodes[*i].member(&n).is_some_and(|m| m.status == status))
            .count()
    }

    /// Whether every up node sees every up node alive.
    pub fn converged(&self) -> bool {
        let alive_up = self.up.iter().filter(|u| **u).count();
        (0..self.nodes.len())
            .filter(|i| self.up[*i])
            .all(|i| self.nodes[i].memberlist().members().iter().filter(|m| m.is_alive()).count() >= alive_up)
    }

    pub fn crash(&mut self, i: usize) {
        self.up[i] = false;
    }

    pub fn fire(&mut self, from: usize, name: &str) {
        let now = self.instant();
        let _ = self.nodes[from].user_event(name, b"x", false, now);
        self.drain(from);
    }

    pub fn total_stat(&self, f: impl Fn(&memberlist::Stats) -> u64) -> u64 {
        self.nodes.iter().map(|n| f(&n.memberlist().stats)).sum()
    }
}

/// The figures of one seed.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub nodes: usize,
    pub converge: Duration,
    pub detect_99: Option<Duration>,
    pub spread_99: Option<Duration>,
    pub bytes_per_node_sec: f64,
}

/// Converges a pool of `n`, crashes one node and measures how long until 99% of the others know
/// it failed, then fires a user event and measures how long until 99% have it.
pub fn detection_and_spread(n: usize, seed: u64, net: NetConfig) -> Figures {
    let mut sim = Sim::new(n, seed, net);
    if n > 200 {
        // Gossiping a thousand joins costs minutes of CPU; start converged instead.
        sim.seed_converged();
    } else {
        sim.join_all();
    }
    let limit = Duration::from_secs(300);
    while !sim.converged() && sim.now < limit {
        sim.run_for(Duration::from_millis(500));
    }
    let converge = sim.now;
    // Let the join broadcasts settle, then measure bandwidth over a quiet minute.
    sim.run_for(Duration::from_secs(10));
    let (b0, t0) = (sim.bytes_sent, sim.now);
    sim.run_for(Duration::from_secs(60));
    let bytes_per_node_sec = (sim.bytes_sent - b0) as f64 / n as f64 / (sim.now - t0).as_secs_f64();

    let victim = n / 2;
    sim.crash(victim);
    let t_crash = sim.now;
    let want = ((n - 1) as f64 * 0.99).ceil() as usize;
    let end = sim.now + Duration::from_secs(120);
    let vname = name(victim);
    let debug = std::env::var("SIM_DEBUG").is_ok();
    let sus0 = sim.total_stat(|s| s.suspicions_raised);
    let dead0 = sim.total_stat(|s| s.deaths_declared);
    let (mut trace, mut last) = (Vec::new(), (sus0, dead0));
    sim.run_until(end, |s| {
        if debug {
            let now = (s.total_stat(|x| x.suspicions_raised), s.total_stat(|x| x.deaths_declared));
            if now != last {
                trace.push((s.now - t_crash, now.0 - sus0, now.1 - dead0));
                last = now;
            }
        }
        s.seen.iter().filter(|x| x.failed.contains_key(&vname)).count() >= want
    });
    if debug {
        for (t, sus, dead) in &trace {
            eprintln!("  +{:.2}s: {sus} suspicions raised, {dead} deaths declared", t.as_secs_f64());
        }
    }
    let known: Vec<Duration> = sim.seen.iter().filter_map(|x| x.failed.get(&vname).copied()).collect();
    let detect_99 = (known.len() >= want).then(|| {
        let mut k = known.clone();
        k.sort();
        if std::env::var("SIM_DEBUG").is_ok() {
            eprintln!(
                "detect: first {:?} median {:?} 99% {:?}",
                k[0] - t_crash,
                k[k.len() / 2] - t_crash,
                k[want - 1] - t_crash
            );
        }
        k[want - 1] - t_crash
    });

    let t_fire = sim.now;
    sim.fire(0, "update");
    let end = sim.now + Duration::from_secs(60);
    sim.run_until(end, |s| s.seen.iter().filter(|x| x.user.contains_key("update")).count() >= want);
    let got: Vec<Duration> = sim.seen.iter().filter_map(|x| x.user.get("update").copied()).collect();
    let spread_99 = (got.len() >= want).then(|| {
        let mut g = got.clone();
        g.sort();
        g[want - 1] - t_fire
    });
    Figures { nodes: n, converge, detect_99, spread_99, bytes_per_node_sec }
}

/// What a slow node cost a pool over some minutes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Accusations {
    /// Suspicions the slow node raised against healthy nodes.
    pub by_slow: u64,
    /// Suspicions healthy nodes raised (against the slow node, who is alive).
    pub by_others: u64,
    /// Times an alive node was declared failed by some member.
    pub failures: u64,
    /// Suspicions that ran out unconfirmed and were checked with the suspect (all members).
    pub checked: u64,
    /// Of those, the ones the suspect answered, so no failure was declared.
    pub withdrawn: u64,
}

/// Runs a converged pool with a slow node for `minutes` of virtual time and counts the false
/// accusations: every node stays up, so every suspicion and every failure is false.
pub fn false_accusations(n: usize, seed: u64, minutes: u64, net: NetConfig) -> Accusations {
    let slow = net.slow_node;
    let mut sim = Sim::new(n, seed, net);
    sim.seed_converged();
    let raised = |sim: &Sim, i: usize| sim.nodes[i].memberlist().stats.suspicions_raised;
    let base: Vec<u64> = (0..n).map(|i| raised(&sim, i)).collect();
    let stat = |sim: &Sim, f: fn(&memberlist::Stats) -> u64| -> u64 {
        sim.nodes.iter().map(|x| f(&x.memberlist().stats)).sum()
    };
    let checked0 = stat(&sim, |s| s.suspects_checked);
    let withdrawn0 = stat(&sim, |s| s.suspicions_withdrawn);
    let failed0: usize = sim.seen.iter().map(|s| s.failed.len()).sum();
    sim.run_for(Duration::from_secs(60 * minutes));
    let mut a = Accusations::default();
    for (i, b) in base.iter().enumerate() {
        let d = raised(&sim, i) - b;
        if Some(i) == slow {
            a.by_slow += d;
        } else {
            a.by_others += d;
        }
    }
    let failed: usize = sim.seen.iter().map(|s| s.failed.len()).sum();
    a.failures = (failed - failed0) as u64;
    a.checked = stat(&sim, |s| s.suspects_checked) - checked0;
    a.withdrawn = stat(&sim, |s| s.suspicions_withdrawn) - withdrawn0;
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quick slice of the benchmark: 100 nodes, one seed, Consul's LAN timings, 1% loss.
    #[test]
    fn hundred_nodes_detect_a_crash_and_spread_an_update_within_goals() {
        let f = detection_and_spread(100, 7, NetConfig { loss: 0.01, ..NetConfig::default() });
        let detect = f.detect_99.expect("the crash was never detected by 99%");
        let spread = f.spread_99.expect("the update never reached 99%");
        assert!(detect <= Duration::from_secs(15), "{f:?}");
        assert!(spread <= Duration::from_millis(1600), "{f:?}");
        assert!(f.bytes_per_node_sec > 0.0 && f.bytes_per_node_sec < 10_000.0, "{f:?}");
    }

    #[test]
    fn same_seed_same_run() {
        let a = detection_and_spread(30, 3, NetConfig::default());
        let b = detection_and_spread(30, 3, NetConfig::default());
        assert_eq!((a.converge, a.detect_99, a.spread_99), (b.converge, b.detect_99, b.spread_99));
    }

    /// Everything a run produced, down to each node's counters and member list.
    fn fingerprint(sim: &Sim) -> String {
        let mut f = format!("{} {} {} {:?}\n", sim.bytes_sent, sim.packets_sent, sim.packets_lost, sim.now);
        for (i, n) in sim.nodes.iter().enumerate() {
            let members: Vec<String> = n
                .members()
                .iter()
                .map(|m| {
                    // Instants are relative to the run's origin (taken from the clock).
                    let left = m.leave_time().map(|t| t - sim.base);
                    format!("{}/{:?}/{}/{:?}/{:?}", m.name, m.status, m.status_ltime(), left, m.tags)
                })
                .collect();
            let mut failed: Vec<_> = sim.seen[i].failed.iter().collect();
            failed.sort();
            f += &format!("{i} {:?} {members:?} {failed:?}\n", n.memberlist().stats);
        }
        f
    }

    #[test]
    fn same_seed_replays_exactly_under_loss_crashes_and_a_slow_node() {
        let run = |seed| {
            let net = NetConfig {
                loss: 0.05,
                slow_node: Some(7),
                slow_delay: Duration::from_millis(800),
                ..NetConfig::default()
            };
            let mut sim = Sim::new(40, seed, net);
            sim.join_all();
            sim.run_for(Duration::from_secs(90));
            sim.crash(11);
            sim.fire(3, "replay");
            sim.run_for(Duration::from_secs(60));
            fingerprint(&sim)
        };
        let (a, b) = (run(9), run(9));
        if let Some((x, y)) = a.lines().zip(b.lines()).find(|(x, y)| x != y) {
            panic!("the same seed must replay the same run; first difference:\n{x}\n{y}");
        }
        assert_eq!(a, b);
        assert_ne!(a, run(10), "another seed must give another run");
    }

    #[test]
    fn a_slow_node_is_not_declared_failed_with_lifeguard() {
        let net = NetConfig {
            loss: 0.01,
            slow_node: Some(5),
            slow_delay: Duration::from_millis(1500),
            ..NetConfig::default()
        };
        let a = false_accusations(20, 11, 5, net);
        assert_eq!(a.failures, 0, "{a:?}");
    }
}

/// Counts live heap bytes per thread, so memory per member is measured exactly rather than from
/// the resident set (which keeps freed pages), and is not disturbed by other threads (tests run in
/// parallel). A thread's count is what it allocated minus what it freed.
struct Counting;

thread_local! {
    static LIVE: std::cell::Cell<isize> = const { std::cell::Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: a thread being torn down may still free memory after its locals are gone.
    let _ = LIVE.try_with(|c| c.set(c.get() + delta));
}

unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        count(l.size() as isize);
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        count(-(l.size() as isize));
        unsafe { std::alloc::System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        count(new as isize - l.size() as isize);
        unsafe { std::alloc::System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Live heap bytes allocated by this thread.
pub fn heap_bytes() -> usize {
    LIVE.with(|c| c.get()).max(0) as usize
}

/// Resident memory of this process, in bytes (Linux).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

/// What one agent spends per member of a pool of `n` whose members carry Consul client tags:
/// the resident memory grown by seeding the pool into one Serf core, divided by `n`.
pub fn memory_per_member(n: usize) -> f64 {
    let base = Instant::now();
    let addr: SocketAddr = "10.255.0.1:8301".parse().expect("addr");
    let mut s = Serf::new(
        serf::Config::new(memberlist::Config::lan("self", addr)),
        None,
        Box::new(SeededRng(1)),
        Box::new(SeededRng(2)),
        base,
    );
    s.start(base);
    let tags = |i: usize| {
        let mut t = std::collections::BTreeMap::new();
        for (k, v) in [
            ("role", "node".to_string()),
            ("dc", "dc1".into()),
            ("segment", String::new()),
            ("id", format!("{:08x}-1111-2222-3333-444455556666", i)),
            ("vsn", "2".into()),
            ("vsn_min", "2".into()),
            ("vsn_max", "3".into()),
            ("build", "1.22.0:cairn-0.1.0".into()),
        ] {
            t.insert(k.to_string(), v);
        }
        cairn_gossip::serf_wire::encode_tags(&t)
    };
    let alives: Vec<cairn_gossip::wire::Alive> = (0..n)
        .map(|i| cairn_gossip::wire::Alive {
            incarnation: 1,
            node: format!("ip-10-0-{}-{}.ec2.internal", i / 256, i % 256),
            addr: vec![10, 0, (i / 256) as u8, (i % 256) as u8].into(),
            port: 8301,
            meta: tags(i).into(),
            vsn: vec![1, 5, 2, 2, 5, 4].into(),
        })
        .collect();
    let input: usize = alives.iter().map(|a| a.node.len() + a.addr.len() + a.meta.len() + a.vsn.len() + 120).sum();
    let before = heap_bytes() + input;
    s.seed_members(alives, base);
    let _ = s.drain_events().count();
    let after = heap_bytes();
    let per = after.saturating_sub(before) as f64 / n as f64;
    drop(s);
    per
}

#[cfg(test)]
mod memory {
    #[test]
    fn a_member_costs_under_a_kilobyte() {
        let per = super::memory_per_member(2000);
        assert!(per < 1024.0, "{per} bytes per member");
    }
}
