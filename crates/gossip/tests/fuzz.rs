//! Hostile input: over a million seeded, reproducible mutated and random packets (and many
//! streams) into the decoder and the state machine. Nothing may panic, and on an encrypted pool no
//! packet that fails authentication may change anything.
//! `FUZZ_SEED=n` replays another seed; `FUZZ_PACKETS=n` runs longer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cairn_gossip::env::{Rng, SeededRng};
use cairn_gossip::keyring::Keyring;
use cairn_gossip::memberlist;
use cairn_gossip::serf::{self, Serf};
use cairn_gossip::wire;

fn corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for f in ["serf-plain.jsonl", "serf-enc.jsonl"] {
        let path = format!("{}/tests/data/{f}", env!("CARGO_MANIFEST_DIR"));
        for l in std::fs::read_to_string(path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            out.push(hex::decode(v["hex"].as_str().unwrap()).unwrap());
        }
    }
    // Their plaintext insides too, so mutations reach the msgpack and Serf layers.
    let ring = Keyring::new(&key(), &[]).unwrap();
    let inner: Vec<Vec<u8>> = out.iter().filter_map(|p| ring.decrypt(p, b"")).collect();
    out.extend(inner);
    let mut more = Vec::new();
    for p in &out {
        if p.first() == Some(&wire::HAS_CRC) {
            if let Ok(m) = wire::check_crc(p) {
                more.push(m.to_vec());
            }
        }
        if p.first() == Some(&wire::COMPRESS) {
            if let Ok(m) = wire::decompress(&p[1..]) {
                more.push(m);
            }
        }
    }
    out.extend(more);
    out
}

fn key() -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode("HS5lJ+XuTlYKWaeGYyG+/A==").unwrap()
}

fn mutate(rng: &mut SeededRng, base: &[u8]) -> Vec<u8> {
    let mut p = base.to_vec();
    match rng.below(6) {
        0 => {
            // flip a few bits
            for _ in 0..1 + rng.below(4) {
                if !p.is_empty() {
                    let i = rng.below(p.len());
                    p[i] ^= 1 << rng.below(8);
                }
            }
        }
        1 => p.truncate(rng.below(p.len() + 1)),
        2 => {
            // a random byte somewhere, often a length or type byte
            if !p.is_empty() {
                let i = rng.below(p.len().min(16));
                p[i] = rng.next_u64() as u8;
            }
        }
        3 => {
            let n = rng.below(64);
            let mut extra = vec![0u8; n];
            rng.fill(&mut extra);
            let at = rng.below(p.len() + 1);
            p.splice(at..at, extra);
        }
        4 => {
            // big length claims
            if p.len() > 3 {
                let i = rng.below(p.len() - 2);
                p[i] = [0xdb, 0xdd, 0xdf, 0xc6][rng.below(4)];
                p[i + 1] = 0xff;
            }
        }
        _ => {
            let mut r = vec![0u8; rng.below(1500)];
            rng.fill(&mut r);
            if !r.is_empty() && rng.below(2) == 0 {
                r[0] = rng.below(14) as u8;
            }
            p = r;
        }
    }
    p
}

fn node(name: &str, addr: &str, key: Option<Vec<u8>>, now: Instant) -> Serf {
    let addr: SocketAddr = addr.parse().unwrap();
    let c = serf::Config::new(memberlist::Config::lan(name, addr));
    let ring = key.map(|k| Keyring::new(&k, &[]).unwrap());
    let mut s = Serf::new(c, ring, Box::new(SeededRng(1)), Box::new(SeededRng(2)), now);
    s.start(now);
    s
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xCA1E)
}

fn packets() -> usize {
    std::env::var("FUZZ_PACKETS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000)
}

#[test]
fn a_million_hostile_packets_do_not_panic_or_change_an_encrypted_pool() {
    let corpus = corpus();
    let mut rng = SeededRng(seed());
    let now = Instant::now();
    let from: SocketAddr = "127.0.0.9:7946".parse().unwrap();

    // Plain pool: anything goes through decoding and the state machine.
    let mut plain = node("victim", "127.0.0.1:7946", None, now);
    // Encrypted pool with a wrong-key view of the captures: nothing may authenticate.
    let mut enc = node("guarded", "127.0.0.2:7946", Some(vec![0x42; 32]), now);
    let before: Vec<_> = enc.members();
    let n = packets();
    let mut t = now;
    for i in 0..n {
        let base = &corpus[rng.below(corpus.len())];
        let p = mutate(&mut rng, base);
        let mut out = Vec::new();
        let _ = wire::decode_message(&p, &mut out);
        plain.handle_packet(from, &p, t);
        enc.handle_packet(from, &p, t);
        if i % 1000 == 0 {
            t += Duration::from_millis(50);
            plain.tick(t);
            enc.tick(t);
            let _ = plain.drain_output().count();
            let _ = enc.drain_output().count();
            let _ = plain.drain_events().count();
        }
    }
    assert_eq!(enc.members(), before, "an unauthenticated packet changed the encrypted pool");
    let stats = enc.memberlist().stats.clone();
    assert_eq!(stats.packets_in as usize, n);
    assert!(stats.packets_unauthenticated as usize > n * 9 / 10, "{stats:?}");

    // Streams: mutated push/pulls and pings into both.
    for _ in 0..n / 10 {
        let base = &corpus[rng.below(corpus.len())];
        let p = mutate(&mut rng, base);
        let _ = plain.handle_stream(from, &p, t);
        let _ = enc.handle_stream(from, &p, t);
        let _ = plain.handle_stream_reply(1, memberlist::StreamKind::PushPull { join: true }, from, &p, t);
        let _ = enc.handle_stream_reply(1, memberlist::StreamKind::PushPull { join: true }, from, &p, t);
    }
    assert_eq!(enc.members(), before, "an unauthenticated stream changed the encrypted pool");
    eprintln!("fuzz: seed {:#x}, {} packets and {} streams into each of two nodes", seed(), n, n / 10);
}
