//! The server side of `Operator.*`, `Status.*` and backups: the Raft configuration with each
//! server's name and ID from the LAN pool, peer removal, leadership transfer, autopilot's
//! configuration and health, and snapshot save/restore. What only the leader knows (replication
//! progress, contact times) is asked of the leader.

use std::collections::BTreeMap;

use cairn_types::rpc::Consistency;
use cairn_types::rpc::{
    OperatorRequest, OperatorResponse, QueryOptions, RaftServerInfo, ServerHealth, ServerHealthReport,
};

use crate::error::Error;
use crate::server::{Server, ServerInfo};

fn rejected(msg: String) -> Error {
    Error::Rejected(cairn_types::Error::rejected(msg))
}

/// The servers of the LAN pool by Raft ID.
fn known(server: &Server) -> BTreeMap<u64, ServerInfo> {
    server.lan_servers().into_iter().map(|s| (s.raft_id, s)).collect()
}

/// The Raft ID of the configured server whose node ID is `id`.
fn configured(server: &Server, id: &str) -> Option<u64> {
    let raft_id = crate::raft_id(id);
    let (servers, _, _) = server.raft_configuration();
    (uuid::Uuid::parse_str(id).is_ok() && servers.iter().any(|s| s.raft_id == raft_id)).then_some(raft_id)
}

pub async fn operator(server: &Server, req: OperatorRequest, q: &QueryOptions) -> Result<OperatorResponse, Error> {
    let stale = q.consistency == Consistency::Stale;
    match req {
        OperatorRequest::RaftGetConfiguration => {
            let (servers, index) = server.leader_raft_configuration(stale).await?;
            let known = known(server);
            let servers = servers
                .iter()
                .map(|s| {
                    let k = known.get(&s.raft_id);
                    RaftServerInfo {
                        id: k.map_or_else(|| s.raft_id.to_string(), |k| k.node_id.clone()),
                        node: k.map_or_else(|| "(unknown)".to_string(), |k| k.name.clone()),
                        address: s.address.clone(),
                        leader: s.leader,
                        protocol_version: k.map_or_else(|| "unknown".to_string(), |k| k.raft_vsn.clone()),
                        voter: s.voter,
                        last_index: s.last_index,
                    }
                })
                .collect();
            Ok(OperatorResponse::RaftConfiguration { servers, index })
        }
        OperatorRequest::RaftRemovePeer { id, address } => {
            let target =
                match (id, address) {
                    (Some(id), None) => configured(server, &id)
                        .ok_or_else(|| rejected(format!("id {id:?} was not found in the Raft configuration")))?,
                    (None, Some(addr)) => {
                        let (servers, _, _) = server.raft_configuration();
                        servers.iter().find(|s| s.address == addr).map(|s| s.raft_id).ok_or_else(|| {
                            rejected(format!("address {addr:?} was not found in the Raft configuration"))
                        })?
                    }
                    _ => {
                        return Err(Error::Rejected(cairn_types::Error::invalid(
                            "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove",
                        )))
                    }
                };
            server.remove_peer(target).await?;
            Ok(OperatorResponse::Done)
        }
        OperatorRequest::RaftTransferLeader { id } => {
            let to = match id {
                None => None,
                Some(id) => Some(
                    configured(server, &id)
                        .ok_or_else(|| rejected(format!("Could not find address for server id {id}")))?,
                ),
            };
            server.transfer_leader(to).await?;
            Ok(OperatorResponse::Done)
        }
        OperatorRequest::AutopilotGetConfiguration => {
            if !stale {
                server.default_barrier().await?;
            }
            Ok(OperatorResponse::Autopilot(server.autopilot_config()))
        }
        OperatorRequest::AutopilotSetConfiguration { config, cas } => {
            Ok(OperatorResponse::Bool(server.set_autopilot_config(config, cas).await?))
        }
        OperatorRequest::AutopilotServerHealth => Ok(OperatorResponse::Health(health(server).await?)),
        OperatorRequest::StatusLeader => Ok(OperatorResponse::Leader(server.leader_addr().unwrap_or_default())),
        OperatorRequest::StatusPeers => Ok(OperatorResponse::Peers(server.peers())),
        OperatorRequest::SnapshotSave => {
            let (archive, index) = server.snapshot_archive(stale).await?;
            Ok(OperatorResponse::Snapshot { archive, meta: server.query_meta(index) })
        }
        OperatorRequest::EventFire(ev) => {
            let pool = server
                .lan()
                .and_then(|l| l.pool.as_ref())
                .ok_or_else(|| rejected("this server has no LAN pool to broadcast the event in".to_string()))?;
            pool.fire(&ev).await.map_err(rejected)?;
            Ok(OperatorResponse::Done)
        }
        OperatorRequest::SnapshotRestore(archive) => {
            server.restore_archive(&archive).await?;
            Ok(OperatorResponse::Done)
        }
    }
}

/// Autopilot's view of every server in the configuration (asked of the leader, which knows how far
/// each has replicated and when it last heard from it).
async fn health(server: &Server) -> Result<ServerHealthReport, Error> {
    let (servers, _) = server.leader_raft_configuration(false).await?;
    let ap = server.autopilot_config();
    let known = known(server);
    let leader_index = servers.iter().find(|s| s.leader).map_or(0, |s| s.last_index);
    let term = server.stats().get("term").and_then(|t| t.parse().ok()).unwrap_or(0);
    let list: Vec<ServerHealth> = servers
        .iter()
        .map(|s| {
            let k = known.get(&s.raft_id);
            let serf = k.map_or("none", |k| k.status.as_str());
            let contact_ok = s.last_contact_ms.is_some_and(|c| c as u128 <= ap.last_contact_threshold.as_millis());
            let healthy =
                serf == "alive" && contact_ok && leader_index.saturating_sub(s.last_index) <= ap.max_trailing_logs;
            ServerHealth {
                id: k.map_or_else(|| s.raft_id.to_string(), |k| k.node_id.clone()),
                name: k.map_or_else(String::new, |k| k.name.clone()),
                address: s.address.clone(),
                serf_status: serf.to_string(),
                version: k.map_or_else(String::new, |k| k.version.clone()),
                leader: s.leader,
                voter: s.voter,
                last_contact_ms: s.last_contact_ms,
                last_term: term,
                last_index: s.last_index,
                healthy,
            }
        })
        .collect();
    let voters = list.iter().filter(|s| s.voter).count();
    let healthy_voters = list.iter().filter(|s| s.voter && s.healthy).count();
    // How many more voters may fail with a quorum left.
    let failure_tolerance = healthy_voters.saturating_sub(voters / 2 + 1);
    Ok(ServerHealthReport { healthy: list.iter().all(|s| s.healthy), failure_tolerance, servers: list })
}
