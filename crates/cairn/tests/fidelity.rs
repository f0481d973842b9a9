//! Consul fidelity and input safety (issue 7): writes meant for another datacenter, conflicting KV
//! flags, wrong JSON types, and the endpoints and codes third-party clients rely on. Every case
//! here lost data or answered differently from Consul before it was fixed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::*;

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn get_json(a: &Agent, path: &str) -> serde_json::Value {
    let (st, _, body) = http("GET", &a.url(path), None);
    assert_eq!(st, 200, "GET {path}: {}", s(&body));
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn body_datacenter_routes_writes_and_never_lands_locally() {
    let a = Agent::dev(&[]);
    let reg = br#"{"Node":"n2","Address":"10.1.10.12"}"#;
    assert_eq!(http("PUT", &a.url("/v1/catalog/register"), Some(reg)).0, 200);

    let (st, _, msg) = http(
        "PUT",
        &a.url("/v1/catalog/register"),
        Some(br#"{"Node":"foo","Address":"10.1.10.11","Datacenter":"dc2"}"#),
    );
    assert_eq!((st, s(&msg).as_str()), (500, "No path to datacenter"));
    let (st, _, msg) = http("PUT", &a.url("/v1/catalog/deregister"), Some(br#"{"Node":"n2","Datacenter":"dc2"}"#));
    assert_eq!((st, s(&msg).as_str()), (500, "No path to datacenter"));
    // The lowercase key Consul's decoder also accepts routes the same way.
    let (st, _, _) = http("PUT", &a.url("/v1/catalog/deregister"), Some(br#"{"node":"n2","datacenter":"dc2"}"#));
    assert_eq!(st, 500);
    let nodes = get_json(&a, "/v1/catalog/nodes");
    let names: Vec<&str> = nodes.as_array().unwrap().iter().map(|n| n["Node"].as_str().unwrap()).collect();
    assert!(names.contains(&"n2"), "n2 must survive: {names:?}");
    assert!(!names.contains(&"foo"), "foo must not be registered here: {names:?}");

    // The same datacenter, spelled as Consul compares it, is this one.
    let (st, _, _) =
        http("PUT", &a.url("/v1/catalog/register"), Some(br#"{"Node":"n3","Address":"1.2.3.4","Datacenter":"DC1"}"#));
    assert_eq!(st, 200);

    // Sessions, prepared queries and txn node operations naming another datacenter.
    let (st, _, _) = http("PUT", &a.url("/v1/session/create"), Some(br#"{"Datacenter":"dc2","Name":"x"}"#));
    assert_eq!(st, 500);
    assert_eq!(get_json(&a, "/v1/session/list").as_array().unwrap().len(), 0);
    let (st, _, _) = http("POST", &a.url("/v1/query"), Some(br#"{"Datacenter":"dc2","Service":{"Service":"web"}}"#));
    assert_eq!(st, 500);
    assert_eq!(get_json(&a, "/v1/query").as_array().unwrap().len(), 0);
    let (st, _, _) = http(
        "PUT",
        &a.url("/v1/txn"),
        Some(br#"[{"Node":{"Verb":"delete","Node":{"Node":"n2","Datacenter":"dc2"}}}]"#),
    );
    assert_eq!(st, 500);
    assert_eq!(get_json(&a, "/v1/catalog/node/n2")["Node"]["Node"], "n2");
}

#[test]
fn kv_flags_that_exclude_each_other_are_refused_and_change_nothing() {
    let a = Agent::dev(&[]);
    for k in ["tree/a", "tree/b", "tree/c/d"] {
        assert_eq!(http("PUT", &a.url(&format!("/v1/kv/{k}")), Some(b"v")).0, 200);
    }
    for q in ["recurse&cas=1", "recurse&cas=abc", "cas=0&recurse"] {
        let (st, _, msg) = http("DELETE", &a.url(&format!("/v1/kv/tree?{q}")), None);
        assert_eq!(st, 400, "{q}");
        assert!(s(&msg).starts_with("Conflicting flags: "), "{q}: {}", s(&msg));
    }
    let (_, _, msg) = http("DELETE", &a.url("/v1/kv/tree?recurse&cas=5"), None);
    assert_eq!(s(&msg), "Conflicting flags: cas=5&recurse=\n", "Go's url.Values.Encode of the query");
    assert_eq!(get_json(&a, "/v1/kv/tree?keys").as_array().unwrap().len(), 3, "nothing deleted");

    // A session to acquire with.
    let sess = get_json_put(&a, "/v1/session/create", b"{}");
    let id = sess["ID"].as_str().unwrap().to_string();
    let cur = get_json(&a, "/v1/kv/tree/a")[0]["ModifyIndex"].as_u64().unwrap();
    for q in
        [format!("cas={}&acquire={id}", cur - 1), format!("acquire={id}&release={id}"), format!("cas=0&release={id}")]
    {
        let (st, _, msg) = http("PUT", &a.url(&format!("/v1/kv/tree/a?{q}")), Some(b"overwritten"));
        assert_eq!(st, 400, "{q}: {}", s(&msg));
        assert!(s(&msg).starts_with("Conflicting flags: "), "{}", s(&msg));
    }
    let e = get_json(&a, "/v1/kv/tree/a");
    assert_eq!(e[0]["Value"], "dg==", "value untouched");
    assert!(e[0].get("Session").is_none(), "no lock taken: {e}");

    // Go's ParseUint: no sign.
    let (st, _, _) = http("PUT", &a.url("/v1/kv/tree/a?cas=+5"), Some(b"x"));
    assert_eq!(st, 400);
    let (st, _, msg) = http("GET", &a.url("/v1/kv/tree/a?index=+5"), None);
    assert_eq!((st, s(&msg).as_str()), (400, "Invalid index"));
}

fn get_json_put(a: &Agent, path: &str, body: &[u8]) -> serde_json::Value {
    let (st, _, out) = http("PUT", &a.url(path), Some(body));
    assert_eq!(st, 200, "PUT {path}: {}", s(&out));
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn wrong_json_types_are_a_400_not_a_silent_default() {
    let a = Agent::dev(&[]);
    let cases: &[(&str, &[u8], &str)] = &[
        ("/v1/session/create", br#"{"TTL":30}"#, "Session.TTL of type string"),
        ("/v1/session/create", br#"{"Node":5}"#, "Session.Node of type string"),
        ("/v1/session/create", br#"{"Behavior":true}"#, "Session.Behavior"),
        ("/v1/session/create", br#"{"NodeChecks":"serfHealth"}"#, "Session.NodeChecks"),
        ("/v1/agent/service/register", br#"{"Name":"web","ID":7}"#, "ServiceDefinition.ID of type string"),
        ("/v1/agent/service/register", br#"{"Name":"web","Port":"80"}"#, "ServiceDefinition.Port of type int"),
        ("/v1/agent/service/register", br#"{"Name":"web","Meta":{"a":1}}"#, "ServiceDefinition.Meta"),
        ("/v1/agent/service/register", br#"{"Name":"web","Check":{"TTL":true}}"#, "Check.TTL"),
        ("/v1/agent/check/register", br#"{"Name":"c","TTL":"10s","ServiceID":5}"#, "ServiceID of type string"),
        ("/v1/catalog/register", br#"{"Node":5,"Address":"1.2.3.4"}"#, "Request decode failed"),
    ];
    for (path, body, want) in cases {
        let (st, _, msg) = http("PUT", &a.url(path), Some(body));
        assert_eq!(st, 400, "{path} {}: {}", s(body), s(&msg));
        assert!(s(&msg).starts_with("Request decode failed: "), "{}", s(&msg));
        assert!(s(&msg).contains(want), "{path}: {} should mention {want}", s(&msg));
    }
    assert_eq!(get_json(&a, "/v1/session/list").as_array().unwrap().len(), 0, "no session made");
    assert_eq!(get_json(&a, "/v1/agent/services").as_object().unwrap().len(), 0, "no service made");
    assert_eq!(get_json(&a, "/v1/agent/checks").as_object().unwrap().len(), 0, "no check made");
    // What Go accepts still works: nanosecond durations, null, case-insensitive keys.
    let (st, _, msg) = http(
        "PUT",
        &a.url("/v1/agent/service/register"),
        Some(br#"{"name":"web","Tags":null,"check":{"ttl":30000000000}}"#),
    );
    assert_eq!(st, 200, "{}", s(&msg));
}

#[test]
fn endpoints_consul_clients_expect() {
    let a = Agent::dev(&[]);
    // The agent root, which HTTP checks point at.
    let (st, _, body) = http("GET", &a.url("/"), None);
    assert_eq!(st, 200);
    assert!(s(&body).starts_with("Consul Agent: UI disabled."), "{}", s(&body));

    // A check for a service this agent does not have: 404.
    let (st, _, msg) =
        http("PUT", &a.url("/v1/agent/check/register"), Some(br#"{"Name":"c","TTL":"10s","ServiceID":"nope"}"#));
    assert_eq!((st, s(&msg).as_str()), (404, r#"ServiceID "nope" does not exist"#));

    // ?peer= never returns local data.
    let (st, _, _) = http("PUT", &a.url("/v1/agent/service/register"), Some(br#"{"Name":"foo","Port":80}"#));
    assert_eq!(st, 200);
    wait_for(Duration::from_secs(10), "foo in the catalog", || {
        (get_json(&a, "/v1/health/service/foo").as_array().unwrap().len() == 1).then_some(())
    });
    for p in ["/v1/health/service/foo?peer=unknown", "/v1/catalog/service/foo?peer=unknown", "/v1/catalog/nodes?peer=x"]
    {
        let (st, h, body) = http("GET", &a.url(p), None);
        assert_eq!((st, s(&body).as_str()), (200, "[]"), "{p}");
        assert_eq!(header(&h, "X-Consul-Index").as_deref(), Some("1"), "{p}");
    }
    assert_eq!(get_json(&a, "/v1/catalog/services?peer=x"), serde_json::json!({}));

    // ACL endpoints while ACLs are off.
    for (m, p) in [("PUT", "/v1/agent/token/default"), ("PUT", "/v1/acl/bootstrap"), ("GET", "/v1/acl/tokens")] {
        let (st, _, msg) = http(m, &a.url(p), Some(b"{}"));
        assert_eq!((st, s(&msg).as_str()), (401, "ACL support disabled"), "{p}");
    }

    // Every registered field comes back from /v1/agent/services.
    let def = br#"{"Name":"px","Kind":"connect-proxy","Port":21000,
        "Proxy":{"DestinationServiceName":"web","LocalServicePort":8080},
        "Locality":{"Region":"r1","Zone":"z1"},"SocketPath":"/tmp/px.sock"}"#;
    let (st, _, msg) = http("PUT", &a.url("/v1/agent/service/register"), Some(def));
    assert_eq!(st, 200, "{}", s(&msg));
    let svcs = get_json(&a, "/v1/agent/services");
    let px = &svcs["px"];
    assert_eq!(px["Kind"], "connect-proxy");
    assert_eq!(px["Proxy"]["DestinationServiceName"], "web");
    assert_eq!(px["Proxy"]["LocalServicePort"], 8080);
    assert_eq!(px["Locality"]["Zone"], "z1");
    assert_eq!(px["SocketPath"], "/tmp/px.sock");

    // A transaction may not write an empty key (it would then show in ?keys).
    let (st, _, body) = http("PUT", &a.url("/v1/txn"), Some(br#"[{"KV":{"Verb":"set","Key":"","Value":"eA=="}}]"#));
    assert_eq!(st, 409, "{}", s(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["Errors"][0]["What"], "Must provide key");
    let (st, _, body) = http("GET", &a.url("/v1/kv/?keys"), None);
    assert_eq!((st, s(&body).as_str()), (200, "[]"));

    // A selector naming no field is refused, even with nothing to filter.
    for p in [
        "/v1/catalog/nodes?filter=Nope%20%3D%3D%20x",
        "/v1/health/service/none?filter=Service.Nope%20%3D%3D%20x",
        "/v1/agent/services?filter=Nope%20%3D%3D%20x",
        "/v1/kv/?recurse&filter=Nope%20%3D%3D%20x",
    ] {
        let (st, _, msg) = http("GET", &a.url(p), None);
        assert_eq!(st, 400, "{p}: {}", s(&msg));
        assert!(s(&msg).contains("is not valid"), "{p}: {}", s(&msg));
    }
    // Real selectors, into maps and lists, still work.
    for p in [
        "/v1/catalog/nodes?filter=Meta.x%20%3D%3D%20y",
        "/v1/health/service/foo?filter=Checks.Status%20%3D%3D%20passing",
        "/v1/agent/services?filter=Proxy.DestinationServiceName%20%3D%3D%20web",
    ] {
        let (st, _, msg) = http("GET", &a.url(p), None);
        assert_eq!(st, 200, "{p}: {}", s(&msg));
    }
}

#[test]
fn monitor_streams_logs_at_the_asked_level() {
    let a = Agent::dev(&[]);
    let (st, _, msg) = http("GET", &a.url("/v1/agent/monitor?loglevel=loud"), None);
    assert_eq!((st, s(&msg).as_str()), (400, "Unknown log level: loud"));

    // A debug monitor sees debug lines (the agent itself logs at info).
    let mut c = TcpStream::connect(a.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    write!(c, "GET /v1/agent/monitor?loglevel=debug HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // Make the agent log something at debug: anti-entropy reports a sync on registration.
    let got = wait_for_stream(&mut c, "agent.anti_entropy", || {
        let _ = http("PUT", &a.url("/v1/agent/service/register"), Some(br#"{"Name":"mon"}"#));
    });
    assert!(got.contains("[DEBUG] agent.anti_entropy: synced local state"), "{got}");

    // JSON lines.
    let mut c = TcpStream::connect(a.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    write!(c, "GET /v1/agent/monitor?loglevel=DEBUG&logjson HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let got = wait_for_stream(&mut c, "\"@module\":\"agent.anti_entropy\"", || {
        let _ = http("PUT", &a.url("/v1/agent/service/deregister/mon"), None);
    });
    assert!(got.contains("\"@level\":\"debug\""), "{got}");
}

/// Reads a streaming response until `want` appears, poking the agent with `poke` between reads.
fn wait_for_stream(c: &mut TcpStream, want: &str, poke: impl Fn()) -> String {
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        poke();
        let mut chunk = [0u8; 8192];
        match c.read(&mut chunk) {
            Ok(0) => panic!("monitor stream closed: {}", s(&buf)),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
        if s(&buf).contains(want) {
            return s(&buf);
        }
        assert!(Instant::now() < deadline, "no {want} in monitor stream: {}", s(&buf));
    }
}

#[test]
fn slow_and_half_closed_connections() {
    let a = Agent::dev(&["-hcl=limits { http_max_conns_per_client = 20 }"]);
    // Connections that never finish their head are closed by the agent.
    let mut slow: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(a.addr()).unwrap()).collect();
    for c in &mut slow {
        c.write_all(b"GET /v1/agent/self HTTP/1.1\r\nHo").unwrap();
    }
    // Over the cap: Consul's raw 429, not a reset.
    let mut extra = TcpStream::connect(a.addr()).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut resp = String::new();
    let _ = extra.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 429 Too Many Requests"), "{resp:?}");
    // The slow ones are timed out, and the API is usable again.
    for c in &mut slow {
        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
    }
    let (st, _, _) = http("GET", &a.url("/v1/agent/self"), None);
    assert_eq!(st, 200);

    // A body that trickles in is cut off too.
    let mut c = TcpStream::connect(a.addr()).unwrap();
    c.write_all(b"PUT /v1/kv/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = Instant::now();
    let mut resp = Vec::new();
    let _ = c.read_to_end(&mut resp);
    assert!(started.elapsed() < Duration::from_secs(29), "the agent should give up on the body");
    assert_eq!(http("GET", &a.url("/v1/kv/slow"), None).0, 404, "nothing written");

    // A whole request followed by a half-close is answered.
    let mut c = TcpStream::connect(a.addr()).unwrap();
    c.write_all(b"PUT /v1/kv/half HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut resp = String::new();
    let _ = c.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp:?}");
    assert!(resp.ends_with("true"), "{resp:?}");
}

/// Resident memory of a process, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    st.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").trim().parse().unwrap()
}

#[test]
fn dev_memory_follows_the_data_not_the_history() {
    let a = Agent::dev(&[]);
    let pid = a.child.as_ref().unwrap().id();
    let value = vec![b'x'; 500 * 1024];
    // 400 overwrites of one 500 KiB value: ~200 MiB of history, one value of data.
    let mut c = TcpStream::connect(a.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    for i in 0..400 {
        write!(c, "PUT /v1/kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", value.len()).unwrap();
        c.write_all(&value).unwrap();
        let mut resp = [0u8; 512];
        let n = c.read(&mut resp).unwrap();
        assert!(s(&resp[..n]).starts_with("HTTP/1.1 200"), "write {i}: {}", s(&resp[..n]));
    }
    let rss = rss_kib(pid);
    assert!(rss < 150 * 1024, "RSS {rss} KiB after 200 MiB of overwrites: the in-memory log is not compacted");
    let (st, _, body) = http("GET", &a.url("/v1/kv/big?raw"), None);
    assert_eq!((st, body.len()), (200, value.len()));
}
