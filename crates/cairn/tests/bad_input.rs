//! Bad input gets Consul's status code and a readable message, and loses nothing.

use crate::harness::*;

#[test]
fn status_codes_for_bad_requests() {
    let a = Agent::dev(&[]);
    // Unknown endpoint and wrong method.
    let (st, _, body) = http("GET", &a.url("/v1/no/such/thing"), None);
    assert_eq!(st, 404);
    assert!(String::from_utf8_lossy(&body).contains("/v1/no/such/thing"));
    let (st, h, body) = http("DELETE", &a.url("/v1/catalog/nodes"), None);
    assert_eq!(st, 405);
    assert!(header(&h, "allow").unwrap_or_default().contains("GET"), "{h}");
    assert_eq!(String::from_utf8_lossy(&body), "method DELETE not allowed");

    // Malformed JSON, a body of the wrong shape, missing fields.
    for body in [&b"{not json"[..], b"[1,2]", b""] {
        let (st, _, msg) = http("PUT", &a.url("/v1/catalog/register"), Some(body));
        assert_eq!(st, 400, "{}", String::from_utf8_lossy(&msg));
        assert!(String::from_utf8_lossy(&msg).contains("Request decode failed"));
    }
    let (st, _, msg) = http("PUT", &a.url("/v1/catalog/register"), Some(br#"{"Address": "1.2.3.4"}"#));
    assert_eq!((st, String::from_utf8_lossy(&msg).as_ref()), (400, "Must provide node"));
    let (st, _, _) = http("PUT", &a.url("/v1/agent/service/register"), Some(br#"{"Port": 80}"#));
    assert_eq!(st, 400);
    let (st, _, msg) = http(
        "PUT",
        &a.url("/v1/agent/service/register"),
        Some(br#"{"Name": "x", "Check": {"HTTP": "http://127.0.0.1:1/"}}"#),
    );
    assert_eq!(st, 400);
    assert!(String::from_utf8_lossy(&msg).contains("Interval"), "{}", String::from_utf8_lossy(&msg));

    // Bad query parameters.
    let (st, _, msg) = http("GET", &a.url("/v1/kv/x?index=abc"), None);
    assert_eq!((st, String::from_utf8_lossy(&msg).as_ref()), (400, "Invalid index"));
    let (st, _, msg) = http("GET", &a.url("/v1/kv/x?index=1&wait=forever"), None);
    assert_eq!((st, String::from_utf8_lossy(&msg).as_ref()), (400, "Invalid wait time"));
    let (st, _, _) = http("GET", &a.url("/v1/kv/x?stale&consistent"), None);
    assert_eq!(st, 400);
    let (st, _, _) = http("PUT", &a.url("/v1/kv/x?flags=-1"), Some(b"v"));
    assert_eq!(st, 400);
    let (st, _, _) = http("PUT", &a.url("/v1/kv/x?cas=nope"), Some(b"v"));
    assert_eq!(st, 400);
    let (st, _, msg) = http("GET", &a.url("/v1/health/state/bogus"), None);
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&msg));
    let (st, _, msg) = http("GET", &a.url("/v1/catalog/nodes?filter=Node%20%3D%3D"), None);
    assert_eq!(st, 400);
    assert!(String::from_utf8_lossy(&msg).contains("1:8"), "says where: {}", String::from_utf8_lossy(&msg));
    let (st, _, msg) = http("GET", &a.url("/v1/kv/x?dc=elsewhere"), None);
    assert_eq!((st, String::from_utf8_lossy(&msg).as_ref()), (500, "No path to datacenter"));

    // An unknown session in acquire is Consul's 500 "invalid session".
    let (st, _, msg) = http("PUT", &a.url("/v1/kv/locked?acquire=00000000-0000-0000-0000-000000000000"), Some(b"v"));
    assert_eq!(st, 500);
    assert!(String::from_utf8_lossy(&msg).contains("invalid session"));

    // None of the above wrote anything.
    let (st, _, _) = http("GET", &a.url("/v1/kv/?recurse"), None);
    assert_eq!(st, 404, "no key was written by a rejected request");
    let (_, _, body) = http("GET", &a.url("/v1/catalog/nodes"), None);
    let nodes: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(nodes.as_array().unwrap().len(), 1, "only the agent's own node");
}

#[test]
fn oversized_values_get_413_and_limit_is_configurable() {
    let a = Agent::dev(&["-hcl=limits { kv_max_value_size = 1024 }"]);
    let (st, _, _) = http("PUT", &a.url("/v1/kv/ok"), Some(&[b'a'; 1024]));
    assert_eq!(st, 200);
    let (st, _, msg) = http("PUT", &a.url("/v1/kv/big"), Some(&[b'a'; 1025]));
    assert_eq!(st, 413, "{}", String::from_utf8_lossy(&msg));
    assert!(String::from_utf8_lossy(&msg).contains("too large"));
    let (st, _, _) = http("GET", &a.url("/v1/kv/big"), None);
    assert_eq!(st, 404);
    // A huge body on another endpoint is refused too.
    let big = vec![b' '; 5 * 1024 * 1024];
    let (st, _, _) = http("PUT", &a.url("/v1/catalog/register"), Some(&big));
    assert_eq!(st, 413);
}

#[test]
fn garbage_on_the_wire_does_not_kill_the_agent() {
    use std::io::{Read, Write};
    let a = Agent::dev(&[]);
    for junk in [
        &b"\x00\x01\x02\xff\xfe garbage\r\n\r\n"[..],
        b"GET /v1/kv/x HTTP/9.9\r\n\r\n",
        b"PUT /v1/kv/x HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
    ] {
        let mut s = std::net::TcpStream::connect(a.addr()).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        s.write_all(junk).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    }
    let (st, _, _) = http("GET", &a.url("/v1/status/leader"), None);
    assert_eq!(st, 200);
}
