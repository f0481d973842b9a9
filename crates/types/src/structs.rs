//! The Consul `/v1` JSON types. Field names and order follow Consul's output so that clients that
//! decode strictly (or compare bodies) see what they expect. Input is decoded through
//! [`crate::normalize`] first, so lowercase and snake_case keys work as they do against Consul.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub type Meta = BTreeMap<String, String>;

pub const HEALTH_PASSING: &str = "passing";
pub const HEALTH_WARNING: &str = "warning";
pub const HEALTH_CRITICAL: &str = "critical";
pub const HEALTH_MAINT: &str = "maintenance";
/// The check every node carries from gossip.
pub const SERF_CHECK_ID: &str = "serfHealth";
pub const SERF_CHECK_NAME: &str = "Serf Health Status";
pub const NODE_MAINT_CHECK_ID: &str = "_node_maintenance";
pub const SERVICE_MAINT_PREFIX: &str = "_service_maintenance:";

/// Valid check status strings.
pub fn valid_status(s: &str) -> bool {
    matches!(s, HEALTH_PASSING | HEALTH_WARNING | HEALTH_CRITICAL)
}

/// Ordering of statuses for aggregation: critical beats warning beats passing.
pub fn status_rank(s: &str) -> u8 {
    match s {
        HEALTH_PASSING => 0,
        HEALTH_WARNING => 1,
        HEALTH_MAINT => 3,
        _ => 2,
    }
}

/// Raft indexes stamped on every stored row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RaftIndex {
    #[serde(default)]
    pub create_index: u64,
    #[serde(default)]
    pub modify_index: u64,
}

/// A KV entry (Consul's `DirEntry`). `Value` is base64 on the wire, `null` when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DirEntry {
    #[serde(default)]
    pub lock_index: u64,
    pub key: String,
    #[serde(default)]
    pub flags: u64,
    #[serde(default, with = "b64opt")]
    pub value: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session: String,
    #[serde(default)]
    pub create_index: u64,
    #[serde(default)]
    pub modify_index: u64,
}

/// base64 for `Option<Vec<u8>>`, `null` for `None`.
pub mod b64opt {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let o: Option<String> = Option::deserialize(d)?;
        match o {
            None => Ok(None),
            Some(s) => base64::engine::general_purpose::STANDARD
                .decode(s.as_bytes())
                .map(Some)
                .map_err(|e| serde::de::Error::custom(format!("invalid base64 value: {e}"))),
        }
    }
}

/// `{"Address": "...", "Port": N}` as used in service tagged addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceAddress {
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    pub passing: i64,
    pub warning: i64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights { passing: 1, warning: 1 }
    }
}

/// A catalog node (Consul's `Node`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(rename = "Node")]
    pub node: String,
    #[serde(rename = "Address", default)]
    pub address: String,
    #[serde(rename = "Datacenter", default)]
    pub datacenter: String,
    #[serde(rename = "TaggedAddresses", default)]
    pub tagged_addresses: BTreeMap<String, String>,
    #[serde(rename = "Meta", default)]
    pub meta: Meta,
    #[serde(rename = "CreateIndex", default)]
    pub create_index: u64,
    #[serde(rename = "ModifyIndex", default)]
    pub modify_index: u64,
}

/// A service instance as registered on a node (Consul's `NodeService`; also the agent's service).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeService {
    #[serde(rename = "Kind", default)]
    pub kind: String,
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(rename = "Service", default)]
    pub service: String,
    #[serde(rename = "Tags", default)]
    pub tags: Vec<String>,
    #[serde(rename = "Address", default)]
    pub address: String,
    #[serde(rename = "TaggedAddresses", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    #[serde(rename = "Meta", default)]
    pub meta: Meta,
    #[serde(rename = "Port", default)]
    pub port: u16,
    #[serde(rename = "Weights", default)]
    pub weights: Weights,
    #[serde(rename = "EnableTagOverride", default)]
    pub enable_tag_override: bool,
    /// Fields Cairn keeps and shows as registered but does not act on yet (Connect proxies,
    /// locality, Unix sockets): a client that registers them reads them back unchanged.
    #[serde(rename = "SocketPath", default, skip_serializing_if = "String::is_empty")]
    pub socket_path: String,
    #[serde(rename = "Proxy", default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<serde_json::Value>,
    #[serde(rename = "Connect", default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<serde_json::Value>,
    #[serde(rename = "Locality", default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<serde_json::Value>,
    #[serde(rename = "CreateIndex", default)]
    pub create_index: u64,
    #[serde(rename = "ModifyIndex", default)]
    pub modify_index: u64,
}

/// A health check (Consul's `HealthCheck`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    #[serde(rename = "Node", default)]
    pub node: String,
    #[serde(rename = "CheckID", default)]
    pub check_id: String,
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "Status", default)]
    pub status: String,
    #[serde(rename = "Notes", default)]
    pub notes: String,
    #[serde(rename = "Output", default)]
    pub output: String,
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    #[serde(rename = "ServiceName", default)]
    pub service_name: String,
    #[serde(rename = "ServiceTags", default)]
    pub service_tags: Vec<String>,
    #[serde(rename = "Type", default)]
    pub check_type: String,
    #[serde(rename = "Interval", default)]
    pub interval: String,
    #[serde(rename = "Timeout", default)]
    pub timeout: String,
    #[serde(rename = "ExposedPort", default)]
    pub exposed_port: u16,
    #[serde(rename = "Definition", default)]
    pub definition: serde_json::Value,
    #[serde(rename = "CreateIndex", default)]
    pub create_index: u64,
    #[serde(rename = "ModifyIndex", default)]
    pub modify_index: u64,
}

/// `PUT /v1/catalog/register` body (Consul's `RegisterRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    #[serde(rename = "Datacenter", default)]
    pub datacenter: String,
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(rename = "Node", default)]
    pub node: String,
    #[serde(rename = "Address", default)]
    pub address: String,
    #[serde(rename = "TaggedAddresses", default)]
    pub tagged_addresses: BTreeMap<String, String>,
    #[serde(rename = "NodeMeta", default)]
    pub node_meta: Meta,
    #[serde(rename = "Service", default)]
    pub service: Option<NodeService>,
    #[serde(rename = "Check", default)]
    pub check: Option<HealthCheck>,
    #[serde(rename = "Checks", default)]
    pub checks: Vec<HealthCheck>,
    #[serde(rename = "SkipNodeUpdate", default)]
    pub skip_node_update: bool,
}

/// `PUT /v1/catalog/deregister` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeregisterRequest {
    #[serde(rename = "Datacenter", default)]
    pub datacenter: String,
    #[serde(rename = "Node", default)]
    pub node: String,
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    #[serde(rename = "CheckID", default)]
    pub check_id: String,
}

/// A row of `/v1/catalog/service/:name` (Consul's `ServiceNode`: node fields plus service fields).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceNode {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Node")]
    pub node: String,
    #[serde(rename = "Address")]
    pub address: String,
    #[serde(rename = "Datacenter")]
    pub datacenter: String,
    #[serde(rename = "TaggedAddresses")]
    pub tagged_addresses: BTreeMap<String, String>,
    #[serde(rename = "NodeMeta")]
    pub node_meta: Meta,
    #[serde(rename = "ServiceKind")]
    pub service_kind: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    #[serde(rename = "ServiceName")]
    pub service_name: String,
    #[serde(rename = "ServiceTags")]
    pub service_tags: Vec<String>,
    #[serde(rename = "ServiceAddress")]
    pub service_address: String,
    #[serde(rename = "ServiceTaggedAddresses", skip_serializing_if = "BTreeMap::is_empty", default)]
    pub service_tagged_addresses: BTreeMap<String, ServiceAddress>,
    #[serde(rename = "ServiceWeights")]
    pub service_weights: Weights,
    #[serde(rename = "ServiceMeta")]
    pub service_meta: Meta,
    #[serde(rename = "ServicePort")]
    pub service_port: u16,
    #[serde(rename = "ServiceEnableTagOverride")]
    pub service_enable_tag_override: bool,
    #[serde(rename = "CreateIndex")]
    pub create_index: u64,
    #[serde(rename = "ModifyIndex")]
    pub modify_index: u64,
}

impl ServiceNode {
    pub fn new(node: &Node, svc: &NodeService) -> Self {
        ServiceNode {
            id: node.id.clone(),
            node: node.node.clone(),
            address: node.address.clone(),
            datacenter: node.datacenter.clone(),
            tagged_addresses: node.tagged_addresses.clone(),
            node_meta: node.meta.clone(),
            service_kind: svc.kind.clone(),
            service_id: svc.id.clone(),
            service_name: svc.service.clone(),
            service_tags: svc.tags.clone(),
            service_address: svc.address.clone(),
            service_tagged_addresses: svc.tagged_addresses.clone(),
            service_weights: svc.weights,
            service_meta: svc.meta.clone(),
            service_port: svc.port,
            service_enable_tag_override: svc.enable_tag_override,
            create_index: svc.create_index,
            modify_index: svc.modify_index,
        }
    }
}

/// A row of `/v1/health/service/:name`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    #[serde(rename = "Node")]
    pub node: Node,
    #[serde(rename = "Service")]
    pub service: NodeService,
    #[serde(rename = "Checks")]
    pub checks: Vec<HealthCheck>,
}

/// `/v1/catalog/node/:node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeServices {
    #[serde(rename = "Node")]
    pub node: Node,
    #[serde(rename = "Services")]
    pub services: BTreeMap<String, NodeService>,
}

/// `/v1/catalog/node-services/:node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeServiceList {
    #[serde(rename = "Node")]
    pub node: Node,
    #[serde(rename = "Services")]
    pub services: Vec<NodeService>,
}

pub const SESSION_BEHAVIOR_RELEASE: &str = "release";
pub const SESSION_BEHAVIOR_DELETE: &str = "delete";

/// A service check a session is bound to (`ServiceChecks`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCheckRef {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(rename = "Namespace", default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// A session (Consul's `Session`). `LockDelay` is in nanoseconds on the wire, as Go's
/// `time.Duration` marshals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "Node", default)]
    pub node: String,
    #[serde(rename = "LockDelay", default)]
    pub lock_delay_ns: u64,
    #[serde(rename = "Behavior", default)]
    pub behavior: String,
    #[serde(rename = "TTL", default)]
    pub ttl: String,
    #[serde(rename = "NodeChecks", default)]
    pub node_checks: Vec<String>,
    #[serde(rename = "ServiceChecks", default)]
    pub service_checks: Vec<ServiceCheckRef>,
    #[serde(rename = "CreateIndex", default)]
    pub create_index: u64,
    #[serde(rename = "ModifyIndex", default)]
    pub modify_index: u64,
}

/// A user event (`/v1/event/fire`, `/v1/event/list`). `LTime` is the receiving agent's Lamport
/// time for it (0 in the fire response, as Consul answers before delivery).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserEvent {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    #[serde(default, with = "b64opt")]
    pub payload: Option<Vec<u8>>,
    #[serde(default)]
    pub node_filter: String,
    #[serde(default)]
    pub service_filter: String,
    #[serde(default)]
    pub tag_filter: String,
    pub version: u32,
    #[serde(rename = "LTime")]
    pub ltime: u64,
}

/// Autopilot's configuration (`/v1/operator/autopilot/configuration`), replicated through Raft.
/// The HTTP layer renders the durations as Go duration text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutopilotConfig {
    pub cleanup_dead_servers: bool,
    pub last_contact_threshold: std::time::Duration,
    pub max_trailing_logs: u64,
    pub min_quorum: u32,
    pub server_stabilization_time: std::time::Duration,
    pub redundancy_zone_tag: String,
    pub disable_upgrade_migration: bool,
    pub upgrade_version_tag: String,
    pub create_index: u64,
    pub modify_index: u64,
}

impl Default for AutopilotConfig {
    /// Consul's defaults (`autopilot {}` in the agent config).
    fn default() -> Self {
        AutopilotConfig {
            cleanup_dead_servers: true,
            last_contact_threshold: std::time::Duration::from_millis(200),
            max_trailing_logs: 250,
            min_quorum: 0,
            server_stabilization_time: std::time::Duration::from_secs(10),
            redundancy_zone_tag: String::new(),
            disable_upgrade_migration: false,
            upgrade_version_tag: String::new(),
            create_index: 0,
            modify_index: 0,
        }
    }
}
