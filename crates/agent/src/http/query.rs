//! `/v1/query`: prepared queries: create, list, read, update, delete, execute and explain.

use axum::body::Bytes;
use std::net::{IpAddr, SocketAddr};

use crate::conn_limit::PeerAddr;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{json, Value};

use cairn_types::query::PreparedQuery;
use cairn_types::rpc::{QuerySource, ReadRequest, ReadResponse, WriteRequest, WriteResult};

use super::{
    check_dc, decode_body, expect_answer, json_response, read, read_with, write, write_result, AgentRef, HttpError,
    HttpResult, Params, QueryOpts,
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
    let q = parse_query(&agent, &body)?;
    let w = write(&agent, &p, WriteRequest::PreparedQueryCreate(q)).await?;
    match w.result {
        WriteResult::Id(id) => Ok(json_response(None, p.has("pretty"), &json!({ "ID": id }))),
        other => {
            write_result(cairn_types::rpc::WriteResponse { index: w.index, result: other })?;
            Err(HttpError::internal("the server answered a create without an ID"))
        }
    }
}

pub async fn list(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let q = QueryOpts::parse(&p)?;
    q.check_filter::<cairn_types::query::PreparedQuery>()?;
    let (meta, res) = read(&agent, &q, &p, ReadRequest::PreparedQueryList).await?;
    Ok(json_response(Some(meta), q.pretty, &expect_answer!(res, ReadResponse::Queries)))
}

pub async fn get(State(agent): State<AgentRef>, Path(id): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let q = QueryOpts::parse(&p)?;
    let (meta, res) = read(&agent, &q, &p, ReadRequest::PreparedQueryGet { id }).await?;
    Ok(json_response(Some(meta), q.pretty, &expect_answer!(res, ReadResponse::Queries)))
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
    q.id = id;
    write_result(write(&agent, &p, WriteRequest::PreparedQueryUpdate(q)).await?)?;
    Ok(StatusCode::OK.into_response())
}

pub async fn delete(State(agent): State<AgentRef>, Path(id): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    write_result(write(&agent, &p, WriteRequest::PreparedQueryDelete { id }).await?)?;
    Ok(StatusCode::OK.into_response())
}

/// The address a request came from: the first `X-Forwarded-For` address when a proxy set one
/// (what a prepared query's `near=_ip` means).
fn source_ip(headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
    headers
        .get("X-Forwarded-For")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse::<IpAddr>().ok())
        .unwrap_or(peer.ip())
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
    let mut opts = q.options(&agent, &p);
    opts.source =
        QuerySource { node: agent.config().node_name.clone(), ip: Some(source_ip(&headers, peer).to_string()) };
    let (meta, res) = read_with(&agent, ReadRequest::PreparedQueryExecute { id_or_name: id, limit }, opts).await?;
    let ex = expect_answer!(res, ReadResponse::Executed);
    let body = json!({
        "Service": ex.service,
        "Nodes": ex.nodes,
        "DNS": { "TTL": ex.dns_ttl },
        "Datacenter": ex.datacenter,
        "Failovers": 0,
    });
    Ok(json_response(Some(meta), p.has("pretty"), &body))
}

pub async fn explain(State(agent): State<AgentRef>, Path(id): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let q = QueryOpts { index: 0, ..QueryOpts::parse(&p)? };
    let (meta, res) = read(&agent, &q, &p, ReadRequest::PreparedQueryExplain { id_or_name: id }).await?;
    let v: Value = json!({ "Query": expect_answer!(res, ReadResponse::Explained) });
    Ok(json_response(Some(meta), p.has("pretty"), &v))
}
