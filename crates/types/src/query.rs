//! Prepared queries (`/v1/query`): stored service lookups, optionally templates matched by name
//! prefix, executed against the health of a service's instances.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryFailover {
    #[serde(rename = "NearestN", default)]
    pub nearest_n: i64,
    #[serde(rename = "Datacenters", default)]
    pub datacenters: Vec<String>,
    #[serde(rename = "Targets", default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceQuery {
    #[serde(rename = "Service", default)]
    pub service: String,
    #[serde(rename = "Failover", default)]
    pub failover: QueryFailover,
    #[serde(rename = "IgnoreCheckIDs", default)]
    pub ignore_check_ids: Vec<String>,
    #[serde(rename = "OnlyPassing", default)]
    pub only_passing: bool,
    #[serde(rename = "Near", default)]
    pub near: String,
    #[serde(rename = "Tags", default)]
    pub tags: Vec<String>,
    #[serde(rename = "NodeMeta", default)]
    pub node_meta: BTreeMap<String, String>,
    #[serde(rename = "ServiceMeta", default)]
    pub service_meta: BTreeMap<String, String>,
    #[serde(rename = "Connect", default)]
    pub connect: serde_json::Value,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryDns {
    #[serde(rename = "TTL", default)]
    pub ttl: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryTemplate {
    #[serde(rename = "Type", default)]
    pub kind: String,
    #[serde(rename = "Regexp", default)]
    pub regexp: String,
    #[serde(rename = "RemoveEmptyTags", default)]
    pub remove_empty_tags: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedQuery {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "Session", default)]
    pub session: String,
    #[serde(rename = "Token", default)]
    pub token: String,
    #[serde(rename = "Template", default)]
    pub template: QueryTemplate,
    #[serde(rename = "Service", default)]
    pub service: ServiceQuery,
    #[serde(rename = "DNS", default)]
    pub dns: QueryDns,
    #[serde(rename = "CreateIndex", default)]
    pub create_index: u64,
    #[serde(rename = "ModifyIndex", default)]
    pub modify_index: u64,
}

pub const TEMPLATE_NAME_PREFIX_MATCH: &str = "name_prefix_match";

impl PreparedQuery {
    pub fn is_template(&self) -> bool {
        !self.template.kind.is_empty()
    }

    /// Checks what Consul checks on create and update.
    pub fn validate(&self) -> Result<(), String> {
        if self.service.service.is_empty() {
            return Err("Must provide a Service name to query".into());
        }
        if !self.name.is_empty() && is_uuid(&self.name) {
            return Err(format!("Query name cannot be a UUID: {:?}", self.name));
        }
        if self.is_template() {
            if self.template.kind != TEMPLATE_NAME_PREFIX_MATCH {
                return Err(format!("Bad Template.Type {:?}", self.template.kind));
            }
            if !self.template.regexp.is_empty() {
                regex::Regex::new(&self.template.regexp).map_err(|e| format!("Invalid template regexp: {e}"))?;
            }
        }
        if !self.dns.ttl.is_empty() {
            crate::duration::parse(&self.dns.ttl).map_err(|e| format!("Bad DNS TTL {:?}: {e}", self.dns.ttl))?;
        }
        Ok(())
    }

    /// Renders a template for the looked-up `name`: `${name.full}`, `${name.prefix}`,
    /// `${name.suffix}` and `${match(N)}` (captures of `Template.Regexp` on the full name) in every
    /// string of the service query. A non-template renders as itself.
    pub fn render(&self, name: &str) -> Result<PreparedQuery, String> {
        if !self.is_template() {
            return Ok(self.clone());
        }
        let caps: Vec<String> = if self.template.regexp.is_empty() {
            Vec::new()
        } else {
            let re = regex::Regex::new(&self.template.regexp).map_err(|e| e.to_string())?;
            match re.captures(name) {
                Some(c) => c.iter().map(|m| m.map(|m| m.as_str().to_string()).unwrap_or_default()).collect(),
                None => Vec::new(),
            }
        };
        let suffix = name.strip_prefix(self.name.as_str()).unwrap_or("");
        let sub = |s: &str| -> String {
            let mut out =
                s.replace("${name.full}", name).replace("${name.prefix}", &self.name).replace("${name.suffix}", suffix);
            while let Some(i) = out.find("${match(") {
                let Some(j) = out[i..].find(")}") else { break };
                let n: usize = out[i + 8..i + j].parse().unwrap_or(usize::MAX);
                let v = caps.get(n).cloned().unwrap_or_default();
                out.replace_range(i..i + j + 2, &v);
            }
            out
        };
        let mut q = self.clone();
        q.service.service = sub(&q.service.service);
        q.service.tags = q.service.tags.iter().map(|t| sub(t)).collect();
        if q.template.remove_empty_tags {
            q.service.tags.retain(|t| !t.is_empty());
        }
        q.service.node_meta = q.service.node_meta.iter().map(|(k, v)| (k.clone(), sub(v))).collect();
        q.service.service_meta = q.service.service_meta.iter().map(|(k, v)| (k.clone(), sub(v))).collect();
        Ok(q)
    }
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter()
            .enumerate()
            .all(|(i, c)| if [8, 13, 18, 23].contains(&i) { *c == b'-' } else { c.is_ascii_hexdigit() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_rendering() {
        let q = PreparedQuery {
            name: "geo-db-".into(),
            template: QueryTemplate {
                kind: TEMPLATE_NAME_PREFIX_MATCH.into(),
                regexp: "^geo-db-(.*?)-([^-]*)$".into(),
                remove_empty_tags: true,
            },
            service: ServiceQuery {
                service: "mysql-${match(1)}".into(),
                tags: vec!["${match(2)}".into(), "${match(9)}".into(), "x-${name.suffix}".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        q.validate().unwrap();
        let r = q.render("geo-db-customer-primary").unwrap();
        assert_eq!(r.service.service, "mysql-customer");
        assert_eq!(r.service.tags, vec!["primary".to_string(), "x-customer-primary".to_string()]);
        let full = PreparedQuery {
            service: ServiceQuery { service: "${name.full}".into(), ..Default::default() },
            template: QueryTemplate { kind: TEMPLATE_NAME_PREFIX_MATCH.into(), ..Default::default() },
            ..Default::default()
        };
        assert_eq!(full.render("anything").unwrap().service.service, "anything");
    }

    #[test]
    fn validation() {
        assert!(PreparedQuery::default().validate().is_err());
        let mut q = PreparedQuery {
            service: ServiceQuery { service: "web".into(), ..Default::default() },
            ..Default::default()
        };
        assert!(q.validate().is_ok());
        q.name = "6b2b8c3a-3e0e-4f7c-9a3b-3f1d2f1e1a2b".into();
        assert!(q.validate().is_err());
        q.name = "x".into();
        q.template.kind = "bogus".into();
        assert!(q.validate().is_err());
        q.template =
            QueryTemplate { kind: TEMPLATE_NAME_PREFIX_MATCH.into(), regexp: "(".into(), remove_empty_tags: false };
        assert!(q.validate().is_err());
    }
}
