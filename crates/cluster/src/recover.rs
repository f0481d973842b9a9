//! Recovery after losing a quorum: the surviving servers get a new Raft configuration written into
//! their own log while they are stopped, so they can elect a leader among themselves again. This
//! is what Consul's `raft/peers.json` does (hashicorp/raft's `RecoverCluster`); Cairn reads that file
//! too, and offers `cairn operator raft recover`, which shows its plan first and refuses while a
//! quorum of the old configuration still answers.
//!
//! How: a membership entry naming only the survivors is appended after the last entry, in a term
//! above any this server has seen, and this server's vote moves to that term. On start Raft takes
//! the newest membership in its log as the configuration; the survivors elect a leader, which
//! commits the entry. Entries the lost servers held and the survivors never received are gone, as
//! with any quorum loss: that is why this is a last resort.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use openraft::async_runtime::oneshot::Oneshot;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{BasicNode, EntryPayload, Membership, RaftLogReader};
use serde::Deserialize;

use crate::raft::log_store::LogStore;
use crate::raft::{Entry, TypeConfig};

/// What a recovery found and will write.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The voters of the current configuration: Raft ID and address.
    pub current: BTreeMap<u64, String>,
    /// The configuration after recovery.
    pub new: BTreeMap<u64, String>,
    pub last_index: u64,
    pub term: u64,
}

/// One entry of Consul's `peers.json` (Raft protocol 3).
#[derive(Debug, Deserialize)]
struct PeerEntry {
    id: String,
    address: String,
    #[serde(default)]
    non_voter: bool,
}

/// Parses `peers.json`: `[{"id": "<node uuid>", "address": "ip:port", "non_voter": false}]`.
/// Non-voters are left out of the recovered configuration.
pub fn parse_peers_json(text: &str) -> Result<BTreeMap<u64, String>, String> {
    let v: Vec<PeerEntry> = serde_json::from_str(text).map_err(|e| format!("failed to parse peers.json: {e}"))?;
    let peers: BTreeMap<u64, String> =
        v.into_iter().filter(|p| !p.non_voter).map(|p| (crate::raft_id(&p.id), p.address)).collect();
    if peers.is_empty() {
        return Err("peers.json names no voter".into());
    }
    Ok(peers)
}

async fn last_membership(log: &mut LogStore) -> std::io::Result<(Option<Membership<u64, BasicNode>>, u64, u64)> {
    let state = log.get_log_state().await?;
    let last = state.last_log_id.map_or(0, |l| l.index);
    let first = state.last_purged_log_id.map_or(0, |l| l.index + 1);
    let term = state.last_log_id.map_or(0, |l| l.leader_id.term);
    let mut reader = log.get_log_reader().await;
    let vote_term = reader.read_vote().await?.map_or(0, |v| v.leader_id.term);
    let entries = reader.try_get_log_entries(first..last + 1).await?;
    let m = entries.iter().rev().find_map(|e| match &e.payload {
        EntryPayload::Membership(m) => Some(m.clone()),
        _ => None,
    });
    Ok((m, last, term.max(vote_term)))
}

/// Reads the configuration in `raft_dir` (the server stopped) and what recovering to `peers` means.
/// With no log membership left (all of it in a snapshot), the snapshot's is used.
pub async fn plan(raft_dir: &Path, peers: &BTreeMap<u64, String>) -> Result<Plan, String> {
    let mut log = LogStore::open(raft_dir).map_err(|e| format!("{}: {e}", raft_dir.display()))?;
    let (m, last_index, term) = last_membership(&mut log).await.map_err(|e| e.to_string())?;
    let m = match m {
        Some(m) => m,
        None => crate::raft::state_machine::snapshot_membership(raft_dir)
            .ok_or("no Raft configuration found in the data dir: nothing to recover")?,
    };
    let current: BTreeMap<u64, String> =
        m.voter_ids().filter_map(|id| m.get_node(&id).map(|n| (id, n.addr.clone()))).collect();
    Ok(Plan { current, new: peers.clone(), last_index, term })
}

/// How many of the current voters answer on their server port (this server is stopped and does
/// not count).
pub async fn reachable(plan: &Plan, me: u64) -> usize {
    let mut n = 0;
    for (id, addr) in &plan.current {
        if *id == me {
            continue;
        }
        let ok = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await;
        if matches!(ok, Ok(Ok(_))) {
            n += 1;
        }
    }
    n
}

/// Writes the recovered configuration into `raft_dir`: a membership entry after the last one, in
/// a new term, with this server's vote moved there.
pub async fn apply(raft_dir: &Path, me: u64, plan: &Plan) -> Result<(), String> {
    if !plan.new.contains_key(&me) {
        return Err("the new configuration must include this server".into());
    }
    let mut log = LogStore::open(raft_dir).map_err(|e| format!("{}: {e}", raft_dir.display()))?;
    let term = plan.term + 1;
    let voters: BTreeSet<u64> = plan.new.keys().copied().collect();
    let nodes: BTreeMap<u64, BasicNode> = plan.new.iter().map(|(id, a)| (*id, BasicNode::new(a))).collect();
    let membership = Membership::new(vec![voters], nodes).map_err(|e| e.to_string())?;
    let leader = openraft::alias::CommittedLeaderIdOf::<TypeConfig>::new(term);
    let entry = Entry {
        log_id: openraft::LogId::new(leader, plan.last_index + 1),
        payload: EntryPayload::Membership(membership),
    };
    let vote = openraft::alias::VoteOf::<TypeConfig>::new_committed(term, me);
    log.save_vote(&vote).await.map_err(|e| e.to_string())?;
    let (tx, rx) = openraft::alias::OneshotOf::<TypeConfig>::channel();
    log.append(vec![entry], IOFlushed::signal(tx)).await.map_err(|e| e.to_string())?;
    rx.await.map_err(|_| "the log writer stopped".to_string())?.map_err(|e| e.to_string())?;
    Ok(())
}
