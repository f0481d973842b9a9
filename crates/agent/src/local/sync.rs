//! Anti-entropy: makes the catalog's view of this node match the agent's local state. Runs on every
//! local change and periodically (Consul: about a minute, plus jitter), compares local services and
//! checks with the catalog and sends only the differences, as one Raft entry.
//!
//! Catalog entries on this node that the agent does not own are removed, except the ones the leader
//! owns: the `serfHealth` check and the `consul` service of servers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_types::rpc::{QueryOptions, ReadRequest, ReadResponse, WriteOptions, WriteRequest, WriteResult};
use cairn_types::structs::{DeregisterRequest, HealthCheck, Node, NodeService, RegisterRequest, SERF_CHECK_ID};
use cairn_types::{Command, CommandResult};

use crate::Agent;

/// The periodic full sync interval (before jitter).
const FULL_SYNC: Duration = Duration::from_secs(60);

pub async fn run(agent: Arc<Agent>) {
    let mut shutdown = agent.shutdown_rx();
    let mut backoff = Duration::from_millis(100);
    loop {
        match sync_once(&agent).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(target: "agent.anti_entropy", error = %e, "failed to sync local state with the catalog; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        }
        let jitter = Duration::from_millis(rand::random::<u64>() % 15_000);
        tokio::select! {
            _ = agent.local.changed.notified() => {}
            _ = tokio::time::sleep(FULL_SYNC + jitter) => {}
            _ = shutdown.changed() => return,
        }
    }
}

fn same_service(a: &NodeService, b: &NodeService) -> bool {
    let mut a = a.clone();
    a.create_index = b.create_index;
    a.modify_index = b.modify_index;
    a == *b
}

fn same_check(a: &HealthCheck, b: &HealthCheck) -> bool {
    let mut a = a.clone();
    a.create_index = b.create_index;
    a.modify_index = b.modify_index;
    a.service_name = b.service_name.clone();
    a.service_tags = b.service_tags.clone();
    a == *b
}

/// One pass. Public so tests and `/v1/agent/reload` can force it.
pub async fn sync_once(agent: &Agent) -> Result<(), String> {
    let cfg = agent.config();
    let node = cfg.node_name.clone();
    let rpc = agent.rpc().map_err(|e| e.to_string())?;
    // What the catalog holds for this node, as Consul's agent asks for it (Catalog.NodeServices
    // and Health.NodeChecks, default consistency).
    let q =
        QueryOptions { source: cairn_types::rpc::QuerySource { node: node.clone(), ip: None }, ..Default::default() };
    let (_, found) = rpc
        .read(ReadRequest::CatalogNodeServices { node: node.clone() }, q.clone())
        .await
        .map_err(|e| e.to_string())?;
    let ReadResponse::NodeServices(found) = found else {
        return Err("unexpected answer to Catalog.NodeServices".into());
    };
    let (_, checks) =
        rpc.read(ReadRequest::HealthNodeChecks { node: node.clone() }, q).await.map_err(|e| e.to_string())?;
    let ReadResponse::Checks(checks) = checks else { return Err("unexpected answer to Health.NodeChecks".into()) };
    let (remote_node, remote_services) = match found {
        Some((n, svcs)) => (Some(n), svcs),
        None => (None, Vec::new()),
    };
    let want_node = Node {
        id: cfg.node_id.clone(),
        node: node.clone(),
        address: cfg.advertise_addr.to_string(),
        datacenter: cfg.datacenter.clone(),
        tagged_addresses: agent.tagged_addresses(),
        meta: cfg.node_meta.clone(),
        create_index: 0,
        modify_index: 0,
    };
    let node_ok = remote_node
        .map(|n| {
            n.id == want_node.id
                && n.address == want_node.address
                && n.tagged_addresses == want_node.tagged_addresses
                && n.meta == want_node.meta
                && n.datacenter == want_node.datacenter
        })
        .unwrap_or(false);
    let base = RegisterRequest {
        datacenter: cfg.datacenter.clone(),
        id: cfg.node_id.clone(),
        node: node.clone(),
        address: want_node.address.clone(),
        tagged_addresses: want_node.tagged_addresses.clone(),
        node_meta: want_node.meta.clone(),
        skip_node_update: true,
        ..Default::default()
    };
    let mut cmds = Vec::new();
    if !node_ok {
        cmds.push(Command::Register(RegisterRequest { skip_node_update: false, ..base.clone() }));
    }
    let local_services = agent.local.services();
    let local_checks = agent.local.checks();
    let remote_services: BTreeMap<String, Arc<NodeService>> =
        remote_services.into_iter().map(|s| (s.id.clone(), s)).collect();
    let remote_checks: BTreeMap<String, Arc<HealthCheck>> =
        checks.into_iter().map(|c| (c.check_id.clone(), c)).collect();
    for id in remote_services.keys() {
        let leader_owned = id == "consul" && cfg.server;
        if !local_services.contains_key(id) && !leader_owned {
            cmds.push(Command::Deregister(DeregisterRequest {
                node: node.clone(),
                service_id: id.clone(),
                ..Default::default()
            }));
        }
    }
    for id in remote_checks.keys() {
        if !local_checks.contains_key(id) && id != SERF_CHECK_ID {
            // A check of a service removed above goes with it; deregistering it again is harmless.
            cmds.push(Command::Deregister(DeregisterRequest {
                node: node.clone(),
                check_id: id.clone(),
                ..Default::default()
            }));
        }
    }
    for (id, s) in &local_services {
        if remote_services.get(id).map(|r| same_service(s, r)) != Some(true) {
            cmds.push(Command::Register(RegisterRequest { service: Some(s.clone()), ..base.clone() }));
        }
    }
    for (id, c) in &local_checks {
        if remote_checks.get(id).map(|r| same_check(&c.check, r)) != Some(true) {
            let mut check = c.check.clone();
            check.node = node.clone();
            cmds.push(Command::Register(RegisterRequest { check: Some(check), ..base.clone() }));
        }
    }
    if cmds.is_empty() {
        return Ok(());
    }
    let n = cmds.len();
    let opts = WriteOptions { datacenter: cfg.datacenter.clone(), token: String::new() };
    let applied = rpc.write(WriteRequest::CatalogSync(cmds), opts).await.map_err(|e| e.to_string())?;
    if let WriteResult::Result(CommandResult::Error(e)) = applied.result {
        return Err(e.to_string());
    }
    tracing::debug!(target: "agent.anti_entropy", changes = n, index = applied.index, "synced local state");
    Ok(())
}
