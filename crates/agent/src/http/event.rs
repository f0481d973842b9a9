//! `/v1/event/*`: user events (see [`crate::events`]).

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
    let ev = agent.fire_event(ev).map_err(HttpError::internal)?;
    Ok(json_response(None, p.flag("pretty"), &ev))
}

/// `GET /v1/event/list?name=`: the events this agent holds, oldest first. Blocking: with `?index=`
/// equal to the current list index, waits until a newer event arrives (the index is derived from
/// the newest event's ID, so "changed" rather than "greater").
pub async fn list(State(agent): State<AgentRef>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let q = QueryOpts::parse(&p)?;
    let name = p.get("name").filter(|n| !n.is_empty());
    let mut rx = agent.events.subscribe();
    let (mut idx, mut evs) = agent.events.list(name);
    if q.index != 0 && q.index == idx {
        let deadline = tokio::time::Instant::now() + q.jittered_wait();
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
    let evs: Vec<UserEvent> = match &q.filter {
        Some(_) => {
            let rows = q.filter_rows(evs)?;
            rows.into_iter().filter_map(|v| serde_json::from_value(v).ok()).collect()
        }
        None => evs,
    };
    Ok(json_response(Some(agent.meta(idx.max(1))), q.pretty, &evs))
}
