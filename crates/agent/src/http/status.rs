//! `/v1/status/*`: answered by the server itself, no leader needed.

use axum::extract::State;

use super::{json_response, AgentRef, HttpResult};

pub async fn leader(State(agent): State<AgentRef>) -> HttpResult {
    Ok(json_response(None, false, &agent.server()?.leader_addr().unwrap_or_default()))
}

pub async fn peers(State(agent): State<AgentRef>) -> HttpResult {
    Ok(json_response(None, false, &agent.server()?.peers()))
}
