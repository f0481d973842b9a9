//! Lock safety and leader election over real HTTP, with sessions expiring under their holders.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

fn j(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or(Value::Null)
}

fn session(a: &Agent, body: &str) -> String {
    let (st, _, b) = http("PUT", &a.url("/v1/session/create"), Some(body.as_bytes()));
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    j(&b)["ID"].as_str().unwrap().to_string()
}

/// Two contenders elect a leader through one key. The leader stops renewing (a crash); the other
/// takes over within 2 x TTL + lock-delay, and its fencing token is higher.
#[test]
fn leader_election_takes_over_after_session_expiry() {
    let a = Agent::dev(&["-hcl=session_ttl_min = \"1s\""]);
    let ttl = Duration::from_secs(1);
    let delay = Duration::from_millis(500);
    let body = format!(r#"{{"TTL": "1s", "LockDelay": "{}ms"}}"#, delay.as_millis());
    let s1 = session(&a, &body);
    let s2 = session(&a, &body);
    let key = "service/app/leader";
    let (_, _, b) = http("PUT", &a.url(&format!("/v1/kv/{key}?acquire={s1}")), Some(b"node-1"));
    assert_eq!(j(&b), Value::Bool(true));
    let (_, _, b) = http("PUT", &a.url(&format!("/v1/kv/{key}?acquire={s2}")), Some(b"node-2"));
    assert_eq!(j(&b), Value::Bool(false), "one leader at a time");
    let (_, h, b) = http("GET", &a.url(&format!("/v1/kv/{key}")), None);
    let token1 = j(&b)[0]["LockIndex"].as_u64().unwrap();
    let mut index: u64 = header(&h, "x-consul-index").unwrap().parse().unwrap();

    // Contender 2 renews its own session and watches the key with blocking queries, as an
    // application would; contender 1 has crashed and renews nothing.
    let crashed = Instant::now();
    let deadline = crashed + ttl * 2 + delay + Duration::from_secs(5);
    let took_over = loop {
        assert!(Instant::now() < deadline, "contender 2 never took over");
        http("PUT", &a.url(&format!("/v1/session/renew/{s2}")), None);
        let (_, h, b) = http("GET", &a.url(&format!("/v1/kv/{key}?index={index}&wait=300ms")), None);
        index = header(&h, "x-consul-index").and_then(|v| v.parse().ok()).unwrap_or(index);
        let free = j(&b)[0].get("Session").map(|s| s.as_str() == Some("")).unwrap_or(true);
        if free {
            let (_, _, r) = http("PUT", &a.url(&format!("/v1/kv/{key}?acquire={s2}")), Some(b"node-2"));
            if j(&r) == Value::Bool(true) {
                break crashed.elapsed();
            }
        }
    };
    assert!(took_over >= ttl, "not before the old leader's TTL: {took_over:?}");
    assert!(took_over <= ttl * 2 + delay + Duration::from_secs(2), "within 2xTTL + lock-delay: {took_over:?}");
    let (_, _, b) = http("GET", &a.url(&format!("/v1/kv/{key}")), None);
    let e = &j(&b)[0];
    assert_eq!(e["Session"], s2.as_str());
    assert!(e["LockIndex"].as_u64().unwrap() > token1, "the new leader's fencing token is higher");
}

/// Many contenders, some of whose sessions expire while they hold the lock. Every critical section
/// is guarded by `check-session` in the same transaction as its write, so a holder that lost its
/// lock cannot write. Checks: no two holders share a fencing token, tokens grow in acquisition order,
/// and the protected counter equals the number of critical sections that committed.
#[test]
fn lock_safety_under_contention_and_expiry() {
    let a = Agent::dev(&["-hcl=session_ttl_min = \"1s\""]);
    let url = a.url("");
    http("PUT", &a.url("/v1/kv/safety/counter"), Some(b"0"));
    let log: Arc<Mutex<Vec<(u64, String, Instant)>>> = Arc::default();
    let committed = Arc::new(Mutex::new(0u64));
    let lost = Arc::new(Mutex::new(0u64));
    let deadline = Instant::now() + Duration::from_secs(10);
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let (url, log, committed, lost) = (url.clone(), log.clone(), committed.clone(), lost.clone());
            std::thread::spawn(move || {
                let mut sections = 0;
                let mut stalled = false;
                let mut index = 0u64;
                while Instant::now() < deadline && sections < 4 {
                    // Workers 0 and 1 each stall once, past their TTL, while holding the lock.
                    let stall = w < 2 && !stalled;
                    let (_, _, b) = http("PUT", &format!("{url}/v1/session/create"), Some(br#"{"TTL": "1s", "LockDelay": "0s"}"#));
                    let sid = j(&b)["ID"].as_str().unwrap_or_default().to_string();
                    let (_, _, b) = http("PUT", &format!("{url}/v1/kv/safety/lock?acquire={sid}"), Some(b"x"));
                    if j(&b) != Value::Bool(true) {
                        http("PUT", &format!("{url}/v1/session/destroy/{sid}"), None);
                        // Wait for the lock to change hands, as a real contender does.
                        let (_, h, _) = http("GET", &format!("{url}/v1/kv/safety/lock?index={index}&wait=500ms"), None);
                        index = header(&h, "x-consul-index").and_then(|v| v.parse().ok()).unwrap_or(0);
                        continue;
                    }
                    sections += 1;
                    let (_, _, b) = http("GET", &format!("{url}/v1/kv/safety/lock"), None);
                    let e = j(&b)[0].clone();
                    if e["Session"] != sid.as_str() {
                        // Lost already (a stalled predecessor's reaping races with us): not a holder.
                        continue;
                    }
                    log.lock().unwrap().push((e["LockIndex"].as_u64().unwrap(), sid.clone(), Instant::now()));
                    if stall {
                        stalled = true;
                        // The holder stalls until the leader has reaped its session (2 x TTL),
                        // then writes as if it still held the lock.
                        wait_for(Duration::from_secs(10), "the stalled holder's session to be reaped", || {
                            let (_, _, b) = http("GET", &format!("{url}/v1/session/info/{sid}"), None);
                            matches!(serde_json::from_slice::<Value>(&b), Ok(v) if v.as_array().is_none_or(|a| a.is_empty()))
                                .then_some(())
                        });
                    }
                    // Read-modify-write of the counter, guarded by the lock in one transaction.
                    let (_, _, b) = http("GET", &format!("{url}/v1/kv/safety/counter"), None);
                    let c = j(&b)[0].clone();
                    let n: u64 = String::from_utf8(base64_decode(c["Value"].as_str().unwrap_or(""))).unwrap().parse().unwrap();
                    let body = json!([
                        {"KV": {"Verb": "check-session", "Key": "safety/lock", "Session": sid}},
                        {"KV": {"Verb": "cas", "Key": "safety/counter", "Index": c["ModifyIndex"], "Value": base64_encode((n + 1).to_string().as_bytes())}}
                    ]);
                    let (st, _, _) = http("PUT", &format!("{url}/v1/txn"), Some(body.to_string().as_bytes()));
                    if st == 200 {
                        *committed.lock().unwrap() += 1;
                    } else {
                        assert_eq!(st, 409, "a lost lock fails the guarded write");
                        assert!(stall, "only a stalled holder may lose its lock mid-section (worker {w})");
                        *lost.lock().unwrap() += 1;
                    }
                    http("PUT", &format!("{url}/v1/kv/safety/lock?release={sid}"), None);
                    http("PUT", &format!("{url}/v1/session/destroy/{sid}"), None);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let mut log = log.lock().unwrap().clone();
    assert!(log.len() >= 6, "enough critical sections ran: {}", log.len());
    assert!(*lost.lock().unwrap() >= 1, "at least one holder lost its lock to expiry and was fenced off");
    log.sort_by_key(|(_, _, t)| *t);
    for pair in log.windows(2) {
        assert!(pair[1].0 > pair[0].0, "fencing tokens grow with each new holder: {pair:?}");
    }
    let (_, _, b) = http("GET", &a.url("/v1/kv/safety/counter"), None);
    let final_n: u64 = String::from_utf8(base64_decode(j(&b)[0]["Value"].as_str().unwrap())).unwrap().parse().unwrap();
    assert_eq!(final_n, *committed.lock().unwrap(), "every committed section counted exactly once");
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap_or_default()
}

/// `cairn lock` processes contending for one lock: their critical sections never interleave, the
/// child sees CONSUL_LOCK_HELD, and -child-exit-code passes the child's status through.
#[test]
fn cairn_lock_mutual_exclusion() {
    let a = Agent::dev(&[]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("log");
    let cmd = format!("echo start $$ $CONSUL_LOCK_HELD >> {0}; sleep 0.3; echo end $$ >> {0}", f.display());
    let addr = a.addr();
    let procs: Vec<_> = (0..3)
        .map(|_| {
            let (addr, cmd) = (addr.clone(), cmd.clone());
            std::thread::spawn(move || cli_at(&addr, &["lock", "-timeout=30s", "app/mutex", &cmd], None))
        })
        .collect();
    for p in procs {
        let o = p.join().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let text = std::fs::read_to_string(&f).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    for pair in lines.chunks(2) {
        let s: Vec<&str> = pair[0].split_whitespace().collect();
        let e: Vec<&str> = pair[1].split_whitespace().collect();
        assert_eq!((s[0], e[0]), ("start", "end"), "sections interleaved:\n{text}");
        assert_eq!(s[1], e[1], "sections interleaved:\n{text}");
        assert_eq!(s.get(2), Some(&"true"), "CONSUL_LOCK_HELD is set");
    }
    // A failing child: Consul reports it, and exits 2 only with -child-exit-code.
    let o = a.cli(&["lock", "-child-exit-code", "app/code", "exit 7"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("Error running handler: exit status 7"), "{}", stderr(&o));
    let o = a.cli(&["lock", "app/code", "exit 7"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("Error running handler: exit status 7"), "{}", stderr(&o));
    // The lock key is destroyed on the way out (Consul's Lock.Destroy), so a Consul-API lock on the
    // prefix later finds nothing of another kind in its way.
    let (st, _, _) = http("GET", &a.url("/v1/kv/app/code/.lock"), None);
    assert_eq!(st, 404);
    let o = a.cli(&["lock", "-verbose", "app/code", "true"]);
    assert!(stdout(&o).contains("Setting up lock at path: app/code/.lock"), "{}", stdout(&o));
    assert!(stdout(&o).contains("Cleanup succeeded"), "{}", stdout(&o));
    // Everything was cleaned up: no sessions left, the lock key is free.
    let (_, _, b) = http("GET", &a.url("/v1/session/list"), None);
    assert_eq!(j(&b), json!([]));
}

/// `cairn lock -n 2`: a semaphore admits two holders at a time, never three.
#[test]
fn cairn_lock_semaphore_limits_holders() {
    let a = Agent::dev(&[]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("log");
    let cmd = format!("echo + >> {0}; sleep 0.6; echo - >> {0}", f.display());
    let addr = a.addr();
    let procs: Vec<_> = (0..4)
        .map(|_| {
            let (addr, cmd) = (addr.clone(), cmd.clone());
            std::thread::spawn(move || cli_at(&addr, &["lock", "-n", "2", "-timeout=30s", "app/sem", &cmd], None))
        })
        .collect();
    for p in procs {
        let o = p.join().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let text = std::fs::read_to_string(&f).unwrap();
    let (mut cur, mut max) = (0i32, 0i32);
    for l in text.lines() {
        cur += if l == "+" { 1 } else { -1 };
        max = max.max(cur);
    }
    assert_eq!(text.lines().count(), 8);
    assert!(max <= 2, "at most two holders at once:\n{text}");
    assert_eq!(max, 2, "two holders did run together:\n{text}");
    // The last holder out destroys the semaphore's keys, as Consul's Semaphore.Destroy.
    let (st, _, b) = http("GET", &a.url("/v1/kv/app/sem/?recurse"), None);
    assert_eq!(st, 404, "{}", String::from_utf8_lossy(&b));
}

/// When the lock is lost (here: its session destroyed), the child is terminated and `cairn lock`
/// exits with 1, long before the child would have finished.
#[test]
fn cairn_lock_kills_child_when_lock_is_lost() {
    let a = Agent::dev(&[]);
    let addr = a.addr();
    let t = Instant::now();
    let p = std::thread::spawn(move || cli_at(&addr, &["lock", "app/lost", "sleep 60"], None));
    let sid = wait_for(Duration::from_secs(10), "lock held", || {
        let (st, _, b) = http("GET", &a.url("/v1/kv/app/lost/.lock"), None);
        let s = j(&b)[0]["Session"].as_str().unwrap_or("").to_string();
        (st == 200 && !s.is_empty()).then_some(s)
    });
    http("PUT", &a.url(&format!("/v1/session/destroy/{sid}")), None);
    let o = p.join().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("Lock lost"), "{}", stderr(&o));
    assert!(t.elapsed() < Duration::from_secs(30), "the child was stopped: {:?}", t.elapsed());
}
