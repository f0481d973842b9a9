//! `/v1/catalog/*`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};

use cairn_types::rpc::{ReadRequest, ReadResponse, WriteRequest};
use cairn_types::structs::{
    DeregisterRequest, NodeService, NodeServiceList, NodeServices, RegisterRequest, ServiceNode, HEALTH_CRITICAL,
};

use super::{
    check_dc, decode_body, expect_answer, json_response, read, write, write_result, AgentRef, HttpError, HttpResult,
    Params, QueryOpts,
};

fn written_ok(w: cairn_types::rpc::WriteResponse) -> HttpResult {
    write_result(w)?;
    Ok(json_response(None, false, &true))
}

pub async fn register(State(agent): State<AgentRef>, RawQuery(raw): RawQuery, body: Bytes) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let mut req: RegisterRequest = decode_body(&body)?;
    super::check_dc_name(&agent, &req.datacenter)?;
    if req.node.is_empty() {
        return Err(HttpError::bad("Must provide node"));
    }
    if req.address.is_empty() && !req.skip_node_update {
        return Err(HttpError::bad("Must provide address"));
    }
    if req.datacenter.is_empty() {
        req.datacenter = agent.config().datacenter.clone();
    }
    if let Some(svc) = &mut req.service {
        if svc.service.is_empty() {
            return Err(HttpError::bad("Must provide service name"));
        }
        if svc.id.is_empty() {
            svc.id = svc.service.clone();
        }
        validate_service(svc)?;
    }
    for c in req.check.iter_mut().chain(req.checks.iter_mut()) {
        if c.status.is_empty() {
            c.status = HEALTH_CRITICAL.into();
        }
        if !cairn_types::structs::valid_status(&c.status) {
            return Err(HttpError::bad(format!("Invalid check status {:?}", c.status)));
        }
        if !c.node.is_empty() && c.node != req.node {
            return Err(HttpError::bad(format!(
                "Check node {:?} does not match registration node {:?}",
                c.node, req.node
            )));
        }
        if c.check_id.is_empty() && c.name.is_empty() {
            return Err(HttpError::bad("Must provide check ID or name"));
        }
    }
    written_ok(write(&agent, &p, WriteRequest::CatalogRegister(req)).await?)
}

/// Checks Consul applies to a service definition regardless of where it came from.
pub fn validate_service(svc: &NodeService) -> Result<(), HttpError> {
    if svc.service.len() > 1024 || svc.id.len() > 1024 {
        return Err(HttpError::bad("service name and ID must be at most 1024 characters"));
    }
    if svc.weights.passing < 1 {
        return Err(HttpError::bad("Passing must be greater than 0"));
    }
    if svc.weights.warning < 0 {
        return Err(HttpError::bad("Warning must be greater or equal than 0"));
    }
    if svc.meta.len() > 64 {
        return Err(HttpError::bad("Node metadata cannot contain more than 64 key/value pairs"));
    }
    for k in svc.meta.keys() {
        if k.is_empty() || k.len() > 128 || k.starts_with("consul-") {
            return Err(HttpError::bad(format!("Invalid service meta key {k:?}: keys must be 1-128 characters and not use the reserved 'consul-' prefix")));
        }
    }
    Ok(())
}

pub async fn deregister(State(agent): State<AgentRef>, RawQuery(raw): RawQuery, body: Bytes) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let req: DeregisterRequest = decode_body(&body)?;
    super::check_dc_name(&agent, &req.datacenter)?;
    if req.node.is_empty() {
        return Err(HttpError::bad("Must provide node"));
    }
    written_ok(write(&agent, &p, WriteRequest::CatalogDeregister(req)).await?)
}

pub async fn datacenters(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    // Answered by a server, from the WAN pool, nearest first.
    agent.server()?;
    let dc = agent.config().datacenter.clone();
    let list = match agent.wan.get() {
        Some(wan) => cairn_cluster::gossip::datacenters_by_distance(wan, &dc),
        None => vec![dc],
    };
    Ok(json_response(None, p.has("pretty"), &list))
}

pub async fn nodes(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let q = QueryOpts::parse_discovery(&p, &agent)?;
    q.check_filter::<cairn_types::structs::Node>()?;
    let (meta, res) = read(&agent, &q, &p, ReadRequest::CatalogListNodes).await?;
    Ok(json_response(Some(meta), q.pretty, &expect_answer!(res, ReadResponse::Nodes)))
}

pub async fn services(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let q = QueryOpts::parse_discovery(&p, &agent)?;
    q.check_filter::<ServiceNode>()?;
    let (meta, res) = read(&agent, &q, &p, ReadRequest::CatalogListServices).await?;
    Ok(json_response(Some(meta), q.pretty, &expect_answer!(res, ReadResponse::Services)))
}

pub async fn service(State(agent): State<AgentRef>, Path(name): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let q = QueryOpts::parse_discovery(&p, &agent)?;
    q.check_filter::<ServiceNode>()?;
    let tags: Vec<String> = p.all("tag").to_vec();
    let (meta, res) = read(&agent, &q, &p, ReadRequest::CatalogServiceNodes { service: name, tags }).await?;
    Ok(json_response(Some(meta), q.pretty, &expect_answer!(res, ReadResponse::ServiceNodes)))
}

pub async fn node(State(agent): State<AgentRef>, Path(node): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let q = QueryOpts::parse_discovery(&p, &agent)?;
    q.check_filter::<NodeService>()?;
    let (meta, res) = read(&agent, &q, &p, ReadRequest::CatalogNodeServices { node }).await?;
    // The filter (applied by the server) keeps some of the node's services.
    let out = expect_answer!(res, ReadResponse::NodeServices).map(|(n, svcs)| NodeServices {
        node: (*n).clone(),
        services: svcs.iter().map(|s| (s.id.clone(), (**s).clone())).collect(),
    });
    Ok(json_response(Some(meta), q.pretty, &out))
}

pub async fn node_services(
    State(agent): State<AgentRef>,
    Path(node): Path<String>,
    RawQuery(raw): RawQuery,
) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let q = QueryOpts::parse_discovery(&p, &agent)?;
    q.check_filter::<NodeService>()?;
    let (meta, res) = read(&agent, &q, &p, ReadRequest::CatalogNodeServices { node: node.clone() }).await?;
    let Some((n, svcs)) = expect_answer!(res, ReadResponse::NodeServices) else {
        return Err(HttpError::not_found(format!("Node {node:?} not found")));
    };
    let services: Vec<NodeService> = svcs.iter().map(|s| (**s).clone()).collect();
    Ok(json_response(Some(meta), q.pretty, &NodeServiceList { node: (*n).clone(), services }))
}
