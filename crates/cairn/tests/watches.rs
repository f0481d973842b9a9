//! `cairn watch` and `watches` in agent config: handlers run on real changes only, with the JSON on
//! stdin and CONSUL_INDEX set; without a handler the value is printed once.

use std::time::Duration;

use crate::harness::*;

#[test]
fn watch_without_handler_prints_and_exits() {
    let a = Agent::dev(&[]);
    let o = a.cli(&["watch", "-type=nodes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["Node"], "e2e");
    let o = a.cli(&["watch", "-type=key", "-key=absent"]);
    assert_eq!(stdout(&o).trim(), "null");
    let o = a.cli(&["watch", "-type=bogus"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn watch_handler_runs_on_real_changes_only() {
    let a = Agent::dev(&[]);
    let w = RecordingWatch::start(&a, &["-type=key", "-key=w/k"]);
    let calls = |n: usize| w.calls(n);
    let t = calls(1);
    assert!(t.starts_with("null"), "fires once on start, with the (missing) value: {t}");
    http("PUT", &a.url("/v1/kv/w/k"), Some(b"1"));
    let t = calls(2);
    assert!(t.contains("\"Value\":\"MQ==\""), "{t}");
    // An unrelated write, then a real change: exactly one more call.
    http("PUT", &a.url("/v1/kv/w/other"), Some(b"x"));
    http("PUT", &a.url("/v1/kv/w/k"), Some(b"2"));
    let t = calls(3);
    assert!(t.contains("\"Value\":\"Mg==\""), "{t}");
    let last_idx: u64 = t.lines().rfind(|l| l.starts_with("IDX=")).unwrap()[4..].parse().unwrap();
    assert!(last_idx > 0);
    // The watch process stops cleanly on SIGTERM.
    assert_eq!(w.stop(), 3, "no spurious calls");
}

#[test]
fn watches_in_agent_config() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("seen");
    let cfg = write_file(
        dir.path(),
        "watch.hcl",
        &format!("watches = [\n  {{\n    type = \"keyprefix\"\n    prefix = \"cfg/\"\n    handler_type = \"script\"\n    args = [\"/bin/sh\", \"-c\", \"cat >> {}\"]\n  }}\n]\n", f.display()),
    );
    let a = Agent::dev(&[&format!("-config-file={}", cfg.display())]);
    http("PUT", &a.url("/v1/kv/cfg/a"), Some(b"hello"));
    wait_for(Duration::from_secs(10), "config watch handler", || {
        std::fs::read_to_string(&f).unwrap_or_default().contains("\"Key\":\"cfg/a\"").then_some(())
    });
    // A bad watch stops start-up with its position named.
    let bad = write_file(dir.path(), "bad.hcl", "watches = [\n  {\n    type = \"key\"\n  }\n]\n");
    let mut b = Agent::spawn(&["-dev", &format!("-config-file={}", bad.display())], free_port());
    assert_eq!(b.wait_exit(), Some(1));
    assert!(b.log_text().contains("watches[0]"), "{}", b.log_text());
}

#[test]
fn http_watch_handler_in_agent_config() {
    // The handler's target is the agent's own KV API: the watch PUTs what it saw into a key.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = write_file(
        dir.path(),
        "watch.hcl",
        &format!(
            "watches = [\n  {{\n    type = \"key\"\n    key = \"src\"\n    handler_type = \"http\"\n    http_handler_config = {{\n      path = \"http://127.0.0.1:{port}/v1/kv/handled\"\n      method = \"PUT\"\n      timeout = \"5s\"\n    }}\n  }}\n]\n"
        ),
    );
    let a = Agent::spawn(&["-dev", "-node=e2e", &format!("-config-file={}", cfg.display())], port);
    a.wait_ready();
    http("PUT", &a.url("/v1/kv/src"), Some(b"payload"));
    wait_for(Duration::from_secs(10), "http handler to deliver the change", || {
        let (st, _, b) = http("GET", &a.url("/v1/kv/handled?raw"), None);
        (st == 200 && String::from_utf8_lossy(&b).contains("\"Key\":\"src\"")).then_some(())
    });
}
