//! Store unit tests: every table's reads see its writes, a relevant write fires a watch and an
//! unrelated one does not, no-op writes move no index.

use std::collections::BTreeMap;

use cairn_types::command::{KvOp, KvRequest};
use cairn_types::structs::*;
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
