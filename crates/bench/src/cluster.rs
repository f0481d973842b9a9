//! `--cluster`: three Cairn servers against a three-member etcd, all on this machine (127.0.0.1-3),
//! the same workloads against each in alternating rounds, then blocking-query fan-out against
//! etcd watches.
//!
//! Both clusters run with data dirs (every write fsynced on a majority). Clients spread over the
//! members, the leader first, so a one-client workload talks to the leader of either system.
//! Cairn's servers run with `raft_multiplier = 1` (Consul's production setting) and a raised
//! `http_max_conns_per_client` (Consul's 200 would refuse the 10,000 watchers, which all come
//! from one address).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::task::JoinSet;

use crate::{
    b64, cluster_server_cmd, compare, etcd, etcd_version, free_ports, get_json, http_client, median, percentile, ratio,
    settle, spawn, verdict, ChildGuard, Kind, Opts, Read, Target, Workload, CONCURRENCY, REQUEST_TIMEOUT,
    START_TIMEOUT,
};
use crate::{Op, PRELOAD_PER_CLIENT};

const MEMBERS: usize = 3;
/// The value size for the cluster workloads.
const VALUE_LEN: usize = 256;
/// Watchers per etcd client: a `clientv3.Client` carries all its watches on one gRPC stream.
const WATCHES_PER_ETCD_CLIENT: usize = 100;
/// Writes (fan-out samples) per round and watcher count.
const FANOUT_WRITES: usize = 5;
const FANOUT_SIZES: [usize; 2] = [1_000, 10_000];
/// Goal: 10,000 watchers all answered with p99 <= this.
const TARGET_FANOUT_P99_MS: f64 = 50.0;
/// How long a fan-out waits for its watchers to be in place, or to be answered.
const FANOUT_TIMEOUT: Duration = Duration::from_secs(60);
/// The key Cairn's fan-out watchers watch.
const FANOUT_KEY: &str = "fanout/key";

const WORKLOADS: [Workload; 7] = [
    Workload { op: Op::Put, clients: 1 },
    Workload { op: Op::Put, clients: CONCURRENCY },
    Workload { op: Op::Get(Read::Default), clients: CONCURRENCY },
    Workload { op: Op::Get(Read::Consistent), clients: CONCURRENCY },
    Workload { op: Op::Get(Read::Stale), clients: CONCURRENCY },
    Workload { op: Op::Cas, clients: 1 },
    Workload { op: Op::Cas, clients: CONCURRENCY },
];

/// The goals for the cluster: (minimum throughput ratio, maximum p50 ratio), Cairn/etcd.
fn targets(w: Workload) -> (Option<f64>, Option<f64>) {
    match (w.op, w.clients) {
        (Op::Put, 1) => (None, Some(1.0)),
        (Op::Put, _) => (Some(1.5), None),
        (Op::Get(Read::Consistent), _) => (Some(1.5), None),
        (Op::Get(Read::Stale), _) => (Some(3.0), None),
        _ => (None, None),
    }
}

fn ip(i: usize) -> String {
    format!("127.0.0.{}", i + 1)
}

/// Blocking queries per RPC connection in the fan-out over the server port: a client agent
/// carries all its callers' blocking queries on one connection to a server, as Consul's carry
/// them on one multiplexed (yamux) connection; 100, as etcd's watchers per client here.
const BLOCKING_PER_RPC_CONN: usize = 100;

/// Three Cairn servers on 127.0.0.1-3 with data dirs; returns them with the leader's index and
/// their server (RPC) addresses, in member order.
async fn start_cairn(bin: &Path, dir: &Path) -> Result<(Vec<ChildGuard>, Vec<String>, usize, Vec<String>)> {
    let ports = free_ports(3)?;
    let (http_port, server_port, serf_port) = (ports[0], ports[1], ports[2]);
    let mut children = Vec::new();
    for i in 0..MEMBERS {
        let data = dir.join(format!("cairn{i}"));
        std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        let mut cmd = cluster_server_cmd(bin, &format!("bench{i}"), i, &data, [http_port, server_port, serf_port]);
        cmd.arg("-hcl=limits { http_max_conns_per_client = 100000 }");
        children.push(spawn(cmd, &dir.join(format!("cairn{i}.log")))?);
    }
    let http = http_client(Duration::from_secs(5))?;
    let leader = settle(&http, http_port, server_port, &dir.display().to_string()).await?;
    let bases = (0..MEMBERS).map(|i| format!("http://{}:{http_port}", ip(i))).collect();
    let rpc = (0..MEMBERS).map(|i| format!("{}:{server_port}", ip(i))).collect();
    Ok((children, bases, leader, rpc))
}

/// Three etcd members on 127.0.0.1-3 with data dirs; returns them with the leader's index.
async fn start_etcd(bin: &Path, dir: &Path) -> Result<(Vec<ChildGuard>, Vec<String>, usize)> {
    let ports = free_ports(2)?;
    let (client_port, peer_port) = (ports[0], ports[1]);
    let peer = |i: usize| format!("http://{}:{peer_port}", ip(i));
    let client = |i: usize| format!("http://{}:{client_port}", ip(i));
    let initial: Vec<String> = (0..MEMBERS).map(|i| format!("e{i}={}", peer(i))).collect();
    let mut children = Vec::new();
    for i in 0..MEMBERS {
        let mut cmd = Command::new(bin);
        cmd.arg("--data-dir")
            .arg(dir.join(format!("etcd{i}")))
            .args(["--name", &format!("e{i}")])
            .args(["--listen-client-urls", &client(i), "--advertise-client-urls", &client(i)])
            .args(["--listen-peer-urls", &peer(i), "--initial-advertise-peer-urls", &peer(i)])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new", "--initial-cluster-token", "cairn-bench"])
            .args(["--logger", "zap", "--log-level", "warn", "--log-outputs", "stderr"]);
        if cfg!(target_arch = "aarch64") {
            cmd.env("ETCD_UNSUPPORTED_ARCH", "arm64");
        }
        children.push(spawn(cmd, &dir.join(format!("etcd{i}.log")))?);
    }
    let http = http_client(Duration::from_secs(2))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        // Healthy everywhere, and exactly one member says it leads (`etcd_server_is_leader`).
        let mut leaders = Vec::new();
        let mut healthy = 0;
        for i in 0..MEMBERS {
            if get_json(&http, &format!("{}/health", client(i))).await.is_some_and(|v| v["health"] == "true") {
                healthy += 1;
            }
            if let Ok(r) = http.get(format!("{}/metrics", client(i))).send().await {
                if r.text().await.is_ok_and(|t| t.lines().any(|l| l.trim() == "etcd_server_is_leader 1")) {
                    leaders.push(i);
                }
            }
        }
        if healthy == MEMBERS && leaders.len() == 1 {
            let bases = (0..MEMBERS).map(client).collect();
            return Ok((children, bases, leaders[0]));
        }
        if Instant::now() > deadline {
            bail!("etcd did not form a healthy 3-member cluster within {START_TIMEOUT:?} (logs in {})", dir.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The leader first, then the others: client `i` talks to `endpoints[i % 3]`.
fn leader_first(mut bases: Vec<String>, leader: usize) -> Vec<String> {
    bases.rotate_left(leader);
    bases
}

pub(crate) async fn run(o: Opts) -> Result<()> {
    if !o.cairn_bin.is_file() {
        bail!("Cairn binary {} not found (cargo build --release -p cairn, or pass --cairn-bin)", o.cairn_bin.display());
    }
    let etcd_ver = etcd_version(&o.etcd_bin)?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("cairn-bench --cluster: 3 Cairn servers vs a 3-member etcd on 127.0.0.1-3, data dirs on both");
    println!("  cairn: {} (its HTTP API: HTTP/1.1 keep-alive, reqwest), raft_multiplier 1", o.cairn_bin.display());
    println!("  etcd:  {} ({etcd_ver}), through its native gRPC API (HTTP/2, tonic)", o.etcd_bin.display());
    println!(
        "  1 connection per client, clients spread over the members with the leader first; {VALUE_LEN}-byte values"
    );
    println!(
        "  {} s per round, {} round(s) per workload and system; {cores} CPU(s), shared by 6 servers and the clients",
        o.duration.as_secs(),
        o.rounds
    );
    let dir = tempfile::Builder::new().prefix("cairn-bench-cluster-").tempdir().context("creating a temp dir")?;
    let (_cairn, cairn_bases, cairn_leader, cairn_rpc) =
        start_cairn(&o.cairn_bin, dir.path()).await.context("starting Cairn")?;
    let (_etcd, etcd_bases, etcd_leader) = start_etcd(&o.etcd_bin, dir.path()).await.context("starting etcd")?;
    println!("cairn leader: {}; etcd leader: {}", cairn_bases[cairn_leader], etcd_bases[etcd_leader]);

    let value: Vec<u8> = (0..VALUE_LEN).map(|i| b'a' + (i % 26) as u8).collect();
    let systems = vec![
        Arc::new(Target {
            kind: Kind::Cairn,
            endpoints: leader_first(cairn_bases, cairn_leader),
            value: value.clone(),
            value_b64: b64(&value),
        }),
        Arc::new(Target {
            kind: Kind::Etcd,
            endpoints: leader_first(etcd_bases, etcd_leader),
            value: value.clone(),
            value_b64: b64(&value),
        }),
    ];
    for t in &systems {
        crate::preload(t.clone()).await.with_context(|| format!("preloading {}", t.kind.name()))?;
    }
    println!("preloaded {} keys of {VALUE_LEN} bytes into each", CONCURRENCY as u64 * PRELOAD_PER_CLIENT);

    let mut summary: Vec<(bool, String)> = Vec::new();
    compare(&systems, &WORKLOADS, &o, targets, &mut summary).await?;

    // `fanout@N` runs all three ways; `fanout-http@N`, `fanout-rpc@N`, `fanout-etcd@N` one each.
    let fan_modes = ["http", "rpc", "etcd"];
    let wants_fan = |n: usize, m: &str| o.wants(&format!("fanout@{n}")) || o.wants(&format!("fanout-{m}@{n}"));
    for watchers in FANOUT_SIZES.into_iter().filter(|&n| fan_modes.iter().any(|m| wants_fan(n, m))) {
        println!();
        println!("== fan-out: {watchers} watchers of one key, {FANOUT_WRITES} writes per round ==");
        println!("  cairn http: blocking queries (default consistency) to the servers' HTTP API, one HTTP/1.1");
        println!("              connection each (as a Consul API client holds one per watch), re-armed at once");
        println!("  cairn rpc:  the same blocking queries as client agents send them: KVS.Get on the servers'");
        println!("              RPC port, {BLOCKING_PER_RPC_CONN} per multiplexed connection (a client agent carries all its");
        println!("              callers' on one, as Consul's do over yamux), re-armed at once; identical");
        println!("              queries queued together on one connection travel as one request");
        println!(
            "  etcd:       watches, {WATCHES_PER_ETCD_CLIENT} per client on one gRPC stream (as clientv3 carries them)"
        );
        println!("  latency: from sending the write until each watcher has its answer (the ack can come later");
        println!("  than the answers; p99 from the ack is shown for reference);");
        println!("  CPU busy: share of both cores in use from the write until its last answer; watchers' CPU:");
        println!("  what the benchmark's own process (all the watchers) used of it;");
        println!("  figures are medians over the {FANOUT_WRITES} writes of each round");
        let rpc_addrs = leader_first(cairn_rpc.clone(), cairn_leader);
        let modes = [("cairn http", &systems[0]), ("cairn rpc", &systems[0]), ("etcd", &systems[1])];
        let mut per: Vec<Vec<Fanout>> = vec![Vec::new(); modes.len()];
        for r in 0..o.rounds {
            for (i, ((name, t), res)) in modes.iter().zip(per.iter_mut()).enumerate() {
                if !wants_fan(watchers, fan_modes[i]) {
                    continue;
                }
                let f = match i {
                    0 => fanout_cairn(t, watchers).await,
                    1 => fanout_cairn_rpc(t, &rpc_addrs, watchers).await,
                    _ => fanout_etcd(t, watchers).await,
                }
                .with_context(|| format!("{name} fan-out to {watchers} round {}", r + 1))?;
                println!(
                    "  round {}/{} {:<10} p50 {:>8.3} ms  p99 {:>8.3} ms  last {:>8.3} ms  (p99 from the ack {:>8.3} ms)  CPU busy {}, watchers' CPU {:.0} ms",
                    r + 1,
                    o.rounds,
                    name,
                    f.p50_ms,
                    f.p99_ms,
                    f.max_ms,
                    f.p99_ack_ms,
                    // Under one tick of /proc/stat (10 ms), the share cannot be told.
                    if f.busy_pct.is_nan() { "n/a".to_string() } else { format!("{:>3.0}%", f.busy_pct) },
                    f.watchers_cpu_ms
                );
                res.push(f);
            }
        }
        let m = |v: &[Fanout], f: fn(&Fanout) -> f64| median(v.iter().map(f).collect());
        let (e99, emax) = (m(&per[2], |f| f.p99_ms), m(&per[2], |f| f.max_ms));
        for (i, (name, _)) in modes.iter().enumerate().take(2).filter(|(i, _)| !per[*i].is_empty()) {
            let (c99, cmax) = (m(&per[i], |f| f.p99_ms), m(&per[i], |f| f.max_ms));
            println!(
                "  {name}: p99 {c99:.3} ms, last {cmax:.3} ms; etcd p99 {e99:.3} ms, last {emax:.3} ms; \
                 {name}/etcd p99 {:.2}x, last watcher {:.2}x",
                ratio(c99, e99),
                ratio(cmax, emax)
            );
            if watchers == 10_000 {
                let pass = c99 <= TARGET_FANOUT_P99_MS;
                println!("  target ({name}): all answered, p99 <= {TARGET_FANOUT_P99_MS:.0} ms: {}", verdict(pass));
                summary.push((
                    pass,
                    format!("fan-out to 10,000 ({name}): p99 {c99:.3} ms (target <= {TARGET_FANOUT_P99_MS:.0} ms)"),
                ));
            }
        }
    }

    println!();
    println!("== targets (informational) ==");
    for (pass, line) in &summary {
        println!("  {}  {line}", verdict(*pass));
    }
    Ok(())
}

/// One fan-out round's figures, in milliseconds: medians over its writes of each write's
/// percentiles, and of the share of the machine's CPU busy from the write to its last answer.
/// Latencies count from *sending* the write: counted from its acknowledgement instead (the
/// issue's wording), a server that is slow to acknowledge because it is busy answering watchers
/// would look faster the slower it acknowledges; `p99_ack_ms` is that figure, for reference.
#[derive(Clone)]
struct Fanout {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    p99_ack_ms: f64,
    busy_pct: f64,
    /// CPU time the benchmark's own process (the watchers and their clients) used from the write
    /// to its last answer: what the servers used is the rest of the busy share.
    watchers_cpu_ms: f64,
}

/// One write's figures: [p50, p99, last] from `sent`, p99 from `acked`, `busy`.
fn write_figures(sent: Instant, acked: Instant, answers: &[Instant], busy: f64, own_ms: f64) -> [f64; 6] {
    let sorted = |from: Instant| {
        let mut us: Vec<u32> = answers
            .iter()
            .map(|a| u32::try_from(a.saturating_duration_since(from).as_micros()).unwrap_or(u32::MAX))
            .collect();
        us.sort_unstable();
        us
    };
    let ms = |v: u32| v as f64 / 1000.0;
    let (s, a) = (sorted(sent), sorted(acked));
    let last = ms(*s.last().unwrap_or(&0));
    [ms(percentile(&s, 0.50)), ms(percentile(&s, 0.99)), last, ms(percentile(&a, 0.99)), busy, own_ms]
}

fn summarize(per_write: Vec<[f64; 6]>) -> Fanout {
    let m = |i: usize| median(per_write.iter().map(|w| w[i]).collect());
    Fanout { p50_ms: m(0), p99_ms: m(1), max_ms: m(2), p99_ack_ms: m(3), busy_pct: m(4), watchers_cpu_ms: m(5) }
}

/// Collects `n` answers, each the instant a watcher had it, within [`FANOUT_TIMEOUT`].
async fn collect(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Instant>, n: usize, what: &str) -> Result<Vec<Instant>> {
    let deadline = tokio::time::Instant::now() + FANOUT_TIMEOUT;
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(at)) => got.push(at),
            Ok(None) => bail!("{what}: watchers ended with {} of {n} answers", got.len()),
            Err(_) => bail!("{what}: only {} of {n} watchers answered within {FANOUT_TIMEOUT:?}", got.len()),
        }
    }
    Ok(got)
}

/// Blocking queries the Cairn servers hold now (`consul_rpc_queries_blocking`, summed).
async fn cairn_blocking(http: &reqwest::Client, t: &Target) -> Result<usize> {
    let mut sum = 0.0;
    for base in &t.endpoints {
        let text = http
            .get(format!("{base}/v1/agent/metrics?format=prometheus"))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("metrics of {base}"))?
            .text()
            .await?;
        sum += text
            .lines()
            .find_map(|l| l.strip_prefix("consul_rpc_queries_blocking "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    Ok(sum as usize)
}

/// One watcher's own keep-alive HTTP/1.1 connection, as a Consul client keeps one per watch in
/// flight. A minimal client (request line, `Content-Length` body), so that the 10,000 watchers'
/// side of the machine costs little next to the servers it measures.
struct Watcher {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
    host: String,
}

impl Watcher {
    async fn connect(base: &str) -> Result<Watcher> {
        let host = base.trim_start_matches("http://").to_string();
        let deadline = Instant::now() + FANOUT_TIMEOUT;
        // Thousands connecting at once may overflow the accept queue: retry until the deadline.
        let stream = loop {
            match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(&host)).await {
                Ok(Ok(s)) => break s,
                Ok(Err(e)) if Instant::now() > deadline => return Err(e).context("connecting a watcher"),
                Err(_) if Instant::now() > deadline => bail!("connecting a watcher to {host} timed out"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        stream.set_nodelay(true)?;
        Ok(Watcher { stream: tokio::io::BufReader::new(stream), host })
    }

    /// GETs `path`; returns the answer's `X-Consul-Index` (the body is read and dropped).
    async fn get(&mut self, path: &str) -> Result<u64> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        self.stream.get_mut().write_all(req.as_bytes()).await?;
        let (mut status, mut len, mut index) = (String::new(), 0usize, None);
        let mut line = String::new();
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                bail!("connection closed by {}", self.host);
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if status.is_empty() {
                status = l.to_string();
            } else if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().context("bad Content-Length")?;
                } else if k.eq_ignore_ascii_case("x-consul-index") {
                    index = v.trim().parse().ok();
                }
            }
        }
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).await?;
        if !status.contains(" 200 ") {
            bail!("{path}: {status}");
        }
        index.context("no X-Consul-Index")
    }
}

async fn fanout_cairn(t: &Target, watchers: usize) -> Result<Fanout> {
    let http = http_client(REQUEST_TIMEOUT)?;
    fanout_put(&http, t, 0).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut set = JoinSet::new();
    for w in 0..watchers {
        let tx = tx.clone();
        let base = t.endpoints[w % t.endpoints.len()].clone();
        set.spawn(async move {
            let mut conn = Watcher::connect(&base).await?;
            let mut index = conn.get(&format!("/v1/kv/{FANOUT_KEY}")).await.context("first read")?;
            for _ in 0..FANOUT_WRITES {
                index =
                    conn.get(&format!("/v1/kv/{FANOUT_KEY}?index={index}&wait=90s")).await.context("blocking read")?;
                let _ = tx.send(Instant::now());
            }
            anyhow::Ok(())
        });
    }
    drop(tx);
    drive_cairn_fanout(t, watchers, set, rx, &http).await
}

/// The fan-out as the servers see it from client agents: each watcher a blocking `KVS.Get` on a
/// server's RPC port, [`BLOCKING_PER_RPC_CONN`] of them sharing one multiplexed connection (one
/// [`RpcClient`] each, which opens one connection per server), spread over the servers.
async fn fanout_cairn_rpc(t: &Target, rpc_addrs: &[String], watchers: usize) -> Result<Fanout> {
    use cairn_cluster::rpc::client::RpcClient;
    use cairn_cluster::rpc::proto::{Request, Response};
    use cairn_types::rpc::{QueryOptions, ReadRequest};
    let http = http_client(REQUEST_TIMEOUT)?;
    fanout_put(&http, t, 0).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut set = JoinSet::new();
    let conns: Vec<Arc<RpcClient>> =
        (0..watchers.div_ceil(BLOCKING_PER_RPC_CONN)).map(|_| Arc::new(RpcClient::new())).collect();
    for w in 0..watchers {
        let tx = tx.clone();
        let c = w / BLOCKING_PER_RPC_CONN;
        let (client, addr) = (conns[c].clone(), rpc_addrs[c % rpc_addrs.len()].clone());
        set.spawn(async move {
            let get = |index: u64| {
                let q = QueryOptions {
                    min_query_index: index,
                    max_query_time: Duration::from_secs(90),
                    ..Default::default()
                };
                let req = Request::Read(Box::new((ReadRequest::KvsGet { key: FANOUT_KEY.into() }, q)));
                let (client, addr) = (client.clone(), addr.clone());
                async move {
                    match client.call(&addr, req, Duration::from_secs(120)).await {
                        Ok(Response::Read(meta, _)) => anyhow::Ok(meta.index),
                        Ok(other) => bail!("{addr}: unexpected answer {other:?}"),
                        Err(e) => bail!("{addr}: {e}"),
                    }
                }
            };
            let mut index = get(0).await.context("first read")?;
            for _ in 0..FANOUT_WRITES {
                index = get(index).await.context("blocking read")?;
                let _ = tx.send(Instant::now());
            }
            anyhow::Ok(())
        });
    }
    drop(tx);
    drive_cairn_fanout(t, watchers, set, rx, &http).await
}

/// Writes the fan-out key (`n` as its value) through the leader's HTTP API; returns when acknowledged.
async fn fanout_put(http: &reqwest::Client, t: &Target, n: usize) -> Result<Instant> {
    let r = http.put(format!("{}/v1/kv/{FANOUT_KEY}", t.endpoints[0])).body(n.to_string()).send().await?;
    let ok = r.status().is_success() && r.bytes().await?.trim_ascii() == b"true";
    if !ok {
        bail!("cairn: fan-out write {n} was refused");
    }
    Ok(Instant::now())
}

/// The writes of one Cairn fan-out round, once all `watchers` (spawned in `set`, each sending
/// the instant it had each answer to `rx`) hold their blocking queries.
async fn drive_cairn_fanout(
    t: &Target,
    watchers: usize,
    mut set: JoinSet<Result<()>>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Instant>,
    http: &reqwest::Client,
) -> Result<Fanout> {
    let probe = http_client(Duration::from_secs(5))?;
    let mut per_write = Vec::new();
    for n in 1..=FANOUT_WRITES {
        let deadline = Instant::now() + FANOUT_TIMEOUT;
        // A probe can time out while thousands of watchers are still connecting (their SYNs
        // queue behind each other): that is "not yet", until the deadline.
        while cairn_blocking(&probe, t).await.unwrap_or(0) < watchers {
            if let Some(Ok(Err(e))) = set.try_join_next() {
                return Err(e.context("a watcher failed"));
            }
            if Instant::now() > deadline {
                bail!("cairn: {watchers} blocking queries not in place within {FANOUT_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (cpu, own, sent) = (cpu_jiffies(), own_cpu_ms(), Instant::now());
        let acked = fanout_put(http, t, n).await?;
        let answers = collect(&mut rx, watchers, "cairn").await?;
        per_write.push(write_figures(sent, acked, &answers, busy_since(cpu), own_cpu_ms() - own));
    }
    while let Some(j) = set.join_next().await {
        j.context("watcher panicked")??;
    }
    Ok(summarize(per_write))
}

async fn fanout_etcd(t: &Target, watchers: usize) -> Result<Fanout> {
    const KEY: &[u8] = b"fanout/key";
    let mut writer = etcd::Client::connect(&t.endpoints[0], REQUEST_TIMEOUT).await?;
    writer.put(KEY, b"0").await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut set = JoinSet::new();
    let clients = watchers.div_ceil(WATCHES_PER_ETCD_CLIENT);
    for c in 0..clients {
        let n = WATCHES_PER_ETCD_CLIENT.min(watchers - c * WATCHES_PER_ETCD_CLIENT);
        let url = t.endpoints[c % t.endpoints.len()].clone();
        let (tx, ready_tx) = (tx.clone(), ready_tx.clone());
        set.spawn(async move {
            let mut client = etcd::Client::connect(&url, REQUEST_TIMEOUT).await?;
            let (req_tx, req_rx) = tokio::sync::mpsc::channel(n);
            for id in 1..=n {
                let create = etcd::WatchCreateRequest { key: KEY.to_vec(), start_revision: 0, watch_id: id as i64 };
                req_tx.send(etcd::WatchRequest { create_request: Some(create) }).await?;
            }
            let mut stream = client.watch(req_rx).await?;
            let mut created = 0;
            let mut events: HashMap<i64, usize> = HashMap::new();
            while let Some(resp) = stream.message().await.context("etcd watch stream")? {
                if resp.canceled {
                    bail!("etcd canceled watch {}: {}", resp.watch_id, resp.cancel_reason);
                }
                if resp.created {
                    created += 1;
                    if created == n {
                        let _ = ready_tx.send(());
                    }
                }
                if !resp.events.is_empty() {
                    let _ = tx.send(Instant::now());
                    let seen = events.entry(resp.watch_id).or_default();
                    *seen += resp.events.len();
                    if events.len() == n && events.values().all(|s| *s >= FANOUT_WRITES) {
                        break;
                    }
                }
            }
            // Keeps the request side open until every event is in.
            drop(req_tx);
            anyhow::Ok(())
        });
    }
    drop((tx, ready_tx));
    let deadline = tokio::time::Instant::now() + FANOUT_TIMEOUT;
    for _ in 0..clients {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(())) => {}
            _ => {
                if let Some(Ok(Err(e))) = set.try_join_next() {
                    return Err(e.context("an etcd watcher failed"));
                }
                bail!("etcd: {watchers} watches not created within {FANOUT_TIMEOUT:?}");
            }
        }
    }
    let mut per_write = Vec::new();
    for n in 1..=FANOUT_WRITES {
        let (cpu, own, sent) = (cpu_jiffies(), own_cpu_ms(), Instant::now());
        writer.put(KEY, n.to_string().as_bytes()).await?;
        let acked = Instant::now();
        let answers = collect(&mut rx, watchers, "etcd").await?;
        per_write.push(write_figures(sent, acked, &answers, busy_since(cpu), own_cpu_ms() - own));
    }
    while let Some(j) = set.join_next().await {
        j.context("watcher panicked")??;
    }
    Ok(summarize(per_write))
}

/// Share (%) of all cores' time that was busy since `since` (servers, watchers and kernel alike):
/// shows whether a fan-out is bound by the machine's CPU.
fn busy_since(since: (u64, u64)) -> f64 {
    let now = cpu_jiffies();
    let (busy, total) = (now.0.saturating_sub(since.0), (now.0 + now.1).saturating_sub(since.0 + since.1));
    if total == 0 {
        f64::NAN
    } else {
        100.0 * busy as f64 / total as f64
    }
}

/// CPU time (user and system) this process has used, in milliseconds.
fn own_cpu_ms() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return f64::NAN;
    }
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    ms(u.ru_utime) + ms(u.ru_stime)
}

/// (busy, idle) jiffies of all cores, from /proc/stat.
fn cpu_jiffies() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> =
        s.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 5 {
        return (0, 0);
    }
    let idle = v[3] + v[4];
    (v.iter().sum::<u64>() - idle, idle)
}
