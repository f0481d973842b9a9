//! `/v1/catalog/*`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};

use cairn_store::state::topics;
use cairn_types::structs::{
    DeregisterRequest, NodeService, NodeServiceList, NodeServices, RegisterRequest, ServiceNode, HEALTH_CRITICAL,
};
use cairn_types::{Command, CommandResult};

use super::{
    blocking, check_dc, decode_body, json_response, local_only, sort_near, AgentRef, HttpError, HttpResult, Params,
    QueryOpts,
};

/// `?node-meta=k:v` (repeatable): every pair must match.
fn node_meta_filter(p: &Params) -> Result<Vec<(String, String)>, HttpError> {
    p.all("node-meta")
        .iter()
        .map(|kv| match kv.split_once(':') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Ok((kv.clone(), String::new())),
        })
        .collect()
}

fn meta_matches(meta: &BTreeMap<String, String>, want: &[(String, String)]) -> bool {
    want.iter().all(|(k, v)| meta.get(k) == Some(v))
}

fn applied_ok(r: CommandResult) -> HttpResult {
    super::applied(r)?;
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
    let applied = agent.server()?.apply(Command::Register(req)).await?;
    applied_ok(applied.result)
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
    let applied = agent.server()?.apply(Command::Deregister(req)).await?;
    applied_ok(applied.result)
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
    let want = node_meta_filter(&p)?;
    let (meta, rows) = blocking(&agent, &q, vec![topics::NODES], local_only(&p, |st| st.nodes())).await?;
    let mut rows: Vec<_> = rows.iter().filter(|n| meta_matches(&n.meta, &want)).map(|n| &**n).collect();
    sort_near(&agent, p.get("near"), &mut rows, |n| &n.node);
    Ok(json_response(Some(meta), q.pretty, &q.filter_rows(rows)?))
}

pub async fn services(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let q = QueryOpts::parse_discovery(&p, &agent)?;
    q.check_filter::<ServiceNode>()?;
    let want = node_meta_filter(&p)?;
    let filtered = q.filter.is_some() || !want.is_empty();
    let (meta, out) = blocking(
        &agent,
        &q,
        vec![topics::SERVICES],
        local_only(&p, |st| {
            if !filtered {
                return st.services();
            }
            // With a filter or node-meta, go through instances (Consul filters ServiceNode rows).
            let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for ((node, _), svc) in st.services.iter() {
                let Some(n) = st.node(node) else { continue };
                if !meta_matches(&n.meta, &want) {
                    continue;
                }
                let row = serde_json::to_value(ServiceNode::new(n, svc)).unwrap_or_default();
                if let Some(f) = &q.filter {
                    if !f.matches(&row) {
                        continue;
                    }
                }
                let tags = out.entry(svc.service.clone()).or_default();
                for t in &svc.tags {
                    if !tags.contains(t) {
                        tags.push(t.clone());
                    }
                }
            }
            out.values_mut().for_each(|t| t.sort());
            (st.index("services"), out)
        }),
    )
    .await?;
    Ok(json_response(Some(meta), q.pretty, &out))
}

pub async fn service(State(agent): State<AgentRef>, Path(name): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let q = QueryOpts::parse_discovery(&p, &agent)?;
    q.check_filter::<ServiceNode>()?;
    let tags: Vec<String> = p.all("tag").to_vec();
    let want = node_meta_filter(&p)?;
    let read = local_only(&p, |st| st.service_nodes(&name, &tags));
    let (meta, rows) = blocking(&agent, &q, vec![topics::service(&name)], read).await?;
    let mut rows: Vec<_> = rows.into_iter().filter(|r| meta_matches(&r.node_meta, &want)).collect();
    sort_near(&agent, p.get("near"), &mut rows, |r| &r.node);
    Ok(json_response(Some(meta), q.pretty, &q.filter_rows(rows)?))
}

pub async fn node(State(agent): State<AgentRef>, Path(node): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let q = QueryOpts::parse_discovery(&p, &agent)?;
    q.check_filter::<NodeService>()?;
    let read = local_only(&p, |st| st.node_services(&node));
    let (meta, found) = blocking(&agent, &q, vec![topics::node(&node)], read).await?;
    let out = found.map(|(n, svcs)| NodeServices {
        node: (*n).clone(),
        services: svcs.iter().map(|s| (s.id.clone(), (**s).clone())).collect(),
    });
    if let (Some(f), Some(o)) = (&q.filter, &out) {
        // The filter applies to the services of the node.
        let kept: BTreeMap<String, NodeService> = o
            .services
            .iter()
            .filter(|(_, s)| f.matches(&serde_json::to_value(s).unwrap_or_default()))
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        return Ok(json_response(Some(meta), q.pretty, &NodeServices { node: o.node.clone(), services: kept }));
    }
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
    let read = local_only(&p, |st| st.node_services(&node));
    let (meta, found) = blocking(&agent, &q, vec![topics::node(&node)], read).await?;
    let Some((n, svcs)) = found else {
        return Err(HttpError::not_found(format!("Node {node:?} not found")));
    };
    let svcs: Vec<NodeService> = svcs.iter().map(|s| (**s).clone()).collect();
    let kept: Vec<NodeService> = match &q.filter {
        Some(f) => svcs.into_iter().filter(|s| f.matches(&serde_json::to_value(s).unwrap_or_default())).collect(),
        None => svcs,
    };
    Ok(json_response(Some(meta), q.pretty, &NodeServiceList { node: (*n).clone(), services: kept }))
}
