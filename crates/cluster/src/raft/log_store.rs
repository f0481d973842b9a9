//! The Raft log and vote. Entries live in memory for readers (replication, re-apply) and, with a data
//! directory, in the write-ahead log of [`super::wal`], fsynced before Raft is told they are durable.
//! The vote and the purge point live in redb (`raft.db`), written rarely.
//!
//! Group commit: `append` returns at once and hands the entries to one writer thread, which drains
//! every pending request into a single write and a single `fdatasync`, then completes all their
//! callbacks. Under load many client writes share one sync, which is where throughput comes from.
//! Vote, truncate and purge wait for their own completion, as openraft requires.
//!
//! Memory is bounded: entries stay cached in memory only up to [`CACHE_MAX_BYTES`]; beyond that the
//! oldest entries already on disk are dropped from the cache and read back from the log files when a
//! reader (a lagging follower, a restart's re-apply) asks for them. The newest entry is always cached.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::wal::{Wal, WalReader, KIND_COMMITTED, KIND_ENTRY};
use super::{io_err, Entry, LogId, TypeConfig, Vote};

/// Where entries lived before they moved to the write-ahead log; read once to migrate a data dir.
const LEGACY_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// At most this many queued requests go into one write.
const MAX_BATCH: usize = 4096;

/// The in-memory cache of log entries is bounded to this many (encoded) bytes.
pub const CACHE_MAX_BYTES: usize = 64 << 20;

#[derive(Default)]
struct Mem {
    /// Cached entries with their encoded size.
    log: BTreeMap<u64, (Entry, usize)>,
    cached_bytes: usize,
    /// The cache's budget in bytes ([`CACHE_MAX_BYTES`] outside tests).
    budget: usize,
    /// Entries up to this index are durable on disk, so they may leave the cache.
    flushed: u64,
    vote: Option<Vote>,
    purged: Option<LogId>,
    committed: Option<LogId>,
}

enum DiskOp {
    Append(Vec<(u64, Vec<u8>)>, IOFlushed<TypeConfig>),
    Vote(Vec<u8>, tokio::sync::oneshot::Sender<std::io::Result<()>>),
    Truncate(Option<u64>, tokio::sync::oneshot::Sender<std::io::Result<()>>),
    Purge(u64, Vec<u8>, tokio::sync::oneshot::Sender<std::io::Result<()>>),
    Committed(Vec<u8>),
}

impl Mem {
    fn insert(&mut self, e: Entry, size: usize) {
        if let Some((_, old)) = self.log.insert(e.log_id.index, (e, size)) {
            self.cached_bytes -= old;
        }
        self.cached_bytes += size;
    }

    /// Keeps `log` to the entries from `index` on.
    fn drop_before(&mut self, index: u64) {
        let keep = self.log.split_off(&index);
        self.cached_bytes -= self.log.values().map(|(_, n)| n).sum::<usize>();
        self.log = keep;
    }

    /// Keeps `log` to the entries before `index`.
    fn drop_from(&mut self, index: u64) {
        let gone = self.log.split_off(&index);
        self.cached_bytes -= gone.values().map(|(_, n)| n).sum::<usize>();
    }

    /// Drops the oldest durable entries while over budget (never the newest one).
    fn evict(&mut self) {
        while self.cached_bytes > self.budget && self.log.len() > 1 {
            let Some((&first, _)) = self.log.iter().next() else { break };
            if first > self.flushed {
                break;
            }
            if let Some((_, n)) = self.log.remove(&first) {
                self.cached_bytes -= n;
            }
        }
    }
}

struct Shared {
    mem: Arc<Mutex<Mem>>,
    wal: Option<WalReader>,
    disk: Option<Mutex<mpsc::Sender<DiskOp>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Shared {
    /// Closes the queue and waits for the writer to finish what it has, so the files are closed
    /// (and redb's file lock released) when the last handle goes.
    fn drop(&mut self) {
        if let Some(d) = self.disk.take() {
            drop(d);
        }
        if let Some(h) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = h.join();
        }
    }
}

/// The log store handed to openraft; clones share state (the clone is the log reader).
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

fn enc<T: serde::Serialize>(v: &T) -> std::io::Result<Vec<u8>> {
    rmp_serde::to_vec_named(v).map_err(io_err)
}

fn dec<T: serde::de::DeserializeOwned>(b: &[u8]) -> std::io::Result<T> {
    rmp_serde::from_slice(b).map_err(io_err)
}

impl LogStore {
    /// A log that lives only in memory (`agent -dev` without a data dir).
    pub fn in_memory() -> Self {
        let shared = Shared { mem: Arc::default(), wal: None, disk: None, writer: Mutex::new(None) };
        LogStore { shared: Arc::new(shared) }
    }

    /// Opens (or creates) `dir/raft.db` and the log in `dir/wal`, loads them, and starts the writer
    /// thread.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        Self::open_with_cache(dir, CACHE_MAX_BYTES)
    }

    /// [`LogStore::open`] with a given cache budget.
    pub fn open_with_cache(dir: &Path, budget: usize) -> std::io::Result<Self> {
        Self::open_with(dir, budget, super::wal::SEGMENT_BYTES)
    }

    fn open_with(dir: &Path, budget: usize, segment_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        // Only metadata lives in redb, so its page cache (1 GiB by default) stays small.
        let db = Database::builder().set_cache_size(4 << 20).create(dir.join("raft.db")).map_err(io_err)?;
        let (mut wal, recovered) = Wal::open_with_segment_bytes(&dir.join("wal"), segment_bytes)?;
        let mut mem = Mem { budget, ..Mem::default() };
        migrate_legacy_log(&db, &mut wal)?;
        {
            let tx = db.begin_write().map_err(io_err)?;
            // Create the table on first open so that reads below find it.
            tx.open_table(META).map_err(io_err)?;
            tx.commit().map_err(io_err)?;
        }
        {
            let tx = db.begin_read().map_err(io_err)?;
            let meta = tx.open_table(META).map_err(io_err)?;
            if let Some(v) = meta.get("vote").map_err(io_err)? {
                mem.vote = Some(dec(v.value())?);
            }
            if let Some(v) = meta.get("purged").map_err(io_err)? {
                mem.purged = Some(dec(v.value())?);
            }
            if let Some(v) = meta.get("committed").map_err(io_err)? {
                mem.committed = Some(dec(v.value())?);
            }
        }
        if let Some(c) = &recovered.committed {
            mem.committed = Some(dec(c)?);
        }
        let reader = wal.reader();
        // Cache the newest entries, up to the budget; older ones are read from disk on demand.
        let floor = mem.purged.map_or(0, |p| p.index + 1);
        if let Some(from) = reader.newest_within(budget) {
            for (i, b) in reader.read(from.max(floor), u64::MAX)? {
                mem.insert(dec(&b)?, b.len());
                mem.flushed = mem.flushed.max(i);
            }
        }
        let (tx, rx) = mpsc::channel();
        let db = Arc::new(db);
        let mem = Arc::new(Mutex::new(mem));
        let wmem = mem.clone();
        let h = std::thread::Builder::new().name("raft-log-writer".into()).spawn(move || writer(wal, db, rx, wmem))?;
        let shared = Shared { mem, wal: Some(reader), disk: Some(Mutex::new(tx)), writer: Mutex::new(Some(h)) };
        Ok(LogStore { shared: Arc::new(shared) })
    }

    fn send(&self, op: DiskOp) -> std::io::Result<()> {
        let Some(d) = &self.shared.disk else { return Ok(()) };
        d.lock().expect("disk sender").send(op).map_err(|_| io_err("raft log writer stopped"))
    }

    async fn send_wait(
        &self,
        make: impl FnOnce(tokio::sync::oneshot::Sender<std::io::Result<()>>) -> DiskOp,
    ) -> std::io::Result<()> {
        if self.shared.disk.is_none() {
            return Ok(());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| io_err("raft log writer stopped"))?
    }

    /// Bytes of (encoded) entries held in memory.
    pub fn cached_bytes(&self) -> usize {
        self.mem().cached_bytes
    }

    fn mem(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.shared.mem.lock().expect("log mem")
    }
}

/// Runs a blocking disk read without stalling the runtime's other tasks.
fn blocking_read<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Moves entries from the `log` table of an older data dir's redb file into the write-ahead log
/// (once: the table is deleted afterwards).
fn migrate_legacy_log(db: &Database, wal: &mut Wal) -> std::io::Result<()> {
    let rows: Vec<(u64, Vec<u8>)> = {
        let tx = db.begin_read().map_err(io_err)?;
        let log = match tx.open_table(LEGACY_LOG) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(io_err(e)),
        };
        let mut v = Vec::new();
        for row in log.iter().map_err(io_err)? {
            let (k, val) = row.map_err(io_err)?;
            v.push((k.value(), val.value().to_vec()));
        }
        v
    };
    if let Some((first, _)) = rows.first() {
        tracing::info!(entries = rows.len(), "raft log: moving entries from raft.db to the write-ahead log");
        wal.truncate_from(*first)?;
        for (i, b) in &rows {
            wal.stage(KIND_ENTRY, *i, b);
        }
        wal.flush()?;
    }
    let mut tx = db.begin_write().map_err(io_err)?;
    tx.set_durability(Durability::Immediate).map_err(io_err)?;
    tx.delete_table(LEGACY_LOG).map_err(io_err)?;
    tx.commit().map_err(io_err)
}

fn put_meta(db: &Database, key: &str, value: &[u8]) -> std::io::Result<()> {
    let mut tx = db.begin_write().map_err(io_err)?;
    tx.set_durability(Durability::Immediate).map_err(io_err)?;
    tx.open_table(META).map_err(io_err)?.insert(key, value).map_err(io_err)?;
    tx.commit().map_err(io_err)
}

/// The writer thread: one write and one `fdatasync` per drained batch.
fn writer(mut wal: Wal, db: Arc<Database>, rx: mpsc::Receiver<DiskOp>, mem: Arc<Mutex<Mem>>) {
    // The committed pointer is only a hint for restarts (openraft re-derives commitment from the
    // log), so it never costs a write of its own: the latest value rides along with the next
    // durable batch. A write for it alone would sit in front of the next append.
    let mut committed: Option<Vec<u8>> = None;
    // After a failed write the log's state on disk is unknown; every later operation fails too
    // (openraft stops on a storage error).
    let mut failed: Option<String> = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        batch.retain_mut(|op| match op {
            DiskOp::Committed(b) => {
                committed = Some(std::mem::take(b));
                false
            }
            _ => true,
        });
        if batch.is_empty() {
            continue;
        }
        let res = match &failed {
            Some(e) => Err(e.clone()),
            None => write_batch(&mut wal, &db, &batch, committed.take()).map_err(|e| e.to_string()),
        };
        if let Err(e) = &res {
            tracing::error!(error = %e, "raft log: write failed");
            failed = Some(e.clone());
        } else {
            // What is on disk now, after any truncation in the batch: those entries may leave the
            // cache. (Not the highest index appended: a truncation may have cut it.)
            let mut m = mem.lock().expect("log mem");
            m.flushed = wal.last_index().unwrap_or(0);
            m.evict();
        }
        for op in batch {
            let r = res.clone().map_err(io_err);
            match op {
                DiskOp::Append(_, cb) => cb.io_completed(r),
                DiskOp::Vote(_, tx) | DiskOp::Truncate(_, tx) | DiskOp::Purge(_, _, tx) => {
                    let _ = tx.send(r);
                }
                DiskOp::Committed(_) => {}
            }
        }
    }
}

/// Carries out a batch in order: appends are staged and written together at the end (or before a
/// truncate or purge, which must see them), the vote goes to redb.
fn write_batch(wal: &mut Wal, db: &Database, batch: &[DiskOp], committed: Option<Vec<u8>>) -> std::io::Result<()> {
    for op in batch {
        match op {
            DiskOp::Append(entries, _) => {
                for (i, b) in entries {
                    wal.stage(KIND_ENTRY, *i, b);
                }
            }
            DiskOp::Vote(b, _) => put_meta(db, "vote", b)?,
            DiskOp::Truncate(after, _) => wal.truncate_from(after.map_or(0, |a| a + 1))?,
            DiskOp::Purge(upto, b, _) => {
                wal.flush()?;
                // The purge point is durable before any file goes, so a restart never offers
                // entries below it.
                put_meta(db, "purged", b)?;
                wal.purge_upto(*upto)?;
            }
            DiskOp::Committed(_) => {}
        }
    }
    if let Some(c) = committed {
        wal.stage(KIND_COMMITTED, 0, &c);
    }
    wal.flush()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, std::io::Error> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let (cached, first_cached): (Vec<Entry>, Option<u64>) = {
            let m = self.mem();
            let first = m.log.keys().next().copied();
            (m.log.range(range.clone()).map(|(_, (e, _))| e.clone()).collect(), first)
        };
        // Older entries than the cache holds come from disk.
        let from_disk_until = match first_cached {
            Some(f) if start < f => Some(f),
            None if self.shared.wal.is_some() => Some(u64::MAX),
            _ => None,
        };
        let (Some(until), Some(wal)) = (from_disk_until, &self.shared.wal) else { return Ok(cached) };
        let end = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        let until = until.min(end);
        let start = start.max(self.mem().purged.map_or(0, |p| p.index + 1));
        let mut out = Vec::new();
        if start < until {
            let wal = wal.clone();
            for (_, b) in blocking_read(move || wal.read(start, until))? {
                out.push(dec(&b)?);
            }
        }
        out.extend(cached);
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, std::io::Error> {
        Ok(self.mem().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, std::io::Error> {
        let m = self.mem();
        let last = m.log.values().next_back().map(|(e, _)| e.log_id).or(m.purged);
        Ok(LogState { last_purged_log_id: m.purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), std::io::Error> {
        let b = enc(vote)?;
        self.send_wait(|tx| DiskOp::Vote(b, tx)).await?;
        self.mem().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), std::io::Error> {
        if let Some(c) = &committed {
            self.send(DiskOp::Committed(enc(c)?))?;
        }
        self.mem().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, std::io::Error> {
        Ok(self.mem().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), std::io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut encoded = Vec::with_capacity(entries.len());
        let mut sizes = Vec::with_capacity(entries.len());
        for e in &entries {
            if self.shared.disk.is_some() {
                let b = enc(e)?;
                sizes.push(b.len());
                encoded.push((e.log_id.index, b));
            } else {
                // In memory only the cache exists: nothing is evicted, but its size decides when
                // the server snapshots (see `server::compact_memory_log`), so an estimate is enough.
                sizes.push(match &e.payload {
                    openraft::EntryPayload::Normal(cmd) => cmd.approx_bytes(),
                    _ => 64,
                });
            }
        }
        {
            let mut m = self.mem();
            for (e, n) in entries.into_iter().zip(sizes) {
                m.insert(e, n);
            }
        }
        if self.shared.disk.is_some() {
            self.send(DiskOp::Append(encoded, callback))?;
        } else {
            callback.io_completed(Ok(()));
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), std::io::Error> {
        let after = last_log_id.map(|l| l.index);
        // Disk first: once the writer has done it, its `flushed` already reflects the cut, and
        // the entries that replace the cut ones are appended only after this returns.
        self.send_wait(|tx| DiskOp::Truncate(after, tx)).await?;
        let mut m = self.mem();
        match after {
            Some(a) => m.drop_from(a + 1),
            None => m.drop_from(0),
        }
        m.flushed = m.flushed.min(after.unwrap_or(0));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), std::io::Error> {
        let upto = log_id.index;
        let b = enc(&log_id)?;
        {
            let mut m = self.mem();
            m.drop_before(upto + 1);
            m.purged = Some(log_id);
        }
        self.send_wait(|tx| DiskOp::Purge(upto, b, tx)).await
    }
}

#[cfg(test)]
mod tests {
    use openraft::async_runtime::oneshot::Oneshot;
    use openraft::storage::{IOFlushed, RaftLogStorage};
    use openraft::{EntryPayload, RaftLogReader};

    use super::*;

    type Chan = openraft::alias::OneshotOf<TypeConfig>;

    fn entry(term: u64, index: u64) -> Entry {
        let leader = openraft::alias::CommittedLeaderIdOf::<TypeConfig>::new(term);
        Entry { log_id: openraft::LogId::new(leader, index), payload: EntryPayload::Blank }
    }

    async fn append(s: &mut LogStore, entries: Vec<Entry>) {
        let (tx, rx) = Chan::channel();
        s.append(entries, IOFlushed::signal(tx)).await.unwrap();
        rx.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn entries_vote_truncate_and_purge_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open(dir.path()).unwrap();
            append(&mut s, (1..=10).map(|i| entry(1, i)).collect()).await;
            let vote = Vote::new(2, 1);
            s.save_vote(&vote).await.unwrap();
            s.truncate_after(Some(entry(1, 8).log_id)).await.unwrap();
            s.purge(entry(1, 3).log_id).await.unwrap();
            append(&mut s, vec![entry(2, 9)]).await;
        }
        let mut s = LogStore::open(dir.path()).unwrap();
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id.map(|l| l.index), Some(3));
        assert_eq!(st.last_log_id.map(|l| (l.leader_id.term, l.index)), Some((2, 9)));
        let got: Vec<u64> = s.try_get_log_entries(0..100).await.unwrap().iter().map(|e| e.log_id.index).collect();
        assert_eq!(got, (4..=9).collect::<Vec<_>>());
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
    }

    #[tokio::test]
    async fn concurrent_appends_share_commits() {
        // Many appends queued back to back complete, in order, and all land on disk.
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open(dir.path()).unwrap();
            let mut rxs = Vec::new();
            for i in 1..=500u64 {
                let (tx, rx) = Chan::channel();
                s.append(vec![entry(1, i)], IOFlushed::signal(tx)).await.unwrap();
                rxs.push(rx);
            }
            for rx in rxs {
                rx.await.unwrap().unwrap();
            }
        }
        let mut s = LogStore::open(dir.path()).unwrap();
        assert_eq!(s.try_get_log_entries(0..1000).await.unwrap().len(), 500);
    }

    #[tokio::test]
    async fn cache_is_bounded_and_old_entries_come_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LogStore::open_with_cache(dir.path(), 2_000).unwrap();
        for i in 1..=200u64 {
            append(&mut s, vec![entry(1, i)]).await;
        }
        {
            let m = s.mem();
            assert!(m.cached_bytes <= 2_000 + 200, "cache stays near its budget: {}", m.cached_bytes);
            assert!(m.log.len() < 200, "old entries left the cache");
            assert!(m.log.contains_key(&200), "the newest entry is always cached");
        }
        let got: Vec<u64> = s.try_get_log_entries(1..=200).await.unwrap().iter().map(|e| e.log_id.index).collect();
        assert_eq!(got, (1..=200).collect::<Vec<_>>(), "every entry is readable, from cache or disk");
        let got: Vec<u64> = s.try_get_log_entries(10..20).await.unwrap().iter().map(|e| e.log_id.index).collect();
        assert_eq!(got, (10..20).collect::<Vec<_>>());
        drop(s);
        let mut s = LogStore::open_with_cache(dir.path(), 2_000).unwrap();
        assert!(s.mem().log.len() < 200, "a restart caches only the newest entries");
        assert_eq!(s.get_log_state().await.unwrap().last_log_id.map(|l| l.index), Some(200));
        assert_eq!(s.try_get_log_entries(0..).await.unwrap().len(), 200);
    }

    #[tokio::test]
    async fn truncate_after_none_removes_everything() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open(dir.path()).unwrap();
            append(&mut s, (0..=4).map(|i| entry(1, i)).collect()).await;
            s.truncate_after(None).await.unwrap();
        }
        let mut s = LogStore::open(dir.path()).unwrap();
        assert!(s.try_get_log_entries(0..100).await.unwrap().is_empty());
        assert_eq!(s.get_log_state().await.unwrap().last_log_id, None);
    }

    #[tokio::test]
    async fn a_data_dir_with_entries_in_redb_moves_them_to_the_log_files() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(dir.path().join("raft.db")).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut log = tx.open_table(LEGACY_LOG).unwrap();
                for i in 1..=5 {
                    log.insert(i, enc(&entry(1, i)).unwrap().as_slice()).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        for _ in 0..2 {
            let mut s = LogStore::open(dir.path()).unwrap();
            let got: Vec<u64> = s.try_get_log_entries(0..).await.unwrap().iter().map(|e| e.log_id.index).collect();
            assert_eq!(got, (1..=5).collect::<Vec<_>>());
        }
        let db = Database::create(dir.path().join("raft.db")).unwrap();
        let tx = db.begin_read().unwrap();
        assert!(tx.open_table(LEGACY_LOG).is_err(), "the old table is gone");
    }

    #[tokio::test]
    async fn entries_span_segments_and_a_purge_removes_old_files() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open_with(dir.path(), 1_000, 2_048).unwrap();
            for i in 1..=300u64 {
                append(&mut s, vec![entry(1, i)]).await;
            }
            let files = std::fs::read_dir(dir.path().join("wal")).unwrap().count();
            assert!(files > 3, "{files} segments");
            s.purge(entry(1, 250).log_id).await.unwrap();
            let after = std::fs::read_dir(dir.path().join("wal")).unwrap().count();
            assert!(after < files, "purged segments are deleted: {after} of {files}");
        }
        let mut s = LogStore::open_with(dir.path(), 1_000, 2_048).unwrap();
        let got: Vec<u64> = s.try_get_log_entries(0..).await.unwrap().iter().map(|e| e.log_id.index).collect();
        assert_eq!(got, (251..=300).collect::<Vec<_>>(), "nothing at or below the purge point is offered");
        assert_eq!(s.get_log_state().await.unwrap().last_purged_log_id.map(|l| l.index), Some(250));
    }

    #[tokio::test]
    async fn a_snapshot_past_the_log_end_then_new_entries_survive_reopen() {
        // A follower whose log ends at 20 installs a snapshot at 500, then replicates 501...
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open_with(dir.path(), 1_000, 2_048).unwrap();
            append(&mut s, (1..=20).map(|i| entry(1, i)).collect()).await;
            s.purge(entry(2, 500).log_id).await.unwrap();
            assert_eq!(s.get_log_state().await.unwrap().last_log_id.map(|l| l.index), Some(500));
            for i in 501..=600 {
                append(&mut s, vec![entry(2, i)]).await;
            }
            s.truncate_after(Some(entry(2, 590).log_id)).await.unwrap();
            append(&mut s, (591..=595).map(|i| entry(3, i)).collect()).await;
        }
        let mut s = LogStore::open_with(dir.path(), 1_000, 2_048).unwrap();
        let got = s.try_get_log_entries(0..).await.unwrap();
        assert_eq!(got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), (501..=595).collect::<Vec<_>>());
        assert_eq!(got.last().map(|e| e.log_id.leader_id.term), Some(3));
        assert_eq!(s.get_log_state().await.unwrap().last_purged_log_id.map(|l| l.index), Some(500));
    }
}
