//! Agent configuration: Consul-compatible config files (JSON and HCL), `-config-dir`, command-line
//! flags, defaults and `-dev` mode, merged in Consul's order (defaults, files in order, flags) and
//! validated. Every key Consul accepts is accepted: keys Cairn does not act on yet are logged as
//! ignored, by name; keys Consul does not know, or values of the wrong type, stop start-up with the
//! file and key named.

pub mod consul_keys;
pub mod dns;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Map, Value};

use cairn_types::txn::MAX_TXN_OPS;
use consul_keys::{Key, Kind, TOP};

/// What the command line said (`cairn agent ...`). `None` means "not given": a config file may set it.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub dev: bool,
    pub server: bool,
    pub bootstrap: bool,
    pub bootstrap_expect: Option<i64>,
    pub node: Option<String>,
    pub node_id: Option<String>,
    pub datacenter: Option<String>,
    pub data_dir: Option<String>,
    pub client: Option<String>,
    pub bind: Option<String>,
    pub advertise: Option<String>,
    pub http_port: Option<i64>,
    pub https_port: Option<i64>,
    pub dns_port: Option<i64>,
    pub grpc_port: Option<i64>,
    pub serf_lan_port: Option<i64>,
    pub serf_wan_port: Option<i64>,
    pub server_port: Option<i64>,
    pub config_files: Vec<PathBuf>,
    pub config_dirs: Vec<PathBuf>,
    pub config_format: Option<String>,
    pub hcl: Vec<String>,
    pub log_level: Option<String>,
    pub log_json: bool,
    pub pid_file: Option<String>,
    pub enable_script_checks: bool,
    pub enable_local_script_checks: bool,
    pub node_meta: Vec<String>,
    pub domain: Option<String>,
    pub ui: bool,
    pub join: Vec<String>,
    pub retry_join: Vec<String>,
    pub join_wan: Vec<String>,
    pub retry_join_wan: Vec<String>,
    pub retry_interval: Option<String>,
    pub retry_interval_wan: Option<String>,
    pub retry_max: Option<i64>,
    pub retry_max_wan: Option<i64>,
    pub encrypt: Option<String>,
    pub advertise_wan: Option<String>,
    pub rejoin: bool,
    pub disable_keyring_file: bool,
}

/// The effective, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub dev: bool,
    pub server: bool,
    pub bootstrap: bool,
    pub bootstrap_expect: i64,
    pub datacenter: String,
    pub primary_datacenter: String,
    pub node_name: String,
    /// Set by [`Config::ensure_node_id`] when empty.
    pub node_id: String,
    pub data_dir: Option<PathBuf>,
    pub client_addrs: Vec<IpAddr>,
    pub http_addrs: Option<Vec<IpAddr>>,
    /// `addresses.dns`: where DNS listens instead of `client_addr`.
    pub dns_addrs: Option<Vec<IpAddr>>,
    pub bind_addr: IpAddr,
    pub advertise_addr: IpAddr,
    pub ports: Ports,
    pub log_level: String,
    pub log_json: bool,
    pub pid_file: Option<PathBuf>,
    pub enable_script_checks: bool,
    pub enable_local_script_checks: bool,
    pub raft_multiplier: u64,
    pub raft_snapshot_threshold: u64,
    /// Consul's `raft_snapshot_interval` (default 30s): how often a server checks whether
    /// `raft_snapshot_threshold` entries have gathered since its last snapshot.
    pub raft_snapshot_interval: Duration,
    pub raft_trailing_logs: u64,
    pub node_meta: BTreeMap<String, String>,
    pub kv_max_value_size: usize,
    pub txn_max_req_len: usize,
    /// Operations allowed in one `/v1/txn` request (`limits.txn_max_ops`, a Cairn extension).
    pub txn_max_ops: usize,
    pub http_max_conns_per_client: usize,
    /// `limits.rpc_max_conns_per_client` (100): server-port connections per client address.
    pub rpc_max_conns_per_client: usize,
    /// `limits.rpc_rate`: RPCs a second this agent may make to the servers; `None` (Consul's
    /// default, Go's `rate.Inf`) is no limit.
    pub rpc_rate: Option<f64>,
    /// `limits.rpc_max_burst` (1000): the bucket's size.
    pub rpc_max_burst: u64,
    /// `limits.rpc_handshake_timeout` (5 s; 0 waits for ever, as in Consul).
    pub rpc_handshake_timeout: Duration,
    /// `autopilot {}`.
    pub autopilot: cairn_types::structs::AutopilotConfig,
    pub check_update_interval: Duration,
    /// Consul's `session_ttl_min`: the shortest session TTL accepted (default 10s).
    pub session_ttl_min: Duration,
    /// `discovery_max_stale`: service discovery reads are stale up to this (zero: off).
    pub discovery_max_stale: Duration,
    pub leave_on_terminate: bool,
    pub skip_leave_on_interrupt: bool,
    pub gossip: GossipConfig,
    pub domain: String,
    /// `dns_config` and `recursors`.
    pub dns: dns::DnsConfig,
    /// Service definitions from config files (`service {}` / `services []`), raw.
    pub services: Vec<Value>,
    /// Check definitions from config files, raw.
    pub checks: Vec<Value>,
    /// Watch definitions from config files (`watches = [...]`), validated.
    pub watches: Vec<crate::watches::Plan>,
    /// The merged configuration, for `/v1/agent/self` `DebugConfig`.
    pub merged: Value,
    /// Keys that were accepted but are not acted on yet (logged at start).
    pub ignored: Vec<String>,
}

/// -1 turns a listener off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub http: i64,
    pub https: i64,
    pub dns: i64,
    pub grpc: i64,
    pub grpc_tls: i64,
    pub serf_lan: i64,
    pub serf_wan: i64,
    pub server: i64,
}

/// The gossip pools' settings.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    pub advertise_wan: IpAddr,
    pub retry_join: Vec<String>,
    pub retry_join_wan: Vec<String>,
    pub retry_interval: Duration,
    pub retry_interval_wan: Duration,
    pub retry_max: u32,
    pub retry_max_wan: u32,
    /// The `encrypt` key, decoded.
    pub encrypt: Option<Vec<u8>>,
    pub verify_incoming: bool,
    pub verify_outgoing: bool,
    pub rejoin_after_leave: bool,
    pub reconnect_timeout: Duration,
    pub reconnect_timeout_wan: Duration,
    /// A client's `advertise_reconnect_timeout` (zero: unset), carried in its `rc_tm` tag; servers
    /// reap the client after it instead of their own `reconnect_timeout`.
    pub advertise_reconnect_timeout: Duration,
    pub lan: cairn_cluster::gossip::Timing,
    pub wan: cairn_cluster::gossip::Timing,
    pub disable_keyring_file: bool,
}

/// A configuration error: which source, which key, what is wrong.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Dotted paths that Cairn acts on. Everything else Consul accepts is logged as ignored.
const IMPLEMENTED: &[&str] = &[
    "datacenter",
    "primary_datacenter",
    "node_name",
    "node_id",
    "data_dir",
    "server",
    "bootstrap",
    "bootstrap_expect",
    "bind_addr",
    "advertise_addr",
    "client_addr",
    "addresses.http",
    "addresses.dns",
    "ports.http",
    "ports.https",
    "ports.dns",
    "ports.grpc",
    "ports.grpc_tls",
    "ports.serf_lan",
    "ports.serf_wan",
    "ports.server",
    "log_level",
    "log_json",
    "pid_file",
    "enable_script_checks",
    "enable_local_script_checks",
    "performance.raft_multiplier",
    "raft_snapshot_threshold",
    "raft_snapshot_interval",
    "raft_trailing_logs",
    "node_meta",
    "limits.kv_max_value_size",
    "limits.txn_max_req_len",
    "limits.txn_max_ops",
    "limits.http_max_conns_per_client",
    "limits.rpc_max_conns_per_client",
    "limits.rpc_rate",
    "limits.rpc_max_burst",
    "limits.rpc_handshake_timeout",
    "discovery_max_stale",
    "autopilot.cleanup_dead_servers",
    "autopilot.last_contact_threshold",
    "autopilot.max_trailing_logs",
    "autopilot.min_quorum",
    "autopilot.server_stabilization_time",
    "check_update_interval",
    "leave_on_terminate",
    "skip_leave_on_interrupt",
    "advertise_addr_wan",
    "retry_join",
    "retry_join_wan",
    "start_join",
    "start_join_wan",
    "retry_interval",
    "retry_interval_wan",
    "retry_max",
    "retry_max_wan",
    "encrypt",
    "encrypt_verify_incoming",
    "encrypt_verify_outgoing",
    "rejoin_after_leave",
    "reconnect_timeout",
    "reconnect_timeout_wan",
    "advertise_reconnect_timeout",
    "gossip_lan",
    "gossip_wan",
    "disable_keyring_file",
    "service",
    "services",
    "check",
    "checks",
    "domain",
    "dns_config.allow_stale",
    "dns_config.max_stale",
    "dns_config.node_ttl",
    "dns_config.service_ttl",
    "dns_config.udp_answer_limit",
    "dns_config.a_record_limit",
    "dns_config.enable_truncate",
    "dns_config.only_passing",
    "dns_config.recursor_timeout",
    "dns_config.recursor_strategy",
    "dns_config.disable_compression",
    "dns_config.soa",
    "dns_config.enable_additional_node_meta_txt",
    "recursors",
    "disable_update_check",
    "disable_anonymous_signature",
    "ui",
    "ui_config.enabled",
    "session_ttl_min",
    "watches",
];

impl Config {
    /// Loads, merges and validates: defaults, then `-dev` defaults, then each config file or
    /// directory in order, then flags.
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        let mut merged = defaults();
        if flags.dev {
            merge(&mut merged, dev_defaults());
        }
        let mut ignored = Vec::new();
        for (name, v) in sources(flags)? {
            check_tree(&v, TOP, &mut Vec::new(), &name, &mut ignored)?;
            merge(&mut merged, v);
        }
        let fv = flag_values(flags)?;
        merge(&mut merged, fv);
        ignored.sort();
        ignored.dedup();
        Self::from_merged(merged, flags.dev, ignored)
    }

    fn from_merged(m: Value, dev: bool, ignored: Vec<String>) -> Result<Config, ConfigError> {
        let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
        let b = |k: &str| m.get(k).map(as_bool).unwrap_or(false);
        let at = |path: &[&str]| path.iter().try_fold(&m, |v, k| v.get(*k));
        let int = |path: &[&str], d: i64| at(path).and_then(as_i64).unwrap_or(d);
        let ip = |k: &str, d: &str| -> Result<IpAddr, ConfigError> {
            let v = s(k).unwrap_or_else(|| d.to_string());
            v.parse().map_err(|_| {
                ConfigError(format!("{k}: invalid IP address {v:?} (go-sockaddr templates are not supported yet)"))
            })
        };
        let client_addrs = s("client_addr")
            .unwrap_or_else(|| "127.0.0.1".into())
            .split_whitespace()
            .map(|a| a.parse().map_err(|_| ConfigError(format!("client_addr: invalid IP address {a:?}"))))
            .collect::<Result<Vec<IpAddr>, _>>()?;
        let addrs = |which: &str| -> Result<Option<Vec<IpAddr>>, ConfigError> {
            match at(&["addresses", which]).and_then(Value::as_str) {
                Some(v) => Ok(Some(
                    v.split_whitespace()
                        .map(|a| {
                            a.parse().map_err(|_| ConfigError(format!("addresses.{which}: invalid IP address {a:?}")))
                        })
                        .collect::<Result<Vec<IpAddr>, _>>()?,
                )),
                None => Ok(None),
            }
        };
        let http_addrs = addrs("http")?;
        let dns_addrs = addrs("dns")?;
        let bind_addr = ip("bind_addr", "0.0.0.0")?;
        let advertise_addr = match s("advertise_addr") {
            Some(a) => a.parse().map_err(|_| ConfigError(format!("advertise_addr: invalid IP address {a:?}")))?,
            None if bind_addr.is_unspecified() => "127.0.0.1".parse().expect("ip"),
            None => bind_addr,
        };
        let ports = Ports {
            http: int(&["ports", "http"], 8500),
            https: int(&["ports", "https"], -1),
            dns: int(&["ports", "dns"], 8600),
            grpc: int(&["ports", "grpc"], -1),
            grpc_tls: int(&["ports", "grpc_tls"], -1),
            serf_lan: int(&["ports", "serf_lan"], 8301),
            serf_wan: int(&["ports", "serf_wan"], 8302),
            server: int(&["ports", "server"], 8300),
        };
        for (name, p) in [
            ("http", ports.http),
            ("https", ports.https),
            ("dns", ports.dns),
            ("grpc", ports.grpc),
            ("serf_lan", ports.serf_lan),
            ("serf_wan", ports.serf_wan),
            ("server", ports.server),
        ] {
            if !(p == -1 || (0..=65535).contains(&p)) {
                return Err(ConfigError(format!("ports.{name}: invalid port {p}: must be -1 (off) or 0-65535")));
            }
        }
        let datacenter = s("datacenter").unwrap_or_else(|| "dc1".into()).to_lowercase();
        if datacenter.is_empty() || !datacenter.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(ConfigError(format!(
                "datacenter: invalid value {datacenter:?}: only alphanumerics, '-' and '_' are allowed"
            )));
        }
        let node_name = match s("node_name") {
            Some(n) if !n.is_empty() => n,
            _ => hostname(),
        };
        if node_name.len() > 256 {
            return Err(ConfigError("node_name: longer than 256 characters".into()));
        }
        let log_level = s("log_level").unwrap_or_else(|| "info".into()).to_lowercase();
        if !["trace", "debug", "info", "warn", "err", "error"].contains(&log_level.as_str()) {
            return Err(ConfigError(format!(
                "log_level: invalid level {log_level:?}: want trace, debug, info, warn or err"
            )));
        }
        let data_dir = s("data_dir").filter(|d| !d.is_empty()).map(PathBuf::from);
        let server = b("server");
        if !dev && data_dir.is_none() {
            return Err(ConfigError("data_dir cannot be empty".into()));
        }
        let rpc_rate = match at(&["limits", "rpc_rate"]) {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_f64() {
                Some(r) if r.is_infinite() => None,
                Some(r) if r >= 0.0 => Some(r),
                _ => {
                    return Err(ConfigError(format!(
                        "limits.rpc_rate: {v} is not a rate (a number of RPCs a second, 0 or more)"
                    )))
                }
            },
        };
        let rpc_max_burst = match at(&["limits", "rpc_max_burst"]).map(|v| (v, as_i64(v))) {
            None => 1000,
            Some((_, Some(n))) if n >= 0 => n as u64,
            Some((v, _)) => return Err(ConfigError(format!("limits.rpc_max_burst: {v} is not a count of 0 or more"))),
        };
        let raft_multiplier = int(&["performance", "raft_multiplier"], 1);
        if !(0..=10).contains(&raft_multiplier) {
            return Err(ConfigError(format!("performance.raft_multiplier: {raft_multiplier} is out of range 1-10")));
        }
        let node_meta = match m.get("node_meta") {
            Some(Value::Object(o)) => o.iter().map(|(k, v)| (k.clone(), scalar_string(v))).collect(),
            _ => BTreeMap::new(),
        };
        let rpc_handshake_timeout = match at(&["limits", "rpc_handshake_timeout"]) {
            Some(v) => duration(v).map_err(|e| ConfigError(format!("limits.rpc_handshake_timeout: {e}")))?,
            None => Duration::from_secs(5),
        };
        let check_update_interval = match at(&["check_update_interval"]) {
            Some(v) => duration(v).map_err(|e| ConfigError(format!("check_update_interval: {e}")))?,
            None => Duration::from_secs(300),
        };
        let session_ttl_min = match at(&["session_ttl_min"]) {
            Some(v) => duration(v).map_err(|e| ConfigError(format!("session_ttl_min: {e}")))?,
            None => Duration::from_secs(10),
        };
        let raft_snapshot_interval = match at(&["raft_snapshot_interval"]) {
            Some(v) => duration(v).map_err(|e| ConfigError(format!("raft_snapshot_interval: {e}")))?,
            None => Duration::from_secs(30),
        };
        if raft_snapshot_interval.is_zero() {
            return Err(ConfigError("raft_snapshot_interval: must be greater than 0".into()));
        }
        let discovery_max_stale = match at(&["discovery_max_stale"]) {
            Some(v) => duration(v).map_err(|e| ConfigError(format!("discovery_max_stale: {e}")))?,
            None => Duration::ZERO,
        };
        let gossip = gossip_config(&m, dev, advertise_addr)?;
        // Consul's check; it sets no minimum for any of the reconnect timeouts (the ">= 8h" its
        // docs still state was enforced only before its 1.0 config rewrite).
        if server && !gossip.advertise_reconnect_timeout.is_zero() {
            return Err(ConfigError("advertise_reconnect_timeout can only be used on a client".into()));
        }
        // Consul: servers stay in the pool on SIGTERM and skip the leave on SIGINT; clients leave.
        let leave_on_terminate = m.get("leave_on_terminate").map(as_bool).unwrap_or(!server);
        let skip_leave_on_interrupt = m.get("skip_leave_on_interrupt").map(as_bool).unwrap_or(server);
        Ok(Config {
            discovery_max_stale,
            gossip,
            skip_leave_on_interrupt,
            session_ttl_min,
            dev,
            server,
            bootstrap: b("bootstrap") || dev,
            bootstrap_expect: int(&["bootstrap_expect"], 0),
            primary_datacenter: s("primary_datacenter").unwrap_or_else(|| datacenter.clone()),
            datacenter,
            node_name,
            node_id: s("node_id").unwrap_or_default().to_lowercase(),
            data_dir,
            client_addrs,
            http_addrs,
            dns_addrs,
            bind_addr,
            advertise_addr,
            ports,
            log_level,
            log_json: b("log_json"),
            pid_file: s("pid_file").map(PathBuf::from),
            enable_script_checks: b("enable_script_checks"),
            enable_local_script_checks: b("enable_local_script_checks") || b("enable_script_checks"),
            raft_multiplier: raft_multiplier.max(1) as u64,
            raft_snapshot_threshold: int(&["raft_snapshot_threshold"], 16384).max(16) as u64,
            raft_snapshot_interval,
            raft_trailing_logs: int(&["raft_trailing_logs"], 10240).max(0) as u64,
            node_meta,
            kv_max_value_size: int(&["limits", "kv_max_value_size"], 512 * 1024).max(1) as usize,
            txn_max_req_len: int(&["limits", "txn_max_req_len"], 512 * 1024).max(1) as usize,
            txn_max_ops: int(&["limits", "txn_max_ops"], MAX_TXN_OPS as i64).max(1) as usize,
            http_max_conns_per_client: int(&["limits", "http_max_conns_per_client"], 200).max(1) as usize,
            rpc_max_conns_per_client: int(&["limits", "rpc_max_conns_per_client"], 100).max(1) as usize,
            rpc_rate,
            rpc_max_burst,
            rpc_handshake_timeout,
            autopilot: autopilot_config(&m)?,
            check_update_interval,
            leave_on_terminate,
            domain: s("domain").unwrap_or_else(|| "consul".into()),
            dns: dns::DnsConfig::from_merged(&m)?,
            services: list(&m, "service", "services"),
            checks: list(&m, "check", "checks"),
            watches: list(&m, "watches", "watches")
                .iter()
                .enumerate()
                .map(|(i, w)| crate::watches::parse(w).map_err(|e| ConfigError(format!("watches[{i}]: {e}"))))
                .collect::<Result<_, _>>()?,
            merged: m,
            ignored,
        })
    }

    /// Uses the configured node ID, else the one saved in the data dir, else a new random one
    /// (saved when there is a data dir), as Consul does.
    pub fn ensure_node_id(&mut self) -> Result<(), ConfigError> {
        if !self.node_id.is_empty() {
            if uuid::Uuid::parse_str(&self.node_id).is_err() {
                return Err(ConfigError(format!("node_id: {:?} is not a valid UUID", self.node_id)));
            }
            return Ok(());
        }
        if let Some(d) = &self.data_dir {
            let p = d.join("node-id");
            if let Ok(id) = std::fs::read_to_string(&p) {
                let id = id.trim().to_string();
                if uuid::Uuid::parse_str(&id).is_ok() {
                    self.node_id = id;
                    return Ok(());
                }
            }
            let id = uuid::Uuid::new_v4().to_string();
            std::fs::create_dir_all(d).map_err(|e| ConfigError(format!("data_dir: {}: {e}", d.display())))?;
            std::fs::write(&p, &id).map_err(|e| ConfigError(format!("{}: {e}", p.display())))?;
            self.node_id = id;
        } else {
            self.node_id = uuid::Uuid::new_v4().to_string();
        }
        Ok(())
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn defaults() -> Value {
    json!({})
}

/// What `-dev` implies, as Consul's dev mode: an in-memory server that bootstraps itself, on loopback.
fn dev_defaults() -> Value {
    json!({
        "server": true,
        "bootstrap": true,
        "bind_addr": "127.0.0.1",
        "client_addr": "127.0.0.1",
        "log_level": "debug",
        "ports": { "grpc": 8502 },
        "disable_anonymous_signature": true,
        "disable_update_check": true,
    })
}

fn list(m: &Value, one: &str, many: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let keys: &[&str] = if one == many { &[one] } else { &[one, many] };
    for k in keys.iter().copied() {
        match m.get(k) {
            Some(Value::Array(a)) => out.extend(a.iter().cloned()),
            Some(v @ Value::Object(_)) => out.push(v.clone()),
            _ => {}
        }
    }
    out
}

/// Reads every config source named by flags, in order: files and directories as given, then `-hcl`.
fn sources(flags: &Flags) -> Result<Vec<(String, Value)>, ConfigError> {
    let mut out = Vec::new();
    for f in &flags.config_files {
        out.push((f.display().to_string(), read_file(f, flags.config_format.as_deref())?));
    }
    for d in &flags.config_dirs {
        out.extend(read_dir(d, flags.config_format.as_deref())?);
    }
    for (i, h) in flags.hcl.iter().enumerate() {
        out.push((format!("-hcl[{i}]"), parse_hcl(h).map_err(|e| ConfigError(format!("-hcl[{i}]: {e}")))?));
    }
    Ok(out)
}

/// Parses one config file, by extension (or `-config-format`).
pub fn read_file(path: &Path, format: Option<&str>) -> Result<Value, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError(format!("Error reading {}: {e}", path.display())))?;
    let ext = format.map(str::to_string).or_else(|| path.extension().and_then(|e| e.to_str()).map(str::to_string));
    let v = match ext.as_deref() {
        Some("json") => serde_json::from_str(&text).map_err(|e| format!("invalid JSON: {e}")),
        Some("hcl") => parse_hcl(&text),
        _ => {
            return Err(ConfigError(format!(
                "Error reading {}: unknown config format: use a .json or .hcl extension, or -config-format",
                path.display()
            )))
        }
    }
    .map_err(|e| ConfigError(format!("Error parsing {}: {e}", path.display())))?;
    if !v.is_object() {
        return Err(ConfigError(format!("Error parsing {}: the top level must be an object", path.display())));
    }
    Ok(v)
}

/// All `*.json` and `*.hcl` files of a directory, in lexical order (as Consul).
pub fn read_dir(dir: &Path, format: Option<&str>) -> Result<Vec<(String, Value)>, ConfigError> {
    let rd = std::fs::read_dir(dir).map_err(|e| ConfigError(format!("Error reading {}: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| format.is_some() || matches!(p.extension().and_then(|e| e.to_str()), Some("json" | "hcl")))
        .collect();
    files.sort();
    files.into_iter().map(|f| Ok((f.display().to_string(), read_file(&f, format)?))).collect()
}

fn parse_hcl(text: &str) -> Result<Value, String> {
    hcl::from_str::<Value>(text).map_err(|e| format!("invalid HCL: {e}"))
}

/// Checks a parsed source against the schema of keys Consul accepts.
fn check_tree(
    v: &Value,
    keys: &'static [Key],
    path: &mut Vec<String>,
    src: &str,
    ignored: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let Value::Object(o) = v else {
        return Err(ConfigError(format!("Error parsing {src}: {}: expected an object", dotted(path))));
    };
    for (k, val) in o {
        let Some(key) = consul_keys::find(keys, k) else {
            path.push(k.clone());
            let e = ConfigError(format!("Error parsing {src}: invalid config key {}", dotted(path)));
            path.pop();
            return Err(e);
        };
        path.push(key.name.to_string());
        check_value(val, key.kind, path, src, ignored)?;
        let d = dotted(path);
        let leaf = !matches!(key.kind, Kind::Block(_) | Kind::BlockList(_));
        if leaf && !IMPLEMENTED.contains(&d.as_str()) && !IMPLEMENTED.iter().any(|i| d.starts_with(&format!("{i}."))) {
            ignored.push(d);
        }
        path.pop();
    }
    Ok(())
}

fn check_value(
    v: &Value,
    kind: Kind,
    path: &mut Vec<String>,
    src: &str,
    ignored: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let bad =
        |want: &str| ConfigError(format!("Error parsing {src}: {}: expected {want}, got {}", dotted(path), short(v)));
    match kind {
        Kind::Str => {
            if !(v.is_string() || v.is_number() || v.is_boolean()) {
                return Err(bad("a string"));
            }
        }
        Kind::Bool => {
            let ok = v.is_boolean() || matches!(v.as_str(), Some("true" | "false" | "1" | "0" | "True" | "False"));
            if !ok {
                return Err(bad("a boolean"));
            }
        }
        Kind::Int => {
            if as_i64(v).is_none() {
                return Err(bad("an integer"));
            }
        }
        Kind::Duration => {
            if duration(v).is_err() {
                return Err(bad("a duration such as \"10s\""));
            }
        }
        Kind::StrList => match v {
            Value::Array(a) if a.iter().all(|x| x.is_string()) => {}
            Value::String(_) => {}
            _ => return Err(bad("a list of strings")),
        },
        Kind::Map => match v {
            Value::Object(o) if o.values().all(|x| !x.is_object() && !x.is_array()) => {}
            Value::Array(a) if a.iter().all(|x| x.is_object()) => {}
            _ => return Err(bad("an object of string values")),
        },
        Kind::Any => {}
        Kind::Block(keys) => match v {
            Value::Object(_) => check_tree(v, keys, path, src, ignored)?,
            // HCL decodes `foo { }` blocks as a list of objects.
            Value::Array(a) if a.iter().all(|x| x.is_object()) => {
                for x in a {
                    check_tree(x, keys, path, src, ignored)?;
                }
            }
            _ => return Err(bad("an object")),
        },
        Kind::BlockList(keys) => match v {
            Value::Object(_) => check_tree(v, keys, path, src, ignored)?,
            Value::Array(a) => {
                for x in a {
                    check_tree(x, keys, path, src, ignored)?;
                }
            }
            _ => return Err(bad("a list of objects")),
        },
    }
    Ok(())
}

fn dotted(path: &[String]) -> String {
    path.join(".")
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!("{}...", &s[..s.char_indices().nth(57).map(|(i, _)| i).unwrap_or(s.len())])
    } else {
        s
    }
}

/// Merges `src` into `dst`: objects deeply, the service and check lists by appending, the rest by
/// replacing. HCL blocks that decoded as one-element lists are flattened to objects first.
fn merge(dst: &mut Value, src: Value) {
    let Value::Object(src) = src else { return };
    let Value::Object(d) = dst else { return };
    for (k, v) in src {
        let key = canonical_key(&k);
        let v = flatten_blocks(&key, v);
        if ["service", "services", "check", "checks", "watches"].contains(&key.as_str()) {
            let list = match d.remove(&key) {
                Some(Value::Array(mut a)) => {
                    match v {
                        Value::Array(b) => a.extend(b),
                        o => a.push(o),
                    }
                    a
                }
                Some(o) => {
                    let mut a = vec![o];
                    match v {
                        Value::Array(b) => a.extend(b),
                        o => a.push(o),
                    }
                    a
                }
                None => match v {
                    Value::Array(b) => b,
                    o => vec![o],
                },
            };
            d.insert(key, Value::Array(list));
            continue;
        }
        match (d.get_mut(&key), v) {
            (Some(cur @ Value::Object(_)), v @ Value::Object(_)) => merge(cur, v),
            (_, v) => {
                d.insert(key, v);
            }
        }
    }
}

/// Config keys match case-insensitively (Consul's decoder does); store them in their schema spelling.
fn canonical_key(k: &str) -> String {
    consul_keys::find(TOP, k).map(|key| key.name.to_string()).unwrap_or_else(|| k.to_string())
}

fn flatten_blocks(key: &str, v: Value) -> Value {
    match consul_keys::find(TOP, key).map(|k| k.kind) {
        Some(Kind::Block(keys)) => match v {
            Value::Array(a) => {
                let mut out = Value::Object(Map::new());
                for x in a {
                    merge_nested(&mut out, x, keys);
                }
                out
            }
            Value::Object(_) => {
                let mut out = Value::Object(Map::new());
                merge_nested(&mut out, v, keys);
                out
            }
            o => o,
        },
        _ => v,
    }
}

fn merge_nested(dst: &mut Value, src: Value, keys: &'static [Key]) {
    let (Value::Object(d), Value::Object(s)) = (dst, src) else { return };
    for (k, v) in s {
        let key = consul_keys::find(keys, &k);
        let name = key.map(|k| k.name.to_string()).unwrap_or(k);
        let v = match key.map(|k| k.kind) {
            Some(Kind::Block(sub)) => {
                let mut out = Value::Object(Map::new());
                match v {
                    Value::Array(a) => a.into_iter().for_each(|x| merge_nested(&mut out, x, sub)),
                    o => merge_nested(&mut out, o, sub),
                }
                out
            }
            Some(Kind::Map) => match v {
                Value::Array(a) => {
                    let mut m = Map::new();
                    for x in a {
                        if let Value::Object(o) = x {
                            m.extend(o);
                        }
                    }
                    Value::Object(m)
                }
                o => o,
            },
            _ => v,
        };
        d.insert(name, v);
    }
}

/// Flags as a config source, applied last.
fn flag_values(f: &Flags) -> Result<Value, ConfigError> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    if f.server {
        put("server", json!(true));
    }
    if f.bootstrap {
        put("bootstrap", json!(true));
    }
    if let Some(v) = f.bootstrap_expect {
        put("bootstrap_expect", json!(v));
    }
    for (k, v) in [
        ("node_name", &f.node),
        ("node_id", &f.node_id),
        ("datacenter", &f.datacenter),
        ("data_dir", &f.data_dir),
        ("client_addr", &f.client),
        ("bind_addr", &f.bind),
        ("advertise_addr", &f.advertise),
        ("log_level", &f.log_level),
        ("pid_file", &f.pid_file),
        ("domain", &f.domain),
    ] {
        if let Some(v) = v {
            put(k, json!(v));
        }
    }
    if f.log_json {
        put("log_json", json!(true));
    }
    for (k, v) in [
        ("start_join", &f.join),
        ("retry_join", &f.retry_join),
        ("start_join_wan", &f.join_wan),
        ("retry_join_wan", &f.retry_join_wan),
    ] {
        if !v.is_empty() {
            put(k, json!(v));
        }
    }
    for (k, v) in [
        ("retry_interval", &f.retry_interval),
        ("retry_interval_wan", &f.retry_interval_wan),
        ("encrypt", &f.encrypt),
        ("advertise_addr_wan", &f.advertise_wan),
    ] {
        if let Some(v) = v {
            put(k, json!(v));
        }
    }
    for (k, v) in [("retry_max", f.retry_max), ("retry_max_wan", f.retry_max_wan)] {
        if let Some(v) = v {
            put(k, json!(v));
        }
    }
    if f.rejoin {
        put("rejoin_after_leave", json!(true));
    }
    if f.disable_keyring_file {
        put("disable_keyring_file", json!(true));
    }
    if f.enable_script_checks {
        put("enable_script_checks", json!(true));
    }
    if f.enable_local_script_checks {
        put("enable_local_script_checks", json!(true));
    }
    let mut ports = Map::new();
    for (k, v) in [
        ("http", f.http_port),
        ("https", f.https_port),
        ("dns", f.dns_port),
        ("grpc", f.grpc_port),
        ("serf_lan", f.serf_lan_port),
        ("serf_wan", f.serf_wan_port),
        ("server", f.server_port),
    ] {
        if let Some(p) = v {
            ports.insert(k.into(), json!(p));
        }
    }
    if !ports.is_empty() {
        m.insert("ports".into(), Value::Object(ports));
    }
    if !f.node_meta.is_empty() {
        let mut meta = Map::new();
        for kv in &f.node_meta {
            let (k, v) =
                kv.split_once(':').ok_or_else(|| ConfigError(format!("-node-meta: {kv:?} is not key:value")))?;
            meta.insert(k.into(), json!(v));
        }
        m.insert("node_meta".into(), Value::Object(meta));
    }
    Ok(Value::Object(m))
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// `autopilot { ... }`, over Consul's defaults.
fn autopilot_config(m: &Value) -> Result<cairn_types::structs::AutopilotConfig, ConfigError> {
    let mut a = cairn_types::structs::AutopilotConfig::default();
    let Some(b) = m.get("autopilot") else { return Ok(a) };
    let dur = |k: &str, d: Duration| -> Result<Duration, ConfigError> {
        b.get(k).map(|v| duration(v).map_err(|e| ConfigError(format!("autopilot.{k}: {e}")))).unwrap_or(Ok(d))
    };
    let int = |k: &str, d: u64| -> Result<u64, ConfigError> {
        match b.get(k) {
            None => Ok(d),
            Some(v) => as_i64(v)
                .filter(|x| *x >= 0)
                .map(|x| x as u64)
                .ok_or_else(|| ConfigError(format!("autopilot.{k}: must be a non-negative integer"))),
        }
    };
    let text = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    if let Some(v) = b.get("cleanup_dead_servers") {
        a.cleanup_dead_servers = as_bool(v);
    }
    if let Some(v) = b.get("disable_upgrade_migration") {
        a.disable_upgrade_migration = as_bool(v);
    }
    a.last_contact_threshold = dur("last_contact_threshold", a.last_contact_threshold)?;
    a.server_stabilization_time = dur("server_stabilization_time", a.server_stabilization_time)?;
    a.max_trailing_logs = int("max_trailing_logs", a.max_trailing_logs)?;
    a.min_quorum = int("min_quorum", a.min_quorum as u64)?.min(u32::MAX as u64) as u32;
    a.redundancy_zone_tag = text("redundancy_zone_tag");
    a.upgrade_version_tag = text("upgrade_version_tag");
    Ok(a)
}

fn gossip_timing(
    m: &Value,
    block: &str,
    base: cairn_cluster::gossip::Timing,
) -> Result<cairn_cluster::gossip::Timing, ConfigError> {
    let Some(b) = m.get(block) else { return Ok(base) };
    let mut t = base;
    let dur = |k: &str, d: Duration| -> Result<Duration, ConfigError> {
        match b.get(k) {
            Some(v) => {
                let x = duration(v).map_err(|e| ConfigError(format!("{block}.{k}: {e}")))?;
                if x.is_zero() {
                    return Err(ConfigError(format!("{block}.{k}: must be greater than zero")));
                }
                Ok(x)
            }
            None => Ok(d),
        }
    };
    let int = |k: &str, d: i64| -> Result<i64, ConfigError> {
        match b.get(k).map(as_i64) {
            Some(Some(x)) if x > 0 => Ok(x),
            Some(_) => Err(ConfigError(format!("{block}.{k}: must be a positive integer"))),
            None => Ok(d),
        }
    };
    t.gossip_interval = dur("gossip_interval", t.gossip_interval)?;
    t.probe_interval = dur("probe_interval", t.probe_interval)?;
    t.probe_timeout = dur("probe_timeout", t.probe_timeout)?;
    t.gossip_nodes = int("gossip_nodes", t.gossip_nodes as i64)? as usize;
    t.retransmit_mult = int("retransmit_mult", t.retransmit_mult as i64)?.min(64) as u32;
    t.suspicion_mult = int("suspicion_mult", t.suspicion_mult as i64)?.min(64) as u32;
    Ok(t)
}

fn gossip_config(m: &Value, dev: bool, advertise: IpAddr) -> Result<GossipConfig, ConfigError> {
    use cairn_cluster::gossip::Timing;
    let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
    let dur = |k: &str, d: Duration| -> Result<Duration, ConfigError> {
        m.get(k).map(|v| duration(v).map_err(|e| ConfigError(format!("{k}: {e}")))).unwrap_or(Ok(d))
    };
    let encrypt = match s("encrypt").filter(|e| !e.is_empty()) {
        None => None,
        Some(k) => {
            use base64::Engine;
            let key = base64::engine::general_purpose::STANDARD
                .decode(k.trim())
                .map_err(|e| ConfigError(format!("encrypt has invalid key: {e}")))?;
            if ![16, 24, 32].contains(&key.len()) {
                return Err(ConfigError(format!(
                    "encrypt has invalid key: key size must be 16, 24 or 32 bytes, got {}",
                    key.len()
                )));
            }
            Some(key)
        }
    };
    let advertise_wan = match s("advertise_addr_wan") {
        Some(a) => a.parse().map_err(|_| ConfigError(format!("advertise_addr_wan: invalid IP address {a:?}")))?,
        None => advertise,
    };
    if advertise_wan.is_unspecified() {
        return Err(ConfigError("Advertise WAN address cannot be 0.0.0.0, :: or [::]".into()));
    }
    let base = |t: Timing| if dev { Timing::dev() } else { t };
    let mut retry_join = str_list(m.get("start_join"));
    retry_join.extend(str_list(m.get("retry_join")));
    let mut retry_join_wan = str_list(m.get("start_join_wan"));
    retry_join_wan.extend(str_list(m.get("retry_join_wan")));
    let max = |k: &str| m.get(k).and_then(as_i64).unwrap_or(0).clamp(0, u32::MAX as i64) as u32;
    Ok(GossipConfig {
        advertise_wan,
        retry_join,
        retry_join_wan,
        retry_interval: dur("retry_interval", Duration::from_secs(30))?,
        retry_interval_wan: dur("retry_interval_wan", Duration::from_secs(30))?,
        retry_max: max("retry_max"),
        retry_max_wan: max("retry_max_wan"),
        encrypt,
        verify_incoming: m.get("encrypt_verify_incoming").map(as_bool).unwrap_or(true),
        verify_outgoing: m.get("encrypt_verify_outgoing").map(as_bool).unwrap_or(true),
        rejoin_after_leave: m.get("rejoin_after_leave").map(as_bool).unwrap_or(false),
        reconnect_timeout: dur("reconnect_timeout", Duration::from_secs(72 * 3600))?,
        reconnect_timeout_wan: dur("reconnect_timeout_wan", Duration::from_secs(72 * 3600))?,
        advertise_reconnect_timeout: dur("advertise_reconnect_timeout", Duration::ZERO)?,
        lan: gossip_timing(m, "gossip_lan", base(Timing::lan()))?,
        wan: gossip_timing(m, "gossip_wan", base(Timing::wan()))?,
        disable_keyring_file: m.get("disable_keyring_file").map(as_bool).unwrap_or(dev),
    })
}

fn as_bool(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => matches!(s.as_str(), "true" | "1" | "True"),
        Value::Number(n) => n.as_i64() == Some(1),
        _ => false,
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        o => o.to_string(),
    }
}

/// A duration value: a Go duration string, or an integer number of nanoseconds (as Go decodes it).
pub fn duration(v: &Value) -> Result<Duration, String> {
    match v {
        Value::String(s) => cairn_types::duration::parse(s),
        Value::Number(n) => n.as_u64().map(Duration::from_nanos).ok_or_else(|| format!("invalid duration {n}")),
        o => Err(format!("invalid duration {o}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn hcl_and_json_files_merge_and_flags_win() {
        let d = tempfile::tempdir().unwrap();
        let a = write(d.path(), "a.hcl", "ports { http = 8501 }\nnode_name = \"n1\"\ndatacenter = \"DC2\"\nperformance { raft_multiplier = 3 }\nservice { name = \"web\" }\n");
        let b = write(
            d.path(),
            "b.json",
            r#"{"ports": {"dns": -1}, "services": [{"name": "db"}], "enable_script_checks": true}"#,
        );
        let flags = Flags { dev: true, config_files: vec![a, b], node: Some("flagnode".into()), ..Default::default() };
        let c = Config::load(&flags).unwrap();
        assert_eq!(c.ports.http, 8501);
        assert_eq!(c.ports.dns, -1);
        assert_eq!(c.node_name, "flagnode");
        assert_eq!(c.datacenter, "dc2");
        assert_eq!(c.raft_multiplier, 3);
        assert_eq!(c.services.len(), 2);
        assert!(c.enable_script_checks);
    }

    #[test]
    fn advertise_reconnect_timeout_is_for_clients_and_reconnect_timeouts_have_no_minimum() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        let a = write(d.path(), "c.hcl", "advertise_reconnect_timeout = \"15m\"\nreconnect_timeout = \"1h\"\n");
        let data = data.to_str().unwrap().to_string();
        let client = Flags { config_files: vec![a], data_dir: Some(data), ..Default::default() };
        let c = Config::load(&client).unwrap();
        assert_eq!(c.gossip.advertise_reconnect_timeout, Duration::from_secs(900));
        // Consul 1.x checks no minimum here (its docs' ">= 8h" predates its config rewrite).
        assert_eq!(c.gossip.reconnect_timeout, Duration::from_secs(3600));
        let server = Flags { server: true, ..client };
        let err = Config::load(&server).unwrap_err().0;
        assert_eq!(err, "advertise_reconnect_timeout can only be used on a client");
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let d = tempfile::tempdir().unwrap();
        let a = write(d.path(), "bad.json", r#"{"ports": {"htttp": 1}}"#);
        let err = Config::load(&Flags { dev: true, config_files: vec![a], ..Default::default() }).unwrap_err().0;
        assert!(err.contains("bad.json") && err.contains("ports.htttp"), "{err}");
    }

    #[test]
    fn bad_value_names_file_and_key() {
        let d = tempfile::tempdir().unwrap();
        let a = write(d.path(), "bad.hcl", "ports { http = \"x\" }\n");
        let err = Config::load(&Flags { dev: true, config_files: vec![a], ..Default::default() }).unwrap_err().0;
        assert!(err.contains("bad.hcl") && err.contains("ports.http") && err.contains("integer"), "{err}");
        let b = write(d.path(), "bad2.json", r#"{"check_update_interval": "ten"}"#);
        let err = Config::load(&Flags { dev: true, config_files: vec![b], ..Default::default() }).unwrap_err().0;
        assert!(err.contains("check_update_interval"), "{err}");
    }

    #[test]
    fn known_but_unimplemented_keys_are_ignored_by_name() {
        let d = tempfile::tempdir().unwrap();
        let a = write(
            d.path(),
            "c.hcl",
            "telemetry { prometheus_retention_time = \"30s\" }\nacl { enabled = false }\nretry_join = [\"1.2.3.4\"]\nsegment = \"x\"\n",
        );
        let c = Config::load(&Flags { dev: true, config_files: vec![a], ..Default::default() }).unwrap();
        assert!(c.ignored.contains(&"telemetry.prometheus_retention_time".to_string()), "{:?}", c.ignored);
        assert!(c.ignored.contains(&"acl.enabled".to_string()));
        assert!(!c.ignored.contains(&"retry_join".to_string()), "retry_join is implemented");
        assert!(c.ignored.contains(&"segment".to_string()));
    }

    #[test]
    fn implemented_keys_are_not_reported_as_ignored() {
        let d = tempfile::tempdir().unwrap();
        let a = write(
            d.path(),
            "c.json",
            r#"{"session_ttl_min": "5s", "watches": [{"type": "nodes", "args": ["true"]}], "ports": {"http": 1}}"#,
        );
        let c = Config::load(&Flags { dev: true, config_files: vec![a], ..Default::default() }).unwrap();
        assert!(c.ignored.is_empty(), "{:?}", c.ignored);
        assert_eq!(c.watches.len(), 1);
    }

    #[test]
    fn config_dir_is_read_in_lexical_order() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "2.json", r#"{"node_name": "second"}"#);
        write(d.path(), "1.hcl", "node_name = \"first\"\n");
        write(d.path(), "ignored.txt", "not config");
        let c = Config::load(&Flags { dev: true, config_dirs: vec![d.path().into()], ..Default::default() }).unwrap();
        assert_eq!(c.node_name, "second");
    }

    #[test]
    fn data_dir_required_outside_dev() {
        assert!(Config::load(&Flags::default()).is_err());
        let c = Config::load(&Flags { data_dir: Some("/tmp/x".into()), ..Default::default() }).unwrap();
        assert_eq!(c.data_dir, Some(PathBuf::from("/tmp/x")));
    }

    #[test]
    fn port_minus_one_turns_off() {
        let c = Config::load(&Flags { dev: true, dns_port: Some(-1), ..Default::default() }).unwrap();
        assert_eq!(c.ports.dns, -1);
        assert!(Config::load(&Flags { dev: true, http_port: Some(70000), ..Default::default() }).is_err());
    }
}
