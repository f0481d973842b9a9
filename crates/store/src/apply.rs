//! Writes: one function per command kind, mutating a private copy of the state and recording the
//! topics whose waiters must wake. A command that fails leaves no trace (the caller drops the copy).
//! A write that changes nothing records no topic, so identical re-registrations by anti-entropy
//! neither move an index nor wake a blocking query.

use std::sync::Arc;

use cairn_types::command::{KvOp, KvRequest};
use cairn_types::structs::{
    DeregisterRequest, DirEntry, HealthCheck, Node, NodeService, RegisterRequest, Session, HEALTH_CRITICAL,
    SESSION_BEHAVIOR_DELETE,
};
use cairn_types::{Command, CommandResult, Error};

use crate::state::{topics, State};
use crate::watch::Topic;

/// What an apply did besides changing state: the topics whose waiters wake, and the keys whose
/// locks a session invalidation released, with their lock-delay (the caller times those; the state
/// machine reads no clock).
#[derive(Default)]
pub struct Fx {
    pub fired: Vec<Topic>,
    pub lock_delays: Vec<(String, u64)>,
}

pub(crate) fn apply(st: &mut State, idx: u64, cmd: &Command, fx: &mut Fx) -> CommandResult {
    match cmd {
        Command::Kv(req) => kv(st, idx, req, fx),
        Command::Register(req) => match register(st, idx, req, fx) {
            Ok(()) => CommandResult::Ok,
            Err(e) => CommandResult::Error(e),
        },
        Command::Deregister(req) => match deregister(st, idx, req, fx) {
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
                fx.fired.push(Topic::Table("tombstones"));
            }
            CommandResult::Ok
        }
        Command::SessionCreate(sess) => match session_create(st, idx, sess, fx) {
            Ok(()) => CommandResult::Ok,
            Err(e) => CommandResult::Error(e),
        },
        Command::SessionDestroy(id) => {
            invalidate_session(st, idx, id, fx);
            CommandResult::Ok
        }
        Command::Txn(ops) => crate::txn::apply_txn(st, idx, ops, fx),
        Command::QuerySet(q) => match query_set(st, idx, q, fx) {
            Ok(()) => CommandResult::Ok,
            Err(e) => CommandResult::Error(e),
        },
        Command::QueryDelete(id) => {
            if st.queries.remove(id).is_some() {
                bump(st, "queries", idx);
                fx.fired.push(topics::QUERIES);
            }
            CommandResult::Ok
        }
        Command::CoordinateBatchUpdate(entries) => {
            for e in entries {
                // As Consul: coordinates of nodes the catalog does not know are dropped (the node
                // may have been deregistered while the update was in flight).
                if !st.nodes.contains_key(&e.node) || e.coord.validate().is_err() {
                    continue;
                }
                let key = (e.node.clone(), e.segment.clone());
                if st.coordinates.get(&key).is_some_and(|c| **c == e.coord) {
                    continue;
                }
                st.coordinates.insert(key, Arc::new(e.coord.clone()));
                bump(st, "coordinates", idx);
                fx.fired.push(topics::COORDINATES);
            }
            CommandResult::Ok
        }
        Command::AutopilotSet { config, cas } => {
            let current = st.autopilot.as_ref().map_or(0, |c| c.modify_index);
            if cas.is_some_and(|i| i != current) {
                return CommandResult::Bool(false);
            }
            let mut row = config.clone();
            row.create_index = st.autopilot.as_ref().map_or(idx, |c| c.create_index);
            row.modify_index = idx;
            st.autopilot = Some(Arc::new(row));
            bump(st, "autopilot", idx);
            fx.fired.push(Topic::Table("autopilot"));
            CommandResult::Bool(true)
        }
        // Decoded and installed by the state machine (`Store::restore_at`), never applied here.
        Command::Restore(_) => CommandResult::Error(Error::invalid("a restore cannot be part of another command")),
        Command::Batch(cmds) => {
            for c in cmds {
                if let CommandResult::Error(e) = apply(st, idx, c, fx) {
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

fn kv(st: &mut State, idx: u64, req: &KvRequest, fx: &mut Fx) -> CommandResult {
    let e = &req.entry;
    match req.op {
        KvOp::Set => {
            kv_set(st, idx, e, fx);
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
                kv_set(st, idx, e, fx);
            }
            CommandResult::Bool(ok)
        }
        KvOp::Delete => {
            kv_delete(st, idx, &e.key, fx);
            CommandResult::Bool(true)
        }
        KvOp::DeleteCas => {
            // The index must match the entry's current ModifyIndex. A missing key reports true, as
            // in Consul: what the caller wanted gone is gone.
            match st.kvs.get(&e.key) {
                None => CommandResult::Bool(true),
                Some(cur) if cur.modify_index == e.modify_index => {
                    kv_delete(st, idx, &e.key, fx);
                    CommandResult::Bool(true)
                }
                Some(_) => CommandResult::Bool(false),
            }
        }
        KvOp::Lock => match kv_lock(st, idx, e, fx) {
            Ok(b) => CommandResult::Bool(b),
            Err(m) => CommandResult::Error(m),
        },
        KvOp::Unlock => match kv_unlock(st, idx, e, fx) {
            Ok(b) => CommandResult::Bool(b),
            Err(m) => CommandResult::Error(m),
        },
        KvOp::DeleteTree => {
            kv_delete_tree(st, idx, &e.key, fx);
            CommandResult::Bool(true)
        }
    }
}

pub(crate) fn kv_delete_tree(st: &mut State, idx: u64, prefix: &str, fx: &mut Fx) {
    let keys: Vec<String> =
        st.kvs.range(prefix.to_string()..).take_while(|(k, _)| k.starts_with(prefix)).map(|(k, _)| k.clone()).collect();
    if keys.is_empty() {
        return;
    }
    for k in &keys {
        if let Some(old) = st.kvs.remove(k) {
            if !old.session.is_empty() {
                st.session_keys.remove(&(old.session.clone(), k.clone()));
            }
        }
        st.tombstones.insert(k.clone(), idx);
    }
    bump(st, "kvs", idx);
    bump(st, "tombstones", idx);
    fx.fired.push(Topic::KvPrefix(prefix.to_string()));
    fx.fired.push(Topic::Table("kvs"));
}

pub(crate) fn kv_set(st: &mut State, idx: u64, e: &DirEntry, fx: &mut Fx) {
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
    fx.fired.push(topics::kv(&e.key));
    fx.fired.push(Topic::Table("kvs"));
}

pub(crate) fn kv_delete(st: &mut State, idx: u64, key: &str, fx: &mut Fx) {
    if let Some(old) = st.kvs.remove(key) {
        if !old.session.is_empty() {
            st.session_keys.remove(&(old.session.clone(), key.to_string()));
        }
        st.tombstones.insert(key.to_string(), idx);
        bump(st, "kvs", idx);
        bump(st, "tombstones", idx);
        fx.fired.push(topics::kv(key));
        fx.fired.push(Topic::Table("kvs"));
    }
}

/// Consul's acquire: with a valid session, take a free lock (LockIndex + 1) or refresh one already
/// held by the same session; a lock held by another session is not taken (false).
pub(crate) fn kv_lock(st: &mut State, idx: u64, e: &DirEntry, fx: &mut Fx) -> Result<bool, Error> {
    if !st.sessions.contains_key(&e.session) {
        return Err(Error::rejected(format!("invalid session {:?}", e.session)));
    }
    let prev = st.kvs.get(&e.key).cloned();
    let mut row = e.clone();
    row.modify_index = idx;
    match &prev {
        Some(p) if !p.session.is_empty() && p.session != e.session => return Ok(false),
        Some(p) if p.session == e.session => {
            row.create_index = p.create_index;
            row.lock_index = p.lock_index;
        }
        Some(p) => {
            row.create_index = p.create_index;
            row.lock_index = p.lock_index + 1;
        }
        None => {
            row.create_index = idx;
            row.lock_index = 1;
        }
    }
    st.tombstones.remove(&e.key);
    st.session_keys.insert((e.session.clone(), e.key.clone()));
    st.kvs.insert(e.key.clone(), Arc::new(row));
    bump(st, "kvs", idx);
    fx.fired.push(topics::kv(&e.key));
    fx.fired.push(Topic::Table("kvs"));
    Ok(true)
}

/// Consul's release: only the holding session releases (LockIndex stays, Session clears).
pub(crate) fn kv_unlock(st: &mut State, idx: u64, e: &DirEntry, fx: &mut Fx) -> Result<bool, Error> {
    let Some(prev) = st.kvs.get(&e.key).cloned() else { return Ok(false) };
    if prev.session != e.session || e.session.is_empty() {
        return Ok(false);
    }
    let mut row = e.clone();
    row.session = String::new();
    row.lock_index = prev.lock_index;
    row.create_index = prev.create_index;
    row.modify_index = idx;
    st.session_keys.remove(&(e.session.clone(), e.key.clone()));
    st.kvs.insert(e.key.clone(), Arc::new(row));
    bump(st, "kvs", idx);
    fx.fired.push(topics::kv(&e.key));
    fx.fired.push(Topic::Table("kvs"));
    Ok(true)
}

// ---- Prepared queries -----------------------------------------------------------------------

fn query_set(st: &mut State, idx: u64, q: &cairn_types::query::PreparedQuery, fx: &mut Fx) -> Result<(), Error> {
    q.validate().map_err(Error::Invalid)?;
    if q.id.is_empty() {
        return Err(Error::invalid("Missing query ID"));
    }
    // Names (and template prefixes) are unique among queries; several unnamed plain queries may
    // exist, but only one catch-all (unnamed) template.
    let clash = st
        .queries
        .values()
        .find(|o| o.id != q.id && o.name == q.name && (!q.name.is_empty() || (o.is_template() && q.is_template())));
    if let Some(other) = clash {
        return Err(Error::rejected(format!("Name {:?} aliases an existing query name (query {})", q.name, other.id)));
    }
    if !q.session.is_empty() && !st.sessions.contains_key(&q.session) {
        return Err(Error::rejected(format!("Invalid session {:?}", q.session)));
    }
    let mut row = q.clone();
    match st.queries.get(&q.id) {
        Some(prev) => row.create_index = prev.create_index,
        None => row.create_index = idx,
    }
    row.modify_index = idx;
    st.queries.insert(row.id.clone(), Arc::new(row));
    bump(st, "queries", idx);
    fx.fired.push(topics::QUERIES);
    Ok(())
}

// ---- Sessions -------------------------------------------------------------------------------

fn session_create(st: &mut State, idx: u64, sess: &Session, fx: &mut Fx) -> Result<(), Error> {
    if sess.id.is_empty() {
        return Err(Error::invalid("Missing session ID"));
    }
    if st.sessions.contains_key(&sess.id) {
        return Err(Error::rejected(format!("Session {:?} already exists", sess.id)));
    }
    if !st.nodes.contains_key(&sess.node) {
        return Err(Error::rejected(format!("Missing node registration for {:?}", sess.node)));
    }
    let ids = sess.node_checks.iter().chain(sess.service_checks.iter().map(|c| &c.id));
    for cid in ids {
        let Some(c) = st.checks.get(&(sess.node.clone(), cid.clone())) else {
            return Err(Error::rejected(format!("Missing check '{cid}' registration")));
        };
        if c.status == HEALTH_CRITICAL {
            return Err(Error::rejected(format!("Check '{cid}' is in critical state")));
        }
    }
    let mut row = sess.clone();
    row.create_index = idx;
    row.modify_index = idx;
    st.sessions.insert(row.id.clone(), Arc::new(row));
    bump(st, "sessions", idx);
    fx.fired.push(topics::SESSIONS);
    Ok(())
}

/// Removes a session; its locks are released, or its keys deleted, per its behavior. Every key it
/// held is reported with the session's lock-delay.
fn invalidate_session(st: &mut State, idx: u64, id: &str, fx: &mut Fx) {
    let Some(sess) = st.sessions.remove(id) else { return };
    bump(st, "sessions", idx);
    fx.fired.push(topics::SESSIONS);
    // Prepared queries bound to the session go with it, as in Consul.
    let bound: Vec<String> = st.queries.values().filter(|q| q.session == id).map(|q| q.id.clone()).collect();
    for qid in bound {
        st.queries.remove(&qid);
        bump(st, "queries", idx);
        fx.fired.push(topics::QUERIES);
    }
    for key in st.session_held_keys(id) {
        st.session_keys.remove(&(id.to_string(), key.clone()));
        if sess.behavior == SESSION_BEHAVIOR_DELETE {
            kv_delete(st, idx, &key, fx);
        } else if let Some(prev) = st.kvs.get(&key).cloned() {
            let mut row = (*prev).clone();
            row.session = String::new();
            row.modify_index = idx;
            st.kvs.insert(key.clone(), Arc::new(row));
            bump(st, "kvs", idx);
            fx.fired.push(topics::kv(&key));
            fx.fired.push(Topic::Table("kvs"));
        }
        if sess.lock_delay_ns > 0 {
            fx.lock_delays.push((key, sess.lock_delay_ns));
        }
    }
}

/// Sessions on `node` that depend on check `check_id`.
fn sessions_on_check(st: &State, node: &str, check_id: &str) -> Vec<String> {
    st.sessions
        .values()
        .filter(|s| s.node == node)
        .filter(|s| s.node_checks.iter().any(|c| c == check_id) || s.service_checks.iter().any(|c| c.id == check_id))
        .map(|s| s.id.clone())
        .collect()
}

// ---- Catalog --------------------------------------------------------------------------------

fn register(st: &mut State, idx: u64, req: &RegisterRequest, fx: &mut Fx) -> Result<(), Error> {
    if req.node.is_empty() {
        return Err(Error::invalid("Must provide node"));
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
        ensure_node(st, idx, node, fx)?;
    }
    if let Some(svc) = &req.service {
        ensure_service(st, idx, &req.node, svc, fx)?;
    }
    for c in req.check.iter().chain(req.checks.iter()) {
        ensure_check(st, idx, &req.node, c, fx)?;
    }
    Ok(())
}

pub(crate) fn ensure_node(st: &mut State, idx: u64, mut node: Node, fx: &mut Fx) -> Result<(), Error> {
    if !node.id.is_empty() {
        // Node IDs are unique: another node may not claim this one's ID.
        if let Some(other) = st.nodes.values().find(|n| n.id.eq_ignore_ascii_case(&node.id) && n.node != node.node) {
            return Err(Error::rejected(format!(
                "Failed to register node {:?}: node ID {:?} is already used by node {:?}",
                node.node, node.id, other.node
            )));
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
    fx.fired.push(topics::NODES);
    fx.fired.push(topics::node(&name));
    // Service entries embed node fields: every service on the node changes too.
    let names: Vec<String> = st.services_on(&name).map(|s| s.service.clone()).collect();
    for s in names {
        bump_service(st, &s, idx, fx);
    }
    Ok(())
}

fn bump_service(st: &mut State, name: &str, idx: u64, fx: &mut Fx) {
    st.indexes.insert(format!("service.{name}"), idx);
    fx.fired.push(topics::service(name));
}

pub(crate) fn ensure_service(
    st: &mut State,
    idx: u64,
    node: &str,
    svc: &NodeService,
    fx: &mut Fx,
) -> Result<(), Error> {
    let mut svc = svc.clone();
    if svc.id.is_empty() {
        svc.id = svc.service.clone();
    }
    if svc.service.is_empty() {
        return Err(Error::invalid("Must provide service name"));
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
            bump_service(st, &p.service.clone(), idx, fx);
        }
    }
    st.services_by_name.insert((svc.service.clone(), node.to_string(), svc.id.clone()));
    let name = svc.service.clone();
    st.services.insert(key, Arc::new(svc));
    bump(st, "services", idx);
    bump_service(st, &name, idx, fx);
    fx.fired.push(topics::SERVICES);
    fx.fired.push(topics::node(node));
    // Checks of this service carry its name and tags: keep them current.
    refresh_service_checks(st, idx, node, fx);
    Ok(())
}

/// Rewrites the ServiceName/ServiceTags denormalised into checks of services on `node`.
fn refresh_service_checks(st: &mut State, idx: u64, node: &str, fx: &mut Fx) {
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
        fx.fired.push(topics::CHECKS);
    }
}

pub(crate) fn ensure_check(st: &mut State, idx: u64, node: &str, c: &HealthCheck, fx: &mut Fx) -> Result<(), Error> {
    let mut c = c.clone();
    c.node = node.to_string();
    if c.check_id.is_empty() {
        c.check_id = c.name.clone();
    }
    if c.check_id.is_empty() {
        return Err(Error::invalid("Missing check ID"));
    }
    if c.status.is_empty() {
        c.status = cairn_types::structs::HEALTH_CRITICAL.into();
    }
    if !st.nodes.contains_key(node) {
        return Err(Error::rejected(format!("Missing node registration for {node:?}")));
    }
    if !c.service_id.is_empty() {
        let Some(svc) = st.services.get(&(node.to_string(), c.service_id.clone())) else {
            return Err(Error::rejected(format!(
                "Missing service registration for check {:?}: no service {:?} on node {:?}",
                c.check_id, c.service_id, node
            )));
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
    let critical = c.status == HEALTH_CRITICAL;
    let check_id = c.check_id.clone();
    st.checks.insert(key, Arc::new(c));
    if critical {
        // A session bound to a check ends when the check goes critical.
        for sid in sessions_on_check(st, node, &check_id) {
            invalidate_session(st, idx, &sid, fx);
        }
    }
    bump(st, "checks", idx);
    fx.fired.push(topics::CHECKS);
    fx.fired.push(topics::node(node));
    if svc_name.is_empty() {
        // A node-level check affects the health of every service on the node.
        let names: Vec<String> = st.services_on(node).map(|s| s.service.clone()).collect();
        for s in names {
            bump_service(st, &s, idx, fx);
        }
    } else {
        bump_service(st, &svc_name, idx, fx);
    }
    Ok(())
}

fn deregister(st: &mut State, idx: u64, req: &DeregisterRequest, fx: &mut Fx) -> Result<(), Error> {
    if req.node.is_empty() {
        return Err(Error::invalid("Must provide node"));
    }
    if !req.service_id.is_empty() {
        delete_service(st, idx, &req.node, &req.service_id, fx);
    }
    if !req.check_id.is_empty() {
        delete_check(st, idx, &req.node, &req.check_id, fx);
    }
    if req.service_id.is_empty() && req.check_id.is_empty() {
        delete_node(st, idx, &req.node, fx);
    }
    Ok(())
}

pub(crate) fn delete_service(st: &mut State, idx: u64, node: &str, id: &str, fx: &mut Fx) {
    let key = (node.to_string(), id.to_string());
    let Some(svc) = st.services.remove(&key) else { return };
    st.services_by_name.remove(&(svc.service.clone(), node.to_string(), id.to_string()));
    let check_ids: Vec<String> =
        st.checks_on(node).filter(|c| c.service_id == id).map(|c| c.check_id.clone()).collect();
    for cid in check_ids {
        for sid in sessions_on_check(st, node, &cid) {
            invalidate_session(st, idx, &sid, fx);
        }
        st.checks.remove(&(node.to_string(), cid));
        bump(st, "checks", idx);
        fx.fired.push(topics::CHECKS);
    }
    bump(st, "services", idx);
    bump_service(st, &svc.service, idx, fx);
    fx.fired.push(topics::SERVICES);
    fx.fired.push(topics::node(node));
}

pub(crate) fn delete_check(st: &mut State, idx: u64, node: &str, id: &str, fx: &mut Fx) {
    let Some(c) = st.checks.remove(&(node.to_string(), id.to_string())) else { return };
    for sid in sessions_on_check(st, node, id) {
        invalidate_session(st, idx, &sid, fx);
    }
    bump(st, "checks", idx);
    fx.fired.push(topics::CHECKS);
    fx.fired.push(topics::node(node));
    if c.service_name.is_empty() {
        let names: Vec<String> = st.services_on(node).map(|s| s.service.clone()).collect();
        for s in names {
            bump_service(st, &s, idx, fx);
        }
    } else {
        bump_service(st, &c.service_name, idx, fx);
    }
}

pub(crate) fn delete_node(st: &mut State, idx: u64, node: &str, fx: &mut Fx) {
    if !st.nodes.contains_key(node) {
        return;
    }
    let ids: Vec<String> = st.services_on(node).map(|s| s.id.clone()).collect();
    for id in ids {
        delete_service(st, idx, node, &id, fx);
    }
    let cids: Vec<String> = st.checks_on(node).map(|c| c.check_id.clone()).collect();
    for cid in cids {
        delete_check(st, idx, node, &cid, fx);
    }
    let on_node: Vec<String> = st.sessions.values().filter(|s| s.node == node).map(|s| s.id.clone()).collect();
    for sid in on_node {
        invalidate_session(st, idx, &sid, fx);
    }
    let coords: Vec<(String, String)> = st
        .coordinates
        .range((node.to_string(), String::new())..)
        .take_while(|((n, _), _)| n == node)
        .map(|(k, _)| k.clone())
        .collect();
    if !coords.is_empty() {
        for k in &coords {
            st.coordinates.remove(k);
        }
        bump(st, "coordinates", idx);
        fx.fired.push(topics::COORDINATES);
    }
    st.nodes.remove(node);
    bump(st, "nodes", idx);
    fx.fired.push(topics::NODES);
    fx.fired.push(topics::node(node));
}
