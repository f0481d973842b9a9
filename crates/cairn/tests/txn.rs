//! `/v1/txn` end to end: results and 409 rollbacks, catalog verbs, read-only transactions, limits.

use serde_json::{json, Value};

use crate::harness::*;

fn txn(a: &Agent, body: &Value) -> (u16, Value) {
    let (st, _, b) = http("PUT", &a.url("/v1/txn"), Some(body.to_string().as_bytes()));
    (st, serde_json::from_slice(&b).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&b).into())))
}

#[test]
fn txn_results_rollback_and_limits() {
    let a = Agent::dev(&[]);
    let (st, v) = txn(
        &a,
        &json!([
            {"KV": {"Verb": "set", "Key": "t/a", "Value": "MQ=="}},
            {"KV": {"Verb": "set", "Key": "t/b", "Value": "Mg==", "Flags": 9}},
            {"KV": {"Verb": "get", "Key": "t/a"}},
            {"Node": {"Verb": "set", "Node": {"Node": "txn-node", "Address": "10.9.9.9"}}},
            {"Service": {"Verb": "set", "Node": "txn-node", "Service": {"Service": "txsvc", "Port": 81}}}
        ]),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["Errors"], Value::Null);
    let r = v["Results"].as_array().unwrap();
    assert_eq!(r.len(), 5);
    assert_eq!(r[0]["KV"]["Value"], Value::Null, "write results omit values");
    assert_eq!(r[2]["KV"]["Value"], "MQ==");
    assert_eq!(r[3]["Node"]["Address"], "10.9.9.9");
    assert_eq!(r[4]["Service"]["Port"], 81);
    let (_, _, b) = http("GET", &a.url("/v1/catalog/service/txsvc"), None);
    assert!(String::from_utf8_lossy(&b).contains("10.9.9.9"));

    // A failing op rolls everything back: 409 with the failing op's index.
    let idx = r[2]["KV"]["ModifyIndex"].as_u64().unwrap();
    let (st, v) = txn(
        &a,
        &json!([
            {"KV": {"Verb": "set", "Key": "t/c", "Value": "Mw=="}},
            {"KV": {"Verb": "check-index", "Key": "t/a", "Index": idx + 1000}},
        ]),
    );
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["Results"], Value::Null);
    assert_eq!(v["Errors"][0]["OpIndex"], 1);
    assert!(v["Errors"][0]["What"].as_str().unwrap().contains("modify index"));
    let (st, _, _) = http("GET", &a.url("/v1/kv/t/c"), None);
    assert_eq!(st, 404, "nothing of a rolled-back transaction is written");

    // Read-only transactions honour consistency modes.
    for q in ["", "?stale", "?consistent"] {
        let (st, _, b) =
            http("PUT", &a.url(&format!("/v1/txn{q}")), Some(br#"[{"KV": {"Verb": "get-tree", "Key": "t/"}}]"#));
        assert_eq!(st, 200);
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["Results"].as_array().unwrap().len(), 2);
    }

    // Limits and bad input.
    let many: Vec<Value> = (0..129).map(|i| json!({"KV": {"Verb": "set", "Key": format!("m/{i}")}})).collect();
    let (st, _) = txn(&a, &Value::Array(many));
    assert_eq!(st, 413);
    let (st, _) = txn(&a, &json!({"KV": {}}));
    assert_eq!(st, 400);
    let (st, _) = txn(&a, &json!([{"KV": {"Verb": "set", "Key": "x", "Value": "not base64!"}}]));
    assert_eq!(st, 400);
    let (st, v) = txn(&a, &json!([{"KV": {"Verb": "frobnicate", "Key": "x"}}]));
    assert_eq!(st, 409);
    assert!(v["Errors"][0]["What"].as_str().unwrap().contains("frobnicate"));
}

#[test]
fn txn_limits_are_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(
        dir.path(),
        "limits.hcl",
        "limits {\n  txn_max_ops = 3\n  txn_max_req_len = 2000\n  kv_max_value_size = 300\n}\n",
    );
    let a = Agent::dev(&[&format!("-config-file={}", cfg.display())]);
    let ops = |n: usize| -> Value {
        Value::Array((0..n).map(|i| json!({"KV": {"Verb": "set", "Key": format!("l/{i}")}})).collect())
    };
    let (st, v) = txn(&a, &ops(3));
    assert_eq!(st, 200, "{v}");
    let (st, v) = txn(&a, &ops(4));
    assert_eq!(st, 413);
    assert!(v.as_str().unwrap().contains("too many operations (4 > 3)"), "{v}");
    let (st, _, _) = http("GET", &a.url("/v1/kv/l/3"), None);
    assert_eq!(st, 404, "a rejected transaction writes nothing");
    // The body may be as large as the larger of the two limits; one value no larger than
    // kv_max_value_size.
    let big = json!([{"KV": {"Verb": "set", "Key": "big", "Value": "QUFB".repeat(700)}}]);
    let (st, v) = txn(&a, &big);
    assert_eq!(st, 413);
    assert!(v.as_str().unwrap().contains("max size: 2000 bytes. See limits.txn_max_req_len"), "{v}");
    let value = json!([{"KV": {"Verb": "set", "Key": "v", "Value": "QUFB".repeat(110)}}]);
    let (st, v) = txn(&a, &value);
    assert_eq!(st, 413);
    assert_eq!(v.as_str().unwrap(), "Value for key \"v\" is too large (330 > 300 bytes)");
    let ok = json!([{"KV": {"Verb": "set", "Key": "v", "Value": "QUFB".repeat(100)}}]);
    assert_eq!(txn(&a, &ok).0, 200);
}

#[test]
fn txn_locks_with_sessions() {
    let a = Agent::dev(&[]);
    let (_, _, b) = http("PUT", &a.url("/v1/session/create"), Some(br#"{"LockDelay": "0s"}"#));
    let sid = serde_json::from_slice::<Value>(&b).unwrap()["ID"].as_str().unwrap().to_string();
    let (st, v) = txn(
        &a,
        &json!([
            {"KV": {"Verb": "lock", "Key": "tl", "Value": "aA==", "Session": sid}},
            {"KV": {"Verb": "check-session", "Key": "tl", "Session": sid}}
        ]),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["Results"][0]["KV"]["LockIndex"], 1);
    let (st, v) = txn(&a, &json!([{"KV": {"Verb": "unlock", "Key": "tl", "Session": "someone-else"}}]));
    assert_eq!(st, 409, "{v}");
    let (st, _) = txn(&a, &json!([{"KV": {"Verb": "unlock", "Key": "tl", "Session": sid}}]));
    assert_eq!(st, 200);
}
