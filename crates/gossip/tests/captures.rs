//! Decodes every packet two real Serf 0.9.4 agents exchanged (tests/data, copied from
//! shared/testdata/serf-0.9.4) and re-encodes what is deterministic to the same bytes.

use cairn_gossip::keyring::Keyring;
use cairn_gossip::msgpack;
use cairn_gossip::wire::{self, Message};

struct Line {
    proto: String,
    src: String,
    dst: String,
    bytes: Vec<u8>,
}

fn lines(name: &str) -> Vec<Line> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Line {
                proto: v["proto"].as_str().unwrap().into(),
                src: v["src"].as_str().unwrap().into(),
                dst: v["dst"].as_str().unwrap().into(),
                bytes: hex::decode(v["hex"].as_str().unwrap()).unwrap(),
            }
        })
        .collect()
}

#[test]
fn plain_udp_packets_decode() {
    let mut kinds = std::collections::BTreeMap::new();
    for l in lines("serf-plain.jsonl").iter().filter(|l| l.proto == "udp") {
        let mut out = Vec::new();
        wire::decode_message(&l.bytes, &mut out).unwrap_or_else(|e| panic!("{e}: {}", hex::encode(&l.bytes)));
        for m in &out {
            *kinds.entry(m.kind()).or_insert(0) += 1;
            // Every fixed-shape message re-encodes to the bytes it came from.
            if !matches!(m, Message::User(_)) {
                let again = m.encode();
                let mut back = Vec::new();
                wire::decode_message(&again, &mut back).unwrap();
                assert_eq!(&back[0], m);
            }
        }
    }
    eprintln!("{kinds:?}");
    for k in ["ping", "ack", "alive", "user"] {
        assert!(kinds.contains_key(k), "no {k} in capture: {kinds:?}");
    }
}

/// The fixed-shape parts of every plain packet, after the CRC and outside compression.
fn plain_parts(buf: &[u8], out: &mut Vec<Vec<u8>>) {
    match buf[0] {
        wire::HAS_CRC => plain_parts(wire::check_crc(buf).unwrap(), out),
        wire::COMPOUND => {
            for p in wire::split_compound(&buf[1..]).unwrap() {
                plain_parts(p, out);
            }
        }
        wire::COMPRESS => plain_parts(&wire::decompress(&buf[1..]).unwrap(), out),
        _ => out.push(buf.to_vec()),
    }
}

#[test]
fn plain_messages_re_encode_byte_for_byte() {
    let mut n = 0;
    for l in lines("serf-plain.jsonl").iter().filter(|l| l.proto == "udp") {
        let mut parts = Vec::new();
        plain_parts(&l.bytes, &mut parts);
        for p in parts {
            let mut out = Vec::new();
            wire::decode_message(&p, &mut out).unwrap();
            if let [m] = &out[..] {
                if !matches!(m, Message::User(_)) {
                    assert_eq!(hex::encode(m.encode()), hex::encode(&p), "{m:?}");
                    n += 1;
                }
            }
        }
    }
    assert!(n > 20, "only {n} messages checked");
}

/// The TCP segments of each connection, concatenated, in both directions.
fn streams(name: &str) -> Vec<(String, Vec<u8>)> {
    let mut by: Vec<(String, Vec<u8>)> = Vec::new();
    for l in lines(name).into_iter().filter(|l| l.proto == "tcp") {
        let k = format!("{}>{}", l.src, l.dst);
        match by.iter_mut().find(|(key, _)| *key == k) {
            Some((_, v)) => v.extend_from_slice(&l.bytes),
            None => by.push((k, l.bytes)),
        }
    }
    by
}

#[test]
fn plain_push_pull_streams_decode() {
    let mut seen = 0;
    for (k, s) in streams("serf-plain.jsonl") {
        let inner = if s[0] == wire::COMPRESS { wire::decompress(&s[1..]).unwrap() } else { s.clone() };
        assert_eq!(inner[0], wire::PUSH_PULL, "{k}: {}", hex::encode(&inner));
        let (pp, used) = wire::PushPull::decode(&inner[1..]).unwrap();
        assert_eq!(used, inner.len() - 1, "{k}: trailing bytes");
        assert!(!pp.nodes.is_empty());
        assert!(pp.nodes.iter().any(|n| n.name == "alpha" || n.name == "beta"));
        // Re-encoding gives the same bytes.
        assert_eq!(hex::encode(pp.encode()), hex::encode(&inner), "{k}");
        seen += 1;
    }
    assert!(seen >= 2);
}

const KEY: &str = "HS5lJ+XuTlYKWaeGYyG+/A==";

fn key() -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(KEY).unwrap()
}

#[test]
fn encrypted_packets_and_streams_decrypt() {
    let ring = Keyring::new(&key(), &[]).unwrap();
    let wrong = Keyring::new(&[9u8; 16], &[]).unwrap();
    let mut udp = 0;
    for l in lines("serf-enc.jsonl").iter().filter(|l| l.proto == "udp") {
        assert!(wrong.decrypt(&l.bytes, b"").is_none());
        let plain = ring.decrypt(&l.bytes, b"").unwrap_or_else(|| panic!("{} > {}", l.src, l.dst));
        let mut out = Vec::new();
        wire::decode_message(&plain, &mut out).unwrap();
        assert!(!out.is_empty());
        udp += 1;
    }
    assert!(udp > 10);
    for (k, s) in streams("serf-enc.jsonl") {
        assert_eq!(s[0], wire::ENCRYPT, "{k}");
        let n = u32::from_be_bytes([s[1], s[2], s[3], s[4]]) as usize;
        assert_eq!(s.len(), 5 + n, "{k}");
        let plain = ring.decrypt(&s[5..], &s[..5]).unwrap_or_else(|| panic!("{k}: stream does not decrypt"));
        let inner = if plain[0] == wire::COMPRESS { wire::decompress(&plain[1..]).unwrap() } else { plain };
        assert_eq!(inner[0], wire::PUSH_PULL);
        wire::PushPull::decode(&inner[1..]).unwrap();
    }
}

#[test]
fn captured_alive_carries_serf_tags() {
    let l = &lines("serf-plain.jsonl")[2];
    let mut out = Vec::new();
    wire::decode_message(&l.bytes, &mut out).unwrap();
    let Message::Alive(a) = &out[0] else { panic!("{out:?}") };
    assert_eq!(a.node, "alpha");
    assert_eq!(a.port, 17946);
    assert_eq!(&a.addr[..], &[127, 0, 0, 1]);
    assert_eq!(&a.vsn[..], &[1, 5, 2, 2, 5, 5]);
    assert_eq!(a.meta[0], 0xff);
    let _ = msgpack::Dec::new(&a.meta[1..]);
}
