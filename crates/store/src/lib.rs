//! The state store: Cairn's go-memdb. Typed tables on persistent maps (`imbl`), so a read takes an
//! O(1) immutable snapshot and never blocks the writer; a monotonic index per table; watch sets for
//! blocking queries; snapshot and restore. [`Store::apply`] is the state machine's transition
//! function: a pure function of (state, command, raft index).
//!
//! Must not: read a clock, draw random numbers, touch the network or the disk.
//!
//! Map: [`state`] holds the tables and the read queries, [`apply`](mod@apply) the writes, [`watch`] the
//! blocking-query plumbing.

mod apply;
pub mod state;
pub mod txn;
pub mod watch;

use std::sync::{Arc, Mutex};

pub use state::State;

/// The entry of `State::indexes` that records the last restore's index (blocking queries waiting
/// across it are abandoned).
pub const RESTORE_INDEX: &str = "restore";
pub use watch::{Topic, WatchSet};

use cairn_types::{Command, CommandResult};
use watch::WatchHub;

/// The store shared by the Raft state machine (the one writer) and every reader.
pub struct Store {
    inner: Mutex<Inner>,
}

struct Inner {
    root: Arc<State>,
    hub: WatchHub,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        Store { inner: Mutex::new(Inner { root: Arc::new(State::default()), hub: WatchHub::default() }) }
    }

    /// The current immutable snapshot.
    pub fn snapshot(&self) -> Arc<State> {
        self.inner.lock().expect("store lock").root.clone()
    }

    /// A snapshot plus registration of `topics` in `ws`, atomically with respect to writers: any
    /// write that is not visible in the returned snapshot fires `ws` if it touches a topic.
    pub fn watch(&self, ws: &WatchSet, topics: impl IntoIterator<Item = Topic>) -> Arc<State> {
        let mut g = self.inner.lock().expect("store lock");
        for t in topics {
            g.hub.register(ws, t);
        }
        g.root.clone()
    }

    /// Applies one committed command at `index`. Returns what the command answers the caller.
    pub fn apply(&self, index: u64, cmd: &Command) -> CommandResult {
        self.apply_fx(index, cmd).0
    }

    /// [`Store::apply`], also returning the keys whose locks were released by a session
    /// invalidation, with each one's lock-delay in nanoseconds.
    pub fn apply_fx(&self, index: u64, cmd: &Command) -> (CommandResult, Vec<(String, u64)>) {
        let base = self.snapshot();
        let mut next = (*base).clone();
        let mut fx = apply::Fx::default();
        let res = apply::apply(&mut next, index, cmd, &mut fx);
        if matches!(res, CommandResult::Error(_) | CommandResult::TxnErrors(_)) || fx.fired.is_empty() {
            // Nothing changed (rejected, or a no-op write such as an identical re-registration):
            // keep the old root, so no index moves and no waiter wakes.
            return (res, Vec::new());
        }
        let mut fired = fx.fired;
        next.last_index = index;
        let catalog = fired
            .iter()
            .any(|t| matches!(t, Topic::Service(_) | Topic::Node(_) | Topic::Table("nodes" | "services" | "checks")));
        if catalog {
            fired.push(Topic::Table("catalog"));
        }
        let mut g = self.inner.lock().expect("store lock");
        g.root = Arc::new(next);
        for t in &fired {
            g.hub.fire(t);
        }
        (res, fx.lock_delays)
    }

    /// Records that `index` was applied without changing state (blank or membership entries).
    pub fn note_index(&self, index: u64) {
        let mut g = self.inner.lock().expect("store lock");
        if g.root.last_index < index {
            let mut next = (*g.root).clone();
            next.last_index = index;
            g.root = Arc::new(next);
        }
    }

    /// Replaces the whole state (snapshot install); every waiter wakes.
    /// Installs a backup's state as the entry at raft `index` (a restore through the log): every
    /// table's index moves to `index`, so indexes only grow and every blocking query answers anew.
    pub fn restore_at(&self, index: u64, mut state: State) {
        state.last_index = index;
        let mut indexes: imbl::OrdMap<String, u64> = state.indexes.keys().map(|k| (k.clone(), index)).collect();
        for t in
            ["kvs", "tombstones", "nodes", "services", "checks", "sessions", "queries", "coordinates", RESTORE_INDEX]
        {
            indexes.insert(t.to_string(), index);
        }
        state.indexes = indexes;
        self.restore(state);
    }

    pub fn restore(&self, state: State) {
        let mut g = self.inner.lock().expect("store lock");
        g.root = Arc::new(state);
        g.hub.fire_all();
    }
}

#[cfg(test)]
mod tests;
