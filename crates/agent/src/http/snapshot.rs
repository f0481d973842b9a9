//! `/v1/snapshot`: save the state as a checked archive (GET) and restore one into the running
//! cluster (PUT). See `cairn_cluster::snapshot` for the archive.

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use cairn_types::rpc::{OperatorRequest, OperatorResponse};

use super::{check_dc, operator_call, set_meta, AgentRef, HttpError, HttpResult, Params};

/// `GET /v1/snapshot[?stale]`: the archive, with `X-Consul-Index` the index it holds.
pub async fn save(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let OperatorResponse::Snapshot { archive, meta } = operator_call(&agent, &p, OperatorRequest::SnapshotSave).await?
    else {
        return Err(HttpError::internal("unexpected answer to a snapshot save"));
    };
    let mut r = Response::new(Body::from(archive));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    // As Consul's: the server that made it says whether it knew a leader and when it last heard
    // from it (a `?stale` save from a follower or a cut-off server).
    set_meta(
        r.headers_mut(),
        super::Meta {
            index: meta.index.max(1),
            known_leader: meta.known_leader,
            last_contact_ms: meta.last_contact_ms,
        },
    );
    Ok(r)
}

/// `PUT /v1/snapshot`: restores the archive in the body; answers once every server will hold it.
pub async fn restore(State(agent): State<AgentRef>, RawQuery(raw): RawQuery, body: Bytes) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    if body.is_empty() {
        return Err(HttpError::bad("Request decode failed: empty body"));
    }
    operator_call(&agent, &p, OperatorRequest::SnapshotRestore(body.to_vec())).await?;
    Ok(().into_response())
}
