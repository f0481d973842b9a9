//! Watches for blocking queries. A read registers the topics it depends on in a [`WatchSet`]; a write
//! fires the topics it touched. Firing is edge-triggered and one-shot, like closing a channel in
//! go-memdb: a woken query re-runs and registers again.
//!
//! Registration happens under the same lock as taking the snapshot that the read runs on, and
//! writers fire after publishing their new root under that lock, so no wake-up is ever lost.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use tokio::sync::Notify;

/// What a read depends on. Finer topics mean fewer spurious wake-ups.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// A whole table: `"kvs"`, `"nodes"`, `"services"`, `"checks"`, `"sessions"`, or `"catalog"`
    /// (any catalog write).
    Table(&'static str),
    /// One KV key.
    Kv(String),
    /// Every KV key under a prefix.
    KvPrefix(String),
    /// Anything that changes the instances or health of one service name.
    Service(String),
    /// Anything about one node: the node, its services, its checks.
    Node(String),
}

impl Topic {
    /// The coarse topic that also fires whenever this one does; used when too many fine watches exist.
    fn coarse(&self) -> Topic {
        match self {
            Topic::Table(t) => Topic::Table(t),
            Topic::Kv(_) | Topic::KvPrefix(_) => Topic::Table("kvs"),
            // Service and node topics fire on node, service and check writes alike: only the
            // catalog-wide topic covers all of them.
            Topic::Service(_) | Topic::Node(_) => Topic::Table("catalog"),
        }
    }
}

/// Past this many distinct fine topics, new registrations fall back to their table topic
/// (a bounded map; the cost is spurious wake-ups, never missed ones).
pub const MAX_TOPICS: usize = 16 * 1024;

/// The set of signals one blocking query waits on.
#[derive(Debug, Clone, Default)]
pub struct WatchSet {
    signal: Arc<Notify>,
}

impl WatchSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Resolves once any registered topic fired since registration (a fire before this call is kept).
    pub async fn changed(&self) {
        self.signal.notified().await
    }

    /// Fires this set by hand (e.g. on shutdown or leadership change).
    pub fn fire(&self) {
        self.signal.notify_one();
    }
}

/// The sets waiting on one topic, keyed by the address of their signal: a set that registers
/// again (a re-run query) replaces its entry in O(1), however many wait on the topic (10,000
/// watchers of one key re-arm in linear time, not quadratic). A `Weak` keeps its allocation, so
/// an address in the map is never another live set's.
type Waiters = HashMap<usize, Weak<Notify>>;

#[derive(Default)]
pub(crate) struct WatchHub {
    topics: HashMap<Topic, Waiters>,
    /// Every KV prefix watched; a write to key k fires each one that is a prefix of k.
    prefixes: HashMap<String, Waiters>,
}

impl WatchHub {
    pub(crate) fn register(&mut self, ws: &WatchSet, topic: Topic) {
        if self.topics.len() + self.prefixes.len() >= MAX_TOPICS {
            self.prune();
        }
        let crowded = self.topics.len() + self.prefixes.len() >= MAX_TOPICS;
        let topic = if crowded { topic.coarse() } else { topic };
        let w = Arc::downgrade(&ws.signal);
        match topic {
            Topic::KvPrefix(p) => push(self.prefixes.entry(p).or_default(), w),
            t => push(self.topics.entry(t).or_default(), w),
        }
    }

    /// Fires one topic. For `Kv(k)` this also fires every watched prefix of `k` and the kvs table.
    pub(crate) fn fire(&mut self, topic: &Topic) {
        if let Topic::Kv(k) = topic {
            for (i, _) in k.char_indices().chain(std::iter::once((k.len(), ' '))) {
                if let Some(list) = self.prefixes.remove(&k[..i]) {
                    wake(list);
                }
            }
        }
        if let Topic::KvPrefix(p) = topic {
            // A tree delete: every watched key or prefix under p fires.
            let keys: Vec<String> = self
                .prefixes
                .keys()
                .filter(|q| q.starts_with(p.as_str()) || p.starts_with(q.as_str()))
                .cloned()
                .collect();
            for q in keys {
                if let Some(list) = self.prefixes.remove(&q) {
                    wake(list);
                }
            }
            let kv: Vec<Topic> = self
                .topics
                .keys()
                .filter(|t| matches!(t, Topic::Kv(k) if k.starts_with(p.as_str())))
                .cloned()
                .collect();
            for t in kv {
                if let Some(list) = self.topics.remove(&t) {
                    wake(list);
                }
            }
            return;
        }
        if let Some(list) = self.topics.remove(topic) {
            wake(list);
        }
    }

    /// Fires everything (snapshot restore).
    pub(crate) fn fire_all(&mut self) {
        for (_, l) in self.topics.drain() {
            wake(l);
        }
        for (_, l) in self.prefixes.drain() {
            wake(l);
        }
    }

    fn prune(&mut self) {
        self.topics.retain(|_, l| {
            l.retain(|_, w| w.strong_count() > 0);
            !l.is_empty()
        });
        self.prefixes.retain(|_, l| {
            l.retain(|_, w| w.strong_count() > 0);
            !l.is_empty()
        });
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.topics.len() + self.prefixes.len()
    }
}

fn push(list: &mut Waiters, w: Weak<Notify>) {
    let key = w.as_ptr() as usize;
    if list.contains_key(&key) {
        // Registered already: nothing grows.
        return;
    }
    // Dead sets (queries that ended unfired) are swept when a new entry would take the list past
    // a power of two from 64 up, so a topic that never fires stays bounded by its live waiters
    // (amortised O(1) per push).
    let n = list.len();
    if n >= 64 && n.is_power_of_two() {
        list.retain(|_, x| x.strong_count() > 0);
    }
    list.insert(key, w);
}

fn wake(list: Waiters) {
    for w in list.into_values() {
        if let Some(n) = w.upgrade() {
            n.notify_one();
        }
    }
}
