//! Prepared queries end to end: CRUD, execution filters, templates, explain, bad input.

use serde_json::{json, Value};

use crate::harness::*;

fn j(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or(Value::Null)
}

fn register(a: &Agent, node: &str, id: &str, tags: &[&str], status: &str, meta: Value) {
    let body = json!({
        "Node": node, "Address": "10.0.0.1", "NodeMeta": meta,
        "Service": {"ID": id, "Service": "db", "Tags": tags, "Port": 5432},
        "Check": {"CheckID": format!("{id}-check"), "Name": "c", "ServiceID": id, "Status": status}
    });
    let (st, _, b) = http("PUT", &a.url("/v1/catalog/register"), Some(body.to_string().as_bytes()));
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
}

fn ids(v: &Value) -> Vec<String> {
    let mut out: Vec<String> =
        v["Nodes"].as_array().unwrap().iter().map(|e| e["Service"]["ID"].as_str().unwrap().to_string()).collect();
    out.sort();
    out
}

#[test]
fn prepared_query_crud_and_execution() {
    let a = Agent::dev(&[]);
    register(&a, "n1", "db-1", &["v1"], "passing", json!({"zone": "a"}));
    register(&a, "n2", "db-2", &["v1", "canary"], "passing", json!({"zone": "a"}));
    register(&a, "n3", "db-3", &["v1"], "warning", json!({"zone": "b"}));
    register(&a, "n4", "db-4", &["v1"], "critical", json!({"zone": "a"}));

    let (st, _, b) = http(
        "POST",
        &a.url("/v1/query"),
        Some(
            br#"{"Name": "db-stable", "Service": {"Service": "db", "Tags": ["v1", "!canary"]}, "DNS": {"TTL": "10s"}}"#,
        ),
    );
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let id = j(&b)["ID"].as_str().unwrap().to_string();

    // By name and by ID; critical instances are left out, warning ones kept; !canary excludes.
    for key in [id.as_str(), "db-stable"] {
        let (st, _, b) = http("GET", &a.url(&format!("/v1/query/{key}/execute")), None);
        assert_eq!(st, 200);
        let v = j(&b);
        assert_eq!(ids(&v), vec!["db-1", "db-3"], "{v}");
        assert_eq!(
            (v["Service"].as_str(), v["DNS"]["TTL"].as_str(), v["Datacenter"].as_str()),
            (Some("db"), Some("10s"), Some("dc1"))
        );
    }
    let (_, _, b) = http("GET", &a.url("/v1/query/db-stable/execute?limit=1"), None);
    assert_eq!(j(&b)["Nodes"].as_array().unwrap().len(), 1);

    // Update: OnlyPassing and node meta.
    let upd =
        json!({"Name": "db-stable", "Service": {"Service": "db", "OnlyPassing": true, "NodeMeta": {"zone": "a"}}});
    let (st, _, _) = http("PUT", &a.url(&format!("/v1/query/{id}")), Some(upd.to_string().as_bytes()));
    assert_eq!(st, 200);
    let (_, _, b) = http("GET", &a.url("/v1/query/db-stable/execute"), None);
    assert_eq!(ids(&j(&b)), vec!["db-1", "db-2"]);
    let (_, _, b) = http("GET", &a.url(&format!("/v1/query/{id}")), None);
    assert_eq!(j(&b)[0]["Service"]["OnlyPassing"], true);
    let (_, _, b) = http("GET", &a.url("/v1/query"), None);
    assert_eq!(j(&b).as_array().unwrap().len(), 1);

    // Templates: the longest matching name prefix wins; ${match(N)} and ${name.suffix} render.
    let t = json!({"Name": "geo-", "Template": {"Type": "name_prefix_match", "Regexp": "^geo-(.*)$"}, "Service": {"Service": "${match(1)}", "Tags": ["${name.suffix}"]}});
    let (st, _, b) = http("POST", &a.url("/v1/query"), Some(t.to_string().as_bytes()));
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let (_, _, b) = http("GET", &a.url("/v1/query/geo-db/explain"), None);
    let q = &j(&b)["Query"];
    assert_eq!((q["Service"]["Service"].as_str(), q["Service"]["Tags"][0].as_str()), (Some("db"), Some("db")));
    let (st, _, b) = http("GET", &a.url("/v1/query/geo-db/execute"), None);
    assert_eq!(st, 200);
    assert_eq!(j(&b)["Service"], "db");

    // Bad input: no service, a duplicate name, an unknown query.
    let (st, _, b) = http("POST", &a.url("/v1/query"), Some(br#"{"Name": "x"}"#));
    assert_eq!(st, 400);
    assert!(String::from_utf8_lossy(&b).contains("Service"));
    let (st, _, _) = http("POST", &a.url("/v1/query"), Some(br#"{"Name": "db-stable", "Service": {"Service": "db"}}"#));
    // Consul's state store refuses the alias; its RPC error reaches the client as 500.
    assert_eq!(st, 500, "names are unique");
    let (st, _, _) = http("GET", &a.url("/v1/query/nope/execute"), None);
    assert_eq!(st, 404);

    let (st, _, _) = http("DELETE", &a.url(&format!("/v1/query/{id}")), None);
    assert_eq!(st, 200);
    let (st, _, _) = http("GET", &a.url("/v1/query/db-stable/execute"), None);
    assert_eq!(st, 404);
}
