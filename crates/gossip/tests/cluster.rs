//! Several Serf cores on a virtual network in one process: packets and streams are delivered by
//! the test, time is virtual. Proves join, failure detection, leave, events and queries end to end
//! through the real codec.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cairn_gossip::env::SeededRng;
use cairn_gossip::keyring::Keyring;
use cairn_gossip::memberlist::{self, Output, StreamStep};
use cairn_gossip::serf::{self, Event, MemberStatus, QueryParams, Serf};

pub struct Net {
    pub nodes: Vec<Serf>,
    pub addrs: Vec<SocketAddr>,
    pub down: Vec<bool>,
    pub now: Instant,
    pub events: Vec<Vec<Event>>,
    /// Datagrams from the first node to the second are lost (streams still go through).
    pub udp_blocked: HashSet<(usize, usize)>,
    seed: u64,
}

impl Net {
    pub fn new(n: usize, seed: u64, key: Option<Vec<u8>>) -> Net {
        Net::with(n, seed, key, |_| {})
    }

    pub fn with(n: usize, seed: u64, key: Option<Vec<u8>>, tune: impl Fn(&mut serf::Config)) -> Net {
        let now = Instant::now();
        let mut net = Net {
            nodes: Vec::new(),
            addrs: Vec::new(),
            down: Vec::new(),
            now,
            events: Vec::new(),
            udp_blocked: HashSet::new(),
            seed,
        };
        for i in 0..n {
            net.add(i, key.clone(), &tune);
        }
        net
    }

    fn add(&mut self, i: usize, key: Option<Vec<u8>>, tune: &dyn Fn(&mut serf::Config)) {
        let addr: SocketAddr = format!("10.0.{}.{}:7946", i / 250, i % 250 + 1).parse().unwrap();
        let ml = memberlist::Config::lan(&format!("node{i}"), addr);
        let mut c = serf::Config::new(ml);
        c.tags.insert("role".into(), "node".into());
        tune(&mut c);
        let ring = key.map(|k| Keyring::new(&k, &[]).unwrap());
        let mut s = Serf::new(
            c,
            ring,
            Box::new(SeededRng(self.seed * 1000 + i as u64)),
            Box::new(SeededRng(self.seed * 7777 + i as u64)),
            self.now,
        );
        s.start(self.now);
        self.nodes.push(s);
        self.addrs.push(addr);
        self.down.push(false);
        self.events.push(Vec::new());
    }

    fn index(&self, a: SocketAddr) -> Option<usize> {
        self.addrs.iter().position(|x| *x == a)
    }

    /// Delivers everything pending, repeatedly, at the current instant.
    pub fn pump(&mut self) {
        for _ in 0..100 {
            let mut any = false;
            for i in 0..self.nodes.len() {
                let outs: Vec<Output> = self.nodes[i].drain_output().collect();
                for o in outs {
                    any = true;
                    if self.down[i] {
                        continue;
                    }
                    match o {
                        Output::Packet { to, data } => {
                            if let Some(j) =
                                self.index(to).filter(|j| !self.down[*j] && !self.udp_blocked.contains(&(i, *j)))
                            {
                                let from = self.addrs[i];
                                self.nodes[j].handle_packet(from, &data, self.now);
                            }
                        }
                        Output::Stream { to, data, token, kind, .. } => {
                            let from = self.addrs[i];
                            match self.index(to).filter(|j| !self.down[*j]) {
                                Some(j) => match self.nodes[j].handle_stream(from, &data, self.now) {
                                    StreamStep::Reply(r) => {
                                        self.nodes[i].handle_stream_reply(token, kind, to, &r, self.now);
                                    }
                                    _ => self.nodes[i].stream_failed(token, kind, to, "closed"),
                                },
                                None => self.nodes[i].stream_failed(token, kind, to, "connection refused"),
                            }
                        }
                    }
                }
                let evs: Vec<Event> = self.nodes[i].drain_events().collect();
                self.events[i].extend(evs);
            }
            if !any {
                return;
            }
        }
    }

    /// Advances virtual time by `d` in steps of 10ms.
    pub fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(10);
            for i in 0..self.nodes.len() {
                if !self.down[i] && self.nodes[i].next_deadline() <= self.now {
                    self.nodes[i].tick(self.now);
                }
            }
            self.pump();
        }
    }

    pub fn join_all(&mut self) {
        let first = self.addrs[0];
        for i in 1..self.nodes.len() {
            self.nodes[i].join(&[first], true, self.now);
            self.pump();
        }
    }

    pub fn status(&self, at: usize, of: usize) -> Option<MemberStatus> {
        self.nodes[at].member(&format!("node{of}")).map(|m| m.status)
    }
}

#[test]
fn five_nodes_join_fail_and_leave() {
    let mut net = Net::new(5, 1, None);
    net.join_all();
    net.run(Duration::from_secs(3));
    for i in 0..5 {
        assert_eq!(net.nodes[i].members().iter().filter(|m| m.status == MemberStatus::Alive).count(), 5, "node{i}");
    }
    // Tags travel in meta.
    assert_eq!(net.nodes[4].member("node0").unwrap().tags.get("role"), Some("node"));

    // A crash is detected as failed by everyone.
    net.down[3] = true;
    net.run(Duration::from_secs(20));
    for i in [0, 1, 2, 4] {
        assert_eq!(net.status(i, 3), Some(MemberStatus::Failed), "node{i} sees node3");
    }

    // A graceful leave is seen as left.
    net.nodes[2].leave(net.now);
    net.run(Duration::from_secs(1));
    assert!(net.nodes[2].leave_intent_sent());
    net.nodes[2].leave_memberlist(net.now);
    net.run(Duration::from_secs(1));
    net.down[2] = true;
    net.run(Duration::from_secs(5));
    for i in [0, 1, 4] {
        assert_eq!(net.status(i, 2), Some(MemberStatus::Left), "node{i} sees node2");
    }
}

#[test]
fn events_and_queries_reach_everyone_encrypted() {
    let mut net = Net::new(4, 2, Some(vec![7u8; 32]));
    net.join_all();
    net.run(Duration::from_secs(2));
    net.nodes[1].user_event("deploy", b"v42", false, net.now).unwrap();
    net.run(Duration::from_secs(2));
    for i in 0..4 {
        let got = net.events[i]
            .iter()
            .filter(|e| matches!(e, Event::User { name, payload, .. } if name == "deploy" && payload == b"v42"))
            .count();
        assert_eq!(got, 1, "node{i} got the event {got} times");
    }
    let params = QueryParams { request_ack: true, ..Default::default() };
    let lt = net.nodes[0].query("ping-q", b"hello", params, net.now).unwrap();
    net.pump();
    // Everyone answers.
    let mut answered = HashMap::new();
    for _ in 0..50 {
        for i in 0..4 {
            let qs: Vec<_> = net.events[i]
                .iter()
                .filter_map(|e| match e {
                    Event::Query(q) if q.name == "ping-q" => Some(q.clone()),
                    _ => None,
                })
                .collect();
            for q in qs {
                if answered.insert((i, q.id), ()).is_none() {
                    let reply = format!("pong from {i}");
                    net.nodes[i].respond(&q, reply.as_bytes(), net.now).unwrap();
                }
            }
        }
        net.run(Duration::from_millis(100));
    }
    let acks = net.events[0].iter().filter(|e| matches!(e, Event::QueryAck { ltime, .. } if *ltime == lt)).count();
    let resps =
        net.events[0].iter().filter(|e| matches!(e, Event::QueryResponse { ltime, .. } if *ltime == lt)).count();
    assert_eq!((acks, resps), (4, 4));
    assert!(net.events[0].iter().any(|e| matches!(e, Event::QueryDone { ltime } if *ltime == lt)));
}

#[test]
fn wrong_key_cannot_join() {
    let mut net = Net::new(2, 3, Some(vec![1u8; 16]));
    net.nodes[1].set_keyring(Some(Keyring::new(&[2u8; 16], &[]).unwrap()));
    net.join_all();
    net.run(Duration::from_secs(3));
    assert_eq!(net.nodes[0].members().len(), 1);
    assert_eq!(net.nodes[1].members().len(), 1);
}

#[test]
fn failed_members_are_reaped_after_the_reconnect_timeout_and_pruned_at_once() {
    let mut net = Net::with(4, 5, None, |c| c.reconnect_timeout = Duration::from_secs(40));
    net.join_all();
    net.run(Duration::from_secs(3));
    net.down[3] = true;
    net.run(Duration::from_secs(20));
    assert_eq!(net.status(0, 3), Some(MemberStatus::Failed));
    // Still listed as failed before the timeout, gone (reaped) after it.
    net.run(Duration::from_secs(10));
    assert_eq!(net.status(0, 3), Some(MemberStatus::Failed));
    net.run(Duration::from_secs(40));
    assert_eq!(net.status(0, 3), None);
    assert!(net.events[0].iter().any(|e| matches!(e, Event::MemberReap(m) if m.name == "node3")));

    // force-leave with prune removes a failed member at once, everywhere.
    net.down[2] = true;
    net.run(Duration::from_secs(20));
    assert_eq!(net.status(1, 2), Some(MemberStatus::Failed));
    net.nodes[0].force_leave("node2", true, net.now);
    net.run(Duration::from_secs(2));
    assert_eq!(net.status(0, 2), None);
    assert_eq!(net.status(1, 2), None);
}

#[test]
fn a_reconnect_override_reaps_a_member_sooner() {
    // As Consul's rc_tm: the override gives tagged members their own reconnect timeout.
    let mut net = Net::with(4, 6, None, |c| {
        c.reconnect_timeout = Duration::from_secs(3600);
        c.reconnect_timeout_override =
            Some(|m, t| if m.tags.get("short").is_some() { Duration::from_secs(5) } else { t });
        if c.memberlist.name == "node3" {
            c.tags.insert("short".into(), "1".into());
        }
    });
    net.join_all();
    net.run(Duration::from_secs(3));
    net.down[2] = true;
    net.down[3] = true;
    net.run(Duration::from_secs(20));
    assert_eq!(net.status(0, 2), Some(MemberStatus::Failed));
    // Reap runs every 15 s: within two passes the tagged member is gone, the other still failed.
    net.run(Duration::from_secs(35));
    assert_eq!(net.status(0, 3), None);
    assert_eq!(net.status(0, 2), Some(MemberStatus::Failed));
}

#[test]
fn encryption_can_be_turned_on_in_a_running_pool() {
    // Step 1 of Consul's rolling switch: the keyed node accepts plaintext (verify_incoming off) and
    // sends plaintext (verify_outgoing off), so the plain node still talks to it.
    let mut net = Net::with(2, 9, None, |c| {
        c.memberlist.gossip_verify_incoming = false;
        c.memberlist.gossip_verify_outgoing = false;
    });
    net.nodes[0].set_keyring(Some(Keyring::new(&[3u8; 16], &[]).unwrap()));
    net.join_all();
    net.run(Duration::from_secs(3));
    assert_eq!(net.status(1, 0), Some(MemberStatus::Alive));
    assert_eq!(net.status(0, 1), Some(MemberStatus::Alive));
    // With verification on, the keyed node refuses the plain one.
    let mut strict = Net::new(2, 10, None);
    strict.nodes[0].set_keyring(Some(Keyring::new(&[3u8; 16], &[]).unwrap()));
    strict.join_all();
    strict.run(Duration::from_secs(3));
    assert_eq!(strict.status(1, 0), None);
}

#[test]
fn coalescing_delivers_the_newest_event_of_a_name_once_quiet() {
    let mut net = Net::with(3, 12, None, |c| {
        c.coalesce_period = Duration::from_secs(3);
        c.quiescent_period = Duration::from_secs(1);
    });
    net.join_all();
    net.run(Duration::from_secs(2));
    for v in ["v1", "v2", "v3"] {
        net.nodes[0].user_event("deploy", v.as_bytes(), true, net.now).unwrap();
        net.run(Duration::from_millis(100));
    }
    net.nodes[0].user_event("other", b"x", false, net.now).unwrap();
    net.run(Duration::from_millis(300));
    let deploys = |net: &Net, i: usize| -> Vec<Vec<u8>> {
        net.events[i]
            .iter()
            .filter_map(|e| match e {
                Event::User { name, payload, .. } if name == "deploy" => Some(payload.clone()),
                _ => None,
            })
            .collect()
    };
    // Not yet quiet: nothing coalesced is out, the uncoalesced event is.
    assert!(deploys(&net, 2).is_empty());
    assert!(net.events[2].iter().any(|e| matches!(e, Event::User { name, .. } if name == "other")));
    net.run(Duration::from_secs(2));
    for i in 0..3 {
        assert_eq!(deploys(&net, i), vec![b"v3".to_vec()], "node{i}");
    }
}

#[test]
fn labels_separate_pools() {
    let mut net = Net::with(2, 13, Some(vec![5u8; 16]), |c| c.memberlist.label = "dc1-lan".into());
    net.join_all();
    net.run(Duration::from_secs(2));
    assert_eq!(net.status(0, 1), Some(MemberStatus::Alive));
    let mut other = Net::with(2, 14, None, |c| {
        c.memberlist.label = if c.memberlist.name == "node1" { "other".into() } else { "dc1-lan".into() }
    });
    other.join_all();
    other.run(Duration::from_secs(2));
    assert_eq!(other.status(0, 1), None);
    assert_eq!(other.status(1, 0), None);
}

/// A suspicion that runs out with none of the confirmations Lifeguard waits for is checked with
/// the suspect before it is declared dead (Cairn's addition; memberlist declares at once). node0's
/// datagrams are all lost, so its suspicion of node1 reaches nobody, node1 never refutes it, and
/// nobody confirms it; push/pull is slowed so that no periodic sync repairs it by chance. Without
/// the check node0 declares the live node1 failed when the timer ends; with it, node1 answers
/// the check and stays alive. A crashed node is still declared dead (the check fails at once).
#[test]
fn an_unconfirmed_suspicion_is_checked_with_the_suspect_before_it_is_declared() {
    use cairn_gossip::wire::{Message, Suspect};
    let run = |check: bool, crash: bool| {
        let mut net = Net::with(5, 4, None, |c| {
            c.memberlist.push_pull_interval = Duration::from_secs(3600);
            c.memberlist.suspect_check = check;
        });
        net.join_all();
        net.run(Duration::from_secs(3));
        for j in 1..5 {
            net.udp_blocked.insert((0, j));
        }
        if crash {
            // Nobody's confirmation reaches node0 either: only the check can end it.
            net.down[1] = true;
            for j in 1..5 {
                net.udp_blocked.insert((j, 0));
            }
        }
        let inc = net.nodes[0].memberlist().node("node1").unwrap().incarnation;
        let sus = Message::Suspect(Suspect { from: "node2".into(), incarnation: inc, node: "node1".into() });
        let from = net.addrs[2];
        net.nodes[0].handle_packet(from, &sus.encode(), net.now);
        assert_eq!(net.nodes[0].memberlist().node("node1").unwrap().state, memberlist::State::Suspect);
        // 5 members: the timeout runs from 24 s (no confirmation) down to 4 s.
        net.run(Duration::from_secs(40));
        let failed_at_0 = net.events[0].iter().any(|e| matches!(e, Event::MemberFailed(m) if m.name == "node1"));
        (failed_at_0, net.nodes[0].memberlist().stats.clone(), net.status(0, 1))
    };

    let (failed, stats, status) = run(false, false);
    assert!(failed, "without the check, the unconfirmed suspicion must end in a false failure: {stats:?}");
    assert_eq!(stats.suspects_checked, 0);

    let (failed, stats, status_checked) = run(true, false);
    assert!(!failed, "the suspect answered the check, yet was declared failed: {stats:?}");
    assert_eq!((stats.suspects_checked, stats.suspicions_withdrawn), (1, 1), "{stats:?}");
    assert_eq!(status_checked, Some(MemberStatus::Alive));
    assert_eq!(status, Some(MemberStatus::Failed));

    let (failed, stats, status) = run(true, true);
    assert!(failed, "a crashed suspect fails the check and is declared dead: {stats:?}");
    assert_eq!((stats.suspects_checked, stats.suspicions_withdrawn), (1, 0), "{stats:?}");
    assert_eq!(status, Some(MemberStatus::Failed));
}
