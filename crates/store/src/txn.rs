//! Transactions: the operations of one `/v1/txn` request, applied in order to a private copy of the
//! state. The first failing operation's error (and any later ones that also fail) roll the whole
//! transaction back; the caller then discards the copy.

use std::sync::Arc;

use cairn_types::structs::{DirEntry, HealthCheck, NodeService};
use cairn_types::txn::{TxnCheckOp, TxnError, TxnKvOp, TxnNodeOp, TxnOp, TxnResult, TxnServiceOp};
use cairn_types::CommandResult;

use crate::apply::{self, Fx};
use crate::state::State;

pub(crate) fn apply_txn(st: &mut State, idx: u64, ops: &[TxnOp], fx: &mut Fx) -> CommandResult {
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let r = match (&op.kv, &op.node, &op.service, &op.check) {
            (Some(k), None, None, None) => kv_op(st, idx, k, fx, &mut results),
            (None, Some(n), None, None) => node_op(st, idx, n, fx, &mut results),
            (None, None, Some(s), None) => service_op(st, idx, s, fx, &mut results),
            (None, None, None, Some(c)) => check_op(st, idx, c, fx, &mut results),
            _ => Err("operation must set exactly one of KV, Node, Service or Check".to_string()),
        };
        if let Err(what) = r {
            errors.push(TxnError { op_index: i, what });
        }
    }
    if errors.is_empty() {
        CommandResult::TxnResults(results)
    } else {
        CommandResult::TxnErrors(errors)
    }
}

/// Runs a read-only transaction against a snapshot (no Raft entry, nothing changes).
pub fn read_txn(st: &State, ops: &[TxnOp]) -> CommandResult {
    let mut copy = st.clone();
    let idx = st.last_index;
    apply_txn(&mut copy, idx, ops, &mut Fx::default())
}

/// Write results carry the entry without its value, as Consul's do.
fn no_value(e: &DirEntry) -> DirEntry {
    DirEntry { value: None, ..e.clone() }
}

fn entry(k: &TxnKvOp) -> DirEntry {
    DirEntry {
        lock_index: 0,
        key: k.key.clone(),
        flags: k.flags,
        value: k.value.clone(),
        session: k.session.clone(),
        create_index: 0,
        modify_index: k.index,
    }
}

fn kv_op(st: &mut State, idx: u64, k: &TxnKvOp, fx: &mut Fx, out: &mut Vec<TxnResult>) -> Result<(), String> {
    let key = k.key.as_str();
    let cur = st.kvs.get(key).cloned();
    let written = |st: &State, out: &mut Vec<TxnResult>| {
        if let Some(e) = st.kvs.get(key) {
            out.push(TxnResult::KV(no_value(e)));
        }
    };
    match k.verb.as_str() {
        "set" => {
            apply::kv_set(st, idx, &entry(k), fx);
            written(st, out);
        }
        "cas" => {
            let ok = match (&cur, k.index) {
                (None, 0) => true,
                (Some(c), i) => c.modify_index == i,
                (None, _) => false,
            };
            if !ok {
                return Err(format!("failed to set key {key:?}, index is stale"));
            }
            apply::kv_set(st, idx, &entry(k), fx);
            written(st, out);
        }
        "lock" => {
            if !apply::kv_lock(st, idx, &entry(k), fx)? {
                return Err(format!("failed to lock key {key:?}, lock is already held"));
            }
            written(st, out);
        }
        "unlock" => {
            if !apply::kv_unlock(st, idx, &entry(k), fx)? {
                return Err(format!("failed to unlock key {key:?}, lock isn't held, or is held by another session"));
            }
            written(st, out);
        }
        "get" => match cur {
            Some(e) => out.push(TxnResult::KV((*e).clone())),
            None => return Err(format!("key {key:?} doesn't exist")),
        },
        "get-or-empty" => {
            if let Some(e) = cur {
                out.push(TxnResult::KV((*e).clone()));
            }
        }
        "get-tree" => {
            for e in st.kv_list(key).1 {
                out.push(TxnResult::KV((*e).clone()));
            }
        }
        "check-index" => match cur {
            Some(e) if e.modify_index == k.index => {}
            Some(e) => return Err(format!("current modify index {} != {}", e.modify_index, k.index)),
            None => return Err(format!("key {key:?} doesn't exist")),
        },
        "check-session" => match cur {
            Some(e) if e.session == k.session => {}
            Some(e) => return Err(format!("lock is currently held by {:?}", e.session)),
            None => return Err(format!("key {key:?} doesn't exist")),
        },
        "check-not-exists" => {
            if cur.is_some() {
                return Err(format!("key {key:?} exists"));
            }
        }
        "delete" => apply::kv_delete(st, idx, key, fx),
        "delete-tree" => apply::kv_delete_tree(st, idx, key, fx),
        "delete-cas" => match cur {
            Some(e) if e.modify_index == k.index => apply::kv_delete(st, idx, key, fx),
            Some(_) => return Err(format!("failed to delete key {key:?}, index is stale")),
            None => {}
        },
        other => return Err(format!("unknown KV verb {other:?}")),
    }
    Ok(())
}

fn node_op(st: &mut State, idx: u64, n: &TxnNodeOp, fx: &mut Fx, out: &mut Vec<TxnResult>) -> Result<(), String> {
    let name = n.node.node.clone();
    if name.is_empty() {
        return Err("Must provide node".into());
    }
    let cur = st.nodes.get(&name).cloned();
    match n.verb.as_str() {
        "set" | "cas" => {
            if n.verb == "cas" && cur.as_ref().map(|c| c.modify_index).unwrap_or(0) != n.node.modify_index {
                return Err(format!("failed to set node {name:?}, index is stale"));
            }
            apply::ensure_node(st, idx, n.node.clone(), fx)?;
            if let Some(x) = st.nodes.get(&name) {
                out.push(TxnResult::Node((**x).clone()));
            }
        }
        "get" => match cur {
            Some(x) => out.push(TxnResult::Node((*x).clone())),
            None => return Err(format!("node {name:?} doesn't exist")),
        },
        "delete" => apply::delete_node(st, idx, &name, fx),
        "delete-cas" => match cur {
            Some(x) if x.modify_index == n.node.modify_index => apply::delete_node(st, idx, &name, fx),
            Some(_) => return Err(format!("failed to delete node {name:?}, index is stale")),
            None => {}
        },
        other => return Err(format!("unknown Node verb {other:?}")),
    }
    Ok(())
}

fn service_op(st: &mut State, idx: u64, s: &TxnServiceOp, fx: &mut Fx, out: &mut Vec<TxnResult>) -> Result<(), String> {
    let mut svc: NodeService = s.service.clone();
    if svc.id.is_empty() {
        svc.id = svc.service.clone();
    }
    let key = (s.node.clone(), svc.id.clone());
    let cur = st.services.get(&key).cloned();
    match s.verb.as_str() {
        "set" | "cas" => {
            if !st.nodes.contains_key(&s.node) {
                return Err(format!("node {:?} doesn't exist", s.node));
            }
            if s.verb == "cas" && cur.as_ref().map(|c| c.modify_index).unwrap_or(0) != svc.modify_index {
                return Err(format!("failed to set service {:?} on node {:?}, index is stale", svc.id, s.node));
            }
            apply::ensure_service(st, idx, &s.node, &svc, fx)?;
            if let Some(x) = st.services.get(&key) {
                out.push(TxnResult::Service((**x).clone()));
            }
        }
        "get" => match cur {
            Some(x) => out.push(TxnResult::Service((*x).clone())),
            None => return Err(format!("service {:?} on node {:?} doesn't exist", svc.id, s.node)),
        },
        "delete" => apply::delete_service(st, idx, &s.node, &svc.id, fx),
        "delete-cas" => match cur {
            Some(x) if x.modify_index == svc.modify_index => apply::delete_service(st, idx, &s.node, &svc.id, fx),
            Some(_) => {
                return Err(format!("failed to delete service {:?} on node {:?}, index is stale", svc.id, s.node))
            }
            None => {}
        },
        other => return Err(format!("unknown Service verb {other:?}")),
    }
    Ok(())
}

fn check_op(st: &mut State, idx: u64, c: &TxnCheckOp, fx: &mut Fx, out: &mut Vec<TxnResult>) -> Result<(), String> {
    let hc: HealthCheck = c.check.clone();
    let key = (hc.node.clone(), hc.check_id.clone());
    let cur: Option<Arc<HealthCheck>> = st.checks.get(&key).cloned();
    match c.verb.as_str() {
        "set" | "cas" => {
            if c.verb == "cas" && cur.as_ref().map(|x| x.modify_index).unwrap_or(0) != hc.modify_index {
                return Err(format!("failed to set check {:?} on node {:?}, index is stale", hc.check_id, hc.node));
            }
            apply::ensure_check(st, idx, &hc.node, &hc, fx)?;
            if let Some(x) = st.checks.get(&key) {
                out.push(TxnResult::Check((**x).clone()));
            }
        }
        "get" => match cur {
            Some(x) => out.push(TxnResult::Check((*x).clone())),
            None => return Err(format!("check {:?} on node {:?} doesn't exist", hc.check_id, hc.node)),
        },
        "delete" => apply::delete_check(st, idx, &hc.node, &hc.check_id, fx),
        "delete-cas" => match cur {
            Some(x) if x.modify_index == hc.modify_index => apply::delete_check(st, idx, &hc.node, &hc.check_id, fx),
            Some(_) => {
                return Err(format!("failed to delete check {:?} on node {:?}, index is stale", hc.check_id, hc.node))
            }
            None => {}
        },
        other => return Err(format!("unknown Check verb {other:?}")),
    }
    Ok(())
}
