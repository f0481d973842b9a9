//! Schema of the keys a Consul agent accepts in its config files (HCL or JSON).
//!
//! This module owns only the *shape* of a Consul agent configuration: for every
//! level of the tree, which key names Consul's decoder accepts and what kind of
//! value each takes. The config loader uses it to
//!
//! * stop start-up on a key Consul itself would reject ("invalid config key"),
//!   naming the file and the dotted key path, and
//! * accept, but log as ignored, a key Consul knows that Cairn does not
//!   implement yet.
//!
//! It holds no defaults and no semantics. Names are spelled as in config files
//! (snake_case). The set tracks Consul CE 1.20 – 1.22, including the deprecated
//! names Consul still accepts (with a warning), Enterprise-only names (CE
//! accepts them and warns that they have no effect) and the handful of
//! non-user-facing names the decoder still accepts.
//!
//! Matching rules, mirroring Consul's decoder:
//!
//! * a key is matched exactly first, then case-insensitively ([`find`]);
//! * in HCL a block can arrive as a list of objects (`foo { }` is decoded as
//!   `foo = [{ }]`); wherever [`Kind::Block`] is expected, a one-element list of
//!   objects must be accepted too;
//! * the schema has no float kind: the few rate settings Consul decodes as
//!   floats are typed [`Kind::Any`] and listed in [`FLOAT_KEYS`] so callers can
//!   still check that they are numbers.

use self::Kind::{Any, Block, BlockList, Bool, Duration, Int, Map, Str, StrList};

/// What kind of value a key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Str,
    /// A boolean.
    Bool,
    /// An integer (any width; Consul's unsigned fields are included here).
    Int,
    /// A duration string such as `"10s"` or `"1h30m"`.
    Duration,
    /// A list of strings.
    StrList,
    /// A free-form object of string keys to string values (e.g. `node_meta`).
    Map,
    /// Opaque: accepted and not checked here (service/check definitions,
    /// watches, config entries, CA provider config, float rates, ...).
    Any,
    /// A nested object whose keys are known.
    Block(&'static [Key]),
    /// A list of objects with known keys; a single object is also accepted
    /// (HCL repeated blocks).
    BlockList(&'static [Key]),
}

/// One accepted key at some level of the config tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The key as written in a config file.
    pub name: &'static str,
    /// The kind of value it takes.
    pub kind: Kind,
}

macro_rules! k {
    ($name:literal, $kind:expr) => {
        Key { name: $name, kind: $kind }
    };
}

// ---------------------------------------------------------------------------
// acl { ... }
// ---------------------------------------------------------------------------

/// `acl.tokens.managed_service_provider[]` (Enterprise).
const ACL_MSP_TOKEN: &[Key] = &[k!("accessor_id", Str), k!("secret_id", Str)];

/// `acl.tokens { ... }`
const ACL_TOKENS: &[Key] = &[
    k!("initial_management", Str),
    k!("replication", Str),
    k!("agent_recovery", Str),
    k!("default", Str),
    k!("agent", Str),
    k!("config_file_service_registration", Str),
    k!("dns", Str),
    // Enterprise only.
    k!("managed_service_provider", BlockList(ACL_MSP_TOKEN)),
    // Deprecated: renamed to initial_management.
    k!("master", Str),
    // Deprecated: renamed to agent_recovery.
    k!("agent_master", Str),
];

/// `acl { ... }`
const ACL: &[Key] = &[
    k!("enabled", Bool),
    k!("enable_token_replication", Bool),
    k!("policy_ttl", Duration),
    k!("role_ttl", Duration),
    k!("token_ttl", Duration),
    k!("down_policy", Str),
    k!("default_policy", Str),
    k!("enable_key_list_policy", Bool),
    k!("enable_token_persistence", Bool),
    k!("tokens", Block(ACL_TOKENS)),
    // Enterprise only.
    k!("msp_disable_bootstrap", Bool),
];

// ---------------------------------------------------------------------------
// addresses / ports / unix_sockets
// ---------------------------------------------------------------------------

/// `addresses { ... }`: bind addresses (or go-sockaddr templates / unix://).
const ADDRESSES: &[Key] = &[k!("dns", Str), k!("http", Str), k!("https", Str), k!("grpc", Str), k!("grpc_tls", Str)];

/// `ports { ... }`
const PORTS: &[Key] = &[
    k!("dns", Int),
    k!("http", Int),
    k!("https", Int),
    k!("grpc", Int),
    k!("grpc_tls", Int),
    k!("serf_lan", Int),
    k!("serf_wan", Int),
    k!("server", Int),
    // Left over from managed proxies; still decoded.
    k!("proxy_min_port", Int),
    k!("proxy_max_port", Int),
    k!("sidecar_min_port", Int),
    k!("sidecar_max_port", Int),
    k!("expose_min_port", Int),
    k!("expose_max_port", Int),
];

/// `unix_sockets { ... }`
const UNIX_SOCKETS: &[Key] = &[k!("user", Str), k!("group", Str), k!("mode", Str)];

// ---------------------------------------------------------------------------
// audit (Enterprise)
// ---------------------------------------------------------------------------

/// `audit { ... }`. `sink` is an object of named sinks (`sink "name" { ... }`),
/// each with type, format, path, delivery_guarantee, mode, rotate_bytes,
/// rotate_duration, rotate_max_files; it is opaque here.
const AUDIT: &[Key] = &[k!("enabled", Bool), k!("sink", Any)];

// ---------------------------------------------------------------------------
// auto_config / auto_encrypt
// ---------------------------------------------------------------------------

/// `auto_config.authorization.static { ... }` (JWT validator settings).
const AUTO_CONFIG_STATIC: &[Key] = &[
    k!("claim_assertions", StrList),
    k!("allow_reuse", Bool),
    k!("jwt_supported_algs", StrList),
    k!("bound_audiences", StrList),
    k!("claim_mappings", Map),
    k!("list_claim_mappings", Map),
    k!("oidc_discovery_url", Str),
    k!("oidc_discovery_ca_cert", Str),
    k!("jwks_url", Str),
    k!("jwks_ca_cert", Str),
    k!("jwt_validation_pub_keys", StrList),
    k!("bound_issuer", Str),
    k!("expiration_leeway", Duration),
    k!("not_before_leeway", Duration),
    k!("clock_skew_leeway", Duration),
];

/// `auto_config.authorization { ... }`
const AUTO_CONFIG_AUTHORIZATION: &[Key] = &[k!("enabled", Bool), k!("static", Block(AUTO_CONFIG_STATIC))];

/// `auto_config { ... }`
const AUTO_CONFIG: &[Key] = &[
    k!("enabled", Bool),
    k!("intro_token", Str),
    k!("intro_token_file", Str),
    k!("server_addresses", StrList),
    k!("dns_sans", StrList),
    k!("ip_sans", StrList),
    k!("authorization", Block(AUTO_CONFIG_AUTHORIZATION)),
];

/// `auto_encrypt { ... }`
const AUTO_ENCRYPT: &[Key] = &[k!("tls", Bool), k!("dns_san", StrList), k!("ip_san", StrList), k!("allow_tls", Bool)];

// ---------------------------------------------------------------------------
// autopilot / cache / cloud / config_entries / connect
// ---------------------------------------------------------------------------

/// `autopilot { ... }`
const AUTOPILOT: &[Key] = &[
    k!("cleanup_dead_servers", Bool),
    k!("last_contact_threshold", Duration),
    k!("max_trailing_logs", Int),
    k!("min_quorum", Int),
    k!("server_stabilization_time", Duration),
    // Enterprise only.
    k!("disable_upgrade_migration", Bool),
    k!("redundancy_zone_tag", Str),
    k!("upgrade_version_tag", Str),
];

/// `cache { ... }`
const CACHE: &[Key] = &[
    k!("entry_fetch_max_burst", Int),
    // float (requests per second)
    k!("entry_fetch_rate", Any),
];

/// `cloud { ... }` (HCP link).
const CLOUD: &[Key] = &[
    k!("resource_id", Str),
    k!("client_id", Str),
    k!("client_secret", Str),
    k!("hostname", Str),
    k!("auth_url", Str),
    k!("scada_address", Str),
];

/// `config_entries { ... }`; the entries themselves are decoded elsewhere.
const CONFIG_ENTRIES: &[Key] = &[k!("bootstrap", Any)];

/// `connect { ... }`
const CONNECT: &[Key] = &[
    k!("enabled", Bool),
    k!("ca_provider", Str),
    // Provider-specific (consul / vault / aws-pca) and free-form.
    k!("ca_config", Any),
    k!("enable_mesh_gateway_wan_federation", Bool),
    // Internal: test tuning only.
    k!("test_ca_leaf_root_change_spread", Duration),
];

// ---------------------------------------------------------------------------
// consul { ... } (internal tuning, not user-facing, but decoded)
// ---------------------------------------------------------------------------

const CONSUL_COORDINATE: &[Key] =
    &[k!("update_batch_size", Int), k!("update_max_batches", Int), k!("update_period", Duration)];

const CONSUL_RAFT: &[Key] =
    &[k!("election_timeout", Duration), k!("heartbeat_timeout", Duration), k!("leader_lease_timeout", Duration)];

const CONSUL_SERVER: &[Key] = &[k!("health_interval", Duration)];

/// `consul { ... }`
const CONSUL_INTERNAL: &[Key] =
    &[k!("coordinate", Block(CONSUL_COORDINATE)), k!("raft", Block(CONSUL_RAFT)), k!("server", Block(CONSUL_SERVER))];

// ---------------------------------------------------------------------------
// dns_config
// ---------------------------------------------------------------------------

/// `dns_config.soa { ... }` (seconds, unsigned).
const DNS_SOA: &[Key] = &[k!("refresh", Int), k!("retry", Int), k!("expire", Int), k!("min_ttl", Int)];

/// `dns_config { ... }`
const DNS_CONFIG: &[Key] = &[
    k!("allow_stale", Bool),
    k!("a_record_limit", Int),
    k!("disable_compression", Bool),
    k!("enable_truncate", Bool),
    k!("max_stale", Duration),
    k!("node_ttl", Duration),
    k!("only_passing", Bool),
    k!("recursor_strategy", Str),
    k!("recursor_timeout", Duration),
    // service name (or "*") -> duration string
    k!("service_ttl", Map),
    k!("udp_answer_limit", Int),
    k!("enable_additional_node_meta_txt", Bool),
    k!("soa", Block(DNS_SOA)),
    k!("use_cache", Bool),
    k!("cache_max_age", Duration),
    // Enterprise only, deprecated.
    k!("prefer_namespace", Bool),
];

// ---------------------------------------------------------------------------
// gossip_lan / gossip_wan / http_config / limits
// ---------------------------------------------------------------------------

/// `gossip_lan { ... }` and `gossip_wan { ... }`
const GOSSIP: &[Key] = &[
    k!("gossip_nodes", Int),
    k!("gossip_interval", Duration),
    k!("probe_interval", Duration),
    k!("probe_timeout", Duration),
    k!("suspicion_mult", Int),
    k!("retransmit_mult", Int),
];

/// `http_config { ... }`
const HTTP_CONFIG: &[Key] = &[
    k!("block_endpoints", StrList),
    k!("allow_write_http_from", StrList),
    k!("response_headers", Map),
    k!("use_cache", Bool),
    k!("max_header_bytes", Int),
];

/// `limits.request_limits { ... }`
const LIMITS_REQUEST: &[Key] = &[
    k!("mode", Str),
    // float (requests per second; -1 = unlimited)
    k!("read_rate", Any),
    // float (requests per second; -1 = unlimited)
    k!("write_rate", Any),
];

/// `limits { ... }`
const LIMITS: &[Key] = &[
    k!("http_max_conns_per_client", Int),
    k!("https_handshake_timeout", Duration),
    k!("request_limits", Block(LIMITS_REQUEST)),
    k!("rpc_client_timeout", Duration),
    k!("rpc_handshake_timeout", Duration),
    k!("rpc_max_burst", Int),
    k!("rpc_max_conns_per_client", Int),
    // float (requests per second)
    k!("rpc_rate", Any),
    k!("kv_max_value_size", Int),
    k!("txn_max_req_len", Int),
    // Cairn's own key, the one exception to "only Consul's keys": Consul hard-codes the number of
    // operations in a `/v1/txn` request (128); Cairn defaults to the same and lets it be raised or
    // lowered. (Consul itself would reject a config file that sets it.)
    k!("txn_max_ops", Int),
];

// ---------------------------------------------------------------------------
// locality / peering / performance
// ---------------------------------------------------------------------------

/// `locality { ... }`
const LOCALITY: &[Key] = &[k!("region", Str), k!("zone", Str)];

/// `peering { ... }`
const PEERING: &[Key] = &[
    k!("enabled", Bool),
    // Internal: test only.
    k!("test_allow_peer_registrations", Bool),
];

/// `performance { ... }`
const PERFORMANCE: &[Key] = &[
    k!("leave_drain_time", Duration),
    k!("raft_multiplier", Int),
    k!("rpc_hold_timeout", Duration),
    k!("grpc_keepalive_interval", Duration),
    k!("grpc_keepalive_timeout", Duration),
    // 1.22; the docs list it both here and at the top level.
    k!("enable_xds_load_balancing", Bool),
];

// ---------------------------------------------------------------------------
// raft_boltdb (deprecated) / raft_logstore
// ---------------------------------------------------------------------------

/// `raft_boltdb { ... }` (deprecated; the field has no snake_case spelling).
const RAFT_BOLTDB_LEGACY: &[Key] = &[k!("NoFreelistSync", Bool)];

const RAFT_LOGSTORE_VERIFICATION: &[Key] = &[k!("enabled", Bool), k!("interval", Duration)];

const RAFT_LOGSTORE_BOLTDB: &[Key] = &[k!("no_freelist_sync", Bool)];

const RAFT_LOGSTORE_WAL: &[Key] = &[k!("segment_size_mb", Int)];

/// `raft_logstore { ... }`
const RAFT_LOGSTORE: &[Key] = &[
    k!("backend", Str),
    k!("disable_log_cache", Bool),
    k!("verification", Block(RAFT_LOGSTORE_VERIFICATION)),
    k!("boltdb", Block(RAFT_LOGSTORE_BOLTDB)),
    k!("wal", Block(RAFT_LOGSTORE_WAL)),
];

// ---------------------------------------------------------------------------
// reporting (Enterprise) / rpc / segments (Enterprise)
// ---------------------------------------------------------------------------

const REPORTING_LICENSE: &[Key] = &[k!("enabled", Bool)];

/// `reporting { ... }`
const REPORTING: &[Key] = &[k!("license", Block(REPORTING_LICENSE)), k!("snapshot_retention_time", Duration)];

/// `rpc { ... }`
const RPC: &[Key] = &[k!("enable_streaming", Bool)];

/// `segments = [ { ... } ]`
const SEGMENT: &[Key] =
    &[k!("name", Str), k!("bind", Str), k!("port", Int), k!("advertise", Str), k!("rpc_listener", Bool)];

// ---------------------------------------------------------------------------
// telemetry
// ---------------------------------------------------------------------------

/// `telemetry { ... }`
const TELEMETRY: &[Key] = &[
    k!("circonus_api_app", Str),
    k!("circonus_api_token", Str),
    k!("circonus_api_url", Str),
    k!("circonus_broker_id", Str),
    k!("circonus_broker_select_tag", Str),
    k!("circonus_check_display_name", Str),
    k!("circonus_check_force_metric_activation", Str),
    k!("circonus_check_id", Str),
    k!("circonus_check_instance_id", Str),
    k!("circonus_check_search_tag", Str),
    k!("circonus_check_tags", Str),
    // Passed through to the Circonus client as a string.
    k!("circonus_submission_interval", Str),
    k!("circonus_submission_url", Str),
    k!("disable_hostname", Bool),
    k!("disable_per_tenancy_usage_metrics", Bool),
    k!("dogstatsd_addr", Str),
    k!("dogstatsd_tags", StrList),
    k!("enable_host_metrics", Bool),
    k!("filter_default", Bool),
    k!("metrics_prefix", Str),
    k!("prefix_filter", StrList),
    k!("prometheus_retention_time", Duration),
    k!("retry_failed_connection", Bool),
    k!("statsd_address", Str),
    k!("statsite_address", Str),
];

// ---------------------------------------------------------------------------
// tls
// ---------------------------------------------------------------------------

/// One `tls.<interface> { ... }` stanza. Consul decodes all four stanzas
/// (defaults, internal_rpc, https, grpc) with the same set of fields, so every
/// field is accepted in each, even where it has no effect.
const TLS_PROTOCOL: &[Key] = &[
    k!("ca_file", Str),
    k!("ca_path", Str),
    k!("cert_file", Str),
    k!("key_file", Str),
    k!("tls_min_version", Str),
    // Comma-separated list in a single string.
    k!("tls_cipher_suites", Str),
    k!("verify_incoming", Bool),
    k!("verify_outgoing", Bool),
    k!("verify_server_hostname", Bool),
    k!("use_auto_cert", Bool),
];

/// `tls { ... }`
const TLS: &[Key] = &[
    k!("defaults", Block(TLS_PROTOCOL)),
    k!("internal_rpc", Block(TLS_PROTOCOL)),
    k!("https", Block(TLS_PROTOCOL)),
    k!("grpc", Block(TLS_PROTOCOL)),
];

// ---------------------------------------------------------------------------
// ui_config / xds
// ---------------------------------------------------------------------------

/// `ui_config.metrics_proxy.add_headers[]`
const UI_METRICS_PROXY_HEADER: &[Key] = &[k!("name", Str), k!("value", Str)];

/// `ui_config.metrics_proxy { ... }`
const UI_METRICS_PROXY: &[Key] =
    &[k!("base_url", Str), k!("add_headers", BlockList(UI_METRICS_PROXY_HEADER)), k!("path_allowlist", StrList)];

/// `ui_config { ... }`
const UI_CONFIG: &[Key] = &[
    k!("enabled", Bool),
    k!("dir", Str),
    k!("content_path", Str),
    k!("metrics_provider", Str),
    k!("metrics_provider_files", StrList),
    // A JSON object encoded as a string.
    k!("metrics_provider_options_json", Str),
    k!("metrics_proxy", Block(UI_METRICS_PROXY)),
    // template name -> URL
    k!("dashboard_url_templates", Map),
];

/// `xds { ... }`
const XDS: &[Key] = &[
    // float (updates per second)
    k!("update_max_per_second", Any),
];

// ---------------------------------------------------------------------------
// top level
// ---------------------------------------------------------------------------

/// Every key Consul accepts at the top level of an agent config file.
pub static TOP: &[Key] = &[
    k!("acl", Block(ACL)),
    // Deprecated top-level ACL names (moved into `acl` / `primary_datacenter`).
    k!("acl_agent_master_token", Str),
    k!("acl_agent_token", Str),
    k!("acl_datacenter", Str),
    k!("acl_default_policy", Str),
    k!("acl_down_policy", Str),
    k!("acl_enable_key_list_policy", Bool),
    // Removed in Consul 1.8, but still tolerated with a warning.
    k!("acl_enforce_version_8", Bool),
    k!("acl_master_token", Str),
    k!("acl_replication_token", Str),
    k!("acl_token", Str),
    k!("acl_ttl", Duration),
    k!("addresses", Block(ADDRESSES)),
    k!("advertise_addr", Str),
    k!("advertise_addr_ipv4", Str),
    k!("advertise_addr_ipv6", Str),
    k!("advertise_addr_wan", Str),
    k!("advertise_addr_wan_ipv4", Str),
    k!("advertise_addr_wan_ipv6", Str),
    k!("advertise_reconnect_timeout", Duration),
    // Internal.
    k!("ae_interval", Duration),
    k!("alt_domain", Str),
    // Enterprise only.
    k!("audit", Block(AUDIT)),
    k!("auto_config", Block(AUTO_CONFIG)),
    k!("auto_encrypt", Block(AUTO_ENCRYPT)),
    k!("auto_reload_config", Bool),
    k!("autopilot", Block(AUTOPILOT)),
    k!("bind_addr", Str),
    k!("bootstrap", Bool),
    k!("bootstrap_expect", Int),
    // Internal (a timestamp).
    k!("build_date", Str),
    // Deprecated: tls.defaults.ca_file.
    k!("ca_file", Str),
    // Deprecated: tls.defaults.ca_path.
    k!("ca_path", Str),
    k!("cache", Block(CACHE)),
    // Deprecated: tls.defaults.cert_file.
    k!("cert_file", Str),
    // A check definition; decoded elsewhere.
    k!("check", Any),
    // Internal.
    k!("check_deregister_interval_min", Duration),
    k!("check_output_max_size", Int),
    // Internal.
    k!("check_reap_interval", Duration),
    k!("check_update_interval", Duration),
    // Check definitions; decoded elsewhere.
    k!("checks", Any),
    k!("client_addr", Str),
    k!("cloud", Block(CLOUD)),
    k!("config_entries", Block(CONFIG_ENTRIES)),
    k!("connect", Block(CONNECT)),
    // Internal.
    k!("consul", Block(CONSUL_INTERNAL)),
    k!("data_dir", Str),
    k!("datacenter", Str),
    k!("default_query_time", Duration),
    k!("disable_anonymous_signature", Bool),
    k!("disable_coordinates", Bool),
    k!("disable_host_node_id", Bool),
    k!("disable_http_unprintable_char_filter", Bool),
    k!("disable_keyring_file", Bool),
    // 1.22.
    k!("disable_kv_key_validation", Bool),
    k!("disable_remote_exec", Bool),
    k!("disable_update_check", Bool),
    k!("discard_check_output", Bool),
    k!("discovery_max_stale", Duration),
    k!("dns_config", Block(DNS_CONFIG)),
    k!("domain", Str),
    // Deprecated: acl.enable_token_replication.
    k!("enable_acl_replication", Bool),
    k!("enable_agent_tls_for_checks", Bool),
    k!("enable_central_service_config", Bool),
    k!("enable_debug", Bool),
    k!("enable_local_script_checks", Bool),
    k!("enable_script_checks", Bool),
    k!("enable_syslog", Bool),
    // 1.22; the docs list it both here and under `performance`.
    k!("enable_xds_load_balancing", Bool),
    k!("encrypt", Str),
    k!("encrypt_verify_incoming", Bool),
    k!("encrypt_verify_outgoing", Bool),
    k!("experiments", StrList),
    k!("gossip_lan", Block(GOSSIP)),
    k!("gossip_wan", Block(GOSSIP)),
    k!("http_config", Block(HTTP_CONFIG)),
    // Deprecated: tls.defaults.key_file.
    k!("key_file", Str),
    k!("leave_on_terminate", Bool),
    // Enterprise only.
    k!("license_path", Str),
    // Enterprise, internal.
    k!("license_poll_base_time", Duration),
    k!("license_poll_max_time", Duration),
    k!("license_update_base_time", Duration),
    k!("license_update_max_time", Duration),
    k!("limits", Block(LIMITS)),
    k!("locality", Block(LOCALITY)),
    k!("log_file", Str),
    k!("log_json", Bool),
    k!("log_level", Str),
    k!("log_rotate_bytes", Int),
    k!("log_rotate_duration", Duration),
    k!("log_rotate_max_files", Int),
    // Per-subsystem log levels (logger name -> level).
    k!("log_sublevels", Map),
    k!("max_query_time", Duration),
    k!("node_id", Str),
    k!("node_meta", Map),
    k!("node_name", Str),
    // Deprecated alias of read_replica (Enterprise only).
    k!("non_voting_server", Bool),
    // Enterprise only.
    k!("partition", Str),
    k!("peering", Block(PEERING)),
    k!("performance", Block(PERFORMANCE)),
    k!("pid_file", Str),
    k!("ports", Block(PORTS)),
    k!("primary_datacenter", Str),
    k!("primary_gateways", StrList),
    k!("primary_gateways_interval", Duration),
    k!("protocol", Int),
    // Deprecated: raft_logstore.boltdb.
    k!("raft_boltdb", Block(RAFT_BOLTDB_LEGACY)),
    k!("raft_logstore", Block(RAFT_LOGSTORE)),
    k!("raft_protocol", Int),
    k!("raft_snapshot_interval", Duration),
    k!("raft_snapshot_threshold", Int),
    k!("raft_trailing_logs", Int),
    // Enterprise only.
    k!("read_replica", Bool),
    k!("reconnect_timeout", Duration),
    k!("reconnect_timeout_wan", Duration),
    k!("recursors", StrList),
    k!("rejoin_after_leave", Bool),
    // Enterprise only.
    k!("reporting", Block(REPORTING)),
    k!("retry_interval", Duration),
    k!("retry_interval_wan", Duration),
    k!("retry_join", StrList),
    k!("retry_join_wan", StrList),
    k!("retry_max", Int),
    k!("retry_max_wan", Int),
    // Internal.
    k!("revision", Str),
    k!("rpc", Block(RPC)),
    // Enterprise only.
    k!("segment", Str),
    // Internal.
    k!("segment_limit", Int),
    k!("segment_name_limit", Int),
    // Enterprise only.
    k!("segments", BlockList(SEGMENT)),
    k!("serf_lan", Str),
    k!("serf_lan_allowed_cidrs", StrList),
    k!("serf_wan", Str),
    k!("serf_wan_allowed_cidrs", StrList),
    k!("server", Bool),
    k!("server_name", Str),
    k!("server_rejoin_age_max", Duration),
    // A service definition; decoded elsewhere.
    k!("service", Any),
    // Service definitions; decoded elsewhere.
    k!("services", Any),
    k!("session_ttl_min", Duration),
    k!("skip_leave_on_interrupt", Bool),
    // Placeholder for snapshot-agent config living alongside agent config.
    k!("snapshot_agent", Any),
    // Deprecated: retry_join.
    k!("start_join", StrList),
    // Deprecated: retry_join_wan.
    k!("start_join_wan", StrList),
    // Internal.
    k!("sync_coordinate_interval_min", Duration),
    // Internal; float.
    k!("sync_coordinate_rate_target", Any),
    k!("syslog_facility", Str),
    k!("tagged_addresses", Map),
    k!("telemetry", Block(TELEMETRY)),
    k!("tls", Block(TLS)),
    // Deprecated: tls.defaults.tls_cipher_suites.
    k!("tls_cipher_suites", Str),
    // Deprecated: tls.defaults.tls_min_version.
    k!("tls_min_version", Str),
    // Deprecated and ignored by Consul.
    k!("tls_prefer_server_cipher_suites", Bool),
    k!("translate_wan_addrs", Bool),
    // Deprecated: ui_config.enabled.
    k!("ui", Bool),
    k!("ui_config", Block(UI_CONFIG)),
    // Deprecated: ui_config.content_path.
    k!("ui_content_path", Str),
    // Deprecated: ui_config.dir.
    k!("ui_dir", Str),
    k!("unix_sockets", Block(UNIX_SOCKETS)),
    k!("use_streaming_backend", Bool),
    // Deprecated: tls.defaults.verify_incoming.
    k!("verify_incoming", Bool),
    // Deprecated: tls.https.verify_incoming.
    k!("verify_incoming_https", Bool),
    // Deprecated: tls.internal_rpc.verify_incoming.
    k!("verify_incoming_rpc", Bool),
    // Deprecated: tls.defaults.verify_outgoing.
    k!("verify_outgoing", Bool),
    // Deprecated: tls.internal_rpc.verify_server_hostname.
    k!("verify_server_hostname", Bool),
    // Internal.
    k!("version", Str),
    k!("version_metadata", Str),
    k!("version_prerelease", Str),
    // Watch definitions; decoded elsewhere.
    k!("watches", Any),
    k!("xds", Block(XDS)),
];

// ---------------------------------------------------------------------------
// side tables (dotted paths into TOP)
// ---------------------------------------------------------------------------

/// Deprecated names Consul still accepts, with the name that replaces each
/// (`""` when there is none and the key is simply ignored).
pub static DEPRECATED: &[(&str, &str)] = &[
    ("acl_agent_master_token", "acl.tokens.agent_recovery"),
    ("acl_agent_token", "acl.tokens.agent"),
    ("acl_datacenter", "primary_datacenter"),
    ("acl_default_policy", "acl.default_policy"),
    ("acl_down_policy", "acl.down_policy"),
    ("acl_enable_key_list_policy", "acl.enable_key_list_policy"),
    ("acl_enforce_version_8", ""),
    ("acl_master_token", "acl.tokens.initial_management"),
    ("acl_replication_token", "acl.tokens.replication"),
    ("acl_token", "acl.tokens.default"),
    ("acl_ttl", "acl.token_ttl"),
    ("acl.tokens.master", "acl.tokens.initial_management"),
    ("acl.tokens.agent_master", "acl.tokens.agent_recovery"),
    ("enable_acl_replication", "acl.enable_token_replication"),
    ("ca_file", "tls.defaults.ca_file"),
    ("ca_path", "tls.defaults.ca_path"),
    ("cert_file", "tls.defaults.cert_file"),
    ("key_file", "tls.defaults.key_file"),
    ("tls_cipher_suites", "tls.defaults.tls_cipher_suites"),
    ("tls_min_version", "tls.defaults.tls_min_version"),
    ("tls_prefer_server_cipher_suites", ""),
    ("verify_incoming", "tls.defaults.verify_incoming"),
    ("verify_incoming_https", "tls.https.verify_incoming"),
    ("verify_incoming_rpc", "tls.internal_rpc.verify_incoming"),
    ("verify_outgoing", "tls.defaults.verify_outgoing"),
    ("verify_server_hostname", "tls.internal_rpc.verify_server_hostname"),
    ("start_join", "retry_join"),
    ("start_join_wan", "retry_join_wan"),
    ("raft_boltdb", "raft_logstore.boltdb"),
    ("ui", "ui_config.enabled"),
    ("ui_dir", "ui_config.dir"),
    ("ui_content_path", "ui_config.content_path"),
    ("non_voting_server", "read_replica"),
];

/// Enterprise-only names: Consul CE accepts them and warns that they have no
/// effect.
pub static ENTERPRISE_ONLY: &[&str] = &[
    "read_replica",
    "non_voting_server",
    "segment",
    "segments",
    "partition",
    "autopilot.redundancy_zone_tag",
    "autopilot.upgrade_version_tag",
    "autopilot.disable_upgrade_migration",
    "dns_config.prefer_namespace",
    "acl.msp_disable_bootstrap",
    "acl.tokens.managed_service_provider",
    "audit",
    "license_path",
    "reporting",
];

/// Names the decoder accepts that are not meant to be set by users (internal
/// tuning, version stamping, test hooks).
pub static INTERNAL: &[&str] = &[
    "ae_interval",
    "build_date",
    "check_deregister_interval_min",
    "check_reap_interval",
    "consul",
    "license_poll_base_time",
    "license_poll_max_time",
    "license_update_base_time",
    "license_update_max_time",
    "revision",
    "segment_limit",
    "segment_name_limit",
    "sync_coordinate_interval_min",
    "sync_coordinate_rate_target",
    "version",
    "version_metadata",
    "version_prerelease",
    "connect.test_ca_leaf_root_change_spread",
    "peering.test_allow_peer_registrations",
];

/// Keys whose value is a (possibly fractional) number; typed [`Kind::Any`]
/// above because the schema has no float kind.
pub static FLOAT_KEYS: &[&str] = &[
    "cache.entry_fetch_rate",
    "limits.rpc_rate",
    "limits.request_limits.read_rate",
    "limits.request_limits.write_rate",
    "sync_coordinate_rate_target",
    "xds.update_max_per_second",
];

// ---------------------------------------------------------------------------
// lookups
// ---------------------------------------------------------------------------

/// Finds `name` among `keys`: exact match first, then ASCII case-insensitive
/// (Consul's decoder falls back to a case-insensitive field match).
pub fn find(keys: &'static [Key], name: &str) -> Option<&'static Key> {
    keys.iter().find(|key| key.name == name).or_else(|| keys.iter().find(|key| key.name.eq_ignore_ascii_case(name)))
}

/// Walks the tree from [`TOP`] along `path` (one key per element; list
/// indexes are not part of the path) and returns the kind found there.
///
/// * Below a [`Kind::Block`] or [`Kind::BlockList`], the next element must
///   be one of its keys.
/// * Anything below a [`Kind::Any`] is accepted and reported as `Any`.
/// * One level below a [`Kind::Map`], any key is accepted and reported as
///   [`Kind::Str`]; deeper paths are not.
/// * Below a scalar or a list of strings, nothing is accepted.
///
/// An empty path or an unknown key gives `None`.
pub fn lookup(path: &[&str]) -> Option<Kind> {
    let (first, rest) = path.split_first()?;
    descend(find(TOP, first)?.kind, rest)
}

fn descend(kind: Kind, rest: &[&str]) -> Option<Kind> {
    let Some((next, tail)) = rest.split_first() else {
        return Some(kind);
    };
    match kind {
        Block(keys) | BlockList(keys) => descend(find(keys, next)?.kind, tail),
        Any => Some(Any),
        Map if tail.is_empty() => Some(Str),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(dotted: &str) -> Option<Kind> {
        let path: Vec<&str> = dotted.split('.').collect();
        lookup(&path)
    }

    #[test]
    fn known_scalars_have_their_kind() {
        assert_eq!(lookup(&["ports", "http"]), Some(Kind::Int));
        assert_eq!(lookup(&["data_dir"]), Some(Kind::Str));
        assert_eq!(lookup(&["server"]), Some(Kind::Bool));
        assert_eq!(lookup(&["retry_join"]), Some(Kind::StrList));
        assert_eq!(lookup(&["reconnect_timeout"]), Some(Kind::Duration));
        assert_eq!(at("acl.tokens.initial_management"), Some(Kind::Str));
        assert_eq!(at("tls.grpc.use_auto_cert"), Some(Kind::Bool));
        assert_eq!(at("tls.internal_rpc.verify_server_hostname"), Some(Kind::Bool));
        assert_eq!(at("telemetry.prometheus_retention_time"), Some(Kind::Duration));
        assert_eq!(at("limits.request_limits.mode"), Some(Kind::Str));
        assert_eq!(at("raft_logstore.wal.segment_size_mb"), Some(Kind::Int));
        assert_eq!(at("ui_config.metrics_proxy.add_headers.name"), Some(Kind::Str));
        assert_eq!(at("segments.rpc_listener"), Some(Kind::Bool));
        assert_eq!(at("acl.tokens.managed_service_provider.secret_id"), Some(Kind::Str));
        assert!(matches!(lookup(&["acl"]), Some(Kind::Block(_))));
        assert!(matches!(lookup(&["segments"]), Some(Kind::BlockList(_))));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert_eq!(lookup(&["bogus"]), None);
        assert_eq!(lookup(&[]), None);
        assert_eq!(lookup(&["ports", "bogus"]), None);
        assert_eq!(at("acl.tokens.bogus"), None);
        // Nothing lives below a scalar or a string list.
        assert_eq!(lookup(&["data_dir", "x"]), None);
        assert_eq!(lookup(&["retry_join", "x"]), None);
        // Removed from Consul long ago.
        assert_eq!(lookup(&["statsite_prefix"]), None);
        assert_eq!(lookup(&["acl_disabled_ttl"]), None);
    }

    #[test]
    fn opaque_and_map_subtrees() {
        assert_eq!(at("service.name"), Some(Kind::Any));
        assert_eq!(at("services.connect.sidecar_service.port"), Some(Kind::Any));
        assert_eq!(at("config_entries.bootstrap.kind"), Some(Kind::Any));
        assert_eq!(at("connect.ca_config.leaf_cert_ttl"), Some(Kind::Any));
        assert_eq!(at("node_meta.rack"), Some(Kind::Str));
        assert_eq!(at("node_meta.rack.deeper"), None);
        assert_eq!(at("http_config.response_headers.Access-Control-Allow-Origin"), Some(Kind::Str));
    }

    #[test]
    fn matching_falls_back_to_case_insensitive() {
        assert_eq!(lookup(&["Ports", "HTTP"]), Some(Kind::Int));
        assert_eq!(at("raft_boltdb.NoFreelistSync"), Some(Kind::Bool));
        assert_eq!(at("raft_boltdb.nofreelistsync"), Some(Kind::Bool));
    }

    #[test]
    fn documented_top_level_keys_are_present() {
        const DOCUMENTED: &str = "
            acl addresses advertise_addr advertise_addr_wan advertise_reconnect_timeout
            audit auto_config auto_encrypt autopilot auto_reload_config bind_addr
            bootstrap bootstrap_expect cache check checks check_update_interval
            client_addr cloud config_entries connect data_dir datacenter
            default_query_time disable_anonymous_signature disable_host_node_id
            disable_keyring_file disable_remote_exec disable_update_check
            discard_check_output discovery_max_stale dns_config domain alt_domain
            enable_acl_replication enable_agent_tls_for_checks
            enable_central_service_config enable_debug enable_local_script_checks
            enable_script_checks enable_syslog encrypt encrypt_verify_incoming
            encrypt_verify_outgoing gossip_lan gossip_wan http_config
            leave_on_terminate license_path limits log_file log_level log_json
            log_rotate_bytes log_rotate_duration log_rotate_max_files max_query_time
            node_id node_meta node_name peering performance pid_file ports
            primary_datacenter primary_gateways protocol raft_boltdb raft_logstore
            raft_protocol raft_snapshot_interval raft_snapshot_threshold
            raft_trailing_logs read_replica reconnect_timeout reconnect_timeout_wan
            recursors reporting retry_interval retry_join retry_max rpc segment
            segments serf_lan serf_wan server server_name service services
            session_ttl_min skip_leave_on_interrupt start_join syslog_facility
            telemetry tls ca_file cert_file key_file verify_incoming verify_outgoing
            verify_server_hostname tls_min_version translate_wan_addrs ui ui_config
            ui_dir unix_sockets use_streaming_backend watches xds experiments
            acl_datacenter acl_default_policy acl_master_token acl_token
        ";
        for name in DOCUMENTED.split_whitespace() {
            assert!(lookup(&[name]).is_some(), "missing top-level key {name}");
        }
    }

    #[test]
    fn side_tables_point_into_the_tree() {
        for (old, new) in DEPRECATED {
            assert!(at(old).is_some(), "deprecated key {old} not in tree");
            if !new.is_empty() {
                assert!(at(new).is_some(), "replacement {new} not in tree");
            }
        }
        for path in ENTERPRISE_ONLY.iter().chain(INTERNAL).chain(FLOAT_KEYS) {
            assert!(at(path).is_some(), "{path} not in tree");
        }
        for path in FLOAT_KEYS {
            assert_eq!(at(path), Some(Kind::Any), "{path} should be Any");
        }
    }

    #[test]
    fn no_duplicate_names_in_any_block() {
        fn check(keys: &'static [Key], at: &str) {
            for (i, a) in keys.iter().enumerate() {
                for b in &keys[i + 1..] {
                    assert!(!a.name.eq_ignore_ascii_case(b.name), "duplicate key {} in {at}", a.name);
                }
                if let Kind::Block(sub) | Kind::BlockList(sub) = a.kind {
                    check(sub, &format!("{at}.{}", a.name));
                }
            }
        }
        check(TOP, "<top>");
    }
}
