//! Configuration files, start-up errors, shutdown by signal and by `leave`, pid files, validate.

use std::time::Duration;

use crate::harness::*;

#[test]
fn hcl_and_json_config_files_load() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let f = write_file(
        dir.path(),
        "agent.hcl",
        &format!("node_name = \"from-hcl\"\ndatacenter = \"east\"\nports {{\n  http = {port}\n  dns = -1\n}}\nnode_meta {{\n  rack = \"r7\"\n}}\nperformance {{\n  raft_multiplier = 2\n}}\ntelemetry {{\n  disable_hostname = true\n}}\n"),
    );
    let d2 = dir.path().join("conf.d");
    std::fs::create_dir(&d2).unwrap();
    write_file(&d2, "svc.json", r#"{"service": {"name": "cfgsvc", "port": 1234, "check": {"ttl": "30s"}}}"#);
    // Flags after files win; the port comes from the file.
    let mut a = Agent::spawn(
        &["-dev", &format!("-config-file={}", f.display()), &format!("-config-dir={}", d2.display())],
        port,
    );
    a.wait_ready();
    let (_, _, body) = http("GET", &a.url("/v1/agent/self"), None);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["Config"]["NodeName"], "from-hcl");
    assert_eq!(v["Config"]["Datacenter"], "east");
    assert_eq!(v["Config"]["Version"], "1.22.0");
    assert_eq!(v["Meta"]["rack"], "r7");
    assert_eq!(v["DebugConfig"]["RaftMultiplier"], 2);
    let (_, _, body) = http("GET", &a.url("/v1/agent/services"), None);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["cfgsvc"]["Port"], 1234);
    assert!(a.log_text().contains("telemetry.disable_hostname"), "an unimplemented key is logged by name");
    assert_eq!(a.terminate(), Some(0));
}

#[test]
fn bad_config_stops_startup_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_file(dir.path(), "bad.json", r#"{"ports": {"http": 1}, "not_a_consul_key": true}"#);
    let mut a = Agent::spawn(&["-dev", &format!("-config-file={}", f.display())], free_port());
    assert_eq!(a.wait_exit(), Some(1));
    let log = a.log_text();
    assert!(log.contains("bad.json") && log.contains("not_a_consul_key"), "{log}");

    let g = write_file(dir.path(), "bad.hcl", "ports {\n  http = \"eighty\"\n}\n");
    let mut a = Agent::spawn(&["-dev", &format!("-config-file={}", g.display())], free_port());
    assert_eq!(a.wait_exit(), Some(1));
    let log = a.log_text();
    assert!(log.contains("bad.hcl") && log.contains("ports.http"), "{log}");

    // validate says the same without starting anything.
    let o = cli_at("127.0.0.1:1", &["validate", g.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("ports.http"));
    let ok = write_file(
        dir.path(),
        "ok.hcl",
        "datacenter = \"dc9\"\ndata_dir = \"/nonexistent\"\nacl { enabled = false }\n",
    );
    let o = cli_at("127.0.0.1:1", &["validate", ok.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Configuration is valid!"));
    assert!(!std::path::Path::new("/nonexistent").exists(), "validate writes nothing");
    // As Consul: a config without data_dir is not valid outside -dev.
    let empty = tempfile::tempdir().unwrap();
    write_file(empty.path(), "x.json", "{}");
    let o = cli_at("127.0.0.1:1", &["validate", empty.path().to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).trim(), "Config validation failed: data_dir cannot be empty");
}

#[test]
fn sigterm_and_leave_shut_down_cleanly_with_pid_file() {
    let dir = tempfile::tempdir().unwrap();
    let pid = dir.path().join("cairn.pid");
    let mut a = Agent::dev(&[&format!("-pid-file={}", pid.display())]);
    let written: u32 = std::fs::read_to_string(&pid).unwrap().trim().parse().unwrap();
    assert_eq!(Some(written), a.child.as_ref().map(|c| c.id()));
    assert_eq!(a.terminate(), Some(0));
    assert!(!pid.exists(), "the pid file is removed on exit");

    let mut b = Agent::dev(&[]);
    let o = b.cli(&["leave"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "Graceful leave complete\n");
    assert_eq!(b.wait_exit(), Some(0));
}

#[test]
fn reload_picks_up_new_services() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::dev(&[&format!("-config-dir={}", dir.path().display())]);
    write_file(dir.path(), "late.hcl", "service {\n  name = \"late\"\n  port = 1\n}\n");
    let o = a.cli(&["reload"]);
    assert!(o.status.success(), "{}", stderr(&o));
    wait_for(Duration::from_secs(10), "reloaded service in the catalog", || {
        let (_, _, b) = http("GET", &a.url("/v1/catalog/service/late"), None);
        (String::from_utf8_lossy(&b).contains("\"ServiceName\":\"late\"")).then_some(())
    });
}

#[test]
fn dev_agent_is_ready_quickly() {
    let t = std::time::Instant::now();
    let a = Agent::dev(&[]);
    // Generous bound for a loaded CI machine: the benchmark measures the real figure.
    assert!(t.elapsed() < Duration::from_secs(10));
    let (st, _, _) = http("GET", &a.url("/v1/agent/members"), None);
    assert_eq!(st, 200);
}

/// `limits.rpc_rate` / `rpc_max_burst`: the agent's own RPCs to the servers are rate-limited, as
/// Consul's; a refused call is a 429 `RPC rate limit exceeded`, agent-local endpoints are not
/// limited, and a reload changes the limit.
#[test]
fn rpc_rate_limits_the_agents_calls_to_the_servers_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    // One token every 1,000 s: the bucket's five are all this test gets.
    write_file(dir.path(), "limits.hcl", "limits {\n  rpc_rate = 0.001\n  rpc_max_burst = 5\n}\n");
    let a = Agent::spawn(&["-dev", "-node=e2e", &format!("-config-dir={}", dir.path().display())], free_port());
    a.wait_http();
    let mut ok = 0;
    let mut limited = 0;
    for _ in 0..20 {
        let (st, _, body) = http("GET", &a.url("/v1/kv/k"), None);
        match st {
            // 404: the key is absent, but the read reached the server.
            404 | 200 => ok += 1,
            429 => {
                assert_eq!(String::from_utf8_lossy(&body), "RPC rate limit exceeded");
                limited += 1;
            }
            other => panic!("unexpected status {other}: {}", String::from_utf8_lossy(&body)),
        }
    }
    assert!(ok <= 5, "at most the burst passes: {ok} passed");
    assert_eq!(ok + limited, 20);
    let (st, _, _) = http("GET", &a.url("/v1/agent/self"), None);
    assert_eq!(st, 200, "agent-local endpoints make no RPC");

    write_file(dir.path(), "limits.hcl", "limits {\n  rpc_max_burst = 5\n}\n");
    let o = a.cli(&["reload"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for _ in 0..50 {
        let (st, _, body) = http("GET", &a.url("/v1/kv/k"), None);
        assert_eq!(st, 404, "no limit after the reload: {}", String::from_utf8_lossy(&body));
    }

    // A rate that is not a number stops start-up, naming the key.
    let bad = tempfile::tempdir().unwrap();
    write_file(bad.path(), "limits.hcl", "data_dir = \"/nonexistent\"\nlimits {\n  rpc_rate = -2\n}\n");
    let o = cli_at("127.0.0.1:1", &["validate", bad.path().to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("limits.rpc_rate"), "{}", stderr(&o));
}
