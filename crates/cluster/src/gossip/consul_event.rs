//! Consul's user events as they ride in Serf: the Serf event is named `consul:event:<name>`, sent
//! without coalescing, and its payload is the msgpack of Consul's event struct with the short keys
//! `ID, n, p, nf, sf, tf, v` (empty ones left out) — docs/consul-facts/gossip.md §8. The Lamport
//! time is not encoded: the receiver takes the Serf event's.

use cairn_gossip::msgpack::{Dec, Enc, Error, Result};
use cairn_types::structs::UserEvent;

pub const PREFIX: &str = "consul:event:";

pub fn encode(ev: &UserEvent) -> Vec<u8> {
    let payload = ev.payload.as_deref().filter(|p| !p.is_empty());
    let fields = 3 // ID, n, v
        + payload.is_some() as usize
        + !ev.node_filter.is_empty() as usize
        + !ev.service_filter.is_empty() as usize
        + !ev.tag_filter.is_empty() as usize;
    let mut e = Enc::new();
    e.map_len(fields);
    e.str("ID");
    e.str(&ev.id);
    e.str("n");
    e.str(&ev.name);
    if let Some(p) = payload {
        e.str("p");
        e.raw(p);
    }
    for (k, v) in [("nf", &ev.node_filter), ("sf", &ev.service_filter), ("tf", &ev.tag_filter)] {
        if !v.is_empty() {
            e.str(k);
            e.str(v);
        }
    }
    e.str("v");
    e.uint(ev.version.max(1) as u64);
    e.into_vec()
}

pub fn decode(buf: &[u8], ltime: u64) -> Result<UserEvent> {
    let mut d = Dec::new(buf);
    let n = d.map_len()?;
    let mut ev = UserEvent { ltime, ..Default::default() };
    for _ in 0..n {
        let k = d.raw()?;
        match k {
            b"ID" => ev.id = d.string()?,
            b"n" => ev.name = d.string()?,
            b"p" => ev.payload = Some(d.raw()?.to_vec()).filter(|p| !p.is_empty()),
            b"nf" => ev.node_filter = d.string()?,
            b"sf" => ev.service_filter = d.string()?,
            b"tf" => ev.tag_filter = d.string()?,
            b"v" => ev.version = d.uint(u32::MAX as u64)? as u32,
            _ => d.skip()?,
        }
    }
    if ev.name.is_empty() {
        return Err(Error::Invalid("event without a name"));
    }
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_short_keys() {
        let ev = UserEvent {
            id: "0b1c".into(),
            name: "deploy".into(),
            payload: Some(b"v42".to_vec()),
            service_filter: "web".into(),
            version: 1,
            ..Default::default()
        };
        let b = encode(&ev);
        // 5 fields: ID, n, p, sf, v
        assert_eq!(b[0], 0x85);
        let back = decode(&b, 9).unwrap();
        assert_eq!(back.ltime, 9);
        assert_eq!(UserEvent { ltime: 0, ..back }, ev);
        assert!(decode(&[0x80], 1).is_err());
    }
}
