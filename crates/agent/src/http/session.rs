//! `/v1/session/*`: create, destroy, renew, info, node, list. Sessions back locks
//! (`/v1/kv/<key>?acquire=`); the leader reaps them when their TTL runs out.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use serde_json::{json, Value};

use cairn_types::rpc::{ReadRequest, ReadResponse, WriteRequest, WriteResult};
use cairn_types::structs::{
    ServiceCheckRef, Session, SERF_CHECK_ID, SESSION_BEHAVIOR_DELETE, SESSION_BEHAVIOR_RELEASE,
};
use cairn_types::CommandResult;

use super::{
    check_dc, expect_answer, json_response, read, write, write_result, AgentRef, HttpError, HttpResult, Params,
    QueryOpts,
};

/// Consul's fixed maximum session TTL (the minimum is `session_ttl_min`, default 10s).
const SESSION_TTL_MAX: Duration = Duration::from_secs(86_400);
/// Consul's default lock-delay.
const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);

/// Consul quirk kept for old clients: a numeric `LockDelay` below 1000 is seconds, otherwise
/// nanoseconds (what Go's `time.Duration` marshals to).
fn lock_delay(v: Option<&Value>) -> Result<Duration, HttpError> {
    match v {
        None | Some(Value::Null) => Ok(DEFAULT_LOCK_DELAY),
        Some(Value::String(s)) if s.is_empty() => Ok(DEFAULT_LOCK_DELAY),
        // Consul's fixup applies to both forms: a result under 1000 ns is taken as seconds.
        Some(Value::String(s)) => {
            let d = cairn_types::duration::parse(s).map_err(|e| HttpError::bad(format!("Invalid LockDelay: {e}")))?;
            Ok(if d < Duration::from_nanos(1000) { Duration::from_secs(d.as_nanos() as u64) } else { d })
        }
        Some(Value::Number(n)) => {
            let f = n.as_f64().filter(|f| *f >= 0.0).ok_or_else(|| HttpError::bad("Invalid LockDelay"))?;
            Ok(if f < 1000.0 { Duration::from_secs_f64(f) } else { Duration::from_nanos(f as u64) })
        }
        Some(_) => Err(HttpError::bad("Invalid LockDelay: expected a duration")),
    }
}

fn string_list(v: Option<&Value>, what: &str) -> Result<Option<Vec<String>>, HttpError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| HttpError::bad(format!("{what} must be a list of check IDs")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(HttpError::bad(format!("{what} must be a list of check IDs"))),
    }
}

pub async fn create(State(agent): State<AgentRef>, RawQuery(raw): RawQuery, body: Bytes) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    // An empty body means all defaults.
    let v: Value = if body.iter().all(|b| b.is_ascii_whitespace()) {
        json!({})
    } else {
        super::decode_checked(&body, &cairn_types::schema::SESSION)?
    };
    if !v.is_object() {
        return Err(HttpError::bad("Request decode failed: expected a JSON object"));
    }
    super::check_body_dc(&agent, &v)?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let node = match s("Node") {
        n if n.is_empty() => agent.config().node_name.clone(),
        n => n,
    };
    let behavior = match s("Behavior").as_str() {
        "" | SESSION_BEHAVIOR_RELEASE => SESSION_BEHAVIOR_RELEASE.to_string(),
        SESSION_BEHAVIOR_DELETE => SESSION_BEHAVIOR_DELETE.to_string(),
        // Consul validates on the server: its RPC errors reach the client as 500.
        other => return Err(HttpError::internal(format!("Invalid Behavior setting '{other}'"))),
    };
    let ttl_s = s("TTL");
    let ttl = if ttl_s.is_empty() {
        Duration::ZERO
    } else {
        cairn_types::duration::parse(&ttl_s)
            .map_err(|e| HttpError::internal(format!("Session TTL '{ttl_s}' invalid: {e}")))?
    };
    let ttl_min = agent.config().session_ttl_min;
    if !ttl.is_zero() && !(ttl_min..=SESSION_TTL_MAX).contains(&ttl) {
        // Consul prints the TTL in nanoseconds here (Go's %d of a time.Duration).
        return Err(HttpError::internal(format!(
            "Invalid Session TTL '{}', must be between [{}={}]",
            ttl.as_nanos(),
            cairn_types::duration::format(ttl_min),
            cairn_types::duration::format(SESSION_TTL_MAX)
        )));
    }
    let delay = lock_delay(v.get("LockDelay"))?;
    // As Consul, a lock-delay over 60 s (structs.MaxLockDelay) is stored as given and capped at
    // 60 s when it is applied (see cluster::raft::state_machine).
    let node_checks = string_list(v.get("NodeChecks"), "NodeChecks")?;
    let legacy = string_list(v.get("Checks"), "Checks")?;
    let service_checks: Vec<ServiceCheckRef> = match v.get("ServiceChecks") {
        None | Some(Value::Null) => Vec::new(),
        Some(x) => serde_json::from_value::<Vec<ServiceCheckRef>>(x.clone())
            .map_err(|e| HttpError::bad(format!("Invalid ServiceChecks: {e}")))?,
    };
    let mut sess = Session {
        // The leader picks the ID.
        id: String::new(),
        name: s("Name"),
        node,
        lock_delay_ns: delay.as_nanos() as u64,
        behavior,
        ttl: if ttl.is_zero() { String::new() } else { cairn_types::duration::format(ttl) },
        node_checks: Vec::new(),
        service_checks,
        create_index: 0,
        modify_index: 0,
    };
    // Consul: with neither NodeChecks nor the deprecated Checks given, a session is bound to the
    // node's serfHealth. Deprecated Checks entries are sorted into node and service checks by the
    // leader, which knows the node's checks.
    let legacy_checks = match (node_checks, legacy) {
        (None, None) => {
            sess.node_checks = vec![SERF_CHECK_ID.to_string()];
            Vec::new()
        }
        (nc, legacy) => {
            sess.node_checks = nc.unwrap_or_default();
            legacy.unwrap_or_default()
        }
    };
    let w = write(&agent, &p, WriteRequest::SessionCreate { session: sess, legacy_checks }).await?;
    match w.result {
        WriteResult::Id(id) => Ok(json_response(None, p.has("pretty"), &json!({ "ID": id }))),
        WriteResult::Result(CommandResult::Error(e)) => {
            let mut err = HttpError::from(e);
            err.msg = format!("Failed to create session: {}", err.msg);
            Err(err)
        }
        other => Err(super::unexpected(&other)),
    }
}

pub async fn destroy(State(agent): State<AgentRef>, Path(id): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    write_result(write(&agent, &p, WriteRequest::SessionDestroy { id }).await?)?;
    Ok(json_response(None, false, &true))
}

pub async fn renew(State(agent): State<AgentRef>, Path(id): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    // Renewals are answered by the leader, which keeps the TTL timers (Consul forwards them).
    let w = write(&agent, &p, WriteRequest::SessionRenew { id }).await?;
    let WriteResult::Session(sess) = w.result else { return Err(super::unexpected(&w.result)) };
    let meta = super::Meta { index: w.index.max(1), known_leader: true, last_contact_ms: 0 };
    Ok(json_response(Some(meta), p.has("pretty"), &[&*sess]))
}

async fn sessions(agent: &AgentRef, p: &Params, req: ReadRequest) -> HttpResult {
    let q = QueryOpts::parse(p)?;
    q.check_filter::<Session>()?;
    let (meta, res) = read(agent, &q, p, req).await?;
    Ok(json_response(Some(meta), q.pretty, &expect_answer!(res, ReadResponse::Sessions)))
}

pub async fn info(State(agent): State<AgentRef>, Path(id): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    sessions(&agent, &p, ReadRequest::SessionGet { id }).await
}

pub async fn node(State(agent): State<AgentRef>, Path(node): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    sessions(&agent, &p, ReadRequest::SessionNodeSessions { node }).await
}

pub async fn list(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    sessions(&agent, &p, ReadRequest::SessionList).await
}
