//! The project's typed client against a real agent: KV, catalog, health, agent, status, events,
//! coordinates and blocking queries.

use std::time::{Duration, Instant};

use cairn::api::{Client, QueryOptions};
use serde_json::json;

use crate::harness::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn kv_catalog_health_status() {
    let a = Agent::dev(&[]);
    rt().block_on(async {
        let c = Client::new(&a.addr()).unwrap();
        assert_eq!(c.status_leader().await.unwrap(), "127.0.0.1:8300");
        assert_eq!(c.status_peers().await.unwrap().len(), 1);

        assert!(c.kv_put("t/a", b"1", 5, None).await.unwrap());
        let (e, meta) = c.kv_get("t/a", &QueryOptions::default()).await.unwrap();
        let e = e.unwrap();
        assert_eq!((e.flags, e.value.as_deref()), (5, Some(&b"1"[..])));
        assert_eq!(meta.index, e.modify_index);
        assert!(meta.known_leader);
        assert!(!c.kv_put("t/a", b"2", 0, Some(e.modify_index + 100)).await.unwrap());
        assert!(c.kv_put("t/a", b"2", 0, Some(e.modify_index)).await.unwrap());
        assert!(c.kv_put("t/empty", b"", 0, None).await.unwrap());
        let (e, _) = c.kv_get("t/empty", &QueryOptions::default()).await.unwrap();
        assert_eq!(e.unwrap().value, None, "an empty value reads back as null");

        // An external node with a service and a critical check.
        c.put(
            "/v1/catalog/register",
            &[],
            Some(
                serde_json::to_vec(&json!({
                    "Node": "ext1", "Address": "10.1.2.3", "NodeMeta": {"rack": "r1"},
                    "Service": {"Service": "db", "Tags": ["primary"], "Port": 5432},
                    "Check": {"CheckID": "db-alive", "Name": "db alive", "ServiceID": "db", "Status": "critical"}
                }))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
        let (rows, _) = c.catalog_service("db", Some("primary"), &QueryOptions::default()).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].address.as_str(), rows[0].service_port), ("10.1.2.3", 5432));
        let (all, _) = c.health_service("db", false, &QueryOptions::default()).await.unwrap();
        assert_eq!(all.len(), 1);
        let (passing, _) = c.health_service("db", true, &QueryOptions::default()).await.unwrap();
        assert!(passing.is_empty(), "a critical instance is not passing");
        let q = QueryOptions { filter: Some("Meta.rack == \"r1\"".into()), ..Default::default() };
        let (nodes, _) = c.catalog_nodes(&q).await.unwrap();
        assert_eq!(nodes.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(), ["ext1"]);

        // The agent's own node carries a passing serfHealth.
        let (checks, _) = c.health_node("e2e", &QueryOptions::default()).await.unwrap();
        assert!(checks.iter().any(|c| c.check_id == "serfHealth" && c.status == "passing"));

        let (services, _) = c.catalog_services(&QueryOptions::default()).await.unwrap();
        assert!(services.contains_key("consul") && services.contains_key("db"));

        // Agent-local TTL check: critical until passed, then synced to the catalog.
        c.agent_service_register(&json!({"Name": "web", "Port": 80, "Check": {"TTL": "30s"}})).await.unwrap();
        let checks = c.agent_checks().await.unwrap();
        assert_eq!(checks["service:web"].status, "critical");
        c.agent_check_pass("service:web", "all good").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (p, _) = c.health_service("web", true, &QueryOptions::default()).await.unwrap();
            if p.len() == 1 {
                assert_eq!(p[0].checks.iter().find(|c| c.check_id == "service:web").unwrap().output, "all good");
                break;
            }
            assert!(Instant::now() < deadline, "web never became passing in the catalog");
            tokio::time::sleep(Duration::from_millis(20)).await; // poll interval of a deadline loop
        }
    });
}

#[test]
fn blocking_queries_wake_on_relevant_writes_only() {
    let a = Agent::dev(&[]);
    rt().block_on(async {
        let c = Client::new(&a.addr()).unwrap();
        c.kv_put("w/a", b"1", 0, None).await.unwrap();
        let (_, meta) = c.kv_get("w/a", &QueryOptions::default()).await.unwrap();

        // A waiter on w/a, woken by a write to w/a.
        let c2 = c.clone();
        let idx = meta.index;
        let waiter = tokio::spawn(async move {
            let t = Instant::now();
            let q = QueryOptions { index: idx, wait: Some(Duration::from_secs(30)), ..Default::default() };
            let (e, m) = c2.kv_get("w/a", &q).await.unwrap();
            (t.elapsed(), e.unwrap().value, m.index)
        });
        // Unrelated writes (another key, the catalog) must not wake it...
        c.kv_put("w/b", b"x", 0, None).await.unwrap();
        c.put("/v1/catalog/register", &[], Some(br#"{"Node":"n9","Address":"1.1.1.1"}"#.to_vec())).await.unwrap();
        // ...which we can tell because it is still pending well after they were applied: absence
        // of a wake-up can only be observed over time, so this wait is the behaviour under test.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiter.is_finished(), "an unrelated write woke a blocking query");
        c.kv_put("w/a", b"2", 0, None).await.unwrap();
        let (took, val, new_idx) =
            tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("waiter woke").unwrap();
        assert_eq!(val.as_deref(), Some(&b"2"[..]));
        assert!(new_idx > idx);
        assert!(took < Duration::from_secs(5));

        // The wait ends on its own (clamped, jittered by at most wait/16) with the same index.
        let t = Instant::now();
        let q = QueryOptions { index: new_idx, wait: Some(Duration::from_millis(500)), ..Default::default() };
        let (_, m) = c.kv_get("w/a", &q).await.unwrap();
        assert_eq!(m.index, new_idx);
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(3), "{took:?}");

        // A health watcher wakes when a check of its service changes.
        c.agent_service_register(&json!({"Name": "svc", "Check": {"TTL": "60s"}})).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let idx = loop {
            let (rows, m) = c.health_service("svc", false, &QueryOptions::default()).await.unwrap();
            if !rows.is_empty() {
                break m.index;
            }
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await; // poll interval of a deadline loop
        };
        let c3 = c.clone();
        let w = tokio::spawn(async move {
            let q = QueryOptions { index: idx, wait: Some(Duration::from_secs(30)), ..Default::default() };
            c3.health_service("svc", true, &q).await.unwrap()
        });
        c.agent_check_pass("service:svc", "").await.unwrap();
        let (rows, m) = tokio::time::timeout(Duration::from_secs(10), w).await.expect("health watcher woke").unwrap();
        assert!(m.index > idx);
        assert_eq!(rows.len(), 1);
    });
}

#[test]
fn consistency_modes_and_headers() {
    let a = Agent::dev(&[]);
    let (st, h, _) = http("GET", &a.url("/v1/catalog/nodes?consistent"), None);
    assert_eq!(st, 200);
    assert_eq!(header(&h, "x-consul-knownleader").as_deref(), Some("true"));
    assert!(header(&h, "x-consul-index").unwrap().parse::<u64>().unwrap() > 0);
    assert!(header(&h, "x-consul-lastcontact").is_some());
    let (st, _, _) = http("GET", &a.url("/v1/catalog/nodes?stale"), None);
    assert_eq!(st, 200);
    // ?pretty indents.
    let (_, _, body) = http("GET", &a.url("/v1/catalog/datacenters?pretty"), None);
    assert!(String::from_utf8_lossy(&body).contains("\n    \"dc1\""));
    // A missing key still carries a non-zero index.
    let (st, h, _) = http("GET", &a.url("/v1/kv/never/written"), None);
    assert_eq!(st, 404);
    assert!(header(&h, "x-consul-index").unwrap().parse::<u64>().unwrap() > 0);
}

#[test]
fn events_and_coordinates() {
    let a = Agent::dev(&[]);
    rt().block_on(async {
        let c = Client::new(&a.addr()).unwrap();
        let fired = c.event_fire("deploy a", Some(b"v1"), &[("node", "^e2e$")]).await.unwrap();
        assert_eq!((fired.name.as_str(), fired.node_filter.as_str(), fired.ltime), ("deploy a", "^e2e$", 0));
        let (evs, m) = c.event_list(Some("deploy a"), &QueryOptions::default()).await.unwrap();
        assert_eq!(evs.len(), 1, "a space in the name survives the path");
        assert_eq!(evs[0].payload.as_deref(), Some(&b"v1"[..]));
        // A blocking list on that index wakes with the next event of the name.
        let c2 = c.clone();
        let waiter = tokio::spawn(async move {
            let q = QueryOptions { index: m.index, wait: Some(Duration::from_secs(30)), ..Default::default() };
            c2.event_list(Some("deploy a"), &q).await.unwrap()
        });
        c.event_fire("deploy a", Some(b"v2"), &[]).await.unwrap();
        let (evs, m2) = tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("woken").unwrap();
        assert_ne!(m2.index, m.index);
        assert_eq!(evs.last().unwrap().payload.as_deref(), Some(&b"v2"[..]));

        let (coords, _) = c.coordinate_nodes(&QueryOptions::default()).await.unwrap();
        assert_eq!(coords.iter().map(|e| e.node.as_str()).collect::<Vec<_>>(), ["e2e"]);
        let mut moved = coords[0].clone();
        moved.coord.vec[0] = 0.5;
        c.coordinate_update(&moved).await.unwrap();
        let (coords, _) = c.coordinate_nodes(&QueryOptions::default()).await.unwrap();
        assert_eq!(coords[0].coord.vec[0], 0.5);
    });
}
