//! A typed client for the `/v1` HTTP API, used by the CLI and by tests. It speaks to Cairn or to
//! Consul alike.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use cairn_types::coordinate::{Coordinate, CoordinateEntry};
pub use cairn_types::structs::{DirEntry, HealthCheck, Node, NodeService, ServiceEntry, ServiceNode, UserEvent};

/// Response metadata of a read.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryMeta {
    pub index: u64,
    pub known_leader: bool,
}

#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    pub index: u64,
    pub wait: Option<Duration>,
    pub stale: bool,
    pub consistent: bool,
    pub filter: Option<String>,
    pub datacenter: Option<String>,
    /// `?near=` (a node name or `_agent`).
    pub near: Option<String>,
    /// `?node-meta=key:value` pairs.
    pub node_meta: Vec<(String, String)>,
}

#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
    /// `CONSUL_HTTP_AUTH`: HTTP basic auth, user and optional password.
    auth: Option<(String, Option<String>)>,
}

/// Connection settings a command's flags give; each unset one comes from its `CONSUL_*` variable.
/// (`CONSUL_NAMESPACE` and `CONSUL_PARTITION` are Enterprise features and are ignored.)
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    pub addr: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<String>,
    pub ca_file: Option<String>,
    pub ca_path: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub tls_server_name: Option<String>,
}

/// Go's `strconv.ParseBool`.
fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// An error status from the agent, with its body.
#[derive(Debug, thiserror::Error)]
#[error("Unexpected response code: {status} ({body})")]
pub struct ApiError {
    pub status: u16,
    pub body: String,
}

impl Client {
    /// `addr` is `host:port`, `http://host:port` or `https://host:port`.
    pub fn new(addr: &str) -> Result<Self> {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{addr}")
        };
        let http =
            reqwest::Client::builder().timeout(Duration::from_secs(15 * 60)).build().context("building HTTP client")?;
        Ok(Client { base, http, token: None, auth: None })
    }

    /// From `CONSUL_HTTP_ADDR` (default `127.0.0.1:8500`) and the other `CONSUL_*` variables.
    pub fn from_env(addr_flag: Option<&str>) -> Result<Self> {
        Self::connect(&ClientConfig { addr: addr_flag.map(str::to_string), ..ClientConfig::default() })
    }

    /// Builds a client as Consul's `api.DefaultConfig` plus the command's flags would: each
    /// setting from its flag when given, else from its environment variable.
    pub fn connect(flags: &ClientConfig) -> Result<Self> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let pick = |flag: &Option<String>, var: &str| flag.clone().or_else(|| env(var));
        let addr = pick(&flags.addr, "CONSUL_HTTP_ADDR").unwrap_or_else(|| "127.0.0.1:8500".into());
        let (mut scheme, rest) = match addr.split_once("://") {
            Some(("http", r)) => ("http", r.to_string()),
            Some(("https", r)) => ("https", r.to_string()),
            Some(("unix", r)) => ("unix", r.to_string()),
            Some((other, _)) => return Err(anyhow!("Unknown protocol scheme: {other}")),
            None => ("http", addr.clone()),
        };
        // As Consul: CONSUL_HTTP_SSL=true means https whatever the address says.
        if env("CONSUL_HTTP_SSL").and_then(|v| go_bool(&v)) == Some(true) && scheme == "http" {
            scheme = "https";
        }
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(15 * 60));
        let mut host = rest.trim_end_matches('/').to_string();
        if scheme == "unix" {
            b = b.unix_socket(std::path::PathBuf::from(&rest));
            host = "localhost".into();
        }
        if env("CONSUL_HTTP_SSL_VERIFY").and_then(|v| go_bool(&v)) == Some(false) {
            b = b.danger_accept_invalid_certs(true);
        }
        if let Some(ca) = pick(&flags.ca_file, "CONSUL_CACERT") {
            let pem = std::fs::read(&ca).with_context(|| format!("Error loading CA File: {ca}"))?;
            for c in
                reqwest::Certificate::from_pem_bundle(&pem).with_context(|| format!("Error loading CA File: {ca}"))?
            {
                b = b.add_root_certificate(c);
            }
        }
        if let Some(dir) = pick(&flags.ca_path, "CONSUL_CAPATH") {
            let rd = std::fs::read_dir(&dir).with_context(|| format!("Error loading CA Path: {dir}"))?;
            for e in rd.flatten().filter(|e| e.path().is_file()) {
                let pem = std::fs::read(e.path())?;
                for c in reqwest::Certificate::from_pem_bundle(&pem).unwrap_or_default() {
                    b = b.add_root_certificate(c);
                }
            }
        }
        match (pick(&flags.client_cert, "CONSUL_CLIENT_CERT"), pick(&flags.client_key, "CONSUL_CLIENT_KEY")) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                let mut pem = std::fs::read(&cert).with_context(|| format!("Error loading client cert: {cert}"))?;
                pem.push(b'\n');
                pem.extend(std::fs::read(&key).with_context(|| format!("Error loading client key: {key}"))?);
                b = b.identity(reqwest::Identity::from_pem(&pem).context("Error loading client certificate")?);
            }
            _ => return Err(anyhow!("both client cert and client key must be provided")),
        }
        // A TLS server name other than the address's host: connect to the address, but verify
        // (and send SNI for) the given name.
        if let Some(name) = pick(&flags.tls_server_name, "CONSUL_TLS_SERVER_NAME") {
            let name = name.rsplit_once(':').map_or(name.as_str(), |(h, _)| h).to_string();
            if scheme == "https" && name != host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h) {
                use std::net::ToSocketAddrs;
                let sock = host.to_socket_addrs().ok().and_then(|mut a| a.next());
                let port = sock.map(|a| a.port()).unwrap_or(443);
                if let Some(sock) = sock {
                    b = b.resolve(&name, sock);
                }
                host = format!("{name}:{port}");
            }
        }
        let http = b.build().context("building HTTP client")?;
        let base = format!("{}://{host}", if scheme == "https" { "https" } else { "http" });
        let mut token = pick(&flags.token, "CONSUL_HTTP_TOKEN");
        // A token file wins when it holds a token, as in Consul.
        if let Some(f) = pick(&flags.token_file, "CONSUL_HTTP_TOKEN_FILE") {
            let t = std::fs::read_to_string(&f).map_err(|e| anyhow!("Error loading token file: {e}"))?;
            if !t.trim().is_empty() {
                token = Some(t.trim().to_string());
            }
        }
        let auth = env("CONSUL_HTTP_AUTH").map(|a| match a.split_once(':') {
            Some((u, p)) => (u.to_string(), Some(p.to_string())),
            None => (a, None),
        });
        Ok(Client { base, http, token, auth })
    }

    /// The underlying HTTP client (TLS, Unix socket and all), for callers that make their own requests.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str, q: &[(String, String)], opts: Option<&QueryOptions>) -> String {
        let mut pairs: Vec<(String, String)> = q.to_vec();
        if let Some(o) = opts {
            if o.index > 0 {
                pairs.push(("index".into(), o.index.to_string()));
            }
            if let Some(w) = o.wait {
                pairs.push(("wait".into(), format!("{}ms", w.as_millis())));
            }
            if o.stale {
                pairs.push(("stale".into(), String::new()));
            }
            if o.consistent {
                pairs.push(("consistent".into(), String::new()));
            }
            if let Some(f) = &o.filter {
                pairs.push(("filter".into(), f.clone()));
            }
            if let Some(n) = &o.near {
                pairs.push(("near".into(), n.clone()));
            }
            for (k, v) in &o.node_meta {
                pairs.push(("node-meta".into(), format!("{k}:{v}")));
            }
            if let Some(dc) = &o.datacenter {
                pairs.push(("dc".into(), dc.clone()));
            }
        }
        let mut url = format!("{}{}", self.base, path);
        if !pairs.is_empty() {
            let mut ser = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &pairs {
                ser.append_pair(k, v);
            }
            url.push('?');
            url.push_str(&ser.finish());
        }
        url
    }

    async fn send(&self, method: Method, url: String, body: Option<Vec<u8>>) -> Result<reqwest::Response> {
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.header("X-Consul-Token", t);
        }
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, p.as_deref());
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        req.send().await.with_context(|| format!("Error connecting to agent at {}", self.base))
    }

    fn meta(resp: &reqwest::Response) -> QueryMeta {
        let h = resp.headers();
        QueryMeta {
            index: h.get("X-Consul-Index").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0),
            known_leader: h.get("X-Consul-KnownLeader").map(|v| v == "true").unwrap_or(false),
        }
    }

    async fn error(resp: reqwest::Response) -> anyhow::Error {
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        anyhow!(ApiError { status, body })
    }

    /// GET returning JSON; `None` on 404.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        q: &[(String, String)],
        opts: Option<&QueryOptions>,
    ) -> Result<(Option<T>, QueryMeta)> {
        let resp = self.send(Method::GET, self.url(path, q, opts), None).await?;
        let meta = Self::meta(&resp);
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok((None, meta));
        }
        if !resp.status().is_success() {
            return Err(Self::error(resp).await);
        }
        let v = resp.json().await.context("decoding response")?;
        Ok((Some(v), meta))
    }

    /// PUT with a body; returns the decoded JSON (or `Null` for an empty body).
    pub async fn put(&self, path: &str, q: &[(String, String)], body: Option<Vec<u8>>) -> Result<Value> {
        self.write(Method::PUT, path, q, body).await
    }

    pub async fn delete(&self, path: &str, q: &[(String, String)]) -> Result<Value> {
        self.write(Method::DELETE, path, q, None).await
    }

    /// Any method with a body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        q: &[(String, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Value> {
        self.write(method, path, q, body).await
    }

    /// `GET /v1/snapshot`: the archive and the index it holds.
    pub async fn snapshot_save(&self, opts: &QueryOptions) -> Result<(Vec<u8>, u64)> {
        let resp = self.send(Method::GET, self.url("/v1/snapshot", &[], Some(opts)), None).await?;
        if !resp.status().is_success() {
            return Err(Self::error(resp).await);
        }
        let meta = Self::meta(&resp);
        let body = resp.bytes().await.context("reading the snapshot")?;
        Ok((body.to_vec(), meta.index))
    }

    /// `PUT /v1/snapshot`: restores an archive.
    pub async fn snapshot_restore(&self, archive: Vec<u8>) -> Result<()> {
        let resp = self.send(Method::PUT, self.url("/v1/snapshot", &[], None), Some(archive)).await?;
        if !resp.status().is_success() {
            return Err(Self::error(resp).await);
        }
        Ok(())
    }

    pub async fn agent_join(&self, addr: &str, wan: bool) -> Result<()> {
        let q: Vec<(String, String)> = if wan { vec![("wan".into(), "1".into())] } else { vec![] };
        self.put(&format!("/v1/agent/join/{}", seg(addr)), &q, None).await.map(|_| ())
    }

    pub async fn agent_force_leave(&self, node: &str, prune: bool, wan: bool) -> Result<()> {
        let mut q: Vec<(String, String)> = Vec::new();
        if prune {
            q.push(("prune".into(), "1".into()));
        }
        if wan {
            q.push(("wan".into(), "1".into()));
        }
        self.put(&format!("/v1/agent/force-leave/{}", seg(node)), &q, None).await.map(|_| ())
    }

    async fn write(&self, method: Method, path: &str, q: &[(String, String)], body: Option<Vec<u8>>) -> Result<Value> {
        let resp = self.send(method, self.url(path, q, None), body).await?;
        if !resp.status().is_success() {
            return Err(Self::error(resp).await);
        }
        let bytes = resp.bytes().await?;
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).context("decoding response")
    }

    // ---- KV ------------------------------------------------------------------------------------

    pub async fn kv_get(&self, key: &str, opts: &QueryOptions) -> Result<(Option<DirEntry>, QueryMeta)> {
        let (v, m) = self.get_json::<Vec<DirEntry>>(&kv_path(key), &[], Some(opts)).await?;
        Ok((v.and_then(|mut v| v.pop()), m))
    }

    pub async fn kv_list(&self, prefix: &str, opts: &QueryOptions) -> Result<(Vec<DirEntry>, QueryMeta)> {
        let (v, m) =
            self.get_json::<Vec<DirEntry>>(&kv_path(prefix), &[("recurse".into(), String::new())], Some(opts)).await?;
        Ok((v.unwrap_or_default(), m))
    }

    pub async fn kv_keys(
        &self,
        prefix: &str,
        separator: &str,
        opts: &QueryOptions,
    ) -> Result<(Vec<String>, QueryMeta)> {
        let mut q = vec![("keys".to_string(), String::new())];
        if !separator.is_empty() {
            q.push(("separator".into(), separator.into()));
        }
        let (v, m) = self.get_json::<Vec<String>>(&kv_path(prefix), &q, Some(opts)).await?;
        Ok((v.unwrap_or_default(), m))
    }

    /// Plain put (or CAS with `cas = Some(index)`); returns whether it was written.
    pub async fn kv_put(&self, key: &str, value: &[u8], flags: u64, cas: Option<u64>) -> Result<bool> {
        let mut q = Vec::new();
        if flags != 0 {
            q.push(("flags".to_string(), flags.to_string()));
        }
        if let Some(c) = cas {
            q.push(("cas".into(), c.to_string()));
        }
        let v = self.put(&kv_path(key), &q, Some(value.to_vec())).await?;
        v.as_bool().ok_or_else(|| anyhow!("unexpected response {v}"))
    }

    /// `?acquire=` (or, with `release`, `?release=`) for `session`; returns whether it took effect.
    pub async fn kv_lock(&self, key: &str, value: &[u8], flags: u64, session: &str, release: bool) -> Result<bool> {
        let mut q = vec![(if release { "release" } else { "acquire" }.to_string(), session.to_string())];
        if flags != 0 {
            q.push(("flags".to_string(), flags.to_string()));
        }
        let v = self.put(&kv_path(key), &q, Some(value.to_vec())).await?;
        v.as_bool().ok_or_else(|| anyhow!("unexpected response {v}"))
    }

    pub async fn kv_delete(&self, key: &str, recurse: bool, cas: Option<u64>) -> Result<bool> {
        let mut q = Vec::new();
        if recurse {
            q.push(("recurse".to_string(), String::new()));
        }
        if let Some(c) = cas {
            q.push(("cas".into(), c.to_string()));
        }
        let v = self.delete(&kv_path(key), &q).await?;
        v.as_bool().ok_or_else(|| anyhow!("unexpected response {v}"))
    }

    // ---- Catalog, health, agent, status --------------------------------------------------------

    pub async fn catalog_datacenters(&self) -> Result<Vec<String>> {
        Ok(self.get_json("/v1/catalog/datacenters", &[], None).await?.0.unwrap_or_default())
    }

    pub async fn catalog_nodes(&self, opts: &QueryOptions) -> Result<(Vec<Node>, QueryMeta)> {
        let (v, m) = self.get_json("/v1/catalog/nodes", &[], Some(opts)).await?;
        Ok((v.unwrap_or_default(), m))
    }

    pub async fn catalog_services(
        &self,
        opts: &QueryOptions,
    ) -> Result<(std::collections::BTreeMap<String, Vec<String>>, QueryMeta)> {
        let (v, m) = self.get_json("/v1/catalog/services", &[], Some(opts)).await?;
        Ok((v.unwrap_or_default(), m))
    }

    pub async fn catalog_service(
        &self,
        name: &str,
        tag: Option<&str>,
        opts: &QueryOptions,
    ) -> Result<(Vec<ServiceNode>, QueryMeta)> {
        let q: Vec<(String, String)> = tag.map(|t| vec![("tag".to_string(), t.to_string())]).unwrap_or_default();
        let (v, m) = self.get_json(&format!("/v1/catalog/service/{}", seg(name)), &q, Some(opts)).await?;
        Ok((v.unwrap_or_default(), m))
    }

    pub async fn health_service(
        &self,
        name: &str,
        passing: bool,
        opts: &QueryOptions,
    ) -> Result<(Vec<ServiceEntry>, QueryMeta)> {
        let q: Vec<(String, String)> = if passing { vec![("passing".into(), String::new())] } else { vec![] };
        let (v, m) = self.get_json(&format!("/v1/health/service/{}", seg(name)), &q, Some(opts)).await?;
        Ok((v.unwrap_or_default(), m))
    }

    pub async fn health_node(&self, node: &str, opts: &QueryOptions) -> Result<(Vec<HealthCheck>, QueryMeta)> {
        let (v, m) = self.get_json(&format!("/v1/health/node/{}", seg(node)), &[], Some(opts)).await?;
        Ok((v.unwrap_or_default(), m))
    }

    pub async fn agent_self(&self) -> Result<Value> {
        self.get_json("/v1/agent/self", &[], None).await?.0.ok_or_else(|| anyhow!("agent/self not found"))
    }

    pub async fn agent_members(&self, wan: bool) -> Result<Vec<Value>> {
        let q: Vec<(String, String)> = if wan { vec![("wan".into(), "1".into())] } else { vec![] };
        Ok(self.get_json("/v1/agent/members", &q, None).await?.0.unwrap_or_default())
    }

    pub async fn agent_service_register(&self, def: &Value) -> Result<()> {
        self.put("/v1/agent/service/register", &[], Some(serde_json::to_vec(def)?)).await.map(|_| ())
    }

    pub async fn agent_service_deregister(&self, id: &str) -> Result<()> {
        self.put(&format!("/v1/agent/service/deregister/{}", seg(id)), &[], None).await.map(|_| ())
    }

    pub async fn agent_checks(&self) -> Result<std::collections::BTreeMap<String, HealthCheck>> {
        Ok(self.get_json("/v1/agent/checks", &[], None).await?.0.unwrap_or_default())
    }

    pub async fn agent_check_pass(&self, id: &str, note: &str) -> Result<()> {
        self.put(&format!("/v1/agent/check/pass/{}", seg(id)), &[("note".into(), note.into())], None).await.map(|_| ())
    }

    /// Node maintenance mode on or off (`reason` only when enabling).
    pub async fn agent_maintenance(&self, enable: bool, reason: &str) -> Result<()> {
        let mut q = vec![("enable".to_string(), enable.to_string())];
        if !reason.is_empty() {
            q.push(("reason".into(), reason.into()));
        }
        self.put("/v1/agent/maintenance", &q, None).await.map(|_| ())
    }

    pub async fn agent_service_maintenance(&self, id: &str, enable: bool, reason: &str) -> Result<()> {
        let mut q = vec![("enable".to_string(), enable.to_string())];
        if !reason.is_empty() {
            q.push(("reason".into(), reason.into()));
        }
        self.put(&format!("/v1/agent/service/maintenance/{}", seg(id)), &q, None).await.map(|_| ())
    }

    /// `/v1/agent/monitor`: the open stream of log lines.
    pub async fn agent_monitor(&self, level: &str, json: bool) -> Result<reqwest::Response> {
        let mut q = vec![("loglevel".to_string(), level.to_string())];
        if json {
            q.push(("logjson".into(), "true".into()));
        }
        let resp = self.send(Method::GET, self.url("/v1/agent/monitor", &q, None), None).await?;
        if !resp.status().is_success() {
            return Err(Self::error(resp).await);
        }
        Ok(resp)
    }

    pub async fn agent_leave(&self) -> Result<()> {
        self.put("/v1/agent/leave", &[], None).await.map(|_| ())
    }

    pub async fn agent_reload(&self) -> Result<()> {
        self.put("/v1/agent/reload", &[], None).await.map(|_| ())
    }

    pub async fn status_leader(&self) -> Result<String> {
        Ok(self.get_json("/v1/status/leader", &[], None).await?.0.unwrap_or_default())
    }

    pub async fn status_peers(&self) -> Result<Vec<String>> {
        Ok(self.get_json("/v1/status/peers", &[], None).await?.0.unwrap_or_default())
    }

    // ---- Events and coordinates -------------------------------------------------------------

    /// Fires a user event; `filters` are the `node`, `service` and `tag` regular expressions.
    pub async fn event_fire(&self, name: &str, payload: Option<&[u8]>, filters: &[(&str, &str)]) -> Result<UserEvent> {
        let q: Vec<(String, String)> = filters.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let v = self.put(&format!("/v1/event/fire/{}", seg(name)), &q, payload.map(<[u8]>::to_vec)).await?;
        serde_json::from_value(v).context("decoding event")
    }

    /// The events the agent holds (of one name, or all), oldest first. The index of the result is
    /// derived from the newest event's ID; block on it with `opts.index`.
    pub async fn event_list(&self, name: Option<&str>, opts: &QueryOptions) -> Result<(Vec<UserEvent>, QueryMeta)> {
        let q: Vec<(String, String)> = name.map(|n| ("name".to_string(), n.to_string())).into_iter().collect();
        let (v, m) = self.get_json::<Vec<UserEvent>>("/v1/event/list", &q, Some(opts)).await?;
        Ok((v.unwrap_or_default(), m))
    }

    pub async fn coordinate_nodes(&self, opts: &QueryOptions) -> Result<(Vec<CoordinateEntry>, QueryMeta)> {
        let (v, m) = self.get_json::<Vec<CoordinateEntry>>("/v1/coordinate/nodes", &[], Some(opts)).await?;
        Ok((v.unwrap_or_default(), m))
    }

    pub async fn coordinate_update(&self, entry: &CoordinateEntry) -> Result<()> {
        self.put("/v1/coordinate/update", &[], Some(serde_json::to_vec(entry)?)).await.map(|_| ())
    }
}

/// Percent-encodes one path segment.
pub fn seg(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

/// KV keys keep their slashes; everything else is escaped.
pub fn kv_path(key: &str) -> String {
    let key = key.trim_start_matches('/');
    let enc: Vec<String> = key.split('/').map(seg).collect();
    format!("/v1/kv/{}", enc.join("/"))
}
