//! Three servers, each in a network namespace of its own on one bridge (10.231.0.0/24, made and
//! removed by the test; needs root, as CI has): isolate the leader and the majority elects another
//! and goes on, while the cut-off server refuses writes and says it knows no leader with a growing
//! `X-Consul-LastContact`; heal, and all three agree on one history. One-way cuts are nftables
//! rules in a server's namespace that drop what it receives from some peers. Five servers split
//! two from three under a client load whose whole history is checked for linearizability.
//!
//! Without root (a developer's machine), each test re-runs itself inside an unprivileged user
//! namespace with its own network and mount namespaces, where it may make all of the above: the
//! same test, on the same kind of network, with nothing of the host's touched.

use std::os::unix::ffi::OsStrExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{wait_for, BIN};

/// Namespaces and a bridge, removed on drop.
struct Net {
    tag: String,
    n: usize,
}

fn sh(cmd: &str) -> bool {
    Command::new("sh").arg("-c").arg(cmd).status().map(|s| s.success()).unwrap_or(false)
}

fn must(cmd: &str) {
    assert!(sh(cmd), "network set-up failed: {cmd}");
}

impl Net {
    fn new(n: usize) -> Net {
        // Interface names are at most 15 bytes: keep the tag short and unique to this run.
        static NETS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let k = NETS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let tag = format!("cp{}{}", std::process::id() % 100_000, (b'a' + (k % 26) as u8) as char);
        let net = Net { tag: tag.clone(), n };
        must(&format!("ip link add br{tag} type bridge && ip link set br{tag} up"));
        for i in 1..=n {
            let ns = net.ns(i);
            must(&format!(
                "ip netns add {ns} && ip link add v{tag}{i} type veth peer name e{tag}{i} && \
                 ip link set e{tag}{i} netns {ns} && ip link set v{tag}{i} master br{tag} up && \
                 ip netns exec {ns} ip addr add {}/24 dev e{tag}{i} && \
                 ip netns exec {ns} ip link set e{tag}{i} up && ip netns exec {ns} ip link set lo up",
                Net::ip(i)
            ));
        }
        net
    }

    fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    fn ip(i: usize) -> String {
        format!("10.231.0.{i}")
    }

    /// Server `i` stops receiving anything from the servers `from` (an nftables rule in its
    /// namespace; what it sends still goes out), or, with an empty `from`, receives again.
    fn drop_inbound(&self, i: usize, from: &[usize]) {
        let ns = self.ns(i);
        sh(&format!("ip netns exec {ns} nft delete table inet cairn 2>/dev/null"));
        if from.is_empty() {
            return;
        }
        let ips: Vec<String> = from.iter().map(|j| Net::ip(*j)).collect();
        must(&format!(
            "ip netns exec {ns} nft add table inet cairn && \
             ip netns exec {ns} nft 'add chain inet cairn input {{ type filter hook input priority 0 ; policy accept ; }}' && \
             ip netns exec {ns} nft add rule inet cairn input ip saddr '{{ {} }}' drop",
            ips.join(", ")
        ));
    }

    /// Cuts server `i` off from the others (its end of the bridge goes down), or heals it.
    fn isolate(&self, i: usize, cut: bool) {
        must(&format!("ip link set v{}{i} {}", self.tag, if cut { "down" } else { "up" }));
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 1..=self.n {
            // Deleting our end removes the pair even while the namespace lingers.
            sh(&format!("ip link del v{}{i} 2>/dev/null", self.tag));
            sh(&format!("ip netns del {} 2>/dev/null", self.ns(i)));
        }
        sh(&format!("ip link del br{} 2>/dev/null", self.tag));
    }
}

struct Server {
    ns: String,
    child: Child,
    _dir: tempfile::TempDir,
    log: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(net: &Net, i: usize) -> Server {
        Server::start_of(net, i, 3)
    }

    /// Server `i` of a cluster of `expect`.
    fn start_of(net: &Net, i: usize, expect: usize) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("agent.log");
        let f = std::fs::File::create(&log).unwrap();
        let ns = net.ns(i);
        // Autopilot's dead-server cleanup would take the cut-off server out of the configuration
        // (Consul's does too); this test is about the partition itself, so it stays in.
        let extra = dir.path().join("extra.hcl");
        // Discovery reads may be an hour stale (Consul's `discovery_max_stale`).
        std::fs::write(&extra, "autopilot { cleanup_dead_servers = false }\ndiscovery_max_stale = \"1h\"\n").unwrap();
        // `ip netns exec` enters the namespace and execs the agent: the child is the agent.
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, BIN, "agent", "-server", &format!("-bootstrap-expect={expect}")])
            .arg(format!("-node=s{i}"))
            .arg(format!("-bind={}", Net::ip(i)))
            .arg("-client=127.0.0.1")
            .arg(format!("-data-dir={}", dir.path().join("data").display()))
            .arg(format!("-retry-join={}", Net::ip(1)))
            .arg(format!("-config-file={}", extra.display()))
            .args(["-retry-interval=1s", "-dns-port=-1", "-grpc-port=-1", "-serf-wan-port=-1"])
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .expect("spawn cairn in a namespace");
        Server { ns, child, _dir: dir, log }
    }

    /// An HTTP call from inside the server's namespace: (status, headers, body).
    fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String, String) {
        let (code, headers, body) = self.http_bytes(method, path, body.map(str::as_bytes));
        (code, headers, String::from_utf8_lossy(&body).into_owned())
    }

    fn http_bytes(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, String, Vec<u8>) {
        http_in(&self.ns, method, path, body)
    }
}

/// An HTTP call to the agent of namespace `ns`, from inside it: (status, headers, body).
fn http_in(ns: &str, method: &str, path: &str, body: Option<&[u8]>) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let hdr = dir.path().join("h");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "curl", "-s", "--max-time", "20", "-X", method, "-D"])
        .arg(&hdr)
        .arg(format!("http://127.0.0.1:8500{path}"));
    if let Some(b) = body {
        cmd.arg("--data-binary").arg(std::ffi::OsStr::from_bytes(b));
    }
    let out = cmd.output().unwrap();
    let headers = std::fs::read_to_string(&hdr).unwrap_or_default();
    (crate::harness::status_of(&headers), headers, out.stdout)
}

impl Server {
    fn leader(&self) -> Option<String> {
        let (code, _, body) = self.http("GET", "/v1/status/leader", None);
        let v: Value = serde_json::from_str(&body).ok()?;
        let s = v.as_str()?.to_string();
        (code == 200 && !s.is_empty()).then_some(s)
    }

    fn put(&self, key: &str, value: &str) -> bool {
        let (code, _, body) = self.http("PUT", &format!("/v1/kv/{key}"), Some(value));
        code == 200 && body == "true"
    }

    fn get(&self, key: &str, mode: &str) -> (u16, String, String) {
        self.http("GET", &format!("/v1/kv/{key}?raw{mode}"), None)
    }
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Waits until the servers in `which` name the same leader; returns its number (1-based).
fn agreed(servers: &[Server], which: &[usize]) -> usize {
    wait_for(Duration::from_secs(40), "the servers to agree on a leader", || {
        let names: Vec<String> = which.iter().map(|i| servers[i - 1].leader()).collect::<Option<_>>()?;
        if !names.iter().all(|n| *n == names[0]) {
            return None;
        }
        (1..=servers.len()).find(|i| names[0] == format!("{}:8300", Net::ip(*i)))
    })
}

#[test]
fn an_isolated_leader_steps_aside_and_the_majority_goes_on() {
    if !can_make_namespaces("partition::an_isolated_leader_steps_aside_and_the_majority_goes_on") {
        return;
    }
    let net = Net::new(3);
    let servers: Vec<Server> = (1..=3).map(|i| Server::start(&net, i)).collect();
    let leader = agreed(&servers, &[1, 2, 3]);
    let majority: Vec<usize> = (1..=3).filter(|i| *i != leader).collect();
    let (old, f) = (&servers[leader - 1], &servers[majority[0] - 1]);
    assert!(f.put("p/before", "1"), "{}", std::fs::read_to_string(&f.log).unwrap_or_default());

    net.isolate(leader, true);
    // The majority elects a new leader and takes writes.
    wait_for(Duration::from_secs(30), "the majority to take writes again", || f.put("p/majority", "2").then_some(()));
    let new_leader = agreed(&servers, &majority);
    assert_ne!(new_leader, leader);
    // The cut-off server refuses writes with Consul's error...
    let (code, _, body) = old.http("PUT", "/v1/kv/p/minority", Some("3"));
    assert_eq!((code, body.trim()), (500, "No cluster leader"));
    // ...and its stale reads say it knows no leader, with a last contact that keeps growing.
    let (code, h1, v) = old.get("p/before", "&stale");
    assert_eq!((code, v.as_str()), (200, "1"));
    assert_eq!(header(&h1, "X-Consul-KnownLeader"), Some("false"), "{h1}");
    let c1: u64 = header(&h1, "X-Consul-LastContact").unwrap().parse().unwrap();
    let c2 = wait_for(Duration::from_secs(10), "a later last contact", || {
        let (_, h, _) = old.get("p/before", "&stale");
        let c: u64 = header(&h, "X-Consul-LastContact")?.parse().ok()?;
        (c > c1).then_some(c)
    });
    assert!(c2 > c1 && c1 > 0, "LastContact {c1} then {c2}");
    // A default-mode read there fails too: it cannot reach a leader's read point; and so does a
    // stale read with a `max_stale` its last contact has passed.
    assert_eq!(old.get("p/before", "").0, 500);
    assert_eq!(old.get("p/before", "&max_stale=1s").0, 500);
    assert_eq!(old.get("p/before", "&max_stale=1h").0, 200);
    assert_eq!(f.get("p/before", "&max_stale=10s").2, "1");
    assert_eq!(f.get("p/before", "&max_stale=soon").0, 400);
    // Service discovery keeps answering there under `discovery_max_stale`, unless asked not to.
    assert_eq!(old.http("GET", "/v1/catalog/nodes", None).0, 200);
    assert_eq!(old.http("GET", "/v1/health/service/consul", None).0, 200);
    assert_eq!(old.http("GET", "/v1/catalog/nodes?consistent", None).0, 500);

    net.isolate(leader, false);
    // Healed: one leader for all three, one history. The majority's write is everywhere and the
    // refused one nowhere.
    assert_eq!(agreed(&servers, &[1, 2, 3]), new_leader);
    for s in &servers {
        wait_for(Duration::from_secs(20), "the healed server to see the majority's write", || {
            (s.get("p/majority", "&consistent").2 == "2").then_some(())
        });
        assert_eq!(s.get("p/minority", "&consistent").0, 404);
        assert_eq!(s.get("p/before", "&consistent").2, "1");
    }
}

/// Set in the environment of a test re-run inside a user namespace of its own.
const IN_USERNS: &str = "CAIRN_TEST_IN_USERNS";

/// Whether the calling test `test` (its name in this binary) runs here: true where network
/// namespaces can be made (root, as in CI, or already inside the user namespace below). Otherwise
/// it runs again, now, inside an unprivileged user namespace with its own network and mount
/// namespaces (where it is root over them, with a private `/run` for `ip netns`), this test
/// passing or failing with it, and false is returned: the caller has nothing left to do.
fn can_make_namespaces(test: &str) -> bool {
    if std::env::var_os(IN_USERNS).is_some()
        || sh("ip netns add cairn-probe-$$ 2>/dev/null && ip netns del cairn-probe-$$")
    {
        return true;
    }
    assert!(
        sh("unshare --user --map-root-user --net --mount true"),
        "this test makes network namespaces: it needs root (as CI has) or unprivileged user namespaces"
    );
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs tmpfs /run && mkdir -p /run/netns && ip link set lo up && exec "$0" "$@""#)
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(IN_USERNS, "1")
        .output()
        .expect("running unshare");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(out.status.success(), "{test} failed inside its own user namespace ({})", out.status);
    // A name that matched nothing would run no test and "pass": it must have run exactly this one.
    assert!(stdout.contains("test result: ok. 1 passed"), "{test} did not run inside its user namespace");
    false
}

fn needs_nft() {
    assert!(sh("command -v nft >/dev/null"), "this test needs nftables (scripts/test.sh installs it)");
}

#[test]
fn one_way_cuts_are_ridden_out_or_fail_over() {
    needs_nft();
    if !can_make_namespaces("partition::one_way_cuts_are_ridden_out_or_fail_over") {
        return;
    }
    let net = Net::new(3);
    let servers: Vec<Server> = (1..=3).map(|i| Server::start(&net, i)).collect();
    let leader = agreed(&servers, &[1, 2, 3]);
    let others: Vec<usize> = (1..=3).filter(|i| *i != leader).collect();
    let (a, b) = (others[0], others[1]);
    assert!(servers[b - 1].put("w/0", "0"), "{}", std::fs::read_to_string(&servers[b - 1].log).unwrap_or_default());

    // 1. The leader hears nothing from follower `a` (what it sends still arrives). With the other
    // follower it keeps its quorum, so writes go on; `a` falls behind but cannot unseat it (its
    // pre-vote finds `b` still hearing from the leader).
    net.drop_inbound(leader, &[a]);
    for n in 1..=20 {
        assert!(servers[b - 1].put(&format!("w/{n}"), &format!("{n}")), "write {n} during a one-way cut");
    }
    let (_, h1, _) = servers[a - 1].get("w/0", "&stale");
    let c1: u64 = header(&h1, "X-Consul-LastContact").unwrap_or("0").parse().unwrap_or(0);
    wait_for(Duration::from_secs(10), "the cut-off follower's last contact to grow", || {
        let (_, h, _) = servers[a - 1].get("w/0", "&stale");
        let c: u64 = header(&h, "X-Consul-LastContact")?.parse().ok()?;
        (c > c1 && c > 500).then_some(())
    });
    assert_eq!(agreed(&servers, &[leader, b]), leader, "the leader kept its place");
    net.drop_inbound(leader, &[]);
    // Healed: `a` catches up, and the leader is still the one it was.
    wait_for(Duration::from_secs(20), "the follower to catch up", || {
        (servers[a - 1].get("w/20", "&stale").2 == "20").then_some(())
    });
    assert_eq!(agreed(&servers, &[1, 2, 3]), leader, "no election after healing a one-way cut");

    // 2. The leader hears nothing from anyone (its own messages still go out): it cannot get its
    // quorum's acknowledgements, so it steps aside and the others elect a leader between them.
    net.drop_inbound(leader, &[a, b]);
    wait_for(Duration::from_secs(30), "the others to take writes again", || {
        servers[b - 1].put("w/after", "x").then_some(())
    });
    let new_leader = agreed(&servers, &[a, b]);
    assert_ne!(new_leader, leader);
    let (code, _, body) = servers[leader - 1].http("PUT", "/v1/kv/w/refused", Some("no"));
    assert_eq!((code, body.trim()), (500, "No cluster leader"));
    net.drop_inbound(leader, &[]);
    assert_eq!(agreed(&servers, &[1, 2, 3]), new_leader);
    for s in &servers {
        wait_for(Duration::from_secs(20), "one history after healing", || {
            (s.get("w/after", "&consistent").2 == "x").then_some(())
        });
        assert_eq!(s.get("w/refused", "&consistent").0, 404);
    }
}

/// Five servers in namespaces, five clients doing reads, writes, check-and-sets, deletes and lock
/// acquires and releases through them: two servers, the leader among them, are cut off; the
/// three others elect a leader and go on while the clients move to them; heal, and the whole
/// history, every answer the clients got, is linearizable.
#[test]
fn five_servers_split_two_from_three_under_load_keep_one_linearizable_history() {
    use cairn_sim::linearizability::{check_by_key, Input, Operation, Output, Verdict};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    if !can_make_namespaces("partition::five_servers_split_two_from_three_under_load_keep_one_linearizable_history") {
        return;
    }
    let net = Net::new(5);
    // The clients get the namespaces' names only: the servers stay this thread's, so a failing
    // assertion here still kills them (a client thread outlives the test's unwinding).
    let servers: Vec<Server> = (1..=5).map(|i| Server::start_of(&net, i, 5)).collect();
    let names: Arc<Vec<String>> = Arc::new(servers.iter().map(|s| s.ns.clone()).collect());
    let all = [1, 2, 3, 4, 5];
    let leader = agreed(&servers, &all);
    let cut: Vec<usize> = vec![leader, all.iter().copied().find(|i| *i != leader).unwrap()];
    let majority: Vec<usize> = all.iter().copied().filter(|i| !cut.contains(i)).collect();

    let start = Instant::now();
    let history: Arc<Mutex<Vec<Operation>>> = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    // On the way out, failing or not, the clients stop.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop_clients = StopOnDrop(stop.clone());
    let threads: Vec<_> = (0..5)
        .map(|t| {
            let (names, history, stop) = (names.clone(), history.clone(), stop.clone());
            std::thread::spawn(move || {
                let req = |i: usize, method: &str, path: &str, body: Option<&[u8]>| {
                    let (code, _, b) = http_in(&names[i], method, path, body);
                    (code, b)
                };
                let now = move || start.elapsed().as_nanos() as u64;
                let session = crate::linclient::session(&req, t);
                let stopped = || stop.load(Ordering::Relaxed);
                let shared = crate::linclient::Shared { history: &history, now: &now, stop: &stopped };
                crate::linclient::run(t, 10_000, 5, &session, &shared, &req);
            })
        })
        .collect();
    let ns = move || start.elapsed().as_nanos() as u64;
    // Waits for `n` acknowledged writes (a put, check-and-set, delete, acquire or release that
    // succeeded) called after `since`.
    let acked = |since: u64, n: usize| {
        wait_for(Duration::from_secs(120), "the clients' writes to be acknowledged", || {
            let h = history.lock().unwrap();
            let done = h
                .iter()
                .filter(|o| o.call >= since && o.input != Input::Get && o.output == Some(Output::Ok(true)))
                .count();
            (done >= n).then_some(())
        })
    };
    acked(0, 20);
    for i in &cut {
        net.isolate(*i, true);
    }
    // The majority elects a leader of its own and the clients' writes go on through it.
    wait_for(Duration::from_secs(40), "the majority to elect a leader of its own", || {
        let l = agreed(&servers, &majority);
        (!cut.contains(&l)).then_some(())
    });
    acked(ns(), 20);
    for i in &cut {
        net.isolate(*i, false);
    }
    agreed(&servers, &all);
    acked(ns(), 20);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let h = history.lock().unwrap().clone();
    let unknown = h.iter().filter(|o| o.output.is_none()).count();
    let locked =
        h.iter().filter(|o| matches!((&o.input, &o.output), (Input::Acquire { .. }, Some(Output::Ok(true))))).count();
    eprintln!("history: {} operations, {unknown} of unknown outcome, {locked} locks taken", h.len());
    assert!(locked > 0, "the clients took locks");
    assert_eq!(check_by_key(&h, 50_000_000), Verdict::Linearizable, "{} operations: {h:#?}", h.len());
}
