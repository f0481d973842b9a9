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

use super::{json_response, AgentRef, HttpError, HttpResult, Params};

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

/// The servers of this datacenter's LAN pool, by Raft ID (names and UUIDs for the operator views).
fn servers_by_raft_id(agent: &crate::Agent) -> std::collections::BTreeMap<u64, cairn_cluster::ServerInfo> {
    let members = agent.lan.get().map(Pool::members).unwrap_or_default();
    cairn_cluster::gossip::server_infos(&members, &agent.config().datacenter)
        .into_iter()
        .map(|s| (s.raft_id, s))
        .collect()
}

/// `GET /v1/operator/raft/configuration`: the Raft configuration with each server's node name and
/// ID from the LAN pool (`(unknown)` for a server gossip does not know). The leader answers
/// (it knows how far each server has replicated); `?stale` lets this server answer.
pub async fn raft_configuration(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    super::check_dc(&agent, &p)?;
    let server = agent.server()?;
    let (servers, index) = server.leader_raft_configuration(p.has("stale")).await?;
    let known = servers_by_raft_id(&agent);
    let list: Vec<Value> = servers
        .iter()
        .map(|s| {
            let k = known.get(&s.raft_id);
            json!({
                "ID": k.map_or_else(|| s.raft_id.to_string(), |k| k.node_id.clone()),
                "Node": k.map_or("(unknown)", |k| k.name.as_str()),
                "Address": s.address,
                "Leader": s.leader,
                "ProtocolVersion": k.map_or("unknown", |k| k.raft_vsn.as_str()),
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
    let (id, address) =
        (p.has("id").then(|| p.get("id").unwrap_or("")), p.has("address").then(|| p.get("address").unwrap_or("")));
    let server = agent.server()?;
    let (servers, _, _) = server.raft_configuration();
    let target = match (id, address) {
        (Some(_), Some(_)) => return Err(HttpError::bad("Must specify only one of ?id or ?address")),
        (None, None) => {
            return Err(HttpError::bad(
                "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove",
            ))
        }
        (Some(id), None) => {
            let raft_id = cairn_cluster::raft_id(id);
            let found = uuid::Uuid::parse_str(id).is_ok() && servers.iter().any(|s| s.raft_id == raft_id);
            if !found {
                return Err(HttpError::internal(format!("id {id:?} was not found in the Raft configuration")));
            }
            raft_id
        }
        (None, Some(addr)) => match servers.iter().find(|s| s.address == addr) {
            Some(s) => s.raft_id,
            None => {
                return Err(HttpError::internal(format!("address {addr:?} was not found in the Raft configuration")))
            }
        },
    };
    server.remove_peer(target).await?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /v1/operator/raft/transfer-leader[?id=]`: `{"Success":true}` once another server leads.
pub async fn raft_transfer_leader(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    super::check_dc(&agent, &p)?;
    let server = agent.server()?;
    let to = match p.get("id").filter(|s| !s.is_empty()) {
        None => None,
        Some(id) => {
            let raft_id = cairn_cluster::raft_id(id);
            let (servers, _, _) = server.raft_configuration();
            if uuid::Uuid::parse_str(id).is_err() || !servers.iter().any(|s| s.raft_id == raft_id) {
                return Err(HttpError::internal(format!("Could not find address for server id {id}")));
            }
            Some(raft_id)
        }
    };
    server.transfer_leader(to).await?;
    Ok(json_response(None, p.has("pretty"), &json!({ "Success": true })))
}
