//! memberlist's transmit-limited queue: each broadcast is sent `retransmit_mult × ⌈log10(n+1)⌉`
//! times, fewest-sent first, and a newer broadcast about the same name replaces the older one.

/// One queued broadcast.
#[derive(Debug, Clone)]
struct Item {
    /// The name it is about, if a newer one should replace it.
    key: Option<String>,
    msg: Vec<u8>,
    transmits: u32,
    /// Insertion order, so equal-transmit items go oldest first.
    id: u64,
}

#[derive(Debug, Default, Clone)]
pub struct Queue {
    items: Vec<Item>,
    next_id: u64,
    /// Queue length past which the oldest, most-sent items are dropped.
    pub max_len: usize,
}

/// `retransmit_mult × ⌈log10(n + 1)⌉`.
pub fn retransmit_limit(mult: u32, n: usize) -> u32 {
    let scale = ((n as f64) + 1.0).log10().ceil() as u32;
    mult * scale.max(1)
}

impl Queue {
    pub fn new(max_len: usize) -> Self {
        Queue { items: Vec::new(), next_id: 0, max_len }
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
            self.items.retain(|i| i.key.as_ref() != Some(k));
        }
        self.next_id += 1;
        self.items.push(Item { key, msg, transmits: 0, id: self.next_id });
        if self.max_len > 0 && self.items.len() > self.max_len {
            // Drop the most-sent (then oldest) items first.
            self.items.sort_by_key(|i| (std::cmp::Reverse(i.transmits), i.id));
            let extra = self.items.len() - self.max_len;
            self.items.drain(..extra);
        }
    }

    /// Takes broadcasts that fit in `limit` bytes, each costing `overhead` more, fewest-sent first;
    /// a broadcast sent `retransmit` times leaves the queue.
    pub fn take(&mut self, overhead: usize, limit: usize, retransmit: u32) -> Vec<Vec<u8>> {
        if self.items.is_empty() {
            return Vec::new();
        }
        // memberlist's order: fewest transmits, then longest, then newest.
        self.items.sort_by_key(|i| (i.transmits, std::cmp::Reverse(i.msg.len()), std::cmp::Reverse(i.id)));
        let mut used = 0;
        let mut out = Vec::new();
        for it in self.items.iter_mut() {
            let cost = it.msg.len() + overhead;
            if used + cost > limit {
                continue;
            }
            used += cost;
            it.transmits += 1;
            out.push(it.msg.clone());
        }
        self.items.retain(|i| i.transmits < retransmit);
        out
    }

    pub fn clear(&mut self) {
        self.items.clear();
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
}
