//! The agent: everything a user touches. `Agent::start` is the composition root: it loads the
//! configuration, starts the Raft server (in server mode), the anti-entropy loop, the check runners
//! and the HTTP API, and shuts them all down on one signal.
//!
//! Must not: hold consensus logic (that is `cairn-cluster`).
//!
//! Map: [`config`] (files, flags, validation), [`local`] (the agent's own services and checks and
//! anti-entropy), [`checks`] (runners), [`http`] (the `/v1` API), [`logging`].

pub mod checks;
pub mod config;
mod conn_limit;
pub mod dns;
pub mod http;
pub mod local;
pub mod logging;
pub mod rpc_limit;
pub mod watches;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::Value;
use tokio::sync::watch;

use cairn_cluster::gossip::user_events::{self as events, Events};
use cairn_cluster::gossip::{Pool, PoolConfig};
use cairn_cluster::leader::Member;
use cairn_cluster::{Server, ServerConfig};
use cairn_gossip::keyring::Keyring;
use cairn_types::coordinate::Coordinate;
use cairn_types::structs::{
    HealthCheck, NodeService, ServiceAddress, UserEvent, Weights, HEALTH_CRITICAL, NODE_MAINT_CHECK_ID,
    SERVICE_MAINT_PREFIX,
};

pub use config::{Config, ConfigError, Flags};

use checks::{CheckDef, CheckRunner};
use local::{LocalCheck, LocalState};

/// A request that needs a server, on an agent that has none.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("No known Consul servers")]
pub struct NoServers;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Cluster(#[from] cairn_cluster::Error),
    #[error("failed to listen on {addr}: {err}")]
    Bind { addr: String, err: std::io::Error },
    #[error("{0}")]
    Other(String),
}

pub struct Agent {
    config: RwLock<Arc<Config>>,
    flags: Flags,
    /// The Raft server, in server mode. Client agents have none until the RPC layer lets them
    /// reach the servers: what needs one answers Consul's `No known Consul servers`.
    server: Option<Arc<Server>>,
    /// How handlers reach the servers (in process on a server), behind `limits.rpc_rate`.
    rpc: Option<Arc<dyn cairn_cluster::rpc::Rpc>>,
    rpc_bucket: Arc<rpc_limit::Bucket>,
    pub local: Arc<LocalState>,
    pub checks: CheckRunner,
    metrics: PrometheusHandle,
    shutdown: watch::Sender<bool>,
    started: Instant,
    http_addrs: RwLock<Vec<SocketAddr>>,
    /// Running config-defined watches (restarted on reload).
    watch_tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// User events this agent accepted.
    pub events: Events,
    /// The LAN gossip pool (absent with `ports.serf_lan = -1`).
    pub lan: OnceLock<Pool>,
    /// The WAN gossip pool (servers only; absent with `ports.serf_wan = -1`).
    pub wan: OnceLock<Pool>,
    /// The process's exit code once it stops (1 after a fatal error such as a retry-join that
    /// gave up).
    exit_code: std::sync::atomic::AtomicI32,
}

fn metrics_handle() -> PrometheusHandle {
    static H: OnceLock<PrometheusHandle> = OnceLock::new();
    H.get_or_init(|| {
        let rec = PrometheusBuilder::new().build_recorder();
        let h = rec.handle();
        // In tests several agents share a process: only the first installs the global recorder.
        let _ = metrics::set_global_recorder(rec);
        h
    })
    .clone()
}

impl Agent {
    /// Loads configuration from `flags` and starts everything. Returns once the HTTP API is
    /// listening and (in server mode) a leader is known.
    pub async fn start(flags: Flags) -> Result<Arc<Agent>, StartError> {
        let mut cfg = Config::load(&flags)?;
        cfg.ensure_node_id()?;
        logging::init(&cfg.log_level, cfg.log_json);
        for key in &cfg.ignored {
            tracing::warn!(target: "agent.config", key = %key, "config key is accepted for Consul compatibility but not implemented yet; ignored");
        }
        // Listeners Consul would open that Cairn does not serve yet: say so once, by name and port,
        // rather than leave an operator to find a refused connection.
        let p = &cfg.ports;
        let unserved: Vec<String> = [("https", p.https), ("grpc", p.grpc)]
            .iter()
            .filter(|(_, port)| *port > 0)
            .map(|(name, port)| format!("{name}={port}"))
            .collect();
        if !unserved.is_empty() {
            tracing::warn!(target: "agent", ports = %unserved.join(" "), "these listeners are not implemented yet and are not opened");
        }
        let server = if cfg.server { Some(Self::start_server(&cfg).await?) } else { None };
        let (shutdown, _) = watch::channel(false);
        let rpc_bucket = Arc::new(rpc_limit::Bucket::new(
            cfg.rpc_rate,
            cfg.rpc_max_burst,
            Arc::new(cairn_cluster::clock::SystemClock),
        ));
        let rpc = server.clone().map(|s| {
            let inner = Arc::new(cairn_cluster::rpc::LocalRpc(s)) as Arc<dyn cairn_cluster::rpc::Rpc>;
            Arc::new(rpc_limit::Limited { inner, bucket: rpc_bucket.clone() }) as Arc<dyn cairn_cluster::rpc::Rpc>
        });
        let agent = Arc::new(Agent {
            config: RwLock::new(Arc::new(cfg)),
            flags,
            rpc,
            rpc_bucket,
            server,
            local: Arc::new(LocalState::new()),
            checks: CheckRunner::default(),
            metrics: metrics_handle(),
            shutdown,
            started: Instant::now(),
            http_addrs: RwLock::new(Vec::new()),
            watch_tasks: Default::default(),
            events: Default::default(),
            lan: OnceLock::new(),
            wan: OnceLock::new(),
            exit_code: Default::default(),
        });
        agent.start_gossip().await?;
        agent.load_config_definitions(&agent.config())?;
        if let Some(server) = &agent.server {
            // The leader runner reconciles the LAN pool (and this server) into the catalog; a lone
            // leader registers itself now, before its API answers.
            server.attach_lan(cairn_cluster::leader::Lan { pool: agent.lan.get().cloned(), me: agent.member() });
            if server.is_leader() {
                cairn_cluster::leader::reconcile_lan(server, true).await;
            }
        }
        tokio::spawn(local::sync::run(agent.clone()));
        // DNS first: once HTTP answers (what callers wait for), every listener is up.
        let dns = dns::serve(&agent).await.map_err(|e| StartError::Other(format!("DNS listener: {e}")))?;
        if !dns.is_empty() {
            tracing::info!(target: "agent", addrs = ?dns, "DNS interface listening");
        }
        agent.serve_http().await?;
        agent.start_watches()?;
        Ok(agent)
    }

    async fn start_server(cfg: &Config) -> Result<Arc<Server>, StartError> {
        let t0 = Instant::now();
        let rpc_port = if cfg.ports.server > 0 { cfg.ports.server as u16 } else { 8300 };
        let bootstrap = cfg.bootstrap || cfg.bootstrap_expect == 1;
        if cfg.ports.server < 0 && !bootstrap {
            // Peers must reach a server that is one of several (Consul's message).
            return Err(ConfigError("server-port must be greater than zero".into()).into());
        }
        let server = Server::start(ServerConfig {
            node_id: cairn_cluster::raft_id(&cfg.node_id),
            rpc_addr: SocketAddr::new(cfg.advertise_addr, rpc_port).to_string(),
            data_dir: cfg.data_dir.clone(),
            raft_multiplier: cfg.raft_multiplier,
            snapshot_threshold: cfg.raft_snapshot_threshold,
            snapshot_interval: cfg.raft_snapshot_interval,
            trailing_logs: cfg.raft_trailing_logs,
            bootstrap,
            bootstrap_expect: if bootstrap { 0 } else { cfg.bootstrap_expect.max(0) as usize },
            // `-server-port=-1`: a lone server with no port for peers (Cairn's; Consul requires one).
            listen: (cfg.ports.server >= 0).then(|| SocketAddr::new(cfg.bind_addr, rpc_port)),
            max_conns_per_client: cfg.rpc_max_conns_per_client,
            rpc_handshake_timeout: cfg.rpc_handshake_timeout,
            autopilot: cfg.autopilot.clone(),
            datacenter: cfg.datacenter.clone(),
            ..ServerConfig::default()
        })
        .await?;
        // A lone server elects itself at once; one that needs peers finds them through gossip,
        // which starts after this, so it does not wait here.
        if bootstrap {
            server.wait_ready(Duration::from_secs(30)).await?;
            tracing::info!(target: "agent", elapsed_ms = t0.elapsed().as_millis() as u64, "raft leader elected, state restored");
        }
        Ok(server)
    }

    /// The Raft server, or Consul's error for an agent that knows none.
    /// The servers, through the RPC seam: HTTP and DNS handlers use only this.
    pub fn rpc(&self) -> Result<&dyn cairn_cluster::rpc::Rpc, NoServers> {
        self.rpc.as_deref().ok_or(NoServers)
    }

    pub fn server(&self) -> Result<&Arc<Server>, NoServers> {
        self.server.as_ref().ok_or(NoServers)
    }

    pub fn is_leader(&self) -> bool {
        self.server.as_ref().is_some_and(|s| s.is_leader())
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.read().expect("config").clone()
    }

    pub fn flags(&self) -> &Flags {
        &self.flags
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn metrics_handle(&self) -> &PrometheusHandle {
        &self.metrics
    }

    /// The addresses the HTTP API listens on.
    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        self.http_addrs.read().expect("addrs").clone()
    }

    pub fn shutdown_rx(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Resolves when shutdown has been requested.
    pub async fn shutting_down(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }

    pub fn exit_code(&self) -> i32 {
        self.exit_code.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Asks every task to stop (`/v1/agent/leave`, signals).
    pub fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Stops checks and Raft. Call after [`Agent::request_shutdown`] once the API has drained.
    pub async fn stop(&self) {
        self.request_shutdown();
        for p in [self.wan.get(), self.lan.get()].into_iter().flatten() {
            p.shutdown().await;
        }
        self.checks.stop_all();
        if let Some(s) = &self.server {
            s.shutdown().await;
        }
    }

    pub fn meta(&self, index: u64) -> http::Meta {
        http::Meta {
            index,
            known_leader: self.server.as_ref().is_some_and(|s| s.leader_addr().is_some()),
            last_contact_ms: self.server.as_ref().map_or(0, |s| s.last_contact_ms()),
        }
    }

    /// `lan`/`wan` tagged addresses of this node, as Consul sets them.
    pub fn tagged_addresses(&self) -> BTreeMap<String, String> {
        let a = self.config().advertise_addr.to_string();
        let v4 = self.config().advertise_addr.is_ipv4();
        let mut m = BTreeMap::from([("lan".to_string(), a.clone()), ("wan".to_string(), a.clone())]);
        let fam = if v4 { "ipv4" } else { "ipv6" };
        m.insert(format!("lan_{fam}"), a.clone());
        m.insert(format!("wan_{fam}"), a);
        m
    }

    /// Fires a user event to the datacenter's members through the LAN pool (Serf delivers it to
    /// this agent too). Without a pool it is delivered here alone. Returns the event as sent.
    pub async fn fire_event(&self, ev: UserEvent) -> Result<UserEvent, cairn_cluster::Error> {
        let rejected = |m: String| cairn_cluster::Error::Rejected(cairn_types::Error::rejected(m));
        events::validate(&ev).map_err(rejected)?;
        match (self.lan.get(), self.rpc.as_deref()) {
            // No pool: the event stays with this agent.
            (None, _) => self.accept_event(ev.clone()),
            // Consul's `Internal.EventFire`: a server broadcasts it in the LAN pool.
            (Some(_), Some(rpc)) => {
                let q = cairn_types::rpc::QueryOptions {
                    consistency: cairn_types::rpc::Consistency::Stale,
                    ..Default::default()
                };
                rpc.operator(cairn_types::rpc::OperatorRequest::EventFire(ev.clone()), q).await?;
            }
            // A client agent, until it reaches the servers over the network: its own pool.
            (Some(pool), None) => pool.fire(&ev).await.map_err(rejected)?,
        }
        Ok(ev)
    }

    /// An event from the pool: kept when its filters match this agent.
    fn accept_event(&self, ev: UserEvent) {
        let services = self.local.services();
        if events::accepts(&ev, &self.config().node_name, services.values()) {
            self.events.deliver(ev);
        }
    }

    /// This agent's network coordinate: Serf's Vivaldi client moves it as gossip probes measure
    /// round trips to other members. Without a pool it stays where a new agent starts.
    pub fn coordinate(&self) -> Coordinate {
        self.lan.get().map(Pool::coordinate).unwrap_or_else(Coordinate::origin)
    }

    /// What this agent tells a gossip pool about itself.
    pub fn pool_config(&self, wan: bool) -> PoolConfig {
        let c = self.config();
        let port = |p: i64, d: u16| if p >= 0 { p as u16 } else { d };
        let lan_port = port(c.ports.serf_lan, 8301);
        let wan_port = port(c.ports.serf_wan, 8302);
        let (bind_port, adv_ip, timing) = if wan {
            (wan_port, c.gossip.advertise_wan, c.gossip.wan.clone())
        } else {
            (lan_port, c.advertise_addr, c.gossip.lan.clone())
        };
        let keyring_file = c
            .data_dir
            .as_ref()
            .filter(|_| !c.gossip.disable_keyring_file)
            .map(|d| d.join("serf").join(if wan { "remote.keyring" } else { "local.keyring" }));
        PoolConfig {
            wan,
            node_name: c.node_name.clone(),
            node_id: c.node_id.clone(),
            datacenter: c.datacenter.clone(),
            server: c.server,
            server_port: port(c.ports.server, 8300),
            bootstrap: c.bootstrap,
            bootstrap_expect: c.bootstrap_expect,
            wan_join_port: (c.server && c.ports.serf_wan > 0).then_some(wan_port),
            bind: SocketAddr::new(c.bind_addr, bind_port),
            advertise: SocketAddr::new(adv_ip, bind_port),
            timing,
            keyring: None,
            keyring_file,
            verify_incoming: c.gossip.verify_incoming,
            verify_outgoing: c.gossip.verify_outgoing,
            reconnect_timeout: if wan { c.gossip.reconnect_timeout_wan } else { c.gossip.reconnect_timeout },
            advertise_reconnect_timeout: c.gossip.advertise_reconnect_timeout,
            build: format!("{}:cairn-{}", cairn_types::CONSUL_COMPAT_VERSION, cairn_types::CAIRN_VERSION),
            snapshot_path: c
                .data_dir
                .as_ref()
                .map(|d| d.join("serf").join(if wan { "remote.snapshot" } else { "local.snapshot" })),
            rejoin_after_leave: c.gossip.rejoin_after_leave,
        }
    }

    /// The keyring of a pool: its keyring file wins over `encrypt`, which only seeds a missing
    /// file, as Consul does.
    fn load_keyring(&self, pc: &PoolConfig) -> Result<Option<Keyring>, StartError> {
        let c = self.config();
        let which = if pc.wan { "WAN" } else { "LAN" };
        if let Some(path) = &pc.keyring_file {
            if let Some(ring) = cairn_cluster::gossip::read_keyring_file(path).map_err(StartError::Other)? {
                if let Some(k) = &c.gossip.encrypt {
                    if !ring.keys().any(|x| x == k.as_slice()) {
                        tracing::warn!(target: "agent", keyring = which, " keyring doesn't include key provided with -encrypt, using keyring");
                    }
                }
                return Ok(Some(ring));
            }
        }
        let Some(k) = &c.gossip.encrypt else { return Ok(None) };
        let ring = Keyring::new(k, &[]).map_err(|e| StartError::Other(format!("Invalid key: {e}")))?;
        if let Some(path) = &pc.keyring_file {
            cairn_cluster::gossip::write_keyring_file(path, &ring)
                .map_err(|e| StartError::Other(format!("{}: {e}", path.display())))?;
        }
        Ok(Some(ring))
    }

    /// Opens the LAN pool (and, on a server, the WAN pool) and starts their retry-joins.
    async fn start_gossip(self: &Arc<Self>) -> Result<(), StartError> {
        let c = self.config();
        for wan in [false, true] {
            let port = if wan { c.ports.serf_wan } else { c.ports.serf_lan };
            if port < 0 || (wan && !c.server) {
                continue;
            }
            let mut pc = self.pool_config(wan);
            pc.keyring = self.load_keyring(&pc)?;
            let sink: Option<cairn_cluster::gossip::EventSink> = if wan {
                None
            } else {
                let weak = Arc::downgrade(self);
                Some(Arc::new(move |ev: UserEvent| {
                    if let Some(a) = weak.upgrade() {
                        a.accept_event(ev);
                    }
                }))
            };
            let bind = pc.bind;
            let pool = Pool::start(pc, sink).await.map_err(|err| StartError::Bind { addr: bind.to_string(), err })?;
            let (addrs, interval, max) = if wan {
                (c.gossip.retry_join_wan.clone(), c.gossip.retry_interval_wan, c.gossip.retry_max_wan)
            } else {
                (c.gossip.retry_join.clone(), c.gossip.retry_interval, c.gossip.retry_max)
            };
            if !addrs.is_empty() {
                let me = self.clone();
                let p = pool.clone();
                tokio::spawn(async move {
                    if !cairn_cluster::gossip::retry_join(p, addrs, interval, max, me.shutdown_rx()).await
                        && !*me.shutdown_rx().borrow()
                    {
                        me.exit_code.store(1, std::sync::atomic::Ordering::SeqCst);
                        me.request_shutdown();
                    }
                });
            }
            let slot = if wan { &self.wan } else { &self.lan };
            let _ = slot.set(pool);
        }
        if let (Some(lan), Some(wan)) = (self.lan.get(), self.wan.get()) {
            tokio::spawn(cairn_cluster::gossip::flood(
                lan.clone(),
                wan.clone(),
                c.datacenter.clone(),
                self.shutdown_rx(),
            ));
        }
        Ok(())
    }

    /// Leaves the gossip pools gracefully (others see this agent `left`).
    pub async fn leave_pools(&self) {
        for p in [self.wan.get(), self.lan.get()].into_iter().flatten() {
            if let Err(e) = p.leave().await {
                tracing::warn!(target: "agent", error = %e, "failed to leave the gossip pool");
            }
        }
    }

    /// This agent as a pool member.
    pub fn member(&self) -> Member {
        let c = self.config();
        Member {
            node: c.node_name.clone(),
            node_id: c.node_id.clone(),
            address: c.advertise_addr.to_string(),
            datacenter: c.datacenter.clone(),
            server_port: if c.server {
                Some(if c.ports.server > 0 { c.ports.server as u16 } else { 8300 })
            } else {
                None
            },
        }
    }

    async fn serve_http(self: &Arc<Self>) -> Result<(), StartError> {
        let cfg = self.config();
        if cfg.ports.http < 0 {
            return Ok(());
        }
        let addrs = cfg.http_addrs.clone().unwrap_or_else(|| cfg.client_addrs.clone());
        let app = http::router(self.clone());
        let mut bound = Vec::new();
        for ip in addrs {
            let addr = SocketAddr::new(ip, cfg.ports.http as u16);
            let l = conn_limit::bind(addr).map_err(|err| StartError::Bind { addr: addr.to_string(), err })?;
            let local = l.local_addr().map_err(|e| StartError::Other(e.to_string()))?;
            bound.push(local);
            let app = app.clone();
            let me = self.clone();
            let max = cfg.http_max_conns_per_client;
            tokio::spawn(async move {
                conn_limit::serve(l, max, app, async move { me.shutting_down().await }).await;
            });
            tracing::info!(target: "agent", addr = %local, "HTTP API listening");
        }
        *self.http_addrs.write().expect("addrs") = bound;
        Ok(())
    }

    /// Starts the watches of the config (stopping any running ones): clients of this agent's API.
    fn start_watches(self: &Arc<Self>) -> Result<(), StartError> {
        let plans = self.config().watches.clone();
        let mut tasks = self.watch_tasks.lock().expect("watch tasks");
        for t in tasks.drain(..) {
            t.abort();
        }
        if plans.is_empty() {
            return Ok(());
        }
        let Some(addr) = self.http_addrs().first().copied() else {
            return Err(StartError::Other("watches need the HTTP API, which is disabled (ports.http = -1)".into()));
        };
        for plan in plans {
            let me = self.clone();
            let base = format!("http://{addr}");
            tasks.push(tokio::spawn(async move {
                let stop = async { me.shutting_down().await };
                let _ = watches::run(reqwest::Client::new(), base, plan, false, stop).await;
            }));
        }
        Ok(())
    }

    // ---- Local services and checks ------------------------------------------------------------

    /// Registers services and checks from config files. On reload, config-defined entries that
    /// disappeared are removed.
    fn load_config_definitions(&self, cfg: &Config) -> Result<(), StartError> {
        for s in &cfg.services {
            let v = cairn_types::normalize::normalize(s.clone());
            self.add_service_def(&v, false)
                .map_err(|e| StartError::Other(format!("service definition in config: {e}")))?;
        }
        for c in &cfg.checks {
            let v = cairn_types::normalize::normalize(c.clone());
            self.add_check_def(&v).map_err(|e| StartError::Other(format!("check definition in config: {e}")))?;
        }
        Ok(())
    }

    /// Registers a service definition (already normalised): the service and its `Check`/`Checks`.
    pub fn add_service_def(&self, v: &Value, replace_existing_checks: bool) -> Result<(), String> {
        let cfg = self.config();
        let svc = parse_service(v)?;
        let mut defs: Vec<Value> = Vec::new();
        if let Some(c) = v.get("Check").filter(|c| !c.is_null()) {
            defs.push(c.clone());
        }
        if let Some(Value::Array(a)) = v.get("Checks") {
            defs.extend(a.iter().cloned());
        }
        let n = defs.len();
        let mut parsed = Vec::new();
        for (i, d) in defs.iter().enumerate() {
            let default_id =
                if n > 1 { format!("service:{}:{}", svc.id, i + 1) } else { format!("service:{}", svc.id) };
            let default_name = format!("Service '{}' check", svc.service);
            let (mut hc, def) =
                checks::parse_check(d, &cfg.node_name, &default_id, &default_name, cfg.enable_local_script_checks)?;
            hc.service_id = svc.id.clone();
            parsed.push((hc, def, d.get("Status").is_some()));
        }
        let id = svc.id.clone();
        self.local.add_service(svc)?;
        if replace_existing_checks {
            let keep: Vec<String> = parsed.iter().map(|(c, _, _)| c.check_id.clone()).collect();
            for c in self.local.service_checks(&id) {
                if !keep.contains(&c.check_id) && !c.check_id.starts_with(SERVICE_MAINT_PREFIX) {
                    self.remove_check(&c.check_id);
                }
            }
        }
        for (hc, def, explicit_status) in parsed {
            self.add_check(hc, def, explicit_status)?;
        }
        Ok(())
    }

    /// Registers a standalone check definition (already normalised).
    pub fn add_check_def(&self, v: &Value) -> Result<(), String> {
        let cfg = self.config();
        let (hc, def) = checks::parse_check(v, &cfg.node_name, "", "", cfg.enable_local_script_checks)?;
        let explicit = v.get("Status").is_some();
        self.add_check(hc, def, explicit)
    }

    fn add_check(&self, mut hc: HealthCheck, def: CheckDef, explicit_status: bool) -> Result<(), String> {
        if let Some(prev) = self.local.check(&hc.check_id) {
            // Re-registration keeps the last result unless the definition sets a status.
            if !explicit_status {
                hc.status = prev.check.status;
                hc.output = prev.check.output;
            }
        }
        let id = hc.check_id.clone();
        self.local.add_check(LocalCheck { check: hc, def: def.clone() })?;
        self.checks.start(&self.local, &id, &def);
        Ok(())
    }

    pub fn remove_check(&self, id: &str) -> bool {
        self.checks.stop(id);
        self.local.remove_check(id)
    }

    pub fn remove_service(&self, id: &str) -> bool {
        for c in self.local.service_checks(id) {
            self.checks.stop(&c.check_id);
        }
        self.local.remove_service(id)
    }

    /// Node maintenance mode: a critical `_node_maintenance` check while enabled.
    pub fn set_node_maintenance(&self, enable: bool, reason: &str) -> Result<(), String> {
        if !enable {
            self.remove_check(NODE_MAINT_CHECK_ID);
            return Ok(());
        }
        let notes = if reason.is_empty() {
            "Maintenance mode is enabled for this node, but no reason was provided. This is a default message."
        } else {
            reason
        };
        let hc = HealthCheck {
            node: self.config().node_name.clone(),
            check_id: NODE_MAINT_CHECK_ID.into(),
            name: "Node Maintenance Mode".into(),
            notes: notes.into(),
            status: HEALTH_CRITICAL.into(),
            check_type: "maintenance".into(),
            definition: serde_json::json!({}),
            ..Default::default()
        };
        self.add_check(hc, CheckDef::default(), true)
    }

    /// Service maintenance mode: a critical `_service_maintenance:<id>` check while enabled.
    pub fn set_service_maintenance(&self, id: &str, enable: bool, reason: &str) -> Result<(), String> {
        let check_id = format!("{SERVICE_MAINT_PREFIX}{id}");
        if !enable {
            self.remove_check(&check_id);
            return Ok(());
        }
        let notes = if reason.is_empty() {
            "Maintenance mode is enabled for this service, but no reason was provided. This is a default message."
        } else {
            reason
        };
        let hc = HealthCheck {
            node: self.config().node_name.clone(),
            check_id,
            name: "Service Maintenance Mode".into(),
            notes: notes.into(),
            status: HEALTH_CRITICAL.into(),
            service_id: id.into(),
            check_type: "maintenance".into(),
            definition: serde_json::json!({}),
            ..Default::default()
        };
        self.add_check(hc, CheckDef::default(), true)
    }

    /// `/v1/agent/reload`: re-reads config files; applies the log level and the service and check
    /// definitions. Settings that need a restart (ports, data dir, ...) keep their running values.
    pub fn reload(self: &Arc<Self>) -> Result<(), String> {
        let mut cfg = Config::load(&self.flags).map_err(|e| e.to_string())?;
        let old = self.config();
        cfg.node_id = old.node_id.clone();
        logging::init(&cfg.log_level, cfg.log_json);
        self.rpc_bucket.set(cfg.rpc_rate, cfg.rpc_max_burst);
        // Remove definitions that came from the old config, then add the new ones.
        for s in &old.services {
            if let Ok(svc) = parse_service(&cairn_types::normalize::normalize(s.clone())) {
                self.remove_service(&svc.id);
            }
        }
        for c in &old.checks {
            let v = cairn_types::normalize::normalize(c.clone());
            if let Ok((hc, _)) = checks::parse_check(&v, &old.node_name, "", "", true) {
                self.remove_check(&hc.check_id);
            }
        }
        let cfg = Arc::new(cfg);
        *self.config.write().expect("config") = cfg.clone();
        self.load_config_definitions(&cfg).map_err(|e| e.to_string())?;
        self.start_watches().map_err(|e| e.to_string())
    }
}

fn s(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or_default().to_string()
}

/// A service definition (normalised JSON) to the service row, with Consul's validation.
pub fn parse_service(v: &Value) -> Result<NodeService, String> {
    if !v.is_object() {
        return Err("service definition must be an object".into());
    }
    let name = s(v, "Name");
    let name = if name.is_empty() { s(v, "Service") } else { name };
    if name.is_empty() {
        return Err("Missing service name".into());
    }
    let mut id = s(v, "ID");
    if id.is_empty() {
        id = name.clone();
    }
    let tags: Vec<String> = match v.get("Tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => {
            a.iter().map(|t| t.as_str().map(str::to_string).ok_or("Tags must be strings")).collect::<Result<_, _>>()?
        }
        Some(_) => return Err("Tags must be a list of strings".into()),
    };
    let meta: BTreeMap<String, String> = match v.get("Meta") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(o)) => o
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
            .collect(),
        Some(_) => return Err("Meta must be an object of strings".into()),
    };
    let port = match v.get("Port") {
        None | Some(Value::Null) => 0,
        Some(p) => p.as_u64().filter(|p| *p <= 65535).ok_or("Invalid Port: must be 0-65535")? as u16,
    };
    let weights = match v.get("Weights") {
        None | Some(Value::Null) => Weights::default(),
        Some(w) => serde_json::from_value::<Weights>(w.clone()).map_err(|e| format!("Invalid Weights: {e}"))?,
    };
    if weights.passing < 1 {
        return Err("Passing must be greater than 0".into());
    }
    let tagged_addresses: BTreeMap<String, ServiceAddress> = match v.get("TaggedAddresses") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(t) => serde_json::from_value(t.clone()).map_err(|e| format!("Invalid TaggedAddresses: {e}"))?,
    };
    let kind = s(v, "Kind");
    Ok(NodeService {
        kind,
        id,
        service: name,
        tags,
        address: s(v, "Address"),
        tagged_addresses,
        meta,
        port,
        weights,
        enable_tag_override: v.get("EnableTagOverride").and_then(Value::as_bool).unwrap_or(false),
        socket_path: s(v, "SocketPath"),
        proxy: v.get("Proxy").filter(|x| !x.is_null()).cloned(),
        connect: v.get("Connect").filter(|x| !x.is_null()).cloned(),
        locality: v.get("Locality").filter(|x| !x.is_null()).cloned(),
        create_index: 0,
        modify_index: 0,
    })
}
