//! User events: `/v1/event/fire` and `/v1/event/list` (filters, blocking list), `cairn event`, and
//! `cairn watch -type=event`.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

fn json(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into()))
}

fn list(a: &Agent, q: &str) -> (u64, Vec<Value>) {
    let (st, h, b) = http("GET", &a.url(&format!("/v1/event/list{q}")), None);
    assert_eq!(st, 200);
    let idx = header(&h, "X-Consul-Index").unwrap().parse().unwrap();
    (idx, json(&b).as_array().unwrap().clone())
}

#[test]
fn fire_list_filters_and_bad_input() {
    let a = Agent::dev(&[]);
    let (st, _, b) = http("PUT", &a.url("/v1/event/fire/deploy"), Some(b"v1.2.3"));
    assert_eq!(st, 200);
    let ev = json(&b);
    assert_eq!(ev["Name"], "deploy");
    assert_eq!(ev["Payload"], "djEuMi4z");
    assert_eq!((ev["NodeFilter"].as_str(), ev["Version"].as_u64(), ev["LTime"].as_u64()), (Some(""), Some(1), Some(0)));
    assert_eq!(ev["ID"].as_str().unwrap().len(), 36);
    let (st, _, b) = http("PUT", &a.url("/v1/event/fire/other"), None);
    assert_eq!(st, 200);
    assert_eq!(json(&b)["Payload"], Value::Null, "no body, null payload");

    let (idx, all) = list(&a, "");
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["ID"], ev["ID"]);
    assert!(all[0]["LTime"].as_u64().unwrap() >= 1, "delivery assigns a Lamport time");
    assert!(all[0]["LTime"].as_u64() < all[1]["LTime"].as_u64());
    // The index is derived from the newest event's ID, as Consul's clients compute it.
    let id = all[1]["ID"].as_str().unwrap().replace('-', "");
    let want = u64::from_str_radix(&id[..16], 16).unwrap() ^ u64::from_str_radix(&id[16..], 16).unwrap();
    assert_eq!(idx, want.max(1));
    let (_, named) = list(&a, "?name=deploy");
    assert_eq!(named.len(), 1);

    // Filters decide whether this agent (the node "e2e") takes the event.
    http("PUT", &a.url("/v1/agent/service/register"), Some(br#"{"Name": "web", "Tags": ["canary"]}"#));
    for (q, delivered) in [
        ("node=^e2e$", true),
        ("node=^elsewhere$", false),
        ("service=^we", true),
        ("service=db", false),
        ("service=web&tag=can", true),
        ("service=web&tag=stable", false),
    ] {
        let name = format!("f-{}", q.replace(['=', '&', '^', '$'], "_"));
        let (st, _, b) = http("PUT", &a.url(&format!("/v1/event/fire/{name}?{q}")), None);
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
        let (_, got) = list(&a, &format!("?name={name}"));
        assert_eq!(got.len(), usize::from(delivered), "{q}");
    }

    // Bad input: Consul's codes (400 for a missing name, 500 for a rejected event).
    let (st, _, _) = http("PUT", &a.url("/v1/event/fire/"), None);
    assert_eq!(st, 400);
    let (st, _, b) = http("PUT", &a.url("/v1/event/fire/x?tag=a"), None);
    assert_eq!(st, 500);
    assert!(String::from_utf8_lossy(&b).contains("without service filter"));
    let (st, _, b) = http("PUT", &a.url("/v1/event/fire/x?node=("), None);
    assert_eq!(st, 500);
    assert!(String::from_utf8_lossy(&b).contains("Invalid node filter"));
    let (st, _, b) = http("PUT", &a.url("/v1/event/fire/x"), Some(&[b'a'; 600]));
    assert_eq!(st, 500);
    assert!(String::from_utf8_lossy(&b).contains("exceeds configured limit of 512 bytes"));
    let (st, _, _) = http("GET", &a.url("/v1/event/fire/x"), None);
    assert_eq!(st, 405);
    let (st, _, _) = http("GET", &a.url("/v1/event/list?index=abc"), None);
    assert_eq!(st, 400);
}

#[test]
fn a_blocking_list_wakes_on_a_new_event() {
    let a = Agent::dev(&[]);
    http("PUT", &a.url("/v1/event/fire/first"), None);
    let (idx, _) = list(&a, "");
    // Nothing new: the wait runs out and the index stays.
    let t = Instant::now();
    let (same, _) = list(&a, &format!("?index={idx}&wait=300ms"));
    assert_eq!(same, idx);
    assert!(t.elapsed() >= Duration::from_millis(300), "it blocked");
    let url = a.url(&format!("/v1/event/list?index={idx}&wait=30s"));
    let waiter = std::thread::spawn(move || {
        let (_, h, b) = http("GET", &url, None);
        (header(&h, "X-Consul-Index").unwrap(), json(&b))
    });
    // The waiter may or may not have registered yet; either way it must see the new event.
    http("PUT", &a.url("/v1/event/fire/second"), Some(b"x"));
    let (new_idx, evs) = waiter.join().unwrap();
    assert_ne!(new_idx, idx.to_string());
    assert_eq!(evs.as_array().unwrap().last().unwrap()["Name"], "second");
}

#[test]
fn event_cli_and_event_watch() {
    let a = Agent::dev(&[]);
    let o = a.cli(&["event", "-name=deploy", "payload-1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("Event ID: ") && out.trim().len() == "Event ID: ".len() + 36, "{out}");
    let (_, evs) = list(&a, "?name=deploy");
    assert_eq!(evs[0]["Payload"], "cGF5bG9hZC0x");
    let o = a.cli(&["event"]);
    assert_eq!(o.status.code(), Some(1));
    let o = a.cli(&["event", "-name=x", "-tag=t"]);
    assert_eq!(o.status.code(), Some(1));

    // The watch gets everything held on start, then only events newer than the last it saw.
    let w = RecordingWatch::start(&a, &["-type=event", "-name=deploy"]);
    let t = w.calls(1);
    assert!(t.contains("cGF5bG9hZC0x"), "{t}");
    // An event of another name does not call the handler; a matching one does, alone.
    a.cli(&["event", "-name=unrelated"]);
    a.cli(&["event", "-name=deploy", "payload-2"]);
    let t = w.calls(2);
    let second: Value = serde_json::from_str(t.split("IDX=").nth(1).unwrap().split_once('\n').unwrap().1).unwrap();
    assert_eq!(second.as_array().unwrap().len(), 1, "only the new event: {second}");
    assert_eq!(second[0]["Payload"], "cGF5bG9hZC0y");
    assert_eq!(w.stop(), 2, "no spurious calls");
}
