//! `cairn-bench`: Cairn's KV HTTP API against etcd, both started by this program in the same
//! run, on the same machine, one connection per simulated client: Cairn through its Consul HTTP
//! API (reqwest, HTTP/1.1 keep-alive), etcd through its native gRPC API (tonic, HTTP/2), the
//! client etcd's users use. Single-server mode by default; `--cluster` runs 3 Cairn servers
//! against a 3-member etcd, and `--failover` measures a leader kill.
//!
//! Fairness: Cairn runs as a server with a data dir, so every write is fsynced through its Raft
//! log; etcd fsyncs every write by default. Reads are leader reads on both sides (Cairn's default
//! consistency, etcd's default linearizable range) unless a workload says otherwise.
//!
//! Targets (informational; the exit code only reflects failures): put with 64 clients >= 1.5x
//! etcd's throughput, get >= 2x, 1-client put p50 no slower than etcd's, `agent -dev` ready in
//! < 150 ms and idle RSS < 30 MB.

mod cluster;
mod etcd;

use std::fmt;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

const USAGE: &str = "\
usage: cairn-bench [options]

  --cairn-bin PATH      Cairn binary (default target/release/cairn)
  --etcd-bin PATH       etcd binary (default `etcd` on PATH, else /usr/bin/etcd)
  --duration-secs N     length of each measured round (default 5)
  --rounds N            rounds per workload and system; medians are reported (default 3)
  --quick               shorthand for --duration-secs 1 --rounds 1
  --cluster             instead: three Cairn servers against a three-member etcd (put, get in
                        each consistency mode, CAS, and blocking-query fan-out to 1,000 and
                        10,000 watchers against etcd watches)
  --only LABELS         run only these workloads, comma-separated as the output labels them
                        (e.g. put@64,get-stale@64,fanout@10000; fanout-http@N,
                        fanout-rpc@N, fanout-etcd@N run one side of a fan-out)
  --failover            instead: three Cairn servers, SIGKILL the leader under writes, report
                        how long until writes are acknowledged again (--rounds kills)
  -h, --help            this text
";

/// Concurrency of the many-clients workloads (and of the preload).
const CONCURRENCY: usize = 64;
const VALUE_LEN: usize = 128;
/// The get workloads read `bench/<c>/<n>` for c < CONCURRENCY, n < this; written up front.
const PRELOAD_PER_CLIENT: u64 = 16;
/// A server that isn't up by then is broken, not slow.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Per request. A single op taking this long already means the run is meaningless.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Readiness poll period; also the resolution of the "agent ready" figure.
const POLL_INTERVAL: Duration = Duration::from_millis(2);
/// Hard cap on ops per workload run (split across its clients), so latency vectors stay bounded
/// whatever the duration.
const MAX_OPS_PER_RUN: u64 = 5_000_000;

const TARGET_READY_MS: f64 = 150.0;
const TARGET_IDLE_RSS_MIB: f64 = 30.0;

// ---------------------------------------------------------------------------------------------
// Command line

struct Opts {
    cairn_bin: PathBuf,
    etcd_bin: PathBuf,
    duration: Duration,
    rounds: usize,
    failover: bool,
    cluster: bool,
    /// Workload labels to run (all when empty).
    only: Vec<String>,
}

impl Opts {
    /// Whether `--only` lets the workload labelled `label` run.
    fn wants(&self, label: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|l| l == label)
    }
}

/// `Ok(None)` when help was asked for.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Opts>> {
    let mut cairn_bin = PathBuf::from("target/release/cairn");
    let mut etcd_bin = None;
    let mut secs: u64 = 5;
    let mut rounds: u64 = 3;
    let mut failover = false;
    let mut cluster = false;
    let mut only = Vec::new();
    let mut rest = args.into_iter();
    while let Some(arg) = rest.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        match flag.as_str() {
            "--cairn-bin" => cairn_bin = PathBuf::from(take_value(&flag, inline, &mut rest)?),
            "--etcd-bin" => etcd_bin = Some(PathBuf::from(take_value(&flag, inline, &mut rest)?)),
            "--duration-secs" => secs = parse_count(&flag, &take_value(&flag, inline, &mut rest)?, 3600)?,
            "--rounds" => rounds = parse_count(&flag, &take_value(&flag, inline, &mut rest)?, 100)?,
            "--failover" if inline.is_none() => failover = true,
            "--cluster" if inline.is_none() => cluster = true,
            "--only" => {
                only = take_value(&flag, inline, &mut rest)?.split(',').map(|l| l.trim().to_string()).collect();
                if only.iter().any(String::is_empty) {
                    bail!("--only: empty workload label\n\n{USAGE}");
                }
            }
            "--quick" if inline.is_none() => {
                secs = 1;
                rounds = 1;
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            _ => bail!("unknown argument {arg:?}\n\n{USAGE}"),
        }
    }
    if failover && cluster {
        bail!("--failover and --cluster are separate runs; give one\n\n{USAGE}");
    }
    let etcd_bin = etcd_bin.or_else(|| find_on_path("etcd")).unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    Ok(Some(Opts {
        cairn_bin,
        etcd_bin,
        duration: Duration::from_secs(secs),
        rounds: rounds as usize,
        failover,
        cluster,
        only,
    }))
}

fn take_value(flag: &str, inline: Option<String>, rest: &mut impl Iterator<Item = String>) -> Result<String> {
    match inline {
        Some(v) => Ok(v),
        None => rest.next().ok_or_else(|| anyhow!("{flag} needs a value")),
    }
}

fn parse_count(flag: &str, v: &str, max: u64) -> Result<u64> {
    match v.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => bail!("{flag}: {v:?} is not a whole number between 1 and {max}"),
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// Owns a server process. Dropping it (normal end, `?` on an error, unwinding) SIGKILLs and
/// reaps the process: data dirs are throwaway, so there is nothing a graceful stop would save,
/// and a kill can't hang.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` with stdout and stderr going to `log` (read back if startup fails).
///
/// Must be called from the main thread (i.e. not from a spawned task): on Linux the child gets
/// PR_SET_PDEATHSIG, which fires when the *spawning thread* exits, so that a bench killed outright
/// (SIGKILL, abort) doesn't leave servers behind; a runtime worker thread could exit early.
fn spawn(mut cmd: Command, log: &Path) -> Result<ChildGuard> {
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone().with_context(|| format!("creating {}", log.display()))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let program = cmd.get_program().to_string_lossy().into_owned();
    let child = cmd.spawn().with_context(|| format!("starting {program}"))?;
    Ok(ChildGuard(child))
}

/// The end of a server log, for startup error messages.
fn log_tail(log: &Path) -> String {
    match std::fs::read(log) {
        Ok(b) => {
            let tail = &b[b.len().saturating_sub(2000)..];
            let s = String::from_utf8_lossy(tail).trim().to_string();
            if s.is_empty() {
                "(log empty)".into()
            } else {
                s
            }
        }
        Err(e) => format!("(no log: {e})"),
    }
}

/// Distinct free loopback ports. All listeners are held until every port is picked so the same
/// port can't come back twice; the tiny window between dropping them and the server binding is
/// acceptable for a benchmark.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding a free port")?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port()).context("reading a bound port")).collect()
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS line in /proc/{pid}/status"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------------
// Starting the servers

fn http_client(timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .http1_only()
        // A proxy from the environment must not sit between the bench and loopback.
        .no_proxy()
        .pool_max_idle_per_host(1)
        .timeout(timeout)
        .build()
        .context("building the HTTP client")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Cairn,
    Etcd,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Cairn => "cairn",
            Kind::Etcd => "etcd",
        }
    }
}

struct Server {
    kind: Kind,
    base: String,
    ready: Duration,
    // Declared before `_dir`: fields drop in order, so the process dies before its dir is removed.
    child: ChildGuard,
    _dir: TempDir,
}

async fn get_json(http: &reqwest::Client, url: &str) -> Option<Value> {
    let resp = http.get(url).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    serde_json::from_slice(&resp.bytes().await.ok()?).ok()
}

/// One readiness probe: Cairn has a leader (a non-empty JSON string), or etcd says healthy.
async fn is_ready(http: &reqwest::Client, kind: Kind, base: &str) -> bool {
    match kind {
        Kind::Cairn => {
            matches!(get_json(http, &format!("{base}/v1/status/leader")).await, Some(Value::String(s)) if !s.is_empty())
        }
        Kind::Etcd => get_json(http, &format!("{base}/health")).await.is_some_and(|v| v["health"] == "true"),
    }
}

/// Polls until ready; returns the time since `spawned`. Fails fast if the process exits.
async fn wait_ready(
    http: &reqwest::Client,
    kind: Kind,
    base: &str,
    child: &mut ChildGuard,
    log: &Path,
    spawned: Instant,
) -> Result<Duration> {
    let deadline = spawned + START_TIMEOUT;
    loop {
        if let Some(status) = child.0.try_wait().context("checking the server process")? {
            bail!("{} exited during startup ({status}); log tail:\n{}", kind.name(), log_tail(log));
        }
        if is_ready(http, kind, base).await {
            return Ok(spawned.elapsed());
        }
        if Instant::now() >= deadline {
            bail!("{} not ready after {START_TIMEOUT:?}; log tail:\n{}", kind.name(), log_tail(log));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Flags that keep a Cairn agent off every listener but HTTP and Raft, so the bench can't clash
/// with a real Consul or Cairn on the machine.
fn cairn_quiet_ports(server_port: u16) -> Vec<String> {
    ["-dns-port=-1", "-grpc-port=-1", "-serf-lan-port=-1", "-serf-wan-port=-1"]
        .into_iter()
        .map(String::from)
        .chain([format!("-server-port={server_port}"), "-log-level=warn".into()])
        .collect()
}

async fn start_cairn(bin: &Path, probe: &reqwest::Client) -> Result<Server> {
    let dir = tempfile::Builder::new().prefix("cairn-bench-cairn-").tempdir().context("creating a temp dir")?;
    let data = dir.path().join("data");
    std::fs::create_dir(&data).with_context(|| format!("creating {}", data.display()))?;
    let log = dir.path().join("cairn.log");
    let ports = free_ports(2)?;
    let (http_port, server_port) = (ports[0], ports[1]);
    let mut cmd = Command::new(bin);
    cmd.args(["agent", "-server", "-bootstrap"])
        .arg(format!("-data-dir={}", data.display()))
        .args(["-node=bench", format!("-http-port={http_port}").as_str(), "-bind=127.0.0.1", "-client=127.0.0.1"])
        .args(cairn_quiet_ports(server_port));
    let base = format!("http://127.0.0.1:{http_port}");
    let spawned = Instant::now();
    let mut child = spawn(cmd, &log)?;
    let ready = wait_ready(probe, Kind::Cairn, &base, &mut child, &log, spawned).await?;
    Ok(Server { kind: Kind::Cairn, base, ready, child, _dir: dir })
}

async fn start_etcd(bin: &Path, probe: &reqwest::Client) -> Result<Server> {
    let dir = tempfile::Builder::new().prefix("cairn-bench-etcd-").tempdir().context("creating a temp dir")?;
    // Left for etcd to create: it wants its data dir 0700 and complains about anything else.
    let data = dir.path().join("data");
    let log = dir.path().join("etcd.log");
    let ports = free_ports(2)?;
    let client_url = format!("http://127.0.0.1:{}", ports[0]);
    let peer_url = format!("http://127.0.0.1:{}", ports[1]);
    let mut cmd = Command::new(bin);
    cmd.arg("--data-dir")
        .arg(&data)
        .args(["--name", "default"])
        .args(["--listen-client-urls", client_url.as_str(), "--advertise-client-urls", client_url.as_str()])
        .args(["--listen-peer-urls", peer_url.as_str(), "--initial-advertise-peer-urls", peer_url.as_str()])
        .args(["--initial-cluster", format!("default={peer_url}").as_str()])
        // 3.4 defaults to the capnslog logger, which ignores --log-level; zap is the only logger
        // from 3.5 on, where the flag is still accepted.
        .args(["--logger", "zap", "--log-level", "warn", "--log-outputs", "stderr"]);
    if cfg!(target_arch = "aarch64") {
        // etcd 3.4 refuses to start on arm64 without this acknowledgement.
        cmd.env("ETCD_UNSUPPORTED_ARCH", "arm64");
    }
    let spawned = Instant::now();
    let mut child = spawn(cmd, &log)?;
    let ready = wait_ready(probe, Kind::Etcd, &client_url, &mut child, &log, spawned).await?;
    Ok(Server { kind: Kind::Etcd, base: client_url, ready, child, _dir: dir })
}

/// `cairn agent -dev` (in-memory), started once on its own: spawn-to-leader time, and RSS after
/// a second of idling. The process is gone when this returns.
async fn measure_dev_agent(bin: &Path, probe: &reqwest::Client) -> Result<(Duration, u64)> {
    let dir = tempfile::Builder::new().prefix("cairn-bench-dev-").tempdir().context("creating a temp dir")?;
    let log = dir.path().join("cairn-dev.log");
    let ports = free_ports(2)?;
    let (http_port, server_port) = (ports[0], ports[1]);
    let mut cmd = Command::new(bin);
    cmd.args(["agent", "-dev", "-node=bench-dev", format!("-http-port={http_port}").as_str()])
        .args(cairn_quiet_ports(server_port));
    let base = format!("http://127.0.0.1:{http_port}");
    let spawned = Instant::now();
    let mut child = spawn(cmd, &log)?;
    let ready = wait_ready(probe, Kind::Cairn, &base, &mut child, &log, spawned).await?;
    // Measurement, not synchronisation: let start-up garbage settle so the figure is "idle".
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = rss_kib(child.0.id())?;
    drop(child);
    Ok((ready, rss))
}

fn etcd_version(bin: &Path) -> Result<String> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version (install etcd-server, or pass --etcd-bin)", bin.display()))?;
    if !out.status.success() {
        bail!("{} --version failed: {}", bin.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("unknown version").trim().to_string())
}

// ---------------------------------------------------------------------------------------------
// Operations

/// How a read is served. etcd has two modes: Cairn's `default` and `consistent` are compared
/// with etcd's linearizable range (its default), `stale` with its serializable one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    /// Consul's default: the leader answers under its lease.
    Default,
    /// `?consistent`: the leader confirms it still leads first.
    Consistent,
    /// `?stale`: any server answers from its own state.
    Stale,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Put,
    Get(Read),
    /// One transaction of `TXN_OPS` puts (Cairn `/v1/txn`, etcd `KV.Txn`).
    Txn,
    /// Compare-and-set of the client's own key at the index it last wrote (Cairn: a `/v1/txn`
    /// with one `cas` verb, which answers the new index; etcd: a `KV.Txn` comparing the key's
    /// mod revision). Every one must succeed.
    Cas,
}

/// Operations per transaction in the txn workload.
const TXN_OPS: usize = 64;

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Put => "put",
            Op::Get(Read::Default) => "get",
            Op::Get(Read::Consistent) => "get-consistent",
            Op::Get(Read::Stale) => "get-stale",
            Op::Txn => "txn64",
            Op::Cas => "cas",
        })
    }
}

/// What a client needs to talk to one system; shared by all its clients. Client `i` talks to
/// `endpoints[i % len]`, so a cluster's clients spread over its members.
struct Target {
    kind: Kind,
    endpoints: Vec<String>,
    value: Vec<u8>,
    value_b64: String,
}

/// One simulated client's connection: its own HTTP/1.1 keep-alive connection to Cairn, or its
/// own HTTP/2 connection to etcd.
enum Conn {
    Cairn { http: reqwest::Client, base: String },
    Etcd(etcd::Client),
}

async fn connect(t: &Target, id: usize) -> Result<Conn> {
    let url = &t.endpoints[id % t.endpoints.len()];
    Ok(match t.kind {
        Kind::Cairn => Conn::Cairn { http: http_client(REQUEST_TIMEOUT)?, base: url.clone() },
        Kind::Etcd => Conn::Etcd(etcd::Client::connect(url, REQUEST_TIMEOUT).await?),
    })
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// One KV operation, checked. `index` is the client's CAS state: the index (revision) its key
/// was last written at, 0 before it exists. Base64 output needs no JSON escaping, so Cairn's txn
/// bodies are formatted directly rather than through serde_json.
async fn do_op(conn: &mut Conn, t: &Target, op: Op, key: &str, index: &mut u64) -> Result<()> {
    let what = || format!("{} {op} {key}", t.kind.name());
    match conn {
        Conn::Cairn { http, base } => {
            let req = match op {
                Op::Txn => {
                    let ops: Vec<String> = (0..TXN_OPS)
                        .map(|i| format!(r#"{{"KV":{{"Verb":"set","Key":"{key}/{i}","Value":"{}"}}}}"#, t.value_b64))
                        .collect();
                    http.put(format!("{base}/v1/txn")).body(format!("[{}]", ops.join(",")))
                }
                Op::Cas => http.put(format!("{base}/v1/txn")).body(format!(
                    r#"[{{"KV":{{"Verb":"cas","Key":"{key}","Value":"{}","Index":{index}}}}}]"#,
                    t.value_b64
                )),
                Op::Put => http.put(format!("{base}/v1/kv/{key}")).body(t.value.clone()),
                Op::Get(Read::Default) => http.get(format!("{base}/v1/kv/{key}")),
                Op::Get(Read::Consistent) => http.get(format!("{base}/v1/kv/{key}?consistent")),
                Op::Get(Read::Stale) => http.get(format!("{base}/v1/kv/{key}?stale")),
            };
            let resp = req.send().await.with_context(what)?;
            let status = resp.status();
            let body = resp.bytes().await.with_context(|| format!("{}: reading the answer", what()))?;
            let ok = status.is_success()
                && match op {
                    Op::Put => body.trim_ascii() == b"true",
                    Op::Get(_) => body.starts_with(b"["),
                    Op::Txn => contains(&body, b"\"Errors\":null"),
                    Op::Cas => match modify_index(&body) {
                        Some(i) if contains(&body, b"\"Errors\":null") => {
                            *index = i;
                            true
                        }
                        _ => false,
                    },
                };
            if !ok {
                let snippet = String::from_utf8_lossy(&body[..body.len().min(300)]);
                bail!("{}: unexpected answer {status}: {snippet}", what());
            }
        }
        Conn::Etcd(c) => match op {
            Op::Put => {
                c.put(key.as_bytes(), &t.value).await.with_context(what)?;
            }
            Op::Get(read) => {
                let r = c.get(key.as_bytes(), read == Read::Stale).await.with_context(what)?;
                if r.kvs.is_empty() {
                    bail!("{}: key not found", what());
                }
            }
            Op::Txn => {
                let success = (0..TXN_OPS).map(|i| etcd::put_op(format!("{key}/{i}").as_bytes(), &t.value)).collect();
                let r = c.txn(etcd::TxnRequest { success, ..Default::default() }).await.with_context(what)?;
                if !r.succeeded {
                    bail!("{}: transaction did not succeed", what());
                }
            }
            Op::Cas => {
                let compare = vec![etcd::Compare {
                    result: etcd::COMPARE_EQUAL,
                    target: etcd::COMPARE_MOD,
                    key: key.as_bytes().to_vec(),
                    mod_revision: Some(*index as i64),
                }];
                let success = vec![etcd::put_op(key.as_bytes(), &t.value)];
                let r = c.txn(etcd::TxnRequest { compare, success, failure: vec![] }).await.with_context(what)?;
                match (r.succeeded, r.header) {
                    (true, Some(h)) => *index = h.revision as u64,
                    _ => bail!("{}: compare-and-set at revision {index} failed", what()),
                }
            }
        },
    }
    Ok(())
}

/// The `ModifyIndex` of the first result of a Cairn transaction answer.
fn modify_index(body: &[u8]) -> Option<u64> {
    const FIELD: &[u8] = b"\"ModifyIndex\":";
    let at = body.windows(FIELD.len()).position(|w| w == FIELD)? + FIELD.len();
    let digits: Vec<u8> = body[at..].iter().copied().take_while(u8::is_ascii_digit).collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Cheap deterministic per-client randomness for picking keys to read.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A preloaded key.
    fn key(&mut self) -> String {
        let r = self.next();
        format!("bench/{}/{}", r % CONCURRENCY as u64, (r >> 32) % PRELOAD_PER_CLIENT)
    }
}

/// Writes the keys the get workloads read, with the same client setup as the workloads.
async fn preload(t: Arc<Target>) -> Result<()> {
    let mut set = JoinSet::new();
    for c in 0..CONCURRENCY {
        let t = t.clone();
        set.spawn(async move {
            let mut conn = connect(&t, c).await?;
            for n in 0..PRELOAD_PER_CLIENT {
                do_op(&mut conn, &t, Op::Put, &format!("bench/{c}/{n}"), &mut 0).await?;
            }
            anyhow::Ok(())
        });
    }
    let deadline = tokio::time::Instant::now() + START_TIMEOUT + REQUEST_TIMEOUT;
    while let Some(joined) = tokio::time::timeout_at(deadline, set.join_next()).await.context("preload timed out")? {
        joined.context("preload task panicked")??;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Workloads

#[derive(Clone, Copy)]
struct Workload {
    op: Op,
    clients: usize,
}

impl Workload {
    fn label(self) -> String {
        format!("{}@{}", self.op, self.clients)
    }
}

const WORKLOADS: [Workload; 6] = [
    Workload { op: Op::Put, clients: 1 },
    Workload { op: Op::Put, clients: CONCURRENCY },
    Workload { op: Op::Get(Read::Default), clients: 1 },
    Workload { op: Op::Get(Read::Default), clients: CONCURRENCY },
    Workload { op: Op::Txn, clients: 1 },
    Workload { op: Op::Txn, clients: 8 },
];

struct RoundResult {
    ops: u64,
    secs: f64,
    p50_us: u32,
    p99_us: u32,
}

impl RoundResult {
    fn throughput(&self) -> f64 {
        self.ops as f64 / self.secs
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[u32], p: f64) -> u32 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Tells rounds apart, so each CAS round starts from keys that do not exist yet.
static ROUND: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One simulated client: its own connection, one request in flight at a time, per-op latency in
/// microseconds.
async fn client_loop(
    id: usize,
    t: Arc<Target>,
    op: Op,
    round: u64,
    start: Arc<Barrier>,
    dur: Duration,
    max_ops: u64,
) -> Result<Vec<u32>> {
    let mut rng = XorShift::new(id as u64);
    let mut index = 0u64;
    let mut key = |n: u64| match op {
        Op::Put => format!("bench/{id}/{n}"),
        Op::Get(_) => rng.key(),
        Op::Txn => format!("txn/{id}/{n}"),
        Op::Cas => format!("cas/{round}/{id}"),
    };
    let setup = async {
        let mut conn = connect(&t, id).await?;
        // Untimed warm-up op: opens the connection before the clock starts (and creates the
        // CAS key).
        do_op(&mut conn, &t, op, &key(0), &mut index).await?;
        anyhow::Ok(conn)
    }
    .await;
    // Reached even when setup failed, or the coordinator would wait for this client forever.
    start.wait().await;
    let mut conn = setup?;
    let deadline = Instant::now() + dur;
    let mut lat = Vec::with_capacity(4096);
    let mut n = 0u64;
    while n < max_ops && Instant::now() < deadline {
        n += 1;
        let key = key(n);
        let began = Instant::now();
        do_op(&mut conn, &t, op, &key, &mut index).await?;
        lat.push(u32::try_from(began.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    Ok(lat)
}

async fn run_workload(t: &Arc<Target>, w: Workload, dur: Duration) -> Result<RoundResult> {
    let start = Arc::new(Barrier::new(w.clients + 1));
    let max_ops = (MAX_OPS_PER_RUN / w.clients as u64).max(1);
    let round = ROUND.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // A JoinSet aborts the remaining clients if we bail out early.
    let mut set = JoinSet::new();
    for id in 0..w.clients {
        set.spawn(client_loop(id, t.clone(), w.op, round, start.clone(), dur, max_ops));
    }
    tokio::time::timeout(START_TIMEOUT, start.wait()).await.context("clients failed to connect in time")?;
    let t0 = Instant::now();
    // Every client stops issuing at `dur`; its last op may take up to REQUEST_TIMEOUT.
    let deadline = tokio::time::Instant::now() + dur + REQUEST_TIMEOUT + Duration::from_secs(5);
    let mut lat: Vec<u32> = Vec::new();
    while let Some(joined) =
        tokio::time::timeout_at(deadline, set.join_next()).await.context("clients did not finish in time")?
    {
        lat.extend(joined.context("client task panicked")??);
    }
    let secs = t0.elapsed().as_secs_f64();
    if lat.is_empty() {
        bail!("no operations completed");
    }
    lat.sort_unstable();
    Ok(RoundResult { ops: lat.len() as u64, secs, p50_us: percentile(&lat, 0.50), p99_us: percentile(&lat, 0.99) })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Per-metric medians across rounds (so the figures needn't all come from one round).
struct Summary {
    ops: f64,
    throughput: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn summarize(rounds: &[RoundResult]) -> Summary {
    let m = |f: &dyn Fn(&RoundResult) -> f64| median(rounds.iter().map(f).collect());
    Summary {
        ops: m(&|r| r.ops as f64),
        throughput: m(&|r| r.throughput()),
        p50_ms: m(&|r| r.p50_us as f64 / 1000.0),
        p99_ms: m(&|r| r.p99_us as f64 / 1000.0),
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "MISS"
    }
}

/// The issue's targets for a workload: (minimum throughput ratio, maximum p50 ratio), Cairn/etcd.
fn targets(w: Workload) -> (Option<f64>, Option<f64>) {
    match (w.op, w.clients) {
        (Op::Put, 1) => (None, Some(1.0)),
        (Op::Put, _) => (Some(1.5), None),
        (Op::Get(_), _) => (Some(2.0), None),
        (Op::Txn, _) | (Op::Cas, _) => (Some(1.0), None),
    }
}

// ---------------------------------------------------------------------------------------------
// Lock hand-over

const LOCK_CONTENDERS: usize = 10;

/// Contenders for one lock, each with its own session, waiting with blocking queries as
/// applications do. The holder releases at once; the latency is from the release request to the
/// next contender's successful acquire. A former holder waits for the next change before trying
/// again, so the lock really changes hands. Returns (hand-overs, p50 us, p99 us).
async fn lock_handover(base: &str, dur: Duration) -> Result<(usize, u32, u32)> {
    let released: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let deadline = Instant::now() + dur;
    let mut set = JoinSet::new();
    for _ in 0..LOCK_CONTENDERS {
        let (base, released) = (base.to_string(), released.clone());
        set.spawn(async move {
            let http = http_client(REQUEST_TIMEOUT)?;
            let sess: Value = http
                .put(format!("{base}/v1/session/create"))
                .body(r#"{"LockDelay":"0s"}"#)
                .send()
                .await?
                .json()
                .await?;
            let sid = sess["ID"].as_str().context("no session ID")?.to_string();
            let key = format!("{base}/v1/kv/bench-lock");
            let mut lat = Vec::new();
            let mut index = 0u64;
            let mut n = 0u64;
            // Whether the last read showed the lock free: only then is an acquire worth a Raft write.
            let mut free = true;
            // After holding, wait until someone else holds it before competing again.
            let mut yielding = false;
            while Instant::now() < deadline && n < MAX_OPS_PER_RUN {
                n += 1;
                if free && !yielding {
                    let won =
                        http.put(format!("{key}?acquire={sid}")).send().await?.bytes().await?.trim_ascii() == b"true";
                    if won {
                        if let Some(t) = released.lock().expect("released").take() {
                            lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                        }
                        *released.lock().expect("released") = Some(Instant::now());
                        http.put(format!("{key}?release={sid}")).send().await?;
                        yielding = true;
                    }
                }
                // Wait for the next change of the key.
                let before = index;
                let resp = http.get(format!("{key}?index={index}&wait=1s")).send().await?;
                index = resp
                    .headers()
                    .get("X-Consul-Index")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let body = resp.bytes().await?;
                let held = contains(&body, b"\"Session\":");
                free = !held;
                // Someone else took it, or nobody wanted it for a whole wait: compete again.
                if held || index == before {
                    yielding = false;
                }
            }
            let _ = http.put(format!("{base}/v1/session/destroy/{sid}")).send().await;
            anyhow::Ok(lat)
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r.context("lock contender panicked")??);
    }
    if all.is_empty() {
        bail!("no lock hand-over happened");
    }
    all.sort_unstable();
    Ok((all.len(), percentile(&all, 0.50), percentile(&all, 0.99)))
}

// ---------------------------------------------------------------------------------------------

/// The workloads against each system in alternating rounds; prints rounds, medians and ratios
/// against the issue's targets, and adds the verdicts to `summary`.
async fn compare(
    systems: &[Arc<Target>],
    workloads: &[Workload],
    o: &Opts,
    targets: fn(Workload) -> (Option<f64>, Option<f64>),
    summary: &mut Vec<(bool, String)>,
) -> Result<()> {
    for &w in workloads.iter().filter(|w| o.wants(&w.label())) {
        println!();
        println!("== {}: {} clients{} ==", w.label(), w.clients, read_note(w.op));
        let mut rounds: Vec<Vec<RoundResult>> = systems.iter().map(|_| Vec::new()).collect();
        for r in 0..o.rounds {
            // Alternating systems round by round, so drift (thermal, page cache) hits both alike.
            for (t, results) in systems.iter().zip(rounds.iter_mut()) {
                let res = run_workload(t, w, o.duration)
                    .await
                    .with_context(|| format!("{} {} round {}", t.kind.name(), w.label(), r + 1))?;
                println!(
                    "  round {}/{} {:<6} {:>9} ops {:>10.1} ops/s  p50 {:>8.3} ms  p99 {:>8.3} ms",
                    r + 1,
                    o.rounds,
                    t.kind.name(),
                    res.ops,
                    res.throughput(),
                    res.p50_us as f64 / 1000.0,
                    res.p99_us as f64 / 1000.0
                );
                results.push(res);
            }
        }
        let (c, e) = (summarize(&rounds[0]), summarize(&rounds[1]));
        println!(
            "  {:<10} {:>10} {:>12} {:>10} {:>10}   (medians of {} round(s))",
            "system", "ops", "ops/s", "p50 ms", "p99 ms", o.rounds
        );
        for (name, s) in [("cairn", &c), ("etcd", &e)] {
            println!("  {:<10} {:>10.0} {:>12.1} {:>10.3} {:>10.3}", name, s.ops, s.throughput, s.p50_ms, s.p99_ms);
        }
        let (min_tput, max_p50) = targets(w);
        let tput = ratio(c.throughput, e.throughput);
        match min_tput {
            Some(min) => {
                println!("  cairn/etcd throughput {tput:.2}x  (target >= {min:.1}x: {})", verdict(tput >= min));
                summary.push((tput >= min, format!("{} throughput {tput:.2}x etcd (target >= {min:.1}x)", w.label())));
            }
            None => println!("  cairn/etcd throughput {tput:.2}x"),
        }
        if let Some(max) = max_p50 {
            let p50 = ratio(c.p50_ms, e.p50_ms);
            println!("  cairn/etcd p50        {p50:.2}x  (target <= {max:.1}x: {})", verdict(p50 <= max));
            summary.push((p50 <= max, format!("{} p50 {p50:.2}x etcd (target <= {max:.1}x)", w.label())));
        }
    }

    Ok(())
}

/// What a read workload compares.
fn read_note(op: Op) -> &'static str {
    match op {
        Op::Get(Read::Default) => " (cairn default vs etcd linearizable)",
        Op::Get(Read::Consistent) => " (cairn ?consistent vs etcd linearizable)",
        Op::Get(Read::Stale) => " (cairn ?stale vs etcd serializable)",
        _ => "",
    }
}

async fn run(o: Opts) -> Result<()> {
    if !o.cairn_bin.is_file() {
        bail!("Cairn binary {} not found (cargo build --release -p cairn, or pass --cairn-bin)", o.cairn_bin.display());
    }
    let etcd_ver = etcd_version(&o.etcd_bin)?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("cairn-bench: Cairn KV vs single-node etcd, 1 connection per client");
    println!("  cairn: {} (its HTTP API: HTTP/1.1 keep-alive, reqwest)", o.cairn_bin.display());
    println!("  etcd:  {} ({etcd_ver}), through its native gRPC API (HTTP/2, tonic)", o.etcd_bin.display());
    println!(
        "  {} s per round, {} round(s) per workload and system; {cores} CPU(s), shared by servers and clients",
        o.duration.as_secs(),
        o.rounds
    );
    println!("  both fsync every write (Cairn with a data dir, etcd by default); reads are leader reads on both");

    let probe = http_client(Duration::from_millis(500))?;
    let mut summary: Vec<(bool, String)> = Vec::new();

    // On an idle machine, before the benchmark servers exist.
    let (dev_ready, dev_rss) = measure_dev_agent(&o.cairn_bin, &probe).await.context("measuring `cairn agent -dev`")?;
    let ready_ms = dev_ready.as_secs_f64() * 1000.0;
    let rss_mib = mib(dev_rss);
    println!();
    println!("== cairn agent -dev ==");
    println!("  ready (spawn to leader)  {ready_ms:>8.1} ms   target < {TARGET_READY_MS:.0} ms");
    println!("  idle RSS (after ~1 s)    {rss_mib:>8.1} MiB  target < {TARGET_IDLE_RSS_MIB:.0} MB");
    summary.push((
        ready_ms < TARGET_READY_MS,
        format!("agent -dev ready {ready_ms:.1} ms (target < {TARGET_READY_MS:.0} ms)"),
    ));
    summary.push((
        rss_mib < TARGET_IDLE_RSS_MIB,
        format!("agent -dev idle RSS {rss_mib:.1} MiB (target < {TARGET_IDLE_RSS_MIB:.0} MB)"),
    ));

    let cairn = start_cairn(&o.cairn_bin, &probe).await.context("starting Cairn")?;
    let etcd = start_etcd(&o.etcd_bin, &probe).await.context("starting etcd")?;
    println!();
    for s in [&cairn, &etcd] {
        println!("{} ready in {:.1} ms at {}", s.kind.name(), s.ready.as_secs_f64() * 1000.0, s.base);
    }

    let value: Vec<u8> = (0..VALUE_LEN).map(|i| b'a' + (i % 26) as u8).collect();
    let value_b64 = b64(&value);
    let systems: Vec<Arc<Target>> = [&cairn, &etcd]
        .into_iter()
        .map(|s| {
            Arc::new(Target {
                kind: s.kind,
                endpoints: vec![s.base.clone()],
                value: value.clone(),
                value_b64: value_b64.clone(),
            })
        })
        .collect();
    for t in &systems {
        preload(t.clone()).await.with_context(|| format!("preloading {}", t.kind.name()))?;
    }
    println!("preloaded {} keys of {VALUE_LEN} bytes into each", CONCURRENCY as u64 * PRELOAD_PER_CLIENT);

    compare(&systems, &WORKLOADS, &o, targets, &mut summary).await?;

    println!();
    println!("== lock hand-over: {LOCK_CONTENDERS} contenders on one key (cairn) ==");
    let (n, p50, p99) = lock_handover(&cairn.base, o.duration).await?;
    let p99_ms = p99 as f64 / 1000.0;
    println!(
        "  {n} hand-overs  p50 {:.3} ms  p99 {p99_ms:.3} ms  (target p99 <= 10 ms: {})",
        p50 as f64 / 1000.0,
        verdict(p99_ms <= 10.0)
    );
    summary.push((p99_ms <= 10.0, format!("lock hand-over p99 {p99_ms:.3} ms (target <= 10 ms)")));

    println!();
    for s in [&cairn, &etcd] {
        match rss_kib(s.child.0.id()) {
            Ok(kib) => println!("{} RSS after the workloads: {:.1} MiB", s.kind.name(), mib(kib)),
            Err(e) => println!("{} RSS after the workloads: unavailable ({e:#})", s.kind.name()),
        }
    }

    println!();
    println!("== targets (informational) ==");
    for (pass, line) in &summary {
        println!("  {}  {line}", verdict(*pass));
    }
    // `cairn` and `etcd` drop here: both servers are killed and their dirs removed.
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Some(o)) => o,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    // Servers live inside `run`, so they are killed before the process exits, error or not.
    let r = if opts.failover {
        failover(opts).await
    } else if opts.cluster {
        cluster::run(opts).await
    } else {
        run(opts).await
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Failover

/// The time from SIGKILL of a leader to writes being acknowledged again.
const TARGET_FAILOVER_MS: f64 = 2000.0;

/// Waits until every server names the same leader and that leader takes a write; returns its index.
async fn settle(http: &reqwest::Client, http_port: u16, server_port: u16, logs: &str) -> Result<usize> {
    let ip = |i: usize| format!("127.0.0.{}", i + 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut names = Vec::new();
        for i in 0..3 {
            let v = get_json(http, &format!("http://{}:{http_port}/v1/status/leader", ip(i))).await;
            names.push(v.and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default());
        }
        if !names[0].is_empty() && names.iter().all(|n| *n == names[0]) {
            if let Some(l) = (0..3).find(|i| names[0] == format!("{}:{server_port}", ip(*i))) {
                let put = http.put(format!("http://{}:{http_port}/v1/kv/fo/settle", ip(l))).body("x").send().await;
                if put.is_ok_and(|r| r.status().is_success()) {
                    return Ok(l);
                }
            }
        }
        if Instant::now() > deadline {
            bail!("the cluster did not settle on a leader within 60 s (logs in {logs})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `cairn agent` as server `i` of a three-server cluster on 127.0.0.(i+1) with a data dir, joining
/// through server 0, `raft_multiplier = 1`, and only HTTP, the server port and the LAN pool open.
fn cluster_server_cmd(bin: &Path, node: &str, i: usize, data: &Path, [http, server, serf]: [u16; 3]) -> Command {
    let ip = |i: usize| format!("127.0.0.{}", i + 1);
    let mut cmd = Command::new(bin);
    cmd.args(["agent", "-server", "-bootstrap-expect=3"])
        .arg(format!("-node={node}"))
        .arg(format!("-bind={}", ip(i)))
        .arg(format!("-client={}", ip(i)))
        .arg(format!("-data-dir={}", data.display()))
        .arg(format!("-http-port={http}"))
        .arg(format!("-server-port={server}"))
        .arg(format!("-serf-lan-port={serf}"))
        .arg(format!("-retry-join={}:{serf}", ip(0)))
        .args(["-serf-wan-port=-1", "-dns-port=-1", "-grpc-port=-1", "-log-level=warn"])
        .arg("-hcl=performance { raft_multiplier = 1 }");
    cmd
}

/// `--failover`: three Cairn servers on 127.0.0.1-3 (`-bootstrap-expect=3`, data dirs,
/// `raft_multiplier = 1`); a client writes to a follower without pause; the leader is SIGKILLed,
/// and the figure is the time from the kill to the first acknowledged write *sent* after it. The
/// killed server is restarted (same data dir) and the cluster settles before the next round.
async fn failover(o: Opts) -> Result<()> {
    if !o.cairn_bin.is_file() {
        bail!("Cairn binary {} not found (cargo build --release -p cairn, or pass --cairn-bin)", o.cairn_bin.display());
    }
    let dir = tempfile::Builder::new().prefix("cairn-bench-failover-").tempdir().context("creating a temp dir")?;
    let ports = free_ports(3)?;
    let (http_port, server_port, serf_port) = (ports[0], ports[1], ports[2]);
    let ip = |i: usize| format!("127.0.0.{}", i + 1);
    let start = |i: usize| -> Result<ChildGuard> {
        let data = dir.path().join(format!("s{i}"));
        std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        let cmd = cluster_server_cmd(&o.cairn_bin, &format!("fo{i}"), i, &data, [http_port, server_port, serf_port]);
        spawn(cmd, &dir.path().join(format!("s{i}.log")))
    };
    println!("cairn-bench: failover of a 3-server Cairn cluster (127.0.0.1-3, data dirs, raft_multiplier 1)");
    println!("  a client writes to a follower without pause; the leader is SIGKILLed; figure: kill to the");
    println!(
        "  first acknowledged write sent after it. ({} rounds; no etcd run: this is a goal, not a ratio)",
        o.rounds
    );
    let http = http_client(Duration::from_secs(15))?;
    let mut servers: Vec<Option<ChildGuard>> = Vec::new();
    for i in 0..3 {
        servers.push(Some(start(i)?));
    }
    let url = |i: usize, path: &str| format!("http://{}:{http_port}{path}", ip(i));
    let logs = dir.path().display().to_string();
    let mut figures = Vec::new();
    for round in 0..o.rounds {
        let leader = settle(&http, http_port, server_port, &logs).await?;
        let follower = (0..3).find(|i| *i != leader).expect("a follower");
        // Writes, each with the time it was sent, until told to stop.
        // (sent, acknowledged) of every acknowledged write.
        let acked: Arc<std::sync::Mutex<Vec<(Instant, Instant)>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (http, acked, stop, target) = (http.clone(), acked.clone(), stop.clone(), url(follower, "/v1/kv/fo/w"));
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    n += 1;
                    let sent = Instant::now();
                    let r = http.put(&target).body(n.to_string()).send().await;
                    if let Ok(r) = r {
                        if r.status().is_success() && r.bytes().await.is_ok_and(|b| b.as_ref() == b"true") {
                            acked.lock().expect("acked").push((sent, Instant::now()));
                        }
                    }
                }
            })
        };
        // Let writes flow, then kill the leader.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let killed_at = Instant::now();
        drop(servers[leader].take());
        let deadline = killed_at + Duration::from_secs(30);
        let resumed = loop {
            if let Some((_, at)) = acked.lock().expect("acked").iter().find(|(sent, _)| *sent >= killed_at) {
                break Some(*at);
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = writer.await;
        let Some(resumed) = resumed else {
            bail!("round {}: no write was acknowledged within 30 s of the kill", round + 1);
        };
        // When the first write sent after the kill was acknowledged.
        let ms = (resumed - killed_at).as_secs_f64() * 1000.0;
        figures.push(ms);
        servers[leader] = Some(start(leader)?);
        println!("  round {}: leader fo{leader} killed; writes acknowledged again after {:.0} ms", round + 1, ms);
    }
    figures.sort_by(|a, b| a.total_cmp(b));
    let med = median(figures.clone());
    let max = figures.last().copied().unwrap_or(0.0);
    println!();
    println!(
        "  writes resume after a leader kill: median {med:.0} ms, max {max:.0} ms   target <= {TARGET_FAILOVER_MS:.0} ms: {}",
        verdict(max <= TARGET_FAILOVER_MS)
    );
    Ok(())
}
