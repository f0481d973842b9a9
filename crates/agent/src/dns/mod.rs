//! The DNS interface (Consul's, on `ports.dns`, UDP and TCP, domain `consul.` by default):
//!
//! - `<node>.node[.<dc>].<domain>`: the node's address (A/AAAA), its meta as TXT `key=value`.
//! - `[<tag>.]<service>.service[.<dc>].<domain>`: the addresses of the healthy instances (A/AAAA),
//!   or SRV records (port, and a target that resolves to the instance's address).
//! - `_<service>._<tag>.service[.<dc>].<domain>` (RFC 2782; `_tcp`/`_udp` mean any tag).
//! - `<query>.query[.<dc>].<domain>`: a prepared query's instances (its filters, `Near`, and its
//!   `DNS.TTL`).
//! - `<hex-ip>.addr[.<dc>].<domain>`: the address encoded in the name (SRV targets of instances
//!   registered with their own address).
//! - the domain itself: SOA and NS.
//!
//! Healthy means as Consul's DNS: an instance with any critical check (its own or its node's) is
//! left out; warning ones stay. Answers are shuffled, TTLs are 0 (Consul's defaults), a name that
//! does not exist answers NXDOMAIN with the SOA, a name outside the domain REFUSED (no recursors).
//! A UDP answer larger than the client's limit (512 bytes, or its EDNS size) is cut and has TC set,
//! so resolvers retry over TCP; Consul leaves TC off unless `dns_config.enable_truncate` is set.
//! Not yet: `dns_config` (TTLs, `only_passing`, record limits), recursors, PTR, other datacenters.
//! Reads are served from this agent's state store without a leader round trip, as Consul's DNS
//! uses stale reads by default.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, NS, SOA, SRV, TXT};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use cairn_types::structs::{ServiceEntry, HEALTH_CRITICAL};

use crate::Agent;

/// How long an idle TCP connection may stay open.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

/// The answer to one question.
#[derive(Debug, Default)]
pub struct Answer {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The SOA, in the authority section (NXDOMAIN and empty answers).
    pub soa: Vec<Record>,
}

/// What a name under the domain asks for.
#[derive(Debug, PartialEq, Eq)]
enum Lookup {
    Apex,
    Node(String),
    Service { name: String, tag: Option<String> },
    Query(String),
    Addr(IpAddr),
}

struct Names {
    domain: Name,
    datacenter: String,
    node: String,
}

impl Names {
    fn node_fqdn(&self, node: &str) -> Option<Name> {
        Name::from_ascii(format!("{node}.node.{}.{}", self.datacenter, self.domain)).ok()
    }

    fn addr_fqdn(&self, ip: IpAddr) -> Option<Name> {
        let hex: String = match ip {
            IpAddr::V4(v4) => v4.octets().iter().map(|b| format!("{b:02x}")).collect(),
            IpAddr::V6(v6) => v6.octets().iter().map(|b| format!("{b:02x}")).collect(),
        };
        Name::from_ascii(format!("{hex}.addr.{}.{}", self.datacenter, self.domain)).ok()
    }

    fn soa(&self) -> Record {
        let ns = Name::from_ascii(format!("ns.{}", self.domain)).unwrap_or_else(|_| self.domain.clone());
        let mail = Name::from_ascii(format!("hostmaster.{}", self.domain)).unwrap_or_else(|_| self.domain.clone());
        let serial =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(1);
        // Consul's defaults: refresh 1h, retry 10m, expire 24h, minimum (negative caching) 0.
        Record::from_rdata(self.domain.clone(), 0, RData::SOA(SOA::new(ns, mail, serial, 3600, 600, 86400, 0)))
    }
}

/// Parses the labels in front of the domain (lowercased, in order), or `Err` with the response
/// code for a name that cannot exist.
fn parse(labels: &[String], datacenter: &str) -> Result<Lookup, ResponseCode> {
    if labels.is_empty() {
        return Ok(Lookup::Apex);
    }
    // `<...>.<kind>` or `<...>.<kind>.<dc>`.
    let kinds = ["node", "service", "addr", "query"];
    let (kind_at, dc) = match labels.len() {
        n if kinds.contains(&labels[n - 1].as_str()) => (n - 1, None),
        n if n >= 2 && kinds.contains(&labels[n - 2].as_str()) => (n - 2, Some(labels[n - 1].as_str())),
        _ => return Err(ResponseCode::NXDomain),
    };
    if dc.is_some_and(|d| !d.eq_ignore_ascii_case(datacenter)) {
        // Other datacenters need the WAN pool to forward to.
        return Err(ResponseCode::ServFail);
    }
    let front = &labels[..kind_at];
    match (labels[kind_at].as_str(), front) {
        ("node", [node]) => Ok(Lookup::Node(node.clone())),
        ("service", [svc]) => Ok(Lookup::Service { name: svc.clone(), tag: None }),
        ("service", [a, b]) if a.starts_with('_') && b.starts_with('_') => {
            let tag = &b[1..];
            let tag = (!matches!(tag, "tcp" | "udp")).then(|| tag.to_string());
            Ok(Lookup::Service { name: a[1..].to_string(), tag })
        }
        ("service", [tag, svc]) => Ok(Lookup::Service { name: svc.clone(), tag: Some(tag.clone()) }),
        ("query", [q]) => Ok(Lookup::Query(q.clone())),
        ("addr", [hex]) => decode_addr(hex).map(Lookup::Addr).ok_or(ResponseCode::NXDomain),
        _ => Err(ResponseCode::NXDomain),
    }
}

fn decode_addr(hex: &str) -> Option<IpAddr> {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect::<Option<_>>()?;
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

fn addr_record(name: &Name, ip: IpAddr) -> Record {
    match ip {
        IpAddr::V4(v4) => Record::from_rdata(name.clone(), 0, RData::A(A(v4))),
        IpAddr::V6(v6) => Record::from_rdata(name.clone(), 0, RData::AAAA(AAAA(v6))),
    }
}

fn wants_addr(qtype: RecordType, ip: IpAddr) -> bool {
    match qtype {
        RecordType::A => ip.is_ipv4(),
        RecordType::AAAA => ip.is_ipv6(),
        RecordType::ANY => true,
        _ => false,
    }
}

/// The instances DNS returns: none with a critical check.
fn healthy(entries: Vec<ServiceEntry>) -> Vec<ServiceEntry> {
    entries.into_iter().filter(|e| e.checks.iter().all(|c| c.status != HEALTH_CRITICAL)).collect()
}

/// A/AAAA (deduplicated) or SRV records (plus their targets' addresses) for service instances.
fn instance_records(
    names: &Names,
    qname: &Name,
    qtype: RecordType,
    entries: &[ServiceEntry],
    ttl: u32,
    out: &mut Answer,
) {
    let mut seen = BTreeSet::new();
    for e in entries {
        let addr = if e.service.address.is_empty() { &e.node.address } else { &e.service.address };
        let Ok(ip) = addr.parse::<IpAddr>() else { continue };
        match qtype {
            RecordType::SRV => {
                // The target resolves to the instance's address: its node's name when the instance
                // uses the node's address, else the address encoded in a name.
                let own = !e.service.address.is_empty() && e.service.address != e.node.address;
                let target = if own { names.addr_fqdn(ip) } else { names.node_fqdn(&e.node.node) };
                let Some(target) = target else { continue };
                let srv = SRV::new(1, 1, e.service.port, target.clone());
                out.answers.push(Record::from_rdata(qname.clone(), ttl, RData::SRV(srv)));
                let mut a = addr_record(&target, ip);
                a.ttl = ttl;
                out.additionals.push(a);
            }
            _ if wants_addr(qtype, ip) && seen.insert(ip) => {
                let mut a = addr_record(qname, ip);
                a.ttl = ttl;
                out.answers.push(a);
            }
            _ => {}
        }
    }
}

/// Answers one question from the agent's current state.
pub fn resolve(agent: &Agent, qname: &Name, qtype: RecordType) -> Answer {
    let cfg = agent.config();
    let domain = cfg.domain.trim_matches('.').to_ascii_lowercase();
    let Ok(domain_name) = Name::from_ascii(format!("{domain}.")) else {
        return Answer { code: ResponseCode::ServFail, ..Answer::default() };
    };
    let names = Names { domain: domain_name, datacenter: cfg.datacenter.clone(), node: cfg.node_name.clone() };
    let q = qname.to_ascii().to_ascii_lowercase();
    let q = q.trim_end_matches('.');
    let front = if q == domain { Some("") } else { q.strip_suffix(&format!(".{domain}")) };
    let Some(front) = front else {
        // Not ours, and there are no recursors to ask.
        return Answer { code: ResponseCode::Refused, ..Answer::default() };
    };
    let labels: Vec<String> = if front.is_empty() { vec![] } else { front.split('.').map(str::to_string).collect() };
    let lookup = match parse(&labels, &cfg.datacenter) {
        Ok(l) => l,
        Err(code) => return Answer { code, soa: vec![names.soa()], ..Answer::default() },
    };
    let st = agent.server.store().snapshot();
    let mut out = Answer::default();
    match lookup {
        Lookup::Apex => match qtype {
            RecordType::SOA => out.answers.push(names.soa()),
            RecordType::NS | RecordType::ANY => {
                if let Some(ns) = names.node_fqdn(&names.node) {
                    out.answers.push(Record::from_rdata(names.domain.clone(), 0, RData::NS(NS(ns.clone()))));
                    if let Some(ip) = st.node(&names.node).and_then(|n| n.address.parse::<IpAddr>().ok()) {
                        out.additionals.push(addr_record(&ns, ip));
                    }
                }
            }
            _ => {}
        },
        Lookup::Addr(ip) => {
            if wants_addr(qtype, ip) {
                out.answers.push(addr_record(qname, ip));
            }
        }
        Lookup::Node(node) => {
            let Some(n) = st.nodes.values().find(|n| n.node.eq_ignore_ascii_case(&node)) else {
                return Answer { code: ResponseCode::NXDomain, soa: vec![names.soa()], ..Answer::default() };
            };
            if let Ok(ip) = n.address.parse::<IpAddr>() {
                if wants_addr(qtype, ip) {
                    out.answers.push(addr_record(qname, ip));
                }
            }
            if matches!(qtype, RecordType::TXT | RecordType::ANY) {
                for (k, v) in &n.meta {
                    out.answers.push(Record::from_rdata(
                        qname.clone(),
                        0,
                        RData::TXT(TXT::new(vec![format!("{k}={v}")])),
                    ));
                }
            }
        }
        Lookup::Service { name, tag } => {
            let tags: Vec<String> = tag.into_iter().collect();
            let (_, entries) = st.check_service_nodes(&name, &tags, false);
            if entries.is_empty() {
                return Answer { code: ResponseCode::NXDomain, soa: vec![names.soa()], ..Answer::default() };
            }
            let mut entries = healthy(entries);
            for i in (1..entries.len()).rev() {
                entries.swap(i, rand::random::<u64>() as usize % (i + 1));
            }
            instance_records(&names, qname, qtype, &entries, 0, &mut out);
        }
        Lookup::Query(q) => {
            let Ok(pq) = crate::http::query::resolve(&st, &q) else {
                return Answer { code: ResponseCode::NXDomain, soa: vec![names.soa()], ..Answer::default() };
            };
            let (_, mut entries) = st.check_service_nodes(&pq.service.service, &[], false);
            crate::http::query::rank(agent, &pq, &mut entries, Some(&pq.service.near));
            let ttl = cairn_types::duration::parse(&pq.dns.ttl).map_or(0, |d| d.as_secs().min(u32::MAX as u64) as u32);
            instance_records(&names, qname, qtype, &entries, ttl, &mut out);
        }
    }
    if out.answers.is_empty() {
        out.soa.push(names.soa());
    }
    out
}

/// The hickory request handler: one question per request, answered from [`resolve`].
pub struct Handler {
    agent: Weak<Agent>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.authoritative = true;
        let answer = match (self.agent.upgrade(), request.queries.queries().first()) {
            (Some(agent), Some(q)) if request.queries.queries().len() == 1 => resolve(&agent, q.name(), q.query_type()),
            (None, _) => Answer { code: ResponseCode::ServFail, ..Answer::default() },
            _ => Answer { code: ResponseCode::FormErr, ..Answer::default() },
        };
        meta.response_code = answer.code;
        let msg = MessageResponseBuilder::from_message_request(request).build(
            meta,
            answer.answers.iter(),
            std::iter::empty(),
            answer.soa.iter(),
            answer.additionals.iter(),
        );
        match response.send_response(msg).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(target: "agent.dns", error = %e, "failed to send a DNS response");
                let mut failed = Metadata::response_from_request(&request.metadata);
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata: failed, counts: HeaderCounts::default() })
            }
        }
    }
}

/// Binds UDP and TCP on every client address at `ports.dns` and serves until the agent shuts down.
pub async fn serve(agent: &Arc<Agent>) -> std::io::Result<Vec<SocketAddr>> {
    let cfg = agent.config();
    if cfg.ports.dns < 0 {
        return Ok(vec![]);
    }
    let mut server = hickory_server::Server::new(Handler { agent: Arc::downgrade(agent) });
    let mut bound = Vec::new();
    for ip in cfg.dns_addrs.clone().unwrap_or_else(|| cfg.client_addrs.clone()) {
        let addr = SocketAddr::new(ip, cfg.ports.dns as u16);
        let udp = tokio::net::UdpSocket::bind(addr).await?;
        let local = udp.local_addr()?;
        // The TCP listener takes the same port as UDP (which matters when the port was 0).
        let tcp = tokio::net::TcpListener::bind(local).await?;
        server.register_socket(udp);
        server.register_listener(tcp, TCP_TIMEOUT, 64);
        bound.push(local);
    }
    let me = agent.clone();
    tokio::spawn(async move {
        me.shutting_down().await;
        let _ = server.shutdown_gracefully().await;
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(s: &str) -> Vec<String> {
        if s.is_empty() {
            return vec![];
        }
        s.split('.').map(str::to_string).collect()
    }

    #[test]
    fn names_parse_as_consul_reads_them() {
        let svc = |n: &str, t: Option<&str>| Ok(Lookup::Service { name: n.into(), tag: t.map(String::from) });
        assert_eq!(parse(&l(""), "dc1"), Ok(Lookup::Apex));
        assert_eq!(parse(&l("web.service"), "dc1"), svc("web", None));
        assert_eq!(parse(&l("web.service.dc1"), "dc1"), svc("web", None));
        assert_eq!(parse(&l("v1.web.service"), "dc1"), svc("web", Some("v1")));
        assert_eq!(parse(&l("_web._tcp.service"), "dc1"), svc("web", None));
        assert_eq!(parse(&l("_web._v1.service.dc1"), "dc1"), svc("web", Some("v1")));
        assert_eq!(parse(&l("n1.node"), "dc1"), Ok(Lookup::Node("n1".into())));
        assert_eq!(parse(&l("db-fast.query.dc1"), "dc1"), Ok(Lookup::Query("db-fast".into())));
        assert_eq!(parse(&l("7f000001.addr"), "dc1"), Ok(Lookup::Addr("127.0.0.1".parse().unwrap())));
        assert_eq!(
            parse(&l("20010db8000000000000000000000001.addr.dc1"), "dc1"),
            Ok(Lookup::Addr("2001:db8::1".parse().unwrap()))
        );
        assert_eq!(parse(&l("web.service.dc2"), "dc1"), Err(ResponseCode::ServFail));
        assert_eq!(parse(&l("a.b.web.service"), "dc1"), Err(ResponseCode::NXDomain));
        assert_eq!(parse(&l("nothing"), "dc1"), Err(ResponseCode::NXDomain));
        assert_eq!(parse(&l("zz.addr"), "dc1"), Err(ResponseCode::NXDomain));
    }

    #[test]
    fn addr_names_round_trip() {
        let names = Names { domain: Name::from_ascii("consul.").unwrap(), datacenter: "dc1".into(), node: "n".into() };
        for ip in ["10.1.2.3", "2001:db8::7"] {
            let ip: IpAddr = ip.parse().unwrap();
            let name = names.addr_fqdn(ip).unwrap().to_ascii();
            let hex = name.split('.').next().unwrap();
            assert_eq!(decode_addr(hex), Some(ip));
        }
    }
}
