//! `/v1/kv/*`: get (single, `recurse`, `keys` + `separator`, `raw`), put (`flags`, `cas`,
//! `acquire`/`release`), delete (`recurse`, `cas`).

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use cairn_types::command::KvOp;
use cairn_types::rpc::{ReadRequest, ReadResponse, WriteRequest};
use cairn_types::structs::DirEntry;
use cairn_types::CommandResult;

use super::{
    check_dc, expect_answer, json_response, read, set_meta, write, write_result, AgentRef, HttpError, HttpResult,
    Params, QueryOpts,
};

pub async fn get_root(agent: State<AgentRef>, q: RawQuery) -> HttpResult {
    get(agent, Path(String::new()), q).await
}

pub async fn put_root(agent: State<AgentRef>, q: RawQuery, body: Bytes) -> HttpResult {
    put(agent, Path(String::new()), q, body).await
}

pub async fn delete_root(agent: State<AgentRef>, q: RawQuery) -> HttpResult {
    delete(agent, Path(String::new()), q).await
}

pub async fn get(State(agent): State<AgentRef>, Path(key): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let q = QueryOpts::parse(&p)?;
    q.check_filter::<DirEntry>()?;
    if p.has("keys") {
        let sep = p.get("separator").unwrap_or("").to_string();
        let (meta, res) =
            read(&agent, &q, &p, ReadRequest::KvsListKeys { prefix: key.clone(), separator: sep }).await?;
        let keys = expect_answer!(res, ReadResponse::Keys);
        // Not found only for a non-root prefix; the root lists as [].
        if keys.is_empty() && !key.is_empty() {
            return Ok(not_found(meta));
        }
        return Ok(json_response(Some(meta), q.pretty, &keys));
    }
    if p.has("recurse") {
        let (meta, res) = read(&agent, &q, &p, ReadRequest::KvsList { prefix: key.clone() }).await?;
        let rows = expect_answer!(res, ReadResponse::Entries);
        if rows.is_empty() {
            return Ok(not_found(meta));
        }
        return Ok(json_response(Some(meta), q.pretty, &rows));
    }
    if key.is_empty() {
        return Err(HttpError::bad("Missing key name"));
    }
    let (meta, res) = read(&agent, &q, &p, ReadRequest::KvsGet { key }).await?;
    let ent = expect_answer!(res, ReadResponse::Entry);
    let Some(ent) = ent else { return Ok(not_found(meta)) };
    if p.has("raw") {
        // Never let a browser sniff a stored value as HTML (CVE-2020-25864).
        let mut r = Response::new(Body::from(ent.value.clone().unwrap_or_default()));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        r.headers_mut().insert("X-Content-Type-Options", HeaderValue::from_static("nosniff"));
        set_meta(r.headers_mut(), meta);
        return Ok(r);
    }
    Ok(json_response(Some(meta), q.pretty, &[&*ent]))
}

fn not_found(meta: super::Meta) -> Response {
    let mut r = StatusCode::NOT_FOUND.into_response();
    set_meta(r.headers_mut(), meta);
    r
}

pub async fn put(
    State(agent): State<AgentRef>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    if key.is_empty() {
        return Err(HttpError::bad("Missing key name"));
    }
    let max = agent.config().kv_max_value_size;
    if body.len() > max {
        return Err(HttpError::too_large(format!(
            "Request body({} bytes) too large, max size: {max} bytes. See limits.kv_max_value_size.",
            body.len()
        )));
    }
    // At most one of these: a CAS ignored in favour of an acquire would overwrite a newer value.
    p.conflicting(&["cas", "acquire", "release"])?;
    let flags = p.u64("flags").map_err(|_| HttpError::bad("Invalid flags"))?.unwrap_or(0);
    // (An acquire inside a lock-delay is the leader's to refuse: see cluster::endpoints::write.)
    let (op, cas, session) = if let Some(sess) = p.get("acquire") {
        (KvOp::Lock, 0, sess.to_string())
    } else if let Some(sess) = p.get("release") {
        (KvOp::Unlock, 0, sess.to_string())
    } else if let Some(v) = p.get("cas") {
        (KvOp::Cas, super::go_uint(v).ok_or_else(|| HttpError::bad("Invalid cas index"))?, String::new())
    } else {
        (KvOp::Set, 0, String::new())
    };
    let entry = DirEntry {
        lock_index: 0,
        key,
        flags,
        value: if body.is_empty() { None } else { Some(body.to_vec()) },
        session,
        create_index: 0,
        modify_index: cas,
    };
    kv_answer(write_result(write(&agent, &p, WriteRequest::KvsApply { op, entry }).await?)?)
}

fn kv_answer(r: CommandResult) -> HttpResult {
    match r {
        CommandResult::Bool(b) => Ok(json_response(None, false, &b)),
        other => Err(super::unexpected(&other)),
    }
}

pub async fn delete(State(agent): State<AgentRef>, Path(key): Path<String>, RawQuery(raw): RawQuery) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    // A recursive delete with a CAS index would delete the whole tree whatever the index said.
    p.conflicting(&["recurse", "cas"])?;
    let recurse = p.has("recurse");
    if key.is_empty() && !recurse {
        return Err(HttpError::bad("Missing key name"));
    }
    let (op, cas) = if recurse {
        (KvOp::DeleteTree, 0)
    } else if let Some(v) = p.get("cas") {
        (KvOp::DeleteCas, super::go_uint(v).ok_or_else(|| HttpError::bad("Invalid cas index"))?)
    } else {
        (KvOp::Delete, 0)
    };
    let entry = DirEntry {
        lock_index: 0,
        key,
        flags: 0,
        value: None,
        session: String::new(),
        create_index: 0,
        modify_index: cas,
    };
    kv_answer(write_result(write(&agent, &p, WriteRequest::KvsApply { op, entry }).await?)?)
}
