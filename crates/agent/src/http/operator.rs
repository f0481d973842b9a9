//! `/v1/operator/keyring`: the gossip keyring of every pool, changed in lock-step across its members
//! by Serf's key queries (docs/consul-facts/gossip.md §4).

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use serde_json::{json, Value};

use cairn_cluster::gossip::Pool;
use cairn_gossip::driver::KeyResult;
use cairn_gossip::serf::KeyOp;

use cairn_types::rpc::{OperatorRequest, OperatorResponse, ServerHealthReport};

use super::{json_response, operator_call, AgentRef, HttpError, HttpResult, Params};

/// One pool's answer, or the lines of its error.
fn pool_error(label: &str, r: &KeyResult) -> Option<String> {
    if r.num_err == 0 && r.num_resp >= r.num_nodes {
        return None;
    }
    let head = if r.num_err > 0 {
        format!("{}/{} nodes reported failure", r.num_err, r.num_nodes)
    } else {
        format!("{}/{} nodes reported success", r.num_resp, r.num_nodes)
    };
    let mut s = format!("{label} error: {head}");
    for (node, msg) in &r.messages {
        s.push_str(&format!("\n{node}: {msg}"));
    }
    Some(s)
}

pub async fn keyring(
    State(agent): State<AgentRef>,
    method: Method,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    let relay: u8 = match p.get("relay-factor") {
        None | Some("") => 0,
        Some(v) => {
            let n: i64 = v.parse().map_err(|e| HttpError::bad(format!("Error parsing relay factor: {e}")))?;
            if !(0..=5).contains(&n) {
                return Err(HttpError::bad("Invalid relay-factor: Relay factor must be in range: [0, 5]"));
            }
            n as u8
        }
    };
    let local_only = match p.get("local-only") {
        None | Some("") => p.has("local-only"),
        Some(v) => match v {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
            "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
            _ => {
                return Err(HttpError::bad(format!(
                    "Error parsing local-only: strconv.ParseBool: parsing {v:?}: invalid syntax"
                )))
            }
        },
    };
    if local_only && method != Method::GET {
        return Err(HttpError::bad("Invalid use of local-only: local-only can only be set for list requests"));
    }
    let (op, key) = match method {
        Method::GET => (KeyOp::List, None),
        Method::POST | Method::PUT | Method::DELETE => {
            let v: Value = super::decode_body(&body)?;
            let k = v.get("Key").and_then(Value::as_str).unwrap_or_default();
            let key = base64::engine::general_purpose::STANDARD
                .decode(k)
                .map_err(|e| HttpError::internal(format!("illegal base64 data: {e}")))?;
            let op = match method {
                Method::POST => KeyOp::Install,
                Method::PUT => KeyOp::Use,
                _ => KeyOp::Remove,
            };
            (op, Some(key))
        }
        _ => {
            return Err(HttpError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                msg: format!("method {method} not allowed"),
            })
        }
    };
    let c = agent.config();
    let mut pools: Vec<(&Pool, bool)> = Vec::new();
    if let Some(w) = agent.wan.get().filter(|_| !local_only) {
        pools.push((w, true));
    }
    if let Some(l) = agent.lan.get() {
        pools.push((l, false));
    }
    if pools.is_empty() {
        return Err(HttpError::internal("no gossip pools: gossip is disabled"));
    }
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (pool, wan) in pools {
        let r = pool.key_op(op, key.clone(), relay).await.map_err(HttpError::internal)?;
        let label = if wan { "WAN".to_string() } else { format!("{} (LAN)", c.datacenter) };
        if let Some(e) = pool_error(&label, &r) {
            errors.push(e);
        }
        let mut e = json!({
            "WAN": wan,
            "Datacenter": c.datacenter,
            "Segment": "",
            "Keys": r.keys,
            "PrimaryKeys": r.primary_keys,
            "NumNodes": r.num_nodes,
        });
        if !r.messages.is_empty() {
            e["Messages"] = json!(r.messages);
        }
        entries.push(e);
    }
    if !errors.is_empty() {
        let mut msg = format!("{} error{} occurred:\n", errors.len(), if errors.len() == 1 { "" } else { "s" });
        for e in &errors {
            msg.push_str(&format!("\t* {e}\n"));
        }
        return Err(HttpError::internal(msg + "\n"));
    }
    if op == KeyOp::List {
        return Ok(json_response(None, p.has("pretty"), &entries));
    }
    Ok(StatusCode::OK.into_response())
}

/// `GET /v1/operator/raft/configuration`: the Raft configuration with each server's node name and
/// ID from the LAN pool (`(unknown)` for a server gossip does not know). The leader answers
/// (it knows how far each server has replicated); `?stale` lets this server answer.
pub async fn raft_configuration(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    super::check_dc(&agent, &p)?;
    let OperatorResponse::RaftConfiguration { servers, index } =
        operator_call(&agent, &p, OperatorRequest::RaftGetConfiguration).await?
    else {
        return Err(HttpError::internal("unexpected answer to a configuration request"));
    };
    let list: Vec<Value> = servers
        .iter()
        .map(|s| {
            json!({
                "ID": s.id,
                "Node": s.node,
                "Address": s.address,
                "Leader": s.leader,
                "ProtocolVersion": s.protocol_version,
                "Voter": s.voter,
                "LastIndex": s.last_index,
            })
        })
        .collect();
    Ok(json_response(None, p.has("pretty"), &json!({ "Servers": list, "Index": index })))
}

/// `DELETE /v1/operator/raft/peer?id=|address=`.
pub async fn raft_peer(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    super::check_dc(&agent, &p)?;
    let (id, address) = (
        p.has("id").then(|| p.get("id").unwrap_or("").to_string()),
        p.has("address").then(|| p.get("address").unwrap_or("").to_string()),
    );
    match (&id, &address) {
        (Some(_), Some(_)) => return Err(HttpError::bad("Must specify only one of ?id or ?address")),
        (None, None) => {
            return Err(HttpError::bad(
                "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove",
            ))
        }
        _ => {}
    }
    operator_call(&agent, &p, OperatorRequest::RaftRemovePeer { id, address }).await?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /v1/operator/raft/transfer-leader[?id=]`: `{"Success":true}` once another server leads.
pub async fn raft_transfer_leader(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    super::check_dc(&agent, &p)?;
    let id = p.get("id").filter(|s| !s.is_empty()).map(str::to_string);
    operator_call(&agent, &p, OperatorRequest::RaftTransferLeader { id }).await?;
    Ok(json_response(None, p.has("pretty"), &json!({ "Success": true })))
}

fn autopilot_json(c: &cairn_types::structs::AutopilotConfig) -> Value {
    use cairn_types::duration::format;
    json!({
        "CleanupDeadServers": c.cleanup_dead_servers,
        "LastContactThreshold": format(c.last_contact_threshold),
        "MaxTrailingLogs": c.max_trailing_logs,
        "MinQuorum": c.min_quorum,
        "ServerStabilizationTime": format(c.server_stabilization_time),
        "RedundancyZoneTag": c.redundancy_zone_tag,
        "DisableUpgradeMigration": c.disable_upgrade_migration,
        "UpgradeVersionTag": c.upgrade_version_tag,
        "CreateIndex": c.create_index,
        "ModifyIndex": c.modify_index,
    })
}

/// A duration field of an autopilot body: Go duration text, or a number of nanoseconds (as
/// Consul's `ReadableDuration` takes either).
fn body_duration(v: &Value, field: &str) -> Result<std::time::Duration, HttpError> {
    match v {
        Value::Null => Ok(std::time::Duration::ZERO),
        Value::String(s) => cairn_types::duration::parse(s)
            .map_err(|e| HttpError::bad(format!("Request decode failed: {field}: {e}"))),
        Value::Number(n) => n
            .as_u64()
            .map(std::time::Duration::from_nanos)
            .ok_or_else(|| HttpError::bad(format!("Request decode failed: {field}: invalid duration {n}"))),
        other => Err(HttpError::bad(format!("Request decode failed: json: cannot unmarshal {} into Go struct field AutopilotConfiguration.{field} of type api.ReadableDuration", kind(other)))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::Null => "null",
    }
}

/// `GET|PUT /v1/operator/autopilot/configuration` (`?cas=` on PUT). A PUT replaces the whole
/// configuration: fields it leaves out take Go's zero values, as Consul's decoder gives them.
pub async fn autopilot_configuration(
    State(agent): State<AgentRef>,
    method: Method,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    super::check_dc(&agent, &p)?;
    match method {
        Method::GET => match operator_call(&agent, &p, OperatorRequest::AutopilotGetConfiguration).await? {
            OperatorResponse::Autopilot(c) => Ok(json_response(None, p.has("pretty"), &autopilot_json(&c))),
            other => Err(super::unexpected(&other)),
        },
        Method::PUT => {
            let v: Value = super::decode_body(&body)?;
            let Value::Object(o) = &v else { return Err(HttpError::bad("Request decode failed: expected an object")) };
            let get = |k: &str| o.get(k).cloned().unwrap_or(Value::Null);
            let flag = |k: &str| -> Result<bool, HttpError> {
                match get(k) {
                    Value::Null => Ok(false),
                    Value::Bool(b) => Ok(b),
                    other => Err(HttpError::bad(format!("Request decode failed: json: cannot unmarshal {} into Go struct field AutopilotConfiguration.{k} of type bool", kind(&other)))),
                }
            };
            let uint = |k: &str| -> Result<u64, HttpError> {
                match get(k) {
                    Value::Null => Ok(0),
                    Value::Number(n) if n.as_u64().is_some() => Ok(n.as_u64().unwrap_or(0)),
                    other => Err(HttpError::bad(format!("Request decode failed: json: cannot unmarshal {} into Go struct field AutopilotConfiguration.{k} of type uint64", kind(&other)))),
                }
            };
            let text = |k: &str| -> Result<String, HttpError> {
                match get(k) {
                    Value::Null => Ok(String::new()),
                    Value::String(s) => Ok(s),
                    other => Err(HttpError::bad(format!("Request decode failed: json: cannot unmarshal {} into Go struct field AutopilotConfiguration.{k} of type string", kind(&other)))),
                }
            };
            let config = cairn_types::structs::AutopilotConfig {
                cleanup_dead_servers: flag("CleanupDeadServers")?,
                last_contact_threshold: body_duration(&get("LastContactThreshold"), "LastContactThreshold")?,
                max_trailing_logs: uint("MaxTrailingLogs")?,
                min_quorum: uint("MinQuorum")?.min(u32::MAX as u64) as u32,
                server_stabilization_time: body_duration(&get("ServerStabilizationTime"), "ServerStabilizationTime")?,
                redundancy_zone_tag: text("RedundancyZoneTag")?,
                disable_upgrade_migration: flag("DisableUpgradeMigration")?,
                upgrade_version_tag: text("UpgradeVersionTag")?,
                create_index: 0,
                modify_index: 0,
            };
            let cas = match p.get("cas") {
                None => None,
                Some(c) => Some(c.parse::<u64>().map_err(|_| {
                    HttpError::bad(format!("Error parsing cas value: strconv.ParseUint: parsing {c:?}: invalid syntax"))
                })?),
            };
            match operator_call(&agent, &p, OperatorRequest::AutopilotSetConfiguration { config, cas }).await? {
                OperatorResponse::Bool(ok) => Ok(json_response(None, false, &ok)),
                other => Err(super::unexpected(&other)),
            }
        }
        // The route takes GET and PUT only.
        _ => Err(HttpError::bad(format!("method {method} not allowed"))),
    }
}

/// Autopilot's view, always the leader's: only it knows replication and contact.
async fn health(agent: &crate::Agent) -> Result<ServerHealthReport, HttpError> {
    match operator_call(agent, &Params::default(), OperatorRequest::AutopilotServerHealth).await? {
        OperatorResponse::Health(h) => Ok(h),
        other => Err(super::unexpected(&other)),
    }
}

fn last_contact(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => cairn_types::duration::format(std::time::Duration::from_millis(ms)),
        None => "-1ns".into(),
    }
}

/// `GET /v1/operator/autopilot/health`: 200 when every server is healthy, else 429 with the same
/// body, as Consul answers.
pub async fn autopilot_health(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    super::check_dc(&agent, &p)?;
    let ServerHealthReport { healthy, failure_tolerance: tolerance, servers: list } = health(&agent).await?;
    let servers: Vec<Value> = list
        .iter()
        .map(|s| {
            json!({
                "ID": s.id, "Name": s.name, "Address": s.address, "SerfStatus": s.serf_status, "Version": s.version,
                "Leader": s.leader, "LastContact": last_contact(s.last_contact_ms), "LastTerm": s.last_term,
                "LastIndex": s.last_index, "Healthy": s.healthy, "Voter": s.voter,
            })
        })
        .collect();
    let body = json!({ "Healthy": healthy, "FailureTolerance": tolerance, "Servers": servers });
    let mut r = json_response(None, p.has("pretty"), &body);
    if !healthy {
        *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    }
    Ok(r)
}

/// `GET /v1/operator/autopilot/state`: autopilot's view of every server.
pub async fn autopilot_state(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    super::check_dc(&agent, &p)?;
    let ServerHealthReport { healthy, failure_tolerance: tolerance, servers: list } = health(&agent).await?;
    let mut servers = serde_json::Map::new();
    for s in &list {
        let status = if s.leader {
            "leader"
        } else if s.voter {
            "voter"
        } else {
            "non-voter"
        };
        servers.insert(
            s.id.clone(),
            json!({
                "ID": s.id, "Name": s.name, "Address": s.address, "NodeStatus": s.serf_status, "Version": s.version,
                "LastContact": last_contact(s.last_contact_ms), "LastTerm": s.last_term, "LastIndex": s.last_index,
                "Healthy": s.healthy, "Status": status, "ReadReplica": false, "NodeType": "voter",
            }),
        );
    }
    let leader = list.iter().find(|s| s.leader).map_or(String::new(), |s| s.id.clone());
    let voters: Vec<&str> = list.iter().filter(|s| s.voter).map(|s| s.id.as_str()).collect();
    let body = json!({
        "Healthy": healthy,
        "FailureTolerance": tolerance,
        "OptimisticFailureTolerance": tolerance,
        "Servers": servers,
        "Leader": leader,
        "Voters": voters,
    });
    Ok(json_response(None, p.has("pretty"), &body))
}
