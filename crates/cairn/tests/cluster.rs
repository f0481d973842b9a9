//! Three real server processes on 127.0.0.1-3 form a Raft cluster through the LAN pool
//! (`-bootstrap-expect=3`, no server list), forward writes and reads to the leader, survive a
//! SIGKILL of the leader with no acknowledged write lost, and catch a restarted server up.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{free_port, http, stderr, stdout, wait_for, Agent};

struct Cluster {
    lan: u16,
    rpc: u16,
    dirs: Vec<tempfile::TempDir>,
    agents: Vec<Option<Agent>>,
    /// An extra config file every server loads.
    config: Option<(tempfile::TempDir, String)>,
}

impl Cluster {
    fn args(&self, i: usize) -> Vec<String> {
        vec![
            "-server".into(),
            "-bootstrap-expect=3".into(),
            format!("-node=s{i}"),
            format!("-bind=127.0.0.{}", i + 1),
            "-client=127.0.0.1".into(),
            format!("-data-dir={}", self.dirs[i].path().display()),
            format!("-serf-lan-port={}", self.lan),
            "-serf-wan-port=-1".into(),
            format!("-server-port={}", self.rpc),
            format!("-retry-join=127.0.0.1:{}", self.lan),
            "-retry-interval=1s".into(),
        ]
        .into_iter()
        .chain(self.config.as_ref().map(|(_, f)| format!("-config-file={f}")))
        .collect()
    }

    fn start(&mut self, i: usize) {
        let args = self.args(i);
        let a = Agent::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), free_port());
        a.wait_http();
        self.agents[i] = Some(a);
    }

    fn new() -> Cluster {
        Cluster::with_config(None)
    }

    /// Three servers that all load `hcl` as a config file.
    fn with_config(hcl: Option<&str>) -> Cluster {
        let config = hcl.map(|text| {
            let d = tempfile::tempdir().unwrap();
            let f = d.path().join("extra.hcl");
            std::fs::write(&f, text).unwrap();
            let f = f.to_str().unwrap().to_string();
            (d, f)
        });
        let mut c = Cluster {
            lan: free_port(),
            rpc: free_port(),
            dirs: (0..3).map(|_| tempfile::tempdir().unwrap()).collect(),
            agents: vec![None, None, None],
            config,
        };
        for i in 0..3 {
            c.start(i);
        }
        c
    }

    fn agent(&self, i: usize) -> &Agent {
        self.agents[i].as_ref().expect("running")
    }

    fn leader(&self, i: usize) -> Option<String> {
        let (code, _, body) = http("GET", &self.agent(i).url("/v1/status/leader"), None);
        let v: Value = serde_json::from_slice(&body).ok()?;
        let s = v.as_str()?.to_string();
        (code == 200 && !s.is_empty()).then_some(s)
    }

    /// Waits until every running server names the same leader; returns its index.
    fn agreed_leader(&self) -> usize {
        wait_for(Duration::from_secs(30), "the servers to agree on a leader", || {
            let mut names = Vec::new();
            for (i, a) in self.agents.iter().enumerate() {
                if a.is_some() {
                    names.push(self.leader(i)?);
                }
            }
            let first = names[0].clone();
            if !names.iter().all(|n| *n == first) {
                return None;
            }
            let ip = first.split(':').next()?.to_string();
            (0..3).find(|i| self.agents[*i].is_some() && ip == format!("127.0.0.{}", i + 1))
        })
    }
}

fn put(a: &Agent, key: &str, value: &str) -> Option<bool> {
    let (code, _, body) = http("PUT", &a.url(&format!("/v1/kv/{key}")), Some(value.as_bytes()));
    (code == 200).then(|| body == b"true")
}

fn get(a: &Agent, key: &str, mode: &str) -> (u16, String, Option<String>) {
    let (code, headers, body) = http("GET", &a.url(&format!("/v1/kv/{key}?raw{mode}")), None);
    (code, headers, (code == 200).then(|| String::from_utf8_lossy(&body).into_owned()))
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn three_servers_form_forward_fail_over_and_catch_up() {
    // Autopilot's dead-server cleanup is off here: the test removes and re-adds servers by hand.
    let mut c = Cluster::with_config(Some("autopilot { cleanup_dead_servers = false }"));
    let leader = c.agreed_leader();
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    // Every server lists the three voters.
    for i in 0..3 {
        wait_for(Duration::from_secs(20), "three raft peers", || {
            let (_, _, body) = http("GET", &c.agent(i).url("/v1/status/peers"), None);
            let v: Value = serde_json::from_slice(&body).ok()?;
            (v.as_array()?.len() == 3).then_some(())
        });
    }

    // A write sent to a follower is forwarded to the leader; reads on the other follower see it in
    // every consistency mode once they return.
    let (f1, f2) = (followers[0], followers[1]);
    assert_eq!(put(c.agent(f1), "cluster/a", "one"), Some(true));
    for mode in ["", "&consistent"] {
        let (code, headers, v) = get(c.agent(f2), "cluster/a", mode);
        assert_eq!((code, v.as_deref()), (200, Some("one")), "mode {mode:?}");
        assert_eq!(header(&headers, "X-Consul-KnownLeader"), Some("true"));
    }
    wait_for(Duration::from_secs(10), "a stale read on the follower", || {
        let (_, headers, v) = get(c.agent(f2), "cluster/a", "&stale");
        let contact: u64 = header(&headers, "X-Consul-LastContact")?.parse().ok()?;
        (v.as_deref() == Some("one") && contact < 5_000).then_some(())
    });

    // SIGKILL the leader while writes go to a survivor: a new leader is elected, writes are
    // accepted again, and no acknowledged write is lost.
    let survivor = f1;
    let mut acked = Vec::new();
    for n in 0..20 {
        if put(c.agent(survivor), &format!("cluster/before/{n}"), "v") == Some(true) {
            acked.push(format!("cluster/before/{n}"));
        }
    }
    assert_eq!(acked.len(), 20, "a healthy cluster acknowledges every write");
    c.agents[leader].take().unwrap().kill9();
    let mut n = 0;
    wait_for(Duration::from_secs(30), "writes to be accepted after the leader died", || {
        n += 1;
        let key = format!("cluster/after/{n}");
        let ok = put(c.agent(survivor), &key, "v") == Some(true);
        if ok {
            acked.push(key);
        }
        ok.then_some(())
    });
    let new_leader = c.agreed_leader();
    assert_ne!(new_leader, leader);
    for key in &acked {
        for i in &followers {
            let (code, _, v) = get(c.agent(*i), key, "&consistent");
            assert_eq!((code, v.as_deref()), (200, Some("v")), "acknowledged write {key} on s{i}");
        }
    }

    // The dead server restarts from its data dir, rejoins and catches up on what it missed.
    c.start(leader);
    let last = acked.last().unwrap().clone();
    wait_for(Duration::from_secs(30), "the restarted server to catch up", || {
        let (_, _, v) = get(c.agent(leader), &last, "&stale");
        (v.as_deref() == Some("v")).then_some(())
    });
    assert_eq!(c.agreed_leader(), new_leader, "a returning server does not disturb the leader");

    // Operator views: the configuration names every server by node name and node UUID.
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let (_, _, body) = http("GET", &c.agent(i).url("/v1/agent/self"), None);
            let v: Value = serde_json::from_slice(&body).unwrap();
            v["Config"]["NodeID"].as_str().unwrap().to_string()
        })
        .collect();
    let (_, _, body) = http("GET", &c.agent(leader).url("/v1/operator/raft/configuration"), None);
    let v: Value = serde_json::from_slice(&body).unwrap();
    let mut seen: Vec<(String, String, bool)> = v["Servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["Node"].as_str().unwrap().to_string(), s["ID"].as_str().unwrap().to_string(), s["Voter"] == true))
        .collect();
    seen.sort();
    let want: Vec<(String, String, bool)> = (0..3).map(|i| (format!("s{i}"), ids[i].clone(), true)).collect();
    assert_eq!(seen, want, "{v}");
    // The index the configuration was written at (openraft writes the first one at index 0).
    assert!(v["Index"].is_u64(), "{v}");
    let o = c.agent(survivor).cli(&["operator", "raft", "list-peers"]);
    let out = stdout(&o);
    assert!(out.starts_with("Node") && out.contains("Trails Leader By"), "{out}");
    assert_eq!(out.lines().filter(|l| l.contains(" leader ")).count(), 1, "{out}");
    assert_eq!(out.lines().count(), 4, "{out}");

    // Hand leadership to a chosen follower.
    let target = (0..3).find(|i| *i != new_leader).unwrap();
    let o = c.agent(survivor).cli(&["operator", "raft", "transfer-leader", &format!("-id={}", ids[target])]);
    assert_eq!((o.status.code(), stdout(&o).trim()), (Some(0), "Success"), "{}", stderr(&o));
    assert_eq!(c.agreed_leader(), target);

    // remove-peer: Consul's refusals, then a stopped server leaves the configuration...
    let o = c.agent(target).cli(&["operator", "raft", "remove-peer"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("an address or id is required"), "{}", stderr(&o));
    let (code, _, body) = http("DELETE", &c.agent(target).url("/v1/operator/raft/peer?address=10.9.9.9:8300"), None);
    assert_eq!(
        (code, String::from_utf8_lossy(&body).trim()),
        (500, "address \"10.9.9.9:8300\" was not found in the Raft configuration")
    );
    let unknown = "6f3c2a47-0000-4000-8000-000000000009";
    let (code, _, body) = http("DELETE", &c.agent(target).url(&format!("/v1/operator/raft/peer?id={unknown}")), None);
    assert_eq!(
        (code, String::from_utf8_lossy(&body).trim()),
        (500, format!("id {unknown:?} was not found in the Raft configuration").as_str())
    );
    let (code, _, body) = http("DELETE", &c.agent(target).url("/v1/operator/raft/peer?id=a&address=b"), None);
    assert_eq!((code, String::from_utf8_lossy(&body).trim()), (400, "Must specify only one of ?id or ?address"));
    // transfer-leader to a server that is not in the configuration: Consul's error, nothing moves.
    let (code, _, body) =
        http("POST", &c.agent(survivor).url(&format!("/v1/operator/raft/transfer-leader?id={unknown}")), None);
    assert_eq!(code, 500);
    assert!(String::from_utf8_lossy(&body).starts_with("Could not find address for server id"), "{body:?}");
    assert_eq!(c.agreed_leader(), target);
    let gone = (0..3).find(|i| *i != target).unwrap();
    c.agents[gone].take().unwrap().kill9();
    let addr = format!("127.0.0.{}:{}", gone + 1, c.rpc);
    let o = c.agent(target).cli(&["operator", "raft", "remove-peer", &format!("-address={addr}")]);
    assert_eq!(stdout(&o).trim(), format!("Removed peer with address {addr:?}"), "{}", stderr(&o));
    let peers = |c: &Cluster, i: usize| -> usize {
        let (_, _, body) = http("GET", &c.agent(i).url("/v1/status/peers"), None);
        serde_json::from_slice::<Value>(&body).ok().and_then(|v| v.as_array().map(Vec::len)).unwrap_or(0)
    };
    assert_eq!(peers(&c, target), 2);
    // ...and when it comes back, the leader adds it as a non-voter and promotes it once it has
    // kept up for the stabilization time.
    c.start(gone);
    wait_for(Duration::from_secs(60), "the returning server to be a voter again", || {
        (peers(&c, target) == 3).then_some(())
    });
    assert_eq!(c.agreed_leader(), target);

    // A server that leaves gracefully is taken out of the configuration, so the two left are a
    // quorum of their own and go on taking writes.
    let leaving = (0..3).find(|i| *i != target).unwrap();
    let o = c.agent(leaving).cli(&["leave"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(c.agents[leaving].as_mut().unwrap().wait_exit(), Some(0));
    c.agents[leaving] = None;
    wait_for(Duration::from_secs(30), "the server that left to leave the configuration", || {
        (peers(&c, target) == 2).then_some(())
    });
    assert_eq!(put(c.agent(target), "cluster/after-leave", "v"), Some(true));
}

#[test]
fn a_lone_server_without_a_server_port_must_bootstrap() {
    // Peers could not reach it: Consul refuses the same.
    let dir = tempfile::tempdir().unwrap();
    let d = format!("-data-dir={}", dir.path().display());
    let mut a = Agent::spawn(&["-server", "-bootstrap-expect=3", &d, "-bind=127.0.0.1"], free_port());
    assert_eq!(a.wait_exit(), Some(1));
    assert!(a.log_text().contains("server-port must be greater than zero"), "{}", a.log_text());
}

#[test]
fn a_lone_server_has_nobody_to_transfer_leadership_to() {
    // hashicorp/raft's words, which Consul passes on; the server stays leader.
    let a = Agent::dev(&[]);
    let (code, _, body) = http("POST", &a.url("/v1/operator/raft/transfer-leader"), None);
    assert_eq!((code, String::from_utf8_lossy(&body).trim()), (500, "cannot find peer"));
    let o = a.cli(&["operator", "raft", "transfer-leader"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot find peer"), "{}", stderr(&o));
    let (code, _, body) = http("GET", &a.url("/v1/status/leader"), None);
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&body).len() > 2, "still a leader");
}

#[test]
fn concurrent_clients_see_one_linearizable_history_across_a_leader_crash() {
    use cairn_sim::linearizability::{check_by_key, Input, Operation, Output, Verdict};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    let mut c = Cluster::new();
    let leader = c.agreed_leader();
    let urls: Arc<Vec<String>> = Arc::new((0..3).map(|i| c.agent(i).url("")).collect());
    let start = Instant::now();
    let history: Arc<Mutex<Vec<Operation>>> = Default::default();
    let ns = move || start.elapsed().as_nanos() as u64;
    let clients = 4;
    let mut threads = Vec::new();
    for t in 0..clients {
        let (history, urls) = (history.clone(), urls.clone());
        threads.push(std::thread::spawn(move || {
            let req = |i: usize, method: &str, path: &str, body: Option<&[u8]>| {
                let (code, _, b) = http(method, &format!("{}{path}", urls[i]), body);
                (code, b)
            };
            let session = crate::linclient::session(&req, t % 3);
            let shared = crate::linclient::Shared { history: &history, now: &ns, stop: &|| false };
            crate::linclient::run(t, 45, 3, &session, &shared, &req);
        }));
    }
    // Crash the leader while the clients are busy.
    wait_for(Duration::from_secs(60), "the clients to get going", || {
        (history.lock().unwrap().len() >= 40).then_some(())
    });
    let crash = ns();
    c.agents[leader].take().unwrap().kill9();
    for t in threads {
        t.join().unwrap();
    }
    let h = history.lock().unwrap().clone();
    let after = h.iter().filter(|o| o.call > crash && matches!(o.output, Some(Output::Ok(true)))).count();
    assert!(after > 0, "writes were accepted again after the crash");
    let unknown = h.iter().filter(|o| o.output.is_none()).count();
    eprintln!("history: {} operations, {unknown} of unknown outcome, {after} writes accepted after the crash", h.len());
    let verdict = check_by_key(&h, 50_000_000);
    assert_eq!(verdict, Verdict::Linearizable, "{} operations ({unknown} of unknown outcome): {h:#?}", h.len());
    // The checker is not blind to this history: one forged read makes it fail.
    let mut forged = h.clone();
    let read = forged.iter_mut().find(|o| o.input == Input::Get && o.output.is_some()).expect("a read");
    read.output = Some(Output::Value(Some("never written".into())));
    assert!(matches!(check_by_key(&forged, 50_000_000), Verdict::Violation(_)));
}

#[test]
fn a_snapshot_saved_from_one_server_restores_into_all() {
    let c = Cluster::new();
    let leader = c.agreed_leader();
    let (f1, f2) = {
        let f: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        (f[0], f[1])
    };
    assert_eq!(put(c.agent(f1), "snap/a", "1"), Some(true));
    assert_eq!(put(c.agent(f1), "snap/b", "2"), Some(true));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.snap");
    let file = file.to_str().unwrap();
    let o = c.agent(f1).cli(&["snapshot", "save", file]);
    assert!(stdout(&o).starts_with("Saved and verified snapshot to index "), "{} {}", stdout(&o), stderr(&o));
    let o = c.agent(f1).cli(&["snapshot", "inspect", file]);
    let out = stdout(&o);
    for field in ["ID", "Size", "Index", "Term", "Version"] {
        assert!(out.lines().any(|l| l.trim_start().starts_with(field)), "{out}");
    }
    // `-stale`: a follower saves from its own state, and says how current it was.
    let stale_file = dir.path().join("stale.snap");
    let o = c.agent(f2).cli(&["snapshot", "save", "-stale", stale_file.to_str().unwrap()]);
    assert!(stdout(&o).starts_with("Saved and verified snapshot to index "), "{} {}", stdout(&o), stderr(&o));
    let (code, headers, body) = http("GET", &c.agent(f2).url("/v1/snapshot?stale"), None);
    assert_eq!(code, 200);
    assert!(!body.is_empty());
    assert_eq!(header(&headers, "X-Consul-KnownLeader"), Some("true"));
    let contact: u64 = header(&headers, "X-Consul-LastContact").unwrap().parse().unwrap();
    assert!(contact < 5_000, "the follower heard from its leader {contact} ms ago");
    let index: u64 = header(&headers, "X-Consul-Index").unwrap().parse().unwrap();
    assert!(index > 1);

    // The state moves on; a blocking query waits on one of the keys.
    assert_eq!(put(c.agent(f2), "snap/a", "changed"), Some(true));
    let (_, _, _) = http("DELETE", &c.agent(f2).url("/v1/kv/snap/b"), None);
    assert_eq!(put(c.agent(f2), "snap/c", "3"), Some(true));
    let (_, headers, _) = get(c.agent(f2), "snap/a", "");
    let before: u64 = header(&headers, "X-Consul-Index").unwrap().parse().unwrap();
    // (The wait outlasts the client's 30 s timeout: only a wake-up answers it.)
    let url = c.agent(f2).url(&format!("/v1/kv/snap/a?raw&index={before}&wait=10m"));
    let waiter = std::thread::spawn(move || http("GET", &url, None));
    let (_, headers, _) = http("GET", &c.agent(f2).url("/v1/catalog/nodes"), None);
    let list_before: u64 = header(&headers, "X-Consul-Index").unwrap().parse().unwrap();

    // A damaged archive is refused and changes nothing.
    let mut bytes = std::fs::read(file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let bad = dir.path().join("bad.snap");
    std::fs::write(&bad, &bytes).unwrap();
    let o = c.agent(leader).cli(&["snapshot", "restore", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert_eq!(get(c.agent(leader), "snap/a", "&consistent").2.as_deref(), Some("changed"));

    // Restored through the leader: every server holds the saved state again.
    let o = c.agent(leader).cli(&["snapshot", "restore", file]);
    assert_eq!((o.status.code(), stdout(&o).trim()), (Some(0), "Restored snapshot"), "{}", stderr(&o));
    for i in 0..3 {
        assert_eq!(get(c.agent(i), "snap/a", "&consistent").2.as_deref(), Some("1"), "s{i}");
        assert_eq!(get(c.agent(i), "snap/b", "&consistent").2.as_deref(), Some("2"), "s{i}");
        assert_eq!(get(c.agent(i), "snap/c", "&consistent").0, 404, "s{i}");
    }
    // The waiting query was abandoned by the restore, as Consul's are, and answered with the
    // restored entry (whose index, its ModifyIndex from the backup, may be below the one waited on:
    // Consul's clients start over when an index goes back).
    let (code, _, body) = waiter.join().unwrap();
    assert_eq!((code, String::from_utf8_lossy(&body).as_ref()), (200, "1"));
    // Table indexes only grow: the catalog's moved past where it was.
    let (_, headers, _) = http("GET", &c.agent(f2).url("/v1/catalog/nodes"), None);
    let list_after: u64 = header(&headers, "X-Consul-Index").unwrap().parse().unwrap();
    assert!(list_after > list_before, "index {list_before} then {list_after}");
}

#[test]
fn autopilot_reports_health_takes_its_configuration_and_cleans_up_a_dead_server() {
    let mut c = Cluster::new();
    let leader = c.agreed_leader();
    let a = c.agent(leader);
    // Healthy, one failure tolerated.
    let v = wait_for(Duration::from_secs(20), "a healthy cluster", || {
        let (code, _, body) = http("GET", &a.url("/v1/operator/autopilot/health"), None);
        let v: Value = serde_json::from_slice(&body).ok()?;
        (code == 200 && v["Healthy"] == true).then_some(v)
    });
    assert_eq!(v["FailureTolerance"], 1, "{v}");
    assert_eq!(v["Servers"].as_array().unwrap().len(), 3);
    assert!(v["Servers"].as_array().unwrap().iter().all(|s| s["SerfStatus"] == "alive" && s["Voter"] == true), "{v}");
    let (_, _, body) = http("GET", &a.url("/v1/operator/autopilot/state"), None);
    let st: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(st["Voters"].as_array().unwrap().len(), 3, "{st}");

    // The configuration: Consul's defaults, written in by the first leader; CAS on its index.
    let cfg = wait_for(Duration::from_secs(20), "the leader to write the configuration in", || {
        let (_, _, body) = http("GET", &a.url("/v1/operator/autopilot/configuration"), None);
        let cfg: Value = serde_json::from_slice(&body).ok()?;
        (cfg["ModifyIndex"].as_u64()? > 0).then_some(cfg)
    });
    assert_eq!(
        (cfg["CleanupDeadServers"].clone(), cfg["ServerStabilizationTime"].clone()),
        (Value::Bool(true), Value::from("10s"))
    );
    let index = cfg["ModifyIndex"].as_u64().unwrap();
    let mut changed = cfg.clone();
    changed["MaxTrailingLogs"] = 500.into();
    let body = serde_json::to_vec(&changed).unwrap();
    let (code, _, out) =
        http("PUT", &a.url(&format!("/v1/operator/autopilot/configuration?cas={}", index + 1000)), Some(&body));
    assert_eq!((code, out.as_slice()), (200, b"false".as_slice()), "a stale CAS fails");
    let (code, _, out) = http("PUT", &a.url(&format!("/v1/operator/autopilot/configuration?cas={index}")), Some(&body));
    assert_eq!((code, out.as_slice()), (200, b"true".as_slice()));
    let (code, _, out) =
        http("PUT", &a.url("/v1/operator/autopilot/configuration"), Some(br#"{"MaxTrailingLogs": "many"}"#));
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&out));
    let f = (0..3).find(|i| *i != leader).unwrap();
    let o = c.agent(f).cli(&["operator", "autopilot", "get-config"]);
    assert!(
        stdout(&o).contains("MaxTrailingLogs = 500") && stdout(&o).contains("CleanupDeadServers = true"),
        "{}",
        stdout(&o)
    );
    let o = c.agent(f).cli(&["operator", "autopilot", "set-config", "-server-stabilization-time=5s"]);
    assert_eq!(stdout(&o).trim(), "Configuration updated!", "{}", stderr(&o));
    let o = c.agent(f).cli(&["operator", "autopilot", "get-config"]);
    assert!(
        stdout(&o).contains("ServerStabilizationTime = 5s") && stdout(&o).contains("MaxTrailingLogs = 500"),
        "{}",
        stdout(&o)
    );
    let o = c.agent(f).cli(&["operator", "autopilot", "state"]);
    assert!(stdout(&o).contains("Healthy:") && stdout(&o).contains("Voters:"), "{}", stdout(&o));

    // A follower dies: once gossip marks it failed, autopilot takes it out of the configuration
    // (two of three still make a quorum), and the cluster is healthy again with no tolerance.
    let dead = (0..3).find(|i| *i != leader && *i != f).unwrap();
    c.agents[dead].take().unwrap().kill9();
    let a = c.agent(leader);
    wait_for(Duration::from_secs(60), "autopilot to remove the dead server", || {
        let (_, _, body) = http("GET", &a.url("/v1/status/peers"), None);
        let v: Value = serde_json::from_slice(&body).ok()?;
        (v.as_array()?.len() == 2).then_some(())
    });
    let v = wait_for(Duration::from_secs(20), "a healthy two-server cluster", || {
        let (code, _, body) = http("GET", &a.url("/v1/operator/autopilot/health"), None);
        let v: Value = serde_json::from_slice(&body).ok()?;
        (code == 200 && v["Healthy"] == true).then_some(v)
    });
    assert_eq!(v["FailureTolerance"], 0, "{v}");
    assert_eq!(put(c.agent(f), "ap/after", "1"), Some(true), "the two still take writes");
}

/// Kills every server but `survivor` and stops it too; returns its node ID.
fn lose_the_quorum(c: &mut Cluster, survivor: usize) -> String {
    let (_, _, body) = http("GET", &c.agent(survivor).url("/v1/agent/self"), None);
    let v: Value = serde_json::from_slice(&body).unwrap();
    let id = v["Config"]["NodeID"].as_str().unwrap().to_string();
    c.agents[survivor].take().unwrap().kill9();
    id
}

fn leads_alone(c: &Cluster, i: usize) {
    let me = format!("127.0.0.{}:{}", i + 1, c.rpc);
    wait_for(Duration::from_secs(30), "the survivor to lead a cluster of one", || {
        let (_, _, body) = http("GET", &c.agent(i).url("/v1/status/peers"), None);
        let peers: Value = serde_json::from_slice(&body).ok()?;
        (c.leader(i)? == me && peers == serde_json::json!([me])).then_some(())
    });
}

#[test]
fn a_survivor_of_a_lost_quorum_is_recovered_by_the_operator() {
    let mut c = Cluster::new();
    let leader = c.agreed_leader();
    assert_eq!(put(c.agent(leader), "rec/a", "1"), Some(true));
    let survivor = (0..3).find(|i| *i != leader).unwrap();
    // Every server has the write before the others go.
    wait_for(Duration::from_secs(10), "the survivor to have the write", || {
        (get(c.agent(survivor), "rec/a", "&stale").2.as_deref() == Some("1")).then_some(())
    });
    let _ = lose_the_quorum(&mut c, survivor);
    let dir = c.dirs[survivor].path().to_str().unwrap().to_string();
    let recover = |extra: &[&str]| {
        let mut args = vec!["operator", "raft", "recover"];
        let d = format!("-data-dir={dir}");
        args.push(&d);
        args.extend_from_slice(extra);
        crate::harness::cli_at("127.0.0.1:1", &args, None)
    };
    // The two others still answer: a quorum is reachable, so recovery is refused.
    let o = recover(&["-yes"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("Refusing to recover"), "{}", stderr(&o));
    for i in 0..3 {
        if let Some(a) = c.agents[i].take() {
            let mut a = a;
            a.kill9();
        }
    }
    // Without -yes: the plan only.
    let o = recover(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let plan = stdout(&o);
    assert!(
        plan.contains("Current configuration")
            && plan.contains("(this server)")
            && plan.contains("Run again with -yes"),
        "{plan}"
    );
    let o = recover(&["-yes"]);
    assert_eq!(o.status.code(), Some(0), "{} {}", stdout(&o), stderr(&o));
    // Started again, it leads alone, with the data, and takes writes.
    c.start(survivor);
    leads_alone(&c, survivor);
    assert_eq!(get(c.agent(survivor), "rec/a", "&consistent").2.as_deref(), Some("1"));
    assert_eq!(put(c.agent(survivor), "rec/b", "2"), Some(true));
}

#[test]
fn consuls_peers_json_recovers_a_survivor_at_start() {
    let mut c = Cluster::new();
    let leader = c.agreed_leader();
    assert_eq!(put(c.agent(leader), "pj/a", "1"), Some(true));
    let survivor = (0..3).find(|i| *i != leader).unwrap();
    wait_for(Duration::from_secs(10), "the survivor to have the write", || {
        (get(c.agent(survivor), "pj/a", "&stale").2.as_deref() == Some("1")).then_some(())
    });
    let id = lose_the_quorum(&mut c, survivor);
    for i in 0..3 {
        if let Some(mut a) = c.agents[i].take() {
            a.kill9();
        }
    }
    let raft = c.dirs[survivor].path().join("raft");
    let addr = format!("127.0.0.{}:{}", survivor + 1, c.rpc);
    std::fs::write(raft.join("peers.json"), format!(r#"[{{"id": "{id}", "address": "{addr}", "non_voter": false}}]"#))
        .unwrap();
    c.start(survivor);
    leads_alone(&c, survivor);
    assert!(!raft.join("peers.json").exists() && raft.join("peers.info").exists(), "applied once");
    assert_eq!(get(c.agent(survivor), "pj/a", "&consistent").2.as_deref(), Some("1"));
    assert_eq!(put(c.agent(survivor), "pj/b", "2"), Some(true));
}

#[test]
fn a_follower_far_behind_catches_up_by_snapshot() {
    // Snapshots every 16 entries keeping one: a follower down for 200 writes finds the leader's log
    // purged past it and must be sent a snapshot over the server port. The state holds 12 MB of
    // values, so the snapshot crosses in several chunks (4 MiB each), and writes go on all the
    // while the follower restarts and catches up.
    let mut c = Cluster::with_config(Some(
        "raft_snapshot_threshold = 16\nraft_snapshot_interval = \"50ms\"\nraft_trailing_logs = 1\nautopilot { cleanup_dead_servers = false }\n",
    ));
    let leader = c.agreed_leader();
    let f = (0..3).find(|i| *i != leader).unwrap();
    c.agents[f].take().unwrap().kill9();
    let big = "x".repeat(400 * 1024);
    for n in 0..30 {
        assert_eq!(put(c.agent(leader), &format!("snapbig/{n}"), &format!("{n}{big}")), Some(true));
    }
    for n in 0..200 {
        assert_eq!(put(c.agent(leader), &format!("snapcatch/{n}"), &format!("v{n}")), Some(true));
    }
    let raft_stat = |a: &Agent, k: &str| -> u64 {
        let (_, _, body) = http("GET", &a.url("/v1/agent/self"), None);
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        v["Stats"]["raft"][k].as_str().and_then(|s| s.parse().ok()).unwrap_or(0)
    };
    let snap = wait_for(Duration::from_secs(20), "the leader to snapshot past the follower", || {
        let s = raft_stat(c.agent(leader), "last_snapshot_index");
        (s > 180).then_some(s)
    });

    // A client keeps writing to the leader through the restart and the catch-up.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = c.agent(leader).url("/v1/kv/snapload/");
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (code, _, body) = http("PUT", &format!("{url}{n}"), Some(b"w"));
                if code == 200 && body == b"true" {
                    acked.push(n);
                }
                n += 1;
            }
            acked
        })
    };
    c.start(f);
    wait_for(Duration::from_secs(60), "the follower to catch up", || {
        (get(c.agent(f), "snapcatch/199", "&stale").2.as_deref() == Some("v199")).then_some(())
    });
    // A few more writes once it is back, so some reach it by log after the snapshot.
    let base = wait_for(Duration::from_secs(10), "the writer to be under way", || {
        let (_, _, body) = http("GET", &c.agent(leader).url("/v1/kv/snapload/?keys"), None);
        serde_json::from_slice::<Vec<String>>(&body).ok().map(|k| k.len()).filter(|n| *n > 0)
    });
    wait_for(Duration::from_secs(30), "more writes after the catch-up", || {
        let (_, _, body) = http("GET", &c.agent(leader).url("/v1/kv/snapload/?keys"), None);
        serde_json::from_slice::<Vec<String>>(&body).ok().filter(|k| k.len() >= base + 20).map(|_| ())
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.join().unwrap();
    assert!(!acked.is_empty());
    // Every acknowledged write reaches the follower.
    let last = format!("snapload/{}", acked.last().unwrap());
    wait_for(Duration::from_secs(30), "the follower to hold the last acknowledged write", || {
        (get(c.agent(f), &last, "&stale").2.as_deref() == Some("w")).then_some(())
    });
    let (_, _, body) = http("GET", &c.agent(f).url("/v1/kv/snapload/?keys&stale"), None);
    let held: std::collections::BTreeSet<String> = serde_json::from_slice(&body).unwrap();
    for n in &acked {
        assert!(held.contains(&format!("snapload/{n}")), "acknowledged write snapload/{n} missing on the follower");
    }
    // It holds a snapshot from the leader (it could not have built one from entries it never had).
    assert!(raft_stat(c.agent(f), "last_snapshot_index") >= snap - 16, "snapshot at {snap}");
    for n in [0, 57, 123] {
        assert_eq!(get(c.agent(f), &format!("snapcatch/{n}"), "&stale").2, Some(format!("v{n}")));
    }
    for n in [0, 17, 29] {
        let (code, _, v) = get(c.agent(f), &format!("snapbig/{n}"), "&stale");
        assert_eq!(code, 200);
        assert!(v.as_deref() == Some(format!("{n}{big}").as_str()), "snapbig/{n} differs on the follower");
    }
}

#[test]
fn five_servers_tolerate_two_failures_not_three() {
    let lan = free_port();
    let rpc = free_port();
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut agents: Vec<Option<Agent>> = (0..5)
        .map(|i| {
            let args = [
                "-server".to_string(),
                "-bootstrap-expect=5".into(),
                format!("-node=f{i}"),
                format!("-bind=127.0.0.{}", i + 1),
                "-client=127.0.0.1".into(),
                format!("-data-dir={}", dirs[i].path().display()),
                format!("-serf-lan-port={lan}"),
                "-serf-wan-port=-1".into(),
                format!("-server-port={rpc}"),
                format!("-retry-join=127.0.0.1:{lan}"),
                "-retry-interval=1s".into(),
            ];
            let a = Agent::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), free_port());
            a.wait_http();
            Some(a)
        })
        .collect();
    let leader_of = |a: &Agent| -> Option<usize> {
        let (code, _, body) = http("GET", &a.url("/v1/status/leader"), None);
        let s: String = serde_json::from_slice(&body).ok()?;
        let ip = s.split(':').next()?.to_string();
        (code == 200).then(|| (0..5).find(|i| ip == format!("127.0.0.{}", i + 1)))?
    };
    let agreed = |agents: &[Option<Agent>]| -> usize {
        wait_for(Duration::from_secs(40), "five servers to agree on a leader", || {
            let leaders: Vec<usize> = agents.iter().flatten().map(leader_of).collect::<Option<_>>()?;
            leaders.iter().all(|l| *l == leaders[0]).then(|| leaders[0])
        })
    };
    let leader = agreed(&agents);
    let (_, _, body) = http("GET", &agents[leader].as_ref().unwrap().url("/v1/status/peers"), None);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap().as_array().unwrap().len(), 5);
    // Two go (the leader among them): the other three elect one and take writes.
    let other = (0..5).find(|i| *i != leader).unwrap();
    agents[leader].take().unwrap().kill9();
    agents[other].take().unwrap().kill9();
    let alive: Vec<usize> = (0..5).filter(|i| agents[*i].is_some()).collect();
    let url = agents[alive[0]].as_ref().unwrap().url("/v1/kv/five/a");
    wait_for(Duration::from_secs(30), "three of five to take writes", || {
        let (code, _, body) = http("PUT", &url, Some(b"1"));
        (code == 200 && body == b"true").then_some(())
    });
    assert_eq!(get(agents[alive[2]].as_ref().unwrap(), "five/a", "&consistent").2.as_deref(), Some("1"));
    // A third goes: two of five are no quorum; writes are refused with Consul's error.
    agents[alive[1]].take().unwrap().kill9();
    let (code, _, body) = http("PUT", &url.replace("five/a", "five/b"), Some(b"2"));
    // Consul's two answers, depending on whether the leader had noticed yet.
    let msg = String::from_utf8_lossy(&body).trim().to_string();
    assert_eq!(code, 500, "{msg}");
    assert!(msg == "No cluster leader" || msg == "leadership lost while committing log", "{msg}");
}

/// A follower holds hundreds of its clients' blocking queries (default consistency: it answers
/// them itself once it has caught up to the leader's read point), forwards a write meanwhile,
/// and one change of the key answers every one of them.
#[test]
fn a_follower_holds_hundreds_of_blocking_queries_and_still_forwards_writes() {
    use std::io::{Read, Write};
    const HELD: usize = 600;
    let c = Cluster::with_config(Some("limits { http_max_conns_per_client = 2000 }"));
    let leader = c.agreed_leader();
    let f = (0..3).find(|i| *i != leader).unwrap();
    assert_eq!(put(c.agent(f), "held/key", "0"), Some(true));
    let (_, headers, _) = get(c.agent(f), "held/key", "");
    let index: u64 = header(&headers, "X-Consul-Index").unwrap().parse().unwrap();
    let addr = format!("127.0.0.1:{}", c.agent(f).port);
    let mut socks: Vec<std::net::TcpStream> = (0..HELD)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            let req = format!("GET /v1/kv/held/key?index={index}&wait=120s HTTP/1.1\r\nHost: x\r\n\r\n");
            s.write_all(req.as_bytes()).unwrap();
            s
        })
        .collect();
    let blocking = |i: usize| -> Option<usize> {
        let (_, _, body) = http("GET", &c.agent(i).url("/v1/agent/metrics?format=prometheus"), None);
        let text = String::from_utf8_lossy(&body).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("consul_rpc_queries_blocking "))?
            .trim()
            .parse::<f64>()
            .ok()
            .map(|v| v as usize)
    };
    wait_for(Duration::from_secs(30), "the follower to hold every blocking query", || {
        (blocking(f)? >= HELD).then_some(())
    });
    // A forwarded write goes through while they are all still held.
    assert_eq!(put(c.agent(f), "held/other", "x"), Some(true));
    assert!(blocking(f).unwrap() >= HELD, "the write must not have needed the blocking queries to end");
    // A write to the watched key answers every one of them.
    assert_eq!(put(c.agent(f), "held/key", "1"), Some(true));
    for (n, s) in socks.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).unwrap_or_else(|e| panic!("blocking query {n} got no answer: {e}"));
        assert_eq!(&buf, b"HTTP/1.1 200", "blocking query {n}");
    }
}
