//! Prepared-query execution as Consul's `PreparedQuery.Execute` does it: resolve (ID, name, or the
//! longest matching template, rendered), select the healthy instances that match, shuffle, sort by
//! distance from `near`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use cairn_store::State;
use cairn_types::query::PreparedQuery;
use cairn_types::structs::{ServiceEntry, HEALTH_CRITICAL, HEALTH_PASSING};

use crate::error::Error;

/// The query `id_or_name` resolves to, its template rendered for that name.
pub fn resolve(st: &State, id_or_name: &str) -> Result<PreparedQuery, Error> {
    let (_, found) = st.query_resolve(id_or_name);
    let q = found
        .ok_or_else(|| Error::Rejected(cairn_types::Error::not_found(format!("Query not found: {id_or_name}"))))?;
    q.render(id_or_name).map_err(|e| Error::Rejected(cairn_types::Error::rejected(e)))
}

/// Consul's execution filters: unhealthy instances out (critical, or anything not passing with
/// `OnlyPassing`, ignoring `IgnoreCheckIDs`), then tags (`!tag` excludes), node and service meta.
fn matches(q: &PreparedQuery, e: &ServiceEntry) -> bool {
    let s = &q.service;
    let healthy = e.checks.iter().filter(|c| !s.ignore_check_ids.contains(&c.check_id)).all(|c| {
        if s.only_passing {
            c.status == HEALTH_PASSING
        } else {
            c.status != HEALTH_CRITICAL
        }
    });
    let tags_ok = s.tags.iter().all(|t| match t.strip_prefix('!') {
        Some(not) => !e.service.tags.iter().any(|x| x.eq_ignore_ascii_case(not)),
        None => e.service.tags.iter().any(|x| x.eq_ignore_ascii_case(t)),
    });
    let meta_ok = |want: &BTreeMap<String, String>, have: &BTreeMap<String, String>| {
        want.iter().all(|(k, v)| have.get(k) == Some(v))
    };
    healthy && tags_ok && meta_ok(&s.node_meta, &e.node.meta) && meta_ok(&s.service_meta, &e.service.meta)
}

/// Keeps the instances a query selects, in the order it returns them. As Consul: shuffle, then sort
/// by round-trip time from the node `near`; equally near instances, and all of them when there is
/// nothing to sort by, stay shuffled.
pub fn rank(
    st: &State,
    pq: &PreparedQuery,
    nodes: &mut Vec<ServiceEntry>,
    near: Option<&str>,
    rng: &dyn crate::clock::Rng,
) {
    nodes.retain(|e| matches(pq, e));
    for i in (1..nodes.len()).rev() {
        nodes.swap(i, rng.below(i as u64 + 1) as usize);
    }
    super::read::sort_near(st, near, nodes, |e| &e.node.node);
    // Consul then puts the `near` node itself first when it is among the first ten results (its
    // distance to itself is twice its height, so a close neighbour can sort ahead of it).
    if let Some(n) = near {
        if let Some(i) = nodes.iter().take(10).position(|e| e.node.node.eq_ignore_ascii_case(n)) {
            let me = nodes.remove(i);
            nodes.insert(0, me);
        }
    }
}

/// The catalog node whose address is `ip` (what `near=_ip` means).
pub fn node_at(st: &State, ip: &str) -> Option<String> {
    let ip: IpAddr = ip.parse().ok()?;
    st.nodes.values().find(|n| n.address.parse::<IpAddr>().ok() == Some(ip)).map(|n| n.node.clone())
}
