//! Network coordinates: `/v1/coordinate/*`, `?near=` sorting on catalog, health and prepared
//! queries (incl. `_agent` and `_ip`), and `cairn rtt`.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

fn get(a: &Agent, path: &str) -> (u16, Value) {
    let (st, _, b) = http("GET", &a.url(path), None);
    (st, serde_json::from_slice(&b).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&b).into())))
}

fn coord(x: f64) -> Value {
    json!({"Vec": [x, 0, 0, 0, 0, 0, 0, 0], "Error": 0.2, "Adjustment": 0, "Height": 0.00001})
}

/// Nodes at increasing distance from the agent's node ("e2e", at the origin) and one without a
/// coordinate, each running `svc` with a passing check.
fn setup(a: &Agent) {
    for (i, (node, x)) in
        [("n-far", Some(0.1)), ("n-none", None), ("n-near", Some(0.001)), ("n-mid", Some(0.01))].into_iter().enumerate()
    {
        let reg = json!({
            "Node": node, "Address": format!("10.0.0.{}", i + 1),
            "Service": {"Service": "svc", "Port": 80},
            "Check": {"CheckID": "c", "Name": "c", "Status": "passing", "ServiceID": "svc"},
        });
        let (st, _, _) = http("PUT", &a.url("/v1/catalog/register"), Some(reg.to_string().as_bytes()));
        assert_eq!(st, 200);
        if let Some(x) = x {
            let up = json!({"Node": node, "Coord": coord(x)});
            let (st, _, b) = http("PUT", &a.url("/v1/coordinate/update"), Some(up.to_string().as_bytes()));
            assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
        }
    }
}

fn names(v: &Value, f: impl Fn(&Value) -> &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|r| f(r).as_str().unwrap().to_string()).collect()
}

#[test]
fn coordinate_endpoints_and_bad_input() {
    let a = Agent::dev(&[]);
    // The agent's own node has its coordinate from the start.
    let (st, v) = get(&a, "/v1/coordinate/node/e2e");
    assert_eq!(st, 200);
    assert_eq!(v[0]["Node"], "e2e");
    assert_eq!(v[0]["Coord"]["Vec"].as_array().unwrap().len(), 8);
    assert_eq!(v[0]["Coord"]["Error"], 1.5);
    let (_, me) = get(&a, "/v1/agent/self");
    assert_eq!(me["Coord"], v[0]["Coord"]);
    let (st, dcs) = get(&a, "/v1/coordinate/datacenters");
    assert_eq!(st, 200);
    assert_eq!(dcs[0]["Datacenter"], "dc1");
    // Consul's code sets the area to `types.AreaWAN`, which is "wan" (its docs' sample says "WAN").
    assert_eq!(dcs[0]["AreaID"], "wan");
    assert_eq!(dcs[0]["Coordinates"][0]["Node"], "e2e");
    let (st, h, _) = http("GET", &a.url("/v1/coordinate/node/ghost"), None);
    assert_eq!(st, 404);
    assert!(header(&h, "X-Consul-Index").is_some(), "a 404 still carries the index");
    assert_eq!(get(&a, "/v1/coordinate/node/e2e?segment=other").0, 404);

    // A blocking read of all coordinates wakes on an update.
    let (_, h, _) = http("GET", &a.url("/v1/coordinate/nodes"), None);
    let idx: u64 = header(&h, "X-Consul-Index").unwrap().parse().unwrap();
    let url = a.url(&format!("/v1/coordinate/nodes?index={idx}&wait=30s"));
    let t = Instant::now();
    let waiter = std::thread::spawn(move || http("GET", &url, None));
    setup(&a);
    let (st, h, b) = waiter.join().unwrap();
    assert_eq!(st, 200);
    assert!(header(&h, "X-Consul-Index").unwrap().parse::<u64>().unwrap() > idx);
    assert!(t.elapsed() < Duration::from_secs(25), "woken by the write, not the timeout");
    let all: Value = serde_json::from_slice(&b).unwrap();
    assert!(!all.as_array().unwrap().is_empty());
    let (_, all) = get(&a, "/v1/coordinate/nodes");
    assert_eq!(names(&all, |r| &r["Node"]), ["e2e", "n-far", "n-mid", "n-near"]);

    // Bad input.
    let bad_dim = json!({"Node": "n-mid", "Coord": {"Vec": [0, 0], "Error": 1.5, "Adjustment": 0, "Height": 0}});
    let (st, _, b) = http("PUT", &a.url("/v1/coordinate/update"), Some(bad_dim.to_string().as_bytes()));
    assert_eq!(st, 500);
    assert!(String::from_utf8_lossy(&b).contains("incompatible coordinate"));
    let (st, _, _) = http("PUT", &a.url("/v1/coordinate/update"), Some(b"{not json"));
    assert_eq!(st, 400);
    let (st, _, b) =
        http("PUT", &a.url("/v1/coordinate/update"), Some(json!({"Coord": coord(0.0)}).to_string().as_bytes()));
    assert_eq!((st, b.len()), (200, 0), "no node: accepted and dropped, empty body as Consul");
    // A node the catalog does not know: accepted, and dropped.
    let (st, _, _) = http(
        "PUT",
        &a.url("/v1/coordinate/update"),
        Some(json!({"Node": "ghost", "Coord": coord(0.0)}).to_string().as_bytes()),
    );
    assert_eq!(st, 200);
    assert_eq!(get(&a, "/v1/coordinate/node/ghost").0, 404);
    // Deregistering a node drops its coordinate.
    http("PUT", &a.url("/v1/catalog/deregister"), Some(br#"{"Node": "n-mid"}"#));
    assert_eq!(get(&a, "/v1/coordinate/node/n-mid").0, 404);
}

#[test]
fn near_sorts_catalog_health_and_prepared_queries() {
    let a = Agent::dev(&[]);
    setup(&a);
    let (_, v) = get(&a, "/v1/catalog/nodes?near=_agent");
    assert_eq!(names(&v, |r| &r["Node"]), ["e2e", "n-near", "n-mid", "n-far", "n-none"]);
    let (_, v) = get(&a, "/v1/catalog/nodes?near=ghost");
    assert_eq!(names(&v, |r| &r["Node"]), ["e2e", "n-far", "n-mid", "n-near", "n-none"], "no coordinate: no sort");
    let (_, v) = get(&a, "/v1/catalog/service/svc?near=n-far");
    assert_eq!(names(&v, |r| &r["Node"]), ["n-far", "n-mid", "n-near", "n-none"]);
    let (_, v) = get(&a, "/v1/health/service/svc?near=_agent&passing");
    assert_eq!(names(&v, |r| &r["Node"]["Node"]), ["n-near", "n-mid", "n-far", "n-none"]);
    let (_, v) = get(&a, "/v1/health/checks/svc?near=_agent");
    assert_eq!(names(&v, |r| &r["Node"]), ["n-near", "n-mid", "n-far", "n-none"]);
    let (_, v) = get(&a, "/v1/health/state/passing?near=n-far");
    assert_eq!(names(&v, |r| &r["Node"])[..2], ["n-far", "n-mid"]);
    let (_, v) = get(&a, "/v1/health/service/svc?near=n-mid&filter=Node.Node%20!%3D%20%22n-near%22");
    assert_eq!(names(&v, |r| &r["Node"]["Node"]), ["n-mid", "n-far", "n-none"], "filter and near together");

    // Prepared queries: the query's Near, overridden by ?near=, then the limit.
    let q = json!({"Name": "svc-near", "Service": {"Service": "svc", "Near": "_agent"}});
    let (st, _, _) = http("POST", &a.url("/v1/query"), Some(q.to_string().as_bytes()));
    assert_eq!(st, 200);
    let nodes = |v: &Value| names(&v["Nodes"], |r| &r["Node"]["Node"]);
    for _ in 0..5 {
        // Shuffled first, then sorted: the order is the same every time.
        let (_, v) = get(&a, "/v1/query/svc-near/execute");
        assert_eq!(nodes(&v), ["n-near", "n-mid", "n-far", "n-none"]);
    }
    let (_, v) = get(&a, "/v1/query/svc-near/execute?near=n-far&limit=2");
    assert_eq!(nodes(&v), ["n-far", "n-mid"]);
    // A node far from everything, itself included (a large height): n-near sorts ahead of it by
    // distance, but a prepared query puts the `near` node itself first, as Consul's does.
    let mut tall = coord(0.01);
    tall["Height"] = json!(0.05);
    let up = json!({"Node": "n-mid", "Coord": tall});
    http("PUT", &a.url("/v1/coordinate/update"), Some(up.to_string().as_bytes()));
    let (_, v) = get(&a, "/v1/catalog/service/svc?near=n-mid");
    assert_eq!(names(&v, |r| &r["Node"])[0], "n-near");
    let (_, v) = get(&a, "/v1/query/svc-near/execute?near=n-mid");
    assert_eq!(nodes(&v)[..2], ["n-mid", "n-near"]);
    // `_ip`: the node at the request's source address. Curl comes from 127.0.0.1, the agent's
    // own node; a proxy's X-Forwarded-For names another.
    let (_, v) = get(&a, "/v1/query/svc-near/execute?near=_ip");
    assert_eq!(nodes(&v), ["n-near", "n-mid", "n-far", "n-none"]);
    let out = Command::new("curl")
        .args(["-s", "-H", "X-Forwarded-For: 10.0.0.1", &a.url("/v1/query/svc-near/execute?near=_ip")])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(nodes(&v)[0], "n-far", "10.0.0.1 is n-far's address");
}

#[test]
fn rtt_cli() {
    let a = Agent::dev(&[]);
    setup(&a);
    let o = a.cli(&["rtt", "n-near", "n-far"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // |0.1 - 0.001| s plus two 10 µs heights.
    assert_eq!(stdout(&o).trim(), "Estimated n-near <-> n-far rtt: 99.020 ms (using LAN coordinates)");
    let o = a.cli(&["rtt", "n-mid"]);
    assert_eq!(stdout(&o).trim(), "Estimated n-mid <-> e2e rtt: 10.020 ms (using LAN coordinates)");
    let o = a.cli(&["rtt", "n-none"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("Could not find a coordinate for node \"n-none\""), "{}", stderr(&o));
    let o = a.cli(&["rtt"]);
    assert_eq!(o.status.code(), Some(1));
}
