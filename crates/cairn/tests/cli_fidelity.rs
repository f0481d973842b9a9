//! The CLI driven as Consul's documentation shows it (issue 7, E): Go's flag parsing, the kv, watch,
//! members, version, catalog, services and maint commands' flags, messages and exit codes.

use std::time::Duration;

use crate::harness::*;

fn code(o: &std::process::Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

#[test]
fn go_flag_parsing_everywhere() {
    let a = Agent::dev(&[]);
    // Values that begin with a dash are values.
    for v in ["-foo", "-Xmx512m", "--"] {
        let o = a.cli(&["kv", "put", "dash/val", v]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let o = a.cli(&["kv", "get", "dash/val"]);
        assert_eq!(stdout(&o), format!("{v}\n"));
    }
    // Booleans with values, flags with = or a separate value.
    assert_eq!(code(&a.cli(&["kv", "get", "-stale=true", "dash/val"])), 0);
    let o = a.cli(&["kv", "get", "-recurse=false", "dash/val"]);
    assert_eq!((code(&o), stdout(&o)), (0, "--\n".to_string()));
    let o = a.cli(&["kv", "put", "-flags", "42", "f/k", "v"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&a.cli(&["kv", "get", "-detailed", "f/k"])).contains("Flags            42\n"));
    // Flags stop at the first argument.
    let o = a.cli(&["kv", "get", "dash/val", "-recurse"]);
    assert_ne!(code(&o), 0);
    // Unknown flags and commands.
    let o = a.cli(&["kv", "get", "-x", "k"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).starts_with("flag provided but not defined: -x\n"), "{}", stderr(&o));
    let o = a.cli(&["frobnicate"]);
    assert_eq!(code(&o), 127);
    let o = a.cli(&["kv", "put", "k", "-h"]);
    assert_eq!(code(&o), 0, "help anywhere");
    let o = a.cli(&["watch", "-type=key", "-key=k", "-bogus", "true"]);
    assert_eq!(code(&o), 1, "an unknown flag is an error, not the handler");
    assert!(stderr(&o).contains("flag provided but not defined: -bogus"));
    let o = a.cli(&["version", "-format=json"]);
    assert_eq!(code(&o), 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["Version"].is_string() && v["RPC"]["Max"] == 3, "{v}");
    assert!(stdout(&o).contains("\n   \"Version\""), "three-space indent: {}", stdout(&o));
    assert_eq!(code(&a.cli(&["version", "-format=xml"])), 1);
}

#[test]
fn kv_flags_as_consul_documents_them() {
    let a = Agent::dev(&[]);
    let o = a.cli(&["kv", "put", "-cas", "k", "v"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("Must specify -modify-index with -cas!"), "{}", stderr(&o));
    let o = a.cli(&["kv", "put", "-acquire", "k", "v"]);
    assert!(stderr(&o).contains("Missing -session (required with -acquire and -release)"), "{}", stderr(&o));
    let (_, _, b) = http("PUT", &a.url("/v1/session/create"), Some(b"{}"));
    let sid = serde_json::from_slice::<serde_json::Value>(&b).unwrap()["ID"].as_str().unwrap().to_string();
    let o = a.cli(&["kv", "put", "-acquire", &format!("-session={sid}"), "lk", "held"]);
    assert_eq!((code(&o), stdout(&o)), (0, "Success! Lock acquired on: lk\n".to_string()), "{}", stderr(&o));
    let (_, _, b) = http("GET", &a.url("/v1/kv/lk"), None);
    assert!(String::from_utf8_lossy(&b).contains(&sid));
    let o = a.cli(&["kv", "put", "-release", "-session", &sid, "lk", "free"]);
    assert_eq!((code(&o), stdout(&o)), (0, "Success! Lock released on: lk\n".to_string()), "{}", stderr(&o));

    let o = a.cli(&["kv", "delete", "-modify-index=3", "lk"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("Cannot specify -modify-index without -cas!"), "{}", stderr(&o));
    let o = a.cli(&["kv", "delete", "-cas", "-recurse", "-modify-index=3", "lk"]);
    assert!(stderr(&o).contains("Cannot specify both -cas and -recurse!"), "{}", stderr(&o));
    let o = a.cli(&["kv", "import"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("Missing DATA argument"), "{}", stderr(&o));

    for k in ["p/a/1", "p/a/2", "p/b"] {
        assert_eq!(code(&a.cli(&["kv", "put", k, "x"])), 0);
    }
    let o = a.cli(&["kv", "get", "-keys", "p/"]);
    assert_eq!(stdout(&o), "p/a/\np/b\n");
    let o = a.cli(&["kv", "get", "-recurse", "-keys", "p/"]);
    assert_eq!(stdout(&o), "p/a/1\np/a/2\np/b\n");
    let o = a.cli(&["kv", "get", "-recurse", "-keys", "-separator=/", "p/"]);
    assert_eq!(stdout(&o), "p/a/\np/b\n", "-separator is honoured with -recurse");
    // -detailed pads as Go's tabwriter does (longest label + 6).
    let o = a.cli(&["kv", "get", "-detailed", "p/b"]);
    let t = stdout(&o);
    assert!(t.contains("\nKey              p/b\n") && t.contains("\nSession          -\n"), "{t}");
    assert!(t.ends_with("Value            x\n"), "{t}");
}

#[test]
fn watch_members_catalog_services_and_maint() {
    let a = Agent::dev(&[]);
    // A handler that fails stops the watch with exit 1.
    let o = a.cli(&["watch", "-type=key", "-key=w", "exit 3"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("Error executing handler: exit status 3"), "{}", stderr(&o));
    let o = a.cli(&["watch", "-type=service", "-service=x", "-passingonly", "true"]);
    assert_eq!(code(&o), 0, "a string flag in Consul: {}", stderr(&o));

    // members -status is a regular expression.
    let o = a.cli(&["members", "-status=al.*"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("e2e"));
    let o = a.cli(&["members", "-status=left|failed"]);
    assert_eq!((code(&o), stdout(&o)), (2, String::new()));
    let o = a.cli(&["members", "-status=["]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("Failed to compile status regexp"), "{}", stderr(&o));
    // info sorts its sections.
    let o = a.cli(&["info"]);
    let text = stdout(&o);
    let sections: Vec<&str> = text.lines().filter(|l| !l.starts_with('\t')).collect();
    assert!(sections.len() > 1, "{text}");
    let mut sorted = sections.clone();
    sorted.sort();
    assert_eq!(sections, sorted);

    // catalog nodes -node-meta and -filter=@file.
    let (st, _, _) = http(
        "PUT",
        &a.url("/v1/catalog/register"),
        Some(br#"{"Node":"m1","Address":"10.0.0.9","NodeMeta":{"rack":"r7"}}"#),
    );
    assert_eq!(st, 200);
    let o = a.cli(&["catalog", "nodes", "-node-meta", "rack=r7"]);
    assert!(stdout(&o).contains("m1") && !stdout(&o).contains("e2e"), "{}", stdout(&o));
    let dir = tempfile::tempdir().unwrap();
    let f = write_file(dir.path(), "filter", "Node == \"m1\"");
    let o = a.cli(&["catalog", "nodes", &format!("-filter=@{}", f.display())]);
    assert!(stdout(&o).contains("m1") && !stdout(&o).contains("e2e"), "{} {}", stdout(&o), stderr(&o));

    // services register: every documented file form, keys in any case; -tag adds.
    let forms = [
        ("a.json", r#"{"Service":{"Name":"web3"}}"#),
        ("b.json", r#"{"Services":[{"Name":"web4"},{"name":"web5"}]}"#),
        ("c.hcl", "service {\n  name = \"web6\"\n  tags = [\"t\"]\n}\n"),
    ];
    for (name, text) in forms {
        let p = write_file(dir.path(), name, text);
        let o = a.cli(&["services", "register", "-tag=extra", p.to_str().unwrap()]);
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
    }
    let (_, _, b) = http("GET", &a.url("/v1/agent/services"), None);
    let svcs: serde_json::Value = serde_json::from_slice(&b).unwrap();
    for s in ["web3", "web4", "web5", "web6"] {
        assert!(svcs[s]["Tags"].as_array().unwrap().contains(&serde_json::json!("extra")), "{s}: {svcs}");
    }
    assert!(svcs["web6"]["Tags"].as_array().unwrap().contains(&serde_json::json!("t")));

    // maint.
    let o = a.cli(&["maint", "-enable", "-disable"]);
    assert!(stderr(&o).contains("Only one of -enable or -disable may be provided"));
    let o = a.cli(&["maint", "-enable", "-reason=upgrade"]);
    assert_eq!(stdout(&o), "Node maintenance is now enabled\n", "{}", stderr(&o));
    let o = a.cli(&["maint", "-enable", "-service=web3"]);
    assert_eq!(stdout(&o), "Service maintenance is now enabled for \"web3\"\n", "{}", stderr(&o));
    let o = a.cli(&["maint"]);
    assert!(stdout(&o).contains("Node:\n  Name:   e2e\n  Reason: upgrade\n"), "{}", stdout(&o));
    assert!(stdout(&o).contains("Service:\n  ID:     web3\n"), "{}", stdout(&o));
    wait_for(Duration::from_secs(10), "node maintenance in the catalog", || {
        let (_, _, b) = http("GET", &a.url("/v1/health/node/e2e"), None);
        String::from_utf8_lossy(&b).contains("_node_maintenance").then_some(())
    });
    let o = a.cli(&["maint", "-disable"]);
    assert_eq!(stdout(&o), "Node maintenance is now disabled\n");

    // monitor: a bad level is refused by the agent.
    let o = a.cli(&["monitor", "-log-level=loud"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("Unknown log level: loud"), "{}", stderr(&o));
}

/// `tls ca create` and `tls cert create` write Consul's files; openssl (an independent X.509
/// implementation) verifies the chain and the server name.
#[test]
fn tls_ca_and_certs_verify_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(BIN).args(args).current_dir(dir.path()).output().expect("run cairn tls")
    };
    let o = run(&["tls", "ca", "create"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("==> Saved consul-agent-ca.pem"), "{}", stdout(&o));
    let o = run(&["tls", "ca", "create"]);
    assert_eq!(code(&o), 1, "an existing CA is not overwritten");
    let o = run(&["tls", "cert", "create", "-server", "-additional-dnsname=db.example"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("==> Saved dc1-server-consul-0.pem"), "{}", stdout(&o));
    assert_eq!(code(&run(&["tls", "cert", "create", "-client"])), 0);
    assert_eq!(code(&run(&["tls", "cert", "create"])), 1, "one of -server, -client, -cli");
    let ossl = |args: &[&str]| std::process::Command::new("openssl").args(args).current_dir(dir.path()).output();
    let Ok(o) = ossl(&[
        "verify",
        "-CAfile",
        "consul-agent-ca.pem",
        "-verify_hostname",
        "server.dc1.consul",
        "dc1-server-consul-0.pem",
    ]) else {
        panic!("openssl is needed for this test");
    };
    assert!(code(&o) == 0 && stdout(&o).contains("OK"), "{} {}", stdout(&o), stderr(&o));
    let o = ossl(&["verify", "-CAfile", "consul-agent-ca.pem", "dc1-client-consul-0.pem"]).unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = ossl(&["x509", "-in", "dc1-server-consul-0.pem", "-noout", "-ext", "subjectAltName"]).unwrap();
    for want in ["DNS:db.example", "DNS:server.dc1.consul", "DNS:localhost", "IP Address:127.0.0.1"] {
        assert!(stdout(&o).contains(want), "{want}: {}", stdout(&o));
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("consul-agent-ca-key.pem")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

/// A one-shot HTTP server on loopback: answers one request with `body` and returns the request's
/// head, so a test can see exactly what the CLI sent (the agent itself ignores tokens today).
fn capture_one(body: &'static str) -> (u16, std::thread::JoinHandle<String>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && c.read(&mut b).unwrap_or(0) == 1 {
            head.push(b[0]);
        }
        let resp = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        c.write_all(resp.as_bytes()).unwrap();
        String::from_utf8_lossy(&head).into_owned()
    });
    (port, h)
}

const KV_FOO: &str = r#"[{"Key":"foo","Value":"YmFy","Flags":0,"LockIndex":0,"CreateIndex":1,"ModifyIndex":1}]"#;

fn cli_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = std::process::Command::new(BIN);
    c.args(args).env_remove("CONSUL_HTTP_TOKEN").env_remove("CONSUL_HTTP_ADDR");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn client_settings_tokens_auth_and_unix_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let tf = write_file(dir.path(), "token", "file-token\n");
    // -token-file wins over -token; the env var is read when the flag is not given.
    let (port, h) = capture_one(KV_FOO);
    let addr = format!("127.0.0.1:{port}");
    let o = cli_env(
        &[
            "kv",
            "get",
            &format!("-http-addr={addr}"),
            "-token=flag-token",
            &format!("-token-file={}", tf.display()),
            "foo",
        ],
        &[],
    );
    assert_eq!(stdout(&o), "bar\n", "{}", stderr(&o));
    assert!(h.join().unwrap().to_ascii_lowercase().contains("x-consul-token: file-token"));
    let (port, h) = capture_one(KV_FOO);
    let o = cli_env(
        &["kv", "get", "foo"],
        &[
            ("CONSUL_HTTP_ADDR", &format!("http://127.0.0.1:{port}")),
            ("CONSUL_HTTP_TOKEN_FILE", tf.to_str().unwrap()),
            ("CONSUL_HTTP_AUTH", "alice:s3cret"),
        ],
    );
    assert_eq!(stdout(&o), "bar\n", "{}", stderr(&o));
    let head = h.join().unwrap().to_ascii_lowercase();
    assert!(head.contains("x-consul-token: file-token"), "{head}");
    // base64("alice:s3cret")
    assert!(head.contains("authorization: basic ywxpy2u6cznjcmv0"), "{head}");
    let o = cli_env(&["kv", "get", "foo"], &[("CONSUL_HTTP_ADDR", "ftp://x")]);
    assert!(stderr(&o).contains("Unknown protocol scheme: ftp"), "{}", stderr(&o));

    // unix:// addresses: through a socket that forwards to a real agent.
    let a = Agent::dev(&[]);
    assert_eq!(code(&a.cli(&["kv", "put", "via/unix", "yes"])), 0);
    let sock = dir.path().join("agent.sock");
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let agent_addr = a.addr();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let t = std::net::TcpStream::connect(&agent_addr).unwrap();
            let (mut from_client, mut to_agent) = (c.try_clone().unwrap(), t.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut from_client, &mut to_agent));
            let (mut to_client, mut from_agent) = (c, t);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_agent, &mut to_client);
                let _ = to_client.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    let o = cli_env(&["kv", "get", "via/unix"], &[("CONSUL_HTTP_ADDR", &format!("unix://{}", sock.display()))]);
    assert_eq!(stdout(&o), "yes\n", "{}", stderr(&o));
}

/// HTTPS to openssl's own server (`s_server -WWW` serves files), with the CA, a client certificate
/// it demands, and the server name the certificate must match.
#[test]
fn client_tls_settings_against_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| std::process::Command::new(BIN).args(args).current_dir(dir.path()).output().unwrap();
    assert_eq!(code(&run(&["tls", "ca", "create"])), 0);
    assert_eq!(code(&run(&["tls", "cert", "create", "-server"])), 0);
    assert_eq!(code(&run(&["tls", "cert", "create", "-cli"])), 0);
    std::fs::create_dir_all(dir.path().join("v1/kv")).unwrap();
    std::fs::write(dir.path().join("v1/kv/foo"), KV_FOO).unwrap();
    let port = free_port();
    let mut server = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-WWW", "-accept", &port.to_string(), "-cert", "dc1-server-consul-0.pem"])
        .args(["-key", "dc1-server-consul-0-key.pem", "-CAfile", "consul-agent-ca.pem", "-Verify", "1"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl is needed for this test");
    wait_for(Duration::from_secs(10), "openssl s_server to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let p = |f: &str| dir.path().join(f).display().to_string();
    let ca = p("consul-agent-ca.pem");
    let (cert, key) = (p("dc1-cli-consul-0.pem"), p("dc1-cli-consul-0-key.pem"));
    let addr = format!("127.0.0.1:{port}");
    // CONSUL_HTTP_SSL makes it https; the CA verifies the server; the client certificate is sent.
    let env = [
        ("CONSUL_HTTP_ADDR", addr.as_str()),
        ("CONSUL_HTTP_SSL", "true"),
        ("CONSUL_CACERT", ca.as_str()),
        ("CONSUL_CLIENT_CERT", cert.as_str()),
        ("CONSUL_CLIENT_KEY", key.as_str()),
    ];
    let o = cli_env(&["kv", "get", "foo"], &env);
    assert_eq!(stdout(&o), "bar\n", "{}", stderr(&o));
    // The same with flags, and the certificate's own name.
    let o = cli_env(
        &[
            "kv",
            "get",
            &format!("-http-addr=https://{addr}"),
            &format!("-ca-file={ca}"),
            &format!("-client-cert={cert}"),
            &format!("-client-key={key}"),
            "-tls-server-name=server.dc1.consul",
            "foo",
        ],
        &[],
    );
    assert_eq!(stdout(&o), "bar\n", "{}", stderr(&o));
    // A name the certificate does not hold, no client certificate, or no CA: refused.
    let o = cli_env(&["kv", "get", "-tls-server-name=other.example", "foo"], &env);
    assert_ne!(code(&o), 0);
    let o = cli_env(&["kv", "get", "foo"], &env[..3]);
    assert_ne!(code(&o), 0, "the server demands a client certificate");
    let o = cli_env(&["kv", "get", "foo"], &[env[0], env[1]]);
    assert_ne!(code(&o), 0, "an unknown CA is not trusted");
    let o = cli_env(&["kv", "get", "foo"], &[env[0], env[1], env[3]]);
    assert!(stderr(&o).contains("both client cert and client key must be provided"), "{}", stderr(&o));
    let _ = server.kill();
    let _ = server.wait();
}
