//! Leader duties. Reconciling members into the catalog: every member of the LAN pool gets a node
//! entry with a `serfHealth` check reflecting its gossip status, and every server a `consul` service.
//! The members come from the LAN gossip pool ([`reconcile_pool`]).

use cairn_types::structs::{HealthCheck, NodeService, RegisterRequest, HEALTH_PASSING, SERF_CHECK_ID, SERF_CHECK_NAME};
use cairn_types::{Command, CommandResult};

use crate::error::Error;
use crate::server::Server;

/// A member of the LAN pool, as the leader reconciles it.
#[derive(Debug, Clone)]
pub struct Member {
    pub node: String,
    pub node_id: String,
    pub address: String,
    pub datacenter: String,
    /// `Some(port)` for servers: they carry the `consul` service on their RPC port.
    pub server_port: Option<u16>,
}

/// Registers `m` as alive. Identical re-registration is a no-op in the store (no index moves).
pub async fn reconcile_alive(server: &Server, m: &Member) -> Result<(), Error> {
    let st = server.store().snapshot();
    let serf_ok = st
        .checks
        .get(&(m.node.clone(), SERF_CHECK_ID.to_string()))
        .map(|c| c.status == HEALTH_PASSING)
        .unwrap_or(false);
    let node_ok = st.node(&m.node).map(|n| n.address == m.address && n.id == m.node_id).unwrap_or(false);
    let svc_ok = m.server_port.is_none() || st.services.contains_key(&(m.node.clone(), "consul".to_string()));
    if serf_ok && node_ok && svc_ok {
        return Ok(());
    }
    let check = HealthCheck {
        node: m.node.clone(),
        check_id: SERF_CHECK_ID.into(),
        name: SERF_CHECK_NAME.into(),
        status: HEALTH_PASSING.into(),
        output: "Agent alive and reachable".into(),
        definition: serde_json::json!({}),
        ..Default::default()
    };
    let service = m.server_port.map(|p| NodeService {
        id: "consul".into(),
        service: "consul".into(),
        port: p,
        ..Default::default()
    });
    let req = RegisterRequest {
        datacenter: m.datacenter.clone(),
        id: m.node_id.clone(),
        node: m.node.clone(),
        address: m.address.clone(),
        // Keep the node's meta and tagged addresses, which the agent's own sync owns.
        skip_node_update: node_ok,
        service,
        check: Some(check),
        ..Default::default()
    };
    match server.apply(Command::Register(req)).await?.result {
        CommandResult::Error(e) => Err(Error::Rejected(e)),
        _ => Ok(()),
    }
}

/// Proposes forgetting tombstones at or below `up_to`, if there are any. The caller picks `up_to`
/// from the clock (an index it saw a tombstone-TTL ago), so the state machine stays clock-free.
pub async fn reap_tombstones(server: &Server, up_to: u64) -> Result<(), Error> {
    let st = server.store().snapshot();
    if !st.tombstones.values().any(|i| *i <= up_to) {
        return Ok(());
    }
    server.apply(Command::ReapTombstones(up_to)).await.map(|_| ())
}

/// Consul lets a session live up to twice its TTL before the leader reaps it.
pub const SESSION_TTL_MULTIPLIER: u32 = 2;

/// Starts or resets a session's TTL timer (create and renew, on the leader).
pub fn reset_session_timer(server: &Server, id: &str, ttl: std::time::Duration) {
    let deadline = server.clock().now() + ttl * SESSION_TTL_MULTIPLIER;
    server.session_timers.lock().expect("session timers").insert(id.to_string(), deadline);
}

/// The leader's session reaper: destroys sessions whose TTL (times two) ran out without a renew.
/// The decision is taken here, from the clock, and proposed as a `SessionDestroy`; the state
/// machine never reads a clock. On gaining leadership every session gets a fresh full timer, as
/// Consul does, since the previous leader's timers are not replicated.
pub async fn session_reaper(server: std::sync::Weak<Server>) {
    let mut was_leader = false;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let Some(server) = server.upgrade() else { return };
        if !server.is_leader() {
            if was_leader {
                server.session_timers.lock().expect("session timers").clear();
            }
            was_leader = false;
            continue;
        }
        was_leader = true;
        let st = server.store().snapshot();
        let now = server.clock().now();
        let mut expired = Vec::new();
        {
            let mut timers = server.session_timers.lock().expect("session timers");
            timers.retain(|id, _| st.sessions.contains_key(id));
            for s in st.sessions.values() {
                let Ok(ttl) = cairn_types::duration::parse(&s.ttl) else { continue };
                if ttl.is_zero() {
                    continue;
                }
                let deadline = *timers.entry(s.id.clone()).or_insert(now + ttl * SESSION_TTL_MULTIPLIER);
                if deadline <= now {
                    expired.push(s.id.clone());
                }
            }
        }
        for id in expired {
            tracing::debug!(target: "cluster.leader", session = %id, "session TTL expired; invalidating");
            match server.apply(Command::SessionDestroy(id.clone())).await {
                Ok(_) => {
                    server.session_timers.lock().expect("session timers").remove(&id);
                }
                Err(e) => {
                    tracing::warn!(target: "cluster.leader", session = %id, error = %e, "failed to invalidate expired session")
                }
            }
        }
    }
}

/// Marks a failed member's `serfHealth` critical (its other checks are left alone). A node the
/// catalog does not have is ignored, as Consul does.
pub async fn reconcile_failed(server: &Server, node: &str, address: &str, datacenter: &str) -> Result<(), Error> {
    let st = server.store().snapshot();
    if st.node(node).is_none() {
        return Ok(());
    }
    let critical = st
        .checks
        .get(&(node.to_string(), SERF_CHECK_ID.to_string()))
        .is_some_and(|c| c.status == cairn_types::structs::HEALTH_CRITICAL);
    if critical && st.node(node).is_some_and(|n| n.address == address) {
        return Ok(());
    }
    let check = HealthCheck {
        node: node.to_string(),
        check_id: SERF_CHECK_ID.into(),
        name: SERF_CHECK_NAME.into(),
        status: cairn_types::structs::HEALTH_CRITICAL.into(),
        output: "Agent not live or unreachable".into(),
        definition: serde_json::json!({}),
        ..Default::default()
    };
    let req = RegisterRequest {
        datacenter: datacenter.to_string(),
        node: node.to_string(),
        address: address.to_string(),
        skip_node_update: true,
        check: Some(check),
        ..Default::default()
    };
    match server.apply(Command::Register(req)).await?.result {
        CommandResult::Error(e) => Err(Error::Rejected(e)),
        _ => Ok(()),
    }
}

/// Deregisters a node that left or was reaped (all its services and checks).
pub async fn deregister_member(server: &Server, node: &str, datacenter: &str) -> Result<(), Error> {
    if server.store().snapshot().node(node).is_none() {
        return Ok(());
    }
    let req = cairn_types::structs::DeregisterRequest {
        datacenter: datacenter.to_string(),
        node: node.to_string(),
        ..Default::default()
    };
    match server.apply(Command::Deregister(req)).await?.result {
        CommandResult::Error(e) => Err(Error::Rejected(e)),
        _ => Ok(()),
    }
}

/// Catalog nodes carrying a `serfHealth` check that are not pool members (compared without case):
/// they were reaped while no leader was watching, and are deregistered.
pub fn reaped_nodes(server: &Server, members: &[String], self_name: &str) -> Vec<String> {
    let st = server.store().snapshot();
    let known: std::collections::HashSet<String> = members.iter().map(|m| m.to_lowercase()).collect();
    let mut out: Vec<String> = st
        .checks
        .iter()
        .filter(|((_, id), _)| id == SERF_CHECK_ID)
        .map(|((node, _), _)| node.clone())
        .filter(|n| !known.contains(&n.to_lowercase()) && n != self_name)
        .collect();
    out.dedup();
    out
}

/// The leader's reconciliation of the LAN pool into the catalog (docs/consul-facts/gossip.md §7):
/// alive members registered with a passing `serfHealth`, failed ones marked critical, members
/// that left and nodes no longer in the pool deregistered. Non-Consul members are skipped.
pub async fn reconcile_pool(
    server: &Server,
    members: &[cairn_gossip::serf::Member],
    dc: &str,
    self_name: &str,
) -> Result<(), Error> {
    use cairn_gossip::serf::MemberStatus;
    for m in members {
        if !crate::gossip::is_consul_member(m, dc) {
            tracing::trace!(target: "cluster.leader", member = %m.name, "skipping reconcile of node");
            continue;
        }
        let address = m.addr.ip().to_string();
        match m.status {
            MemberStatus::Alive => {
                let server_port = (m.tags.get("role") == Some("consul"))
                    .then(|| m.tags.get("port").and_then(|p| p.parse().ok()))
                    .flatten();
                let member = Member {
                    node: m.name.clone(),
                    node_id: m.tags.get("id").unwrap_or_default().to_string(),
                    address,
                    datacenter: dc.to_string(),
                    server_port,
                };
                reconcile_alive(server, &member).await?;
            }
            MemberStatus::Failed => {
                tracing::info!(target: "cluster.leader", member = %m.name, "member failed, marking health critical");
                reconcile_failed(server, &m.name, &address, dc).await?;
            }
            MemberStatus::Left if m.name != self_name => {
                tracing::info!(target: "cluster.leader", member = %m.name, reason = "left", "deregistering member");
                deregister_member(server, &m.name, dc).await?;
            }
            _ => {}
        }
    }
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    for node in reaped_nodes(server, &names, self_name) {
        tracing::info!(target: "cluster.leader", member = %node, reason = "reaped", "deregistering member");
        deregister_member(server, &node, dc).await?;
    }
    Ok(())
}
