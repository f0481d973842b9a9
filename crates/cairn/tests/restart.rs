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
