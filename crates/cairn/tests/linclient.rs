//! A client for the linearizability tests against real servers: random reads (`?consistent`),
//! puts, check-and-sets, deletes, lock acquires and releases on two keys, recorded as a history
//! for `cairn_sim::linearizability`. It starts on its own server and moves to the next when that
//! one does not answer; a write whose answer never came is recorded with an unknown outcome.

use std::sync::Mutex;

use base64::Engine;
use cairn_sim::linearizability::{Input, Operation, Output};

/// Sends one request to server `i`: (status, body); status 0 when nothing came back.
pub type Request<'a> = &'a (dyn Fn(usize, &str, &str, Option<&[u8]>) -> (u16, Vec<u8>) + Sync);

/// Keys a client works on.
pub const KEYS: [&str; 2] = ["lin/a", "lin/b"];

/// Creates a session for the lock operations: no health checks and no TTL, so nothing but the
/// client's own release ever frees its locks (the model knows of no other way).
/// Waits until the server's node is in the catalog (a new leader registers it on its first
/// reconciliation; until then Consul refuses a session for it).
pub fn session(req: Request, server: usize) -> String {
    crate::harness::wait_for(std::time::Duration::from_secs(30), "a session", || {
        let (code, body) = req(server, "PUT", "/v1/session/create", Some(br#"{"NodeChecks":[],"Name":"lin"}"#));
        let v: serde_json::Value = serde_json::from_slice(&body).ok().filter(|_| code == 200)?;
        Some(v["ID"].as_str()?.to_string())
    })
}

/// The value and ModifyIndex of a `GET /v1/kv/<key>` answer.
fn entry(b: &[u8]) -> (String, u64) {
    let v: serde_json::Value = serde_json::from_slice(b).unwrap();
    let raw = base64::engine::general_purpose::STANDARD.decode(v[0]["Value"].as_str().unwrap_or("")).unwrap();
    (String::from_utf8(raw).unwrap(), v[0]["ModifyIndex"].as_u64().unwrap())
}

/// What the clients of one test share: the history, its clock (nanoseconds), and when to stop.
pub struct Shared<'a> {
    pub history: &'a Mutex<Vec<Operation>>,
    pub now: &'a (dyn Fn() -> u64 + Sync),
    pub stop: &'a (dyn Fn() -> bool + Sync),
}

/// Runs `ops` operations as client `t` of `servers` (or fewer, if `stop` says so), holding
/// `session` for its locks.
pub fn run(t: usize, ops: usize, servers: usize, session: &str, shared: &Shared, req: Request) {
    let Shared { history, now, stop } = *shared;
    let mut server = t % servers;
    let mut rng = 0x9e3779b97f4a7c15u64 ^ (t as u64 + 1);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for n in 0..ops {
        if stop() {
            return;
        }
        let key = KEYS[(next() % 2) as usize];
        let record = |call: u64, input: Input, output: Option<Output>| {
            let ret = if output.is_some() { now() } else { u64::MAX };
            history.lock().unwrap().push(Operation { key: key.to_string(), call, ret, input, output });
        };
        let value = format!("c{t}-{n}");
        let write_out = |code: u16, b: &[u8]| (code == 200).then(|| Output::Ok(b == b"true"));
        let put = |path: String, input: Input| {
            let t0 = now();
            let (code, b) = req(server, "PUT", &path, Some(value.as_bytes()));
            record(t0, input, write_out(code, &b));
            code
        };
        let read = || {
            let t0 = now();
            let (code, b) = req(server, "GET", &format!("/v1/kv/{key}?consistent"), None);
            match code {
                200 => {
                    let (v, index) = entry(&b);
                    record(t0, Input::Get, Some(Output::Value(Some(v.clone()))));
                    Some((Some(v), index))
                }
                404 => {
                    record(t0, Input::Get, Some(Output::Value(None)));
                    Some((None, 0))
                }
                _ => None,
            }
        };
        let code = match next() % 12 {
            0..=3 => read().map_or(0, |_| 200),
            4 | 5 => put(format!("/v1/kv/{key}"), Input::Put(value.clone())),
            6 | 7 => match read() {
                // Check-and-set on the index just read.
                Some((expect, index)) => {
                    put(format!("/v1/kv/{key}?cas={index}"), Input::Cas { expect, new: value.clone() })
                }
                None => 0,
            },
            8 => {
                let t0 = now();
                let (code, b) = req(server, "DELETE", &format!("/v1/kv/{key}"), None);
                record(t0, Input::Delete, write_out(code, &b));
                code
            }
            9 | 10 => put(
                format!("/v1/kv/{key}?acquire={session}"),
                Input::Acquire { session: session.to_string(), value: value.clone() },
            ),
            _ => put(
                format!("/v1/kv/{key}?release={session}"),
                Input::Release { session: session.to_string(), value: value.clone() },
            ),
        };
        // No answer, or the server could not serve it (no leader there): try the next one.
        if code == 0 || code >= 500 {
            server = (server + 1) % servers;
        }
    }
}
