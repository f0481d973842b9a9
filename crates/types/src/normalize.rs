//! Consul's lenient input decoding. Go's JSON decoder matches field names case-insensitively, and
//! Consul also translates snake_case keys (`enable_tag_override`, `service_id`). We canonicalise a
//! request body's keys to our PascalCase names before deserialising, leaving user-defined maps
//! (`Meta`, `NodeMeta`, `Header`, ...) untouched, since their keys are data.

use serde_json::{Map, Value};

/// Canonical field names that input bodies may use. Lookup ignores case and underscores.
const CANONICAL: &[&str] = &[
    "ID",
    "Node",
    "Address",
    "Datacenter",
    "TaggedAddresses",
    "NodeMeta",
    "Meta",
    "Service",
    "Services",
    "Check",
    "Checks",
    "SkipNodeUpdate",
    "Kind",
    "Tags",
    "Port",
    "Weights",
    "Passing",
    "Warning",
    "EnableTagOverride",
    "CheckID",
    "Name",
    "Status",
    "Notes",
    "Output",
    "ServiceID",
    "ServiceName",
    "ServiceTags",
    "Type",
    "Interval",
    "Timeout",
    "Definition",
    "HTTP",
    "Method",
    "Header",
    "Body",
    "TLSSkipVerify",
    "TLSServerName",
    "TCP",
    "UDP",
    "GRPC",
    "GRPCUseTLS",
    "H2PING",
    "H2PingUseTLS",
    "DockerContainerID",
    "Shell",
    "TTL",
    "Args",
    "ScriptArgs",
    "AliasNode",
    "AliasService",
    "DeregisterCriticalServiceAfter",
    "SuccessBeforePassing",
    "FailuresBeforeCritical",
    "FailuresBeforeWarning",
    "OutputMaxSize",
    "Connect",
    "Proxy",
    "SocketPath",
    "Namespace",
    "Partition",
    "Locality",
    "LockDelay",
    "Behavior",
    "NodeChecks",
    "ServiceChecks",
    "Key",
    "Value",
    "Flags",
    "Index",
    "Session",
    "Verb",
    "KV",
    "Token",
    "DisableRedirects",
    "OSService",
    "Status",
    "ExposedPort",
    "CreateIndex",
    "ModifyIndex",
    "LockIndex",
    "Peer",
    "PeerName",
    "EnterpriseMeta",
    "Region",
    "Zone",
    "Native",
    "SidecarService",
    "OnlyPassing",
    "Failover",
    "NearestN",
    "Datacenters",
    "Template",
    "Regexp",
    "RemoveEmptyTags",
    "DNS",
    "IgnoreCheckIDs",
    "Near",
    "Targets",
    "ServiceMeta",
    "ReplaceExistingChecks",
    "Reason",
    "Enable",
];

/// Keys whose values are user maps: normalise the key itself but not the keys inside.
const FREEFORM: &[&str] = &["Meta", "NodeMeta", "Header", "Definition", "ServiceMeta", "Proxy", "Connect"];

fn squash(k: &str) -> String {
    k.chars().filter(|c| *c != '_' && *c != '-').flat_map(|c| c.to_lowercase()).collect()
}

/// Squashed spelling to canonical name, built once: lookups sit on every request's hot path.
fn canonical(k: &str) -> Option<&'static str> {
    static MAP: std::sync::OnceLock<std::collections::HashMap<String, &'static str>> = std::sync::OnceLock::new();
    let map = MAP.get_or_init(|| CANONICAL.iter().map(|c| (squash(c), *c)).collect());
    // Fast path: already canonical (what well-behaved clients send) needs no allocation.
    if let Some(c) = CANONICAL.iter().find(|c| **c == k) {
        return Some(c);
    }
    map.get(&squash(k)).copied()
}

/// Rewrites object keys of `v` to canonical names, recursively.
pub fn normalize(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::with_capacity(m.len());
            for (k, val) in m {
                let (key, recurse) = match canonical(&k) {
                    Some(c) => (c.to_string(), !FREEFORM.contains(&c)),
                    None => (k, true),
                };
                let val = if recurse { normalize(val) } else { val };
                // A canonical key wins over a later duplicate spelled differently, as Go's
                // decoder takes the last one; either is fine since clients don't send both.
                out.insert(key, val);
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn snake_and_lower_case_keys_map_to_pascal() {
        let v = normalize(json!({"name": "web", "enable_tag_override": true, "service_id": "x",
            "meta": {"name": "keep", "my_key": "v"}, "check": {"ttl": "10s", "deregister_critical_service_after": "1m"}}));
        assert_eq!(v["Name"], "web");
        assert_eq!(v["EnableTagOverride"], true);
        assert_eq!(v["ServiceID"], "x");
        assert_eq!(v["Meta"]["name"], "keep");
        assert_eq!(v["Meta"]["my_key"], "v");
        assert_eq!(v["Check"]["TTL"], "10s");
        assert_eq!(v["Check"]["DeregisterCriticalServiceAfter"], "1m");
    }
}
