//! Leader duties, in one runner ([`run`]) that starts them when this server gains leadership and
//! stops them when it loses it:
//! - reconciling the LAN pool into the catalog ([`reconcile_pool`]): every member gets a node entry
//!   with a `serfHealth` check reflecting its gossip status, and every server a `consul` service;
//! - the servers of the LAN pool into Raft ([`Server::reconcile_servers`], with autopilot's
//!   promotion and dead-server cleanup);
//! - network coordinates this server measured, into the catalog;
//! - session TTLs ([`reap_sessions`]) and KV tombstones ([`reap_tombstones`]).
//!
//! On every server, leader or not, the runner also tries to bootstrap the cluster from the LAN
//! pool (`-bootstrap-expect`).

use std::sync::Weak;

use openraft::async_runtime::watch::WatchReceiver as _;
use std::time::Duration;

use cairn_types::coordinate::CoordinateEntry;
use cairn_types::structs::{HealthCheck, NodeService, RegisterRequest, HEALTH_PASSING, SERF_CHECK_ID, SERF_CHECK_NAME};
use cairn_types::{Command, CommandResult};

use crate::error::Error;
use crate::gossip::Pool;
use crate::server::Server;

/// What the runner needs of the agent: itself as a member, and its LAN pool (none when the agent
/// runs without one, `ports.serf_lan = -1`).
#[derive(Clone)]
pub struct Lan {
    pub pool: Option<Pool>,
    pub me: Member,
}

/// How often the leader reconciles even without a membership change (Consul's
/// `ReconcileInterval` is 60 s; a shorter pass keeps tombstone reaping near Consul's 15 s TTL).
pub const RECONCILE_TICK: Duration = Duration::from_secs(15);
/// How often the leader looks for expired sessions.
pub const SESSION_TICK: Duration = Duration::from_millis(100);

/// The leader runner: waits for leadership, runs the leader's duties while it lasts, and stops
/// them when it is lost (or the server stops).
pub async fn run(server: Weak<Server>) {
    let Some(mut stop) = server.upgrade().map(|s| s.stop_signal()) else { return };
    loop {
        // Not leading: watch the pool for a bootstrap, and the time leadership comes.
        let mut changes = None;
        let mut raft = match server.upgrade() {
            Some(s) => s.raft_metrics(),
            None => return,
        };
        let mut pool_changed = true;
        // Bootstrap is also retried now and then (a peer may not have answered the last probe).
        let mut last_try = tokio::time::Instant::now();
        loop {
            let Some(s) = server.upgrade() else { return };
            if s.is_leader() {
                break;
            }
            if let Some(pool) = s.lan().and_then(|l| l.pool.as_ref()) {
                if changes.is_none() {
                    changes = Some(pool.subscribe_changes());
                    pool_changed = true;
                }
                if last_try.elapsed() >= RECONCILE_TICK {
                    pool_changed = true;
                }
                if pool_changed {
                    last_try = tokio::time::Instant::now();
                    let servers = crate::gossip::server_infos(&pool.members(), &s.config().datacenter);
                    s.set_lan_servers(servers.clone());
                    s.maybe_bootstrap(&servers).await;
                }
            }
            drop(s);
            pool_changed = false;
            let changed = async {
                match changes.as_mut() {
                    Some(c) => c.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = raft.changed() => if r.is_err() { return },
                ok = changed => if ok { pool_changed = true } else { changes = None },
                // The pool may be attached after the runner starts; leadership is also a matter of
                // the lease, which no metrics change announces.
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = crate::rpc::stopped(&mut stop) => return,
            }
        }
        tracing::info!(target: "cluster.leader", "cluster leadership acquired");
        lead(&server, &mut stop).await;
        if let Some(s) = server.upgrade() {
            // The next leader starts every session's timer afresh (timers are not replicated).
            s.session_timers.lock().expect("session timers").clear();
        }
        tracing::info!(target: "cluster.leader", "cluster leadership lost");
        if *stop.borrow() {
            return;
        }
    }
}

/// The leader's duties, until leadership is lost or the server stops.
async fn lead(server: &Weak<Server>, stop: &mut tokio::sync::watch::Receiver<bool>) {
    let subscribe = |s: &Server| s.lan().and_then(|l| l.pool.as_ref()).map(Pool::subscribe_changes);
    let mut changes = server.upgrade().and_then(|s| subscribe(&s));
    let start = tokio::time::Instant::now();
    let mut sessions = tokio::time::interval_at(start + SESSION_TICK, SESSION_TICK);
    sessions.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reconcile = tokio::time::interval_at(start + RECONCILE_TICK, RECONCILE_TICK);
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    // The index seen one reconcile tick ago: tombstones at or below it are older than the tick.
    let mut seen_last_tick = 0u64;
    // Establish: no session timer from an earlier term survives (each session gets a full TTL
    // afresh), and this server and the pool go into the catalog at once.
    if let Some(s) = server.upgrade() {
        s.session_timers.lock().expect("session timers").clear();
        reconcile_lan(&s, true).await;
    }
    loop {
        let changed = async {
            match changes.as_mut() {
                Some(c) => c.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sessions.tick() => {
                let Some(s) = server.upgrade() else { return };
                if !s.is_leader() {
                    return;
                }
                reap_sessions(&s).await;
            }
            ok = changed => {
                if !ok {
                    changes = None;
                }
                let Some(s) = server.upgrade() else { return };
                if !s.is_leader() {
                    return;
                }
                // A membership change: reconcile it now, not at the next tick.
                reconcile_lan(&s, false).await;
            }
            _ = reconcile.tick() => {
                let Some(s) = server.upgrade() else { return };
                if !s.is_leader() {
                    return;
                }
                if changes.is_none() {
                    changes = subscribe(&s);
                }
                ticks += 1;
                reconcile_lan(&s, ticks.is_multiple_of(2)).await;
                if ticks > 1 {
                    if let Err(e) = reap_tombstones(&s, seen_last_tick).await {
                        tracing::warn!(target: "cluster.leader", error = %e, "failed to reap tombstones");
                    }
                }
                seen_last_tick = s.store().snapshot().last_index;
            }
            _ = crate::rpc::stopped(stop) => return,
        }
    }
}

/// One pass over the LAN pool: servers into Raft, members and their coordinates into the catalog,
/// and (with `with_self`) this server itself. The agent runs it once at start, so that a new
/// leader's own registration is there before its API answers.
pub async fn reconcile_lan(server: &Server, with_self: bool) {
    let Some(lan) = server.lan() else { return };
    let dc = server.config().datacenter.clone();
    if with_self {
        if let Err(e) = reconcile_alive(server, &lan.me).await {
            tracing::warn!(target: "cluster.leader", error = %e, "failed to reconcile member into the catalog");
        }
    }
    let mut updates: Vec<CoordinateEntry> = Vec::new();
    let own = lan.pool.as_ref().map_or_else(cairn_types::coordinate::Coordinate::origin, Pool::coordinate);
    if let Some(pool) = &lan.pool {
        let members = pool.members();
        let servers = crate::gossip::server_infos(&members, &dc);
        server.set_lan_servers(servers.clone());
        if let Err(e) = server.reconcile_servers(&servers).await {
            tracing::warn!(target: "cluster.leader", error = %e, "failed to reconcile servers into Raft");
        }
        if let Err(e) = reconcile_pool(server, &members, &dc, &lan.me.node).await {
            tracing::warn!(target: "cluster.leader", error = %e, "failed to reconcile members into the catalog");
        }
        // The coordinates this server measured to the members, where the catalog lacks or differs
        // from them (client agents will send their own once they reach servers by RPC).
        let st = server.store().snapshot();
        updates = pool
            .member_coordinates()
            .into_iter()
            .filter(|(n, _)| *n != lan.me.node)
            .filter(|(n, coord)| st.node(n).is_some() && st.coordinate(n).is_none_or(|x| **x != *coord))
            .map(|(node, coord)| CoordinateEntry { node, segment: String::new(), coord })
            .collect();
    }
    let st = server.store().snapshot();
    if st.node(&lan.me.node).is_some() && st.coordinate(&lan.me.node).is_none_or(|x| **x != own) {
        updates.push(CoordinateEntry { node: lan.me.node.clone(), segment: String::new(), coord: own });
    }
    if !updates.is_empty() {
        if let Err(e) = server.apply_local(Command::CoordinateBatchUpdate(updates)).await {
            tracing::warn!(target: "cluster.leader", error = %e, "failed to update coordinates");
        }
    }
}

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
    match server.apply_local(Command::Register(req)).await?.result {
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
    server.apply_local(Command::ReapTombstones(up_to)).await.map(|_| ())
}

/// Consul lets a session live up to twice its TTL before the leader reaps it.
pub const SESSION_TTL_MULTIPLIER: u32 = 2;

/// Starts or resets a session's TTL timer (create and renew, on the leader).
pub fn reset_session_timer(server: &Server, id: &str, ttl: std::time::Duration) {
    let deadline = server.clock().now() + ttl * SESSION_TTL_MULTIPLIER;
    server.session_timers.lock().expect("session timers").insert(id.to_string(), deadline);
}

/// Destroys sessions whose TTL (times two) ran out without a renew. The decision is taken here,
/// from the clock, and proposed as a `SessionDestroy`; the state machine never reads a clock. A
/// session with no timer yet (every one, on gaining leadership) gets a fresh full timer, as Consul
/// does, since the previous leader's timers are not replicated.
pub async fn reap_sessions(server: &Server) {
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
        match server.apply_local(Command::SessionDestroy(id.clone())).await {
            Ok(_) => {
                server.session_timers.lock().expect("session timers").remove(&id);
            }
            Err(e) => {
                tracing::warn!(target: "cluster.leader", session = %id, error = %e, "failed to invalidate expired session")
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
    match server.apply_local(Command::Register(req)).await?.result {
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
    match server.apply_local(Command::Deregister(req)).await?.result {
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
