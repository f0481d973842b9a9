//! A Raft server: the store, the replicated log, and the server side of every request. Writes are
//! proposed as [`Command`]s and answered once applied; reads pick a consistency mode.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::{BasicNode, ReadPolicy, SnapshotPolicy};

use cairn_store::Store;
use cairn_types::{Command, CommandResult};

use crate::clock::{Clock, SystemClock};
use crate::error::Error;
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::state_machine::{LockDelays, StateMachine};
use crate::raft::Raft;

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
    /// Consul's `raft_trailing_logs`: entries kept after a snapshot for slow followers.
    pub trailing_logs: u64,
    /// Form a one-server cluster if none exists (`-bootstrap`, `-dev`).
    pub bootstrap: bool,
    /// Where time-based decisions read the time.
    pub clock: Arc<dyn Clock>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            node_id: 1,
            rpc_addr: "127.0.0.1:8300".into(),
            data_dir: None,
            raft_multiplier: 1,
            snapshot_threshold: 16384,
            trailing_logs: 10240,
            bootstrap: true,
            clock: Arc::new(SystemClock),
        }
    }
}

/// What a committed write returned, and the log index it committed at.
#[derive(Debug, Clone)]
pub struct Applied {
    pub index: u64,
    pub result: CommandResult,
}

pub struct Server {
    raft: Raft,
    store: Arc<Store>,
    cfg: ServerConfig,
    lock_delays: LockDelays,
    /// Session TTL deadlines, kept by the leader (see [`crate::leader::session_reaper`]).
    pub(crate) session_timers: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
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

impl Server {
    pub async fn start(cfg: ServerConfig) -> Result<Arc<Server>, Error> {
        let store = Arc::new(Store::new());
        let raft_dir = cfg.data_dir.as_ref().map(|d| d.join("raft"));
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
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_threshold.max(16)),
            // Without a data dir there is no follower to catch up from old entries and nowhere to
            // evict them to: a snapshot drops the whole log before it.
            max_in_snapshot_log_to_keep: if cfg.data_dir.is_some() { cfg.trailing_logs } else { 0 },
            max_payload_entries: 1024,
            ..Default::default()
        };
        let rc = Arc::new(rc.validate().map_err(|e| Error::Fatal(e.to_string()))?);
        let mem_log = cfg.data_dir.is_none().then(|| log.clone());
        let raft = Raft::new(cfg.node_id, rc, Network, log, sm).await.map_err(|e| Error::Fatal(e.to_string()))?;
        let initialized = raft.is_initialized().await.map_err(|e| Error::Fatal(e.to_string()))?;
        if !initialized && cfg.bootstrap {
            let members = BTreeMap::from([(cfg.node_id, BasicNode::new(&cfg.rpc_addr))]);
            raft.initialize(members).await.map_err(|e| Error::Fatal(e.to_string()))?;
        }
        let server = Arc::new(Server { raft, store, cfg, lock_delays, session_timers: Default::default() });
        tokio::spawn(crate::leader::session_reaper(Arc::downgrade(&server)));
        if let Some(log) = mem_log {
            tokio::spawn(compact_memory_log(server.raft.clone(), log));
        }
        Ok(server)
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

    /// Proposes `cmd` and waits until it is applied here.
    pub async fn apply(&self, cmd: Command) -> Result<Applied, Error> {
        match self.raft.client_write(cmd).await {
            Ok(resp) => Ok(Applied { index: resp.log_id.index, result: resp.data }),
            Err(openraft::error::RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(f))) => {
                match f.leader_node {
                    Some(n) => Err(Error::NotLeader { leader: Some(n.addr) }),
                    None => Err(Error::NoLeader),
                }
            }
            Err(openraft::error::RaftError::APIError(e)) => Err(Error::Fatal(e.to_string())),
            Err(openraft::error::RaftError::Fatal(e)) => Err(Error::Fatal(e.to_string())),
        }
    }

    /// `?consistent`: confirms leadership with a quorum (ReadIndex) and waits until this server has
    /// applied up to the read point, so the local store is linearizable.
    pub async fn consistent_barrier(&self) -> Result<(), Error> {
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => Ok(()),
            Err(openraft::error::RaftError::APIError(openraft::error::LinearizableReadError::ForwardToLeader(f))) => {
                match f.leader_node {
                    Some(n) => Err(Error::NotLeader { leader: Some(n.addr) }),
                    None => Err(Error::NoLeader),
                }
            }
            Err(openraft::error::RaftError::APIError(_)) => Err(Error::NoLeader),
            Err(openraft::error::RaftError::Fatal(e)) => Err(Error::Fatal(e.to_string())),
        }
    }

    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.current_leader == Some(self.cfg.node_id)
    }

    /// The leader's RPC address, if one is known.
    pub fn leader_addr(&self) -> Option<String> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let id = m.current_leader?;
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
    /// leader. Followers answer reads only once multi-server clusters land; until then 0 is exact.
    pub fn last_contact_ms(&self) -> u64 {
        0
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
        let _ = self.raft.shutdown().await;
    }
}
