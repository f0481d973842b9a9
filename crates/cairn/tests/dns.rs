//! The DNS interface over real UDP and TCP: service, tag, RFC 2782, node and addr lookups, health
//! filtering, prepared queries, NXDOMAIN/REFUSED, the SOA, and `-dns-port=-1`.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::json;

use crate::harness::*;

fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    query_edns(name, qtype, None)
}

fn query_edns(name: &str, qtype: RecordType, edns_size: Option<u16>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.add_query(hickory_proto::op::Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns_size {
        let mut e = hickory_proto::op::Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn udp_edns(port: u16, name: &str, qtype: RecordType, size: u16) -> Message {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.send_to(&query_edns(name, qtype, Some(size)), ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 65535];
    let n = s.recv(&mut buf).unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

fn udp(port: u16, name: &str, qtype: RecordType) -> Message {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.send_to(&query(name, qtype), ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.metadata.id, 4242);
    m
}

fn tcp(port: u16, name: &str, qtype: RecordType) -> Message {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let q = query(name, qtype);
    s.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
    s.write_all(&q).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).unwrap();
    Message::from_vec(&buf).unwrap()
}

fn ips(m: &Message) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn register(a: &Agent, body: serde_json::Value) {
    let (st, _, b) = http("PUT", &a.url("/v1/catalog/register"), Some(body.to_string().as_bytes()));
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
}

#[test]
fn services_nodes_and_errors_over_udp_and_tcp() {
    let port = free_port();
    let a = Agent::dev(&[&format!("-dns-port={port}")]);
    let check = |status: &str| json!({"CheckID": "c", "Name": "c", "Status": status, "ServiceID": "web"});
    register(
        &a,
        json!({"Node": "n-a", "Address": "10.0.0.1", "NodeMeta": {"rack": "r1"},
        "Service": {"ID": "web", "Service": "web", "Port": 8080, "Tags": ["v1"]}, "Check": check("passing")}),
    );
    register(
        &a,
        json!({"Node": "n-b", "Address": "10.0.0.2",
        "Service": {"ID": "web", "Service": "web", "Port": 8081, "Tags": ["v2"], "Address": "10.9.9.9"}, "Check": check("warning")}),
    );
    register(
        &a,
        json!({"Node": "n-c", "Address": "10.0.0.3",
        "Service": {"ID": "web", "Service": "web", "Port": 8082, "Tags": ["v1"]}, "Check": check("critical")}),
    );
    register(&a, json!({"Node": "n-d", "Address": "2001:db8::4", "Service": {"Service": "v6", "Port": 1}}));

    // Critical instances are left out, warning ones stay; a service address wins over the node's.
    let m = udp(port, "web.service.consul", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    let want: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "10.9.9.9".parse().unwrap()];
    assert_eq!(ips(&m), want);
    assert!(m.answers.iter().all(|r| r.ttl == 0));
    assert_eq!(ips(&tcp(port, "web.service.dc1.consul", RecordType::A)), want, "over TCP, with the datacenter");
    assert_eq!(ips(&udp(port, "v1.web.service.consul", RecordType::A)), vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(ips(&udp(port, "v6.service.consul", RecordType::AAAA)), vec!["2001:db8::4".parse::<IpAddr>().unwrap()]);
    assert!(ips(&udp(port, "v6.service.consul", RecordType::A)).is_empty());

    // SRV: ports, and targets that resolve to each instance's address.
    let m = udp(port, "_web._tcp.service.consul", RecordType::SRV);
    let mut srv: Vec<(u16, String)> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((s.port, s.target.to_ascii())),
            _ => None,
        })
        .collect();
    srv.sort();
    assert_eq!(srv, [(8080, "n-a.node.dc1.consul.".to_string()), (8081, "0a090909.addr.dc1.consul.".to_string())]);
    let addrs = m.additionals.iter().filter(|r| matches!(r.data, RData::A(_))).count();
    assert_eq!(addrs, 2, "the targets' addresses ride along");
    // And node meta as TXT for the node target (Consul's enable_additional_node_meta_txt).
    let txt: Vec<String> =
        m.additionals.iter().filter(|r| r.record_type() == RecordType::TXT).map(|r| r.data.to_string()).collect();
    assert!(txt.iter().any(|t| t.contains("rack=r1")), "{:?}", m.additionals);
    assert_eq!(ips(&udp(port, "0a090909.addr.dc1.consul", RecordType::A)), vec!["10.9.9.9".parse::<IpAddr>().unwrap()]);
    let m = udp(port, "_web._v2.service.consul", RecordType::SRV);
    assert_eq!(m.answers.len(), 1);

    // Nodes: address, and meta as TXT.
    assert_eq!(ips(&udp(port, "n-a.node.consul", RecordType::A)), vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
    let m = udp(port, "n-a.node.dc1.consul", RecordType::TXT);
    let txt: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    assert!(txt.iter().any(|t| t.contains("rack=r1")), "{txt:?}");
    assert_eq!(ips(&udp(port, "e2e.node.consul", RecordType::A)), vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);

    // Many instances: a UDP client without EDNS gets `dns_config.udp_answer_limit` (3) of them and
    // no TC, as Consul; TCP answers all of them.
    for i in 0..60 {
        register(
            &a,
            json!({"Node": format!("m-{i}"), "Address": format!("10.1.0.{i}"), "Service": {"Service": "many", "Port": 1}}),
        );
    }
    let m = udp(port, "many.service.consul", RecordType::A);
    assert_eq!(m.answers.len(), 3);
    assert!(!m.metadata.truncation);
    // A client that advertises a larger EDNS size gets everything over UDP.
    let m = udp_edns(port, "many.service.consul", RecordType::A, 4096);
    assert_eq!(m.answers.len(), 60);
    assert!(!m.metadata.truncation);
    assert!(m.edns.is_some(), "EDNS is answered with EDNS");
    assert_eq!(tcp(port, "many.service.consul", RecordType::A).answers.len(), 60);

    // Prepared queries, with their TTL.
    let q = json!({"Name": "web-v1", "Service": {"Service": "web", "Tags": ["v1"]}, "DNS": {"TTL": "30s"}});
    let (st, _, _) = http("POST", &a.url("/v1/query"), Some(q.to_string().as_bytes()));
    assert_eq!(st, 200);
    let m = udp(port, "web-v1.query.consul", RecordType::A);
    assert_eq!(ips(&m), vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
    assert!(m.answers.iter().all(|r| r.ttl == 30));
    let m = udp(port, "web-v1.query.dc1.consul", RecordType::SRV);
    assert_eq!(m.answers.len(), 1);

    // Names in any case; a service spelled with capitals in the catalog.
    register(&a, json!({"Node": "n-e", "Address": "10.0.0.5", "Service": {"Service": "Billing", "Port": 9}}));
    assert_eq!(ips(&udp(port, "BILLING.service.Consul", RecordType::A)), vec!["10.0.0.5".parse::<IpAddr>().unwrap()]);
    assert_eq!(ips(&udp(port, "N-A.node.consul", RecordType::A)), vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
    // An instance with its own IP (even the node's) gets an `.addr` SRV target; one with a
    // hostname a CNAME, and the hostname as its target.
    register(
        &a,
        json!({"Node": "n-f", "Address": "10.0.0.6",
        "Service": {"Service": "same", "Port": 7, "Address": "10.0.0.6"}}),
    );
    let m = udp(port, "same.service.consul", RecordType::SRV);
    assert!(m.answers.iter().any(|r| r.data.to_string().contains("0a000006.addr.dc1.consul.")), "{:?}", m.answers);
    register(
        &a,
        json!({"Node": "n-g", "Address": "10.0.0.7",
        "Service": {"Service": "ext", "Port": 443, "Address": "api.example.com"}}),
    );
    let m = udp(port, "ext.service.consul", RecordType::A);
    assert_eq!(m.answers.first().map(|r| r.record_type()), Some(RecordType::CNAME));
    assert!(m.answers[0].data.to_string().contains("api.example.com"));
    let m = udp(port, "ext.service.consul", RecordType::SRV);
    assert!(m.answers[0].data.to_string().contains("api.example.com."), "{:?}", m.answers);
    // A service whose every instance is critical does not resolve.
    register(
        &a,
        json!({"Node": "n-h", "Address": "10.0.0.8", "Service": {"ID": "down", "Service": "down", "Port": 1},
        "Check": {"CheckID": "d", "Name": "d", "Status": "critical", "ServiceID": "down"}}),
    );
    assert_eq!(udp(port, "down.service.consul", RecordType::A).metadata.response_code, ResponseCode::NXDomain);
    // SOA for any name in the domain; NS names the servers; the apex has no address.
    assert_eq!(udp(port, "web.service.consul", RecordType::SOA).answers[0].record_type(), RecordType::SOA);
    let m = udp(port, "consul", RecordType::NS);
    assert!(m.answers[0].data.to_string().contains("e2e.node.dc1.consul."), "{:?}", m.answers);
    assert_eq!(udp(port, "consul", RecordType::A).metadata.response_code, ResponseCode::NXDomain);

    // What does not exist, and what is not ours.
    for name in
        ["nope.service.consul", "nope.node.consul", "a.b.web.service.consul", "web.nothing.consul", "nope.query.consul"]
    {
        let m = udp(port, name, RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(matches!(m.authorities.first().map(|r| r.record_type()), Some(RecordType::SOA)), "{name}: SOA");
    }
    assert_eq!(udp(port, "web.service.dc9.consul", RecordType::A).metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(udp(port, "example.com", RecordType::A).metadata.response_code, ResponseCode::Refused);
    let m = udp(port, "consul", RecordType::SOA);
    assert_eq!(m.answers.first().map(|r| r.record_type()), Some(RecordType::SOA));
    let m = udp(port, "consul", RecordType::NS);
    assert_eq!(m.answers.first().map(|r| r.record_type()), Some(RecordType::NS));

    // Health changes show at once: the warning instance turns critical and drops out.
    register(
        &a,
        json!({"Node": "n-b", "Address": "10.0.0.2",
        "Service": {"ID": "web", "Service": "web", "Port": 8081, "Address": "10.9.9.9"}, "Check": check("critical")}),
    );
    assert_eq!(ips(&udp(port, "web.service.consul", RecordType::A)), vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
    // Garbage on the socket gets no answer and breaks nothing.
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(b"\x00\x01garbage", ("127.0.0.1", port)).unwrap();
    assert_eq!(udp(port, "n-a.node.consul", RecordType::A).answers.len(), 1);
}

/// The raw bytes of an answer.
fn udp_raw(port: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.send_to(&query(name, qtype), ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).unwrap();
    buf[..n].to_vec()
}

/// How often `name` is spelled out in full (label by label) in `bytes`: once per name when names
/// are not compressed, only in the question when they are.
fn spelled_out(bytes: &[u8], name: &str) -> usize {
    let mut wire = Vec::new();
    for l in name.split('.') {
        wire.push(l.len() as u8);
        wire.extend_from_slice(l.as_bytes());
    }
    wire.push(0);
    bytes.windows(wire.len()).filter(|w| *w == wire.as_slice()).count()
}

fn send_udp(port: u16, msg: &Message) -> Message {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.send_to(&msg.to_vec().unwrap(), ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 65535];
    let n = s.recv(&mut buf).unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

#[test]
fn dns_config_ptr_opcodes_and_recursors() {
    // The upstream resolver, on loopback: another agent, authoritative for `upstream.`.
    let up_port = free_port();
    let up = Agent::dev(&[&format!("-dns-port={up_port}"), "-domain=upstream"]);
    register(&up, json!({"Node": "far", "Address": "10.7.7.7", "Service": {"Service": "ext", "Port": 1}}));
    let dead = free_port();
    let port = free_port();
    let cfg = format!(
        r#"dns_config {{
  udp_answer_limit = 2
  a_record_limit = 4
  enable_truncate = true
  only_passing = true
  node_ttl = "7s"
  service_ttl = {{ "*" = "5s", "db*" = "9s" }}
  soa {{ min_ttl = 42 }}
  recursor_timeout = "500ms"
  disable_compression = true
  allow_stale = false
}}
recursors = ["127.0.0.1:{dead}", "127.0.0.1:{up_port}"]"#
    );
    let a = Agent::dev(&[&format!("-dns-port={port}"), &format!("-hcl={cfg}")]);
    for i in 0..6 {
        register(
            &a,
            json!({"Node": format!("w-{i}"), "Address": format!("10.2.0.{i}"), "Service": {"Service": "web", "Port": 80}}),
        );
    }
    register(
        &a,
        json!({"Node": "d-1", "Address": "10.3.0.1", "Service": {"ID": "db", "Service": "db", "Port": 5432, "Address": "10.3.9.9"},
        "Check": {"CheckID": "c", "Name": "c", "Status": "warning", "ServiceID": "db"}}),
    );
    register(&a, json!({"Node": "d-2", "Address": "10.3.0.2", "Service": {"ID": "db", "Service": "db", "Port": 5432}}));

    // disable_compression: every answer spells out its owner name (the agent with defaults compresses).
    let raw = udp_raw(port, "web.service.consul", RecordType::A);
    assert_eq!(spelled_out(&raw, "web.service.consul"), 3, "the question and both answers");
    register(&up, json!({"Node": "far2", "Address": "10.7.7.8", "Service": {"Service": "twice", "Port": 1}}));
    register(&up, json!({"Node": "far3", "Address": "10.7.7.9", "Service": {"Service": "twice", "Port": 1}}));
    let raw = udp_raw(up_port, "twice.service.upstream", RecordType::A);
    assert_eq!(Message::from_vec(&raw).unwrap().answers.len(), 2);
    // The question is copied as it came; the first answer spells the name, the second points to it.
    assert_eq!(spelled_out(&raw, "twice.service.upstream"), 2, "compressed by default");

    // udp_answer_limit with TC (enable_truncate), a_record_limit over TCP, the TTLs.
    let m = udp(port, "web.service.consul", RecordType::A);
    assert_eq!((m.answers.len(), m.metadata.truncation), (2, true));
    assert!(m.answers.iter().all(|r| r.ttl == 5), "{:?}", m.answers);
    assert_eq!(tcp(port, "web.service.consul", RecordType::A).answers.len(), 4);
    assert_eq!(udp_edns(port, "web.service.consul", RecordType::A, 4096).answers.len(), 4);
    let m = udp(port, "db.service.consul", RecordType::A);
    assert_eq!(ips(&m), vec!["10.3.0.2".parse::<IpAddr>().unwrap()], "only_passing drops the warning instance");
    assert_eq!(m.answers[0].ttl, 9, "db* wins over *");
    assert_eq!(udp(port, "w-1.node.consul", RecordType::A).answers[0].ttl, 7);
    let m = udp(port, "nope.node.consul", RecordType::A);
    assert_eq!(m.authorities[0].ttl, 42, "SOA from dns_config.soa");
    assert!(m.metadata.recursion_available, "RA with recursors");

    // Reverse lookups: a node, a service address, nothing.
    let ptr = |name: &str| udp(port, name, RecordType::PTR);
    let m = ptr("1.0.2.10.in-addr.arpa");
    assert_eq!(m.answers[0].data.to_string(), "w-1.node.dc1.consul.");
    let m = ptr("9.9.3.10.in-addr.arpa");
    assert_eq!(m.answers[0].data.to_string(), "db.service.dc1.consul.");
    assert_eq!(ptr("9.9.9.9.in-addr.arpa").metadata.response_code, ResponseCode::NXDomain);
    register(&a, json!({"Node": "six", "Address": "2001:db8::1"}));
    let v6: String =
        "2001:0db8:0000:0000:0000:0000:0000:0001".replace(':', "").chars().rev().map(|c| format!("{c}.")).collect();
    assert_eq!(ptr(&format!("{v6}ip6.arpa")).answers[0].data.to_string(), "six.node.dc1.consul.");

    // Other opcodes: NOTIMP. EDNS version 1: BADVERS.
    let mut m = Message::from_vec(&query("web.service.consul", RecordType::A)).unwrap();
    m.metadata.op_code = hickory_proto::op::OpCode::Update;
    assert_eq!(send_udp(port, &m).metadata.response_code, ResponseCode::NotImp);
    let mut m = Message::from_vec(&query("web.service.consul", RecordType::A)).unwrap();
    let mut e = hickory_proto::op::Edns::new();
    e.set_version(1);
    m.set_edns(e);
    // 16 is BADVERS in an OPT context (hickory decodes the number as BADSIG, its TSIG twin).
    assert_eq!(u16::from(send_udp(port, &m).metadata.response_code), 16, "BADVERS");

    // Names outside the domain go to the recursors (the dead one first, then the live one).
    let m = udp(port, "ext.service.upstream", RecordType::A);
    assert_eq!(ips(&m), vec!["10.7.7.7".parse::<IpAddr>().unwrap()]);
    assert_eq!(ips(&tcp(port, "ext.service.upstream", RecordType::A)), vec!["10.7.7.7".parse::<IpAddr>().unwrap()]);
    assert_eq!(udp(port, "nope.service.upstream", RecordType::A).metadata.response_code, ResponseCode::NXDomain);
    // With no recursor answering: SERVFAIL.
    drop(up);
    assert_eq!(udp(port, "ext.service.upstream", RecordType::A).metadata.response_code, ResponseCode::ServFail);
}

fn dig(port: u16, args: &[&str]) -> String {
    let o = std::process::Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+time=5", "+tries=1"])
        .args(args)
        .output()
        .expect("dig (bind9-dnsutils) is needed for this test");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `dig`, an independent resolver library, reads what the agent answers: the UDP answer limit
/// without EDNS (the issue's report: 10 instances gave 10 records), uncompressed answers, PTR.
#[test]
fn dig_reads_the_answers() {
    let port = free_port();
    let a = Agent::dev(&[&format!("-dns-port={port}"), "-hcl=dns_config { disable_compression = true }"]);
    for i in 0..10 {
        register(
            &a,
            json!({"Node": format!("h-{i}"), "Address": format!("10.4.0.{i}"), "Service": {"Service": "ten", "Port": 1}}),
        );
    }
    let short = |args: &[&str]| dig(port, args).lines().filter(|l| !l.is_empty()).count();
    assert_eq!(short(&["+notcp", "+noedns", "+short", "ten.service.consul"]), 3);
    assert_eq!(short(&["+tcp", "+short", "ten.service.consul"]), 10);
    let out = dig(port, &["+notcp", "+noedns", "ten.service.consul"]);
    assert!(out.contains("status: NOERROR") && !out.contains(" tc"), "no TC by default: {out}");
    let out = dig(port, &["+short", "-x", "10.4.0.7"]);
    assert_eq!(out.trim(), "h-7.node.dc1.consul.");
    let out = dig(port, &["+noedns", "+short", "_ten._tcp.service.consul", "SRV"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    // With EDNS room (dig's default), Consul applies no count limit.
    let out = dig(port, &["+short", "_ten._tcp.service.consul", "SRV"]);
    assert_eq!(out.lines().count(), 10, "{out}");
    let out = dig(port, &["example.org"]);
    assert!(out.contains("status: REFUSED"), "{out}");
}

#[test]
fn dns_port_minus_one_opens_nothing() {
    let a = Agent::dev(&["-dns-port=-1"]);
    let (_, _, b) = http("GET", &a.url("/v1/agent/self"), None);
    let me: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(me["DebugConfig"]["DNSPort"], -1);
    assert!(!a.log_text().contains("DNS interface listening"), "{}", a.log_text());
    // And with a port, the agent says where it listens.
    let port = free_port();
    let b = Agent::dev(&[&format!("-dns-port={port}")]);
    assert!(b.log_text().contains(&format!("127.0.0.1:{port}")), "{}", b.log_text());
}
