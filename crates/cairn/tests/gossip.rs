//! The LAN pool with real processes: one server and four clients on 127.0.0.1-5, all on the same
//! serf port, with Consul's production LAN timings. Membership, failure detection reconciled into
//! the catalog, restart, events across the pool, keyring rotation, graceful leave, a wrong key.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{cli_at, free_port, http, stderr, stdout, wait_for, Agent};

const K1: &str = "HS5lJ+XuTlYKWaeGYyG+/A==";
const K2: &str = "5K9OtfP7efFrNKe5WCQvXvnaXJ5cWP0SvXiwe0kkjM4=";
const K3: &str = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";

fn get_json(a: &Agent, path: &str) -> Option<Value> {
    let (st, _, body) = http("GET", &a.url(path), None);
    (st == 200).then(|| serde_json::from_slice(&body).ok()).flatten()
}

/// name → status number, as this agent sees the pool.
fn statuses(a: &Agent) -> Vec<(String, i64)> {
    let v = get_json(a, "/v1/agent/members").unwrap_or(Value::Null);
    let mut out: Vec<(String, i64)> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| (m["Name"].as_str().unwrap_or_default().to_string(), m["Status"].as_i64().unwrap_or(0)))
        .collect();
    out.sort();
    out
}

fn status_of(a: &Agent, node: &str) -> Option<i64> {
    statuses(a).into_iter().find(|(n, _)| n == node).map(|(_, s)| s)
}

fn serf_health(server: &Agent, node: &str) -> Option<String> {
    let v = get_json(server, &format!("/v1/health/node/{node}"))?;
    v.as_array()?
        .iter()
        .find(|c| c["CheckID"] == "serfHealth")
        .map(|c| c["Status"].as_str().unwrap_or_default().to_string())
}

struct Cluster {
    agents: Vec<Agent>,
    dirs: Vec<tempfile::TempDir>,
    serf_port: u16,
}

fn args_for(i: usize, dir: &std::path::Path, serf_port: u16, key: &str) -> Vec<String> {
    let ip = format!("127.0.0.{}", i + 1);
    let mut a = vec![
        format!("-node=n{}", i + 1),
        format!("-bind={ip}"),
        "-client=127.0.0.1".to_string(),
        format!("-data-dir={}", dir.display()),
        format!("-serf-lan-port={serf_port}"),
        format!("-encrypt={key}"),
        "-log-level=debug".to_string(),
    ];
    if i == 0 {
        a.extend(["-server".to_string(), "-bootstrap".to_string(), "-serf-wan-port=-1".to_string()]);
    } else {
        a.extend([format!("-retry-join=127.0.0.1:{serf_port}"), "-retry-interval=1s".to_string()]);
    }
    a
}

fn spawn(i: usize, dir: &std::path::Path, serf_port: u16, key: &str) -> Agent {
    let args = args_for(i, dir, serf_port, key);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = Agent::spawn(&refs, free_port());
    if i == 0 {
        a.wait_ready();
    } else {
        a.wait_http();
    }
    a
}

impl Cluster {
    fn start(n: usize) -> Cluster {
        let serf_port = free_port();
        let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let agents = (0..n).map(|i| spawn(i, dirs[i].path(), serf_port, K1)).collect();
        Cluster { agents, dirs, serf_port }
    }

    fn all_see(&self, who: &[usize], node: &str, status: i64, secs: u64) {
        for &i in who {
            wait_for(Duration::from_secs(secs), &format!("n{} to see {node} with status {status}", i + 1), || {
                (status_of(&self.agents[i], node) == Some(status)).then_some(())
            });
        }
    }
}

#[test]
fn five_agents_gossip_fail_restart_rotate_keys_and_leave() {
    let mut c = Cluster::start(5);
    let all: Vec<usize> = (0..5).collect();
    for i in 1..=5 {
        c.all_see(&all, &format!("n{i}"), 1, 30);
    }
    let server = &c.agents[0];
    // Clients are in the catalog through the leader's reconciliation, with a passing serfHealth.
    for i in 2..=5 {
        wait_for(Duration::from_secs(20), "serfHealth passing", || {
            (serf_health(server, &format!("n{i}")).as_deref() == Some("passing")).then_some(())
        });
    }
    // Tags and protocol numbers as Consul reports them.
    let ms = get_json(&c.agents[2], "/v1/agent/members").unwrap();
    let n1 = ms.as_array().unwrap().iter().find(|m| m["Name"] == "n1").unwrap();
    assert_eq!(n1["Tags"]["role"], "consul");
    assert_eq!(n1["Addr"], "127.0.0.1");
    assert_eq!(n1["Port"].as_u64(), Some(c.serf_port as u64));
    assert_eq!((n1["ProtocolCur"].as_i64(), n1["DelegateCur"].as_i64()), (Some(2), Some(4)));
    let n3 = ms.as_array().unwrap().iter().find(|m| m["Name"] == "n3").unwrap();
    assert_eq!((n3["Tags"]["role"].as_str(), n3["Addr"].as_str()), (Some("node"), Some("127.0.0.3")));

    // A client has no server to ask yet: Consul's answer.
    let (st, _, body) = http("GET", &c.agents[1].url("/v1/kv/x"), None);
    assert_eq!((st, String::from_utf8_lossy(&body).as_ref()), (500, "No known Consul servers"));

    // An event fired on a client reaches every agent; one fired on the server goes through its
    // RPC (Consul's Internal.EventFire) and the pool. (Payloads are base64 in the list.)
    for (from, name, payload, b64) in [(3, "deploy", "v42", "djQy"), (0, "rollback", "v41", "djQx")] {
        let (st, _, _) = http("PUT", &c.agents[from].url(&format!("/v1/event/fire/{name}")), Some(payload.as_bytes()));
        assert_eq!(st, 200);
        for a in &c.agents {
            wait_for(Duration::from_secs(10), "the event on every agent", || {
                let v = get_json(a, &format!("/v1/event/list?name={name}"))?;
                (v.as_array()?.len() == 1 && v[0]["Payload"] == b64).then_some(())
            });
        }
    }

    // Keyring rotation across all five, with no loss of membership.
    let keyring = |args: &[&str]| cli_at(&c.agents[0].addr(), &[&["keyring"], args].concat(), None);
    // Key operations are Serf queries over UDP: a response lost on a loaded machine fails the
    // operation ("4/5 nodes reported success"), as in Consul, whose answer is to run it again
    // (each is idempotent). Each must succeed on all five within a few tries.
    let all_five = |args: &[&str]| {
        wait_for(Duration::from_secs(30), "a keyring operation acknowledged by all five", || {
            let o = keyring(args);
            o.status.success().then_some(())
        })
    };
    all_five(&["-install", K2]);
    let out = wait_for(Duration::from_secs(30), "both keys on all five", || {
        let out = stdout(&keyring(&["-list"]));
        (out.contains(&format!("{K1} [5/5]")) && out.contains(&format!("{K2} [5/5]"))).then_some(out)
    });
    assert!(out.contains(K2), "{out}");
    all_five(&["-use", K2]);
    all_five(&["-remove", K1]);
    let out = wait_for(Duration::from_secs(30), "only the new key on all five", || {
        let out = stdout(&keyring(&["-list"]));
        (out.contains(&format!("{K2} [5/5]")) && !out.contains(K1)).then_some(out)
    });
    assert!(!out.contains(K1), "{out}");
    let out = wait_for(Duration::from_secs(30), "the new primary key on all five", || {
        let out = stdout(&keyring(&["-list-primary"]));
        out.contains(&format!("{K2} [5/5]")).then_some(out)
    });
    assert!(out.contains(K2), "{out}");
    // Removing the primary key is refused by every node.
    let o = keyring(&["-remove", K2]);
    assert!(!o.status.success() && stderr(&o).contains("Removing the primary key is not allowed"), "{}", stderr(&o));
    // Every agent wrote its ring to data_dir/serf/local.keyring.
    for d in &c.dirs {
        let text = std::fs::read_to_string(d.path().join("serf/local.keyring")).unwrap();
        let keys: Vec<String> = serde_json::from_str(&text).unwrap();
        assert_eq!(keys, vec![K2.to_string()]);
    }
    assert_eq!(statuses(&c.agents[4]).iter().filter(|(_, s)| *s == 1).count(), 5);

    // SIGKILL a client: everyone marks it failed, and the catalog's serfHealth turns critical.
    c.agents[2].kill9();
    c.all_see(&[0, 1, 3, 4], "n3", 4, 40);
    wait_for(Duration::from_secs(20), "serfHealth critical", || {
        (serf_health(&c.agents[0], "n3").as_deref() == Some("critical")).then_some(())
    });
    // Restarted with no join address at all, it rejoins from its Serf snapshot (and its keyring
    // file wins over the old -encrypt key): alive again.
    let args: Vec<String> =
        args_for(2, c.dirs[2].path(), c.serf_port, K1).into_iter().filter(|a| !a.starts_with("-retry-")).collect();
    c.agents[2] = Agent::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), free_port());
    c.agents[2].wait_http();
    c.all_see(&all, "n3", 1, 40);
    wait_for(Duration::from_secs(20), "serfHealth passing again", || {
        (serf_health(&c.agents[0], "n3").as_deref() == Some("passing")).then_some(())
    });

    // A graceful leave is `left` to the others, and the node leaves the catalog.
    let o = c.agents[4].cli(&["leave"]);
    assert_eq!(stdout(&o).trim(), "Graceful leave complete");
    c.agents[4].wait_exit();
    c.all_see(&[0, 1, 2, 3], "n5", 3, 20);
    wait_for(Duration::from_secs(20), "n5 deregistered", || {
        let (st, _, _) = http("GET", &c.agents[0].url("/v1/catalog/node/n5"), None);
        let v = get_json(&c.agents[0], "/v1/catalog/node/n5");
        (st == 404 || v.is_some_and(|v| v.is_null())).then_some(())
    });

    // An agent with another key cannot join, and says so.
    let d6 = tempfile::tempdir().unwrap();
    let mut args = args_for(5, d6.path(), c.serf_port, K3);
    args.push("-retry-max=1".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut bad = Agent::spawn(&refs, free_port());
    assert_eq!(bad.wait_exit(), Some(1), "{}", bad.log_text());
    assert!(bad.log_text().contains("Failed to join"), "{}", bad.log_text());
    assert!(
        c.agents[0].log_text().contains("No installed keys could decrypt the message"),
        "{}",
        c.agents[0].log_text()
    );
    assert!(status_of(&c.agents[0], "n6").is_none());

    // Coordinates are measured: the leader writes what its probes learned (Error below a new
    // coordinate's 1.5), and `cairn rtt` estimates from them.
    wait_for(Duration::from_secs(40), "measured coordinates in the catalog", || {
        let v = get_json(&c.agents[0], "/v1/coordinate/nodes")?;
        let measured: Vec<&str> = v
            .as_array()?
            .iter()
            .filter(|e| e["Coord"]["Error"].as_f64().is_some_and(|x| x < 1.5))
            .filter_map(|e| e["Node"].as_str())
            .collect();
        // Coordinates arrive in the leader's batches, one node at a time: wait for both ends.
        (measured.len() >= 3 && measured.contains(&"n1") && measured.contains(&"n2")).then_some(())
    });
    let o = c.agents[0].cli(&["rtt", "n1", "n2"]);
    assert!(stdout(&o).contains("Estimated n1 <-> n2 rtt:"), "{} {}", stdout(&o), stderr(&o));

    // force-leave of an unknown node is Consul's error.
    let o = c.agents[0].cli(&["force-leave", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("No node found with name 'nope'"), "{}", stderr(&o));
}

#[test]
fn servers_of_two_datacenters_meet_in_the_wan_pool() {
    let (lan, wan) = (free_port(), free_port());
    let common = |ip: &str, dc: &str, node: &str| {
        vec![
            "-dev".to_string(),
            format!("-node={node}"),
            format!("-datacenter={dc}"),
            format!("-bind={ip}"),
            "-client=127.0.0.1".into(),
            format!("-serf-lan-port={lan}"),
            format!("-serf-wan-port={wan}"),
        ]
    };
    let a1 = common("127.0.0.1", "dc1", "s1");
    let s1 = Agent::spawn(&a1.iter().map(String::as_str).collect::<Vec<_>>(), free_port());
    s1.wait_ready();
    let mut a2 = common("127.0.0.2", "dc2", "s2");
    a2.push(format!("-retry-join-wan=127.0.0.1:{wan}"));
    let s2 = Agent::spawn(&a2.iter().map(String::as_str).collect::<Vec<_>>(), free_port());
    s2.wait_ready();
    for a in [&s1, &s2] {
        wait_for(Duration::from_secs(20), "both servers in the WAN pool", || {
            let v = get_json(a, "/v1/agent/members?wan=1")?;
            let mut names: Vec<String> =
                v.as_array()?.iter().map(|m| m["Name"].as_str().unwrap_or_default().to_string()).collect();
            names.sort();
            (names == ["s1.dc1", "s2.dc2"]).then_some(())
        });
    }
    // The LAN pool stays per datacenter.
    assert_eq!(statuses(&s1), vec![("s1".to_string(), 1)]);
    // Datacenters, the local one first.
    assert_eq!(get_json(&s1, "/v1/catalog/datacenters").unwrap(), serde_json::json!(["dc1", "dc2"]));
    assert_eq!(get_json(&s2, "/v1/catalog/datacenters").unwrap(), serde_json::json!(["dc2", "dc1"]));
    let o = s1.cli(&["members", "-wan"]);
    assert!(stdout(&o).contains("s2.dc2") && stdout(&o).contains(&format!("127.0.0.2:{wan}")), "{}", stdout(&o));
    // WAN coordinates by datacenter, node names without their suffix.
    wait_for(Duration::from_secs(20), "coordinates of both datacenters", || {
        let v = get_json(&s1, "/v1/coordinate/datacenters")?;
        let dcs: Vec<&str> = v.as_array()?.iter().filter_map(|d| d["Datacenter"].as_str()).collect();
        (dcs == ["dc1", "dc2"] && v[1]["Coordinates"][0]["Node"] == "s2" && v[1]["AreaID"] == "wan").then_some(())
    });
    // Flood join: a server of dc2 that joins only dc2's LAN pool is joined into the WAN pool by
    // s2 (its LAN address, its wan_join_port), so dc1 sees it too.
    let mut a3 = common("127.0.0.3", "dc2", "s3");
    a3.push(format!("-retry-join=127.0.0.2:{lan}"));
    let s3 = Agent::spawn(&a3.iter().map(String::as_str).collect::<Vec<_>>(), free_port());
    s3.wait_ready();
    wait_for(Duration::from_secs(20), "s3 flooded into the WAN pool", || {
        let v = get_json(&s1, "/v1/agent/members?wan=1")?;
        v.as_array()?
            .iter()
            .any(|m| m["Name"] == "s3.dc2" && m["Addr"] == "127.0.0.3" && m["Port"] == wan && m["Status"] == 1)
            .then_some(())
    });
}
