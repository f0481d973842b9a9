//! Backup archives (`GET`/`PUT /v1/snapshot`, `cairn snapshot save|restore|inspect`): a gzipped
//! tar of `meta.json`, `state.bin` (the state store, msgpack) and `SHA256SUMS`, as Consul lays its
//! archives out. Opening one checks every sum before anything is used. The contents are Cairn's
//! own (Consul's `state.bin` is its FSM's stream); the layout and the `meta.json` fields are
//! Consul's.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Largest state a restore carries: it travels as one Raft entry (see `rpc::MAX_RAFT_FRAME`).
pub const MAX_RESTORE_STATE: usize = 128 << 20;
/// Largest archive accepted, compressed (a restore body).
pub const MAX_ARCHIVE: usize = 256 << 20;

/// `meta.json`, with Consul's field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Size")]
    pub size: u64,
    #[serde(rename = "Index")]
    pub index: u64,
    #[serde(rename = "Term")]
    pub term: u64,
    #[serde(rename = "Version")]
    pub version: u32,
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn add(tar: &mut tar::Builder<impl Write>, name: &str, data: &[u8]) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, name, data)
}

/// Builds an archive of `state` (the encoded store) described by `meta`.
pub fn archive(meta: &Meta, state: &[u8]) -> std::io::Result<Vec<u8>> {
    let meta_json = serde_json::to_vec_pretty(meta).map_err(std::io::Error::other)?;
    let sums = format!("{}  meta.json\n{}  state.bin\n", hex(&Sha256::digest(&meta_json)), hex(&Sha256::digest(state)));
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    add(&mut tar, "meta.json", &meta_json)?;
    add(&mut tar, "state.bin", state)?;
    add(&mut tar, "SHA256SUMS", sums.as_bytes())?;
    tar.into_inner()?.finish()
}

/// Opens an archive: its metadata and state, once every SHA-256 sum matched. Errors say what is
/// wrong in words an operator can act on.
pub fn open(bytes: &[u8]) -> Result<(Meta, Vec<u8>), String> {
    let gz = flate2::read::GzDecoder::new(bytes);
    let mut tar = tar::Archive::new(gz);
    let (mut meta, mut state, mut sums) = (None, None, None);
    let entries = tar.entries().map_err(|e| format!("failed to read snapshot archive: {e}"))?;
    for e in entries {
        let mut e = e.map_err(|e| format!("failed to read snapshot archive: {e}"))?;
        let name = e.path().map_err(|e| e.to_string())?.to_string_lossy().into_owned();
        let limit = if name == "state.bin" { MAX_RESTORE_STATE } else { 1 << 20 };
        let mut buf = Vec::new();
        e.by_ref().take(limit as u64 + 1).read_to_end(&mut buf).map_err(|e| format!("failed to read {name}: {e}"))?;
        if buf.len() > limit {
            return Err(format!("{name} in the snapshot is over the {limit} bytes a restore takes"));
        }
        match name.as_str() {
            "meta.json" => meta = Some(buf),
            "state.bin" => state = Some(buf),
            "SHA256SUMS" => sums = Some(buf),
            other => return Err(format!("unexpected file {other:?} in snapshot archive")),
        }
    }
    let (Some(meta), Some(state), Some(sums)) = (meta, state, sums) else {
        return Err("snapshot archive is missing meta.json, state.bin or SHA256SUMS".into());
    };
    let sums = String::from_utf8_lossy(&sums).into_owned();
    for (name, data) in [("meta.json", &meta), ("state.bin", &state)] {
        let want = sums.lines().find_map(|l| l.strip_suffix(&format!("  {name}"))).map(str::to_string);
        let got = hex(&Sha256::digest(data));
        match want {
            Some(w) if w == got => {}
            Some(_) => return Err(format!("sha256 hash mismatch for {name} in snapshot archive")),
            None => return Err(format!("no sha256 hash for {name} in snapshot archive")),
        }
    }
    let meta: Meta = serde_json::from_slice(&meta).map_err(|e| format!("failed to decode snapshot meta.json: {e}"))?;
    if meta.size != state.len() as u64 {
        return Err(format!("snapshot state is {} bytes, its meta.json says {}", state.len(), meta.size));
    }
    Ok((meta, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_round_trip_and_any_damage_is_caught() {
        let state = b"some state bytes".repeat(1000);
        let meta = Meta { id: "2-10-1".into(), size: state.len() as u64, index: 10, term: 2, version: 1 };
        let a = archive(&meta, &state).unwrap();
        assert_eq!(open(&a).unwrap(), (meta.clone(), state.clone()));
        // A flipped byte anywhere in the compressed archive: refused, never a panic.
        for i in (0..a.len()).step_by(7) {
            let mut bad = a.clone();
            bad[i] ^= 0x55;
            if let Ok((m, s)) = open(&bad) {
                assert_eq!((m, s), (meta.clone(), state.clone()), "damage at {i} went unnoticed");
            }
        }
        assert!(open(b"not an archive").is_err());
        // A lying size is refused too.
        let lie = Meta { size: 3, ..meta };
        assert!(open(&archive(&lie, &state).unwrap()).unwrap_err().contains("meta.json says 3"));
    }
}
