//! `/v1/coordinate/*`: network coordinates (see [`cairn_types::coordinate`]).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use serde_json::{json, Value};

use cairn_types::coordinate::CoordinateEntry;
use cairn_types::rpc::{ReadRequest, ReadResponse, WriteRequest};

use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::{
    check_dc, decode_body, expect_answer, json_response, read, set_meta, write, write_result, AgentRef, HttpError,
    HttpResult, Params, QueryOpts,
};

/// `GET /v1/coordinate/datacenters`: the servers' WAN coordinates by datacenter. With no WAN pool
/// yet, that is this datacenter and this server (at its LAN coordinate, which the WAN one equals
/// while there are no other servers to measure against). Agents are always servers for now.
pub async fn datacenters(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    agent.server()?;
    let c = agent.config();
    let Some(wan) = agent.wan.get() else {
        let body = json!([{
            "Datacenter": c.datacenter,
            "AreaID": "wan",
            "Coordinates": [{ "Node": c.node_name, "Coord": agent.coordinate() }],
        }]);
        return Ok(json_response(None, p.flag("pretty"), &body));
    };
    // The WAN area's servers by datacenter, names without their `.<dc>` suffix, sorted (Consul's
    // code says "wan" for the area, its docs "WAN").
    let own_name = format!("{}.{}", c.node_name, c.datacenter);
    let coords = wan.member_coordinates();
    let mut by_dc: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for m in wan.members() {
        if m.tags.get("role") != Some("consul") {
            continue;
        }
        let Some(dc) = m.tags.get("dc") else { continue };
        let coord = if m.name == own_name { Some(wan.coordinate()) } else { coords.get(&m.name).cloned() };
        let Some(coord) = coord else { continue };
        let short = m.name.strip_suffix(&format!(".{dc}")).unwrap_or(&m.name).to_string();
        by_dc.entry(dc.to_string()).or_default().push(json!({ "Node": short, "Coord": coord }));
    }
    let body: Vec<Value> = by_dc
        .into_iter()
        .map(|(dc, mut cs)| {
            cs.sort_by(|a, b| a["Node"].as_str().cmp(&b["Node"].as_str()));
            json!({ "Datacenter": dc, "AreaID": "wan", "Coordinates": cs })
        })
        .collect();
    Ok(json_response(None, p.flag("pretty"), &body))
}

/// `GET /v1/coordinate/nodes`: every node's LAN coordinate (blocking).
pub async fn nodes(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let q = QueryOpts::parse(&p)?;
    q.check_filter::<cairn_types::coordinate::CoordinateEntry>()?;
    let segment = p.get("segment").map(str::to_string);
    let (meta, res) = read(&agent, &q, &p, ReadRequest::CoordinateListNodes { segment }).await?;
    Ok(json_response(Some(meta), q.pretty, &expect_answer!(res, ReadResponse::Coordinates)))
}

/// `GET /v1/coordinate/node/:node`: one node's coordinates (one per segment); 404 when it has none.
pub async fn node(State(agent): State<AgentRef>, Path(node): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let q = QueryOpts::parse(&p)?;
    let segment = p.get("segment").map(str::to_string);
    let (meta, res) = read(&agent, &q, &p, ReadRequest::CoordinateNode { node, segment }).await?;
    let rows = expect_answer!(res, ReadResponse::Coordinates);
    if rows.is_empty() {
        let mut r = StatusCode::NOT_FOUND.into_response();
        set_meta(r.headers_mut(), meta);
        return Ok(r);
    }
    Ok(json_response(Some(meta), q.pretty, &rows))
}

/// `PUT /v1/coordinate/update`: sets a node's coordinate (normally agents do this themselves).
/// Answers 200 with an empty body, as Consul. A coordinate it cannot use is a 500 with the reason;
/// one for a node the catalog does not know (or no node at all) is accepted and dropped when
/// applied, as Consul's batch update does.
pub async fn update(State(agent): State<AgentRef>, RawQuery(raw): RawQuery, body: Bytes) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let e: CoordinateEntry = decode_body(&body)?;
    e.coord.validate().map_err(HttpError::internal)?;
    write_result(write(&agent, &p, WriteRequest::CoordinateUpdate(vec![e])).await?)?;
    Ok(StatusCode::OK.into_response())
}
