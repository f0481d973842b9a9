//! The Raft state machine: applies committed commands to the [`Store`] and answers each proposer with
//! the command's result. Snapshots are the whole store state, msgpack-encoded, written to
//! `snapshot.bin` atomically (temp file, fsync, rename) when a data directory is set; on start the
//! state is rebuilt from that snapshot plus the log after it.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use cairn_store::{State, Store};
use cairn_types::CommandResult;

use crate::clock::Clock;

use super::{io_err, LogId, SnapshotMeta, StoredMembership, TypeConfig};

const SNAPSHOT_FILE: &str = "snapshot.bin";

#[derive(Serialize, Deserialize)]
struct SnapData {
    last_log_id: Option<LogId>,
    membership: StoredMembership,
    state: Arc<State>,
}

/// The last snapshot: its meta, and its bytes when there is no data dir (with one, the bytes are
/// read back from `snapshot.bin` on demand rather than held in memory).
type Current = Arc<Mutex<Option<(SnapshotMeta, Option<Arc<Vec<u8>>>)>>>;

fn keep(dir: &Option<PathBuf>, bytes: Vec<u8>) -> Option<Arc<Vec<u8>>> {
    if dir.is_some() {
        None
    } else {
        Some(Arc::new(bytes))
    }
}

/// Keys under lock-delay and when it ends. Each server records them as it applies session
/// invalidations; only the leader consults them, before proposing an acquire. Not replicated: a new
/// leader knows the delays it applied itself, which on a healthy cluster is all of them.
#[derive(Debug, Clone)]
pub struct LockDelays {
    clock: Arc<dyn Clock>,
    until: Arc<Mutex<std::collections::HashMap<String, std::time::Instant>>>,
}

/// Bound on remembered lock-delays: past it, expired ones are dropped first.
const MAX_LOCK_DELAYS: usize = 65_536;
/// Consul caps lock-delay at 60 s when it applies one (structs.MaxLockDelay).
const MAX_LOCK_DELAY: std::time::Duration = std::time::Duration::from_secs(60);

impl LockDelays {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        LockDelays { clock, until: Arc::default() }
    }

    /// Starts the delays of keys released by a session invalidation (`(key, lock_delay_ns)`).
    fn note(&self, delays: Vec<(String, u64)>) {
        let now = self.clock.now();
        let mut m = self.until.lock().expect("lock delays");
        if m.len() + delays.len() > MAX_LOCK_DELAYS {
            m.retain(|_, until| *until > now);
        }
        for (key, ns) in delays {
            m.insert(key, now + std::time::Duration::from_nanos(ns).min(MAX_LOCK_DELAY));
        }
    }

    /// True while `key` is under a lock-delay: an acquire must fail.
    pub fn active(&self, key: &str) -> bool {
        let m = self.until.lock().expect("lock delays");
        m.get(key).is_some_and(|until| *until > self.clock.now())
    }
}

pub struct StateMachine {
    store: Arc<Store>,
    lock_delays: LockDelays,
    applied: Option<LogId>,
    membership: StoredMembership,
    dir: Option<PathBuf>,
    current: Current,
}

impl StateMachine {
    /// Opens the state machine; with `dir`, loads the last snapshot into `store`.
    pub fn open(store: Arc<Store>, dir: Option<PathBuf>, lock_delays: LockDelays) -> std::io::Result<Self> {
        let mut sm = StateMachine {
            lock_delays,
            store,
            applied: None,
            membership: StoredMembership::default(),
            dir,
            current: Arc::default(),
        };
        if let Some(d) = &sm.dir {
            std::fs::create_dir_all(d)?;
            let path = d.join(SNAPSHOT_FILE);
            if path.exists() {
                let bytes = std::fs::read(&path)?;
                let data: SnapData = rmp_serde::from_slice(&bytes).map_err(io_err)?;
                sm.applied = data.last_log_id;
                sm.membership = data.membership.clone();
                sm.store.restore((*data.state).clone());
                let meta = SnapshotMeta { last_log_id: data.last_log_id, last_membership: data.membership };
                *sm.current.lock().expect("snapshot") = Some((meta, None));
            }
        }
        Ok(sm)
    }
}

fn persist(dir: &Option<PathBuf>, bytes: &[u8]) -> std::io::Result<()> {
    let Some(d) = dir else { return Ok(()) };
    let tmp = d.join(format!("{SNAPSHOT_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, d.join(SNAPSHOT_FILE))?;
    std::fs::File::open(d)?.sync_all()?;
    Ok(())
}

/// The configuration held by the snapshot in `dir`, if there is one (for offline recovery).
pub fn snapshot_membership(dir: &std::path::Path) -> Option<openraft::Membership<u64, openraft::BasicNode>> {
    let bytes = std::fs::read(dir.join(SNAPSHOT_FILE)).ok()?;
    let data: SnapData = rmp_serde::from_slice(&bytes).ok()?;
    Some(data.membership.membership().clone())
}

pub struct SnapshotBuilder {
    data: SnapData,
    dir: Option<PathBuf>,
    current: Current,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(
        &mut self,
    ) -> Result<
        Snapshot<openraft::alias::CommittedLeaderIdOf<TypeConfig>, u64, openraft::BasicNode, Vec<u8>>,
        std::io::Error,
    > {
        let bytes = rmp_serde::to_vec_named(&self.data).map_err(io_err)?;
        persist(&self.dir, &bytes)?;
        let meta = SnapshotMeta { last_log_id: self.data.last_log_id, last_membership: self.data.membership.clone() };
        *self.current.lock().expect("snapshot") = Some((meta.clone(), keep(&self.dir, bytes.clone())));
        Ok(Snapshot { meta, snapshot: bytes })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), std::io::Error> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), std::io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, std::io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let index = entry.log_id.index;
            let result = match &entry.payload {
                EntryPayload::Blank => {
                    self.store.note_index(index);
                    CommandResult::None
                }
                EntryPayload::Normal(cairn_types::Command::Restore(bytes)) => {
                    match rmp_serde::from_slice::<cairn_store::State>(bytes) {
                        Ok(state) => {
                            self.store.restore_at(index, state);
                            CommandResult::Ok
                        }
                        Err(e) => CommandResult::Error(cairn_types::Error::invalid(format!(
                            "snapshot state could not be decoded: {e}"
                        ))),
                    }
                }
                EntryPayload::Normal(cmd) => {
                    let (res, delays) = self.store.apply_fx(index, cmd);
                    if !delays.is_empty() {
                        self.lock_delays.note(delays);
                    }
                    res
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    self.store.note_index(index);
                    CommandResult::None
                }
            };
            self.applied = Some(entry.log_id);
            if let Some(r) = responder {
                r.send(result);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            data: SnapData {
                last_log_id: self.applied,
                membership: self.membership.clone(),
                state: self.store.snapshot(),
            },
            dir: self.dir.clone(),
            current: self.current.clone(),
        }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Vec<u8>) -> Result<(), std::io::Error> {
        let data: SnapData = rmp_serde::from_slice(&snapshot).map_err(io_err)?;
        persist(&self.dir, &snapshot)?;
        self.store.restore((*data.state).clone());
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        *self.current.lock().expect("snapshot") = Some((meta.clone(), keep(&self.dir, snapshot)));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<
        Option<Snapshot<openraft::alias::CommittedLeaderIdOf<TypeConfig>, u64, openraft::BasicNode, Vec<u8>>>,
        std::io::Error,
    > {
        let cur = self.current.lock().expect("snapshot").clone();
        let Some((meta, bytes)) = cur else { return Ok(None) };
        match (bytes, &self.dir) {
            (Some(b), _) => Ok(Some(Snapshot { meta, snapshot: (*b).clone() })),
            (None, Some(d)) => {
                // The file may be newer than `current` (a build between the two writes): take the
                // meta from the file itself so that meta and data always agree.
                let bytes = std::fs::read(d.join(SNAPSHOT_FILE))?;
                let data: SnapData = rmp_serde::from_slice(&bytes).map_err(io_err)?;
                let meta = SnapshotMeta { last_log_id: data.last_log_id, last_membership: data.membership };
                Ok(Some(Snapshot { meta, snapshot: bytes }))
            }
            (None, None) => Ok(None),
        }
    }
}
