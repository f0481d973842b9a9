//! `/v1/health/*`.

use axum::extract::{Path, RawQuery, State};

use cairn_store::state::topics;
use cairn_types::structs::HealthCheck;

use super::{
    blocking, check_dc, json_response, local_only, sort_near, AgentRef, HttpError, HttpResult, Params, QueryOpts,
};

fn rows(v: &[std::sync::Arc<HealthCheck>]) -> Vec<&HealthCheck> {
    v.iter().map(|c| &**c).collect()
}

pub async fn node(State(agent): State<AgentRef>, Path(node): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let q = QueryOpts::parse_discovery(&p, &agent)?;
    q.check_filter::<HealthCheck>()?;
    let (meta, checks) =
        blocking(&agent, &q, vec![topics::node(&node)], local_only(&p, |st| st.node_checks(&node))).await?;
    Ok(json_response(Some(meta), q.pretty, &q.filter_rows(rows(&checks))?))
}

pub async fn checks(State(agent): State<AgentRef>, Path(svc): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let q = QueryOpts::parse_discovery(&p, &agent)?;
    q.check_filter::<HealthCheck>()?;
    let (meta, checks) =
        blocking(&agent, &q, vec![topics::service(&svc)], local_only(&p, |st| st.service_checks(&svc))).await?;
    let mut rows = rows(&checks);
    sort_near(&agent, p.get("near"), &mut rows, |c| &c.node);
    Ok(json_response(Some(meta), q.pretty, &q.filter_rows(rows)?))
}

pub async fn service(State(agent): State<AgentRef>, Path(svc): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let q = QueryOpts::parse_discovery(&p, &agent)?;
    q.check_filter::<cairn_types::structs::ServiceEntry>()?;
    let tags: Vec<String> = p.all("tag").to_vec();
    let passing = p.flag("passing");
    let read = local_only(&p, |st| st.check_service_nodes(&svc, &tags, passing));
    let (meta, mut entries) = blocking(&agent, &q, vec![topics::service(&svc)], read).await?;
    sort_near(&agent, p.get("near"), &mut entries, |e| &e.node.node);
    Ok(json_response(Some(meta), q.pretty, &q.filter_rows(entries)?))
}

pub async fn state(State(agent): State<AgentRef>, Path(state): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    if !matches!(state.as_str(), "any" | "passing" | "warning" | "critical") {
        return Err(HttpError::bad(format!("Invalid state {state:?}: must be one of any, passing, warning, critical")));
    }
    let q = QueryOpts::parse_discovery(&p, &agent)?;
    q.check_filter::<HealthCheck>()?;
    let (meta, checks) = blocking(&agent, &q, vec![topics::CHECKS], |st| st.checks_in_state(&state)).await?;
    let mut rows = rows(&checks);
    sort_near(&agent, p.get("near"), &mut rows, |c| &c.node);
    Ok(json_response(Some(meta), q.pretty, &q.filter_rows(rows)?))
}
