//! A linearizability checker for histories of KV operations on one key (Wing & Gong's search with
//! Lowe's memoization, as porcupine runs it for etcd): is there an order of the operations, each
//! taking effect at one instant between its call and its return, in which every answer is what a
//! single register would have given?
//!
//! The model is a Consul key: a value and a lock holder. Values written in a history must be
//! unique, so a check-and-set on the index a client read is a check-and-set on the value it read.
//! An operation whose outcome is unknown (a timeout, a lost connection) may have taken effect at
//! any point after its call, or never: give it `ret = u64::MAX` and no output.
//!
//! Histories of different keys are independent: check each key on its own ([`check_by_key`]).

use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Input {
    Get,
    Put(String),
    /// Set to `new` if the value is `expect` (`None`: only if the key is absent, Consul's
    /// `?cas=0`).
    Cas {
        expect: Option<String>,
        new: String,
    },
    Delete,
    /// `?acquire=session`: set the value and take the lock if it is free or already ours.
    Acquire {
        session: String,
        value: String,
    },
    /// `?release=session` with `value` as the body: give the lock back if it is ours, and, as
    /// Consul's release does, set the value to the body.
    Release {
        session: String,
        value: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Output {
    /// What a read returned (`None`: not found).
    Value(Option<String>),
    /// What a write returned (`true`/`false` from Consul).
    Ok(bool),
}

#[derive(Debug, Clone)]
pub struct Operation {
    pub key: String,
    pub call: u64,
    /// `u64::MAX` when the outcome is unknown.
    pub ret: u64,
    pub input: Input,
    /// `None` when the outcome is unknown: any answer fits.
    pub output: Option<Output>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct Register {
    value: Option<String>,
    holder: Option<String>,
}

/// One step of the model: the new state if `out` is a possible answer to `input` in `s`.
fn step(s: &Register, input: &Input, out: Option<&Output>) -> Option<Register> {
    let (next, answer) = match input {
        Input::Get => (s.clone(), Output::Value(s.value.clone())),
        Input::Put(v) => (Register { value: Some(v.clone()), holder: s.holder.clone() }, Output::Ok(true)),
        Input::Cas { expect, new } => {
            if s.value == *expect {
                (Register { value: Some(new.clone()), holder: s.holder.clone() }, Output::Ok(true))
            } else {
                (s.clone(), Output::Ok(false))
            }
        }
        Input::Delete => (Register::default(), Output::Ok(true)),
        Input::Acquire { session, value } => match &s.holder {
            Some(h) if h != session => (s.clone(), Output::Ok(false)),
            _ => (Register { value: Some(value.clone()), holder: Some(session.clone()) }, Output::Ok(true)),
        },
        Input::Release { session, value } => match &s.holder {
            Some(h) if h == session => (Register { value: Some(value.clone()), holder: None }, Output::Ok(true)),
            _ => (s.clone(), Output::Ok(false)),
        },
    };
    match out {
        None => Some(next),
        Some(o) if *o == answer => Some(next),
        Some(_) => None,
    }
}

/// The result of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order fits. Holds the key.
    Violation(String),
    /// The search gave up after this many steps (the history is too concurrent to decide).
    Unknown(String),
}

/// Checks every key's history on its own; the first key that fails decides.
pub fn check_by_key(history: &[Operation], max_steps: u64) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    for (key, ops) in by_key {
        match check(&ops, max_steps) {
            Some(true) => {}
            Some(false) => return Verdict::Violation(key.to_string()),
            None => return Verdict::Unknown(key.to_string()),
        }
    }
    Verdict::Linearizable
}

#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
}

/// Whether one key's history is linearizable; `None` if undecided within `max_steps`.
pub fn check(ops: &[Operation], max_steps: u64) -> Option<bool> {
    // Events in time order; at equal times calls come first (the operations overlap).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, o) in ops.iter().enumerate() {
        assert!(o.call <= o.ret, "an operation returns after its call");
        events.push((o.call, false, i));
        events.push((o.ret, true, i));
    }
    events.sort_by_key(|(t, is_ret, i)| (*t, *is_ret, *i));
    let ev: Vec<Event> = events.iter().map(|(_, is_ret, i)| Event { op: *i, is_call: !is_ret }).collect();
    // A doubly linked list over `ev`, so calls can be lifted out and put back.
    let n = ev.len();
    let mut next: Vec<usize> = (1..=n).collect();
    let mut prev: Vec<usize> = (0..n).map(|i| if i == 0 { usize::MAX } else { i - 1 }).collect();
    let mut head = 0usize; // n = end of list
    let mut ret_pos = vec![0usize; ops.len()];
    for (pos, e) in ev.iter().enumerate() {
        if !e.is_call {
            ret_pos[e.op] = pos;
        }
    }
    let unlink = |pos: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>, head: &mut usize| {
        let (p, nx) = (prev[pos], next[pos]);
        if p == usize::MAX {
            *head = nx;
        } else {
            next[p] = nx;
        }
        if nx < n {
            prev[nx] = p;
        }
    };
    let relink = |pos: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>, head: &mut usize| {
        let (p, nx) = (prev[pos], next[pos]);
        if p == usize::MAX {
            *head = pos;
        } else {
            next[p] = pos;
        }
        if nx < n {
            prev[nx] = pos;
        }
    };
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, Register)> = HashSet::new();
    let mut state = Register::default();
    // (call position, state before it)
    let mut stack: Vec<(usize, Register)> = Vec::new();
    let mut cur = head;
    let mut steps = 0u64;
    while head < n {
        steps += 1;
        if steps > max_steps {
            return None;
        }
        if cur >= n {
            // Nothing fits at this point: undo the last choice.
            let (pos, before) = stack.pop()?;
            let op = ev[pos].op;
            linearized[op / 64] &= !(1 << (op % 64));
            state = before;
            relink(ret_pos[op], &mut next, &mut prev, &mut head);
            relink(pos, &mut next, &mut prev, &mut head);
            cur = next[pos];
            continue;
        }
        let e = ev[cur];
        if e.is_call {
            let o = &ops[e.op];
            if let Some(after) = step(&state, &o.input, o.output.as_ref()) {
                linearized[e.op / 64] |= 1 << (e.op % 64);
                if seen.insert((linearized.clone(), after.clone())) {
                    stack.push((cur, std::mem::replace(&mut state, after)));
                    unlink(cur, &mut next, &mut prev, &mut head);
                    unlink(ret_pos[e.op], &mut next, &mut prev, &mut head);
                    cur = head;
                    continue;
                }
                linearized[e.op / 64] &= !(1 << (e.op % 64));
            }
            cur = next[cur];
        } else {
            // A return of an operation not yet placed: everything before must be undone.
            let Some((pos, before)) = stack.pop() else { return Some(false) };
            let op = ev[pos].op;
            linearized[op / 64] &= !(1 << (op % 64));
            state = before;
            relink(ret_pos[op], &mut next, &mut prev, &mut head);
            relink(pos, &mut next, &mut prev, &mut head);
            cur = next[pos];
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: u64, ret: u64, input: Input, output: Option<Output>) -> Operation {
        Operation { key: "k".into(), call, ret, input, output }
    }
    fn put(v: &str) -> Input {
        Input::Put(v.into())
    }
    fn val(v: Option<&str>) -> Option<Output> {
        Some(Output::Value(v.map(str::to_string)))
    }
    fn ok(b: bool) -> Option<Output> {
        Some(Output::Ok(b))
    }
    const STEPS: u64 = 1_000_000;

    #[test]
    fn sequential_histories_check_against_the_register() {
        let h = vec![
            op(0, 1, Input::Get, val(None)),
            op(2, 3, put("a"), ok(true)),
            op(4, 5, Input::Get, val(Some("a"))),
            op(6, 7, Input::Delete, ok(true)),
            op(8, 9, Input::Get, val(None)),
        ];
        assert_eq!(check(&h, STEPS), Some(true));
        let mut bad = h.clone();
        bad[4].output = val(Some("a"));
        assert_eq!(check(&bad, STEPS), Some(false), "a read after the delete returned must not see the value");
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_a_violation() {
        let h =
            vec![op(0, 10, put("a"), ok(true)), op(20, 30, put("b"), ok(true)), op(40, 50, Input::Get, val(Some("a")))];
        assert_eq!(check(&h, STEPS), Some(false));
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // The read overlaps both writes: "a" and "b" are both possible, nothing else.
        for (seen, fine) in [(Some("a"), true), (Some("b"), true), (None, true), (Some("c"), false)] {
            let h =
                vec![op(0, 100, put("a"), ok(true)), op(10, 90, put("b"), ok(true)), op(20, 80, Input::Get, val(seen))];
            assert_eq!(check(&h, STEPS), Some(fine), "read {seen:?}");
        }
        // Two reads that disagree on the order of two concurrent writes cannot both be right.
        let h = vec![
            op(0, 100, put("a"), ok(true)),
            op(0, 100, put("b"), ok(true)),
            op(110, 120, Input::Get, val(Some("a"))),
            op(130, 140, Input::Get, val(Some("b"))),
        ];
        assert_eq!(check(&h, STEPS), Some(false));
    }

    #[test]
    fn a_lost_acknowledged_write_is_a_violation_and_an_unknown_one_is_not() {
        let lost = vec![op(0, 10, put("a"), ok(true)), op(20, 30, Input::Get, val(None))];
        assert_eq!(check(&lost, STEPS), Some(false));
        // Unknown outcome: it may have happened late, or never.
        let unknown = vec![
            op(0, u64::MAX, put("a"), None),
            op(20, 30, Input::Get, val(None)),
            op(40, 50, Input::Get, val(Some("a"))),
        ];
        assert_eq!(check(&unknown, STEPS), Some(true));
        // But once seen it cannot be unseen.
        let mut back = unknown.clone();
        back.push(op(60, 70, Input::Get, val(None)));
        assert_eq!(check(&back, STEPS), Some(false));
    }

    #[test]
    fn check_and_set_and_locks_follow_consul() {
        let h = vec![
            op(0, 1, Input::Cas { expect: None, new: "a".into() }, ok(true)),
            op(2, 3, Input::Cas { expect: None, new: "b".into() }, ok(false)),
            op(4, 5, Input::Cas { expect: Some("a".into()), new: "c".into() }, ok(true)),
            op(6, 7, Input::Cas { expect: Some("a".into()), new: "d".into() }, ok(false)),
            op(8, 9, Input::Acquire { session: "s1".into(), value: "e".into() }, ok(true)),
            op(10, 11, Input::Acquire { session: "s2".into(), value: "f".into() }, ok(false)),
            op(12, 13, Input::Put("g".into()), ok(true)),
            op(14, 15, Input::Release { session: "s2".into(), value: "x".into() }, ok(false)),
            op(16, 17, Input::Get, val(Some("g"))),
            op(18, 19, Input::Release { session: "s1".into(), value: "r".into() }, ok(true)),
            op(20, 21, Input::Get, val(Some("r"))),
            op(22, 23, Input::Acquire { session: "s2".into(), value: "h".into() }, ok(true)),
            op(24, 25, Input::Get, val(Some("h"))),
        ];
        assert_eq!(check(&h, STEPS), Some(true));
        let mut two = h.clone();
        two[5].output = ok(true);
        assert_eq!(check(&two, STEPS), Some(false), "two sessions cannot hold one lock");
    }

    #[test]
    fn keys_are_checked_apart_and_big_concurrent_histories_finish() {
        let mut h = Vec::new();
        // 8 clients, 200 overlapping writes and reads on one key: the reads return the latest
        // write that returned before them (a valid linearization exists).
        let mut last: Option<String> = None;
        for i in 0..200u64 {
            let t = i * 10;
            h.push(op(t, t + 35, put(&format!("v{i}")), ok(true)));
            if i % 4 == 0 {
                h.push(op(t + 1, t + 2, Input::Get, val(last.as_deref())));
            }
            if i >= 3 {
                last = Some(format!("v{}", i - 3));
            }
        }
        assert_eq!(check(&h, 50_000_000), Some(true));
        let mut other = h.clone();
        other.push(Operation { key: "x".into(), call: 0, ret: 1, input: Input::Get, output: val(Some("nope")) });
        assert_eq!(check_by_key(&other, 50_000_000), Verdict::Violation("x".into()));
        assert_eq!(check_by_key(&h, 50_000_000), Verdict::Linearizable);
    }
}
