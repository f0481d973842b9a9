//! openraft glue. The whole integration with the (exactly pinned, still-alpha) openraft API lives in
//! this module so that an upgrade touches only here.

pub mod drift;
pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod wal;

use cairn_types::{Command, CommandResult};

/// Raft's runtime: tokio, with openraft's random draws (election timeouts, tick jitter) taken from
/// a seeded generator carried by each Raft task. A server seeds it from entropy
/// ([`with_seed`] around `Raft::new`); the simulation seeds it from the run's seed, so a run
/// replays exactly. Its clock is real time, except where the simulation makes a node's clock
/// drift ([`drift::with_rate`]).
pub type Runtime = drift::Drifting;

openraft::declare_raft_types!(
    /// Cairn's Raft types: commands in, command results out, u64 server IDs.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = openraft::BasicNode,
        // Standard Raft: one leader per term, as Consul's Raft (openraft's default, "advanced"
        // mode, lets two candidates of one term both lead, ordered by node ID).
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
        AsyncRuntime = Runtime,
);

/// Runs `f` (which creates a Raft node) with `seed` as the seed of the Raft tasks it spawns.
pub async fn with_seed<F: std::future::Future>(seed: u64, f: F) -> F::Output {
    openraft_rt::deterministic_rng::DeterministicRng::<openraft_rt_tokio::TokioRuntime>::scope(seed, f).await
}

pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachine>;

/// A restarted server grants no vote (nor pre-vote) until one election timeout's maximum has
/// passed since it started. Before its crash it may have acknowledged a leader that still counts
/// on that acknowledgement for its lease, and openraft reloads the vote with no lease, so without
/// this the server could help elect a new leader at once while the old one still answers default
/// reads under its lease. (A server that never voted has acknowledged no one.) The Raft
/// simulation restarts servers within a lease to check it.
#[derive(Debug, Clone, Copy)]
pub struct VoteGate {
    until: Option<drift::LocalInstant>,
}

impl VoteGate {
    /// The gate of a server starting now: closed for `hold` if its log holds a vote (it voted, or
    /// acknowledged a leader, in an earlier life).
    pub fn at_start(voted: bool, hold: std::time::Duration) -> Self {
        use openraft_rt::instant::Instant as _;
        VoteGate { until: voted.then(|| drift::LocalInstant::now() + hold) }
    }

    /// A gate that never holds (for tests of what it prevents).
    pub fn open() -> Self {
        VoteGate { until: None }
    }

    /// Waits until votes may be granted (on the caller's clock, which must be the server's).
    pub async fn wait(&self) {
        use openraft_rt::AsyncRuntime as _;
        if let Some(until) = self.until {
            use openraft_rt::instant::Instant as _;
            if drift::LocalInstant::now() < until {
                Runtime::sleep_until(until).await;
            }
        }
    }
}
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;

pub(crate) fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}
