//! Sessions and locks over HTTP: create/info/list/renew/destroy, validation, acquire/release with
//! LockIndex as a fencing token, lock-delay, behavior=delete, and TTL expiry reaped by the leader.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

fn create(a: &Agent, body: &str) -> String {
    let (st, _, b) = http("PUT", &a.url("/v1/session/create"), Some(body.as_bytes()));
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    json(&b)["ID"].as_str().unwrap().to_string()
}

fn kv_put(a: &Agent, path: &str, val: &str) -> Value {
    let (st, _, b) = http("PUT", &a.url(path), Some(val.as_bytes()));
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    json(&b)
}

fn entry(a: &Agent, key: &str) -> Value {
    let (_, _, b) = http("GET", &a.url(&format!("/v1/kv/{key}")), None);
    json(&b)[0].clone()
}

#[test]
fn session_lifecycle_and_validation() {
    let a = Agent::dev(&[]);
    let id = create(&a, "");
    let (st, h, b) = http("GET", &a.url(&format!("/v1/session/info/{id}")), None);
    assert_eq!(st, 200);
    assert!(header(&h, "x-consul-index").is_some());
    let s = &json(&b)[0];
    assert_eq!(s["Node"], "e2e");
    assert_eq!(s["Behavior"], "release");
    assert_eq!(s["LockDelay"], 15_000_000_000u64);
    assert_eq!(s["NodeChecks"], serde_json::json!(["serfHealth"]));
    let id2 =
        create(&a, r#"{"name": "x", "lockdelay": "0.001s", "behavior": "delete", "ttl": "30s", "NodeChecks": []}"#);
    let (_, _, b) = http("GET", &a.url(&format!("/v1/session/info/{id2}")), None);
    let s = &json(&b)[0];
    assert_eq!(
        (s["Name"].as_str(), s["LockDelay"].as_u64(), s["TTL"].as_str()),
        (Some("x"), Some(1_000_000), Some("30s"))
    );
    let (_, _, b) = http("GET", &a.url("/v1/session/list"), None);
    assert_eq!(json(&b).as_array().unwrap().len(), 2);
    let (_, _, b) = http("GET", &a.url("/v1/session/node/e2e"), None);
    assert_eq!(json(&b).as_array().unwrap().len(), 2);
    let (st, _, b) = http("PUT", &a.url(&format!("/v1/session/renew/{id2}")), None);
    assert_eq!(st, 200);
    assert_eq!(json(&b)[0]["ID"], id2.as_str());

    for (body, what) in [
        // Consul validates these on the server: 500, the TTL printed in nanoseconds.
        (r#"{"TTL": "5s"}"#, "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"),
        (r#"{"TTL": "100000s"}"#, "Invalid Session TTL"),
        (r#"{"TTL": "soon"}"#, "Session TTL 'soon' invalid"),
        (r#"{"Behavior": "explode"}"#, "Invalid Behavior"),
    ] {
        let (st, _, b) = http("PUT", &a.url("/v1/session/create"), Some(body.as_bytes()));
        assert_eq!(st, 500, "{body}");
        assert!(String::from_utf8_lossy(&b).contains(what), "{}", String::from_utf8_lossy(&b));
    }
    let (st, _, b) = http("PUT", &a.url("/v1/session/create"), Some(br#"{"Node": "ghost"}"#));
    assert_eq!(st, 500, "{}", String::from_utf8_lossy(&b));
    let (st, _, _) = http("PUT", &a.url("/v1/session/renew/00000000-0000-0000-0000-000000000000"), None);
    assert_eq!(st, 404);

    let (st, _, b) = http("PUT", &a.url(&format!("/v1/session/destroy/{id}")), None);
    assert_eq!((st, json(&b)), (200, Value::Bool(true)));
    let (_, _, b) = http("GET", &a.url(&format!("/v1/session/info/{id}")), None);
    assert_eq!(json(&b), serde_json::json!([]));
}

#[test]
fn acquire_release_fencing_and_lock_delay() {
    let a = Agent::dev(&[]);
    let s1 = create(&a, r#"{"LockDelay": "1s"}"#);
    let s2 = create(&a, r#"{"LockDelay": "1s"}"#);
    assert_eq!(kv_put(&a, &format!("/v1/kv/lock?acquire={s1}"), "one"), Value::Bool(true));
    let e = entry(&a, "lock");
    assert_eq!((e["Session"].as_str(), e["LockIndex"].as_u64()), (Some(s1.as_str()), Some(1)));
    assert_eq!(kv_put(&a, &format!("/v1/kv/lock?acquire={s2}"), "two"), Value::Bool(false));
    assert_eq!(kv_put(&a, &format!("/v1/kv/lock?release={s2}"), ""), Value::Bool(false), "not the holder");
    assert_eq!(kv_put(&a, &format!("/v1/kv/lock?release={s1}"), "released"), Value::Bool(true));
    let e = entry(&a, "lock");
    assert!(e.get("Session").is_none() || e["Session"] == "", "{e}");
    assert_eq!(kv_put(&a, &format!("/v1/kv/lock?acquire={s2}"), "two"), Value::Bool(true));
    assert_eq!(entry(&a, "lock")["LockIndex"], 2, "LockIndex grows with each holder: a fencing token");

    // The holder's session ends: the lock is released, and for the lock-delay nobody can take it.
    let (st, _, _) = http("PUT", &a.url(&format!("/v1/session/destroy/{s2}")), None);
    assert_eq!(st, 200);
    let destroyed = Instant::now();
    assert_eq!(entry(&a, "lock")["LockIndex"], 2);
    assert_eq!(kv_put(&a, &format!("/v1/kv/lock?acquire={s1}"), "x"), Value::Bool(false), "within lock-delay");
    wait_for(Duration::from_secs(5), "acquire after lock-delay", || {
        (kv_put(&a, &format!("/v1/kv/lock?acquire={s1}"), "x") == Value::Bool(true)).then_some(())
    });
    assert!(destroyed.elapsed() >= Duration::from_millis(900), "lock-delay was honoured: {:?}", destroyed.elapsed());
    assert_eq!(entry(&a, "lock")["LockIndex"], 3);

    // behavior=delete removes held keys when the session ends.
    let s3 = create(&a, r#"{"Behavior": "delete", "LockDelay": "0s"}"#);
    assert_eq!(kv_put(&a, &format!("/v1/kv/ephemeral?acquire={s3}"), "e"), Value::Bool(true));
    http("PUT", &a.url(&format!("/v1/session/destroy/{s3}")), None);
    let (st, _, _) = http("GET", &a.url("/v1/kv/ephemeral"), None);
    assert_eq!(st, 404);
}

#[test]
fn session_ttl_expires_and_releases_locks() {
    let a = Agent::dev(&["-hcl=session_ttl_min = \"1s\""]);
    let s = create(&a, r#"{"TTL": "1s", "LockDelay": "0s"}"#);
    assert_eq!(kv_put(&a, &format!("/v1/kv/leader?acquire={s}"), "me"), Value::Bool(true));
    // Renewing keeps it alive past its TTL...
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        let (st, _, _) = http("PUT", &a.url(&format!("/v1/session/renew/{s}")), None);
        assert_eq!(st, 200, "renewed sessions stay");
        std::thread::sleep(Duration::from_millis(300)); // the renew cadence is what is under test
    }
    // ...and without renewals the leader reaps it within 2x TTL (plus the reaper's tick).
    let stopped = Instant::now();
    wait_for(Duration::from_secs(6), "session reaped", || {
        let (_, _, b) = http("GET", &a.url(&format!("/v1/session/info/{s}")), None);
        (json(&b) == serde_json::json!([])).then_some(())
    });
    assert!(stopped.elapsed() >= Duration::from_millis(900), "not reaped before its TTL: {:?}", stopped.elapsed());
    let e = entry(&a, "leader");
    assert!(e.get("Session").is_none() || e["Session"] == "", "the lock was released: {e}");
}

#[test]
fn blocking_on_session_list() {
    let a = Agent::dev(&[]);
    let (_, h, _) = http("GET", &a.url("/v1/session/list"), None);
    let idx: u64 = header(&h, "x-consul-index").unwrap().parse().unwrap();
    let url = a.url(&format!("/v1/session/list?index={idx}&wait=20s"));
    let t = Instant::now();
    let waiter = std::thread::spawn(move || http("GET", &url, None));
    create(&a, "");
    let (_, h, b) = waiter.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(15));
    assert!(header(&h, "x-consul-index").unwrap().parse::<u64>().unwrap() > idx);
    assert_eq!(json(&b).as_array().unwrap().len(), 1);
}
