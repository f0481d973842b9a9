//! `/v1/snapshot`: save the state as a checked archive (GET) and restore one into the running
//! cluster (PUT). See `cairn_cluster::snapshot` for the archive.

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::{check_dc, set_meta, AgentRef, HttpError, HttpResult, Params};

/// `GET /v1/snapshot[?stale]`: the archive, with `X-Consul-Index` the index it holds.
pub async fn save(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let (archive, index) = agent.server()?.snapshot_archive(p.has("stale")).await?;
    let mut r = Response::new(Body::from(archive));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    set_meta(r.headers_mut(), agent.meta(index.max(1)));
    Ok(r)
}

/// `PUT /v1/snapshot`: restores the archive in the body; answers once every server will hold it.
pub async fn restore(State(agent): State<AgentRef>, RawQuery(raw): RawQuery, body: Bytes) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    if body.is_empty() {
        return Err(HttpError::bad("Request decode failed: empty body"));
    }
    agent.server()?.restore_archive(&body).await?;
    Ok(().into_response())
}
