//! A Raft server: the store, the replicated log, and the server side of every request. Writes are
//! proposed as [`Command`]s and answered once applied; reads pick a consistency mode.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::watch::WatchReceiver;
use openraft::{BasicNode, ChangeMembers, Instant as _, ReadPolicy, ServerState, SnapshotPolicy};

use cairn_store::Store;
use cairn_types::{Command, CommandResult};

use crate::clock::{Clock, SystemClock};
use crate::error::Error;
use crate::raft::log_store::LogStore;
use crate::raft::network::{ContactTracker, Network};
use crate::raft::state_machine::{LockDelays, StateMachine};
use crate::raft::Raft;
use crate::rpc::client::{CallError, RpcClient};
use crate::rpc::proto::{Request, Response};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// This server's Raft ID.
    pub node_id: u64,
    /// The address peers reach this server's RPC port on (`ip:8300`), reported by `/v1/status/*`.
    pub rpc_addr: String,
    /// Where the Raft log, vote and snapshots live; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// Consul's `performance.raft_multiplier`: scales every Raft timer (1 = fastest).
    pub raft_multiplier: u64,
    /// Consul's `raft_snapshot_threshold`: entries between snapshots.
    pub snapshot_threshold: u64,
    /// Consul's `raft_snapshot_interval`: how often the threshold is checked (each wait is
    /// jittered between one and two intervals, as Raft's).
    pub snapshot_interval: Duration,
    /// Consul's `raft_trailing_logs`: entries kept after a snapshot for slow followers.
    pub trailing_logs: u64,
    /// Form a one-server cluster if none exists (`-bootstrap`, `-dev`).
    pub bootstrap: bool,
    /// `-bootstrap-expect`: form the cluster once this many servers are found in the LAN pool.
    pub bootstrap_expect: usize,
    /// Where the server port listens (`-bind` and `ports.server`); `None` opens none (a lone
    /// server that no peer needs to reach).
    pub listen: Option<SocketAddr>,
    /// `limits.rpc_max_conns_per_client`.
    pub max_conns_per_client: usize,
    /// Consul's `performance.rpc_hold_timeout`: how long a request waits out a leader election.
    pub rpc_hold_timeout: Duration,
    /// An RPC connection with nothing in flight and no frame begun for this long is closed
    /// ([`crate::rpc::RPC_IDLE_TIMEOUT`]).
    pub rpc_idle_timeout: Duration,
    /// `limits.rpc_handshake_timeout` (5 s): how long a new server-port connection has to say
    /// what it carries. Zero waits for ever, as in Consul.
    pub rpc_handshake_timeout: Duration,
    /// The agent's `autopilot {}`: what the leader writes into the state if none is there yet.
    pub autopilot: cairn_types::structs::AutopilotConfig,
    /// Where time-based decisions read the time.
    pub clock: Arc<dyn Clock>,
    /// Where random choices come from (jitter, shuffles, seeds).
    pub rng: Arc<dyn crate::clock::Rng>,
    /// The datacenter this server belongs to (named in prepared-query answers).
    pub datacenter: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            node_id: 1,
            rpc_addr: "127.0.0.1:8300".into(),
            data_dir: None,
            raft_multiplier: 1,
            snapshot_threshold: 16384,
            snapshot_interval: Duration::from_secs(30),
            trailing_logs: 10240,
            bootstrap: true,
            bootstrap_expect: 0,
            listen: None,
            max_conns_per_client: 100,
            rpc_hold_timeout: Duration::from_secs(7),
            rpc_idle_timeout: crate::rpc::RPC_IDLE_TIMEOUT,
            rpc_handshake_timeout: crate::rpc::HANDSHAKE_TIMEOUT,
            autopilot: Default::default(),
            clock: Arc::new(SystemClock),
            rng: Arc::new(crate::clock::OsRng),
            datacenter: "dc1".into(),
        }
    }
}

/// What a committed write returned, and the log index it committed at.
#[derive(Debug, Clone)]
pub struct Applied {
    pub index: u64,
    pub result: CommandResult,
}

/// A server of the datacenter as the LAN pool shows it (from its member tags).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerInfo {
    pub name: String,
    /// Its node UUID (the `id` tag).
    pub node_id: String,
    pub raft_id: u64,
    /// `ip:port` of its server port.
    pub rpc_addr: String,
    /// Its `expect` tag (0: none).
    pub expect: usize,
    /// Its `bootstrap` tag.
    pub bootstrap: bool,
    /// Its `raft_vsn` tag.
    pub raft_vsn: String,
    pub alive: bool,
    /// Left gracefully (or was reaped): it leaves the Raft configuration too.
    pub left: bool,
    /// Its gossip status as Consul names it: `alive`, `leaving`, `left` or `failed`.
    pub status: String,
    /// Its version, from the `build` tag (`1.22.0:abcdef` gives `1.22.0`).
    pub version: String,
}

/// A server in the Raft configuration.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RaftServer {
    pub raft_id: u64,
    pub address: String,
    pub leader: bool,
    pub voter: bool,
    /// The last log index this server is known to hold: its own for this server, what the leader
    /// replicated for the others (0 where unknown, on a follower).
    pub last_index: u64,
    /// Milliseconds since the leader last heard from it (0 for the leader itself; `None` where
    /// unknown: never heard, or asked of a follower).
    pub last_contact_ms: Option<u64>,
}

/// A stable Raft ID from a node UUID, so a restarted server keeps its identity and every server
/// computes the same ID for a peer from its `id` tag.
pub fn raft_id(node_id: &str) -> u64 {
    let u = uuid::Uuid::parse_str(node_id).map(|u| u.as_u128()).unwrap_or(0);
    ((u >> 64) as u64 ^ u as u64).max(1)
}

/// Consul's autopilot `server_stabilization_time`: a new server must stay healthy this long before
/// it gets a vote.
pub const SERVER_STABILIZATION: Duration = Duration::from_secs(10);
/// Autopilot's `max_trailing_logs`: a server further behind than this is not healthy.
pub const MAX_TRAILING_LOGS: u64 = 250;

pub struct Server {
    raft: Raft,
    store: Arc<Store>,
    cfg: ServerConfig,
    lock_delays: LockDelays,
    rpc: Arc<RpcClient>,
    /// A follower's read-index requests to the leader, batched (by leader address and
    /// consistency).
    read_batches: crate::read_batch::ReadBatcher<(String, bool)>,
    contact: Arc<ContactTracker>,
    started: Instant,
    /// Holds this server's votes for a while after a restart (see [`crate::raft::VoteGate`]).
    vote_gate: crate::raft::VoteGate,
    /// Set once the cluster is formed or found already formed: bootstrap is never tried again.
    formed: AtomicBool,
    /// When each caught-up non-voter was first seen healthy (the leader promotes after
    /// [`SERVER_STABILIZATION`]).
    healthy_since: std::sync::Mutex<BTreeMap<u64, Instant>>,
    stop: tokio::sync::watch::Sender<bool>,
    /// The agent's LAN pool, once it is open (the leader runner reconciles it).
    lan: std::sync::OnceLock<crate::leader::Lan>,
    /// The servers of the LAN pool as last seen (names, IDs and status for the operator views).
    lan_servers: std::sync::Mutex<Vec<ServerInfo>>,
    /// Session TTL deadlines, kept by the leader (see [`crate::leader::reap_sessions`]).
    pub(crate) session_timers: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Blocking queries this server is holding now (Consul's `consul.rpc.queries_blocking`),
    /// counted as their callers made them.
    pub(crate) blocking: AtomicUsize,
    /// The queries those run as: identical ones an RPC client gathered are one.
    pub(crate) blocking_evaluations: AtomicUsize,
    /// When this server last began a leadership transfer (see [`Server::lease_read_index`]).
    transfer_started: std::sync::Mutex<Option<tokio::time::Instant>>,
}

/// Bytes of log an in-memory server holds before it snapshots: the entry count policy alone would
/// let 16,384 large values (gigabytes) pile up in `-dev`, where memory should follow the data.
pub const MEM_LOG_MAX_BYTES: usize = 32 << 20;

/// For a server without a data dir: snapshots (and so drops the log) whenever the log in memory
/// passes [`MEM_LOG_MAX_BYTES`]. Runs until Raft stops.
async fn compact_memory_log(raft: Raft, log: LogStore) {
    let mut rx = raft.metrics();
    let mut asked_at: Option<u64> = None;
    loop {
        let (applied, snap) = {
            let m = rx.borrow_watched();
            (m.last_applied.map_or(0, |l| l.index), m.snapshot.map_or(0, |l| l.index))
        };
        // One request at a time: wait for the snapshot asked for to land before asking again.
        let pending = asked_at.is_some_and(|a| snap < a);
        if !pending && log.cached_bytes() > MEM_LOG_MAX_BYTES && applied > snap {
            asked_at = Some(applied);
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Consul's snapshot schedule: every `raft_snapshot_interval` (jittered up to twice that), a
/// snapshot if `raft_snapshot_threshold` entries were applied since the last one. Runs until the
/// server goes.
async fn snapshot_on_interval(server: std::sync::Weak<Server>) {
    loop {
        let Some(s) = server.upgrade() else { return };
        let every = s.cfg.snapshot_interval.max(Duration::from_millis(10));
        let mut stop = s.stop.subscribe();
        let wait = every + Duration::from_millis(s.cfg.rng.below(every.as_millis() as u64));
        drop(s);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = crate::rpc::stopped(&mut stop) => return,
        }
        let Some(s) = server.upgrade() else { return };
        let (applied, snap) = {
            let m = s.raft.metrics();
            let m = m.borrow_watched();
            (m.last_applied.map_or(0, |l| l.index), m.snapshot.map_or(0, |l| l.index))
        };
        if applied.saturating_sub(snap) >= s.cfg.snapshot_threshold.max(16) {
            tracing::debug!(target: "agent.server.raft", applied, last_snapshot = snap, "taking a snapshot");
            if s.raft.trigger().snapshot().await.is_err() {
                return;
            }
        }
    }
}

/// Consul's manual recovery: a `raft/peers.json` in the data dir names the servers of a new
/// configuration; it is written into the log before Raft starts, and the file is renamed to
/// `peers.info` so it is applied once.
async fn recover_from_peers_json(raft_dir: &std::path::Path, me: u64) -> Result<(), Error> {
    let path = raft_dir.join("peers.json");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
    let peers = crate::recover::parse_peers_json(&text).map_err(Error::Storage)?;
    tracing::warn!(target: "agent.server", path = %path.display(), "found peers.json file, recovering Raft configuration...");
    let plan = crate::recover::plan(raft_dir, &peers).await.map_err(Error::Storage)?;
    crate::recover::apply(raft_dir, me, &plan).await.map_err(Error::Storage)?;
    std::fs::rename(&path, raft_dir.join("peers.info")).map_err(|e| Error::Storage(e.to_string()))?;
    tracing::warn!(target: "agent.server", servers = ?plan.new.values().collect::<Vec<_>>(), "recovery of the Raft configuration complete; peers.json renamed to peers.info");
    Ok(())
}

impl Server {
    pub async fn start(cfg: ServerConfig) -> Result<Arc<Server>, Error> {
        let store = Arc::new(Store::new());
        let raft_dir = cfg.data_dir.as_ref().map(|d| d.join("raft"));
        if let Some(d) = &raft_dir {
            recover_from_peers_json(d, cfg.node_id).await?;
        }
        let log = match &raft_dir {
            Some(d) => LogStore::open(d).map_err(|e| Error::Storage(format!("{}: {e}", d.display())))?,
            None => LogStore::in_memory(),
        };
        let lock_delays = LockDelays::new(cfg.clock.clone());
        let sm = StateMachine::open(store.clone(), raft_dir.clone(), lock_delays.clone())
            .map_err(|e| Error::Storage(e.to_string()))?;
        let m = cfg.raft_multiplier.clamp(1, 10);
        // Consul's timers at multiplier 1 are heartbeat 1s / election 1s for LAN servers; a single
        // dev server elects itself immediately on bootstrap, so these only govern failover.
        let rc = openraft::Config {
            cluster_name: "cairn".into(),
            heartbeat_interval: 100 * m,
            election_timeout_min: 300 * m,
            election_timeout_max: 600 * m,
            // Snapshots are taken on the interval, when the threshold has been reached (see
            // `snapshot_on_interval`), as Consul's Raft does, not the moment it is.
            snapshot_policy: if cfg.data_dir.is_some() {
                SnapshotPolicy::Never
            } else {
                SnapshotPolicy::LogsSinceLast(cfg.snapshot_threshold.max(16))
            },
            // Without a data dir there is no follower to catch up from old entries and nowhere to
            // evict them to: a snapshot drops the whole log before it.
            max_in_snapshot_log_to_keep: if cfg.data_dir.is_some() { cfg.trailing_logs } else { 0 },
            // An append batch stays under the Raft frame limit even of values at their 512 KiB cap.
            max_payload_entries: 256,
            enable_pre_vote: Some(true),
            // A restarted leader stands for election like any server (standard Raft, and
            // Consul's). openraft's default lets it resume in its old term, which is unsafe when
            // the crash took its unsynced log tail: followers may have committed those entries,
            // and the leader would write different ones at the same term and index (the Raft
            // simulation's torn writes found this).
            enable_leader_restore: Some(false),
            ..Default::default()
        };
        let rc = Arc::new(rc.validate().map_err(|e| Error::Fatal(e.to_string()))?);
        let mem_log = cfg.data_dir.is_none().then(|| log.clone());
        let voted = openraft::RaftLogReader::read_vote(&mut log.clone())
            .await
            .map_err(|e| Error::Storage(e.to_string()))?
            .is_some();
        let vote_gate = crate::raft::VoteGate::at_start(voted, Duration::from_millis(rc.election_timeout_max));
        let raft = crate::raft::with_seed(cfg.rng.next_u64(), Raft::new(cfg.node_id, rc, Network, log, sm))
            .await
            .map_err(|e| Error::Fatal(e.to_string()))?;
        let initialized = raft.is_initialized().await.map_err(|e| Error::Fatal(e.to_string()))?;
        if !initialized && cfg.bootstrap {
            let members = BTreeMap::from([(cfg.node_id, BasicNode::new(&cfg.rpc_addr))]);
            raft.initialize(members).await.map_err(|e| Error::Fatal(e.to_string()))?;
        }
        let listener = match cfg.listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| Error::Storage(format!("server port {addr}: {e}")))?,
            ),
            None => None,
        };
        let (stop, _) = tokio::sync::watch::channel(false);
        let server = Arc::new(Server {
            raft,
            store,
            lock_delays,
            session_timers: Default::default(),
            blocking: AtomicUsize::new(0),
            blocking_evaluations: AtomicUsize::new(0),
            transfer_started: std::sync::Mutex::new(None),
            lan: Default::default(),
            lan_servers: Default::default(),
            rpc: Arc::new(RpcClient::new()),
            read_batches: Default::default(),
            contact: Arc::new(ContactTracker::new(cfg.clock.clone())),
            started: cfg.clock.now(),
            vote_gate,
            formed: AtomicBool::new(initialized || cfg.bootstrap),
            healthy_since: Default::default(),
            stop,
            cfg,
        });
        if let Some(l) = listener {
            let limits = crate::rpc::ConnLimits {
                max_conns_per_client: server.cfg.max_conns_per_client,
                handshake_timeout: server.cfg.rpc_handshake_timeout,
            };
            let stop = server.stop.subscribe();
            tokio::spawn(crate::rpc::serve(l, Arc::downgrade(&server), server.raft.clone(), limits, stop));
        }
        tokio::spawn(crate::leader::run(Arc::downgrade(&server)));
        if server.cfg.data_dir.is_some() {
            tokio::spawn(snapshot_on_interval(Arc::downgrade(&server)));
        }
        if let Some(log) = mem_log {
            tokio::spawn(compact_memory_log(server.raft.clone(), log));
        }
        Ok(server)
    }

    /// Gives the server the agent's LAN pool: the leader reconciles its members into the catalog
    /// and its servers into Raft, and every server bootstraps from it.
    pub fn attach_lan(&self, lan: crate::leader::Lan) {
        let _ = self.lan.set(lan);
    }

    pub(crate) fn lan(&self) -> Option<&crate::leader::Lan> {
        self.lan.get()
    }

    pub(crate) fn set_lan_servers(&self, servers: Vec<ServerInfo>) {
        *self.lan_servers.lock().expect("lan servers") = servers;
    }

    /// The servers of the LAN pool as last reconciled.
    pub fn lan_servers(&self) -> Vec<ServerInfo> {
        self.lan_servers.lock().expect("lan servers").clone()
    }

    pub(crate) fn raft_metrics(
        &self,
    ) -> openraft::type_config::alias::WatchReceiverOf<
        crate::raft::TypeConfig,
        openraft::RaftMetrics<crate::raft::TypeConfig>,
    > {
        self.raft.metrics()
    }

    pub(crate) fn contact_tracker(&self) -> Arc<ContactTracker> {
        self.contact.clone()
    }

    pub(crate) fn vote_gate(&self) -> crate::raft::VoteGate {
        self.vote_gate
    }

    /// True while `key` is under a lock-delay from an invalidated session: an acquire must fail.
    pub fn lock_delayed(&self, key: &str) -> bool {
        self.lock_delays.active(key)
    }

    /// The clock time-based decisions read.
    pub fn clock(&self) -> &dyn Clock {
        &*self.cfg.clock
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    /// Waits until some server leads and this one has applied everything it committed before.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), Error> {
        let mut rx = self.raft.metrics();
        let ready = async {
            loop {
                {
                    let m = rx.borrow_watched();
                    if m.current_leader.is_some() && m.last_applied >= m.local_committed {
                        return Ok(());
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(Error::ShuttingDown);
                }
            }
        };
        tokio::time::timeout(timeout, ready).await.unwrap_or(Err(Error::NoLeader))
    }

    /// Proposes `cmd` on the leader (forwarding it there from a follower) and waits until it is
    /// applied here too, so a read on this server right after sees it. Waits out an election for
    /// up to `rpc_hold_timeout`, then answers Consul's `No cluster leader`.
    pub async fn apply(&self, cmd: Command) -> Result<Applied, Error> {
        self.on_leader(
            || self.apply_local(cmd.clone()),
            || Request::Apply(Box::new(cmd.clone())),
            |r| match r {
                Response::Applied { index, result } => Some(Applied { index, result }),
                _ => None,
            },
            |a| a.index,
        )
        .await
    }

    /// Runs something only the leader may do: `local()` here (it answers `NotLeader` when this
    /// server does not lead), or `remote()` sent to the leader, whose answer `answer` reads. A
    /// forwarded answer at log index `index_of(..)` is returned once this server has applied
    /// that index. Waits out an election for up to `rpc_hold_timeout`.
    pub(crate) async fn on_leader<T, Fut>(
        &self,
        local: impl Fn() -> Fut,
        remote: impl Fn() -> Request,
        answer: impl Fn(Response) -> Option<T>,
        index_of: impl Fn(&T) -> u64,
    ) -> Result<T, Error>
    where
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.cfg.rpc_hold_timeout;
        loop {
            let r = match local().await {
                Err(Error::NotLeader { leader: Some(addr) }) => {
                    match self.rpc.call(&addr, remote(), self.forward_timeout()).await {
                        Ok(resp) => match answer(resp) {
                            Some(t) => {
                                self.wait_applied(index_of(&t), deadline).await?;
                                Ok(t)
                            }
                            None => Err(Error::Fatal("unexpected answer to a forwarded request".into())),
                        },
                        Err(CallError::Remote(e)) => Err(e),
                        // Never sent: as good as no leader; try again once one is known.
                        Err(CallError::Unsent(_)) => Err(Error::NoLeader),
                        Err(e @ CallError::Lost(_)) => Err(Error::Fatal(e.to_string())),
                    }
                }
                other => other,
            };
            match r {
                Err(Error::NoLeader) | Err(Error::NotLeader { leader: None }) => {
                    if !Box::pin(self.wait_leader_change(deadline)).await {
                        return Err(Error::NoLeader);
                    }
                }
                other => return other,
            }
        }
    }

    /// `Ok` on a leader within its lease; otherwise who to forward to.
    pub(crate) fn check_leads(&self) -> Result<(), Error> {
        if self.is_leader() {
            return Ok(());
        }
        Err(Error::NotLeader { leader: self.leader_addr() })
    }

    /// The metadata of an answer at `index`: whether a leader is known, and since when this
    /// server last heard from it.
    pub fn query_meta(&self, index: u64) -> cairn_types::rpc::QueryMeta {
        cairn_types::rpc::QueryMeta {
            index,
            known_leader: self.leader_addr().is_some(),
            last_contact_ms: self.last_contact_ms(),
        }
    }

    /// Blocking queries waiting on this server now (a follower's forwarded ones wait on the leader).
    pub fn blocking_queries(&self) -> usize {
        self.blocking.load(Ordering::Relaxed)
    }

    /// The queries [`Self::blocking_queries`] run as: those an RPC client gathered are one.
    pub fn blocking_evaluations(&self) -> usize {
        self.blocking_evaluations.load(Ordering::Relaxed)
    }

    /// Set when the server shuts down (blocking queries return then).
    pub(crate) fn stop_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// How long a forwarded request waits for the leader: longer than the leader's own hold, so
    /// that its answer (or its own timeout's error) is what the caller gets.
    fn forward_timeout(&self) -> Duration {
        self.cfg.rpc_hold_timeout + Duration::from_secs(5)
    }

    pub(crate) async fn apply_local(&self, cmd: Command) -> Result<Applied, Error> {
        {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            if m.current_leader == Some(self.cfg.node_id) && !self.leads(&m) {
                return Err(Error::NoLeader);
            }
        }
        // A leader that loses its quorum mid-write never commits it: give up after the hold time.
        // Boxed: openraft's write future is about 15 KB, which every caller's future would
        // otherwise carry and copy as it is built up.
        let Ok(r) = tokio::time::timeout(self.cfg.rpc_hold_timeout, Box::pin(self.raft.client_write(cmd))).await else {
            // Consul's words for a write its leader could not commit before losing the quorum (it
            // may still commit later, if the quorum returns before another leader overwrites it).
            return Err(Error::Fatal("leadership lost while committing log".into()));
        };
        match r {
            Ok(resp) => Ok(Applied { index: resp.log_id.index, result: resp.data }),
            Err(openraft::error::RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(f))) => {
                Err(Error::NotLeader { leader: f.leader_node.map(|n| n.addr) })
            }
            Err(openraft::error::RaftError::APIError(e)) => Err(Error::Fatal(e.to_string())),
            Err(openraft::error::RaftError::Fatal(e)) => Err(Error::Fatal(e.to_string())),
        }
    }

    /// Waits until the known leader changes or `deadline`; false at the deadline.
    async fn wait_leader_change(&self, deadline: tokio::time::Instant) -> bool {
        let mut rx = self.raft.metrics();
        let before = rx.borrow_watched().current_leader;
        loop {
            let now_leader = rx.borrow_watched().current_leader;
            if now_leader.is_some() && now_leader != before {
                return true;
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return false },
                _ = tokio::time::sleep_until(deadline) => return false,
            }
            // A leader that was known but unreachable may still be the leader: retry now and then.
            if now_leader.is_some() && tokio::time::Instant::now() + Duration::from_millis(100) < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                return true;
            }
        }
    }

    /// Waits until this server has applied `index`.
    async fn wait_applied(&self, index: u64, deadline: tokio::time::Instant) -> Result<(), Error> {
        // Mostly it already has: no need for openraft's waiter (a subscription to its metrics).
        if self.raft.metrics().borrow_watched().last_applied.as_ref().is_some_and(|a| a.index >= index) {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now()).max(Duration::from_secs(1));
        // Boxed: openraft's waiter is kilobytes, which every read's future would carry.
        Box::pin(self.raft.wait(Some(left)).applied_index_at_least(Some(index), "read point"))
            .await
            .map(|_| ())
            .map_err(|_| Error::NoLeader)
    }

    /// `?consistent`: the leader confirms its leadership with a quorum (ReadIndex); a follower asks
    /// the leader for that read point. Either way this server then waits until it has applied up
    /// to it, so the local store answers linearizably.
    pub async fn consistent_barrier(&self) -> Result<(), Error> {
        self.read_barrier(true).await
    }

    /// Default mode: the leader answers under its lease (no quorum round trip, refused once the
    /// lease has lapsed); a follower asks the leader for its read point and catches up to it.
    pub async fn default_barrier(&self) -> Result<(), Error> {
        self.read_barrier(false).await
    }

    async fn read_barrier(&self, consistent: bool) -> Result<(), Error> {
        // openraft's futures are large (kilobytes each): they are boxed, so that every read's
        // future (and every blocking query's, which lives as long as it waits) stays small.
        let deadline = tokio::time::Instant::now() + self.cfg.rpc_hold_timeout;
        if !consistent {
            if let Some((index, applied)) = self.lease_read_index() {
                return if applied >= index { Ok(()) } else { self.wait_applied(index, deadline).await };
            }
        }
        loop {
            let r = match Box::pin(self.local_read_index(consistent)).await {
                Ok(index) => return self.wait_applied(index, deadline).await,
                Err(Error::NotLeader { leader: Some(addr) }) => {
                    let (rpc, to, timeout) = (self.rpc.clone(), addr.clone(), self.forward_timeout());
                    // Bounded as one request was: a reader may wait out the request in
                    // flight before its own.
                    let asked = tokio::time::timeout(
                        self.forward_timeout(),
                        Box::pin(self.read_batches.read_index((addr, consistent), move || {
                            let (rpc, to) = (rpc.clone(), to.clone());
                            async move {
                                match rpc.call(&to, Request::ReadIndex { consistent }, timeout).await {
                                    Ok(Response::ReadIndex(index)) => Ok(index),
                                    Ok(_) => Err(Error::Fatal("unexpected answer to a read-index request".into())),
                                    Err(CallError::Remote(e)) => Err(e),
                                    // Reads may be retried whatever happened to them.
                                    Err(_) => Err(Error::NoLeader),
                                }
                            }
                        })),
                    )
                    .await;
                    match asked {
                        Ok(Ok(index)) => return self.wait_applied(index, deadline).await,
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(Error::NoLeader),
                    }
                }
                Err(e) => Err(e),
            };
            match r {
                Err(Error::NoLeader) | Err(Error::NotLeader { leader: None }) => {
                    if !Box::pin(self.wait_leader_change(deadline)).await {
                        return Err(Error::NoLeader);
                    }
                }
                Err(e) => return Err(e),
                Ok(()) => return Ok(()),
            }
        }
    }

    /// Default mode on a leader that holds its lease: see [`lease_read_point`]. Not while a
    /// leadership transfer this server began may be under way (Raft's own read path refuses reads
    /// then).
    /// Returns the read point and what this server has applied.
    fn lease_read_index(&self) -> Option<(u64, u64)> {
        let started = *self.transfer_started.lock().expect("transfer");
        if let Some(t) = started {
            // Past the transfer's wait and one more lease, it has settled one way or the other.
            let window = self.cfg.rpc_hold_timeout + 2 * self.leader_lease();
            if t.elapsed() < window {
                return None;
            }
        }
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let index = lease_read_point(&m, self.cfg.node_id, self.leader_lease())?;
        Some((index, m.last_applied.as_ref().map_or(0, |a| a.index)))
    }

    /// On the leader: the index a read must see applied. Elsewhere: who to ask.
    async fn local_read_index(&self, consistent: bool) -> Result<u64, Error> {
        if !consistent {
            if let Some((index, _)) = self.lease_read_index() {
                return Ok(index);
            }
        }
        // Otherwise a quorum round (ReadIndex), for default reads too: openraft's own lease read
        // trusts a lease exactly as long as the followers' (the election timeout's maximum), so
        // a leader whose clock runs slower than a follower's could answer after that follower
        // has voted for another; Cairn's lease above keeps a margin for drift.
        let Ok(r) =
            tokio::time::timeout(self.cfg.rpc_hold_timeout, self.raft.get_read_log_id(ReadPolicy::ReadIndex)).await
        else {
            return Err(Error::NoLeader);
        };
        match r {
            Ok((read, _)) => Ok(read.index()),
            Err(openraft::error::RaftError::APIError(openraft::error::LinearizableReadError::ForwardToLeader(f))) => {
                Err(Error::NotLeader { leader: f.leader_node.map(|n| n.addr) })
            }
            Err(openraft::error::RaftError::APIError(_)) => Err(Error::NoLeader),
            Err(openraft::error::RaftError::Fatal(e)) => Err(Error::Fatal(e.to_string())),
        }
    }

    /// A backup archive of the state (`GET /v1/snapshot`): after the leader's read point unless
    /// `stale`. Returns the archive and the index it holds.
    pub async fn snapshot_archive(&self, stale: bool) -> Result<(Vec<u8>, u64), Error> {
        if !stale {
            self.default_barrier().await?;
        }
        let state = self.store.snapshot();
        let bytes = rmp_serde::to_vec_named(&*state).map_err(|e| Error::Fatal(e.to_string()))?;
        let term = self.raft.metrics().borrow_watched().current_term;
        let unix_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let meta = crate::snapshot::Meta {
            // Consul's form: term-index-unix milliseconds.
            id: format!("{term}-{}-{unix_ms}", state.last_index),
            size: bytes.len() as u64,
            index: state.last_index,
            term,
            version: 1,
        };
        let archive = crate::snapshot::archive(&meta, &bytes).map_err(|e| Error::Fatal(e.to_string()))?;
        Ok((archive, state.last_index))
    }

    /// Restores a backup archive into the running cluster (`PUT /v1/snapshot`): checked, then
    /// proposed as one `Restore` entry, so every server installs the same state at the same index.
    pub async fn restore_archive(&self, archive: &[u8]) -> Result<u64, Error> {
        let (_, state) = crate::snapshot::open(archive).map_err(|e| Error::Rejected(cairn_types::Error::invalid(e)))?;
        if rmp_serde::from_slice::<cairn_store::State>(&state).is_err() {
            return Err(Error::Rejected(cairn_types::Error::invalid("snapshot state could not be decoded")));
        }
        let a = self.apply(Command::Restore(state)).await?;
        match a.result {
            CommandResult::Error(e) => Err(Error::Rejected(e)),
            _ => Ok(a.index),
        }
    }

    /// Resets a session's TTL timer on the leader (forwarded there from a follower).
    pub async fn renew_session(&self, id: &str, ttl: Duration) -> Result<(), Error> {
        if self.is_leader() {
            crate::leader::reset_session_timer(self, id, ttl);
            return Ok(());
        }
        let Some(addr) = self.leader_addr() else { return Err(Error::NoLeader) };
        let req = Request::SessionRenew { id: id.to_string(), ttl_ms: ttl.as_millis() as u64 };
        match self.rpc.call(&addr, req, self.forward_timeout()).await {
            Ok(_) => Ok(()),
            Err(CallError::Remote(e)) => Err(e),
            Err(_) => Err(Error::NoLeader),
        }
    }

    /// The server side of [`Request`]s from other servers.
    /// Answers an RPC request on behalf of `callers` callers (more than one when a client
    /// gathered identical reads into it).
    pub(crate) async fn handle_rpc(&self, req: Request, callers: usize) -> Result<Response, Error> {
        // Each arm's future is boxed: their sizes would add up to the largest (kilobytes, with
        // openraft's inside), and every request in flight, every blocking query among them,
        // would carry that.
        match req {
            // Only the leader proposes a forwarded write: forwarding it on again could loop.
            Request::Apply(cmd) => {
                let a = Box::pin(self.apply_local(*cmd)).await?;
                Ok(Response::Applied { index: a.index, result: a.result })
            }
            Request::ReadIndex { consistent } => {
                Box::pin(self.local_read_index(consistent)).await.map(Response::ReadIndex)
            }
            Request::SessionRenew { id, ttl_ms } => {
                if !self.is_leader() {
                    return Err(Error::NotLeader { leader: self.leader_addr() });
                }
                crate::leader::reset_session_timer(self, &id, Duration::from_millis(ttl_ms));
                Ok(Response::Ok)
            }
            Request::RemovePeer { id } => Box::pin(self.remove_peer(id)).await.map(|_| Response::Ok),
            Request::RaftConfiguration => {
                let (servers, index, _) = self.raft_configuration();
                Ok(Response::RaftConfiguration { servers, index })
            }
            Request::TransferLeader { id } => Box::pin(self.transfer_leader(id)).await.map(Response::Transferred),
            Request::Write(req) => {
                Box::pin(crate::endpoints::write::on_leader(self, *req)).await.map(Response::Written)
            }
            Request::Read(r) => {
                let (req, q) = *r;
                let (meta, res) = crate::endpoints::read_for(self, &req, &q, callers).await?;
                Ok(Response::Read(meta, Box::new(res)))
            }
            Request::RaftState => {
                let initialized =
                    Box::pin(self.raft.is_initialized()).await.map_err(|e| Error::Fatal(e.to_string()))?;
                Ok(Response::RaftState { initialized, voters: self.peers() })
            }
        }
    }

    /// Consul's `maybeBootstrap`, run on every change of the LAN pool until the cluster is formed:
    /// once `bootstrap_expect` servers (this one included) are alive with the same expectation,
    /// and none of them already belongs to a cluster, every one of them initializes Raft with the
    /// same configuration (Raft's vote makes that safe; the configuration is identical because
    /// each derives it from the same members).
    pub async fn maybe_bootstrap(&self, servers: &[ServerInfo]) {
        let expect = self.cfg.bootstrap_expect;
        if expect == 0 || self.formed.load(Ordering::SeqCst) {
            return;
        }
        if self.raft.is_initialized().await.unwrap_or(false) {
            self.formed.store(true, Ordering::SeqCst);
            return;
        }
        let alive: Vec<&ServerInfo> = servers.iter().filter(|s| s.alive).collect();
        for s in &alive {
            if s.bootstrap {
                tracing::error!(target: "agent.server", node = %s.name, "Member has bootstrap mode. Expect disabled.");
                return;
            }
            if s.expect != expect {
                tracing::error!(target: "agent.server", node = %s.name, "Member has a conflicting expect value. All nodes should expect the same number.");
                return;
            }
        }
        if alive.len() < expect {
            return;
        }
        for s in alive.iter().filter(|s| s.raft_id != self.cfg.node_id) {
            match self.rpc.call(&s.rpc_addr, Request::RaftState, Duration::from_secs(5)).await {
                Ok(Response::RaftState { initialized: true, .. }) => {
                    tracing::warn!(target: "agent.server", server = %s.name, "Existing Raft peers reported by server, disabling bootstrap mode");
                    self.formed.store(true, Ordering::SeqCst);
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(target: "agent.server", server = %s.name, error = %e, "Failed to confirm peer status");
                    return;
                }
            }
        }
        let members: BTreeMap<u64, BasicNode> =
            alive.iter().map(|s| (s.raft_id, BasicNode::new(&s.rpc_addr))).collect();
        tracing::info!(target: "agent.server", servers = ?alive.iter().map(|s| &s.name).collect::<Vec<_>>(), "Found expected number of peers, attempting bootstrap");
        match self.raft.initialize(members).await {
            Ok(()) => {}
            Err(e) => {
                tracing::info!(target: "agent.server", error = %e, "bootstrap: the cluster is already initialized")
            }
        }
        self.formed.store(true, Ordering::SeqCst);
    }

    /// The leader's pass over the servers of the LAN pool (Consul's server reconciliation plus
    /// autopilot's promotion): an alive server the configuration lacks joins as a non-voter; a
    /// non-voter that has kept up (within [`MAX_TRAILING_LOGS`]) for [`SERVER_STABILIZATION`] gets
    /// a vote; a server that left is removed.
    pub async fn reconcile_servers(&self, servers: &[ServerInfo]) -> Result<(), Error> {
        if !self.is_leader() {
            return Ok(());
        }
        let (voters, learners, matched, last) = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            let mem = m.membership_config.membership();
            let voters: BTreeSet<u64> = mem.voter_ids().collect();
            let learners: BTreeSet<u64> = mem.learner_ids().collect();
            let matched: BTreeMap<u64, u64> = m
                .replication
                .as_ref()
                .map(|r| r.iter().map(|(id, l)| (*id, l.as_ref().map_or(0, |l| l.index))).collect())
                .unwrap_or_default();
            (voters, learners, matched, m.last_log_index.unwrap_or(0))
        };
        let me = self.cfg.node_id;
        let ap = self.autopilot_config();
        if self.store.snapshot().autopilot.is_none() {
            // The first leader writes the agent's autopilot settings in; operators change them after.
            let cmd = Command::AutopilotSet { config: self.cfg.autopilot.clone(), cas: Some(0) };
            if let Err(e) = self.apply(cmd).await {
                tracing::warn!(target: "agent.server.autopilot", error = %e, "failed to initialize the autopilot configuration");
            }
        }
        if ap.cleanup_dead_servers {
            self.cleanup_dead_servers(servers, &voters, &ap).await?;
        }
        for s in servers {
            let known = voters.contains(&s.raft_id) || learners.contains(&s.raft_id);
            if s.left {
                if known && s.raft_id != me {
                    tracing::info!(target: "agent.server", server = %s.name, "removing server that left from the Raft configuration");
                    let set = BTreeSet::from([s.raft_id]);
                    if voters.contains(&s.raft_id) {
                        self.membership(ChangeMembers::RemoveVoters(set.clone())).await?;
                    }
                    self.membership(ChangeMembers::RemoveNodes(set)).await?;
                }
                continue;
            }
            if !s.alive {
                continue;
            }
            if !known {
                tracing::info!(target: "agent.server", server = %s.name, address = %s.rpc_addr, "adding server as a non-voter");
                match self.raft.add_learner(s.raft_id, BasicNode::new(&s.rpc_addr), false).await {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(target: "agent.server", server = %s.name, error = %e, "failed to add server")
                    }
                }
                continue;
            }
            if learners.contains(&s.raft_id) {
                let caught_up =
                    matched.get(&s.raft_id).is_some_and(|m| last.saturating_sub(*m) <= ap.max_trailing_logs);
                let now = self.clock().now();
                let stable = {
                    let mut hs = self.healthy_since.lock().expect("healthy since");
                    if !caught_up {
                        hs.remove(&s.raft_id);
                        false
                    } else if now.saturating_duration_since(*hs.entry(s.raft_id).or_insert(now))
                        < ap.server_stabilization_time
                    {
                        false
                    } else {
                        hs.remove(&s.raft_id);
                        true
                    }
                };
                if !stable {
                    continue;
                }
                tracing::info!(target: "agent.server", server = %s.name, "promoting server to voter");
                self.membership(ChangeMembers::AddVoterIds(BTreeSet::from([s.raft_id]))).await?;
            }
        }
        Ok(())
    }

    /// Autopilot's configuration: the replicated one, else the agent's.
    pub fn autopilot_config(&self) -> cairn_types::structs::AutopilotConfig {
        self.store.snapshot().autopilot.as_deref().cloned().unwrap_or_else(|| self.cfg.autopilot.clone())
    }

    /// Sets autopilot's configuration (`?cas=` optional); false when the CAS did not hold.
    pub async fn set_autopilot_config(
        &self,
        config: cairn_types::structs::AutopilotConfig,
        cas: Option<u64>,
    ) -> Result<bool, Error> {
        match self.apply(Command::AutopilotSet { config, cas }).await?.result {
            CommandResult::Bool(b) => Ok(b),
            CommandResult::Error(e) => Err(Error::Rejected(e)),
            _ => Ok(true),
        }
    }

    /// Autopilot's dead-server cleanup: voters the LAN pool shows failed (or no longer lists) leave
    /// the configuration, but only while the rest still hold a quorum of it and at least
    /// `min_quorum` voters remain, so cleanup never costs the cluster its majority.
    async fn cleanup_dead_servers(
        &self,
        servers: &[ServerInfo],
        voters: &BTreeSet<u64>,
        ap: &cairn_types::structs::AutopilotConfig,
    ) -> Result<(), Error> {
        let healthy: BTreeSet<u64> = servers.iter().filter(|s| s.alive).map(|s| s.raft_id).collect();
        let dead: Vec<u64> =
            voters.iter().copied().filter(|v| *v != self.cfg.node_id && !healthy.contains(v)).collect();
        if dead.is_empty() {
            return Ok(());
        }
        let remaining = voters.len() - dead.len();
        if remaining < voters.len() / 2 + 1 || remaining < ap.min_quorum as usize {
            tracing::warn!(target: "agent.server.autopilot", failed = dead.len(), voters = voters.len(), "not removing failed servers: too many have failed");
            return Ok(());
        }
        for id in dead {
            // A server gossip never knew stays (it may be on its way in).
            let Some(s) = servers.iter().find(|s| s.raft_id == id) else { continue };
            tracing::info!(target: "agent.server.autopilot", server = %s.name, "Attempting removal of failed server node");
            self.membership(ChangeMembers::RemoveVoters(BTreeSet::from([id]))).await?;
            self.membership(ChangeMembers::RemoveNodes(BTreeSet::from([id]))).await?;
        }
        Ok(())
    }

    async fn membership(&self, change: ChangeMembers<u64, BasicNode>) -> Result<(), Error> {
        match self.raft.change_membership(change, false).await {
            Ok(_) => Ok(()),
            Err(openraft::error::RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(f))) => {
                Err(Error::NotLeader { leader: f.leader_node.map(|n| n.addr) })
            }
            Err(e) => Err(Error::Fatal(e.to_string())),
        }
    }

    /// The Raft configuration as this server knows it, the index it was written at and this
    /// server's commit index.
    pub fn raft_configuration(&self) -> (Vec<RaftServer>, u64, u64) {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let mem = m.membership_config.membership();
        let voters: BTreeSet<u64> = mem.voter_ids().collect();
        let leader = m.current_leader.filter(|l| *l != self.cfg.node_id || self.leads(&m));
        let matched = |id: &u64| -> u64 {
            if *id == self.cfg.node_id {
                return m.last_log_index.unwrap_or(0);
            }
            m.replication.as_ref().and_then(|r| r.get(id)).and_then(|l| l.as_ref()).map_or(0, |l| l.index)
        };
        let contact = |id: &u64| -> Option<u64> {
            if *id == self.cfg.node_id {
                return self.leads(&m).then_some(0);
            }
            let t = m.heartbeat.as_ref()?.get(id)?.as_ref()?;
            Some(t.elapsed().as_millis() as u64)
        };
        let servers = mem
            .nodes()
            .map(|(id, n)| RaftServer {
                raft_id: *id,
                address: n.addr.clone(),
                leader: Some(*id) == leader,
                voter: voters.contains(id),
                last_index: matched(id),
                last_contact_ms: contact(id),
            })
            .collect();
        let index = m.membership_config.log_id().as_ref().map_or(0, |l| l.index);
        let commit = m.local_committed.as_ref().map_or(0, |l| l.index);
        (servers, index, commit)
    }

    /// The configuration as the leader sees it (with every server's replicated index); from
    /// this server with `stale`.
    pub async fn leader_raft_configuration(&self, stale: bool) -> Result<(Vec<RaftServer>, u64), Error> {
        if stale || self.is_leader() {
            let (servers, index, _) = self.raft_configuration();
            return Ok((servers, index));
        }
        match self.forward_operator(Request::RaftConfiguration).await? {
            Response::RaftConfiguration { servers, index } => Ok((servers, index)),
            _ => Err(Error::Fatal("unexpected answer to a configuration request".into())),
        }
    }

    /// Removes server `id` from the Raft configuration (on the leader; forwarded there).
    pub async fn remove_peer(&self, id: u64) -> Result<(), Error> {
        if !self.is_leader() {
            return self.forward_operator(Request::RemovePeer { id }).await.map(|_| ());
        }
        let (servers, _, _) = self.raft_configuration();
        let Some(s) = servers.iter().find(|s| s.raft_id == id) else {
            return Err(Error::Rejected(cairn_types::Error::rejected(format!(
                "id \"{id}\" was not found in the Raft configuration"
            ))));
        };
        let set = BTreeSet::from([id]);
        if s.voter {
            self.membership(ChangeMembers::RemoveVoters(set.clone())).await?;
        }
        if id != self.cfg.node_id {
            self.membership(ChangeMembers::RemoveNodes(set)).await?;
        }
        Ok(())
    }

    /// Hands leadership to `to`, or to the other voter furthest along; returns who gets it.
    pub async fn transfer_leader(&self, to: Option<u64>) -> Result<u64, Error> {
        if !self.is_leader() {
            return match self.forward_operator(Request::TransferLeader { id: to }).await? {
                Response::Transferred(id) => Ok(id),
                _ => Err(Error::Fatal("unexpected answer to a leadership transfer".into())),
            };
        }
        let (servers, _, _) = self.raft_configuration();
        let me = self.cfg.node_id;
        let target = match to {
            Some(id) => {
                if !servers.iter().any(|s| s.raft_id == id && s.voter) {
                    // Consul's (its ID is the node UUID; the HTTP layer says which).
                    return Err(Error::Rejected(cairn_types::Error::rejected(format!(
                        "Could not find address for server id {id}"
                    ))));
                }
                if id == me {
                    return Err(Error::Rejected(cairn_types::Error::rejected("cannot transfer leadership to itself")));
                }
                id
            }
            None => {
                let matched: BTreeMap<u64, u64> = {
                    let m = self.raft.metrics();
                    let m = m.borrow_watched();
                    m.replication
                        .as_ref()
                        .map(|r| r.iter().map(|(id, l)| (*id, l.as_ref().map_or(0, |l| l.index))).collect())
                        .unwrap_or_default()
                };
                let best = servers
                    .iter()
                    .filter(|s| s.voter && s.raft_id != me)
                    .max_by_key(|s| (matched.get(&s.raft_id).copied().unwrap_or(0), std::cmp::Reverse(s.raft_id)));
                match best {
                    Some(s) => s.raft_id,
                    None => {
                        // hashicorp/raft's words, which Consul passes on.
                        return Err(Error::Rejected(cairn_types::Error::rejected("cannot find peer")));
                    }
                }
            }
        };
        // From here the target may win an election while this server's lease still looks valid
        // (a transfer's vote overrides the followers' lease): default reads stop taking the lease
        // from Raft's metrics until the transfer is long over.
        *self.transfer_started.lock().expect("transfer") = Some(tokio::time::Instant::now());
        self.raft.trigger().transfer_leader(target).await.map_err(|e| Error::Fatal(e.to_string()))?;
        // Done once the target leads (or another election settled it).
        let wait = self.raft.wait(Some(self.cfg.rpc_hold_timeout));
        match wait.metrics(|m| m.current_leader.is_some() && m.current_leader != Some(me), "leadership transfer").await
        {
            Ok(_) => Ok(target),
            Err(_) => Err(Error::Fatal("leadership transfer timed out".into())),
        }
    }

    async fn forward_operator(&self, req: Request) -> Result<Response, Error> {
        let Some(addr) = self.leader_addr() else { return Err(Error::NoLeader) };
        match self.rpc.call(&addr, req, self.forward_timeout()).await {
            Ok(r) => Ok(r),
            Err(CallError::Remote(e)) => Err(e),
            Err(CallError::Unsent(_)) => Err(Error::NoLeader),
            Err(e @ CallError::Lost(_)) => Err(Error::Fatal(e.to_string())),
        }
    }

    /// Whether the server is a Raft candidate or follower with no leader in sight.
    pub fn state(&self) -> ServerState {
        self.raft.metrics().borrow_watched().state
    }

    /// Consul's `LeaderLeaseTimeout` (500 ms at `raft_multiplier` 1): a leader that has not heard
    /// from a quorum for this long no longer counts itself leader.
    fn leader_lease(&self) -> Duration {
        Duration::from_millis(500 * self.cfg.raft_multiplier.clamp(1, 10))
    }

    /// Whether this server leads and a quorum acknowledged it within the lease (see [`leads`]).
    fn leads(&self, m: &openraft::RaftMetrics<crate::raft::TypeConfig>) -> bool {
        leads(m, self.cfg.node_id, self.leader_lease())
    }

    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        self.leads(&m)
    }

    /// The leader's RPC address, if one is known (not this server while its lease has lapsed).
    pub fn leader_addr(&self) -> Option<String> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let id = m.current_leader?;
        if id == self.cfg.node_id && !self.leads(&m) {
            return None;
        }
        m.membership_config.membership().get_node(&id).map(|n| n.addr.clone())
    }

    /// Voters' RPC addresses.
    pub fn peers(&self) -> Vec<String> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let mem = m.membership_config.membership();
        mem.voter_ids().filter_map(|id| mem.get_node(&id).map(|n| n.addr.clone())).collect()
    }

    /// Milliseconds since the leader was last heard from, for `X-Consul-LastContact`: 0 on the
    /// leader; on a server no leader ever reached, the time since it started.
    pub fn last_contact_ms(&self) -> u64 {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        if self.leads(&m) {
            return 0;
        }
        // A leader cut off from its quorum: since the quorum last answered.
        let cut_off = (m.current_leader == Some(self.cfg.node_id))
            .then(|| m.last_quorum_acked.as_ref().map(|t| t.elapsed()))
            .flatten();
        let since_start = self.clock().now().saturating_duration_since(self.started);
        cut_off.or_else(|| self.contact.since()).unwrap_or(since_start).as_millis() as u64
    }

    /// Raft figures for `/v1/agent/self` `Stats.raft`.
    pub fn stats(&self) -> BTreeMap<String, String> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let idx = |l: &Option<crate::raft::LogId>| l.as_ref().map(|l| l.index).unwrap_or(0).to_string();
        BTreeMap::from([
            ("state".into(), format!("{:?}", m.state)),
            ("term".into(), m.current_term.to_string()),
            ("last_log_index".into(), m.last_log_index.unwrap_or(0).to_string()),
            ("commit_index".into(), idx(&m.local_committed)),
            ("applied_index".into(), idx(&m.last_applied)),
            ("last_snapshot_index".into(), idx(&m.snapshot)),
            ("num_peers".into(), m.membership_config.membership().voter_ids().count().saturating_sub(1).to_string()),
        ])
    }

    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let _ = self.raft.shutdown().await;
    }
}

/// Whether server `me` leads, as `m` says, and a quorum acknowledged it within `lease`. A leader
/// cut off from the others keeps Raft's title until it hears of a newer term, but stops acting on
/// it: it refuses writes and reads, and says it knows no leader (as Consul's steps down).
pub fn leads(m: &openraft::RaftMetrics<crate::raft::TypeConfig>, me: u64, lease: Duration) -> bool {
    if m.current_leader != Some(me) {
        return false;
    }
    let mem = m.membership_config.membership();
    if mem.voter_ids().all(|id| id == me) {
        return true;
    }
    m.last_quorum_acked.as_ref().is_some_and(|t| t.elapsed() < lease)
}

/// A default-mode read point on a leader that holds its lease, from Raft's metrics alone (no
/// round trip into Raft's core task): the committed index, when an entry of the leader's own
/// term is committed (its first one at least, so the index is as good a read point as Raft's lease
/// read gives); the reader waits until its server has applied up to it. `None`: take Raft's own
/// read path. (Consul's leader answers a default read with no check at all; this keeps the
/// lease.) The `lease` is Consul's `LeaderLeaseTimeout`, shorter than openraft's own lease (the
/// election timeout's maximum), which followers honour before they vote for another leader: the
/// margin (500 of 600 ms) keeps the lease safe while no follower's clock runs more than 1.2 times
/// as fast as the leader's (the Raft simulation drifts clocks within that).
pub fn lease_read_point(m: &openraft::RaftMetrics<crate::raft::TypeConfig>, me: u64, lease: Duration) -> Option<u64> {
    if !leads(m, me, lease) {
        return None;
    }
    let committed = m.local_committed.as_ref()?;
    if committed.leader_id != openraft::vote::leader_id_std::CommittedLeaderId::new(m.current_term) {
        return None;
    }
    Some(committed.index)
}
