//! The tables and the read queries over one immutable snapshot. Each query returns the index a
//! blocking query reports (`X-Consul-Index`), chosen as Consul chooses it, plus the rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};

use cairn_types::structs::{
    status_rank, DirEntry, HealthCheck, Node, NodeService, ServiceEntry, ServiceNode, Session, HEALTH_PASSING,
};

use crate::watch::Topic;
use cairn_types::coordinate::{Coordinate, CoordinateEntry};
use cairn_types::query::PreparedQuery;

/// A node and the services registered on it.
pub type NodeWithServices = (Arc<Node>, Vec<Arc<NodeService>>);

/// One version of every table. Cloning is O(1): the maps share structure.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// The raft index of the last applied entry.
    pub last_index: u64,
    /// KV entries by key.
    pub kvs: OrdMap<String, Arc<DirEntry>>,
    /// Deleted keys and the index of their deletion, so that a prefix's index never goes back.
    pub tombstones: OrdMap<String, u64>,
    /// Nodes by name.
    pub nodes: OrdMap<String, Arc<Node>>,
    /// Service instances by (node, service ID).
    pub services: OrdMap<(String, String), Arc<NodeService>>,
    /// Secondary index: (service name, node, service ID).
    pub services_by_name: OrdSet<(String, String, String)>,
    /// Checks by (node, check ID).
    pub checks: OrdMap<(String, String), Arc<HealthCheck>>,
    /// Sessions by ID.
    #[serde(default)]
    pub sessions: OrdMap<String, Arc<Session>>,
    /// Secondary index: (session ID, key) for every key a session holds the lock of.
    #[serde(default)]
    pub session_keys: OrdSet<(String, String)>,
    /// Prepared queries by ID.
    #[serde(default)]
    pub queries: OrdMap<String, Arc<PreparedQuery>>,
    /// Network coordinates by (node, segment).
    #[serde(default)]
    pub coordinates: OrdMap<(String, String), Arc<Coordinate>>,
    /// Autopilot's configuration, once the leader or an operator set it.
    #[serde(default)]
    pub autopilot: Option<Arc<cairn_types::structs::AutopilotConfig>>,
    /// Last-change index of each table (`kvs`, `tombstones`, `nodes`, `services`, `checks`) and of
    /// each service name (`service.<name>`), as Consul keeps them.
    pub indexes: OrdMap<String, u64>,
}

/// Topic helpers used by readers; kept beside the queries they serve.
pub mod topics {
    use super::Topic;
    pub fn kv(key: &str) -> Topic {
        Topic::Kv(key.to_string())
    }
    pub fn kv_prefix(p: &str) -> Topic {
        Topic::KvPrefix(p.to_string())
    }
    pub fn service(name: &str) -> Topic {
        Topic::Service(name.to_string())
    }
    pub fn node(name: &str) -> Topic {
        Topic::Node(name.to_string())
    }
    pub const NODES: Topic = Topic::Table("nodes");
    pub const SERVICES: Topic = Topic::Table("services");
    pub const CHECKS: Topic = Topic::Table("checks");
    pub const SESSIONS: Topic = Topic::Table("sessions");
    pub const QUERIES: Topic = Topic::Table("queries");
    pub const COORDINATES: Topic = Topic::Table("coordinates");
}

impl State {
    pub fn index(&self, table: &str) -> u64 {
        self.indexes.get(table).copied().unwrap_or(0)
    }

    fn max_index(&self, tables: &[&str]) -> u64 {
        tables.iter().map(|t| self.index(t)).max().unwrap_or(0)
    }

    // ---- KV -------------------------------------------------------------------------------

    /// A single key. As Consul: the index is the entry's ModifyIndex, or the KV table's index when the
    /// key is missing; the watch is on the key alone.
    pub fn kv_get(&self, key: &str) -> (u64, Option<Arc<DirEntry>>) {
        match self.kvs.get(key) {
            Some(e) => (e.modify_index, Some(e.clone())),
            None => (self.max_index(&["kvs", "tombstones"]), None),
        }
    }

    /// Every entry under `prefix`. The index is the highest ModifyIndex under the prefix (entries and
    /// tombstones), or the table index when that is zero or the prefix is empty.
    pub fn kv_list(&self, prefix: &str) -> (u64, Vec<Arc<DirEntry>>) {
        let rows: Vec<Arc<DirEntry>> = self
            .kvs
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        (self.prefix_index(prefix, rows.iter().map(|e| e.modify_index).max().unwrap_or(0)), rows)
    }

    fn prefix_index(&self, prefix: &str, entries_max: u64) -> u64 {
        let table = self.max_index(&["kvs", "tombstones"]);
        if prefix.is_empty() {
            return table;
        }
        let tomb = self
            .tombstones
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, i)| *i)
            .max()
            .unwrap_or(0);
        let idx = entries_max.max(tomb);
        if idx == 0 {
            table
        } else {
            idx
        }
    }

    /// Keys under `prefix`, rolled up at the first `separator` after the prefix (`?keys&separator=/`).
    pub fn kv_keys(&self, prefix: &str, separator: &str) -> (u64, Vec<String>) {
        let mut out: Vec<String> = Vec::new();
        let mut max = 0;
        for (k, e) in self.kvs.range(prefix.to_string()..).take_while(|(k, _)| k.starts_with(prefix)) {
            max = max.max(e.modify_index);
            let rest = &k[prefix.len()..];
            let key = match (separator.is_empty(), rest.find(separator)) {
                (false, Some(i)) => format!("{}{}", prefix, &rest[..i + separator.len()]),
                _ => k.clone(),
            };
            if out.last() != Some(&key) {
                out.push(key);
            }
        }
        (self.prefix_index(prefix, max), out)
    }

    // ---- Catalog ---------------------------------------------------------------------------

    pub fn nodes(&self) -> (u64, Vec<Arc<Node>>) {
        (self.index("nodes"), self.nodes.values().cloned().collect())
    }

    pub fn node(&self, name: &str) -> Option<&Arc<Node>> {
        self.nodes.get(name)
    }

    // ---- Coordinates ----------------------------------------------------------------------

    /// Every node's coordinates, by node then segment.
    pub fn coordinates(&self) -> (u64, Vec<CoordinateEntry>) {
        let rows = self.coordinates.iter().map(|((n, s), c)| entry(n, s, c)).collect();
        (self.index("coordinates"), rows)
    }

    /// One node's coordinates (one per segment).
    pub fn node_coordinates(&self, node: &str) -> (u64, Vec<CoordinateEntry>) {
        let lo = (node.to_string(), String::new());
        let rows = self
            .coordinates
            .range(lo..)
            .take_while(|((n, _), _)| n == node)
            .map(|((n, s), c)| entry(n, s, c))
            .collect();
        (self.index("coordinates"), rows)
    }

    /// A node's coordinate in the default segment, which `near` sorting uses.
    pub fn coordinate(&self, node: &str) -> Option<&Arc<Coordinate>> {
        self.coordinates.get(&(node.to_string(), String::new()))
    }

    /// Service names and the union of their tags.
    pub fn services(&self) -> (u64, BTreeMap<String, Vec<String>>) {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for svc in self.services.values() {
            let tags = out.entry(svc.service.clone()).or_default();
            for t in &svc.tags {
                if !tags.contains(t) {
                    tags.push(t.clone());
                }
            }
        }
        for tags in out.values_mut() {
            tags.sort();
        }
        (self.index("services"), out)
    }

    /// The index for a service name: its own index if it ever existed, else the services table's.
    pub fn service_index(&self, name: &str) -> u64 {
        match self.indexes.get(&format!("service.{name}")) {
            Some(i) => *i,
            None => self.index("services"),
        }
    }

    fn instances<'a>(&'a self, name: &str) -> impl Iterator<Item = (Arc<Node>, Arc<NodeService>)> + 'a {
        let name = name.to_string();
        let start = (name.clone(), String::new(), String::new());
        self.services_by_name.range(start..).take_while(move |(n, _, _)| *n == name).filter_map(move |(_, node, id)| {
            let svc = self.services.get(&(node.clone(), id.clone()))?;
            let n = self.nodes.get(node)?;
            Some((n.clone(), svc.clone()))
        })
    }

    /// `/v1/catalog/service/:name`, optionally requiring every tag in `tags`.
    pub fn service_nodes(&self, name: &str, tags: &[String]) -> (u64, Vec<ServiceNode>) {
        let rows =
            self.instances(name).filter(|(_, s)| has_tags(s, tags)).map(|(n, s)| ServiceNode::new(&n, &s)).collect();
        (self.service_index(name), rows)
    }

    /// The node and its services (`/v1/catalog/node/:node`).
    pub fn node_services(&self, node: &str) -> (u64, Option<NodeWithServices>) {
        let idx = self.max_index(&["nodes", "services"]);
        let Some(n) = self.nodes.get(node) else { return (idx, None) };
        (idx, Some((n.clone(), self.services_on(node).collect())))
    }

    pub fn services_on<'a>(&'a self, node: &str) -> impl Iterator<Item = Arc<NodeService>> + 'a {
        let node = node.to_string();
        self.services
            .range((node.clone(), String::new())..)
            .take_while(move |((n, _), _)| *n == node)
            .map(|(_, s)| s.clone())
    }

    pub fn checks_on<'a>(&'a self, node: &str) -> impl Iterator<Item = Arc<HealthCheck>> + 'a {
        let node = node.to_string();
        self.checks
            .range((node.clone(), String::new())..)
            .take_while(move |((n, _), _)| *n == node)
            .map(|(_, c)| c.clone())
    }

    /// `/v1/health/node/:node`.
    pub fn node_checks(&self, node: &str) -> (u64, Vec<Arc<HealthCheck>>) {
        (self.index("checks"), self.checks_on(node).collect())
    }

    /// `/v1/health/checks/:service`.
    pub fn service_checks(&self, name: &str) -> (u64, Vec<Arc<HealthCheck>>) {
        let rows = self.checks.values().filter(|c| c.service_name == name).cloned().collect();
        (self.index("checks"), rows)
    }

    /// `/v1/health/state/:state`; `any` matches all.
    pub fn checks_in_state(&self, state: &str) -> (u64, Vec<Arc<HealthCheck>>) {
        let rows = self.checks.values().filter(|c| state == "any" || c.status == state).cloned().collect();
        (self.index("checks"), rows)
    }

    /// `/v1/health/service/:name`: each instance with its node and the node's and its own checks.
    pub fn check_service_nodes(&self, name: &str, tags: &[String], passing_only: bool) -> (u64, Vec<ServiceEntry>) {
        let mut rows = Vec::new();
        for (n, s) in self.instances(name).filter(|(_, s)| has_tags(s, tags)) {
            let checks: Vec<HealthCheck> = self
                .checks_on(&n.node)
                .filter(|c| c.service_id.is_empty() || c.service_id == s.id)
                .map(|c| (*c).clone())
                .collect();
            if passing_only && checks.iter().any(|c| c.status != HEALTH_PASSING) {
                continue;
            }
            rows.push(ServiceEntry { node: (*n).clone(), service: (*s).clone(), checks });
        }
        (self.service_index(name), rows)
    }
}

impl State {
    // ---- Sessions --------------------------------------------------------------------------

    pub fn session_get(&self, id: &str) -> (u64, Option<Arc<Session>>) {
        (self.index("sessions"), self.sessions.get(id).cloned())
    }

    pub fn session_list(&self) -> (u64, Vec<Arc<Session>>) {
        (self.index("sessions"), self.sessions.values().cloned().collect())
    }

    pub fn node_sessions(&self, node: &str) -> (u64, Vec<Arc<Session>>) {
        (self.index("sessions"), self.sessions.values().filter(|s| s.node == node).cloned().collect())
    }

    // ---- Prepared queries --------------------------------------------------------------------

    pub fn query_list(&self) -> (u64, Vec<Arc<PreparedQuery>>) {
        (self.index("queries"), self.queries.values().cloned().collect())
    }

    /// Finds a query as Consul does: by ID, then by exact name, then the template with the longest
    /// name that prefixes `id_or_name` (an empty-named template catches everything).
    pub fn query_resolve(&self, id_or_name: &str) -> (u64, Option<Arc<PreparedQuery>>) {
        let idx = self.index("queries");
        if let Some(q) = self.queries.get(id_or_name) {
            return (idx, Some(q.clone()));
        }
        if let Some(q) = self.queries.values().find(|q| !q.name.is_empty() && q.name == id_or_name && !q.is_template())
        {
            return (idx, Some(q.clone()));
        }
        let best = self
            .queries
            .values()
            .filter(|q| q.is_template() && id_or_name.starts_with(q.name.as_str()))
            .max_by_key(|q| q.name.len())
            .cloned();
        (idx, best)
    }

    /// Keys whose lock `session` holds.
    pub fn session_held_keys(&self, session: &str) -> Vec<String> {
        let start = (session.to_string(), String::new());
        self.session_keys.range(start..).take_while(|(s, _)| s == session).map(|(_, k)| k.clone()).collect()
    }
}

fn has_tags(s: &NodeService, tags: &[String]) -> bool {
    // Consul compares tags case-insensitively.
    tags.iter().all(|t| s.tags.iter().any(|x| x.eq_ignore_ascii_case(t)))
}

/// The worst status among checks (`passing` when there are none).
pub fn aggregate_status<'a>(statuses: impl IntoIterator<Item = &'a str>) -> &'a str {
    statuses.into_iter().max_by_key(|s| status_rank(s)).unwrap_or(HEALTH_PASSING)
}

fn entry(node: &str, segment: &str, c: &Coordinate) -> CoordinateEntry {
    CoordinateEntry { node: node.to_string(), segment: segment.to_string(), coord: c.clone() }
}
