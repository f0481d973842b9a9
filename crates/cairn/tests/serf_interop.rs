//! A `cairn agent` and Debian's `serf agent` (Go memberlist + Serf 0.9.4) in one LAN pool: the
//! agent lists the serf node, serf lists the agent with Consul's tags, and the leader keeps the
//! non-Consul member out of the catalog.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{free_port, http, stdout, wait_for, Agent};

fn ensure_serf() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/ensure-serf.sh");
    let ok = Command::new("bash").arg(script).status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "could not install Debian's serf package ({script})");
}

struct Serf(Child, String);

impl Drop for Serf {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cairn_agent_and_serf_agent_share_a_pool() {
    ensure_serf();
    let serf_port = free_port();
    let rpc = format!("127.0.0.1:{}", free_port());
    let child = Command::new("serf")
        .args([
            "agent",
            "-node=gosrf",
            &format!("-bind=127.0.0.1:{serf_port}"),
            &format!("-rpc-addr={rpc}"),
            "-tag",
            "role=web",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let serf = Serf(child, rpc.clone());
    let serf_members = || {
        Command::new("serf")
            .args(["members", "-detailed", &format!("-rpc-addr={}", serf.1)])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    wait_for(Duration::from_secs(20), "serf agent", || (!serf_members().is_empty()).then_some(()));

    let lan = free_port();
    let a = Agent::dev(&["-bind=127.0.0.2", &format!("-serf-lan-port={lan}")]);
    let o = a.cli(&["join", &format!("127.0.0.1:{serf_port}")]);
    assert_eq!(stdout(&o).trim(), "Successfully joined cluster by contacting 1 nodes.", "{o:?}");

    wait_for(Duration::from_secs(20), "cairn members to list the serf node", || {
        let out = stdout(&a.cli(&["members"]));
        out.lines().any(|l| l.starts_with("gosrf ") && l.contains("alive")).then_some(())
    });
    let row = wait_for(Duration::from_secs(20), "serf to list the cairn agent", || {
        serf_members().lines().find(|l| l.starts_with("e2e ") && l.contains("alive")).map(str::to_string)
    });
    assert!(row.contains("role=consul") && row.contains("dc=dc1") && row.contains("vsn=2"), "{row}");
    assert!(row.contains(&format!("127.0.0.2:{lan}")), "{row}");

    // The leader reconciles Consul members only: the serf node stays out of the catalog.
    let (_, _, body) = http("GET", &a.url("/v1/catalog/nodes"), None);
    let nodes: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(nodes.as_array().unwrap().iter().all(|n| n["Node"] != "gosrf"), "{nodes}");
}
