//! Consul's use of the gossip pools (docs/consul-facts/gossip.md): the LAN pool every agent of a
//! datacenter is in, and the WAN pool of the servers of all datacenters (members `<node>.<dc>`).
//! Consul's member tags, its timings, user events as `consul:event:<name>`, keyring files in
//! `data_dir/serf/`, retry-join.
//!
//! What rides on the pools: [`user_events`], each agent's buffer of the user events it accepted.

pub mod consul_event;
pub mod user_events;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use cairn_gossip::coordinate::Coordinate as GossipCoordinate;
use cairn_gossip::driver::{self, DriverConfig, Handle, KeyResult};
use cairn_gossip::keyring::Keyring;
use cairn_gossip::memberlist;
use cairn_gossip::serf::{self, Event, KeyOp, Member};
use cairn_types::coordinate::Coordinate;
use cairn_types::structs::UserEvent;
use tokio::sync::{mpsc, watch};

/// Consul's RPC protocol tags.
pub const CONSUL_VSN: &str = "2";
pub const CONSUL_VSN_MIN: &str = "2";
pub const CONSUL_VSN_MAX: &str = "3";
pub const RAFT_VSN: &str = "3";

/// One pool's timings, as `gossip_lan { }` / `gossip_wan { }` set them.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    pub gossip_nodes: usize,
    pub gossip_interval: Duration,
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    pub retransmit_mult: u32,
    pub suspicion_mult: u32,
}

impl Timing {
    pub fn lan() -> Timing {
        let m = memberlist::Config::lan("", "0.0.0.0:0".parse().expect("addr"));
        Timing::of(&m)
    }
    /// Consul's WAN defaults. Quirk kept: Consul copies the LAN `gossip_nodes` (3) into the WAN
    /// pool, though memberlist's WAN profile says 4.
    pub fn wan() -> Timing {
        let m = memberlist::Config::wan("", "0.0.0.0:0".parse().expect("addr"));
        Timing { gossip_nodes: 3, ..Timing::of(&m) }
    }
    /// What `-dev` uses for both pools.
    pub fn dev() -> Timing {
        Timing {
            gossip_nodes: 3,
            gossip_interval: Duration::from_millis(100),
            probe_interval: Duration::from_millis(100),
            probe_timeout: Duration::from_millis(100),
            retransmit_mult: 4,
            suspicion_mult: 3,
        }
    }
    fn of(m: &memberlist::Config) -> Timing {
        Timing {
            gossip_nodes: m.gossip_nodes,
            gossip_interval: m.gossip_interval,
            probe_interval: m.probe_interval,
            probe_timeout: m.probe_timeout,
            retransmit_mult: m.retransmit_mult,
            suspicion_mult: m.suspicion_mult,
        }
    }
}

/// The tag a client advertises its own reconnect timeout in (Go duration text).
pub const RECONNECT_TIMEOUT_TAG: &str = "rc_tm";

/// Consul's reconnect override: a member's `rc_tm` replaces the pool's timeout for it (for a failed
/// member and, as in Serf, for the tombstone of a left one). Unbounded, as Consul leaves it; a
/// malformed or zero value means the pool's own.
fn reconnect_override(m: &serf::Member, timeout: Duration) -> Duration {
    let Some(v) = m.tags.get(RECONNECT_TIMEOUT_TAG) else { return timeout };
    match cairn_types::duration::parse(v) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => timeout,
        Err(_) => {
            tracing::warn!(target: "agent.serf", member = %m.name, rc_tm = %v, "Member is advertising a malformed reconnect timeout");
            timeout
        }
    }
}

/// What an agent tells a pool about itself.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub wan: bool,
    pub node_name: String,
    pub node_id: String,
    pub datacenter: String,
    pub server: bool,
    pub server_port: u16,
    pub bootstrap: bool,
    pub bootstrap_expect: i64,
    /// The serf WAN port, advertised in the LAN tags of servers (`wan_join_port`).
    pub wan_join_port: Option<u16>,
    pub bind: SocketAddr,
    pub advertise: SocketAddr,
    pub timing: Timing,
    pub keyring: Option<Keyring>,
    /// Where the keyring is kept (`data_dir/serf/local.keyring`); `None` keeps it in memory.
    pub keyring_file: Option<PathBuf>,
    pub verify_incoming: bool,
    pub verify_outgoing: bool,
    pub reconnect_timeout: Duration,
    /// A client's `advertise_reconnect_timeout` (zero: unset), advertised as `rc_tm`.
    pub advertise_reconnect_timeout: Duration,
    pub build: String,
    /// Serf's snapshot (`data_dir/serf/local.snapshot`), so a restart rejoins what it knew.
    pub snapshot_path: Option<PathBuf>,
    pub rejoin_after_leave: bool,
}

impl PoolConfig {
    /// The name in this pool: `<node>.<dc>` in the WAN pool.
    pub fn member_name(&self) -> String {
        if self.wan {
            format!("{}.{}", self.node_name, self.datacenter)
        } else {
            self.node_name.clone()
        }
    }

    /// Consul's member tags (§1).
    pub fn tags(&self) -> BTreeMap<String, String> {
        let mut t = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            t.insert(k.to_string(), v.to_string());
        };
        put("role", if self.server { "consul" } else { "node" });
        put("dc", &self.datacenter);
        put("segment", "");
        put("id", &self.node_id);
        put("vsn", CONSUL_VSN);
        put("vsn_min", CONSUL_VSN_MIN);
        put("vsn_max", CONSUL_VSN_MAX);
        put("build", &self.build);
        if self.server {
            put("port", &self.server_port.to_string());
            put("raft_vsn", RAFT_VSN);
            put("acls", "0");
            put("ft_fs", "1");
            put("ft_si", "1");
            if self.bootstrap {
                put("bootstrap", "1");
            } else if self.bootstrap_expect > 0 {
                put("expect", &self.bootstrap_expect.to_string());
            }
            if let (false, Some(p)) = (self.wan, self.wan_join_port) {
                put("wan_join_port", &p.to_string());
            }
        } else if !self.advertise_reconnect_timeout.is_zero() {
            put(RECONNECT_TIMEOUT_TAG, &cairn_types::duration::format(self.advertise_reconnect_timeout));
        }
        t
    }

    fn driver_config(&self) -> DriverConfig {
        let base = if self.wan {
            memberlist::Config::wan(&self.member_name(), self.advertise)
        } else {
            memberlist::Config::lan(&self.member_name(), self.advertise)
        };
        let ml = memberlist::Config {
            gossip_nodes: self.timing.gossip_nodes,
            gossip_interval: self.timing.gossip_interval,
            probe_interval: self.timing.probe_interval,
            probe_timeout: self.timing.probe_timeout,
            retransmit_mult: self.timing.retransmit_mult,
            suspicion_mult: self.timing.suspicion_mult,
            gossip_verify_incoming: self.verify_incoming,
            gossip_verify_outgoing: self.verify_outgoing,
            // Consul: a dead node's name may be taken by a new address after 30 s.
            dead_node_reclaim_time: Duration::from_secs(30),
            // Consul speaks Serf protocol 4 (memberlist 2).
            delegate_protocol: [2, 5, 4],
            ..base
        };
        let mut s = serf::Config::new(ml);
        s.tags = self.tags();
        s.reconnect_timeout = self.reconnect_timeout;
        s.reconnect_timeout_override = Some(reconnect_override);
        // Consul turns Serf's name-conflict resolution off and keeps deeper queues.
        s.enable_name_conflict_resolution = false;
        DriverConfig {
            serf: s,
            bind: self.bind,
            keyring: self.keyring.clone(),
            broadcast_timeout: Duration::from_secs(5),
            // Consul's LeavePropagateDelay is 3 s; the linger only needs to outlast a few gossip
            // rounds, so it is scaled by the pool's gossip interval (3 s at production timings).
            leave_propagate_delay: (self.timing.gossip_interval * 15).min(Duration::from_secs(3)),
            snapshot_path: self.snapshot_path.clone(),
            rejoin_after_leave: self.rejoin_after_leave,
        }
    }
}

/// Reads a keyring file: a JSON array of base64 keys, the primary first.
pub fn read_keyring_file(path: &Path) -> Result<Option<Keyring>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let keys: Vec<String> = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if keys.is_empty() {
        return Err(format!("no keys present in keyring: {}", path.display()));
    }
    let decoded = keys
        .iter()
        .map(|k| base64::engine::general_purpose::STANDARD.decode(k).map_err(|e| format!("Invalid key: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Keyring::new(&decoded[0], &decoded[1..]).map(Some).map_err(|e| format!("Invalid key: {e}"))
}

/// Writes a keyring file (mode 0600, directory 0700), primary first.
pub fn write_keyring_file(path: &Path, ring: &Keyring) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| e.to_string())?;
    }
    let keys: Vec<String> = ring.keys().map(|k| base64::engine::general_purpose::STANDARD.encode(k)).collect();
    let text = serde_json::to_string_pretty(&keys).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| e.to_string())?;
        f.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())?;
    }
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}

/// A running pool with Consul's meaning.
#[derive(Clone)]
pub struct Pool {
    pub handle: Handle,
    pub wan: bool,
    members: Arc<RwLock<Vec<Member>>>,
    coordinate: Arc<RwLock<(GossipCoordinate, BTreeMap<String, GossipCoordinate>)>>,
    /// Bumped on every membership change (the leader's reconciler waits on it).
    changes: watch::Sender<u64>,
    port: u16,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("wan", &self.wan).field("addr", &self.handle.local_addr).finish()
    }
}

/// Receives the user events the pool delivers.
pub type EventSink = Arc<dyn Fn(UserEvent) + Send + Sync>;

impl Pool {
    /// Binds and starts the pool. `on_event` gets every Consul user event that arrives.
    pub async fn start(cfg: PoolConfig, on_event: Option<EventSink>) -> std::io::Result<Pool> {
        let dcfg = cfg.driver_config();
        let (handle, events) = driver::start(dcfg).await?;
        let port = handle.local_addr.port();
        let members = Arc::new(RwLock::new(handle.members().await.unwrap_or_default()));
        let pool = Pool {
            handle,
            wan: cfg.wan,
            members,
            coordinate: Arc::new(RwLock::new((GossipCoordinate::origin(), BTreeMap::new()))),
            changes: watch::channel(0).0,
            port,
        };
        tokio::spawn(pool.clone().consume(events, on_event, cfg.keyring_file.clone()));
        let which = if cfg.wan { "WAN" } else { "LAN" };
        tracing::info!(target: "agent.serf", pool = which, addr = %pool.handle.local_addr, name = %cfg.member_name(), "gossip pool listening");
        Ok(pool)
    }

    async fn consume(
        self,
        mut events: mpsc::Receiver<Event>,
        on_event: Option<EventSink>,
        keyring_file: Option<PathBuf>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                e = events.recv() => {
                    let Some(e) = e else { return };
                    // A burst of member events (a join's push/pull brings hundreds) refreshes the
                    // member list once, not once per event.
                    let mut changed = self.handle_event(e, on_event.as_ref(), keyring_file.as_deref()).await;
                    while let Ok(e) = events.try_recv() {
                        changed |= self.handle_event(e, on_event.as_ref(), keyring_file.as_deref()).await;
                    }
                    if changed {
                        self.refresh_members().await;
                    }
                }
                _ = tick.tick() => {
                    if let Ok(c) = self.handle.coordinates().await {
                        let cache = c.1.into_iter().collect();
                        *self.coordinate.write().expect("coordinate") = (c.0, cache);
                    }
                    if events.is_closed() {
                        return;
                    }
                }
            }
        }
    }

    /// Acts on one event; true when the member list changed.
    async fn handle_event(&self, e: Event, on_event: Option<&EventSink>, keyring_file: Option<&Path>) -> bool {
        match e {
            Event::MemberJoin(_)
            | Event::MemberLeave(_)
            | Event::MemberFailed(_)
            | Event::MemberUpdate(_)
            | Event::MemberReap(_) => return true,
            Event::User { ltime, name, payload, .. } => {
                let Some(short) = name.strip_prefix(consul_event::PREFIX) else { return false };
                match consul_event::decode(&payload, ltime) {
                    Ok(ev) if ev.name == short => {
                        if let Some(sink) = on_event {
                            sink(ev);
                        }
                    }
                    Ok(_) | Err(_) => tracing::warn!(target: "agent", event = %name, "dropping a malformed user event"),
                }
            }
            Event::KeyringChanged => {
                if let (Some(path), Ok(Some(ring))) = (keyring_file, self.handle.keyring().await) {
                    if let Err(e) = write_keyring_file(path, &ring) {
                        tracing::error!(target: "agent.serf", error = %e, "failed to write the keyring file");
                    }
                }
            }
            Event::Shutdown(why) => tracing::error!(target: "agent.serf", "{why}"),
            // Consul answers no user queries: Serf's ack is all a querier gets.
            Event::Query(_) => {}
            Event::QueryAck { .. } | Event::QueryResponse { .. } | Event::QueryDone { .. } => {}
        }
        false
    }

    async fn refresh_members(&self) {
        if let Ok(ms) = self.handle.members().await {
            *self.members.write().expect("members") = ms;
            self.changes.send_modify(|g| *g += 1);
        }
    }

    /// The members as last seen (sorted by name).
    pub fn members(&self) -> Vec<Member> {
        self.members.read().expect("members").clone()
    }

    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Our Vivaldi coordinate, in the catalog's shape.
    pub fn coordinate(&self) -> Coordinate {
        to_catalog(&self.coordinate.read().expect("coordinate").0)
    }

    /// The last coordinate heard from each member.
    pub fn member_coordinates(&self) -> BTreeMap<String, Coordinate> {
        self.coordinate.read().expect("coordinate").1.iter().map(|(k, v)| (k.clone(), to_catalog(v))).collect()
    }

    /// The estimated round trip from us to `member`, in seconds, from Vivaldi coordinates.
    pub fn rtt_to(&self, member: &str) -> Option<f64> {
        let c = self.coordinate.read().expect("coordinate");
        c.1.get(member).map(|other| c.0.distance_to(other))
    }

    /// Joins through `addrs` (`host` or `host:port`, the pool's port by default). Returns how many
    /// addresses answered, or Consul's error text.
    pub async fn join(&self, addrs: &[String]) -> Result<usize, String> {
        let mut resolved = Vec::new();
        let mut errors = Vec::new();
        for a in addrs {
            match resolve(a, self.port).await {
                Ok(s) => resolved.push(s),
                Err(e) => errors.push(e),
            }
        }
        let which = if self.wan { "WAN" } else { "LAN" };
        tracing::info!(target: "agent", "({which}) joining: addresses={addrs:?}");
        let r = if resolved.is_empty() { Err(String::new()) } else { self.handle.join(resolved, true).await };
        let r = match r {
            Ok(n) => Ok(n),
            Err(e) => {
                if !e.is_empty() {
                    errors.extend(e.split("; ").map(str::to_string));
                }
                let mut msg = format!("{} error{} occurred:\n", errors.len(), if errors.len() == 1 { "" } else { "s" });
                for e in &errors {
                    msg.push_str(&format!("\t* {e}\n"));
                }
                msg.push('\n');
                Err(msg)
            }
        };
        match &r {
            Ok(n) => tracing::info!(target: "agent", "({which}) joined: number_of_nodes={n}"),
            Err(e) => tracing::warn!(target: "agent", "({which}) couldn't join: number_of_nodes=0 error={e:?}"),
        }
        self.refresh_members().await;
        r
    }

    pub async fn leave(&self) -> Result<(), String> {
        self.handle.leave().await
    }

    pub async fn force_leave(&self, node: &str, prune: bool) -> Result<(), String> {
        let r = self.handle.force_leave(node, prune).await;
        self.refresh_members().await;
        r
    }

    /// Sends a Consul user event to the pool (Serf delivers it to us too).
    pub async fn fire(&self, ev: &UserEvent) -> Result<(), String> {
        let name = format!("{}{}", consul_event::PREFIX, ev.name);
        self.handle
            .user_event(&name, consul_event::encode(ev), false)
            .await
            .map_err(|e| format!("error broadcasting event: {e}"))
    }

    pub async fn key_op(&self, op: KeyOp, key: Option<Vec<u8>>, relay_factor: u8) -> Result<KeyResult, String> {
        self.handle.key_op(op, key, relay_factor).await
    }

    pub async fn shutdown(&self) {
        self.handle.shutdown().await;
    }
}

fn to_catalog(c: &GossipCoordinate) -> Coordinate {
    Coordinate { vec: c.vec.clone(), error: c.error, adjustment: c.adjustment, height: c.height }
}

/// `host`, `host:port`, `[v6]:port`, or an IP: to a socket address (default port `port`).
pub async fn resolve(a: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(s) = a.parse::<SocketAddr>() {
        return Ok(s);
    }
    if let Ok(ip) = a.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let with_port = if a.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        a.to_string()
    } else {
        format!("{a}:{port}")
    };
    let mut found = tokio::net::lookup_host(with_port).await.map_err(|e| format!("Failed to resolve {a}: {e}"))?;
    found.next().ok_or_else(|| format!("Failed to resolve {a}: no addresses"))
}

/// The datacenters of the WAN pool, nearest first (Consul's `/v1/catalog/datacenters`): for each
/// datacenter the median estimated round trip to its servers (the local one counts 0, one with no
/// coordinate +inf), names sorted first so that ties go by name. Left servers and non-servers are
/// skipped.
pub fn datacenters_by_distance(wan: &Pool, local_dc: &str) -> Vec<String> {
    let mut by_dc: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for m in wan.members() {
        if m.tags.get("role") != Some("consul") || m.status == serf::MemberStatus::Left {
            continue;
        }
        let Some(dc) = m.tags.get("dc") else { continue };
        let rtt = if dc == local_dc { 0.0 } else { wan.rtt_to(&m.name).unwrap_or(f64::INFINITY) };
        by_dc.entry(dc.to_string()).or_default().push(rtt);
    }
    let mut dcs: Vec<(String, f64)> = by_dc
        .into_iter()
        .map(|(dc, mut v)| {
            v.sort_by(|a, b| a.total_cmp(b));
            let median = v[v.len() / 2];
            (dc, median)
        })
        .collect();
    dcs.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut out: Vec<String> = dcs.into_iter().map(|(d, _)| d).collect();
    if out.is_empty() {
        out.push(local_dc.to_string());
    }
    out
}

/// Whether a member is one Consul reconciles: a client of our DC, or a server of our DC (with the
/// tags that make it one).
pub fn is_consul_member(m: &Member, dc: &str) -> bool {
    let t = |k: &str| m.tags.get(k);
    if t("dc") != Some(dc) {
        return false;
    }
    match t("role") {
        Some("node") => true,
        Some("consul") => {
            t("port").and_then(|p| p.parse::<u16>().ok()).is_some() && t("vsn").is_some() && t("build").is_some()
        }
        _ => false,
    }
}

/// The servers of datacenter `dc` in the LAN pool, as Raft formation and reconciliation see them.
pub fn server_infos(members: &[Member], dc: &str) -> Vec<crate::ServerInfo> {
    members
        .iter()
        .filter(|m| m.tags.get("role") == Some("consul") && is_consul_member(m, dc))
        .filter_map(|m| {
            let port: u16 = m.tags.get("port")?.parse().ok()?;
            let node_id = m.tags.get("id").unwrap_or("").to_string();
            Some(crate::ServerInfo {
                name: m.name.clone(),
                raft_id: crate::raft_id(&node_id),
                node_id,
                rpc_addr: SocketAddr::new(m.addr.ip(), port).to_string(),
                expect: m.tags.get("expect").and_then(|e| e.parse().ok()).unwrap_or(0),
                bootstrap: m.tags.get("bootstrap") == Some("1"),
                raft_vsn: m.tags.get("raft_vsn").unwrap_or("").to_string(),
                alive: m.status == serf::MemberStatus::Alive,
                left: m.status == serf::MemberStatus::Left,
                status: match m.status {
                    serf::MemberStatus::Alive => "alive",
                    serf::MemberStatus::Leaving => "leaving",
                    serf::MemberStatus::Left => "left",
                    serf::MemberStatus::Failed => "failed",
                    _ => "none",
                }
                .to_string(),
                version: m.tags.get("build").unwrap_or("").split(':').next().unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// Consul's flood interval (`SerfFloodInterval`): how often a server checks, besides on every LAN
/// member change, that each server of its datacenter is in the WAN pool.
pub const FLOOD_INTERVAL: Duration = Duration::from_secs(60);

/// The LAN servers of datacenter `dc` missing from the WAN pool, and where to join them: the
/// member's LAN address with its `wan_join_port` tag, as Consul's flood join computes it. WAN members
/// count only when alive (named `<node>.<dc>`).
pub fn flood_targets(lan: &[Member], wan: &[Member], dc: &str) -> Vec<(String, SocketAddr)> {
    let suffix = format!(".{dc}");
    let in_wan: std::collections::BTreeSet<&str> = wan
        .iter()
        .filter(|m| m.status == serf::MemberStatus::Alive && m.tags.get("role") == Some("consul"))
        .filter(|m| m.tags.get("dc") == Some(dc))
        .filter_map(|m| m.name.strip_suffix(&suffix))
        .collect();
    lan.iter()
        .filter(|m| m.status == serf::MemberStatus::Alive && m.tags.get("role") == Some("consul"))
        .filter(|m| is_consul_member(m, dc) && m.tags.get("segment").unwrap_or("").is_empty())
        .filter(|m| !in_wan.contains(m.name.as_str()))
        .filter_map(|m| {
            let port = m.tags.get("wan_join_port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0);
            match port {
                Some(p) => Some((format!("{}{suffix}", m.name), SocketAddr::new(m.addr.ip(), p))),
                None => {
                    tracing::debug!(target: "agent.server", server = %m.name, "Failed to flood-join server: no wan join port");
                    None
                }
            }
        })
        .collect()
}

/// Runs Consul's flood join on a server until `stop`: on every LAN member change and every
/// [`FLOOD_INTERVAL`], joins the servers of its datacenter that the WAN pool lacks, so a server
/// that joined only the LAN is in the WAN pool too.
pub async fn flood(lan: Pool, wan: Pool, dc: String, mut stop: watch::Receiver<bool>) {
    let mut changes = lan.subscribe_changes();
    let mut tick = tokio::time::interval(FLOOD_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = changes.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        for (name, addr) in flood_targets(&lan.members(), &wan.members(), &dc) {
            match wan.handle.join(vec![addr], true).await {
                Ok(n) if n > 0 => {
                    tracing::debug!(target: "agent.server", server = %name, address = %addr, "Successfully performed flood-join for server at address");
                    wan.refresh_members().await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(target: "agent.server", server = %name, address = %addr, error = %e, "Failed to flood-join server at address")
                }
            }
        }
    }
}

/// Retries joining `addrs` every `interval` until one answers; gives up after `max` attempts
/// (0: never). Returns whether it joined.
pub async fn retry_join(
    pool: Pool,
    addrs: Vec<String>,
    interval: Duration,
    max: u32,
    stop: watch::Receiver<bool>,
) -> bool {
    let which = if pool.wan { "WAN" } else { "LAN" };
    let mut attempt = 0u32;
    let mut stop = stop;
    loop {
        attempt += 1;
        tracing::info!(target: "agent", cluster = which, "Joining cluster...");
        match pool.join(&addrs).await {
            Ok(n) => {
                tracing::info!(target: "agent", cluster = which, num_agents = n, "Join cluster completed. Synced with initial agents");
                return true;
            }
            Err(e) => {
                if max > 0 && attempt >= max {
                    tracing::error!(target: "agent", "max join {which} retry exhausted, exiting");
                    return false;
                }
                tracing::warn!(target: "agent", cluster = which, retry_interval = ?interval, error = %e, "Join cluster failed, will retry");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serf::MemberStatus;

    fn member(name: &str, ip: &str, status: MemberStatus, tags: &[(&str, &str)]) -> Member {
        let tags = tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Member::new(name, SocketAddr::new(ip.parse().unwrap(), 8301), &tags, status)
    }

    fn server(name: &str, ip: &str, dc: &str, wan_port: Option<&str>) -> Member {
        let mut t = vec![("role", "consul"), ("dc", dc), ("port", "8300"), ("vsn", "2"), ("build", "1.22.0")];
        if let Some(p) = wan_port {
            t.push(("wan_join_port", p));
        }
        member(name, ip, MemberStatus::Alive, &t)
    }

    #[test]
    fn flood_joins_the_lan_servers_the_wan_pool_lacks() {
        let lan = vec![
            server("s1", "10.0.0.1", "dc1", Some("8302")),
            server("s2", "10.0.0.2", "dc1", Some("9302")),
            server("s3", "10.0.0.3", "dc1", Some("8302")),
            // no wan_join_port: cannot be flooded
            server("s4", "10.0.0.4", "dc1", None),
            // a failed server is not flooded
            member(
                "s5",
                "10.0.0.5",
                MemberStatus::Failed,
                &[
                    ("role", "consul"),
                    ("dc", "dc1"),
                    ("port", "8300"),
                    ("vsn", "2"),
                    ("build", "x"),
                    ("wan_join_port", "8302"),
                ],
            ),
            // a client is not a server
            member("c1", "10.0.0.9", MemberStatus::Alive, &[("role", "node"), ("dc", "dc1")]),
        ];
        let mut failed_s3 = server("s3.dc1", "10.0.0.3", "dc1", None);
        failed_s3.status = MemberStatus::Failed;
        let wan = vec![
            server("s1.dc1", "10.0.0.1", "dc1", None),
            // a failed WAN member counts as missing
            failed_s3,
            // the same node name in another datacenter is another server
            server("s2.dc2", "10.1.0.2", "dc2", None),
        ];
        let got = flood_targets(&lan, &wan, "dc1");
        assert_eq!(
            got,
            vec![
                ("s2.dc1".to_string(), "10.0.0.2:9302".parse().unwrap()),
                ("s3.dc1".to_string(), "10.0.0.3:8302".parse().unwrap()),
            ]
        );
    }

    #[test]
    fn a_members_rc_tm_replaces_the_reconnect_timeout() {
        let base = Duration::from_secs(72 * 3600);
        let with =
            |v: &str| member("c", "10.0.0.9", MemberStatus::Failed, &[("role", "node"), (RECONNECT_TIMEOUT_TAG, v)]);
        assert_eq!(reconnect_override(&with("15m0s"), base), Duration::from_secs(900));
        assert_eq!(reconnect_override(&with("1h0m0s"), base), Duration::from_secs(3600));
        // zero and malformed values mean the pool's own
        assert_eq!(reconnect_override(&with("0s"), base), base);
        assert_eq!(reconnect_override(&with("soon"), base), base);
        let without = member("c", "10.0.0.9", MemberStatus::Failed, &[("role", "node")]);
        assert_eq!(reconnect_override(&without, base), base);
    }

    #[test]
    fn a_client_advertises_rc_tm_and_a_server_does_not() {
        let mut pc = PoolConfig {
            wan: false,
            node_name: "n".into(),
            node_id: "id".into(),
            datacenter: "dc1".into(),
            server: false,
            server_port: 8300,
            bootstrap: false,
            bootstrap_expect: 0,
            wan_join_port: None,
            bind: "127.0.0.1:8301".parse().unwrap(),
            advertise: "127.0.0.1:8301".parse().unwrap(),
            timing: Timing::lan(),
            keyring: None,
            keyring_file: None,
            verify_incoming: true,
            verify_outgoing: true,
            reconnect_timeout: Duration::from_secs(72 * 3600),
            advertise_reconnect_timeout: Duration::from_secs(900),
            build: "1.22.0".into(),
            snapshot_path: None,
            rejoin_after_leave: false,
        };
        assert_eq!(pc.tags().get(RECONNECT_TIMEOUT_TAG).map(String::as_str), Some("15m0s"));
        pc.advertise_reconnect_timeout = Duration::ZERO;
        assert_eq!(pc.tags().get(RECONNECT_TIMEOUT_TAG), None);
    }
}
