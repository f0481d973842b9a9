//! `/v1/health/*`.

use axum::extract::{Path, RawQuery, State};

use cairn_types::rpc::{ReadRequest, ReadResponse};
use cairn_types::structs::HealthCheck;

use super::{check_dc, expect_answer, json_response, read, AgentRef, HttpError, HttpResult, Params, QueryOpts};

async fn checks_of(agent: &AgentRef, p: &Params, req: ReadRequest) -> HttpResult {
    let q = QueryOpts::parse_discovery(p, agent)?;
    q.check_filter::<HealthCheck>()?;
    let (meta, res) = read(agent, &q, p, req).await?;
    Ok(json_response(Some(meta), q.pretty, &expect_answer!(res, ReadResponse::Checks)))
}

pub async fn node(State(agent): State<AgentRef>, Path(node): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    checks_of(&agent, &p, ReadRequest::HealthNodeChecks { node }).await
}

pub async fn checks(State(agent): State<AgentRef>, Path(svc): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    checks_of(&agent, &p, ReadRequest::HealthServiceChecks { service: svc }).await
}

pub async fn service(State(agent): State<AgentRef>, Path(svc): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let q = QueryOpts::parse_discovery(&p, &agent)?;
    q.check_filter::<cairn_types::structs::ServiceEntry>()?;
    let tags: Vec<String> = p.all("tag").to_vec();
    let req = ReadRequest::HealthServiceNodes { service: svc, tags, passing: p.flag("passing") };
    let (meta, res) = read(&agent, &q, &p, req).await?;
    Ok(json_response(Some(meta), q.pretty, &expect_answer!(res, ReadResponse::ServiceEntries)))
}

pub async fn state(State(agent): State<AgentRef>, Path(state): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    if !matches!(state.as_str(), "any" | "passing" | "warning" | "critical") {
        return Err(HttpError::bad(format!("Invalid state {state:?}: must be one of any, passing, warning, critical")));
    }
    checks_of(&agent, &p, ReadRequest::HealthChecksInState { state }).await
}
