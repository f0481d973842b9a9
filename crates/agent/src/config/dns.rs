//! `dns_config { ... }` and `recursors`: how the DNS interface answers, with Consul's defaults.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Value;

use super::{as_bool, as_i64, duration, ConfigError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecursorStrategy {
    /// In configuration order.
    Sequential,
    /// A fresh random order per query.
    Random,
}

#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Answer from this agent's state without asking the leader (Consul's default: true).
    pub allow_stale: bool,
    pub max_stale: Duration,
    /// TTL of node lookups (and of services no `service_ttl` entry names).
    pub node_ttl: Duration,
    /// Service TTLs: exact names, then the longest `prefix*` entry (`*` alone matches all).
    pub service_ttl: Vec<(String, Duration)>,
    /// At most this many answers in a UDP response the client gave no room for (no EDNS, or an
    /// EDNS size of 512 or less); Consul caps it at 8.
    pub udp_answer_limit: usize,
    /// At most this many A/AAAA answers, over UDP and TCP (0: no limit).
    pub a_record_limit: usize,
    /// Set TC on a UDP answer that was trimmed (Consul trims either way).
    pub enable_truncate: bool,
    /// Only instances whose checks all pass (else warning ones are answered too).
    pub only_passing: bool,
    pub recursor_timeout: Duration,
    pub disable_compression: bool,
    pub soa: Soa,
    pub recursors: Vec<SocketAddr>,
    pub recursor_strategy: RecursorStrategy,
    /// Node meta as TXT in the additional section of node and SRV answers.
    pub enable_additional_node_meta_txt: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Soa {
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub min_ttl: u32,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            allow_stale: true,
            max_stale: Duration::from_secs(87_600 * 3600),
            node_ttl: Duration::ZERO,
            service_ttl: Vec::new(),
            udp_answer_limit: 3,
            a_record_limit: 0,
            enable_truncate: false,
            only_passing: false,
            recursor_timeout: Duration::from_secs(2),
            disable_compression: false,
            soa: Soa { refresh: 3600, retry: 600, expire: 86_400, min_ttl: 0 },
            recursors: Vec::new(),
            recursor_strategy: RecursorStrategy::Sequential,
            enable_additional_node_meta_txt: true,
        }
    }
}

impl DnsConfig {
    /// Reads `dns_config` and `recursors` from the merged configuration.
    pub fn from_merged(m: &Value) -> Result<DnsConfig, ConfigError> {
        let mut c = DnsConfig::default();
        let err = |k: &str, e: String| ConfigError(format!("dns_config.{k}: {e}"));
        if let Some(d) = m.get("dns_config") {
            let get = |k: &str| d.get(k).filter(|v| !v.is_null());
            let dur = |k: &str, into: &mut Duration| -> Result<(), ConfigError> {
                if let Some(v) = get(k) {
                    *into = duration(v).map_err(|e| err(k, e))?;
                }
                Ok(())
            };
            let count = |k: &str, into: &mut usize| -> Result<(), ConfigError> {
                if let Some(v) = get(k) {
                    let n = as_i64(v).filter(|n| *n >= 0).ok_or_else(|| err(k, format!("invalid count {v}")))?;
                    *into = n as usize;
                }
                Ok(())
            };
            let flag = |k: &str, into: &mut bool| {
                if let Some(v) = get(k) {
                    *into = as_bool(v);
                }
            };
            flag("allow_stale", &mut c.allow_stale);
            flag("enable_truncate", &mut c.enable_truncate);
            flag("only_passing", &mut c.only_passing);
            flag("disable_compression", &mut c.disable_compression);
            flag("enable_additional_node_meta_txt", &mut c.enable_additional_node_meta_txt);
            dur("max_stale", &mut c.max_stale)?;
            dur("node_ttl", &mut c.node_ttl)?;
            dur("recursor_timeout", &mut c.recursor_timeout)?;
            count("udp_answer_limit", &mut c.udp_answer_limit)?;
            count("a_record_limit", &mut c.a_record_limit)?;
            if let Some(Value::Object(o)) = get("service_ttl") {
                for (name, v) in o {
                    c.service_ttl
                        .push((name.clone(), duration(v).map_err(|e| err(&format!("service_ttl.{name}"), e))?));
                }
            }
            match get("recursor_strategy").and_then(Value::as_str) {
                None | Some("" | "sequential") => {}
                Some("random") => c.recursor_strategy = RecursorStrategy::Random,
                Some(other) => return Err(err("recursor_strategy", format!("{other:?}: want sequential or random"))),
            }
            if let Some(soa) = get("soa") {
                for (k, into) in [
                    ("refresh", &mut c.soa.refresh),
                    ("retry", &mut c.soa.retry),
                    ("expire", &mut c.soa.expire),
                    ("min_ttl", &mut c.soa.min_ttl),
                ] {
                    if let Some(v) = soa.get(k).filter(|v| !v.is_null()) {
                        *into = as_i64(v)
                            .and_then(|n| u32::try_from(n).ok())
                            .ok_or_else(|| err(&format!("soa.{k}"), format!("invalid value {v}")))?;
                    }
                }
            }
        }
        if let Some(list) = m.get("recursors").and_then(Value::as_array) {
            for r in list {
                let s = r.as_str().unwrap_or_default();
                c.recursors
                    .push(recursor_addr(s).ok_or_else(|| ConfigError(format!("recursors: invalid address {s:?}")))?);
            }
        }
        Ok(c)
    }

    /// The TTL of answers about `service`: an exact `service_ttl` entry, else the longest
    /// matching `prefix*` one, else `node_ttl` (Consul's DNS router falls back to it).
    pub fn service_ttl(&self, service: &str) -> Duration {
        if let Some((_, d)) =
            self.service_ttl.iter().find(|(k, _)| !k.ends_with('*') && k.eq_ignore_ascii_case(service))
        {
            return *d;
        }
        self.service_ttl
            .iter()
            .filter_map(|(k, d)| {
                let p = k.strip_suffix('*')?;
                service.to_ascii_lowercase().starts_with(&p.to_ascii_lowercase()).then_some((p.len(), *d))
            })
            .max_by_key(|(n, _)| *n)
            .map_or(self.node_ttl, |(_, d)| d)
    }
}

/// `ip`, `ip:port`, `[v6]:port` or a bare IPv6 address; the port defaults to 53.
fn recursor_addr(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    s.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_overrides() {
        let d = DnsConfig::from_merged(&json!({})).unwrap();
        assert_eq!((d.udp_answer_limit, d.a_record_limit, d.allow_stale), (3, 0, true));
        let c = DnsConfig::from_merged(&json!({
            "dns_config": {"node_ttl": "10s", "service_ttl": {"*": "5s", "db*": "7s", "web": "30s"},
                "udp_answer_limit": 1, "soa": {"min_ttl": 60}, "recursor_strategy": "random"},
            "recursors": ["127.0.0.1", "127.0.0.2:5353", "::1"],
        }))
        .unwrap();
        assert_eq!(c.service_ttl("web"), Duration::from_secs(30));
        assert_eq!(c.service_ttl("dbx"), Duration::from_secs(7));
        assert_eq!(c.service_ttl("other"), Duration::from_secs(5));
        assert_eq!(c.soa.min_ttl, 60);
        assert_eq!(c.recursors[0].port(), 53);
        assert_eq!(c.recursors[1].port(), 5353);
        assert_eq!(c.recursors[2], "[::1]:53".parse().unwrap());
        let none = DnsConfig::from_merged(&json!({"dns_config": {"node_ttl": "3s"}})).unwrap();
        assert_eq!(none.service_ttl("web"), Duration::from_secs(3), "falls back to node_ttl");
        assert!(DnsConfig::from_merged(&json!({"recursors": ["nope"]})).is_err());
        assert!(DnsConfig::from_merged(&json!({"dns_config": {"recursor_strategy": "fast"}})).is_err());
    }
}
