//! `/v1/agent/*`: this agent's own view: itself, its members, its local services and checks,
//! maintenance, reload and leave, metrics.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use serde_json::{json, Value};

use cairn_store::state::aggregate_status;
use cairn_types::structs::{
    HealthCheck, NodeService, HEALTH_CRITICAL, HEALTH_MAINT, HEALTH_PASSING, HEALTH_WARNING, NODE_MAINT_CHECK_ID,
    SERVICE_MAINT_PREFIX,
};
use cairn_types::{CAIRN_VERSION, CONSUL_COMPAT_VERSION};

use super::{json_response, AgentRef, HttpError, HttpResult, Params, QueryOpts};
use crate::Agent;

pub fn routes() -> Router<AgentRef> {
    Router::new()
        .route("/v1/agent/self", get(self_))
        .route("/v1/agent/members", get(members))
        .route("/v1/agent/join/{addr}", put(join))
        .route("/v1/agent/force-leave/{node}", put(force_leave))
        .route("/v1/agent/services", get(services))
        .route("/v1/agent/service/{id}", get(service))
        .route("/v1/agent/service/register", put(service_register))
        .route("/v1/agent/service/deregister/{id}", put(service_deregister))
        .route("/v1/agent/service/maintenance/{id}", put(service_maintenance))
        .route("/v1/agent/checks", get(checks))
        .route("/v1/agent/check/register", put(check_register))
        .route("/v1/agent/check/deregister/{id}", put(check_deregister))
        .route("/v1/agent/check/pass/{id}", put(check_pass))
        .route("/v1/agent/check/warn/{id}", put(check_warn))
        .route("/v1/agent/check/fail/{id}", put(check_fail))
        .route("/v1/agent/check/update/{id}", put(check_update))
        .route("/v1/agent/maintenance", put(node_maintenance))
        .route("/v1/agent/health/service/name/{name}", get(health_by_name))
        .route("/v1/agent/health/service/id/{id}", get(health_by_id))
        .route("/v1/agent/reload", put(reload))
        .route("/v1/agent/leave", put(leave))
        .route("/v1/agent/metrics", get(metrics))
        .route("/v1/agent/monitor", get(monitor))
        .route("/v1/agent/token/{*which}", put(super::acl_disabled))
}

/// `GET /v1/agent/monitor?loglevel=&logjson`: streams the agent's log lines at that level, one
/// per line, until the client goes away or the agent stops.
async fn monitor(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    let name = p.get("loglevel").unwrap_or("info");
    let Some(level) = crate::logging::parse_level(name) else {
        return Err(HttpError::bad(format!("Unknown log level: {name}")));
    };
    let json = p.flag("logjson");
    let Some(mon) = crate::logging::Monitor::subscribe(level) else {
        return Err(HttpError::internal("logging is not initialised"));
    };
    // One line per item until the agent stops; dropping the body (the client left) drops the
    // monitor, which unsubscribes it.
    let stream = futures::stream::unfold((mon, agent), move |(mut mon, agent)| async move {
        let line = tokio::select! {
            l = mon.next() => l,
            _ = agent.shutting_down() => return None,
        };
        let text = match line {
            Ok(l) => format!("{}\n", if json { &l.json } else { &l.text }),
            Err(n) => format!("Monitor: dropped {n} logs during monitor request\n"),
        };
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(text)), (mon, agent)))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    Ok(r)
}

/// The agent's service as `/v1/agent/services` shows it (Consul's `AgentService`).
fn agent_service(s: &NodeService, dc: &str) -> Value {
    let mut v = json!({
        "ID": s.id,
        "Service": s.service,
        "Tags": s.tags,
        "Meta": s.meta,
        "Port": s.port,
        "Address": s.address,
        "Weights": s.weights,
        "EnableTagOverride": s.enable_tag_override,
        "Datacenter": dc,
    });
    if !s.kind.is_empty() {
        v["Kind"] = json!(s.kind);
    }
    if !s.tagged_addresses.is_empty() {
        v["TaggedAddresses"] = json!(s.tagged_addresses);
    }
    if !s.socket_path.is_empty() {
        v["SocketPath"] = json!(s.socket_path);
    }
    for (k, x) in [("Proxy", &s.proxy), ("Connect", &s.connect), ("Locality", &s.locality)] {
        if let Some(x) = x {
            v[k] = x.clone();
        }
    }
    v
}

/// A pool member as `/v1/agent/members` shows it.
pub fn serf_member_json(m: &cairn_gossip::serf::Member) -> Value {
    json!({
        "Name": m.name,
        "Addr": m.addr.ip().to_string(),
        "Port": m.addr.port(),
        "Tags": m.tags.to_map(),
        "Status": m.status as u8,
        "ProtocolMin": m.protocol[0],
        "ProtocolMax": m.protocol[1],
        "ProtocolCur": m.protocol[2],
        "DelegateMin": m.delegate[0],
        "DelegateMax": m.delegate[1],
        "DelegateCur": m.delegate[2],
    })
}

/// This agent as a member of a pool (`wan` for the WAN pool): from the pool when there is one,
/// else as it would be announced.
fn member_json_in(agent: &Agent, wan: bool) -> Value {
    let pool = if wan { agent.wan.get() } else { agent.lan.get() };
    let pc = agent.pool_config(wan);
    if let Some(m) = pool.and_then(|p| p.members().into_iter().find(|m| m.name == pc.member_name())) {
        return serf_member_json(&m);
    }
    json!({
        "Name": pc.member_name(),
        "Addr": pc.advertise.ip().to_string(),
        "Port": pc.advertise.port(),
        "Tags": pc.tags(),
        "Status": 1,
        "ProtocolMin": 1,
        "ProtocolMax": 5,
        "ProtocolCur": 2,
        "DelegateMin": 2,
        "DelegateMax": 5,
        "DelegateCur": 4,
    })
}

fn member_json(agent: &Agent) -> Value {
    member_json_in(agent, false)
}

async fn self_(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    let c = agent.config();
    let raft = agent.server().ok().map(|s| s.stats());
    let checks = agent.local.checks();
    let body = json!({
        "Config": {
            "Datacenter": c.datacenter,
            "PrimaryDatacenter": c.primary_datacenter,
            "NodeName": c.node_name,
            "NodeID": c.node_id,
            "Partition": "",
            "Revision": "cairn",
            "Server": c.server,
            "Version": CONSUL_COMPAT_VERSION,
            "BuildDate": "1970-01-01T00:00:00Z",
        },
        "DebugConfig": debug_config(&agent),
        "Coord": agent.coordinate(),
        "Member": member_json(&agent),
        "Stats": {
            "agent": {
                "check_monitors": "0",
                "check_ttls": checks.values().filter(|c| c.check.check_type == "ttl").count().to_string(),
                "checks": checks.len().to_string(),
                "services": agent.local.services().len().to_string(),
            },
            "build": { "prerelease": "", "revision": "cairn", "version": CONSUL_COMPAT_VERSION, "cairn_version": CAIRN_VERSION },
            "consul": {
                "server": c.server.to_string(),
                "leader": agent.is_leader().to_string(),
                "leader_addr": agent.server().ok().and_then(|s| s.leader_addr()).unwrap_or_default(),
                "bootstrap": c.bootstrap.to_string(),
                "known_datacenters": "1",
            },
            "raft": raft,
            "runtime": {
                "arch": std::env::consts::ARCH,
                "os": std::env::consts::OS,
                "cpu_count": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).to_string(),
                "version": "rust",
            },
        },
        "Meta": c.node_meta,
        "xDS": {
            "SupportedProxies": { "envoy": [] },
            "Port": c.ports.grpc,
            "Ports": { "Plaintext": c.ports.grpc, "TLS": c.ports.grpc_tls },
        },
    });
    Ok(json_response(None, p.has("pretty"), &body))
}

fn debug_config(agent: &Agent) -> Value {
    let c = agent.config();
    json!({
        "Datacenter": c.datacenter,
        "NodeName": c.node_name,
        "NodeID": c.node_id,
        "DataDir": c.data_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default(),
        "DevMode": c.dev,
        "ServerMode": c.server,
        "Bootstrap": c.bootstrap,
        "BootstrapExpect": c.bootstrap_expect,
        "BindAddr": c.bind_addr.to_string(),
        "AdvertiseAddrLAN": c.advertise_addr.to_string(),
        "ClientAddrs": c.client_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "HTTPPort": c.ports.http,
        "HTTPSPort": c.ports.https,
        "DNSPort": c.ports.dns,
        "GRPCPort": c.ports.grpc,
        "SerfPortLAN": c.ports.serf_lan,
        "SerfPortWAN": c.ports.serf_wan,
        "ServerPort": c.ports.server,
        "Logging": { "LogLevel": c.log_level, "LogJSON": c.log_json },
        "EnableScriptChecks": c.enable_script_checks,
        "EnableLocalScriptChecks": c.enable_local_script_checks,
        "RaftMultiplier": c.raft_multiplier,
        "RaftSnapshotThreshold": c.raft_snapshot_threshold,
        "RaftSnapshotInterval": cairn_types::duration::format(c.raft_snapshot_interval),
        "RaftTrailingLogs": c.raft_trailing_logs,
        "KVMaxValueSize": c.kv_max_value_size,
        "TxnMaxReqLen": c.txn_max_req_len,
        "TxnMaxOps": c.txn_max_ops,
        "HTTPMaxConnsPerClient": c.http_max_conns_per_client,
        "NodeMeta": c.node_meta,
        "IgnoredKeys": c.ignored,
    })
}

/// `GET /v1/agent/members[?wan=1][&segment=]`. Quirk kept: `wan` counts only with a value, so a
/// bare `?wan` lists the LAN pool, as Consul's handler reads it.
async fn members(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    let wan = p.get("wan").is_some_and(|v| !v.is_empty());
    let segment = p.get("segment").unwrap_or("");
    if wan && !segment.is_empty() && segment != "_all" {
        return Err(HttpError::bad("Cannot provide a segment with wan=true"));
    }
    let pool = if wan { agent.wan.get() } else { agent.lan.get() };
    let list: Vec<Value> = match pool {
        Some(pool) => pool.members().iter().map(serf_member_json).collect(),
        // A client has no WAN pool: Consul answers null.
        None if wan && !agent.config().server => return Ok(json_response(None, p.has("pretty"), &Value::Null)),
        None => vec![member_json_in(&agent, wan)],
    };
    Ok(json_response(None, p.has("pretty"), &list))
}

/// `PUT /v1/agent/join/:address[?wan=1]`.
async fn join(State(agent): State<AgentRef>, Path(addr): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    let wan = p.get("wan").is_some_and(|v| !v.is_empty());
    let c = agent.config();
    if wan && !c.server {
        return Err(HttpError::internal("Must be a server to join WAN cluster"));
    }
    let pool = if wan { agent.wan.get() } else { agent.lan.get() };
    let Some(pool) = pool else {
        return Err(HttpError::internal(if wan {
            "WAN Federation is disabled"
        } else {
            "LAN gossip is disabled (ports.serf_lan = -1)"
        }));
    };
    pool.join(&[addr]).await.map_err(HttpError::internal)?;
    Ok(StatusCode::OK.into_response())
}

/// `PUT /v1/agent/force-leave/:node[?prune][&wan]`: `prune` and `wan` count when present.
async fn force_leave(State(agent): State<AgentRef>, Path(node): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    let (prune, wan) = (p.has("prune"), p.has("wan"));
    let c = agent.config();
    if wan && !c.server {
        return Err(HttpError::internal("Must be a server to force-leave a node from the WAN cluster"));
    }
    tracing::info!(target: "agent", node = %node, "Force leaving node");
    let mut found = false;
    let mut errors = Vec::new();
    let targets: Vec<(&cairn_cluster::gossip::Pool, String, &str)> = if wan {
        agent.wan.get().map(|w| (w, node.clone(), "WAN")).into_iter().collect()
    } else {
        let wan_name = if node.ends_with(&format!(".{}", c.datacenter)) {
            node.clone()
        } else {
            format!("{node}.{}", c.datacenter)
        };
        [agent.lan.get().map(|l| (l, node.clone(), "LAN")), agent.wan.get().map(|w| (w, wan_name, "WAN"))]
            .into_iter()
            .flatten()
            .collect()
    };
    for (pool, name, which) in targets {
        if !pool.members().iter().any(|m| m.name == name) {
            continue;
        }
        found = true;
        if let Err(e) = pool.force_leave(&name, prune).await {
            errors.push(format!("could not remove failed node from {which}: {e}"));
        }
    }
    if !found {
        return Err(HttpError::internal(format!("agent: No node found with name '{node}'")));
    }
    if !errors.is_empty() {
        return Err(HttpError::internal(errors.join("\n")));
    }
    Ok(StatusCode::OK.into_response())
}

async fn services(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    let q = QueryOpts::parse(&p)?;
    q.check_filter_with(|| {
        let mut shape = agent_service(&NodeService::default(), "");
        for k in ["Proxy", "Connect", "Locality", "SocketPath", "Kind", "TaggedAddresses"] {
            shape[k] = Value::Null;
        }
        shape
    })?;
    let dc = agent.config().datacenter.clone();
    let mut out = serde_json::Map::new();
    for (id, s) in agent.local.services() {
        let v = agent_service(&s, &dc);
        if q.filter.as_ref().map(|f| f.matches(&v)).unwrap_or(true) {
            out.insert(id, v);
        }
    }
    Ok(json_response(None, q.pretty, &out))
}

/// A stable hash of a service's definition, for `?hash=` blocking (`X-Consul-ContentHash`).
fn content_hash(v: &Value) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    format!("{:016x}", h.finish())
}

async fn service(State(agent): State<AgentRef>, Path(id): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    let q = QueryOpts::parse(&p)?;
    let want_hash = p.get("hash").unwrap_or("").to_string();
    let deadline = tokio::time::Instant::now() + q.wait;
    let mut rx = agent.local.watchers.subscribe();
    loop {
        let Some(s) = agent.local.service(&id) else {
            return Err(HttpError::not_found(format!("unknown service ID: {id}")));
        };
        let mut v = agent_service(&s, &agent.config().datacenter);
        let hash = content_hash(&v);
        if want_hash.is_empty() || want_hash != hash || tokio::time::Instant::now() >= deadline {
            v["ContentHash"] = json!(hash);
            let mut r = json_response(None, q.pretty, &v);
            r.headers_mut()
                .insert("X-Consul-ContentHash", HeaderValue::from_str(&hash).unwrap_or(HeaderValue::from_static("")));
            return Ok(r);
        }
        tokio::select! {
            _ = rx.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = agent.shutting_down() => {}
        }
    }
}

async fn service_register(State(agent): State<AgentRef>, RawQuery(raw): RawQuery, body: Bytes) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    let v = super::decode_checked(&body, &cairn_types::schema::SERVICE)?;
    if !v.is_object() {
        return Err(HttpError::bad("Request decode failed: expected a JSON object"));
    }
    let svc = crate::parse_service(&v).map_err(HttpError::bad)?;
    super::catalog::validate_service(&svc)?;
    agent.add_service_def(&v, p.flag("replace-existing-checks")).map_err(HttpError::bad)?;
    Ok(StatusCode::OK.into_response())
}

async fn service_deregister(State(agent): State<AgentRef>, Path(id): Path<String>) -> HttpResult {
    if !agent.remove_service(&id) {
        return Err(HttpError::not_found(format!(
            "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
        )));
    }
    Ok(StatusCode::OK.into_response())
}

async fn checks(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    let q = QueryOpts::parse(&p)?;
    q.check_filter::<HealthCheck>()?;
    let mut out = serde_json::Map::new();
    for (id, c) in agent.local.checks() {
        let v = serde_json::to_value(&c.check).unwrap_or_default();
        if q.filter.as_ref().map(|f| f.matches(&v)).unwrap_or(true) {
            out.insert(id, v);
        }
    }
    Ok(json_response(None, q.pretty, &out))
}

async fn check_register(State(agent): State<AgentRef>, body: Bytes) -> HttpResult {
    let v = super::decode_checked(&body, &cairn_types::schema::CHECK)?;
    // Consul 1.11+: a check for a service this agent does not have is 404, not 400.
    if let Some(sid) = v.get("ServiceID").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        if agent.local.service(sid).is_none() {
            return Err(HttpError::not_found(format!("ServiceID {sid:?} does not exist")));
        }
    }
    agent.add_check_def(&v).map_err(HttpError::bad)?;
    Ok(StatusCode::OK.into_response())
}

async fn check_deregister(State(agent): State<AgentRef>, Path(id): Path<String>) -> HttpResult {
    if !agent.remove_check(&id) {
        return Err(HttpError::not_found(format!("Unknown check ID {id:?}")));
    }
    Ok(StatusCode::OK.into_response())
}

fn ttl_update(agent: &Agent, id: &str, status: &str, note: &str) -> HttpResult {
    let Some(c) = agent.local.check(id) else {
        return Err(HttpError::not_found(format!("Unknown check ID {id:?}")));
    };
    if c.check.check_type != "ttl" {
        return Err(HttpError::internal(format!("CheckID {id:?} does not have associated TTL")));
    }
    let note = truncate(note, c.def.output_max);
    agent.checks.ttl_heartbeat(id);
    agent.local.update_check(id, status, &note);
    Ok(StatusCode::OK.into_response())
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s[..cut].to_string()
}

async fn check_pass(State(agent): State<AgentRef>, Path(id): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    ttl_update(&agent, &id, HEALTH_PASSING, p.get("note").unwrap_or(""))
}

async fn check_warn(State(agent): State<AgentRef>, Path(id): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    ttl_update(&agent, &id, HEALTH_WARNING, p.get("note").unwrap_or(""))
}

async fn check_fail(State(agent): State<AgentRef>, Path(id): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    ttl_update(&agent, &id, HEALTH_CRITICAL, p.get("note").unwrap_or(""))
}

async fn check_update(State(agent): State<AgentRef>, Path(id): Path<String>, body: Bytes) -> HttpResult {
    let v = super::decode_checked(&body, &cairn_types::schema::CHECK_UPDATE)?;
    let status = v.get("Status").and_then(Value::as_str).unwrap_or("");
    if !cairn_types::structs::valid_status(status) {
        return Err(HttpError::bad(format!("Invalid check status: {status:?}")));
    }
    let output = v.get("Output").and_then(Value::as_str).unwrap_or("");
    ttl_update(&agent, &id, status, output)
}

fn enable_param(p: &Params) -> Result<bool, HttpError> {
    match p.get("enable") {
        None => Err(HttpError::bad("Missing value for enable")),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "t" => Ok(true),
            "false" | "0" | "f" => Ok(false),
            _ => Err(HttpError::bad(format!("Invalid value for enable: {v:?}"))),
        },
    }
}

async fn node_maintenance(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    let enable = enable_param(&p)?;
    agent.set_node_maintenance(enable, p.get("reason").unwrap_or("")).map_err(HttpError::internal)?;
    Ok(StatusCode::OK.into_response())
}

async fn service_maintenance(
    State(agent): State<AgentRef>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    let enable = enable_param(&p)?;
    if agent.local.service(&id).is_none() {
        return Err(HttpError::not_found(format!("Unknown service ID {id:?}")));
    }
    agent.set_service_maintenance(&id, enable, p.get("reason").unwrap_or("")).map_err(HttpError::internal)?;
    Ok(StatusCode::OK.into_response())
}

/// A local service's aggregated health: node-level checks count too; maintenance wins.
fn local_checks(agent: &Agent) -> Vec<HealthCheck> {
    agent.local.checks().into_values().map(|c| c.check).collect()
}

/// `all` is the agent's checks, read once per request by the caller.
fn service_health(all: &[HealthCheck], s: &NodeService) -> (String, Vec<HealthCheck>) {
    let checks: Vec<&HealthCheck> = all.iter().filter(|c| c.service_id == s.id || c.service_id.is_empty()).collect();
    let maint = checks
        .iter()
        .any(|c| c.check_id == NODE_MAINT_CHECK_ID || c.check_id == format!("{SERVICE_MAINT_PREFIX}{}", s.id));
    let status = if maint {
        HEALTH_MAINT.to_string()
    } else {
        aggregate_status(checks.iter().map(|c| c.status.as_str())).to_string()
    };
    let own: Vec<HealthCheck> = checks.into_iter().filter(|c| c.service_id == s.id).cloned().collect();
    (status, own)
}

fn status_code(status: &str) -> StatusCode {
    match status {
        HEALTH_PASSING => StatusCode::OK,
        HEALTH_WARNING => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn text(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

async fn health_by_name(
    State(agent): State<AgentRef>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    let dc = agent.config().datacenter.clone();
    let all = local_checks(&agent);
    let mut worst = HEALTH_PASSING.to_string();
    let mut out = Vec::new();
    for s in agent.local.services().values().filter(|s| s.service == name) {
        let (status, checks) = service_health(&all, s);
        if cairn_types::structs::status_rank(&status) > cairn_types::structs::status_rank(&worst) {
            worst = status.clone();
        }
        out.push(json!({ "AggregatedStatus": status, "Service": agent_service(s, &dc), "Checks": checks }));
    }
    if out.is_empty() {
        let msg = format!("ServiceName {name} Not Found");
        return Ok(if p.get("format") == Some("text") {
            text(StatusCode::NOT_FOUND, msg)
        } else {
            (StatusCode::NOT_FOUND, json_response(None, false, &out)).into_response()
        });
    }
    let code = status_code(&worst);
    if p.get("format") == Some("text") {
        return Ok(text(code, worst));
    }
    Ok((code, json_response(None, p.has("pretty"), &out)).into_response())
}

async fn health_by_id(State(agent): State<AgentRef>, Path(id): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    let Some(s) = agent.local.service(&id) else {
        let msg = format!("ServiceId {id} not found");
        return Ok(if p.get("format") == Some("text") {
            text(StatusCode::NOT_FOUND, msg)
        } else {
            (StatusCode::NOT_FOUND, json_response(None, false, &Value::Null)).into_response()
        });
    };
    let all = local_checks(&agent);
    let (status, checks) = service_health(&all, &s);
    let code = status_code(&status);
    if p.get("format") == Some("text") {
        return Ok(text(code, status));
    }
    let body = json!({ "AggregatedStatus": status, "Service": agent_service(&s, &agent.config().datacenter), "Checks": checks });
    Ok((code, json_response(None, p.has("pretty"), &body)).into_response())
}

async fn reload(State(agent): State<AgentRef>) -> HttpResult {
    agent.reload().map_err(|e| HttpError::internal(format!("Failed reloading config: {e}")))?;
    Ok(StatusCode::OK.into_response())
}

/// `PUT /v1/agent/leave`: leaves the gossip pools gracefully (others see this agent `left`),
/// then shuts down. The response is sent before the process exits.
async fn leave(State(agent): State<AgentRef>) -> HttpResult {
    agent.leave_pools().await;
    // Answer first, then stop: the response must reach the caller.
    let a = agent.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        a.request_shutdown();
    });
    Ok(StatusCode::OK.into_response())
}

async fn metrics(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    record_gauges(&agent);
    let text_fmt = agent.metrics_handle().render();
    if p.get("format") == Some("prometheus") {
        let mut r = Response::new(Body::from(text_fmt));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
        return Ok(r);
    }
    Ok(json_response(None, p.has("pretty"), &metrics_json(&text_fmt)))
}

fn record_gauges(agent: &Agent) {
    metrics::gauge!("consul_agent_local_services").set(agent.local.services().len() as f64);
    metrics::gauge!("consul_agent_local_checks").set(agent.local.checks().len() as f64);
    metrics::gauge!("consul_agent_uptime_seconds").set(agent.uptime().as_secs_f64());
    let Ok(server) = agent.server() else { return };
    let st = server.store().snapshot();
    metrics::gauge!("consul_kvs_entries").set(st.kvs.len() as f64);
    metrics::gauge!("consul_catalog_nodes").set(st.nodes.len() as f64);
    metrics::gauge!("consul_catalog_service_instances").set(st.services.len() as f64);
    metrics::gauge!("consul_state_index").set(st.last_index as f64);
    metrics::gauge!("consul_server_isLeader").set(if server.is_leader() { 1.0 } else { 0.0 });
    metrics::gauge!("consul_rpc_queries_blocking").set(server.blocking_queries() as f64);
}

/// Consul's JSON metrics shape, built from the Prometheus rendering: gauges and counters by name.
fn metrics_json(prom: &str) -> Value {
    let mut kinds: BTreeMap<String, String> = BTreeMap::new();
    let mut gauges = Vec::new();
    let mut counters = Vec::new();
    for line in prom.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(n), Some(k)) = (it.next(), it.next()) {
                kinds.insert(n.to_string(), k.to_string());
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((name_labels, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let name = name_labels.split('{').next().unwrap_or(name_labels);
        let dotted = name.replace('_', ".");
        match kinds.get(name).map(String::as_str) {
            Some("counter") => counters.push(json!({ "Name": dotted, "Count": value, "Sum": value, "Min": value, "Max": value, "Mean": value, "Stddev": 0, "Labels": {} })),
            _ => gauges.push(json!({ "Name": dotted, "Value": value, "Labels": {} })),
        }
    }
    json!({
        "Timestamp": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        "Gauges": gauges,
        "Points": [],
        "Counters": counters,
        "Samples": [],
    })
}
