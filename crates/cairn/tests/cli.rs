//! The CLI against a real agent: Consul's commands, flags, output shapes and exit codes.

use crate::harness::*;

#[test]
fn kv_put_get_delete_and_flags() {
    let a = Agent::dev(&[]);
    let o = a.cli(&["kv", "put", "app/config", "hello"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "Success! Data written to: app/config\n");
    assert_eq!(stdout(&a.cli(&["kv", "get", "app/config"])), "hello\n");

    // Missing key: Consul's message and exit 1.
    let o = a.cli(&["kv", "get", "app/nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("No key exists at: app/nope"), "{}", stderr(&o));

    // Flags and -detailed.
    assert!(a.cli(&["kv", "put", "-flags=42", "app/flagged", "x"]).status.success());
    let d = stdout(&a.cli(&["kv", "get", "-detailed", "app/flagged"]));
    assert!(d.contains("Flags            42") || d.lines().any(|l| l.starts_with("Flags") && l.ends_with("42")), "{d}");
    assert!(d.lines().any(|l| l.starts_with("Session") && l.ends_with('-')), "{d}");

    // -base64 both ways.
    assert!(a.cli(&["kv", "put", "-base64", "app/b64", "aGk="]).status.success());
    assert_eq!(stdout(&a.cli(&["kv", "get", "app/b64"])), "hi\n");
    assert_eq!(stdout(&a.cli(&["kv", "get", "-base64", "app/b64"])), "aGk=\n");

    // stdin and @file.
    assert!(a.cli_stdin(&["kv", "put", "app/stdin", "-"], Some(b"from stdin")).status.success());
    assert_eq!(stdout(&a.cli(&["kv", "get", "app/stdin"])), "from stdin\n");
    let dir = tempfile::tempdir().unwrap();
    let f = write_file(dir.path(), "v.txt", "from file");
    assert!(a.cli(&["kv", "put", "app/file", &format!("@{}", f.display())]).status.success());
    assert_eq!(stdout(&a.cli(&["kv", "get", "app/file"])), "from file\n");

    // -recurse and -keys with the default separator.
    assert!(a.cli(&["kv", "put", "app/sub/deep", "d"]).status.success());
    let r = stdout(&a.cli(&["kv", "get", "-recurse", "app/"]));
    assert!(r.contains("app/config:hello\n") && r.contains("app/sub/deep:d\n"), "{r}");
    let k = stdout(&a.cli(&["kv", "get", "-keys", "app/"]));
    assert!(k.lines().any(|l| l == "app/sub/"), "keys roll up at the separator: {k}");
    assert!(!k.contains("app/sub/deep"), "{k}");

    // CAS: create-only and index mismatch.
    let o = a.cli(&["kv", "put", "-cas", "-modify-index=0", "app/config", "again"]);
    assert_eq!(o.status.code(), Some(1), "cas=0 on an existing key fails");
    assert!(stderr(&o).contains("CAS failed"));
    assert!(a.cli(&["kv", "put", "-cas", "-modify-index=0", "app/new", "v"]).status.success());

    // Delete one key, then a prefix.
    assert_eq!(stdout(&a.cli(&["kv", "delete", "app/new"])), "Success! Deleted key: app/new\n");
    assert_eq!(
        stdout(&a.cli(&["kv", "delete", "-recurse", "app/sub"])),
        "Success! Deleted keys with prefix: app/sub\n"
    );
    assert_eq!(a.cli(&["kv", "get", "app/sub/deep"]).status.code(), Some(1));
}

#[test]
fn kv_export_import_roundtrip() {
    let a = Agent::dev(&[]);
    for (k, v) in [("ex/a", "1"), ("ex/b/c", "two"), ("other", "x")] {
        assert!(a.cli(&["kv", "put", k, v]).status.success());
    }
    assert!(a.cli(&["kv", "put", "-flags=7", "ex/f", "flagged"]).status.success());
    let out = a.cli(&["kv", "export", "ex/"]);
    assert!(out.status.success());
    let exported: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let arr = exported.as_array().unwrap();
    assert_eq!(arr.len(), 3);
    assert_eq!(arr[0]["key"], "ex/a");
    assert_eq!(arr[0]["value"], "MQ==");
    assert!(arr.iter().any(|e| e["key"] == "ex/f" && e["flags"] == 7));

    let b = Agent::dev(&[]);
    let o = b.cli_stdin(&["kv", "import", "-prefix=copy/", "-"], Some(&out.stdout));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Imported: copy/ex/b/c"));
    assert_eq!(stdout(&b.cli(&["kv", "get", "copy/ex/b/c"])), "two\n");
    let d = stdout(&b.cli(&["kv", "get", "-detailed", "copy/ex/f"]));
    assert!(d.lines().any(|l| l.starts_with("Flags") && l.ends_with('7')), "{d}");
}

#[test]
fn catalog_services_members_info() {
    let a = Agent::dev(&[]);
    assert_eq!(stdout(&a.cli(&["catalog", "datacenters"])), "dc1\n");
    let o = a.cli(&["services", "register", "-name=web", "-port=8080", "-tag=v1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "Registered service: web\n");
    // Anti-entropy carries it to the catalog.
    wait_for(std::time::Duration::from_secs(10), "web in the catalog", || {
        stdout(&a.cli(&["catalog", "services"])).lines().any(|l| l == "web").then_some(())
    });
    let s = stdout(&a.cli(&["catalog", "services", "-tags"]));
    assert!(s.lines().any(|l| l.starts_with("web") && l.ends_with("v1")), "{s}");
    assert!(s.lines().any(|l| l.starts_with("consul")), "{s}");

    let n = stdout(&a.cli(&["catalog", "nodes"]));
    let mut lines = n.lines();
    let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(head, ["Node", "ID", "Address", "DC"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[0], "e2e");
    assert_eq!(row[1].len(), 8, "IDs are shortened to 8 characters");
    assert_eq!((row[2], row[3]), ("127.0.0.1", "dc1"));

    let m = stdout(&a.cli(&["members"]));
    let head: Vec<&str> = m.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(head, ["Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Partition", "Segment"]);
    let row: Vec<&str> = m.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!((row[0], row[2], row[3], row[6]), ("e2e", "alive", "server", "dc1"));

    let info = stdout(&a.cli(&["info"]));
    assert!(info.contains("raft:") && info.contains("\tstate = Leader"), "{info}");
    assert!(info.contains("consul:") && info.contains("\tleader = true"), "{info}");

    let o = a.cli(&["services", "deregister", "-id=web"]);
    assert_eq!(stdout(&o), "Deregistered service: web\n");
    wait_for(std::time::Duration::from_secs(10), "web to leave the catalog", || {
        (!stdout(&a.cli(&["catalog", "services"])).lines().any(|l| l == "web")).then_some(())
    });
}

#[test]
fn services_register_from_hcl_file() {
    let a = Agent::dev(&[]);
    let dir = tempfile::tempdir().unwrap();
    let f = write_file(dir.path(), "svc.hcl", "service {\n  name = \"api\"\n  id = \"api-1\"\n  port = 9000\n  tags = [\"blue\"]\n  check {\n    ttl = \"30s\"\n  }\n}\n");
    let o = a.cli(&["services", "register", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (st, _, body) = http("GET", &a.url("/v1/agent/checks"), None);
    assert_eq!(st, 200);
    let checks: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(checks["service:api-1"]["Type"], "ttl");
    assert_eq!(checks["service:api-1"]["Status"], "critical");
    let o = a.cli(&["services", "deregister", f.to_str().unwrap()]);
    assert_eq!(stdout(&o), "Deregistered service: api-1\n");
}

#[test]
fn version_and_unknown_flags() {
    let o = cli_at("127.0.0.1:1", &["version"], None);
    assert!(o.status.success());
    assert!(stdout(&o).starts_with("Cairn v"));
    assert!(stdout(&o).contains("1.22.0"));
    let o = cli_at("127.0.0.1:1", &["agent", "-no-such-flag"], None);
    assert_eq!(o.status.code(), Some(1));
    // No agent listening: a clear error, exit 1.
    let o = cli_at("127.0.0.1:1", &["kv", "get", "x"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("Error"), "{}", stderr(&o));
}
