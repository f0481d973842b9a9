//! Leader duties. Reconciling members into the catalog: every member of the LAN pool gets a node
//! entry with a `serfHealth` check reflecting its gossip status, and every server a `consul` service.
//! Until the gossip pool lands the only member a server knows is itself.

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
