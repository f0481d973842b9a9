//! The DNS interface (Consul's, on `ports.dns`, UDP and TCP, domain `consul.` by default). Names
//! are case-insensitive; `[.<dc>]` below may also be written `.<dc>.dc`.
//!
//! - `<node>.node[.<dc>].<domain>`: the node's address (A/AAAA, or a CNAME for a hostname), its
//!   meta as TXT (`key=value`, or the bare value for `rfc1035-` keys).
//! - `[<tag>.]<service>.service[.<dc>].<domain>`: the addresses of the healthy instances (A/AAAA),
//!   or SRV records (weight from the instance's `Weights`, target the node's name, the `.addr`
//!   name of the instance's own IP, or its hostname).
//! - `_<service>._<tag>[.service][.<dc>].<domain>` (RFC 2782; `_tcp` means any tag).
//! - `<query>.query[.<dc>].<domain>`: a prepared query's instances (its filters, `Near` incl.
//!   `_ip` as the asker's address, and its `DNS.TTL`).
//! - `<hex-ip>.addr[.<dc>].<domain>`: the address encoded in the name.
//! - SOA for any name in the domain; NS: the servers (the `consul` service's nodes, up to three).
//!
//! - `<reversed-ip>.in-addr.arpa` / `.ip6.arpa` (PTR): the node with that address, else a service
//!   instance with it (`<service>.service.<dc>.<domain>`).
//!
//! Healthy means as Consul's DNS: an instance with any critical check (its own or its node's) is
//! left out; warning ones stay unless `dns_config.only_passing`; a service with none healthy does
//! not resolve. Answers are shuffled. TTLs follow `dns_config` (`node_ttl`, `service_ttl` with
//! `*` wildcards, a prepared query's `DNS.TTL`; 0 by default). A name that does not exist (or
//! another datacenter, until there is a WAN pool) answers NXDOMAIN with the SOA. A name outside
//! the domain is forwarded to `recursors` (SERVFAIL when none answers) or REFUSED without them.
//! A UDP answer to a client that gave no room (no EDNS, or 512 bytes) keeps at most
//! `udp_answer_limit` (3) records, with TC only under `enable_truncate`, as Consul; one that is
//! still too large is cut by size with TC set, so resolvers retry over TCP. Opcodes other than
//! QUERY get NOTIMP, EDNS versions other than 0 BADVERS (RFC 6891; Consul does not check).
//! Reads are served from this agent's state store (`allow_stale`, Consul's default); with
//! `allow_stale = false` only the leader answers.
//!
//! Names in answers are compressed unless `disable_compression` (see [`listen`]).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Message, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use cairn_types::rpc::{Consistency, QueryOptions, QuerySource, ReadRequest, ReadResponse};
use cairn_types::structs::{ServiceEntry, HEALTH_CRITICAL, HEALTH_PASSING};

mod listen;

use crate::config::dns::{DnsConfig, RecursorStrategy};
use crate::Agent;

/// The answer to one question.
#[derive(Debug, Default)]
pub struct Answer {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The SOA, in the authority section (NXDOMAIN and empty answers).
    pub soa: Vec<Record>,
    /// The name is outside the domain and recursors are configured: ask them.
    pub forward: bool,
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
    soa: crate::config::dns::Soa,
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
        // `dns_config.soa` (Consul's defaults: refresh 1h, retry 10m, expire 24h, minimum 0); the
        // record's own TTL is the minimum, as Consul's.
        let c = self.soa;
        let rdata = SOA::new(ns, mail, serial, c.refresh as i32, c.retry as i32, c.expire as i32, c.min_ttl);
        Record::from_rdata(self.domain.clone(), c.min_ttl, RData::SOA(rdata))
    }

    fn not_found(&self) -> Answer {
        Answer { code: ResponseCode::NXDomain, soa: vec![self.soa()], ..Answer::default() }
    }
}

/// Parses the labels in front of the domain (lowercased, in order), or `Err` with the response
/// code for a name that cannot exist.
fn parse(labels: &[String], datacenter: &str) -> Result<Lookup, ResponseCode> {
    if labels.is_empty() {
        return Ok(Lookup::Apex);
    }
    // RFC 2782 without the kind: `_<service>._<tag>[.<dc>]`.
    let underscored = |l: &[String]| l.len() == 2 && l.iter().all(|x| x.starts_with('_') && x.len() > 1);
    if underscored(labels) {
        return Ok(rfc2782(&labels[0], &labels[1]));
    }
    // `<...>.<kind>`, `<...>.<kind>.<dc>` or `<...>.<kind>.<dc>.dc`.
    let kinds = ["node", "service", "addr", "query"];
    let is_kind = |i: usize| kinds.contains(&labels[i].as_str());
    let n = labels.len();
    let (kind_at, dc) = if is_kind(n - 1) {
        (n - 1, None)
    } else if n >= 2 && is_kind(n - 2) {
        (n - 2, Some(labels[n - 1].as_str()))
    } else if n >= 3 && labels[n - 1] == "dc" && is_kind(n - 3) {
        (n - 3, Some(labels[n - 2].as_str()))
    } else {
        return Err(ResponseCode::NXDomain);
    };
    let kind = labels[kind_at].as_str();
    // Other datacenters need the WAN pool; Consul answers a datacenter it cannot reach NXDOMAIN.
    // An `.addr` name means the same address wherever it is asked.
    if kind != "addr" && dc.is_some_and(|d| !d.eq_ignore_ascii_case(datacenter)) {
        return Err(ResponseCode::NXDomain);
    }
    let front = &labels[..kind_at];
    if front.is_empty() {
        return Err(ResponseCode::NXDomain);
    }
    match kind {
        // Node and query names may contain dots.
        "node" => Ok(Lookup::Node(front.join("."))),
        "query" if underscored(front) => Ok(Lookup::Query(front[0][1..].to_string())),
        "query" => Ok(Lookup::Query(front.join("."))),
        "service" => match front {
            [svc] => Ok(Lookup::Service { name: svc.clone(), tag: None }),
            [a, b] if underscored(front) => Ok(rfc2782(a, b)),
            [tag, svc] => Ok(Lookup::Service { name: svc.clone(), tag: Some(tag.clone()) }),
            _ => Err(ResponseCode::NXDomain),
        },
        "addr" => match front {
            [hex] => decode_addr(hex).map(Lookup::Addr).ok_or(ResponseCode::NXDomain),
            _ => Err(ResponseCode::NXDomain),
        },
        _ => Err(ResponseCode::NXDomain),
    }
}

/// `_<service>._<tag>`: `_tcp` means any tag (Consul's reading; `_udp` is a tag like any other).
fn rfc2782(svc: &str, tag: &str) -> Lookup {
    let tag = &tag[1..];
    Lookup::Service { name: svc[1..].to_string(), tag: (tag != "tcp").then(|| tag.to_string()) }
}

fn decode_addr(hex: &str) -> Option<IpAddr> {
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect::<Option<_>>()?;
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?).to_canonical()),
        _ => None,
    }
}

/// An address as DNS answers it: IPv4-mapped IPv6 addresses are IPv4.
fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

fn addr_record(name: &Name, ip: IpAddr, ttl: u32) -> Record {
    match ip {
        IpAddr::V4(v4) => Record::from_rdata(name.clone(), ttl, RData::A(A(v4))),
        IpAddr::V6(v6) => Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(v6))),
    }
}

/// A registered address that is not an IP, as a DNS name (the target of a CNAME or SRV).
fn host_name(addr: &str) -> Option<Name> {
    Name::from_ascii(format!("{}.", addr.trim_end_matches('.'))).ok()
}

fn cname(qname: &Name, target: Name, ttl: u32) -> Record {
    Record::from_rdata(qname.clone(), ttl, RData::CNAME(CNAME(target)))
}

fn wants_addr(qtype: RecordType, ip: IpAddr) -> bool {
    match qtype {
        RecordType::A => ip.is_ipv4(),
        RecordType::AAAA => ip.is_ipv6(),
        RecordType::ANY => true,
        _ => false,
    }
}

/// Node meta as TXT strings, as Consul writes them: `key=value`, or the bare value for keys that
/// start with `rfc1035-`.
fn meta_txt(meta: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    meta.iter()
        .map(|(k, v)| match k.strip_prefix("rfc1035-") {
            Some(_) => v.clone(),
            None => format!("{k}={v}"),
        })
        .collect()
}

/// The instances DNS returns: none with a critical check, and with `only_passing` none with a
/// warning either.
fn healthy(entries: Vec<ServiceEntry>, only_passing: bool) -> Vec<ServiceEntry> {
    let ok = |status: &str| if only_passing { status == HEALTH_PASSING } else { status != HEALTH_CRITICAL };
    entries.into_iter().filter(|e| e.checks.iter().all(|c| ok(&c.status))).collect()
}

fn secs(d: Duration) -> u32 {
    d.as_secs().min(u32::MAX as u64) as u32
}

/// Node meta as TXT records named `owner` (Consul's additional-section TXT).
fn meta_records(owner: &Name, meta: &std::collections::BTreeMap<String, String>, ttl: u32) -> Vec<Record> {
    meta_txt(meta).into_iter().map(|t| Record::from_rdata(owner.clone(), ttl, RData::TXT(TXT::new(vec![t])))).collect()
}

/// `d.c.b.a.in-addr.arpa` or 32 reversed nibbles `.ip6.arpa` (already lowercased, no trailing
/// dot) to the address.
fn arpa_ip(name: &str) -> Option<IpAddr> {
    if let Some(v4) = name.strip_suffix(".in-addr.arpa") {
        let mut o: Vec<u8> = v4.split('.').map(|l| l.parse().ok()).collect::<Option<_>>()?;
        o.reverse();
        return Some(IpAddr::from(<[u8; 4]>::try_from(o).ok()?));
    }
    let v6 = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> =
        v6.split('.').map(|l| u8::from_str_radix(l, 16).ok().filter(|_| l.len() == 1)).collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let bytes: Vec<u8> = nibbles.rchunks(2).map(|c| (c[1] << 4) | c[0]).collect();
    Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?).to_canonical())
}

/// A reverse lookup: the node with this address, else a service instance with it.
async fn ptr(r: &Reader<'_>, names: &Names, qname: &Name, qtype: RecordType, ip: IpAddr) -> Result<Answer, Failed> {
    let nodes = expect(r.read(ReadRequest::CatalogListNodes).await?, |a| match a {
        ReadResponse::Nodes(n) => Some(n),
        _ => None,
    })?;
    let mut target = nodes.iter().find(|n| parse_ip(&n.address) == Some(ip)).and_then(|n| names.node_fqdn(&n.node));
    if target.is_none() {
        let at = ReadRequest::CatalogServiceAddress { address: ip.to_string() };
        let rows = expect(r.read(at).await?, |a| match a {
            ReadResponse::ServiceNodes(rows) => Some(rows),
            _ => None,
        })?;
        target = rows.first().and_then(|s| {
            Name::from_ascii(format!("{}.service.{}.{}", s.service_name, names.datacenter, names.domain)).ok()
        });
    }
    let Some(target) = target else { return Ok(names.not_found()) };
    let mut out = Answer::default();
    if matches!(qtype, RecordType::PTR | RecordType::ANY) {
        // Consul answers reverse lookups with a TTL of 0.
        out.answers.push(Record::from_rdata(qname.clone(), 0, RData::PTR(PTR(target))));
    } else {
        out.soa.push(names.soa());
    }
    Ok(out)
}

/// A/AAAA (deduplicated; a CNAME for a hostname address) or SRV records (plus their targets'
/// addresses) for service instances.
fn instance_records(
    names: &Names,
    qname: &Name,
    qtype: RecordType,
    entries: &[ServiceEntry],
    ttl: u32,
    meta_txt_extra: bool,
    out: &mut Answer,
) {
    let mut seen = BTreeSet::new();
    let mut seen_hosts = BTreeSet::new();
    for e in entries {
        let own = !e.service.address.is_empty();
        let addr = if own { &e.service.address } else { &e.node.address };
        let ip = parse_ip(addr);
        match qtype {
            RecordType::SRV => {
                // The target resolves to the instance's address: its node's name when the instance
                // uses the node's address, the address encoded in an `.addr` name when it has an
                // IP of its own, else its hostname.
                let target = match ip {
                    Some(ip) if own => names.addr_fqdn(ip),
                    Some(_) => names.node_fqdn(&e.node.node),
                    None => host_name(addr),
                };
                let Some(target) = target else { continue };
                let passing = e.checks.iter().all(|c| c.status == HEALTH_PASSING);
                let w = if passing { e.service.weights.passing } else { e.service.weights.warning };
                let srv = SRV::new(1, w.clamp(0, u16::MAX as i64) as u16, e.service.port, target.clone());
                out.answers.push(Record::from_rdata(qname.clone(), ttl, RData::SRV(srv)));
                if let Some(ip) = ip {
                    out.additionals.push(addr_record(&target, ip, ttl));
                }
                if meta_txt_extra && !own {
                    out.additionals.extend(meta_records(&target, &e.node.meta, ttl));
                }
            }
            RecordType::A | RecordType::AAAA | RecordType::ANY => match ip {
                Some(ip) if wants_addr(qtype, ip) && seen.insert(ip) => out.answers.push(addr_record(qname, ip, ttl)),
                Some(_) => {}
                None => {
                    if let Some(h) = host_name(addr).filter(|h| seen_hosts.insert(h.to_ascii())) {
                        out.answers.push(cname(qname, h, ttl));
                    }
                }
            },
            _ => {}
        }
    }
}

/// A lookup that could not be answered (no server, no leader): SERVFAIL, as Consul's.
#[derive(Debug)]
pub struct Failed;

/// How DNS reads the catalog: through the agent's RPC seam. Stale reads are fine while the server
/// heard from the leader within `dns_config.max_stale`; otherwise (or with `allow_stale = false`)
/// the server first catches up to the leader's read point, as Consul retries consistently.
struct Reader<'a> {
    agent: &'a Agent,
    opts: QueryOptions,
}

impl Reader<'_> {
    async fn read(&self, req: ReadRequest) -> Result<ReadResponse, Failed> {
        let rpc = self.agent.rpc().map_err(|_| Failed)?;
        rpc.read(req, self.opts.clone()).await.map(|(_, r)| r).map_err(|_| Failed)
    }

    /// [`Self::read`], where "not found" is an answer (`None`) rather than a failure.
    async fn read_found(&self, req: ReadRequest) -> Result<Option<ReadResponse>, Failed> {
        let rpc = self.agent.rpc().map_err(|_| Failed)?;
        match rpc.read(req, self.opts.clone()).await {
            Ok((_, r)) => Ok(Some(r)),
            Err(cairn_cluster::Error::Rejected(cairn_types::Error::NotFound(_))) => Ok(None),
            Err(_) => Err(Failed),
        }
    }
}

fn expect<T>(r: ReadResponse, f: impl FnOnce(ReadResponse) -> Option<T>) -> Result<T, Failed> {
    f(r).ok_or(Failed)
}

fn entries(r: ReadResponse) -> Option<Vec<ServiceEntry>> {
    match r {
        ReadResponse::ServiceEntries(e) => Some(e),
        _ => None,
    }
}

/// Answers one question. `src` is the asker's address (for a prepared query whose `Near` is `_ip`).
pub async fn resolve(agent: &Agent, qname: &Name, qtype: RecordType, src: IpAddr) -> Answer {
    resolve_from(agent, qname, qtype, src)
        .await
        .unwrap_or_else(|Failed| Answer { code: ResponseCode::ServFail, ..Answer::default() })
}

async fn resolve_from(agent: &Agent, qname: &Name, qtype: RecordType, src: IpAddr) -> Result<Answer, Failed> {
    let cfg = agent.config();
    let domain = cfg.domain.trim_matches('.').to_ascii_lowercase();
    let Ok(domain_name) = Name::from_ascii(format!("{domain}.")) else { return Err(Failed) };
    let dns = &cfg.dns;
    let names = Names { domain: domain_name, datacenter: cfg.datacenter.clone(), soa: dns.soa };
    let q = qname.to_ascii().to_ascii_lowercase();
    let q = q.trim_end_matches('.');
    let front = if q == domain { Some("") } else { q.strip_suffix(&format!(".{domain}")) };
    if front.is_none() && !q.ends_with(".arpa") {
        // Not ours: the recursors' to answer, or no one's.
        return Ok(match dns.recursors.is_empty() {
            true => Answer { code: ResponseCode::Refused, ..Answer::default() },
            false => Answer { forward: true, ..Answer::default() },
        });
    }
    let r = Reader {
        agent,
        opts: QueryOptions {
            // A `max_stale` of 0 allows no staleness at all: the leader's read point.
            consistency: if dns.allow_stale && !dns.max_stale.is_zero() {
                Consistency::Stale
            } else {
                Consistency::Default
            },
            max_stale: Some(dns.max_stale),
            source: QuerySource { node: cfg.node_name.clone(), ip: Some(src.to_string()) },
            ..QueryOptions::default()
        },
    };
    if q.ends_with(".arpa") {
        return match arpa_ip(q) {
            Some(ip) => ptr(&r, &names, qname, qtype, ip).await,
            None => Ok(names.not_found()),
        };
    }
    let front = front.unwrap_or_default();
    let node_ttl = secs(dns.node_ttl);
    let mut out = Answer::default();
    // SOA and NS are answered for any name in the domain.
    match qtype {
        RecordType::SOA => {
            out.answers.push(names.soa());
            return Ok(out);
        }
        RecordType::NS => {
            // The servers: the `consul` service's nodes, up to three.
            let req = ReadRequest::HealthServiceNodes { service: "consul".into(), tags: vec![], passing: false };
            let servers = expect(r.read(req).await?, entries)?;
            for e in healthy(servers, false).iter().take(3) {
                let Some(ns) = names.node_fqdn(&e.node.node) else { continue };
                out.answers.push(Record::from_rdata(names.domain.clone(), 0, RData::NS(NS(ns.clone()))));
                if let Some(ip) = parse_ip(&e.node.address) {
                    out.additionals.push(addr_record(&ns, ip, 0));
                }
            }
            return Ok(out);
        }
        _ => {}
    }
    let labels: Vec<String> = if front.is_empty() { vec![] } else { front.split('.').map(str::to_string).collect() };
    let lookup = match parse(&labels, &cfg.datacenter) {
        Ok(l) => l,
        Err(code) => return Ok(Answer { code, soa: vec![names.soa()], ..Answer::default() }),
    };
    match lookup {
        // The domain itself holds only SOA and NS.
        Lookup::Apex => return Ok(names.not_found()),
        Lookup::Addr(ip) => {
            if wants_addr(qtype, ip) {
                out.answers.push(addr_record(qname, ip, 0));
            }
        }
        Lookup::Node(node) => {
            let node_of = |a: ReadResponse| match a {
                ReadResponse::NodeServices(n) => Some(n.map(|(n, _)| n)),
                _ => None,
            };
            let mut found = expect(r.read(ReadRequest::CatalogNodeServices { node: node.clone() }).await?, node_of)?;
            if found.is_none() {
                // Node names are matched in any case.
                let nodes = expect(r.read(ReadRequest::CatalogListNodes).await?, |a| match a {
                    ReadResponse::Nodes(n) => Some(n),
                    _ => None,
                })?;
                found = nodes.into_iter().find(|n| n.node.eq_ignore_ascii_case(&node));
            }
            let Some(n) = found else { return Ok(names.not_found()) };
            match parse_ip(&n.address) {
                Some(ip) if wants_addr(qtype, ip) => out.answers.push(addr_record(qname, ip, node_ttl)),
                Some(_) => {}
                None if matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY) => {
                    if let Some(h) = host_name(&n.address) {
                        out.answers.push(cname(qname, h, node_ttl));
                    }
                }
                None => {}
            }
            // Meta as TXT: the answer to TXT and ANY, else (by default) the additional section.
            if matches!(qtype, RecordType::TXT | RecordType::ANY) {
                out.answers.extend(meta_records(qname, &n.meta, node_ttl));
            } else if dns.enable_additional_node_meta_txt && !out.answers.is_empty() {
                out.additionals.extend(meta_records(qname, &n.meta, node_ttl));
            }
        }
        Lookup::Service { name, tag } => {
            let tags: Vec<String> = tag.into_iter().collect();
            let health =
                |service: String| ReadRequest::HealthServiceNodes { service, tags: tags.clone(), passing: false };
            let mut found = expect(r.read(health(name.clone())).await?, entries)?;
            let mut name = name;
            if found.is_empty() {
                // Service names are matched in any case: find the catalog's spelling.
                let services = expect(r.read(ReadRequest::CatalogListServices).await?, |a| match a {
                    ReadResponse::Services(s) => Some(s),
                    _ => None,
                })?;
                if let Some(spelt) = services.into_keys().find(|k| k.eq_ignore_ascii_case(&name) && *k != name) {
                    found = expect(r.read(health(spelt.clone())).await?, entries)?;
                    name = spelt;
                }
            }
            let mut entries = healthy(found, dns.only_passing);
            // No healthy instance: the name does not resolve, as Consul answers it.
            if entries.is_empty() {
                return Ok(names.not_found());
            }
            for i in (1..entries.len()).rev() {
                entries.swap(i, rand::random::<u64>() as usize % (i + 1));
            }
            let ttl = secs(dns.service_ttl(&name));
            instance_records(&names, qname, qtype, &entries, ttl, dns.enable_additional_node_meta_txt, &mut out);
        }
        Lookup::Query(q) => {
            let exec = |id_or_name: String| ReadRequest::PreparedQueryExecute { id_or_name, limit: 0 };
            let executed = |a: ReadResponse| match a {
                ReadResponse::Executed(x) => Some(x),
                _ => None,
            };
            let mut found = match r.read_found(exec(q.clone())).await? {
                Some(a) => Some(expect(a, executed)?),
                None => None,
            };
            if found.is_none() {
                // Query names are matched in any case.
                let all = expect(r.read(ReadRequest::PreparedQueryList).await?, |a| match a {
                    ReadResponse::Queries(q) => Some(q),
                    _ => None,
                })?;
                if let Some(by_name) = all.iter().find(|x| !x.name.is_empty() && x.name.eq_ignore_ascii_case(&q)) {
                    if let Some(a) = r.read_found(exec(by_name.name.clone())).await? {
                        found = Some(expect(a, executed)?);
                    }
                }
            }
            let Some(ex) = found else { return Ok(names.not_found()) };
            if ex.nodes.is_empty() {
                return Ok(names.not_found());
            }
            // The query's own TTL, else the service's.
            let ttl = cairn_types::duration::parse(&ex.dns_ttl)
                .ok()
                .filter(|_| !ex.dns_ttl.is_empty())
                .unwrap_or_else(|| dns.service_ttl(&ex.service));
            instance_records(&names, qname, qtype, &ex.nodes, secs(ttl), dns.enable_additional_node_meta_txt, &mut out);
        }
    }
    // `a_record_limit`: at most that many address answers, over any transport.
    if dns.a_record_limit > 0 && matches!(qtype, RecordType::A | RecordType::AAAA) {
        out.answers.truncate(dns.a_record_limit);
    }
    if out.answers.is_empty() {
        out.soa.push(names.soa());
    }
    Ok(out)
}

/// Trims a UDP answer for a client that gave no room for more (no EDNS, or 512 bytes): at most
/// `min(8, udp_answer_limit)` answers (at least one), and only the additional records that belong
/// to what is kept. Returns whether anything was cut.
fn trim_udp(dns: &DnsConfig, a: &mut Answer) -> bool {
    let limit = dns.udp_answer_limit.clamp(1, 8);
    if a.answers.len() <= limit {
        return false;
    }
    a.answers.truncate(limit);
    let kept: BTreeSet<Name> = a
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.target.clone()),
            _ => None,
        })
        .collect();
    a.additionals.retain(|r| kept.contains(&r.name));
    true
}

/// Asks the recursors, in order (or a random one), with the client's own message; the first answer
/// that is NOERROR or NXDOMAIN is relayed as it is.
async fn recurse(dns: &DnsConfig, raw: &[u8], tcp: bool) -> Option<Message> {
    let mut order = dns.recursors.clone();
    if dns.recursor_strategy == RecursorStrategy::Random {
        for i in (1..order.len()).rev() {
            order.swap(i, rand::random::<u64>() as usize % (i + 1));
        }
    }
    for upstream in order {
        let reply = tokio::time::timeout(dns.recursor_timeout, exchange(upstream, raw, tcp)).await;
        match reply {
            Ok(Ok(m)) if matches!(m.metadata.response_code, ResponseCode::NoError | ResponseCode::NXDomain) => {
                return Some(m)
            }
            Ok(Ok(m)) => {
                tracing::debug!(target: "agent.dns", %upstream, code = ?m.metadata.response_code, "recursor refused; trying the next")
            }
            Ok(Err(e)) => tracing::debug!(target: "agent.dns", %upstream, error = %e, "recursor failed"),
            Err(_) => tracing::debug!(target: "agent.dns", %upstream, "recursor timed out"),
        }
    }
    tracing::warn!(target: "agent.dns", "all resolvers failed for question from client");
    None
}

/// One query to one upstream resolver, over UDP or TCP.
async fn exchange(upstream: SocketAddr, raw: &[u8], tcp: bool) -> std::io::Result<Message> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bad = |e: hickory_server::proto::ProtoError| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    if tcp {
        let mut s = tokio::net::TcpStream::connect(upstream).await?;
        let len = u16::try_from(raw.len()).map_err(|_| std::io::Error::other("query too long"))?;
        s.write_all(&len.to_be_bytes()).await?;
        s.write_all(raw).await?;
        let n = s.read_u16().await?;
        let mut buf = vec![0u8; n as usize];
        s.read_exact(&mut buf).await?;
        return Message::from_vec(&buf).map_err(|e| bad(e.into()));
    }
    let local: SocketAddr = if upstream.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("addr");
    let s = tokio::net::UdpSocket::bind(local).await?;
    s.connect(upstream).await?;
    s.send(raw).await?;
    let mut buf = vec![0u8; 65_535];
    let n = s.recv(&mut buf).await?;
    Message::from_vec(&buf[..n]).map_err(|e| bad(e.into()))
}

/// The hickory request handler: one question per request, answered from [`resolve`].
pub struct Handler {
    agent: Weak<Agent>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let mut meta = Metadata::response_from_request(&request.metadata);
        // Only queries are implemented (NOTIFY, UPDATE, ... are not).
        if request.metadata.op_code != OpCode::Query {
            meta.response_code = ResponseCode::NotImp;
            return send(&mut response, request, meta, None, &Answer::default()).await;
        }
        // EDNS: only version 0 exists (RFC 6891 asks for BADVERS otherwise).
        let mut edns = request.edns.as_ref().map(|e| {
            let mut r = Edns::new();
            r.set_max_payload(e.max_payload().max(512));
            r.set_version(0);
            r
        });
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            meta.response_code = ResponseCode::BADVERS;
            return send(&mut response, request, meta, edns.as_ref(), &Answer::default()).await;
        }
        let Some(agent) = self.agent.upgrade() else {
            meta.response_code = ResponseCode::ServFail;
            return send(&mut response, request, meta, None, &Answer::default()).await;
        };
        let cfg = agent.config();
        let dns = &cfg.dns;
        let udp = request.protocol() == Protocol::Udp;
        // Several questions in one message: the first is answered, as Consul does.
        let Some(q) = request.queries.queries().first() else {
            meta.response_code = ResponseCode::FormErr;
            return send(&mut response, request, meta, None, &Answer::default()).await;
        };
        let mut answer = resolve(&agent, q.name(), q.query_type(), request.src().ip()).await;
        if answer.code == ResponseCode::ServFail {
            meta.response_code = ResponseCode::ServFail;
            return send(&mut response, request, meta, None, &Answer::default()).await;
        }
        meta.recursion_available = !dns.recursors.is_empty();
        if answer.forward {
            return match recurse(dns, request.as_slice(), !udp).await {
                Some(m) => {
                    let relayed = Answer {
                        code: m.metadata.response_code,
                        answers: m.answers,
                        additionals: m.additionals,
                        soa: m.authorities,
                        forward: false,
                    };
                    let mut meta = m.metadata;
                    meta.id = request.metadata.id;
                    send(&mut response, request, meta, m.edns.as_ref().or(edns.as_ref()), &relayed).await
                }
                None => {
                    meta.response_code = ResponseCode::ServFail;
                    send(&mut response, request, meta, edns.as_ref(), &Answer::default()).await
                }
            };
        }
        meta.authoritative = answer.code != ResponseCode::Refused;
        meta.response_code = answer.code;
        // A client that gave no room gets at most `udp_answer_limit` answers (and TC only when
        // Consul's `enable_truncate` asks for it).
        if udp && edns.as_ref().is_none_or(|e| e.max_payload() <= 512) && trim_udp(dns, &mut answer) {
            meta.truncation = dns.enable_truncate;
        }
        if answer.code == ResponseCode::Refused {
            edns = None;
        }
        send(&mut response, request, meta, edns.as_ref(), &answer).await
    }
}

async fn send<R: ResponseHandler>(
    response: &mut R,
    request: &Request,
    meta: Metadata,
    edns: Option<&Edns>,
    a: &Answer,
) -> ResponseInfo {
    let msg = MessageResponseBuilder::new(&request.queries, edns).build(
        meta,
        a.answers.iter(),
        std::iter::empty(),
        a.soa.iter(),
        a.additionals.iter(),
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

/// Binds UDP and TCP on every client address at `ports.dns` and serves until the agent shuts down.
pub async fn serve(agent: &Arc<Agent>) -> std::io::Result<Vec<SocketAddr>> {
    let cfg = agent.config();
    if cfg.ports.dns < 0 {
        return Ok(vec![]);
    }
    let handler = Arc::new(Handler { agent: Arc::downgrade(agent) });
    let mut bound = Vec::new();
    for ip in cfg.dns_addrs.clone().unwrap_or_else(|| cfg.client_addrs.clone()) {
        let addr = SocketAddr::new(ip, cfg.ports.dns as u16);
        let udp = tokio::net::UdpSocket::bind(addr).await?;
        let local = udp.local_addr()?;
        // The TCP listener takes the same port as UDP (which matters when the port was 0).
        let tcp = tokio::net::TcpListener::bind(local).await?;
        listen::spawn(udp, tcp, handler.clone(), !cfg.dns.disable_compression, agent.shutdown_rx());
        bound.push(local);
    }
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
        assert_eq!(parse(&l("web.service.dc2"), "dc1"), Err(ResponseCode::NXDomain));
        assert_eq!(parse(&l("web.service.dc1.dc"), "dc1"), svc("web", None));
        assert_eq!(parse(&l("_web._tcp"), "dc1"), svc("web", None));
        assert_eq!(parse(&l("_web._udp.service"), "dc1"), svc("web", Some("udp")));
        assert_eq!(parse(&l("a.b.node"), "dc1"), Ok(Lookup::Node("a.b".into())));
        assert_eq!(parse(&l("_q._tcp.query"), "dc1"), Ok(Lookup::Query("q".into())));
        assert_eq!(parse(&l("7f000001.addr.dc9"), "dc1"), Ok(Lookup::Addr("127.0.0.1".parse().unwrap())));
        assert_eq!(parse(&l("+a+b+c+d.addr"), "dc1"), Err(ResponseCode::NXDomain));
        assert_eq!(
            parse(&l("00000000000000000000ffff0a000001.addr"), "dc1"),
            Ok(Lookup::Addr("10.0.0.1".parse().unwrap()))
        );
        assert_eq!(parse(&l("service"), "dc1"), Err(ResponseCode::NXDomain));
        assert_eq!(parse(&l("a.b.web.service"), "dc1"), Err(ResponseCode::NXDomain));
        assert_eq!(parse(&l("nothing"), "dc1"), Err(ResponseCode::NXDomain));
        assert_eq!(parse(&l("zz.addr"), "dc1"), Err(ResponseCode::NXDomain));
    }

    #[test]
    fn addr_names_round_trip() {
        let names = Names {
            domain: Name::from_ascii("consul.").unwrap(),
            datacenter: "dc1".into(),
            soa: crate::config::dns::DnsConfig::default().soa,
        };
        for ip in ["10.1.2.3", "2001:db8::7"] {
            let ip: IpAddr = ip.parse().unwrap();
            let name = names.addr_fqdn(ip).unwrap().to_ascii();
            let hex = name.split('.').next().unwrap();
            assert_eq!(decode_addr(hex), Some(ip));
        }
    }
}
