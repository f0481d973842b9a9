//! The server side of every read: the consistency barrier, then a blocking query over the store's
//! snapshots, with `?filter=`, `?node-meta=`, `?near=` and `?peer=` applied here, as Consul's
//! endpoints apply them, so that a forwarded read is one request and the answer is final.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_store::state::topics;
use cairn_store::watch::{Topic, WatchSet};
use cairn_store::State;
use cairn_types::filter::Filter;
use cairn_types::rpc::{Consistency, QueryExecuted, QueryMeta, QueryOptions, ReadRequest, ReadResponse};
use cairn_types::structs::ServiceNode;

use super::prepared_query;
use crate::error::Error;
use crate::server::Server;

/// The longest a blocking query waits, whatever it asked (Consul's 10 minutes).
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// The wait of a blocking query that named none (Consul's 5 minutes).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);

/// Answers `req` as `q` asks: after the barrier its consistency needs, and, for a blocking query
/// (`min_query_index` > 0), once the result's index passes that index or the wait ends.
pub async fn read(server: &Server, req: &ReadRequest, q: &QueryOptions) -> Result<(QueryMeta, ReadResponse), Error> {
    read_for(server, req, q, 1).await
}

/// [`read`] for `callers` callers that asked the very same thing together (a request an RPC
/// client gathered): one query, counted as theirs in [`Server::blocking_queries`].
pub async fn read_for(
    server: &Server,
    req: &ReadRequest,
    q: &QueryOptions,
    callers: usize,
) -> Result<(QueryMeta, ReadResponse), Error> {
    let filter = match q.filter.as_deref() {
        None | Some("") => None,
        Some(f) => Some(Filter::parse(f).map_err(|e| {
            Error::Rejected(cairn_types::Error::invalid(format!("Failed to create boolean expression evaluator: {e}")))
        })?),
    };
    barrier(server, q).await?;
    let store = server.store();
    // What watches nothing does not block (prepared-query execution, explain and transactions,
    // as in Consul).
    let watched = topics_of(req);
    let blocks = q.min_query_index > 0 && !watched.is_empty();
    if !blocks {
        let (idx, res) = run(server, &store.snapshot(), req, q, filter.as_ref())?;
        return Ok((server.query_meta(idx.max(1)), res));
    }
    let deadline = tokio::time::Instant::now() + jittered(q.max_query_time, &*server.config().rng);
    let ws = WatchSet::new();
    // A snapshot restore abandons every blocking query, as Consul's does: the restored state's
    // indexes may be below the one the client waits past, so it must hear now.
    let restored = |st: &State| st.indexes.get(cairn_store::RESTORE_INDEX).copied();
    let restored_at_start = restored(&store.snapshot());
    let mut stop = server.stop_signal();
    let _held = Blocking::new(server, callers);
    let finished = |idx: u64, st: &State, stop: &tokio::sync::watch::Receiver<bool>| {
        idx > q.min_query_index
            || tokio::time::Instant::now() >= deadline
            || restored(st) != restored_at_start
            || *stop.borrow()
    };
    let mut woken = false;
    loop {
        // After a wake-up, first see whether the change answers the query, as it mostly does:
        // registering again (under the store's lock) would be wasted work for each of the many
        // waiters a write wakes at once.
        if woken {
            let st = store.snapshot();
            let (idx, res) = run(server, &st, req, q, filter.as_ref())?;
            let idx = idx.max(1);
            if finished(idx, &st, &stop) {
                return Ok((server.query_meta(idx), res));
            }
        }
        let st = store.watch(&ws, watched.iter().cloned());
        let (idx, res) = run(server, &st, req, q, filter.as_ref())?;
        // X-Consul-Index is never 0: a client that sent 0 would not block on its next call.
        let idx = idx.max(1);
        if finished(idx, &st, &stop) {
            return Ok((server.query_meta(idx), res));
        }
        tokio::select! {
            _ = ws.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = stop.changed() => {}
        }
        woken = true;
    }
}

/// Counts a blocking query's callers in [`Server::blocking_queries`], and the query in
/// [`Server::blocking_evaluations`], while it lives.
struct Blocking<'a>(&'a Server, usize);

impl<'a> Blocking<'a> {
    fn new(server: &'a Server, callers: usize) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        server.blocking.fetch_add(callers, Relaxed);
        server.blocking_evaluations.fetch_add(1, Relaxed);
        Blocking(server, callers)
    }
}

impl Drop for Blocking<'_> {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.0.blocking.fetch_sub(self.1, Relaxed);
        self.0.blocking_evaluations.fetch_sub(1, Relaxed);
    }
}

/// The wait with Consul's jitter: up to wait/16 more, so that many waiters do not return together.
fn jittered(wait: Duration, rng: &dyn crate::clock::Rng) -> Duration {
    let w = if wait.is_zero() { DEFAULT_WAIT } else { wait.min(MAX_WAIT) };
    w + Duration::from_millis(rng.below(w.as_millis() as u64 / 16))
}

async fn barrier(server: &Server, q: &QueryOptions) -> Result<(), Error> {
    match q.consistency {
        Consistency::Stale => match q.max_stale {
            Some(max) if !max.is_zero() && Duration::from_millis(server.last_contact_ms()) > max => {
                server.default_barrier().await
            }
            _ => Ok(()),
        },
        Consistency::Consistent => server.consistent_barrier().await,
        // Default mode: the leader answers under its lease, without a quorum round trip; a
        // follower first catches up to the leader's read point.
        Consistency::Default => server.default_barrier().await,
    }
}

/// What a blocking read of `req` waits on.
fn topics_of(req: &ReadRequest) -> Vec<Topic> {
    use ReadRequest as R;
    match req {
        R::KvsGet { key } => vec![topics::kv(key)],
        R::KvsList { prefix } | R::KvsListKeys { prefix, .. } => vec![topics::kv_prefix(prefix)],
        R::CatalogListNodes => vec![topics::NODES],
        R::CatalogListServices | R::CatalogServiceAddress { .. } => vec![topics::SERVICES],
        R::CatalogServiceNodes { service, .. }
        | R::HealthServiceChecks { service }
        | R::HealthServiceNodes { service, .. } => vec![topics::service(service)],
        R::CatalogNodeServices { node } | R::HealthNodeChecks { node } => vec![topics::node(node)],
        R::HealthChecksInState { .. } => vec![topics::CHECKS],
        R::SessionGet { .. } | R::SessionNodeSessions { .. } | R::SessionList => vec![topics::SESSIONS],
        R::PreparedQueryList | R::PreparedQueryGet { .. } => vec![topics::QUERIES],
        R::CoordinateListNodes { .. } | R::CoordinateNode { .. } => vec![topics::COORDINATES],
        R::PreparedQueryExecute { .. } | R::PreparedQueryExplain { .. } | R::TxnRead(_) => Vec::new(),
    }
}

fn keep<T: serde::Serialize>(f: Option<&Filter>, rows: &mut Vec<T>) {
    if let Some(f) = f {
        rows.retain(|r| f.matches(&serde_json::to_value(r).unwrap_or_default()));
    }
}

fn meta_matches(meta: &BTreeMap<String, String>, want: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| meta.get(k) == Some(v))
}

/// The node `near` names: `_agent` is the asking agent's node.
pub(crate) fn near_node(q: &QueryOptions, near: Option<&str>) -> Option<String> {
    match near.filter(|n| !n.is_empty())? {
        "_agent" => Some(q.source.node.clone()).filter(|n| !n.is_empty()),
        n => Some(n.to_string()),
    }
}

/// Sorts `rows` by estimated round-trip time from the node `near`, as Consul's `?near=` does:
/// nearest first, rows whose node has no coordinate last, ties in their previous order. Without a
/// coordinate for `near` itself the order is left alone.
pub(crate) fn sort_near<T>(st: &State, near: Option<&str>, rows: &mut [T], node_of: impl Fn(&T) -> &str) {
    let Some(near) = near else { return };
    let Some(origin) = st.coordinate(near).cloned() else { return };
    rows.sort_by_cached_key(|r| {
        let d = st.coordinate(node_of(r)).and_then(|c| origin.distance_to(c)).unwrap_or(f64::INFINITY);
        // An order-preserving map of the float to an integer (a negative height can make a
        // distance negative).
        let b = d.to_bits();
        if d.is_sign_negative() {
            !b
        } else {
            b | (1 << 63)
        }
    });
}

/// One evaluation of `req` against one snapshot: (the index to report, the answer).
fn run(
    server: &Server,
    st: &State,
    req: &ReadRequest,
    q: &QueryOptions,
    f: Option<&Filter>,
) -> Result<(u64, ReadResponse), Error> {
    use ReadRequest as R;
    use ReadResponse as A;
    // `?peer=`: rows imported from a cluster peer. Cairn has no peerings, so the answer is empty
    // (as Consul's for a peer it does not know) at index 1, and never this cluster's data.
    let for_peer = q.peer.as_deref().is_some_and(|p| !p.is_empty());
    let near = near_node(q, q.near.as_deref());
    let near = near.as_deref();
    Ok(match req {
        R::KvsGet { key } => {
            let (i, e) = st.kv_get(key);
            (i, A::Entry(e))
        }
        R::KvsList { prefix } => {
            let (i, mut rows) = st.kv_list(prefix);
            keep(f, &mut rows);
            (i, A::Entries(rows))
        }
        R::KvsListKeys { prefix, separator } => {
            let (i, keys) = st.kv_keys(prefix, separator);
            (i, A::Keys(keys))
        }
        R::CatalogListNodes if for_peer => (1, A::Nodes(Vec::new())),
        R::CatalogListNodes => {
            let (i, mut rows) = st.nodes();
            rows.retain(|n| meta_matches(&n.meta, &q.node_meta));
            sort_near(st, near, &mut rows, |n| &n.node);
            keep(f, &mut rows);
            (i, A::Nodes(rows))
        }
        R::CatalogListServices if for_peer => (1, A::Services(BTreeMap::new())),
        R::CatalogListServices if f.is_none() && q.node_meta.is_empty() => {
            let (i, s) = st.services();
            (i, A::Services(s))
        }
        R::CatalogListServices => {
            // With a filter or node-meta, go through instances (Consul filters ServiceNode rows).
            let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for ((node, _), svc) in st.services.iter() {
                let Some(n) = st.node(node) else { continue };
                if !meta_matches(&n.meta, &q.node_meta) {
                    continue;
                }
                if let Some(f) = f {
                    if !f.matches(&serde_json::to_value(ServiceNode::new(n, svc)).unwrap_or_default()) {
                        continue;
                    }
                }
                let tags = out.entry(svc.service.clone()).or_default();
                for t in &svc.tags {
                    if !tags.contains(t) {
                        tags.push(t.clone());
                    }
                }
            }
            out.values_mut().for_each(|t| t.sort());
            (st.index("services"), A::Services(out))
        }
        R::CatalogServiceNodes { .. } if for_peer => (1, A::ServiceNodes(Vec::new())),
        R::CatalogServiceNodes { service, tags } => {
            let (i, mut rows) = st.service_nodes(service, tags);
            rows.retain(|r| meta_matches(&r.node_meta, &q.node_meta));
            sort_near(st, near, &mut rows, |r| &r.node);
            keep(f, &mut rows);
            (i, A::ServiceNodes(rows))
        }
        R::CatalogNodeServices { .. } if for_peer => (1, A::NodeServices(None)),
        R::CatalogNodeServices { node } => {
            let (i, found) = st.node_services(node);
            // The filter applies to the services of the node.
            let found = found.map(|(n, mut svcs)| {
                keep(f, &mut svcs);
                (n, svcs)
            });
            (i, A::NodeServices(found))
        }
        R::HealthNodeChecks { .. } | R::HealthServiceChecks { .. } if for_peer => (1, A::Checks(Vec::new())),
        R::HealthNodeChecks { node } => {
            let (i, mut rows) = st.node_checks(node);
            keep(f, &mut rows);
            (i, A::Checks(rows))
        }
        R::HealthServiceChecks { service } => {
            let (i, mut rows) = st.service_checks(service);
            sort_near(st, near, &mut rows, |c| &c.node);
            keep(f, &mut rows);
            (i, A::Checks(rows))
        }
        R::HealthChecksInState { state } => {
            if !matches!(state.as_str(), "any" | "passing" | "warning" | "critical") {
                return Err(Error::Rejected(cairn_types::Error::invalid(format!(
                    "Invalid state {state:?}: must be one of any, passing, warning, critical"
                ))));
            }
            let (i, mut rows) = st.checks_in_state(state);
            sort_near(st, near, &mut rows, |c| &c.node);
            keep(f, &mut rows);
            (i, A::Checks(rows))
        }
        R::HealthServiceNodes { .. } if for_peer => (1, A::ServiceEntries(Vec::new())),
        R::HealthServiceNodes { service, tags, passing } => {
            let (i, mut rows) = st.check_service_nodes(service, tags, *passing);
            sort_near(st, near, &mut rows, |e| &e.node.node);
            keep(f, &mut rows);
            (i, A::ServiceEntries(rows))
        }
        R::SessionGet { id } => {
            let (i, s) = st.session_get(id);
            let mut rows: Vec<_> = s.into_iter().collect();
            keep(f, &mut rows);
            (i, A::Sessions(rows))
        }
        R::SessionNodeSessions { node } => {
            let (i, mut rows) = st.node_sessions(node);
            keep(f, &mut rows);
            (i, A::Sessions(rows))
        }
        R::SessionList => {
            let (i, mut rows) = st.session_list();
            keep(f, &mut rows);
            (i, A::Sessions(rows))
        }
        R::PreparedQueryList => {
            let (i, mut rows) = st.query_list();
            keep(f, &mut rows);
            (i, A::Queries(rows))
        }
        R::PreparedQueryGet { id } => {
            let (i, found) = st.query_resolve(id);
            // By ID only: a name or a template's prefix is not this endpoint's to resolve.
            match found.filter(|q| q.id == *id) {
                Some(found) => (i, A::Queries(vec![found])),
                None => return Err(Error::Rejected(cairn_types::Error::not_found(format!("Query not found: {id}")))),
            }
        }
        R::PreparedQueryExplain { id_or_name } => {
            let pq = prepared_query::resolve(st, id_or_name)?;
            (st.index("queries"), A::Explained(Box::new(pq)))
        }
        R::PreparedQueryExecute { id_or_name, limit } => {
            let pq = prepared_query::resolve(st, id_or_name)?;
            let (i, mut nodes) = st.check_service_nodes(&pq.service.service, &[], false);
            let near = q.near.as_deref().filter(|n| !n.is_empty()).unwrap_or(&pq.service.near);
            let near = match near {
                "_ip" => q.source.ip.as_deref().and_then(|ip| prepared_query::node_at(st, ip)),
                n => near_node(q, Some(n)),
            };
            prepared_query::rank(st, &pq, &mut nodes, near.as_deref(), &*server.config().rng);
            if *limit > 0 {
                nodes.truncate(*limit);
            }
            let out = QueryExecuted {
                service: pq.service.service.clone(),
                nodes,
                dns_ttl: pq.dns.ttl.clone(),
                datacenter: server.config().datacenter.clone(),
            };
            (i, A::Executed(Box::new(out)))
        }
        R::CoordinateListNodes { segment } => {
            let (i, mut rows) = st.coordinates();
            if let Some(s) = segment {
                rows.retain(|e| e.segment == *s);
            }
            keep(f, &mut rows);
            (i, A::Coordinates(rows))
        }
        R::CoordinateNode { node, segment } => {
            let (i, mut rows) = st.node_coordinates(node);
            if let Some(s) = segment {
                rows.retain(|e| e.segment == *s);
            }
            (i, A::Coordinates(rows))
        }
        R::TxnRead(ops) => (st.last_index, A::Txn(cairn_store::txn::read_txn(st, ops))),
        R::CatalogServiceAddress { address } => {
            // Addresses compare as IPs where they are IPs (one IPv6 address has many spellings).
            // (IPv4-mapped IPv6 addresses are their IPv4 address.)
            let parse = |a: &str| a.parse::<std::net::IpAddr>().ok().map(|i| i.to_canonical());
            let ip = parse(address);
            let same = |a: &str| match (ip, parse(a)) {
                (Some(x), Some(y)) => x == y,
                _ => a == address,
            };
            let mut rows = Vec::new();
            for ((node, _), svc) in st.services.iter() {
                if svc.address.is_empty() || !same(&svc.address) {
                    continue;
                }
                if let Some(n) = st.node(node) {
                    rows.push(ServiceNode::new(n, svc));
                }
            }
            (st.index("services"), A::ServiceNodes(rows))
        }
    })
}
