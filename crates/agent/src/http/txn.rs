//! `PUT /v1/txn`: KV, node, service and check operations applied all or nothing in one Raft entry.
//! A transaction of reads only is answered from a snapshot (honouring `?stale`/`?consistent`)
//! without a Raft entry.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::Value;

use cairn_types::rpc::{ReadRequest, ReadResponse, WriteRequest, WriteResult};
use cairn_types::txn::{TxnError, TxnOp, TxnResponse, TxnResult};
use cairn_types::CommandResult;

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
        let q = QueryOpts { index: 0, ..QueryOpts::parse(&p)? };
        let (meta, res) = super::read(&agent, &q, &p, ReadRequest::TxnRead(ops)).await?;
        return answer(super::expect_answer!(res, ReadResponse::Txn), Some(meta), p.has("pretty"));
    }
    // (Lock-delay is the leader's wall-clock decision: see cluster::endpoints::write.)
    let w = super::write(&agent, &p, WriteRequest::TxnApply(ops)).await?;
    let WriteResult::Result(r) = w.result else { return Err(super::unexpected(&w.result)) };
    answer(r, Some(super::Meta { index: w.index, known_leader: true, last_contact_ms: 0 }), p.has("pretty"))
}

/// The largest `/v1/txn` body: Consul takes the larger of `limits.txn_max_req_len` and
/// `limits.kv_max_value_size`.
pub fn txn_body_limit(cfg: &crate::Config) -> usize {
    cfg.txn_max_req_len.max(cfg.kv_max_value_size)
}
