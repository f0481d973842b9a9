//! Interoperability with the real thing: Debian's `serf` agent (Go memberlist + Serf), installed
//! if missing, run on loopback against our driver.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_gossip::driver::{self, DriverConfig, Handle, QueryEvent};
use cairn_gossip::keyring::Keyring;
use cairn_gossip::memberlist;
use cairn_gossip::serf::{self, Event, MemberStatus, QueryParams};
use tokio::sync::mpsc;

const KEY: &str = "HS5lJ+XuTlYKWaeGYyG+/A==";
const OTHER_KEY: &str = "5K9OtfP7efFrNKe5WCQvXvnaXJ5cWP0SvXiwe0kkjM4=";

fn ensure_serf() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/ensure-serf.sh");
    let ok = Command::new("bash").arg(script).status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "could not install Debian's serf package ({script})");
}

/// A port free for both UDP and TCP on 127.0.0.1.
fn free_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct SerfAgent {
    child: Child,
    pub bind: SocketAddr,
    rpc: String,
    pub dir: PathBuf,
    name: String,
}

impl SerfAgent {
    fn start(name: &str, extra: &[&str]) -> SerfAgent {
        ensure_serf();
        let port = free_port();
        let rpc_port = free_port();
        let dir = std::env::temp_dir().join(format!("cairn-serf-{name}-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let handler = dir.join("handler.sh");
        std::fs::write(
            &handler,
            "#!/bin/sh\nif [ \"$SERF_EVENT\" = user ]; then echo \"$SERF_USER_EVENT:$(cat)\" >> \"$(dirname \"$0\")/events\"; fi\n",
        )
        .unwrap();
        Command::new("chmod").arg("+x").arg(&handler).status().unwrap();
        let rpc = format!("127.0.0.1:{rpc_port}");
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let child = Command::new("serf")
            .arg("agent")
            .arg(format!("-node={name}"))
            .arg(format!("-bind=127.0.0.1:{port}"))
            .arg(format!("-rpc-addr={rpc}"))
            .arg("-tag")
            .arg("role=web")
            .arg(format!("-event-handler=user={}", handler.display()))
            .arg("-log-level=debug")
            .args(extra)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let a = SerfAgent { child, bind: format!("127.0.0.1:{port}").parse().unwrap(), rpc, dir, name: name.into() };
        wait_for("serf agent to start", 20, || a.cli(&["members"]).ok());
        a
    }

    fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("serf")
            .arg(args[0])
            .arg(format!("-rpc-addr={}", self.rpc))
            .args(&args[1..])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `serf members` rows: name → (status, rest of the row).
    fn members(&self) -> BTreeMap<String, (String, String)> {
        let out = self.cli(&["members", "-detailed"]).unwrap_or_default();
        out.lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let name = it.next()?.to_string();
                let _addr = it.next()?;
                let status = it.next()?.to_string();
                Some((name, (status, l.to_string())))
            })
            .collect()
    }

    fn status_of(&self, node: &str) -> Option<String> {
        self.members().get(node).map(|(s, _)| s.clone())
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn events_file(&self) -> String {
        std::fs::read_to_string(self.dir.join("events")).unwrap_or_default()
    }
}

impl Drop for SerfAgent {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = &self.name;
    }
}

fn b64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

struct Cairn {
    rt: tokio::runtime::Runtime,
    h: Handle,
    events: mpsc::Receiver<Event>,
    seen: Vec<Event>,
}

impl Cairn {
    fn start(name: &str, key: Option<&str>) -> Cairn {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut ml = memberlist::Config::lan(name, addr);
        // Serf's agent speaks delegate protocol 5; any of 2..5 interoperates.
        ml.delegate_protocol = [2, 5, 4];
        let mut c = serf::Config::new(ml);
        c.tags.insert("role".into(), "consul".into());
        c.tags.insert("dc".into(), "dc1".into());
        let cfg = DriverConfig {
            serf: c,
            bind: addr,
            keyring: key.map(|k| Keyring::new(&b64(k), &[]).unwrap()),
            broadcast_timeout: Duration::from_secs(5),
            leave_propagate_delay: Duration::from_millis(500),
            snapshot_path: None,
            rejoin_after_leave: false,
        };
        let (h, events) = rt.block_on(driver::start(cfg)).unwrap();
        Cairn { rt, h, events, seen: Vec::new() }
    }

    fn addr(&self) -> SocketAddr {
        self.h.local_addr
    }

    fn status_of(&self, node: &str) -> Option<MemberStatus> {
        let ms = self.rt.block_on(self.h.members()).unwrap();
        ms.into_iter().find(|m| m.name == node).map(|m| m.status)
    }

    fn drain(&mut self) {
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
    }
}

#[test]
fn cairn_joins_serf_and_sees_tags_events_queries_and_leave() {
    let serf = SerfAgent::start("gosrf1", &[]);
    let mut c = Cairn::start("cairn1", None);
    let n = c.rt.block_on(c.h.join(vec![serf.bind], true)).unwrap();
    assert_eq!(n, 1);

    // Both see each other alive; serf sees our tags and protocol.
    wait_for("serf to list cairn1 alive", 10, || (serf.status_of("cairn1").as_deref() == Some("alive")).then_some(()));
    let row = serf.members()["cairn1"].1.clone();
    assert!(row.contains("role=consul") && row.contains("dc=dc1"), "{row}");
    assert!(row.contains("Protocol Version: 4"), "{row}");
    assert_eq!(c.status_of("gosrf1"), Some(MemberStatus::Alive));
    let ms = c.rt.block_on(c.h.members()).unwrap();
    let g = ms.iter().find(|m| m.name == "gosrf1").unwrap();
    assert_eq!(g.tags.get("role"), Some("web"));
    assert_eq!(g.delegate, [2, 5, 5]);

    // A serf event reaches us.
    serf.cli(&["event", "-coalesce=false", "deploy", "v42"]).unwrap();
    wait_for("the serf event", 10, || {
        c.drain();
        c.seen
            .iter()
            .any(|e| matches!(e, Event::User { name, payload, .. } if name == "deploy" && payload == b"v42"))
            .then_some(())
    });

    // Our event reaches serf's handler.
    c.rt.block_on(c.h.user_event("from-cairn", b"hello".to_vec(), false)).unwrap();
    wait_for("serf's event handler", 10, || serf.events_file().contains("from-cairn:hello").then_some(()));

    // A serf query gets our response; ours gets serf's ack.
    let mut c = c;
    let q = std::thread::scope(|s| {
        let t = s.spawn(|| serf.cli(&["query", "-timeout=3s", "ping-q", "hi"]).unwrap());
        let incoming = wait_for("the serf query", 10, || {
            c.drain();
            c.seen.iter().find_map(|e| match e {
                Event::Query(q) if q.name == "ping-q" => Some(q.clone()),
                _ => None,
            })
        });
        assert_eq!(incoming.payload, b"hi");
        c.rt.block_on(c.h.respond(incoming, b"pong".to_vec())).unwrap();
        t.join().unwrap()
    });
    assert!(q.contains("Ack from 'cairn1'"), "{q}");
    assert!(q.contains("Response from 'cairn1': pong"), "{q}");

    let mut rx =
        c.rt.block_on(c.h.query("_serf_ping", Vec::new(), QueryParams { request_ack: true, ..Default::default() }))
            .unwrap();
    let acks: Vec<QueryEvent> = c.rt.block_on(async {
        let mut v = Vec::new();
        while let Some(e) = rx.recv().await {
            v.push(e);
        }
        v
    });
    assert!(acks.contains(&QueryEvent::Ack("gosrf1".into())), "{acks:?}");

    // A graceful leave is `left` to serf.
    c.rt.block_on(c.h.leave()).unwrap();
    wait_for("serf to see cairn1 left", 15, || (serf.status_of("cairn1").as_deref() == Some("left")).then_some(()));
}

#[test]
fn serf_joins_cairn_and_failures_are_seen_both_ways() {
    let c = Cairn::start("cairn2", None);
    let mut serf = SerfAgent::start("gosrf2", &[]);
    serf.cli(&["join", &c.addr().to_string()]).unwrap();
    wait_for("cairn to see gosrf2", 10, || (c.status_of("gosrf2") == Some(MemberStatus::Alive)).then_some(()));
    wait_for("serf to see cairn2", 10, || (serf.status_of("cairn2").as_deref() == Some("alive")).then_some(()));

    // SIGKILL of serf: we mark it failed.
    serf.kill();
    wait_for("cairn to see gosrf2 failed", 20, || (c.status_of("gosrf2") == Some(MemberStatus::Failed)).then_some(()));

    // SIGKILL-like stop of us: serf marks us failed.
    let serf2 = SerfAgent::start("gosrf3", &[]);
    serf2.cli(&["join", &c.addr().to_string()]).unwrap();
    wait_for("serf to see cairn2", 10, || (serf2.status_of("cairn2").as_deref() == Some("alive")).then_some(()));
    c.rt.block_on(c.h.shutdown());
    wait_for("serf to see cairn2 failed", 20, || {
        (serf2.status_of("cairn2").as_deref() == Some("failed")).then_some(())
    });
}

#[test]
fn encryption_same_key_joins_wrong_key_does_not() {
    let serf = SerfAgent::start("gosrf4", &[&format!("-encrypt={KEY}")]);
    let good = Cairn::start("cairn-good", Some(KEY));
    assert_eq!(good.rt.block_on(good.h.join(vec![serf.bind], true)).unwrap(), 1);
    wait_for("serf to list cairn-good", 10, || {
        (serf.status_of("cairn-good").as_deref() == Some("alive")).then_some(())
    });

    let bad = Cairn::start("cairn-bad", Some(OTHER_KEY));
    let r = bad.rt.block_on(bad.h.join(vec![serf.bind], true));
    assert!(r.is_err(), "{r:?}");
    let plain = Cairn::start("cairn-plain", None);
    let r = plain.rt.block_on(plain.h.join(vec![serf.bind], true));
    assert!(r.is_err(), "{r:?}");
    assert!(serf.status_of("cairn-bad").is_none());
    assert!(serf.status_of("cairn-plain").is_none());
    assert!(Path::new(&serf.dir).exists());
    let _ = serf.log();
}
