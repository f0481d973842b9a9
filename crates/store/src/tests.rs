//! Store unit tests: every table's reads see its writes, a relevant write fires a watch and an
//! unrelated one does not, no-op writes move no index.

use std::collections::BTreeMap;

use cairn_types::command::{KvOp, KvRequest};
use cairn_types::structs::*;
use cairn_types::structs::{ServiceCheckRef, Session};
use cairn_types::{Command, CommandResult};

use crate::state::topics;
use crate::{Store, Topic, WatchSet};

fn put(s: &Store, idx: u64, key: &str, val: &str) -> CommandResult {
    kv(s, idx, KvOp::Set, key, val, 0)
}

fn kv(s: &Store, idx: u64, op: KvOp, key: &str, val: &str, cas: u64) -> CommandResult {
    let entry = DirEntry {
        lock_index: 0,
        key: key.into(),
        flags: 0,
        value: Some(val.as_bytes().to_vec()),
        session: String::new(),
        create_index: 0,
        modify_index: cas,
    };
    s.apply(idx, &Command::Kv(KvRequest { op, entry }))
}

/// True if the watch set has fired (a stored permit resolves immediately).
fn fired(ws: &WatchSet) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    rt.block_on(async { tokio::time::timeout(std::time::Duration::from_millis(1), ws.changed()).await.is_ok() })
}

fn reg(node: &str, addr: &str) -> RegisterRequest {
    RegisterRequest { node: node.into(), address: addr.into(), ..Default::default() }
}

fn svc(id: &str, name: &str, tags: &[&str]) -> NodeService {
    NodeService {
        id: id.into(),
        service: name.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        port: 80,
        ..Default::default()
    }
}

fn check(id: &str, svc_id: &str, status: &str) -> HealthCheck {
    HealthCheck {
        check_id: id.into(),
        name: id.into(),
        service_id: svc_id.into(),
        status: status.into(),
        ..Default::default()
    }
}

#[test]
fn kv_set_get_and_indexes() {
    let s = Store::new();
    assert_eq!(put(&s, 5, "a/b", "1"), CommandResult::Bool(true));
    assert_eq!(put(&s, 6, "a/b", "2"), CommandResult::Bool(true));
    put(&s, 7, "other", "x");
    let st = s.snapshot();
    let (idx, e) = st.kv_get("a/b");
    let e = e.unwrap();
    assert_eq!(idx, 6, "an existing key reports its own ModifyIndex");
    assert_eq!(e.create_index, 5);
    assert_eq!(e.modify_index, 6);
    assert_eq!(e.value.as_deref(), Some(&b"2"[..]));
    let (idx, none) = st.kv_get("missing");
    assert!(none.is_none());
    assert_eq!(idx, 7, "a missing key reports the table index");
}

#[test]
fn kv_cas_semantics() {
    let s = Store::new();
    assert_eq!(kv(&s, 2, KvOp::Cas, "k", "v", 0), CommandResult::Bool(true), "cas=0 creates");
    assert_eq!(kv(&s, 3, KvOp::Cas, "k", "v", 0), CommandResult::Bool(false), "cas=0 on existing fails");
    assert_eq!(kv(&s, 4, KvOp::Cas, "k", "w", 99), CommandResult::Bool(false));
    assert_eq!(kv(&s, 5, KvOp::Cas, "k", "w", 2), CommandResult::Bool(true));
    assert_eq!(s.snapshot().kv_get("k").1.unwrap().modify_index, 5);
    assert_eq!(kv(&s, 6, KvOp::DeleteCas, "k", "", 4), CommandResult::Bool(false));
    assert_eq!(kv(&s, 7, KvOp::DeleteCas, "k", "", 5), CommandResult::Bool(true));
    assert!(s.snapshot().kv_get("k").1.is_none());
    assert_eq!(kv(&s, 8, KvOp::Cas, "nope", "x", 3), CommandResult::Bool(false), "cas>0 on missing fails");
}

#[test]
fn kv_list_keys_and_delete_tree() {
    let s = Store::new();
    put(&s, 1, "app/a", "1");
    put(&s, 2, "app/b/c", "2");
    put(&s, 3, "app/b/d", "3");
    put(&s, 4, "other", "4");
    let st = s.snapshot();
    let (idx, rows) = st.kv_list("app/");
    assert_eq!(rows.len(), 3);
    assert_eq!(idx, 3);
    let (_, keys) = st.kv_keys("app/", "/");
    assert_eq!(keys, vec!["app/a".to_string(), "app/b/".to_string()]);
    let (_, keys) = st.kv_keys("", "");
    assert_eq!(keys.len(), 4);
    kv(&s, 9, KvOp::DeleteTree, "app/b", "", 0);
    let st = s.snapshot();
    let (idx, rows) = st.kv_list("app/");
    assert_eq!(rows.len(), 1);
    assert_eq!(idx, 9, "tombstones keep the prefix index from going back");
    assert!(st.kv_get("other").1.is_some());
}

#[test]
fn kv_watch_fires_on_key_not_on_other_key() {
    let s = Store::new();
    put(&s, 1, "a", "1");
    let ws_a = WatchSet::new();
    s.watch(&ws_a, [topics::kv("a")]);
    let ws_prefix = WatchSet::new();
    s.watch(&ws_prefix, [topics::kv_prefix("dir/")]);
    put(&s, 2, "b", "1");
    assert!(!fired(&ws_a), "write to b must not wake a watcher of a");
    assert!(!fired(&ws_prefix));
    put(&s, 3, "dir/x", "1");
    assert!(fired(&ws_prefix));
    assert!(!fired(&ws_a));
    put(&s, 4, "a", "2");
    assert!(fired(&ws_a));
}

#[test]
fn kv_delete_tree_fires_keys_under_it() {
    let s = Store::new();
    put(&s, 1, "t/a", "1");
    put(&s, 2, "u", "1");
    let ws = WatchSet::new();
    s.watch(&ws, [topics::kv("t/a")]);
    let other = WatchSet::new();
    s.watch(&other, [topics::kv("u")]);
    kv(&s, 3, KvOp::DeleteTree, "t/", "", 0);
    assert!(fired(&ws));
    assert!(!fired(&other));
}

#[test]
fn catalog_register_and_read() {
    let s = Store::new();
    let mut r = reg("n1", "10.0.0.1");
    r.service = Some(svc("web1", "web", &["v1", "Primary"]));
    r.checks = vec![check("c1", "web1", HEALTH_PASSING), check("nodecheck", "", HEALTH_PASSING)];
    assert_eq!(s.apply(10, &Command::Register(r)), CommandResult::Ok);
    let st = s.snapshot();
    assert_eq!(st.nodes().1.len(), 1);
    let (idx, svcs) = st.services();
    assert_eq!(idx, 10);
    assert_eq!(svcs["web"], vec!["Primary".to_string(), "v1".to_string()]);
    let (idx, rows) = st.service_nodes("web", &["primary".into()]);
    assert_eq!(idx, 10);
    assert_eq!(rows.len(), 1, "tag filters ignore case");
    assert_eq!(rows[0].address, "10.0.0.1");
    assert_eq!(st.service_nodes("web", &["v2".into()]).1.len(), 0);
    let (_, entries) = st.check_service_nodes("web", &[], false);
    assert_eq!(entries[0].checks.len(), 2);
    assert_eq!(st.checks_in_state("passing").1.len(), 2);
    let c = st.checks.get(&("n1".to_string(), "c1".to_string())).unwrap();
    assert_eq!(c.service_name, "web");
}

#[test]
fn check_for_unknown_service_is_rejected_without_partial_write() {
    let s = Store::new();
    let mut r = reg("n1", "10.0.0.1");
    r.check = Some(check("c1", "nosuch", HEALTH_PASSING));
    assert!(matches!(s.apply(3, &Command::Register(r)), CommandResult::Error(_)));
    assert!(s.snapshot().nodes.is_empty(), "the node of a rejected registration is not written");
    assert_eq!(s.snapshot().last_index, 0);
}

#[test]
fn identical_reregistration_moves_no_index_and_wakes_nobody() {
    let s = Store::new();
    let mut r = reg("n1", "10.0.0.1");
    r.service = Some(svc("web1", "web", &[]));
    r.check = Some(check("c1", "web1", HEALTH_PASSING));
    s.apply(10, &Command::Register(r.clone()));
    let ws = WatchSet::new();
    s.watch(&ws, [topics::service("web"), topics::NODES, topics::CHECKS, topics::SERVICES]);
    s.apply(11, &Command::Register(r));
    assert!(!fired(&ws));
    assert_eq!(s.snapshot().service_index("web"), 10);
}

#[test]
fn service_watch_is_per_service() {
    let s = Store::new();
    let mut r = reg("n1", "10.0.0.1");
    r.service = Some(svc("web1", "web", &[]));
    s.apply(1, &Command::Register(r));
    let ws_web = WatchSet::new();
    s.watch(&ws_web, [topics::service("web")]);
    let ws_nodes = WatchSet::new();
    s.watch(&ws_nodes, [topics::NODES]);
    let mut r = reg("n1", "10.0.0.1");
    r.skip_node_update = true;
    r.service = Some(svc("db1", "db", &[]));
    s.apply(2, &Command::Register(r));
    assert!(!fired(&ws_web), "registering db must not wake a web watcher");
    assert!(!fired(&ws_nodes), "a service write must not wake a nodes watcher");
    // A check on web1 wakes the web watcher.
    let mut r = reg("n1", "10.0.0.1");
    r.skip_node_update = true;
    r.check = Some(check("c", "web1", HEALTH_CRITICAL));
    s.apply(3, &Command::Register(r));
    assert!(fired(&ws_web));
    assert_eq!(s.snapshot().service_index("web"), 3);
    assert_eq!(s.snapshot().service_index("db"), 2);
}

#[test]
fn node_level_check_wakes_services_on_node() {
    let s = Store::new();
    let mut r = reg("n1", "10.0.0.1");
    r.service = Some(svc("web1", "web", &[]));
    s.apply(1, &Command::Register(r));
    let ws = WatchSet::new();
    s.watch(&ws, [topics::service("web")]);
    let mut r = reg("n1", "10.0.0.1");
    r.check = Some(check(SERF_CHECK_ID, "", HEALTH_CRITICAL));
    s.apply(2, &Command::Register(r));
    assert!(fired(&ws));
    let (_, rows) = s.snapshot().check_service_nodes("web", &[], true);
    assert!(rows.is_empty(), "passing-only drops an instance whose node check is critical");
}

#[test]
fn deregister_service_node_and_check() {
    let s = Store::new();
    let mut r = reg("n1", "10.0.0.1");
    r.service = Some(svc("web1", "web", &[]));
    r.checks = vec![check("c1", "web1", HEALTH_PASSING), check("c2", "", HEALTH_PASSING)];
    s.apply(1, &Command::Register(r));
    let ws = WatchSet::new();
    s.watch(&ws, [topics::CHECKS]);
    s.apply(
        2,
        &Command::Deregister(DeregisterRequest { node: "n1".into(), check_id: "c2".into(), ..Default::default() }),
    );
    assert!(fired(&ws));
    assert_eq!(s.snapshot().checks.len(), 1);
    s.apply(
        3,
        &Command::Deregister(DeregisterRequest { node: "n1".into(), service_id: "web1".into(), ..Default::default() }),
    );
    let st = s.snapshot();
    assert!(st.services.is_empty());
    assert!(st.checks.is_empty(), "a service's checks go with it");
    assert_eq!(st.service_index("web"), 3);
    s.apply(4, &Command::Deregister(DeregisterRequest { node: "n1".into(), ..Default::default() }));
    assert!(s.snapshot().nodes.is_empty());
}

#[test]
fn node_id_conflict_is_rejected() {
    let s = Store::new();
    let mut a = reg("a", "1.1.1.1");
    a.id = "11111111-1111-1111-1111-111111111111".into();
    assert_eq!(s.apply(1, &Command::Register(a.clone())), CommandResult::Ok);
    let mut b = reg("b", "1.1.1.2");
    b.id = a.id.clone();
    assert!(matches!(s.apply(2, &Command::Register(b)), CommandResult::Error(_)));
}

#[test]
fn batch_is_all_or_nothing() {
    let s = Store::new();
    let mut ok = reg("n1", "10.0.0.1");
    ok.service = Some(svc("web1", "web", &[]));
    let mut bad = reg("n1", "10.0.0.1");
    bad.check = Some(check("c", "missing", HEALTH_PASSING));
    let res = s.apply(1, &Command::Batch(vec![Command::Register(ok), Command::Register(bad)]));
    assert!(matches!(res, CommandResult::Error(_)));
    assert!(s.snapshot().nodes.is_empty());
}

#[test]
fn snapshot_roundtrip_and_restore_wakes_everyone() {
    let s = Store::new();
    put(&s, 1, "a", "1");
    let mut r = reg("n1", "10.0.0.1");
    r.node_meta = BTreeMap::from([("k".to_string(), "v".to_string())]);
    s.apply(2, &Command::Register(r));
    let bytes = serde_json::to_vec(&*s.snapshot()).unwrap();
    let restored: crate::State = serde_json::from_slice(&bytes).unwrap();
    let s2 = Store::new();
    let ws = WatchSet::new();
    s2.watch(&ws, [Topic::Kv("zzz".into())]);
    s2.restore(restored);
    assert!(fired(&ws));
    let st = s2.snapshot();
    assert_eq!(st.last_index, 2);
    assert_eq!(st.kv_get("a").1.unwrap().value.as_deref(), Some(&b"1"[..]));
    assert_eq!(st.nodes.get("n1").unwrap().meta["k"], "v");
}

#[test]
fn watch_map_is_bounded() {
    let s = Store::new();
    let sets: Vec<WatchSet> = (0..(crate::watch::MAX_TOPICS + 10)).map(|_| WatchSet::new()).collect();
    for (i, ws) in sets.iter().enumerate() {
        s.watch(ws, [topics::kv(&format!("k{i}"))]);
    }
    assert!(s.inner.lock().unwrap().hub.len() <= crate::watch::MAX_TOPICS + 1);
    // The overflowed sets fell back to a coarse topic: still woken by what they watch.
    let svc_ws = WatchSet::new();
    s.watch(&svc_ws, [topics::service("web")]);
    let mut r = reg("n1", "10.0.0.1");
    r.service = Some(svc("w", "web", &[]));
    s.apply(1, &Command::Register(r));
    assert!(fired(&svc_ws), "a coarse service watch wakes on a service write");
    let check_ws = WatchSet::new();
    s.watch(&check_ws, [topics::node("n1")]);
    let mut r = reg("n1", "10.0.0.1");
    r.check = Some(check("c", "w", HEALTH_PASSING));
    s.apply(2, &Command::Register(r));
    assert!(fired(&check_ws), "a coarse node watch wakes on a check write");
    let last = sets.last().unwrap();
    put(&s, 3, &format!("k{}", crate::watch::MAX_TOPICS + 9), "x");
    assert!(fired(last));
}

#[test]
fn tombstones_are_reaped_up_to_an_index() {
    let s = Store::new();
    put(&s, 1, "a", "1");
    put(&s, 2, "b", "1");
    kv(&s, 3, KvOp::Delete, "a", "", 0);
    kv(&s, 4, KvOp::Delete, "b", "", 0);
    assert_eq!(s.snapshot().tombstones.len(), 2);
    let ws = WatchSet::new();
    s.watch(&ws, [topics::kv("a"), topics::kv_prefix("")]);
    s.apply(5, &Command::ReapTombstones(3));
    let st = s.snapshot();
    assert_eq!(st.tombstones.keys().cloned().collect::<Vec<_>>(), vec!["b".to_string()]);
    assert!(!fired(&ws), "reaping changes nothing a reader sees");
    assert!(st.kv_list("").0 >= 4, "the table index does not go back");
}

fn session(id: &str, node: &str, behavior: &str, checks: &[&str]) -> Command {
    Command::SessionCreate(Session {
        id: id.into(),
        node: node.into(),
        behavior: behavior.into(),
        lock_delay_ns: 15_000_000_000,
        node_checks: checks.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    })
}

fn lock(s: &Store, idx: u64, op: KvOp, key: &str, sess: &str) -> CommandResult {
    let entry = DirEntry {
        lock_index: 0,
        key: key.into(),
        flags: 0,
        value: Some(b"v".to_vec()),
        session: sess.into(),
        create_index: 0,
        modify_index: 0,
    };
    s.apply(idx, &Command::Kv(KvRequest { op, entry }))
}

/// A node `n1` with a passing serfHealth and a service `web1` with a passing check `svc-check`.
fn node_with_checks(s: &Store) {
    let mut r = reg("n1", "10.0.0.1");
    r.service = Some(svc("web1", "web", &[]));
    r.checks = vec![check(SERF_CHECK_ID, "", HEALTH_PASSING), check("svc-check", "web1", HEALTH_PASSING)];
    assert_eq!(s.apply(1, &Command::Register(r)), CommandResult::Ok);
}

#[test]
fn session_create_validates_node_and_checks() {
    let s = Store::new();
    assert!(matches!(s.apply(1, &session("s1", "nope", "release", &[])), CommandResult::Error(_)), "unknown node");
    node_with_checks(&s);
    assert!(matches!(s.apply(2, &session("s1", "n1", "release", &["missing"])), CommandResult::Error(_)));
    let mut r = reg("n1", "10.0.0.1");
    r.check = Some(check("bad", "", HEALTH_CRITICAL));
    s.apply(3, &Command::Register(r));
    match s.apply(4, &session("s1", "n1", "release", &["bad"])) {
        CommandResult::Error(e) => assert!(e.to_string().contains("critical"), "{e}"),
        other => panic!("{other:?}"),
    }
    let ws = WatchSet::new();
    s.watch(&ws, [topics::SESSIONS]);
    assert_eq!(s.apply(5, &session("s1", "n1", "release", &[SERF_CHECK_ID])), CommandResult::Ok);
    assert!(fired(&ws));
    let (idx, got) = s.snapshot().session_get("s1");
    assert_eq!((idx, got.unwrap().create_index), (5, 5));
}

#[test]
fn acquire_release_and_lock_index() {
    let s = Store::new();
    node_with_checks(&s);
    s.apply(2, &session("a", "n1", "release", &[]));
    s.apply(3, &session("b", "n1", "release", &[]));
    assert!(
        matches!(lock(&s, 4, KvOp::Lock, "l", "nosuch"), CommandResult::Error(e) if e.to_string().contains("invalid session"))
    );
    assert_eq!(lock(&s, 5, KvOp::Lock, "l", "a"), CommandResult::Bool(true));
    assert_eq!(lock(&s, 6, KvOp::Lock, "l", "b"), CommandResult::Bool(false), "held by another session");
    assert_eq!(lock(&s, 7, KvOp::Lock, "l", "a"), CommandResult::Bool(true), "re-acquire by the holder");
    let e = s.snapshot().kv_get("l").1.unwrap();
    assert_eq!((e.lock_index, e.session.as_str()), (1, "a"), "re-acquire does not bump LockIndex");
    assert_eq!(lock(&s, 8, KvOp::Unlock, "l", "b"), CommandResult::Bool(false), "only the holder releases");
    assert_eq!(lock(&s, 9, KvOp::Unlock, "l", "a"), CommandResult::Bool(true));
    assert_eq!(lock(&s, 10, KvOp::Lock, "l", "b"), CommandResult::Bool(true));
    let e = s.snapshot().kv_get("l").1.unwrap();
    assert_eq!((e.lock_index, e.session.as_str()), (2, "b"), "LockIndex is a fencing token");
    // A plain PUT ignores the lock and keeps the holder.
    put(&s, 11, "l", "plain");
    let e = s.snapshot().kv_get("l").1.unwrap();
    assert_eq!((e.session.as_str(), e.value.as_deref()), ("b", Some(&b"plain"[..])));
}

#[test]
fn destroy_releases_or_deletes_per_behavior_and_reports_lock_delay() {
    let s = Store::new();
    node_with_checks(&s);
    s.apply(2, &session("rel", "n1", "release", &[]));
    s.apply(3, &session("del", "n1", "delete", &[]));
    lock(&s, 4, KvOp::Lock, "a", "rel");
    lock(&s, 5, KvOp::Lock, "b", "del");
    let ws = WatchSet::new();
    s.watch(&ws, [topics::kv("a")]);
    let (_, delays) = s.apply_fx(6, &Command::SessionDestroy("rel".into()));
    assert_eq!(delays, vec![("a".to_string(), 15_000_000_000)]);
    assert!(fired(&ws));
    let e = s.snapshot().kv_get("a").1.unwrap();
    assert_eq!((e.session.as_str(), e.lock_index, e.modify_index), ("", 1, 6));
    s.apply(7, &Command::SessionDestroy("del".into()));
    assert!(s.snapshot().kv_get("b").1.is_none(), "behavior=delete removes the key");
    assert!(s.snapshot().sessions.is_empty());
    assert!(s.snapshot().session_keys.is_empty());
}

#[test]
fn critical_check_invalidates_bound_sessions_only() {
    let s = Store::new();
    node_with_checks(&s);
    s.apply(2, &session("node-bound", "n1", "release", &[SERF_CHECK_ID]));
    s.apply(
        3,
        &Command::SessionCreate(Session {
            id: "svc-bound".into(),
            node: "n1".into(),
            service_checks: vec![ServiceCheckRef { id: "svc-check".into(), namespace: String::new() }],
            ..Default::default()
        }),
    );
    s.apply(4, &session("free", "n1", "release", &[]));
    lock(&s, 5, KvOp::Lock, "k", "node-bound");
    let mut r = reg("n1", "10.0.0.1");
    r.check = Some(check("svc-check", "web1", HEALTH_CRITICAL));
    s.apply(6, &Command::Register(r));
    let st = s.snapshot();
    assert!(st.sessions.contains_key("node-bound") && st.sessions.contains_key("free"));
    assert!(!st.sessions.contains_key("svc-bound"), "a service check going critical ends its sessions");
    let mut r = reg("n1", "10.0.0.1");
    r.check = Some(check(SERF_CHECK_ID, "", HEALTH_CRITICAL));
    s.apply(7, &Command::Register(r));
    let st = s.snapshot();
    assert!(!st.sessions.contains_key("node-bound"));
    assert_eq!(st.kv_get("k").1.unwrap().session, "", "its lock is released");
}

#[test]
fn deregistering_node_or_check_invalidates_sessions() {
    let s = Store::new();
    node_with_checks(&s);
    s.apply(2, &session("s1", "n1", "release", &["svc-check"]));
    s.apply(3, &session("s2", "n1", "release", &[]));
    s.apply(
        4,
        &Command::Deregister(DeregisterRequest {
            node: "n1".into(),
            check_id: "svc-check".into(),
            ..Default::default()
        }),
    );
    assert!(!s.snapshot().sessions.contains_key("s1"), "deleting a bound check ends the session");
    assert!(s.snapshot().sessions.contains_key("s2"));
    s.apply(5, &Command::Deregister(DeregisterRequest { node: "n1".into(), ..Default::default() }));
    assert!(s.snapshot().sessions.is_empty(), "deregistering the node ends its sessions");
}

#[test]
fn deleting_a_locked_key_drops_it_from_the_session_index() {
    let s = Store::new();
    node_with_checks(&s);
    s.apply(2, &session("s", "n1", "delete", &[]));
    lock(&s, 3, KvOp::Lock, "t/a", "s");
    lock(&s, 4, KvOp::Lock, "t/b", "s");
    kv(&s, 5, KvOp::Delete, "t/a", "", 0);
    kv(&s, 6, KvOp::DeleteTree, "t/", "", 0);
    assert!(s.snapshot().session_held_keys("s").is_empty());
    put(&s, 7, "t/b", "recreated");
    s.apply(8, &Command::SessionDestroy("s".into()));
    assert!(s.snapshot().kv_get("t/b").1.is_some(), "a key re-created without the lock is not the session's");
}

fn kv_txn(verb: &str, key: &str, val: Option<&str>, index: u64, session: &str) -> cairn_types::txn::TxnOp {
    cairn_types::txn::TxnOp {
        kv: Some(cairn_types::txn::TxnKvOp {
            verb: verb.into(),
            key: key.into(),
            value: val.map(|v| v.as_bytes().to_vec()),
            flags: 0,
            index,
            session: session.into(),
        }),
        ..Default::default()
    }
}

#[test]
fn txn_applies_all_or_nothing() {
    use cairn_types::txn::TxnResult;
    let s = Store::new();
    put(&s, 1, "existing", "x");
    let ws = WatchSet::new();
    s.watch(&ws, [topics::kv("a")]);
    // One failing check rolls back the writes before it.
    let res = s.apply(
        2,
        &Command::Txn(vec![
            kv_txn("set", "a", Some("1"), 0, ""),
            kv_txn("check-not-exists", "existing", None, 0, ""),
            kv_txn("get", "missing", None, 0, ""),
        ]),
    );
    match res {
        CommandResult::TxnErrors(errs) => {
            assert_eq!(errs.iter().map(|e| e.op_index).collect::<Vec<_>>(), vec![1, 2], "every failing op is reported");
            assert!(errs[0].what.contains("exists"));
        }
        other => panic!("{other:?}"),
    }
    assert!(s.snapshot().kv_get("a").1.is_none(), "rolled back");
    assert_eq!(s.snapshot().last_index, 1);
    assert!(!fired(&ws), "a rolled-back transaction wakes nobody");

    let res = s.apply(
        3,
        &Command::Txn(vec![
            kv_txn("set", "a", Some("1"), 0, ""),
            kv_txn("cas", "existing", Some("y"), 1, ""),
            kv_txn("get", "a", None, 0, ""),
            kv_txn("delete", "nope", None, 0, ""),
        ]),
    );
    let CommandResult::TxnResults(r) = res else { panic!("{res:?}") };
    assert_eq!(r.len(), 3);
    match (&r[0], &r[2]) {
        (TxnResult::KV(w), TxnResult::KV(g)) => {
            assert_eq!(w.value, None, "write results omit the value");
            assert_eq!(g.value.as_deref(), Some(&b"1"[..]));
            assert_eq!(g.modify_index, 3);
        }
        other => panic!("{other:?}"),
    }
    assert!(fired(&ws));
    assert_eq!(s.snapshot().kv_get("existing").1.unwrap().value.as_deref(), Some(&b"y"[..]));
}

#[test]
fn txn_catalog_ops_and_read_only() {
    use cairn_types::txn::{TxnNodeOp, TxnOp, TxnServiceOp};
    let s = Store::new();
    let node = Node { node: "tn".into(), address: "1.2.3.4".into(), ..Default::default() };
    let ops = vec![
        TxnOp { node: Some(TxnNodeOp { verb: "set".into(), node: node.clone() }), ..Default::default() },
        TxnOp {
            service: Some(TxnServiceOp { verb: "set".into(), node: "tn".into(), service: svc("s1", "svc", &["t"]) }),
            ..Default::default()
        },
    ];
    assert!(matches!(s.apply(1, &Command::Txn(ops)), CommandResult::TxnResults(r) if r.len() == 2));
    assert_eq!(s.snapshot().service_nodes("svc", &[]).1.len(), 1);
    // A service on a missing node fails the whole transaction.
    let bad = vec![TxnOp {
        service: Some(TxnServiceOp { verb: "set".into(), node: "ghost".into(), service: svc("s2", "svc", &[]) }),
        ..Default::default()
    }];
    assert!(matches!(s.apply(2, &Command::Txn(bad)), CommandResult::TxnErrors(_)));
    // Read-only transactions run on a snapshot and change nothing.
    let reads = vec![
        TxnOp { node: Some(TxnNodeOp { verb: "get".into(), node: node.clone() }), ..Default::default() },
        kv_txn("get-or-empty", "nothing", None, 0, ""),
    ];
    assert!(reads.iter().all(|o| o.is_read()));
    let before = s.snapshot().last_index;
    assert!(matches!(crate::txn::read_txn(&s.snapshot(), &reads), CommandResult::TxnResults(r) if r.len() == 1));
    assert_eq!(s.snapshot().last_index, before);
}

#[test]
fn coordinates_update_watch_and_go_with_their_node() {
    use cairn_types::coordinate::{Coordinate, CoordinateEntry};
    let s = Store::new();
    s.apply(1, &Command::Register(reg("n1", "10.0.0.1")));
    s.apply(2, &Command::Register(reg("n2", "10.0.0.2")));
    let mut c = Coordinate::origin();
    c.vec[0] = 0.25;
    let e = |node: &str, coord: &Coordinate| CoordinateEntry {
        node: node.into(),
        segment: String::new(),
        coord: coord.clone(),
    };
    let ws = WatchSet::new();
    s.watch(&ws, [topics::COORDINATES]);
    let ws_kv = WatchSet::new();
    s.watch(&ws_kv, [topics::kv("k"), topics::NODES]);
    // An unknown node's and an invalid coordinate are dropped; the rest lands at this index.
    let mut bad = Coordinate::origin();
    bad.vec.pop();
    s.apply(
        3,
        &Command::CoordinateBatchUpdate(vec![
            e("n1", &c),
            e("ghost", &c),
            e("n2", &bad),
            e("n2", &Coordinate::origin()),
        ]),
    );
    assert!(fired(&ws));
    assert!(!fired(&ws_kv), "a coordinate update touches neither KV nor the nodes table");
    let st = s.snapshot();
    let (idx, all) = st.coordinates();
    assert_eq!(idx, 3);
    assert_eq!(all.iter().map(|x| x.node.as_str()).collect::<Vec<_>>(), ["n1", "n2"]);
    assert_eq!(st.node_coordinates("n1").1[0].coord, c);
    assert_eq!(st.coordinate("n2").map(|x| (**x).clone()), Some(Coordinate::origin()));
    // The same values again move nothing.
    let ws = WatchSet::new();
    s.watch(&ws, [topics::COORDINATES]);
    s.apply(4, &Command::CoordinateBatchUpdate(vec![e("n1", &c)]));
    assert!(!fired(&ws));
    assert_eq!(s.snapshot().index("coordinates"), 3);
    // Deregistering the node removes its coordinate.
    s.apply(5, &Command::Deregister(DeregisterRequest { node: "n1".into(), ..Default::default() }));
    assert!(fired(&ws));
    let st = s.snapshot();
    assert!(st.coordinate("n1").is_none());
    assert_eq!(st.coordinates(), (5, vec![e("n2", &Coordinate::origin())]));
}

#[test]
fn a_restore_installs_the_backup_moves_every_index_forward_and_wakes_everyone() {
    let s = Store::new();
    put(&s, 5, "a", "1");
    let backup = (*s.snapshot()).clone();
    put(&s, 6, "a", "2");
    put(&s, 7, "b", "3");
    let ws = WatchSet::new();
    let _ = s.watch(&ws, [topics::kv("a"), Topic::Table("nodes")]);
    // A rejected restore inside another command changes nothing.
    let r = s.apply(8, &Command::Batch(vec![Command::Restore(Vec::new())]));
    assert!(matches!(r, CommandResult::Error(_)));
    assert!(!fired(&ws));
    s.restore_at(9, backup);
    assert!(fired(&ws), "every waiter wakes");
    let st = s.snapshot();
    assert_eq!(st.last_index, 9);
    assert_eq!(st.kvs.get("a").map(|e| e.value.clone()), Some(Some(b"1".to_vec())));
    assert!(st.kvs.get("b").is_none());
    // Entries keep their own indexes; every table index is the restore's.
    assert_eq!(st.kvs.get("a").unwrap().modify_index, 5);
    for t in ["kvs", "nodes", "services", "checks", "sessions", crate::RESTORE_INDEX] {
        assert_eq!(st.indexes.get(t), Some(&9), "{t}");
    }
}
