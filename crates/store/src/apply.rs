//! Writes: one function per command kind, mutating a private copy of the state and recording the
//! topics whose waiters must wake. A command that fails leaves no trace (the caller drops the copy).
//! A write that changes nothing records no topic, so identical re-registrations by anti-entropy
//! neither move an index nor wake a blocking query.

use std::sync::Arc;

use cairn_types::command::{KvOp, KvRequest};
use cairn_types::structs::{DeregisterRequest, DirEntry, HealthCheck, Node, NodeService, RegisterRequest};
use cairn_types::{Command, CommandResult};

use crate::state::{topics, State};
use crate::watch::Topic;

pub(crate) fn apply(st: &mut State, idx: u64, cmd: &Command, fired: &mut Vec<Topic>) -> CommandResult {
    match cmd {
        Command::Kv(req) => kv(st, idx, req, fired),
        Command::Register(req) => match register(st, idx, req, fired) {
            Ok(()) => CommandResult::Ok,
            Err(e) => CommandResult::Error(e),
        },
        Command::Deregister(req) => match deregister(st, idx, req, fired) {
            Ok(()) => CommandResult::Ok,
            Err(e) => CommandResult::Error(e),
        },
        Command::ReapTombstones(up_to) => {
            let old: Vec<String> =
                st.tombstones.iter().filter(|(_, i)| **i <= *up_to).map(|(k, _)| k.clone()).collect();
            for k in &old {
                st.tombstones.remove(k);
            }
            if !old.is_empty() {
                // Nobody reads tombstones directly; the topic only marks the state as changed.
                fired.push(Topic::Table("tombstones"));
            }
            CommandResult::Ok
        }
        Command::Batch(cmds) => {
            for c in cmds {
                if let CommandResult::Error(e) = apply(st, idx, c, fired) {
                    return CommandResult::Error(e);
                }
            }
            CommandResult::Ok
        }
    }
}

fn bump(st: &mut State, table: &str, idx: u64) {
    st.indexes.insert(table.to_string(), idx);
}

// ---- KV -------------------------------------------------------------------------------------

fn kv(st: &mut State, idx: u64, req: &KvRequest, fired: &mut Vec<Topic>) -> CommandResult {
    let e = &req.entry;
    match req.op {
        KvOp::Set => {
            kv_set(st, idx, e, fired);
            CommandResult::Bool(true)
        }
        KvOp::Cas => {
            let cur = st.kvs.get(&e.key).map(|x| x.modify_index);
            let ok = match (e.modify_index, cur) {
                (0, None) => true,
                (0, Some(_)) => false,
                (want, Some(have)) => want == have,
                (_, None) => false,
            };
            if ok {
                kv_set(st, idx, e, fired);
            }
            CommandResult::Bool(ok)
        }
        KvOp::Delete => {
            kv_delete(st, idx, &e.key, fired);
            CommandResult::Bool(true)
        }
        KvOp::DeleteCas => {
            // The index must match the entry's current ModifyIndex. A missing key reports true, as
            // in Consul: what the caller wanted gone is gone.
            match st.kvs.get(&e.key) {
                None => CommandResult::Bool(true),
                Some(cur) if cur.modify_index == e.modify_index => {
                    kv_delete(st, idx, &e.key, fired);
                    CommandResult::Bool(true)
                }
                Some(_) => CommandResult::Bool(false),
            }
        }
        KvOp::DeleteTree => {
            let keys: Vec<String> = st
                .kvs
                .range(e.key.clone()..)
                .take_while(|(k, _)| k.starts_with(&e.key))
                .map(|(k, _)| k.clone())
                .collect();
            if !keys.is_empty() {
                for k in &keys {
                    st.kvs.remove(k);
                    st.tombstones.insert(k.clone(), idx);
                }
                bump(st, "kvs", idx);
                bump(st, "tombstones", idx);
                fired.push(Topic::KvPrefix(e.key.clone()));
                fired.push(Topic::Table("kvs"));
            }
            CommandResult::Bool(true)
        }
    }
}

fn kv_set(st: &mut State, idx: u64, e: &DirEntry, fired: &mut Vec<Topic>) {
    let prev = st.kvs.get(&e.key);
    let mut row = e.clone();
    row.modify_index = idx;
    match prev {
        Some(p) => {
            row.create_index = p.create_index;
            // A plain set keeps the lock holder and LockIndex (Consul: "a plain PUT ignores locks").
            row.lock_index = p.lock_index;
            row.session = p.session.clone();
        }
        None => {
            row.create_index = idx;
            row.lock_index = 0;
            row.session = String::new();
        }
    }
    st.tombstones.remove(&e.key);
    st.kvs.insert(e.key.clone(), Arc::new(row));
    bump(st, "kvs", idx);
    fired.push(topics::kv(&e.key));
    fired.push(Topic::Table("kvs"));
}

fn kv_delete(st: &mut State, idx: u64, key: &str, fired: &mut Vec<Topic>) {
    if st.kvs.remove(key).is_some() {
        st.tombstones.insert(key.to_string(), idx);
        bump(st, "kvs", idx);
        bump(st, "tombstones", idx);
        fired.push(topics::kv(key));
        fired.push(Topic::Table("kvs"));
    }
}

// ---- Catalog --------------------------------------------------------------------------------

fn register(st: &mut State, idx: u64, req: &RegisterRequest, fired: &mut Vec<Topic>) -> Result<(), String> {
    if req.node.is_empty() {
        return Err("Must provide node".into());
    }
    let exists = st.nodes.contains_key(&req.node);
    if !req.skip_node_update || !exists {
        let node = Node {
            id: req.id.clone(),
            node: req.node.clone(),
            address: req.address.clone(),
            datacenter: req.datacenter.clone(),
            tagged_addresses: req.tagged_addresses.clone(),
            meta: req.node_meta.clone(),
            create_index: 0,
            modify_index: 0,
        };
        ensure_node(st, idx, node, fired)?;
    }
    if let Some(svc) = &req.service {
        ensure_service(st, idx, &req.node, svc, fired)?;
    }
    for c in req.check.iter().chain(req.checks.iter()) {
        ensure_check(st, idx, &req.node, c, fired)?;
    }
    Ok(())
}

fn ensure_node(st: &mut State, idx: u64, mut node: Node, fired: &mut Vec<Topic>) -> Result<(), String> {
    if !node.id.is_empty() {
        // Node IDs are unique: another node may not claim this one's ID.
        if let Some(other) = st.nodes.values().find(|n| n.id.eq_ignore_ascii_case(&node.id) && n.node != node.node) {
            return Err(format!(
                "Failed to register node {:?}: node ID {:?} is already used by node {:?}",
                node.node, node.id, other.node
            ));
        }
    }
    match st.nodes.get(&node.node) {
        Some(prev) => {
            node.create_index = prev.create_index;
            node.modify_index = prev.modify_index;
            if **prev == node {
                return Ok(());
            }
        }
        None => node.create_index = idx,
    }
    node.modify_index = idx;
    let name = node.node.clone();
    st.nodes.insert(name.clone(), Arc::new(node));
    bump(st, "nodes", idx);
    fired.push(topics::NODES);
    fired.push(topics::node(&name));
    // Service entries embed node fields: every service on the node changes too.
    let names: Vec<String> = st.services_on(&name).map(|s| s.service.clone()).collect();
    for s in names {
        bump_service(st, &s, idx, fired);
    }
    Ok(())
}

fn bump_service(st: &mut State, name: &str, idx: u64, fired: &mut Vec<Topic>) {
    st.indexes.insert(format!("service.{name}"), idx);
    fired.push(topics::service(name));
}

fn ensure_service(
    st: &mut State,
    idx: u64,
    node: &str,
    svc: &NodeService,
    fired: &mut Vec<Topic>,
) -> Result<(), String> {
    let mut svc = svc.clone();
    if svc.id.is_empty() {
        svc.id = svc.service.clone();
    }
    if svc.service.is_empty() {
        return Err("Must provide service name".into());
    }
    let key = (node.to_string(), svc.id.clone());
    let prev = st.services.get(&key).cloned();
    match &prev {
        Some(p) => {
            svc.create_index = p.create_index;
            svc.modify_index = p.modify_index;
            if **p == svc {
                return Ok(());
            }
        }
        None => svc.create_index = idx,
    }
    svc.modify_index = idx;
    if let Some(p) = &prev {
        if p.service != svc.service {
            st.services_by_name.remove(&(p.service.clone(), node.to_string(), p.id.clone()));
            bump_service(st, &p.service.clone(), idx, fired);
        }
    }
    st.services_by_name.insert((svc.service.clone(), node.to_string(), svc.id.clone()));
    let name = svc.service.clone();
    st.services.insert(key, Arc::new(svc));
    bump(st, "services", idx);
    bump_service(st, &name, idx, fired);
    fired.push(topics::SERVICES);
    fired.push(topics::node(node));
    // Checks of this service carry its name and tags: keep them current.
    refresh_service_checks(st, idx, node, fired);
    Ok(())
}

/// Rewrites the ServiceName/ServiceTags denormalised into checks of services on `node`.
fn refresh_service_checks(st: &mut State, idx: u64, node: &str, fired: &mut Vec<Topic>) {
    let mut changed = false;
    let checks: Vec<Arc<HealthCheck>> = st.checks_on(node).filter(|c| !c.service_id.is_empty()).collect();
    for c in checks {
        let Some(svc) = st.services.get(&(node.to_string(), c.service_id.clone())) else { continue };
        if c.service_name != svc.service || c.service_tags != svc.tags {
            let mut nc = (*c).clone();
            nc.service_name = svc.service.clone();
            nc.service_tags = svc.tags.clone();
            nc.modify_index = idx;
            st.checks.insert((node.to_string(), nc.check_id.clone()), Arc::new(nc));
            changed = true;
        }
    }
    if changed {
        bump(st, "checks", idx);
        fired.push(topics::CHECKS);
    }
}

fn ensure_check(st: &mut State, idx: u64, node: &str, c: &HealthCheck, fired: &mut Vec<Topic>) -> Result<(), String> {
    let mut c = c.clone();
    c.node = node.to_string();
    if c.check_id.is_empty() {
        c.check_id = c.name.clone();
    }
    if c.check_id.is_empty() {
        return Err("Missing check ID".into());
    }
    if c.status.is_empty() {
        c.status = cairn_types::structs::HEALTH_CRITICAL.into();
    }
    if !st.nodes.contains_key(node) {
        return Err(format!("Missing node registration for {node:?}"));
    }
    if !c.service_id.is_empty() {
        let Some(svc) = st.services.get(&(node.to_string(), c.service_id.clone())) else {
            return Err(format!(
                "Missing service registration for check {:?}: no service {:?} on node {:?}",
                c.check_id, c.service_id, node
            ));
        };
        c.service_name = svc.service.clone();
        c.service_tags = svc.tags.clone();
    } else {
        c.service_name = String::new();
        c.service_tags = Vec::new();
    }
    let key = (node.to_string(), c.check_id.clone());
    match st.checks.get(&key) {
        Some(p) => {
            c.create_index = p.create_index;
            c.modify_index = p.modify_index;
            if **p == c {
                return Ok(());
            }
        }
        None => c.create_index = idx,
    }
    c.modify_index = idx;
    let svc_name = c.service_name.clone();
    st.checks.insert(key, Arc::new(c));
    bump(st, "checks", idx);
    fired.push(topics::CHECKS);
    fired.push(topics::node(node));
    if svc_name.is_empty() {
        // A node-level check affects the health of every service on the node.
        let names: Vec<String> = st.services_on(node).map(|s| s.service.clone()).collect();
        for s in names {
            bump_service(st, &s, idx, fired);
        }
    } else {
        bump_service(st, &svc_name, idx, fired);
    }
    Ok(())
}

fn deregister(st: &mut State, idx: u64, req: &DeregisterRequest, fired: &mut Vec<Topic>) -> Result<(), String> {
    if req.node.is_empty() {
        return Err("Must provide node".into());
    }
    if !req.service_id.is_empty() {
        delete_service(st, idx, &req.node, &req.service_id, fired);
    }
    if !req.check_id.is_empty() {
        delete_check(st, idx, &req.node, &req.check_id, fired);
    }
    if req.service_id.is_empty() && req.check_id.is_empty() {
        delete_node(st, idx, &req.node, fired);
    }
    Ok(())
}

fn delete_service(st: &mut State, idx: u64, node: &str, id: &str, fired: &mut Vec<Topic>) {
    let key = (node.to_string(), id.to_string());
    let Some(svc) = st.services.remove(&key) else { return };
    st.services_by_name.remove(&(svc.service.clone(), node.to_string(), id.to_string()));
    let check_ids: Vec<String> =
        st.checks_on(node).filter(|c| c.service_id == id).map(|c| c.check_id.clone()).collect();
    for cid in check_ids {
        st.checks.remove(&(node.to_string(), cid));
        bump(st, "checks", idx);
        fired.push(topics::CHECKS);
    }
    bump(st, "services", idx);
    bump_service(st, &svc.service, idx, fired);
    fired.push(topics::SERVICES);
    fired.push(topics::node(node));
}

fn delete_check(st: &mut State, idx: u64, node: &str, id: &str, fired: &mut Vec<Topic>) {
    let Some(c) = st.checks.remove(&(node.to_string(), id.to_string())) else { return };
    bump(st, "checks", idx);
    fired.push(topics::CHECKS);
    fired.push(topics::node(node));
    if c.service_name.is_empty() {
        let names: Vec<String> = st.services_on(node).map(|s| s.service.clone()).collect();
        for s in names {
            bump_service(st, &s, idx, fired);
        }
    } else {
        bump_service(st, &c.service_name, idx, fired);
    }
}

fn delete_node(st: &mut State, idx: u64, node: &str, fired: &mut Vec<Topic>) {
    if !st.nodes.contains_key(node) {
        return;
    }
    let ids: Vec<String> = st.services_on(node).map(|s| s.id.clone()).collect();
    for id in ids {
        delete_service(st, idx, node, &id, fired);
    }
    let cids: Vec<String> = st.checks_on(node).map(|c| c.check_id.clone()).collect();
    for cid in cids {
        delete_check(st, idx, node, &cid, fired);
    }
    st.nodes.remove(node);
    bump(st, "nodes", idx);
    fired.push(topics::NODES);
    fired.push(topics::node(node));
}
