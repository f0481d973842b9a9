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
