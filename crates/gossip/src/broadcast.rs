//! memberlist's transmit-limited queue: each broadcast is sent `retransmit_mult × ⌈log10(n+1)⌉`
//! times, fewest-sent first (then longest, then newest, as memberlist orders its btree), and a
//! newer broadcast about the same name replaces the older one.
//!
//! Ordered set plus a key index, so a push is O(log q) and a take visits only what it sends (and
//! a bounded number of entries that do not fit).

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

/// (transmits, longest first, newest first)
type Order = (u32, Reverse<usize>, Reverse<u64>);

#[derive(Debug, Clone)]
struct Item {
    key: Option<String>,
    msg: Vec<u8>,
}

#[derive(Debug, Default, Clone)]
pub struct Queue {
    items: BTreeMap<Order, Item>,
    by_key: HashMap<String, Order>,
    next_id: u64,
    /// Queue length past which the most-sent, oldest items are dropped (0: unbounded).
    pub max_len: usize,
}

/// `retransmit_mult × ⌈log10(n + 1)⌉`.
pub fn retransmit_limit(mult: u32, n: usize) -> u32 {
    let scale = ((n as f64) + 1.0).log10().ceil() as u32;
    mult * scale.max(1)
}

/// How many entries that do not fit a take may skip before it stops looking.
const MAX_SKIPS: usize = 64;

impl Queue {
    pub fn new(max_len: usize) -> Self {
        Queue { max_len, ..Default::default() }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues `msg`, dropping any older broadcast with the same key.
    pub fn push(&mut self, key: Option<String>, msg: Vec<u8>) {
        if let Some(k) = &key {
            if let Some(old) = self.by_key.remove(k) {
                self.items.remove(&old);
            }
        }
        self.next_id += 1;
        let order = (0, Reverse(msg.len()), Reverse(self.next_id));
        if let Some(k) = &key {
            self.by_key.insert(k.clone(), order);
        }
        self.items.insert(order, Item { key, msg });
        while self.max_len > 0 && self.items.len() > self.max_len {
            // The most-sent (then shortest, then oldest) entry sorts last.
            let Some(v) = self.items.keys().next_back().copied() else { break };
            if let Some(it) = self.items.remove(&v) {
                if let Some(k) = it.key {
                    self.by_key.remove(&k);
                }
            }
        }
    }

    /// Takes broadcasts that fit in `limit` bytes, each costing `overhead` more, fewest-sent
    /// first; a broadcast sent `retransmit` times leaves the queue.
    pub fn take(&mut self, overhead: usize, limit: usize, retransmit: u32) -> Vec<Vec<u8>> {
        let mut used = 0;
        let mut picked: Vec<Order> = Vec::new();
        let mut skips = 0;
        for (order, it) in &self.items {
            let cost = it.msg.len() + overhead;
            if used + cost > limit {
                skips += 1;
                if skips > MAX_SKIPS || limit - used <= overhead {
                    break;
                }
                continue;
            }
            used += cost;
            picked.push(*order);
        }
        let mut out = Vec::with_capacity(picked.len());
        for order in picked {
            let Some(it) = self.items.remove(&order) else { continue };
            out.push(it.msg.clone());
            let sent = order.0 + 1;
            match (&it.key, sent >= retransmit) {
                (Some(k), true) => {
                    self.by_key.remove(k);
                }
                (None, true) => {}
                (key, false) => {
                    let next = (sent, order.1, order.2);
                    if let Some(k) = key {
                        self.by_key.insert(k.clone(), next);
                    }
                    self.items.insert(next, it);
                }
            }
        }
        out
    }

    pub fn clear(&mut self) {
        self.items.clear();
        self.by_key.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_replacement() {
        assert_eq!(retransmit_limit(4, 1), 4);
        assert_eq!(retransmit_limit(4, 9), 4);
        assert_eq!(retransmit_limit(4, 10), 8);
        let mut q = Queue::new(0);
        q.push(Some("a".into()), vec![1]);
        q.push(Some("a".into()), vec![2]);
        q.push(None, vec![3; 10]);
        assert_eq!(q.len(), 2);
        let got = q.take(2, 5, 2);
        assert_eq!(got, vec![vec![2]]);
        q.take(2, 100, 2);
        // [2] was sent twice and left; [3..] once.
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn fewest_sent_then_longest_first_and_bounded() {
        let mut q = Queue::new(3);
        q.push(None, vec![1; 5]);
        q.push(None, vec![2; 9]);
        assert_eq!(q.take(0, 9, 10), vec![vec![2; 9]]);
        // [1;5] has 0 transmits now, [2;9] one.
        assert_eq!(q.take(0, 100, 10), vec![vec![1; 5], vec![2; 9]]);
        for i in 0..5 {
            q.push(Some(format!("k{i}")), vec![i]);
        }
        assert_eq!(q.len(), 3);
    }
}
