//! User events: `consul event` / `/v1/event/fire` and `/v1/event/list`.
//!
//! Consul delivers user events over the LAN gossip pool, not Raft: they are not persisted, carry no
//! total order, and each agent keeps the last [`BUFFER`] it accepted. An agent accepts an event when
//! its filters match: the node filter against its node name, the service filter against one of its
//! local services, and the tag filter against one of that service's tags (all regular expressions).
//! Consul's quirk, kept: the "service" filter is matched against local service *IDs* (which are
//! the names unless a registration set another ID).
//!
//! Delivery goes to every member of the LAN pool as a Serf user event; each agent checks
//! [`accepts`] and calls [`Events::deliver`] for the events that arrive (its own included).

use std::collections::VecDeque;
use std::sync::Mutex;

use cairn_types::structs::{NodeService, UserEvent};
use regex::Regex;
use tokio::sync::watch;

/// Events kept per agent (Consul keeps 256).
pub const BUFFER: usize = 256;

/// Serf's default user-event size limit. Consul sends the event as Serf's user event
/// `consul:event:<name>` with the msgpack-encoded event as its payload, and Serf refuses one whose
/// name and payload exceed this.
pub const SIZE_LIMIT: usize = 512;

/// The blocking index of an event list: the two halves of the newest event's UUID XORed, as
/// Consul's API clients compute it (`IDToIndex`). It is not monotonic: blocking on the event list
/// means "until the newest event is a different one".
pub fn id_to_index(id: &str) -> u64 {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return 0;
    }
    let hi = u64::from_str_radix(&hex[..16], 16).unwrap_or(0);
    let lo = u64::from_str_radix(&hex[16..], 16).unwrap_or(0);
    hi ^ lo
}

/// Checks a new event as Consul does before sending it.
pub fn validate(ev: &UserEvent) -> Result<(), String> {
    if ev.name.is_empty() {
        return Err("User event missing name".into());
    }
    if !ev.tag_filter.is_empty() && ev.service_filter.is_empty() {
        return Err("Cannot provide tag filter without service filter".into());
    }
    for (what, f) in [("node", &ev.node_filter), ("service", &ev.service_filter), ("tag", &ev.tag_filter)] {
        if !f.is_empty() {
            Regex::new(f).map_err(|e| format!("Invalid {what} filter: {e}"))?;
        }
    }
    let encoded = super::consul_event::encode(ev);
    if super::consul_event::PREFIX.len() + ev.name.len() + encoded.len() > SIZE_LIMIT {
        return Err(format!("user event exceeds configured limit of {SIZE_LIMIT} bytes before encoding"));
    }
    Ok(())
}

/// Whether an agent named `node` with `services` accepts `ev`.
pub fn accepts<'a>(ev: &UserEvent, node: &str, mut services: impl Iterator<Item = &'a NodeService>) -> bool {
    let re = |f: &str| if f.is_empty() { None } else { Regex::new(f).ok() };
    if let Some(r) = re(&ev.node_filter) {
        if !r.is_match(node) {
            return false;
        }
    }
    let Some(svc) = re(&ev.service_filter) else { return true };
    let tag = re(&ev.tag_filter);
    services.any(|s| svc.is_match(&s.id) && tag.as_ref().is_none_or(|t| s.tags.iter().any(|x| t.is_match(x))))
}

struct Ring {
    events: VecDeque<UserEvent>,
    ltime: u64,
}

/// This agent's accepted events, newest last.
pub struct Events {
    ring: Mutex<Ring>,
    /// The index of the newest event; waiters of a blocking list watch it.
    index: watch::Sender<u64>,
}

impl Default for Events {
    fn default() -> Self {
        Events { ring: Mutex::new(Ring { events: VecDeque::new(), ltime: 0 }), index: watch::channel(0).0 }
    }
}

impl Events {
    /// Stores an accepted event and wakes list waiters. An event from the pool keeps Serf's
    /// Lamport time; one without (no pool) gets the next local one.
    pub fn deliver(&self, mut ev: UserEvent) {
        let mut r = self.ring.lock().expect("events");
        if ev.ltime == 0 {
            r.ltime += 1;
            ev.ltime = r.ltime;
        } else {
            r.ltime = r.ltime.max(ev.ltime);
        }
        let idx = id_to_index(&ev.id);
        r.events.push_back(ev);
        while r.events.len() > BUFFER {
            r.events.pop_front();
        }
        drop(r);
        self.index.send_replace(idx);
    }

    /// The events named `name` (all when `None`), oldest first, and the list's index: that of the
    /// newest event listed, or 1 for an empty list (as Consul, so that a watch does not spin).
    pub fn list(&self, name: Option<&str>) -> (u64, Vec<UserEvent>) {
        let r = self.ring.lock().expect("events");
        let v: Vec<UserEvent> = r.events.iter().filter(|e| name.is_none_or(|n| e.name == n)).cloned().collect();
        let idx = v.last().map_or(1, |e| id_to_index(&e.id));
        (idx, v)
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.index.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str) -> UserEvent {
        UserEvent { id: uuid::Uuid::new_v4().to_string(), name: name.into(), version: 1, ..Default::default() }
    }

    fn svc(name: &str, tags: &[&str]) -> NodeService {
        NodeService {
            service: name.into(),
            id: name.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn index_is_the_xor_of_the_uuid_halves() {
        assert_eq!(id_to_index("00000000-0000-0001-0000-000000000003"), 1 ^ 3);
        assert_eq!(id_to_index("not a uuid"), 0);
    }

    #[test]
    fn filters_decide_acceptance() {
        let web = [svc("web", &["v1", "canary"]), svc("db", &[])];
        let mut e = ev("deploy");
        assert!(accepts(&e, "n1", web.iter()));
        e.node_filter = "^n[0-9]$".into();
        assert!(accepts(&e, "n1", web.iter()));
        assert!(!accepts(&e, "web-7", web.iter()));
        e.node_filter.clear();
        e.service_filter = "^we".into();
        assert!(accepts(&e, "n1", web.iter()));
        e.tag_filter = "canary".into();
        assert!(accepts(&e, "n1", web.iter()));
        e.tag_filter = "v2".into();
        assert!(!accepts(&e, "n1", web.iter()));
        e.service_filter = "cache".into();
        e.tag_filter.clear();
        assert!(!accepts(&e, "n1", web.iter()));
        // Matched against the service ID, as Consul does.
        let mut renamed = svc("web", &[]);
        renamed.id = "frontend-1".into();
        e.service_filter = "^web$".into();
        assert!(!accepts(&e, "n1", [renamed.clone()].iter()));
        e.service_filter = "^frontend".into();
        assert!(accepts(&e, "n1", [renamed].iter()));
    }

    #[test]
    fn validation_matches_consul() {
        assert!(validate(&ev("")).unwrap_err().contains("missing name"));
        let mut e = ev("x");
        e.tag_filter = "t".into();
        assert!(validate(&e).unwrap_err().contains("without service filter"));
        e.service_filter = "(".into();
        assert!(validate(&e).unwrap_err().contains("Invalid service filter"));
        let mut e = ev("x");
        e.payload = Some(vec![b'a'; SIZE_LIMIT]);
        assert!(validate(&e).unwrap_err().contains("exceeds configured limit of 512 bytes"));
        // With Consul's short-keyed encoding (an ID of 36 bytes, `n`, `p`, `v`), the Serf name
        // `consul:event:x` plus the encoded event must stay within 512: 400 bytes of payload fit,
        // 460 do not.
        e.id = uuid::Uuid::new_v4().to_string();
        e.payload = Some(vec![b'a'; 400]);
        assert!(validate(&e).is_ok());
        e.payload = Some(vec![b'a'; 460]);
        assert!(validate(&e).is_err());
    }

    #[test]
    fn the_buffer_keeps_the_newest_and_assigns_lamport_times() {
        let evs = Events::default();
        assert_eq!(evs.list(None), (1, vec![]));
        for i in 0..BUFFER + 10 {
            evs.deliver(ev(if i % 2 == 0 { "even" } else { "odd" }));
        }
        let (idx, all) = evs.list(None);
        assert_eq!(all.len(), BUFFER);
        assert_eq!(all.last().map(|e| e.ltime), Some((BUFFER + 10) as u64));
        assert_eq!(idx, id_to_index(&all.last().unwrap().id));
        assert_eq!(*evs.subscribe().borrow(), idx);
        let (odd_idx, odd) = evs.list(Some("odd"));
        assert_eq!(odd.len(), BUFFER / 2);
        assert_eq!(odd_idx, id_to_index(&odd.last().unwrap().id), "the index of the newest event listed");
        assert!(odd.windows(2).all(|w| w[0].ltime < w[1].ltime));
    }
}
