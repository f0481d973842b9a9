//! Durability: everything acknowledged survives kill -9 and comes back on restart.

use std::time::Duration;

use crate::harness::*;

#[test]
fn writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = format!("-data-dir={}", dir.path().display());
    let args =
        ["-server", "-bootstrap", &data, "-node=durable", "-bind=127.0.0.1", "-client=127.0.0.1", "-server-port=18399"];
    let port = free_port();
    let mut a = Agent::spawn(&args, port);
    a.wait_ready();
    for i in 0..200 {
        let o = a.cli(&["kv", "put", &format!("d/{i:03}"), &format!("value-{i}")]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let (st, _, _) = http(
        "PUT",
        &a.url("/v1/catalog/register"),
        Some(br#"{"Node":"ext","Address":"10.0.0.9","Service":{"Service":"kept","Port":7}}"#),
    );
    assert_eq!(st, 200);
    let (_, h, _) = http("GET", &a.url("/v1/kv/d/199"), None);
    let before: u64 = header(&h, "x-consul-index").unwrap().parse().unwrap();
    let node_id_before = {
        let (_, _, b) = http("GET", &a.url("/v1/agent/self"), None);
        serde_json::from_slice::<serde_json::Value>(&b).unwrap()["Config"]["NodeID"].clone()
    };
    a.kill9();

    let mut b = Agent::spawn(&args, port);
    b.wait_ready();
    for i in [0, 57, 199] {
        assert_eq!(stdout(&b.cli(&["kv", "get", &format!("d/{i:03}")])), format!("value-{i}\n"));
    }
    let o = b.cli(&["kv", "get", "-keys", "d/"]);
    assert_eq!(stdout(&o).lines().count(), 200);
    let (_, h, body) = http("GET", &b.url("/v1/kv/d/199"), None);
    assert_eq!(
        header(&h, "x-consul-index").unwrap().parse::<u64>().unwrap(),
        before,
        "indexes are restored, not renumbered"
    );
    assert!(String::from_utf8_lossy(&body).contains("dmFsdWUtMTk5"));
    let (_, _, body) = http("GET", &b.url("/v1/catalog/service/kept"), None);
    assert!(String::from_utf8_lossy(&body).contains("10.0.0.9"));
    let (_, _, s) = http("GET", &b.url("/v1/agent/self"), None);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&s).unwrap()["Config"]["NodeID"],
        node_id_before,
        "the node ID persists"
    );
    // New writes continue above the old indexes.
    assert!(b.cli(&["kv", "put", "after", "x"]).status.success());
    let (_, h, _) = http("GET", &b.url("/v1/kv/after"), None);
    assert!(header(&h, "x-consul-index").unwrap().parse::<u64>().unwrap() > before);
    assert_eq!(b.terminate(), Some(0));

    // And a clean stop followed by a restart also keeps everything.
    let c = Agent::spawn(&args, port);
    c.wait_ready();
    wait_for(Duration::from_secs(5), "key after restart", || {
        (stdout(&c.cli(&["kv", "get", "after"])) == "x\n").then_some(())
    });
}

#[test]
fn snapshot_and_log_replay_after_many_writes() {
    // A low snapshot threshold forces snapshots and log purges; state comes back from both.
    let dir = tempfile::tempdir().unwrap();
    let data = format!("-data-dir={}", dir.path().display());
    let args = [
        "-server",
        "-bootstrap",
        &data,
        "-node=snap",
        "-bind=127.0.0.1",
        "-client=127.0.0.1",
        "-hcl=raft_snapshot_threshold = 32",
        // Checked every 50 ms (Consul's default is 30 s), so the snapshot comes soon.
        "-hcl=raft_snapshot_interval = \"50ms\"",
        "-hcl=raft_trailing_logs = 8",
    ];
    let port = free_port();
    let mut a = Agent::spawn(&args, port);
    a.wait_ready();
    for i in 0..150 {
        let (st, _, _) = http("PUT", &a.url(&format!("/v1/kv/s/{i}")), Some(format!("{i}").as_bytes()));
        assert_eq!(st, 200);
    }
    wait_for(Duration::from_secs(10), "a snapshot to be written", || {
        dir.path().join("raft/snapshot.bin").exists().then_some(())
    });
    a.kill9();
    let b = Agent::spawn(&args, port);
    b.wait_ready();
    let (_, _, body) = http("GET", &b.url("/v1/kv/s/?keys"), None);
    let keys: Vec<String> = serde_json::from_slice(&body).unwrap();
    assert_eq!(keys.len(), 150);
    assert_eq!(stdout(&b.cli(&["kv", "get", "s/149"])), "149\n");
}

/// A minimal keep-alive HTTP/1.1 client for PUTs, so that many writes are in flight at once (curl
/// per request would serialise them): returns the response body, or `None` once the agent is gone.
struct Conn {
    s: std::io::BufReader<std::net::TcpStream>,
}

impl Conn {
    fn open(addr: &str) -> Option<Conn> {
        let s = std::net::TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        Some(Conn { s: std::io::BufReader::new(s) })
    }

    fn put(&mut self, path: &str, body: &str) -> Option<String> {
        use std::io::{BufRead, Read, Write};
        let req = format!("PUT {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        self.s.get_mut().write_all(req.as_bytes()).ok()?;
        let mut len = 0usize;
        let mut status = String::new();
        loop {
            let mut line = String::new();
            if self.s.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if status.is_empty() {
                status = line.clone();
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().ok()?;
            }
        }
        let mut b = vec![0u8; len];
        self.s.read_exact(&mut b).ok()?;
        status.contains(" 200 ").then(|| String::from_utf8_lossy(&b).into_owned())
    }
}

#[test]
fn acknowledged_writes_survive_kill_9_under_concurrent_load() {
    // Sixteen writers keep many writes in flight (so the log writer batches them) while the server
    // is killed; every write answered `true` before the kill must be there after the restart.
    let dir = tempfile::tempdir().unwrap();
    let data = format!("-data-dir={}", dir.path().display());
    let args =
        ["-server", "-bootstrap", &data, "-node=load", "-bind=127.0.0.1", "-client=127.0.0.1", "-server-port=18398"];
    let port = free_port();
    let mut a = Agent::spawn(&args, port);
    a.wait_ready();
    let addr = a.addr();
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let (addr, acked) = (addr.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut done = Vec::new();
                let Some(mut c) = Conn::open(&addr) else { return done };
                for i in 0.. {
                    let (key, val) = (format!("load/{w}/{i}"), format!("v{w}-{i}"));
                    match c.put(&format!("/v1/kv/{key}"), &val) {
                        Some(b) if b.trim() == "true" => {
                            done.push((key, val));
                            acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        _ => break,
                    }
                }
                done
            })
        })
        .collect();
    wait_for(Duration::from_secs(60), "2000 acknowledged writes", || {
        (acked.load(std::sync::atomic::Ordering::Relaxed) >= 2000).then_some(())
    });
    a.kill9();
    let done: Vec<(String, String)> = writers.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert!(done.len() >= 2000);

    let b = Agent::spawn(&args, port);
    b.wait_ready();
    let (st, _, body) = http("GET", &b.url("/v1/kv/load/?recurse"), None);
    assert_eq!(st, 200);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    let stored: std::collections::HashMap<String, String> = rows
        .iter()
        .map(|r| {
            let v = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                r["Value"].as_str().unwrap_or_default(),
            )
            .unwrap();
            (r["Key"].as_str().unwrap().to_string(), String::from_utf8(v).unwrap())
        })
        .collect();
    let lost: Vec<&String> = done.iter().filter(|(k, v)| stored.get(k) != Some(v)).map(|(k, _)| k).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        done.len(),
        &lost[..lost.len().min(5)]
    );
    // Writes that were in flight may or may not have landed, but nothing else appears.
    assert!(stored.len() <= done.len() + 16, "{} stored for {} acknowledged", stored.len(), done.len());
}
