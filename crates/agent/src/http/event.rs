//! `/v1/event/*`: user events (see [`cairn_cluster::gossip::user_events`]).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};

use cairn_types::structs::UserEvent;

use super::{check_dc, json_response, AgentRef, HttpError, HttpResult, Params, QueryOpts};

/// `PUT /v1/event/fire/:name?node=&service=&tag=`, the body being the payload.
pub async fn fire(
    State(agent): State<AgentRef>,
    name: Option<Path<String>>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let name = name.map(|Path(n)| n).unwrap_or_default();
    if name.is_empty() {
        return Err(HttpError::bad("Missing name"));
    }
    let ev = UserEvent {
        id: uuid::Uuid::new_v4().to_string(),
        name,
        payload: (!body.is_empty()).then(|| body.to_vec()),
        node_filter: p.get("node").unwrap_or_default().to_string(),
        service_filter: p.get("service").unwrap_or_default().to_string(),
        tag_filter: p.get("tag").unwrap_or_default().to_string(),
        version: 1,
        ltime: 0,
    };
    // Consul answers a rejected event (bad filter, too large) with 500 and the reason.
    let ev = agent.fire_event(ev).await?;
    Ok(json_response(None, p.flag("pretty"), &ev))
}

/// `GET /v1/event/list?name=`: the events this agent holds, oldest first. Blocking: with `?index=`
/// equal to the current list index, waits until a newer event arrives (the index is derived from
/// the newest event's ID, so "changed" rather than "greater").
///
/// As Consul, this is the agent's own view: `dc` and `filter` are not looked at, and a blocking
/// call without `wait` waits up to the 10-minute maximum, without jitter.
pub async fn list(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    let q = QueryOpts::parse(&Params::parse(Some(&without(raw.as_deref(), "filter"))))?;
    let wait = match p.get("wait") {
        Some(w) if !w.is_empty() && !q.wait.is_zero() => q.wait,
        _ => super::MAX_WAIT,
    };
    let name = p.get("name").filter(|n| !n.is_empty());
    let mut rx = agent.events.subscribe();
    let (mut idx, mut evs) = agent.events.list(name);
    if q.index != 0 && q.index == idx {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                r = rx.changed() => if r.is_err() { break },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = agent.shutting_down() => break,
            }
            (idx, evs) = agent.events.list(name);
            if idx != q.index {
                break;
            }
        }
    }
    Ok(json_response(Some(agent.meta(idx.max(1))), q.pretty, &evs))
}

/// The raw query string without parameter `name` (so that a `filter` Consul ignores here is not
/// parsed, and cannot fail the request).
fn without(raw: Option<&str>, name: &str) -> String {
    raw.unwrap_or_default().split('&').filter(|kv| kv.split('=').next() != Some(name)).collect::<Vec<_>>().join("&")
}
