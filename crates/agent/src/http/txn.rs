//! `PUT /v1/txn`: KV, node, service and check operations applied all or nothing in one Raft entry.
//! A transaction of reads only is answered from a snapshot (honouring `?stale`/`?consistent`)
//! without a Raft entry.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::Value;

use cairn_types::txn::{TxnError, TxnOp, TxnResponse, TxnResult};
use cairn_types::{Command, CommandResult};

use super::{check_dc, json_response, AgentRef, HttpError, HttpResult, Params, QueryOpts};

fn answer(res: CommandResult, meta: Option<super::Meta>, pretty: bool) -> HttpResult {
    match res {
        CommandResult::TxnResults(r) => {
            let body = TxnResponse { results: Some(r.iter().map(TxnResult::to_json).collect()), errors: None };
            Ok(json_response(meta, pretty, &body))
        }
        CommandResult::TxnErrors(e) => rollback(e, pretty),
        CommandResult::Error(e) => Err(e.into()),
        other => Err(HttpError::internal(format!("unexpected result {other}"))),
    }
}

/// Consul answers a rolled-back transaction with 409 and the errors.
fn rollback(errors: Vec<TxnError>, pretty: bool) -> HttpResult {
    let body = TxnResponse { results: None, errors: Some(errors) };
    Ok((StatusCode::CONFLICT, json_response(None, pretty, &body)).into_response())
}

pub async fn txn(
    State(agent): State<AgentRef>,
    RawQuery(raw): RawQuery,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> HttpResult {
    let p = Params::parse(raw.as_deref());
    check_dc(&agent, &p)?;
    let cfg = agent.config();
    // As Consul: the body may be as large as the larger of the two limits.
    let max = txn_body_limit(&cfg);
    let too_large = |len: String| {
        HttpError::too_large(format!(
            "Request body({len} bytes) too large, max size: {max} bytes. See limits.txn_max_req_len."
        ))
    };
    // The router's body limit stops an oversized body before it is read; say why as Consul does.
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(
            headers
                .get(axum::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .map_or_else(|| format!("more than {max}"), str::to_string),
        ),
        _ => HttpError::bad(e.body_text()),
    })?;
    if body.len() > max {
        return Err(too_large(body.len().to_string()));
    }
    let v: Value = super::decode_body(&body)
        .map_err(|e| HttpError::bad(e.msg.replacen("Request decode failed", "Failed to parse body", 1)))?;
    let Value::Array(items) = v else {
        return Err(HttpError::bad("Failed to parse body: expected a list of operations"));
    };
    let max_ops = cfg.txn_max_ops;
    if items.len() > max_ops {
        return Err(HttpError::too_large(format!(
            "Transaction contains too many operations ({} > {max_ops})",
            items.len()
        )));
    }
    let ops: Vec<TxnOp> = items
        .into_iter()
        .enumerate()
        .map(|(i, x)| {
            serde_json::from_value(x).map_err(|e| HttpError::bad(format!("Failed to parse operation {i}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    for kv in ops.iter().filter_map(|op| op.kv.as_ref()) {
        let len = kv.value.as_ref().map_or(0, Vec::len);
        if len > cfg.kv_max_value_size {
            return Err(HttpError::too_large(format!(
                "Value for key {:?} is too large ({len} > {} bytes)",
                kv.key, cfg.kv_max_value_size
            )));
        }
    }
    // A node operation naming another datacenter would land here otherwise; Consul routes on it.
    for n in ops.iter().filter_map(|op| op.node.as_ref()) {
        super::check_dc_name(&agent, &n.node.datacenter)?;
    }
    // Consul's pre-checks, before anything is proposed: each failure is an error of the rollback.
    let pre: Vec<TxnError> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| {
            op.kv
                .as_ref()
                .filter(|k| k.key.is_empty() && k.verb != "delete-tree")
                .map(|_| TxnError { op_index: i, what: "Must provide key".into() })
        })
        .collect();
    if !pre.is_empty() {
        return rollback(pre, p.has("pretty"));
    }
    if ops.iter().all(TxnOp::is_read) {
        let q = QueryOpts::parse(&p)?;
        let (meta, res) = super::blocking(&agent, &QueryOpts { index: 0, ..q }, Vec::new(), |st| {
            (st.last_index, cairn_store::txn::read_txn(st, &ops))
        })
        .await?;
        return answer(res, Some(meta), p.has("pretty"));
    }
    // Lock-delay is the leader's wall-clock decision, taken before proposing.
    let server = agent.server()?;
    let delayed: Vec<TxnError> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| {
            op.kv.as_ref().filter(|k| k.verb == "lock" && server.lock_delayed(&k.key)).map(|k| (i, k))
        })
        .map(|(i, k)| TxnError { op_index: i, what: format!("failed to lock key {:?} due to lock delay", k.key) })
        .collect();
    if !delayed.is_empty() {
        return rollback(delayed, p.has("pretty"));
    }
    let applied = agent.server()?.apply(Command::Txn(ops)).await?;
    answer(applied.result, Some(agent.meta(applied.index)), p.has("pretty"))
}

/// The largest `/v1/txn` body: Consul takes the larger of `limits.txn_max_req_len` and
/// `limits.kv_max_value_size`.
pub fn txn_body_limit(cfg: &crate::Config) -> usize {
    cfg.txn_max_req_len.max(cfg.kv_max_value_size)
}
