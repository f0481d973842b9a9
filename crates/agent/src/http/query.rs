//! `/v1/query`: prepared queries: create, list, read, update, delete, execute and explain.

use std::collections::BTreeMap;

use axum::body::Bytes;
use std::net::{IpAddr, SocketAddr};

use crate::conn_limit::PeerAddr;
use crate::Agent;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{json, Value};

use cairn_store::state::topics;
use cairn_store::State as StoreState;
use cairn_types::query::PreparedQuery;
use cairn_types::structs::{ServiceEntry, HEALTH_CRITICAL, HEALTH_PASSING};
use cairn_types::Command;

use super::{
    blocking, check_dc, decode_body, json_response, sort_near, AgentRef, HttpError, HttpResult, Params, QueryOpts,
};

fn parse_query(agent: &crate::Agent, body: &[u8]) -> Result<PreparedQuery, HttpError> {
    let v: serde_json::Value = decode_body(body)?;
    super::check_body_dc(agent, &v)?;
    let q: PreparedQuery =
        serde_json::from_value(v).map_err(|e| HttpError::bad(format!("Request decode failed: {e}")))?;
    q.validate().map_err(HttpError::bad)?;
    Ok(q)
}

/// `POST /v1/query` creates; `GET /v1/query` lists.
pub async fn create(State(agent): State<AgentRef>, RawQuery(raw): RawQuery, body: Bytes) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let mut q = parse_query(&agent, &body)?;
    q.id = uuid::Uuid::new_v4().to_string();
    let id = q.id.clone();
    super::applied(agent.server()?.apply(Command::QuerySet(q)).await?.result)?;
    Ok(json_response(None, p.has("pretty"), &json!({ "ID": id })))
}

pub async fn list(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let q = QueryOpts::parse(&p)?;
    q.check_filter::<cairn_types::query::PreparedQuery>()?;
    let (meta, rows) = blocking(&agent, &q, vec![topics::QUERIES], |st| st.query_list()).await?;
    let rows: Vec<&PreparedQuery> = rows.iter().map(|r| &**r).collect();
    Ok(json_response(Some(meta), q.pretty, &q.filter_rows(rows)?))
}

pub async fn get(State(agent): State<AgentRef>, Path(id): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let q = QueryOpts::parse(&p)?;
    let (meta, found) = blocking(&agent, &q, vec![topics::QUERIES], |st| st.query_resolve(&id)).await?;
    match found.filter(|f| f.id == id) {
        Some(f) => Ok(json_response(Some(meta), q.pretty, &[&*f])),
        None => Err(HttpError::not_found(format!("Query not found: {id}"))),
    }
}

pub async fn update(
    State(agent): State<AgentRef>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let mut q = parse_query(&agent, &body)?;
    if !agent.server()?.store().snapshot().queries.contains_key(&id) {
        return Err(HttpError::not_found(format!("Query not found: {id}")));
    }
    q.id = id;
    super::applied(agent.server()?.apply(Command::QuerySet(q)).await?.result)?;
    Ok(StatusCode::OK.into_response())
}

pub async fn delete(State(agent): State<AgentRef>, Path(id): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    agent.server()?.apply(Command::QueryDelete(id)).await?;
    Ok(StatusCode::OK.into_response())
}

/// Consul's execution filters: unhealthy instances out (critical, or anything not passing with
/// `OnlyPassing`, ignoring `IgnoreCheckIDs`), then tags (`!tag` excludes), node and service meta.
fn matches(q: &PreparedQuery, e: &ServiceEntry) -> bool {
    let s = &q.service;
    let healthy = e.checks.iter().filter(|c| !s.ignore_check_ids.contains(&c.check_id)).all(|c| {
        if s.only_passing {
            c.status == HEALTH_PASSING
        } else {
            c.status != HEALTH_CRITICAL
        }
    });
    let tags_ok = s.tags.iter().all(|t| match t.strip_prefix('!') {
        Some(not) => !e.service.tags.iter().any(|x| x.eq_ignore_ascii_case(not)),
        None => e.service.tags.iter().any(|x| x.eq_ignore_ascii_case(t)),
    });
    let meta_ok = |want: &BTreeMap<String, String>, have: &BTreeMap<String, String>| {
        want.iter().all(|(k, v)| have.get(k) == Some(v))
    };
    healthy && tags_ok && meta_ok(&s.node_meta, &e.node.meta) && meta_ok(&s.service_meta, &e.service.meta)
}

pub(crate) fn resolve(st: &StoreState, id_or_name: &str) -> Result<PreparedQuery, HttpError> {
    let (_, found) = st.query_resolve(id_or_name);
    let q = found.ok_or_else(|| HttpError::not_found(format!("Query not found: {id_or_name}")))?;
    q.render(id_or_name).map_err(HttpError::internal)
}

/// Keeps the instances a query selects, in the order it returns them. As Consul: shuffle, then sort
/// by round-trip time from `near` (`_agent` for this agent; the caller resolves `_ip`); equally
/// near instances, and all of them when there is nothing to sort by, stay shuffled.
pub(crate) fn rank(agent: &Agent, pq: &PreparedQuery, nodes: &mut Vec<ServiceEntry>, near: Option<&str>) {
    nodes.retain(|e| matches(pq, e));
    for i in (1..nodes.len()).rev() {
        nodes.swap(i, rand::random::<u64>() as usize % (i + 1));
    }
    let near = match near {
        Some("_agent") => Some(agent.config().node_name.clone()),
        Some("") | None => None,
        Some(n) => Some(n.to_string()),
    };
    sort_near(agent, near.as_deref(), nodes, |e| &e.node.node);
    // Consul then puts the `near` node itself first when it is among the first ten results (its
    // distance to itself is twice its height, so a close neighbour can sort ahead of it).
    if let Some(n) = &near {
        if let Some(i) = nodes.iter().take(10).position(|e| e.node.node.eq_ignore_ascii_case(n)) {
            let me = nodes.remove(i);
            nodes.insert(0, me);
        }
    }
}

/// The node a `near` of `_ip` means: the catalog node whose address is the request's source (the
/// first `X-Forwarded-For` address when a proxy set one).
fn node_at_source(st: &StoreState, headers: &HeaderMap, peer: SocketAddr) -> Option<String> {
    let ip = headers
        .get("X-Forwarded-For")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse::<IpAddr>().ok())
        .unwrap_or(peer.ip());
    st.nodes.values().find(|n| n.address.parse::<IpAddr>().ok() == Some(ip)).map(|n| n.node.clone())
}

pub async fn execute(
    State(agent): State<AgentRef>,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let limit = p.u64("limit")?.unwrap_or(0) as usize;
    let q = QueryOpts { index: 0, ..QueryOpts::parse_discovery(&p, &agent)? };
    let st = agent.server()?.store().snapshot();
    let pq = resolve(&st, &id)?;
    let (meta, mut nodes) =
        blocking(&agent, &q, vec![], |st| st.check_service_nodes(&pq.service.service, &[], false)).await?;
    let near = p.get("near").filter(|n| !n.is_empty()).unwrap_or(&pq.service.near);
    let near = match near {
        "_ip" => node_at_source(&st, &headers, peer),
        n => Some(n.to_string()),
    };
    rank(&agent, &pq, &mut nodes, near.as_deref());
    if limit > 0 {
        nodes.truncate(limit);
    }
    let body = json!({
        "Service": pq.service.service,
        "Nodes": nodes,
        "DNS": { "TTL": pq.dns.ttl },
        "Datacenter": agent.config().datacenter,
        "Failovers": 0,
    });
    Ok(json_response(Some(meta), p.has("pretty"), &body))
}

pub async fn explain(State(agent): State<AgentRef>, Path(id): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let st = agent.server()?.store().snapshot();
    let pq = resolve(&st, &id)?;
    let v: Value = json!({ "Query": pq });
    Ok(json_response(Some(agent.meta(st.index("queries").max(1))), p.has("pretty"), &v))
}
