//! `/v1/agent/*` behaviours: TTL expiry, aggregated health codes, maintenance, metrics, hash
//! blocking.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

#[test]
fn ttl_check_expires_to_critical() {
    let a = Agent::dev(&[]);
    let (st, _, _) = http("PUT", &a.url("/v1/agent/check/register"), Some(br#"{"Name": "beat", "TTL": "1s"}"#));
    assert_eq!(st, 200);
    let (st, _, _) = http("PUT", &a.url("/v1/agent/check/pass/beat?note=alive"), None);
    assert_eq!(st, 200);
    let (_, _, b) = http("GET", &a.url("/v1/agent/checks"), None);
    assert_eq!(json(&b)["beat"]["Status"], "passing");
    assert_eq!(json(&b)["beat"]["Output"], "alive");
    // No more heartbeats: critical within the TTL (plus scheduling slack).
    let out = wait_for(Duration::from_secs(5), "TTL expiry", || {
        let (_, _, b) = http("GET", &a.url("/v1/agent/checks"), None);
        let v = json(&b);
        (v["beat"]["Status"] == "critical").then(|| v["beat"]["Output"].as_str().unwrap_or_default().to_string())
    });
    assert!(out.starts_with("TTL expired"), "{out}");
    // And the catalog follows.
    wait_for(Duration::from_secs(10), "critical in the catalog", || {
        let (_, _, b) = http("GET", &a.url("/v1/health/state/critical"), None);
        json(&b).as_array().unwrap().iter().any(|c| c["CheckID"] == "beat").then_some(())
    });
    // check/update sets status and output; a bad status is a 400; an unknown check a 404.
    let (st, _, _) =
        http("PUT", &a.url("/v1/agent/check/update/beat"), Some(br#"{"Status": "warning", "Output": "slow"}"#));
    assert_eq!(st, 200);
    let (_, _, b) = http("GET", &a.url("/v1/agent/checks"), None);
    assert_eq!(
        (json(&b)["beat"]["Status"].as_str(), json(&b)["beat"]["Output"].as_str()),
        (Some("warning"), Some("slow"))
    );
    let (st, _, _) = http("PUT", &a.url("/v1/agent/check/update/beat"), Some(br#"{"Status": "fine"}"#));
    assert_eq!(st, 400);
    let (st, _, _) = http("PUT", &a.url("/v1/agent/check/pass/nope"), None);
    assert_eq!(st, 404);
}

#[test]
fn aggregated_service_health_codes_and_maintenance() {
    let a = Agent::dev(&[]);
    let def = br#"{"ID": "web1", "Name": "web", "Port": 80, "Checks": [{"TTL": "60s"}, {"TTL": "60s", "Status": "passing"}]}"#;
    let (st, _, _) = http("PUT", &a.url("/v1/agent/service/register"), Some(def));
    assert_eq!(st, 200);
    let (_, _, b) = http("GET", &a.url("/v1/agent/checks"), None);
    let v = json(&b);
    assert!(v.get("service:web1:1").is_some() && v.get("service:web1:2").is_some(), "{v}");
    assert_eq!(v["service:web1:1"]["Name"], "Service 'web' check");

    // One critical check: 503. Then warning: 429. Then all passing: 200.
    let (st, _, b) = http("GET", &a.url("/v1/agent/health/service/name/web"), None);
    assert_eq!(st, 503);
    assert_eq!(json(&b)[0]["AggregatedStatus"], "critical");
    http("PUT", &a.url("/v1/agent/check/warn/service:web1:1"), None);
    let (st, _, b) = http("GET", &a.url("/v1/agent/health/service/id/web1?format=text"), None);
    assert_eq!((st, String::from_utf8_lossy(&b).as_ref()), (429, "warning"));
    http("PUT", &a.url("/v1/agent/check/pass/service:web1:1"), None);
    let (st, _, b) = http("GET", &a.url("/v1/agent/health/service/id/web1"), None);
    assert_eq!(st, 200);
    assert_eq!(json(&b)["Service"]["ID"], "web1");
    let (st, _, _) = http("GET", &a.url("/v1/agent/health/service/name/nosuch"), None);
    assert_eq!(st, 404);

    // Service maintenance: a critical _service_maintenance check; health reports maintenance (503).
    let (st, _, _) = http("PUT", &a.url("/v1/agent/service/maintenance/web1?enable=true&reason=deploy"), None);
    assert_eq!(st, 200);
    let (_, _, b) = http("GET", &a.url("/v1/agent/checks"), None);
    let m = &json(&b)["_service_maintenance:web1"];
    assert_eq!(
        (m["Status"].as_str(), m["Notes"].as_str(), m["ServiceID"].as_str()),
        (Some("critical"), Some("deploy"), Some("web1"))
    );
    let (st, _, b) = http("GET", &a.url("/v1/agent/health/service/id/web1?format=text"), None);
    assert_eq!((st, String::from_utf8_lossy(&b).as_ref()), (503, "maintenance"));
    wait_for(Duration::from_secs(10), "maintenance hides the instance", || {
        let (_, _, b) = http("GET", &a.url("/v1/health/service/web?passing"), None);
        json(&b).as_array().unwrap().is_empty().then_some(())
    });
    http("PUT", &a.url("/v1/agent/service/maintenance/web1?enable=false"), None);
    wait_for(Duration::from_secs(10), "instance back after maintenance", || {
        let (_, _, b) = http("GET", &a.url("/v1/health/service/web?passing"), None);
        (json(&b).as_array().unwrap().len() == 1).then_some(())
    });
    let (st, _, _) = http("PUT", &a.url("/v1/agent/service/maintenance/web1"), None);
    assert_eq!(st, 400, "enable is required");
    let (st, _, _) = http("PUT", &a.url("/v1/agent/service/maintenance/nope?enable=true"), None);
    assert_eq!(st, 404);

    // Deregistering removes its checks too.
    let (st, _, _) = http("PUT", &a.url("/v1/agent/service/deregister/web1"), None);
    assert_eq!(st, 200);
    let (_, _, b) = http("GET", &a.url("/v1/agent/checks"), None);
    assert!(json(&b).as_object().unwrap().keys().all(|k| !k.contains("web1")));
    let (st, _, _) = http("PUT", &a.url("/v1/agent/service/deregister/web1"), None);
    assert_eq!(st, 404);
}

#[test]
fn snake_case_registration_and_hash_blocking() {
    let a = Agent::dev(&[]);
    let def = br#"{"name": "api", "id": "api-1", "port": 9, "enable_tag_override": true, "tagged_addresses": {"lan": {"address": "10.0.0.1", "port": 9}}, "meta": {"Some_Key": "v"}, "weights": {"passing": 3, "warning": 1}}"#;
    let (st, _, msg) = http("PUT", &a.url("/v1/agent/service/register"), Some(def));
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&msg));
    let (_, h, b) = http("GET", &a.url("/v1/agent/service/api-1"), None);
    let v = json(&b);
    assert_eq!(v["EnableTagOverride"], true);
    assert_eq!(v["TaggedAddresses"]["lan"]["Address"], "10.0.0.1");
    assert_eq!(v["Meta"]["Some_Key"], "v", "meta keys are data: not rewritten");
    assert_eq!(v["Weights"]["Passing"], 3);
    let hash = header(&h, "x-consul-contenthash").unwrap();
    assert_eq!(v["ContentHash"], hash.as_str());

    // ?hash= blocks until the definition changes.
    let url = a.url(&format!("/v1/agent/service/api-1?hash={hash}&wait=20s"));
    let t = std::time::Instant::now();
    let waiter = std::thread::spawn(move || http("GET", &url, None));
    let (st, _, _) =
        http("PUT", &a.url("/v1/agent/service/register"), Some(br#"{"Name": "api", "ID": "api-1", "Port": 10}"#));
    assert_eq!(st, 200);
    let (_, h2, b2) = waiter.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(15));
    assert_eq!(json(&b2)["Port"], 10);
    assert_ne!(header(&h2, "x-consul-contenthash").unwrap(), hash);
}

#[test]
fn metrics_json_and_prometheus() {
    let a = Agent::dev(&[]);
    http("PUT", &a.url("/v1/kv/m"), Some(b"1"));
    let (st, _, b) = http("GET", &a.url("/v1/agent/metrics"), None);
    assert_eq!(st, 200);
    let v = json(&b);
    assert!(v["Gauges"].as_array().unwrap().iter().any(|g| g["Name"] == "consul.kvs.entries"), "{v}");
    assert!(v["Timestamp"].is_string());
    let (st, h, b) = http("GET", &a.url("/v1/agent/metrics?format=prometheus"), None);
    assert_eq!(st, 200);
    assert!(header(&h, "content-type").unwrap().starts_with("text/plain"));
    let text = String::from_utf8_lossy(&b);
    assert!(text.lines().any(|l| l.starts_with("consul_kvs_entries ")), "{text}");
}

#[test]
fn json_logs() {
    let mut a = Agent::dev(&["-log-json", "-log-level=info"]);
    let log = a.log_text();
    let first = log.lines().find(|l| l.starts_with('{')).expect("a JSON log line");
    let v: Value = serde_json::from_str(first).unwrap();
    assert!(v.get("level").is_some() && v.get("fields").is_some(), "{first}");
    assert_eq!(a.terminate(), Some(0));
}
