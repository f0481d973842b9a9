//! A simulated disk for a server's Raft log and vote, with the failure a crash brings: writes that
//! were issued but not yet synced are lost, and the batch being synced when the crash came may be
//! torn (only a prefix of it reached the platter).
//!
//! It keeps the contract Cairn's log store keeps on real files (`raft::log_store`): an append
//! returns at once and completes its callback only once synced; vote, truncate and purge wait for
//! their sync; one writer syncs everything queued as one batch (group commit), taking a random
//! virtual time (0.5-8 ms). Readers see what was written, synced or not, as the real cache does. A crash
//! keeps what was synced plus a random prefix of the batch in flight; what is still queued is
//! gone. The byte-level half (a record torn mid-write is detected and dropped) is tested on real
//! files in `raft::wal`; here a torn record is one that did not make the prefix.
//!
//! Must not: ship in the binary.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use cairn_cluster::raft::{Entry, LogId, TypeConfig, Vote};
use cairn_gossip::env::{Rng, SeededRng};

/// What a restart finds, or what a reader sees.
#[derive(Clone, Default)]
struct LogImage {
    log: BTreeMap<u64, Entry>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
}

impl LogImage {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append(entries) => {
                for e in entries {
                    self.log.insert(e.log_id.index, e.clone());
                }
            }
            Op::Vote(v) => self.vote = Some(*v),
            Op::Committed(c) => self.committed = *c,
            Op::Truncate(after) => {
                let _ = self.log.split_off(&after.map_or(0, |a| a + 1));
            }
            Op::Purge(upto) => {
                self.log = self.log.split_off(&(upto.index + 1));
                self.purged = Some(*upto);
            }
        }
    }
}

#[derive(Clone)]
enum Op {
    Append(Vec<Entry>),
    Vote(Vote),
    Committed(Option<LogId>),
    Truncate(Option<u64>),
    Purge(LogId),
}

enum Done {
    Flushed(IOFlushed<TypeConfig>),
    Waiter(tokio::sync::oneshot::Sender<()>),
    Nothing,
}

struct DiskState {
    /// What has been synced.
    synced: LogImage,
    /// Issued, not yet picked up by the writer.
    queued: Vec<(Op, Done)>,
    /// Being synced now.
    in_flight: Vec<Op>,
    /// Bumped by every crash: the log handles and writer of an older life stop touching the disk.
    life: u64,
    wake: Arc<tokio::sync::Notify>,
    rng: SeededRng,
}

/// A server's disk; it outlives crashes of the server.
#[derive(Clone)]
pub struct SimDisk(Arc<Mutex<DiskState>>);

impl SimDisk {
    pub fn new(seed: u64) -> Self {
        SimDisk(Arc::new(Mutex::new(DiskState {
            synced: LogImage::default(),
            queued: Vec::new(),
            in_flight: Vec::new(),
            life: 0,
            wake: Arc::new(tokio::sync::Notify::new()),
            rng: SeededRng(seed ^ 0xd15c),
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.0.lock().expect("sim disk")
    }

    /// The server stops: what was queued is lost, the batch in flight is torn at a random point.
    /// Returns how many records were lost.
    pub fn crash(&self) -> u64 {
        let mut d = self.state();
        d.life += 1;
        let in_flight = std::mem::take(&mut d.in_flight);
        let units: u64 = in_flight.iter().map(units_of).sum();
        let mut keep = d.rng.next_u64() % (units + 1);
        let mut lost = units - keep;
        for op in in_flight {
            if keep == 0 {
                break;
            }
            let n = units_of(&op);
            let op = match op {
                Op::Append(mut entries) if n > keep => {
                    entries.truncate(keep as usize);
                    Op::Append(entries)
                }
                op => op,
            };
            keep -= n.min(keep);
            d.synced.apply(&op);
        }
        for (op, _) in std::mem::take(&mut d.queued) {
            lost += units_of(&op);
        }
        d.wake.notify_one();
        lost
    }

    /// Opens the log as a restarted server finds it, and starts its writer.
    pub fn open(&self) -> SimLog {
        let (image, life, wake) = {
            let d = self.state();
            (d.synced.clone(), d.life, d.wake.clone())
        };
        let disk = self.clone();
        tokio::spawn(async move { disk.writer(life, wake).await });
        SimLog { disk: self.clone(), life, view: Arc::new(Mutex::new(image)) }
    }

    /// Whether a batch is being synced now.
    pub fn syncing(&self) -> bool {
        !self.state().in_flight.is_empty()
    }

    /// Syncs whatever is queued, one batch at a time, each taking 0.5-8 ms of virtual time (a disk's
    /// `fdatasync`).
    async fn writer(self, life: u64, wake: Arc<tokio::sync::Notify>) {
        loop {
            let (batch, dones, took) = {
                let mut d = self.state();
                if d.life != life {
                    return;
                }
                let (ops, dones): (Vec<Op>, Vec<Done>) = std::mem::take(&mut d.queued).into_iter().unzip();
                d.in_flight = ops.clone();
                let took = Duration::from_micros(500 + d.rng.next_u64() % 7_500);
                (ops, dones, took)
            };
            if batch.is_empty() {
                wake.notified().await;
                continue;
            }
            tokio::time::sleep(took).await;
            {
                let mut d = self.state();
                if d.life != life {
                    // Crashed mid-sync: `crash` kept what it kept; no callback fires.
                    return;
                }
                for op in &batch {
                    d.synced.apply(op);
                }
                d.in_flight.clear();
            }
            for done in dones {
                match done {
                    Done::Flushed(cb) => cb.io_completed(Ok(())),
                    Done::Waiter(tx) => {
                        let _ = tx.send(());
                    }
                    Done::Nothing => {}
                }
            }
        }
    }
}

fn units_of(op: &Op) -> u64 {
    match op {
        Op::Append(e) => e.len() as u64,
        Op::Committed(_) => 0,
        _ => 1,
    }
}

fn crashed() -> std::io::Error {
    std::io::Error::other("the server crashed")
}

/// The log and vote of one life of a server (clones share it; the clone is the log reader).
#[derive(Clone)]
pub struct SimLog {
    disk: SimDisk,
    life: u64,
    /// What readers see: everything written, synced or not.
    view: Arc<Mutex<LogImage>>,
}

impl SimLog {
    fn view(&self) -> std::sync::MutexGuard<'_, LogImage> {
        self.view.lock().expect("sim log view")
    }

    /// Writes `op` (visible to readers at once) and queues it for the writer.
    fn issue(&self, op: Op, done: Done) -> std::io::Result<()> {
        let mut d = self.disk.state();
        if d.life != self.life {
            return Err(crashed());
        }
        self.view().apply(&op);
        d.queued.push((op, done));
        d.wake.notify_one();
        Ok(())
    }

    async fn issue_and_wait(&self, op: Op) -> std::io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.issue(op, Done::Waiter(tx))?;
        rx.await.map_err(|_| crashed())
    }
}

impl RaftLogReader<TypeConfig> for SimLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, std::io::Error> {
        Ok(self.view().log.range(range).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, std::io::Error> {
        Ok(self.view().vote)
    }
}

impl RaftLogStorage<TypeConfig> for SimLog {
    type LogReader = SimLog;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, std::io::Error> {
        let v = self.view();
        let last = v.log.values().next_back().map(|e| e.log_id).or(v.purged);
        Ok(LogState { last_purged_log_id: v.purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), std::io::Error> {
        self.issue_and_wait(Op::Vote(*vote)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), std::io::Error> {
        // A hint for restarts that rides with the next batch, as on real files (where `None`
        // writes nothing).
        match committed {
            Some(_) => self.issue(Op::Committed(committed), Done::Nothing),
            None => {
                self.view().committed = None;
                Ok(())
            }
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, std::io::Error> {
        Ok(self.view().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), std::io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.issue(Op::Append(entries.into_iter().collect()), Done::Flushed(callback))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), std::io::Error> {
        self.issue_and_wait(Op::Truncate(last_log_id.map(|l| l.index))).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), std::io::Error> {
        self.issue_and_wait(Op::Purge(log_id)).await
    }
}

#[cfg(test)]
mod tests {
    use openraft::async_runtime::oneshot::Oneshot;
    use openraft::EntryPayload;

    use super::*;

    type Chan = openraft::alias::OneshotOf<TypeConfig>;

    fn entry(term: u64, index: u64) -> Entry {
        let leader = openraft::alias::CommittedLeaderIdOf::<TypeConfig>::new(term);
        Entry { log_id: openraft::LogId::new(leader, index), payload: EntryPayload::Blank }
    }

    async fn indexes(log: &mut SimLog) -> Vec<u64> {
        log.try_get_log_entries(0..).await.expect("read").iter().map(|e| e.log_id.index).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn synced_writes_survive_a_crash_and_unsynced_ones_may_not() {
        let mut torn = 0;
        for seed in 0..40 {
            let disk = SimDisk::new(seed);
            let mut log = disk.open();
            let (tx, rx) = Chan::channel();
            log.append((1..=5).map(|i| entry(1, i)), IOFlushed::signal(tx)).await.expect("append");
            rx.await.expect("flushed").expect("ok");
            log.save_vote(&Vote::new(1, 1)).await.expect("vote");
            // Issued, never waited for: the crash comes while they are queued or in flight.
            let (tx, _rx) = Chan::channel();
            log.append((6..=9).map(|i| entry(1, i)), IOFlushed::signal(tx)).await.expect("append");
            assert_eq!(indexes(&mut log).await, (1..=9).collect::<Vec<_>>(), "readers see unsynced writes");
            tokio::task::yield_now().await; // the writer picks up the batch
            disk.crash();
            assert!(log.save_vote(&Vote::new(2, 1)).await.is_err(), "a crashed life writes nothing");
            let mut back = disk.open();
            let got = indexes(&mut back).await;
            assert!(got.len() >= 5 && got == (1..=got.len() as u64).collect::<Vec<_>>(), "a prefix: {got:?}");
            assert_eq!(back.read_vote().await.expect("vote"), Some(Vote::new(1, 1)));
            torn += usize::from(got.len() > 5 && got.len() < 9);
        }
        assert!(torn > 0, "some crash tore the batch in flight");
    }
}
