//! `/v1/status/*`: answered by the server asked, no leader needed.

use axum::extract::State;

use cairn_types::rpc::{OperatorRequest, OperatorResponse};

use super::{json_response, operator_call, AgentRef, HttpResult, Params};

pub async fn leader(State(agent): State<AgentRef>) -> HttpResult {
    match operator_call(&agent, &Params::default(), OperatorRequest::StatusLeader).await? {
        OperatorResponse::Leader(l) => Ok(json_response(None, false, &l)),
        other => Err(super::unexpected(&other)),
    }
}

pub async fn peers(State(agent): State<AgentRef>) -> HttpResult {
    match operator_call(&agent, &Params::default(), OperatorRequest::StatusPeers).await? {
        OperatorResponse::Peers(p) => Ok(json_response(None, false, &p)),
        other => Err(super::unexpected(&other)),
    }
}
