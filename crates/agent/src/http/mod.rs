//! The Consul-compatible `/v1` HTTP API: one route table ([`router`]) and one file per endpoint group.
//! Shared here: query-string parsing, the call through the agent's RPC seam, response headers, and the one
//! exhaustive mapping from errors to status codes.

mod agent;
mod catalog;
mod coordinate;
mod event;
mod health;
mod kv;
mod operator;
pub(crate) mod query;
mod session;
mod snapshot;
mod status;
mod txn;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use serde::Serialize;

use cairn_types::filter::Filter;
use cairn_types::rpc::{
    QueryMeta, QueryOptions, QuerySource, ReadRequest, ReadResponse, WriteOptions, WriteRequest, WriteResponse,
    WriteResult,
};

use crate::Agent;

pub type AgentRef = Arc<Agent>;

pub use cairn_cluster::endpoints::read::{DEFAULT_WAIT, MAX_WAIT};
/// Bodies other than KV values and transactions are capped here.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

pub fn router(agent: AgentRef) -> Router {
    let kv_limit = agent.config().kv_max_value_size;
    Router::new()
        // KV: the value cap is enforced in the handler (413 with Consul's message), so the body
        // limit here only stops a client from streaming without end.
        .route(
            "/v1/kv/{*key}",
            get(kv::get).put(kv::put).delete(kv::delete).layer(DefaultBodyLimit::max(kv_limit.saturating_add(1))),
        )
        .route("/v1/kv/", get(kv::get_root).put(kv::put_root).delete(kv::delete_root))
        .route("/v1/catalog/register", put(catalog::register))
        .route("/v1/catalog/deregister", put(catalog::deregister))
        .route("/v1/catalog/datacenters", get(catalog::datacenters))
        .route("/v1/catalog/nodes", get(catalog::nodes))
        .route("/v1/catalog/services", get(catalog::services))
        .route("/v1/catalog/service/{name}", get(catalog::service))
        .route("/v1/catalog/node/{node}", get(catalog::node))
        .route("/v1/catalog/node-services/{node}", get(catalog::node_services))
        .route("/v1/health/node/{node}", get(health::node))
        .route("/v1/health/checks/{service}", get(health::checks))
        .route("/v1/health/service/{service}", get(health::service))
        .route("/v1/health/state/{state}", get(health::state))
        .route("/v1/session/create", put(session::create))
        .route("/v1/session/destroy/{id}", put(session::destroy))
        .route("/v1/session/renew/{id}", put(session::renew))
        .route("/v1/session/info/{id}", get(session::info))
        .route("/v1/session/node/{node}", get(session::node))
        .route("/v1/session/list", get(session::list))
        .route("/v1/query", get(query::list).post(query::create))
        .route("/v1/query/{id}", get(query::get).put(query::update).delete(query::delete))
        .route("/v1/query/{id}/execute", get(query::execute))
        .route("/v1/query/{id}/explain", get(query::explain))
        .route(
            "/v1/txn",
            put(txn::txn).layer(DefaultBodyLimit::max(txn::txn_body_limit(&agent.config()).saturating_add(1))),
        )
        .route("/v1/coordinate/datacenters", get(coordinate::datacenters))
        .route("/v1/coordinate/nodes", get(coordinate::nodes))
        .route("/v1/coordinate/node/{node}", get(coordinate::node))
        .route("/v1/coordinate/update", put(coordinate::update))
        .route("/v1/event/fire/{name}", put(event::fire))
        .route("/v1/event/fire/", put(event::fire))
        .route("/v1/event/list", get(event::list))
        .route("/v1/operator/keyring", axum::routing::any(operator::keyring))
        .route(
            "/v1/snapshot",
            get(snapshot::save)
                .put(snapshot::restore)
                .layer(DefaultBodyLimit::max(cairn_cluster::snapshot::MAX_ARCHIVE)),
        )
        .route("/v1/operator/raft/configuration", get(operator::raft_configuration))
        .route(
            "/v1/operator/autopilot/configuration",
            get(operator::autopilot_configuration).put(operator::autopilot_configuration),
        )
        .route("/v1/operator/autopilot/health", get(operator::autopilot_health))
        .route("/v1/operator/autopilot/state", get(operator::autopilot_state))
        .route("/v1/operator/raft/peer", axum::routing::delete(operator::raft_peer))
        .route("/v1/operator/raft/transfer-leader", axum::routing::post(operator::raft_transfer_leader))
        .route("/v1/status/leader", get(status::leader))
        .route("/v1/status/peers", get(status::peers))
        .route("/v1/acl/{*rest}", axum::routing::any(acl_disabled))
        .route("/", get(root))
        .merge(agent::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(method_not_allowed_body))
        .with_state(agent)
}

/// `GET /`: Consul answers 200 with this text when its UI is off (HTTP checks often point here).
async fn root() -> Response {
    text(
        StatusCode::OK,
        "Consul Agent: UI disabled. To enable, set ui_config.enabled=true in the agent configuration and restart.",
    )
}

/// ACL endpoints while ACLs are off (Cairn has no ACL system yet): Consul's 401.
pub async fn acl_disabled() -> Response {
    text(StatusCode::UNAUTHORIZED, "ACL support disabled")
}

fn text(status: StatusCode, body: &'static str) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

async fn not_found(req: Request) -> Response {
    (StatusCode::NOT_FOUND, format!("Invalid URL path: not a recognized HTTP API endpoint: {}", req.uri().path()))
        .into_response()
}

/// axum answers 405 with an empty body; Consul says which method.
async fn method_not_allowed_body(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let resp = next.run(req).await;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        let (parts, _) = resp.into_parts();
        let mut r = Response::from_parts(parts, Body::from(format!("method {method} not allowed")));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        return r;
    }
    resp
}

// ---- Errors ----------------------------------------------------------------------------------

/// An HTTP error: Consul answers errors as plain text.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub msg: String,
}

impl From<crate::NoServers> for HttpError {
    fn from(e: crate::NoServers) -> Self {
        HttpError::internal(e.to_string())
    }
}

impl HttpError {
    pub fn bad(msg: impl Into<String>) -> Self {
        HttpError { status: StatusCode::BAD_REQUEST, msg: msg.into() }
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        HttpError { status: StatusCode::NOT_FOUND, msg: msg.into() }
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        HttpError { status: StatusCode::INTERNAL_SERVER_ERROR, msg: msg.into() }
    }
    pub fn too_large(msg: impl Into<String>) -> Self {
        HttpError { status: StatusCode::PAYLOAD_TOO_LARGE, msg: msg.into() }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut r = (self.status, self.msg).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        r
    }
}

/// The one mapping from cluster errors to HTTP status codes.
impl From<cairn_cluster::Error> for HttpError {
    fn from(e: cairn_cluster::Error) -> Self {
        use cairn_cluster::Error as E;
        match e {
            // Consul answers 500 "No cluster leader" for writes and default reads without a leader.
            E::NoLeader | E::NotLeader { .. } => HttpError::internal("No cluster leader"),
            E::Rejected(e) => e.into(),
            E::Fatal(m) | E::Storage(m) => HttpError::internal(m),
            E::ShuttingDown => {
                HttpError { status: StatusCode::SERVICE_UNAVAILABLE, msg: "agent is shutting down".into() }
            }
            E::RateLimited => HttpError { status: StatusCode::TOO_MANY_REQUESTS, msg: e.to_string() },
        }
    }
}

/// The one mapping from store and validation errors to Consul's status codes.
impl From<cairn_types::Error> for HttpError {
    fn from(e: cairn_types::Error) -> Self {
        use cairn_types::Error as E;
        let status = match &e {
            E::Invalid(_) => StatusCode::BAD_REQUEST,
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::CasFailed(_) => StatusCode::CONFLICT,
            E::PermissionDenied(_) => StatusCode::FORBIDDEN,
            // Consul's HTTP layer answers any RPC error it does not classify with 500.
            E::Rejected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        HttpError { status, msg: e.to_string() }
    }
}

/// A state-machine answer that carries no value: `Ok`, or the store's error.
pub fn applied(r: cairn_types::CommandResult) -> Result<(), HttpError> {
    match r {
        cairn_types::CommandResult::Error(e) => Err(e.into()),
        _ => Ok(()),
    }
}

pub type HttpResult = Result<Response, HttpError>;

// ---- Query strings ---------------------------------------------------------------------------

/// A parsed query string. Consul takes flags without values (`?recurse`), so presence matters.
#[derive(Debug, Default, Clone)]
pub struct Params {
    map: HashMap<String, Vec<String>>,
}

impl Params {
    pub fn parse(raw: Option<&str>) -> Self {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        if let Some(q) = raw {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                map.entry(k.into_owned()).or_default().push(v.into_owned());
            }
        }
        Params { map }
    }
    pub fn has(&self, k: &str) -> bool {
        self.map.contains_key(k)
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.map.get(k).and_then(|v| v.first()).map(String::as_str)
    }
    pub fn all(&self, k: &str) -> &[String] {
        self.map.get(k).map(Vec::as_slice).unwrap_or(&[])
    }
    /// A flag that may be given bare (`?recurse`) or with a boolean (`?recurse=true`).
    pub fn flag(&self, k: &str) -> bool {
        match self.get(k) {
            None => self.has(k),
            Some("" | "true" | "1" | "True" | "TRUE") => true,
            Some(_) => false,
        }
    }
    /// Consul's `conflictingFlags`: refuses a request giving more than one of `flags`, with 400
    /// `Conflicting flags: ` and the query string re-encoded (Go's `url.Values.Encode`: keys
    /// sorted, bare flags as `k=`).
    pub fn conflicting(&self, flags: &[&str]) -> Result<(), HttpError> {
        if flags.iter().filter(|f| self.has(f)).count() < 2 {
            return Ok(());
        }
        Err(HttpError::bad(format!("Conflicting flags: {}\n", self.go_encode())))
    }

    fn go_encode(&self) -> String {
        fn esc(s: &str) -> String {
            let mut o = String::new();
            for b in s.bytes() {
                match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => o.push(b as char),
                    b' ' => o.push('+'),
                    _ => o.push_str(&format!("%{b:02X}")),
                }
            }
            o
        }
        let mut keys: Vec<&String> = self.map.keys().collect();
        keys.sort();
        let mut parts = Vec::new();
        for k in keys {
            for v in &self.map[k] {
                parts.push(format!("{}={}", esc(k), esc(v)));
            }
        }
        parts.join("&")
    }

    pub fn u64(&self, k: &str) -> Result<Option<u64>, HttpError> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => go_uint(v)
                .map(Some)
                .ok_or_else(|| HttpError::bad(format!("Invalid {k}: {v:?} is not an unsigned integer"))),
        }
    }
}

/// An unsigned decimal as Go's `strconv.ParseUint(s, 10, 64)` reads it: digits only (Rust's
/// parser would also take a leading `+`).
pub fn go_uint(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub use cairn_types::rpc::Consistency;

/// Options common to reads, parsed from the query string (and checked here, so a bad one is a
/// 400 before anything blocks); [`QueryOpts::options`] is what travels to the server.
pub struct QueryOpts {
    pub index: u64,
    pub wait: Duration,
    pub consistency: Consistency,
    /// `?max_stale=`: a stale read from a server that heard from the leader longer ago than this
    /// is re-read at the leader's read point (Consul retries it on the leader).
    pub max_stale: Option<Duration>,
    pub filter: Option<Filter>,
    filter_src: Option<String>,
    pub pretty: bool,
}

impl QueryOpts {
    /// [`QueryOpts::parse`] for the service-discovery endpoints (catalog, health, prepared query
    /// execution): with the agent's `discovery_max_stale` set and no `?consistent`/`?stale`, the
    /// read is stale up to that bound, as Consul makes it.
    pub fn parse_discovery(p: &Params, agent: &Agent) -> Result<Self, HttpError> {
        let mut q = QueryOpts::parse(p)?;
        let d = agent.config().discovery_max_stale;
        if !d.is_zero() && q.consistency == Consistency::Default {
            q.consistency = Consistency::Stale;
            q.max_stale = Some(d);
        }
        Ok(q)
    }

    pub fn parse(p: &Params) -> Result<Self, HttpError> {
        let index = match p.get("index") {
            None | Some("") => 0,
            Some(v) => go_uint(v).ok_or_else(|| HttpError::bad("Invalid index"))?,
        };
        let wait = match p.get("wait") {
            None | Some("") => DEFAULT_WAIT,
            Some(v) => cairn_types::duration::parse(v).map_err(|_| HttpError::bad("Invalid wait time"))?,
        };
        // `?max_stale` implies `?stale`, as in Consul.
        let max_stale = match p.get("max_stale") {
            None => None,
            Some(v) => Some(
                cairn_types::duration::parse(v)
                    .map_err(|_| HttpError::bad(format!("Invalid max_stale value {v:?}")))?,
            ),
        };
        let stale = p.has("stale") || max_stale.is_some();
        let consistent = p.has("consistent");
        if stale && consistent {
            return Err(HttpError::bad("Cannot specify ?stale with ?consistent, conflicting semantics."));
        }
        let consistency = if stale {
            Consistency::Stale
        } else if consistent {
            Consistency::Consistent
        } else {
            Consistency::Default
        };
        let filter_src = p.get("filter").filter(|f| !f.is_empty()).map(str::to_string);
        let filter = match &filter_src {
            None => None,
            Some(f) => Some(
                Filter::parse(f)
                    .map_err(|e| HttpError::bad(format!("Failed to create boolean expression evaluator: {e}")))?,
            ),
        };
        Ok(QueryOpts {
            index,
            wait: wait.min(MAX_WAIT),
            consistency,
            max_stale,
            filter,
            filter_src,
            pretty: p.has("pretty"),
        })
    }

    /// Refuses a `?filter=` whose selectors name no field of `T`, the endpoint's row type (400, as
    /// Consul); call before any blocking wait.
    pub fn check_filter<T: Serialize + Default>(&self) -> Result<(), HttpError> {
        self.check_filter_with(|| serde_json::to_value(T::default()).unwrap_or_default())
    }

    /// [`Self::check_filter`] against the shape `shape` builds (only when there is a filter).
    pub fn check_filter_with(&self, shape: impl FnOnce() -> serde_json::Value) -> Result<(), HttpError> {
        let Some(f) = &self.filter else { return Ok(()) };
        f.validate_shape(&shape())
            .map_err(|e| HttpError::bad(format!("Failed to create boolean expression evaluator: {e}")))
    }

    /// What the server needs of this request: these options, plus `?near=`, `?node-meta=`,
    /// `?peer=` and who is asking.
    pub fn options(&self, agent: &Agent, p: &Params) -> QueryOptions {
        let node_meta = p
            .all("node-meta")
            .iter()
            .map(|kv| match kv.split_once(':') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.clone(), String::new()),
            })
            .collect();
        QueryOptions {
            datacenter: p.get("dc").unwrap_or("").to_string(),
            token: String::new(),
            min_query_index: self.index,
            max_query_time: self.wait,
            consistency: self.consistency,
            max_stale: self.max_stale,
            filter: self.filter_src.clone(),
            near: p.get("near").filter(|n| !n.is_empty()).map(str::to_string),
            node_meta,
            peer: p.get("peer").filter(|n| !n.is_empty()).map(str::to_string),
            source: QuerySource { node: agent.config().node_name.clone(), ip: None },
        }
    }
}

/// Response metadata: the index and the leader headers.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub index: u64,
    pub known_leader: bool,
    pub last_contact_ms: u64,
}

impl From<QueryMeta> for Meta {
    fn from(m: QueryMeta) -> Self {
        Meta { index: m.index, known_leader: m.known_leader, last_contact_ms: m.last_contact_ms }
    }
}

/// Runs a read on a server (a blocking query when `q.index` > 0) and returns its answer.
pub async fn read(
    agent: &Agent,
    q: &QueryOpts,
    p: &Params,
    req: ReadRequest,
) -> Result<(Meta, ReadResponse), HttpError> {
    read_with(agent, req, q.options(agent, p)).await
}

/// [`read`] with options already built.
pub async fn read_with(agent: &Agent, req: ReadRequest, opts: QueryOptions) -> Result<(Meta, ReadResponse), HttpError> {
    let rpc = agent.rpc()?;
    // An agent shutting down answers a blocking query at once, with what there is now, so the
    // API can drain.
    let now = QueryOptions { min_query_index: 0, ..opts.clone() };
    let r = tokio::select! {
        r = rpc.read(req.clone(), opts) => r,
        _ = agent.shutting_down() => rpc.read(req, now).await,
    };
    let (meta, res) = r?;
    Ok((meta.into(), res))
}

/// An operator, status or backup request through the servers (`?stale` lets the server asked
/// answer).
pub async fn operator_call(
    agent: &Agent,
    p: &Params,
    req: cairn_types::rpc::OperatorRequest,
) -> Result<cairn_types::rpc::OperatorResponse, HttpError> {
    let q = QueryOptions {
        datacenter: p.get("dc").unwrap_or("").to_string(),
        consistency: if p.has("stale") { Consistency::Stale } else { Consistency::Default },
        ..QueryOptions::default()
    };
    Ok(agent.rpc()?.operator(req, q).await?)
}

/// A write through the servers.
pub async fn write(agent: &Agent, p: &Params, req: WriteRequest) -> Result<WriteResponse, HttpError> {
    let opts = WriteOptions { datacenter: p.get("dc").unwrap_or("").to_string(), token: String::new() };
    Ok(agent.rpc()?.write(req, opts).await?)
}

/// The state machine's answer to a write, or the error it carried; anything else is a server
/// answering out of turn.
pub fn write_result(w: WriteResponse) -> Result<cairn_types::CommandResult, HttpError> {
    match w.result {
        WriteResult::Result(cairn_types::CommandResult::Error(e)) => Err(e.into()),
        WriteResult::Result(r) => Ok(r),
        other => Err(unexpected(&other)),
    }
}

/// A server answered with a shape the request does not have (a bug, not bad input).
pub fn unexpected(what: &impl std::fmt::Debug) -> HttpError {
    HttpError::internal(format!("unexpected answer from the server: {what:?}"))
}

/// Takes the expected variant out of a [`ReadResponse`], or answers 500.
macro_rules! expect_answer {
    ($res:expr, $variant:path) => {
        match $res {
            $variant(x) => x,
            other => return Err($crate::http::unexpected(&other)),
        }
    };
}
pub(crate) use expect_answer;

/// Rejects `?dc=` naming another datacenter (no WAN federation yet) with Consul's message.
pub fn check_dc(agent: &Agent, p: &Params) -> Result<(), HttpError> {
    check_dc_name(agent, p.get("dc").unwrap_or(""))
}

/// The same for a datacenter named in a request body (`"Datacenter": "dc2"`), which Consul routes
/// on as it does on `?dc=`: a write meant for another datacenter must never land in this one.
pub fn check_dc_name(agent: &Agent, dc: &str) -> Result<(), HttpError> {
    if !dc.is_empty() && !dc.eq_ignore_ascii_case(&agent.config().datacenter) {
        return Err(HttpError::internal("No path to datacenter"));
    }
    Ok(())
}

/// [`check_dc_name`] for the top-level `Datacenter` of a body read as a JSON value.
pub fn check_body_dc(agent: &Agent, v: &serde_json::Value) -> Result<(), HttpError> {
    match v.get("Datacenter") {
        None | Some(serde_json::Value::Null) => Ok(()),
        Some(serde_json::Value::String(dc)) => check_dc_name(agent, dc),
        Some(_) => Err(HttpError::bad("Request decode failed: Datacenter must be a string")),
    }
}

/// A JSON response with Consul's headers.
pub fn json_response<T: Serialize + ?Sized>(meta: Option<Meta>, pretty: bool, body: &T) -> Response {
    let bytes = if pretty { to_vec_indented(body) } else { serde_json::to_vec(body) };
    let mut bytes = match bytes {
        Ok(b) => b,
        Err(e) => return HttpError::internal(format!("failed to encode response: {e}")).into_response(),
    };
    if pretty {
        bytes.push(b'\n');
    }
    let mut r = Response::new(Body::from(bytes));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(m) = meta {
        set_meta(h, m);
    }
    r
}

/// Consul's `?pretty` indents with four spaces.
fn to_vec_indented<T: Serialize + ?Sized>(body: &T) -> serde_json::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut ser =
        serde_json::Serializer::with_formatter(&mut buf, serde_json::ser::PrettyFormatter::with_indent(b"    "));
    body.serialize(&mut ser)?;
    Ok(buf)
}

pub fn set_meta(h: &mut HeaderMap, m: Meta) {
    h.insert("X-Consul-Index", HeaderValue::from(m.index));
    h.insert("X-Consul-KnownLeader", HeaderValue::from_static(if m.known_leader { "true" } else { "false" }));
    h.insert("X-Consul-LastContact", HeaderValue::from(m.last_contact_ms));
}

/// Parses a JSON request body, Consul-leniently (case-insensitive, snake_case keys).
pub fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, HttpError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(HttpError::bad("Request decode failed: empty body"));
    }
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| HttpError::bad(format!("Request decode failed: {e}")))?;
    let v = cairn_types::normalize::normalize(v);
    serde_json::from_value(v).map_err(|e| HttpError::bad(format!("Request decode failed: {e}")))
}

/// Parses a body that the handler reads as a JSON value, refusing wrong-typed fields as Go's
/// decoder (and so Consul) does: 400 `Request decode failed: json: cannot unmarshal ...`.
pub fn decode_checked(body: &[u8], schema: &cairn_types::schema::Schema) -> Result<serde_json::Value, HttpError> {
    let v: serde_json::Value = decode_body(body)?;
    cairn_types::schema::check(&v, schema).map_err(|e| HttpError::bad(format!("Request decode failed: {e}")))?;
    Ok(v)
}

pub fn is_put_or_post(m: &Method) -> bool {
    m == Method::PUT || m == Method::POST
}
