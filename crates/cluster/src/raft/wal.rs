//! The Raft log's entries on disk: an append-only, segmented write-ahead log.
//!
//! Why not redb, which keeps the vote and other metadata: a redb commit rewrites several B-tree
//! pages and its header (about 220 µs with fsync on this class of machine), while appending one
//! record to a preallocated file and `fdatasync`ing it costs about 70 µs. A single client's write
//! latency is one such flush, so the log is a plain file, as etcd's and Consul's (raft-wal) are.
//!
//! Layout: `dir/<seq as 16 hex digits>.wal`, each starting with a 16-byte header (`CAIRNWAL` and
//! the sequence number), preallocated to [`SEGMENT_BYTES`] so that appends do not grow the file.
//! Then records, back to back:
//!
//! ```text
//! len: u32 LE (of data) | crc: u32 LE | kind: u8 | index: u64 LE | data: [u8; len]
//! ```
//!
//! The CRC (CRC-32, as `crc32fast`) covers kind, index and data and is *chained*: it starts from
//! the previous record's CRC (the first record's from the header's). So a record left behind by a
//! truncation or a torn batch never validates after different records were written in front of it,
//! and recovery stops at the first record that does not check out. A zero length marks the end (the
//! preallocated tail reads as zeros); truncation and recovery write such a marker and sync it, so an
//! end once decided stays decided. Only the last segment may end torn: a segment is synced and
//! closed with a marker before the next one is created, so a bad record anywhere else is corruption
//! and opening fails with the file and offset.
//!
//! Kinds: [`KIND_ENTRY`] (an encoded Raft entry with its index) and [`KIND_COMMITTED`] (the
//! committed-index hint, which rides along with appends instead of costing a write of its own).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const KIND_ENTRY: u8 = 1;
pub const KIND_COMMITTED: u8 = 2;

/// Each segment is preallocated to this size; a batch bigger than what is left goes to a new one.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// No record's data may be larger than this (an entry is bounded far below by the HTTP limits).
const MAX_RECORD: u32 = 256 << 20;
const MAGIC: &[u8; 8] = b"CAIRNWAL";
const FILE_HEADER: u64 = 16;
const REC_HEADER: usize = 4 + 4 + 1 + 8;

fn corrupt(path: &Path, off: u64, what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("raft log segment {} is corrupt at offset {off}: {what}", path.display()),
    )
}

fn record_crc(prev: u32, kind: u8, index: u64, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(prev);
    h.update(&[kind]);
    h.update(&index.to_le_bytes());
    h.update(data);
    h.finalize()
}

/// Where an entry's record is: its offset, data length and the chain CRC in front of it.
#[derive(Clone, Copy, Debug)]
struct Loc {
    off: u64,
    len: u32,
    prev: u32,
}

struct Segment {
    seq: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Index of the first entry in `locs` (meaningless while `locs` is empty).
    first: u64,
    locs: Vec<Loc>,
}

impl Segment {
    fn last(&self) -> Option<u64> {
        (!self.locs.is_empty()).then(|| self.first + self.locs.len() as u64 - 1)
    }
}

/// The entry locations, shared between the writer and readers.
#[derive(Default)]
struct Index {
    segs: Vec<Segment>,
}

impl Index {
    fn last(&self) -> Option<u64> {
        self.segs.iter().rev().find_map(Segment::last)
    }
}

/// What opening found besides the entries.
pub struct Recovered {
    /// The newest committed-index hint, encoded.
    pub committed: Option<Vec<u8>>,
}

/// The write side (owned by the log writer thread). Readers use [`WalReader`].
pub struct Wal {
    dir: PathBuf,
    index: Arc<Mutex<Index>>,
    /// Write position and chain CRC in the last segment.
    pos: u64,
    chain: u32,
    seg_bytes: u64,
    /// Records staged for the next [`Wal::flush`]: their data back to back, and where each is.
    data: Vec<u8>,
    staged: Vec<Staged>,
    /// The encoded batch, kept to reuse its allocation.
    out: Vec<u8>,
}

struct Staged {
    kind: u8,
    index: u64,
    start: usize,
    len: u32,
}

/// Reads entries' data; cheap to clone.
#[derive(Clone)]
pub struct WalReader {
    index: Arc<Mutex<Index>>,
}

fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.wal"))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn header(seq: u64) -> [u8; FILE_HEADER as usize] {
    let mut h = [0u8; FILE_HEADER as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&seq.to_le_bytes());
    h
}

fn header_chain(seq: u64) -> u32 {
    crc32fast::hash(&header(seq))
}

/// Creates a preallocated segment with its header, synced, and syncs the directory.
fn create_segment(dir: &Path, seq: u64, bytes: u64) -> std::io::Result<Segment> {
    let path = seg_path(dir, seq);
    let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
    preallocate(&file, bytes);
    file.write_all_at(&header(seq), 0)?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(Segment { seq, path, file: Arc::new(file), first: 0, locs: Vec::new() })
}

/// Reserves the segment's blocks so that appends write into allocated space instead of growing the
/// file (each growth is metadata that `fdatasync` must also flush). Best effort: where the file
/// system cannot, the file simply grows.
fn preallocate(file: &File, bytes: u64) {
    use std::os::fd::AsRawFd;
    let Ok(len) = libc::off_t::try_from(bytes) else { return };
    // SAFETY: `fallocate` on an open, owned descriptor with mode 0 only allocates blocks.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "raft log: fallocate unsupported, segments grow instead");
    }
}

/// Removes segment files in the given order, syncing the directory after each so that the removals
/// become durable in that order.
fn remove_segments<'a>(dir: &Path, segs: impl Iterator<Item = &'a Segment>) -> std::io::Result<()> {
    for s in segs {
        std::fs::remove_file(&s.path)?;
        sync_dir(dir)?;
    }
    Ok(())
}

/// Whether a segment file got as far as a non-zero header.
fn has_header(file: &File) -> std::io::Result<bool> {
    let mut h = [0u8; FILE_HEADER as usize];
    if file.metadata()?.len() < FILE_HEADER {
        return Ok(false);
    }
    file.read_exact_at(&mut h, 0)?;
    Ok(h != [0u8; FILE_HEADER as usize])
}

/// The end of one segment's scan.
enum End {
    /// A zero length or the end of the file: written cleanly up to here.
    Clean,
    /// A record that does not check out (a torn write, or corruption), with the reason.
    Bad(&'static str),
}

/// Reads a segment's records from `FILE_HEADER`; returns the end position, chain, why it ended.
fn scan(
    seg: &mut Segment,
    expect_next: &mut Option<u64>,
    committed: &mut Option<Vec<u8>>,
) -> std::io::Result<(u64, u32, End)> {
    let file_len = seg.file.metadata()?.len();
    let mut r = BufReader::with_capacity(1 << 20, &*seg.file);
    let mut h = [0u8; FILE_HEADER as usize];
    if file_len < FILE_HEADER || r.read_exact(&mut h).is_err() || h != header(seg.seq) {
        return Err(corrupt(&seg.path, 0, "bad segment header"));
    }
    let mut pos = FILE_HEADER;
    let mut chain = header_chain(seg.seq);
    let mut data = Vec::new();
    loop {
        if pos + REC_HEADER as u64 > file_len {
            return Ok((pos, chain, End::Clean));
        }
        let mut rh = [0u8; REC_HEADER];
        r.read_exact(&mut rh)?;
        let len = u32::from_le_bytes(rh[0..4].try_into().expect("4 bytes"));
        if len == 0 {
            return Ok((pos, chain, End::Clean));
        }
        let crc = u32::from_le_bytes(rh[4..8].try_into().expect("4 bytes"));
        let kind = rh[8];
        let index = u64::from_le_bytes(rh[9..17].try_into().expect("8 bytes"));
        if len > MAX_RECORD || pos + (REC_HEADER as u64) + u64::from(len) > file_len {
            return Ok((pos, chain, End::Bad("record length out of bounds")));
        }
        data.resize(len as usize, 0);
        r.read_exact(&mut data)?;
        if record_crc(chain, kind, index, &data) != crc {
            return Ok((pos, chain, End::Bad("checksum mismatch")));
        }
        match kind {
            KIND_ENTRY => {
                if let Some(want) = *expect_next {
                    if index != want {
                        return Err(corrupt(&seg.path, pos, &format!("entry {index} where {want} was expected")));
                    }
                }
                if seg.locs.is_empty() {
                    seg.first = index;
                }
                seg.locs.push(Loc { off: pos, len, prev: chain });
                *expect_next = Some(index + 1);
            }
            KIND_COMMITTED => *committed = Some(data.clone()),
            _ => return Ok((pos, chain, End::Bad("unknown record kind"))),
        }
        chain = crc;
        pos += REC_HEADER as u64 + u64::from(len);
    }
}

impl Wal {
    /// Opens the log in `dir` (creating it), recovering every segment.
    pub fn open(dir: &Path) -> std::io::Result<(Wal, Recovered)> {
        Self::open_with_segment_bytes(dir, SEGMENT_BYTES)
    }

    pub fn open_with_segment_bytes(dir: &Path, seg_bytes: u64) -> std::io::Result<(Wal, Recovered)> {
        std::fs::create_dir_all(dir)?;
        if let Some(parent) = dir.parent() {
            // The directory's own entry must be durable too.
            sync_dir(parent)?;
        }
        let mut seqs = Vec::new();
        for de in std::fs::read_dir(dir)? {
            let name = de?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(hex) = name.strip_suffix(".wal") {
                if let Ok(seq) = u64::from_str_radix(hex, 16) {
                    seqs.push(seq);
                }
            }
        }
        seqs.sort_unstable();
        let mut index = Index::default();
        let mut committed = None;
        let mut expect_next = None;
        let (mut pos, mut chain) = (FILE_HEADER, 0);
        for (i, &seq) in seqs.iter().enumerate() {
            let path = seg_path(dir, seq);
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            if i + 1 == seqs.len() && !has_header(&file)? {
                // The process stopped while creating this segment (before its header was synced),
                // so nothing was ever written to it.
                tracing::warn!(segment = %path.display(), "raft log: removing a segment whose creation did not finish");
                drop(file);
                std::fs::remove_file(&path)?;
                sync_dir(dir)?;
                continue;
            }
            let mut seg = Segment { seq, path, file: Arc::new(file), first: 0, locs: Vec::new() };
            let (p, c, end) = scan(&mut seg, &mut expect_next, &mut committed)?;
            match end {
                End::Bad(why) if i + 1 < seqs.len() => return Err(corrupt(&seg.path, p, why)),
                End::Bad(why) => {
                    tracing::warn!(segment = %seg.path.display(), offset = p, why, "raft log: dropping a torn tail");
                    seg.file.write_all_at(&[0u8; REC_HEADER], p)?;
                    seg.file.sync_data()?;
                }
                End::Clean => {}
            }
            (pos, chain) = (p, c);
            index.segs.push(seg);
        }
        if index.segs.is_empty() {
            let next = seqs.last().map_or(1, |s| s + 1);
            index.segs.push(create_segment(dir, next, seg_bytes)?);
            (pos, chain) = (FILE_HEADER, header_chain(next));
        }
        let wal = Wal {
            dir: dir.to_path_buf(),
            index: Arc::new(Mutex::new(index)),
            pos,
            chain,
            seg_bytes,
            data: Vec::new(),
            staged: Vec::new(),
            out: Vec::new(),
        };
        Ok((wal, Recovered { committed }))
    }

    pub fn reader(&self) -> WalReader {
        WalReader { index: self.index.clone() }
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().expect("wal index")
    }

    /// Stages a record for the next [`Wal::flush`].
    pub fn stage(&mut self, kind: u8, index: u64, data: &[u8]) {
        // An oversized record (over `MAX_RECORD`, let alone u32) is refused by the flush.
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        self.staged.push(Staged { kind, index, start: self.data.len(), len });
        self.data.extend_from_slice(data);
    }

    /// Writes the staged records with one write and one `fdatasync`, rolling over to a new
    /// segment first when they do not fit in the current one.
    pub fn flush(&mut self) -> std::io::Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let total: u64 = self.staged.iter().map(|s| REC_HEADER as u64 + u64::from(s.len)).sum();
        let res = self.write_staged(total);
        self.staged.clear();
        self.data.clear();
        res
    }

    fn write_staged(&mut self, total: u64) -> std::io::Result<()> {
        // Entries must continue the log without a gap: a location is known by its position.
        let mut next = self.last_index().map(|l| l + 1);
        for s in &self.staged {
            if s.len > MAX_RECORD {
                return Err(std::io::Error::other(format!(
                    "raft log: entry {} is too large ({} bytes)",
                    s.index, s.len
                )));
            }
            if s.kind == KIND_ENTRY {
                if next.is_some_and(|n| n != s.index) {
                    return Err(std::io::Error::other(format!(
                        "raft log: entry {} does not follow {}",
                        s.index,
                        next.unwrap_or_default() - 1
                    )));
                }
                next = Some(s.index + 1);
            }
        }
        if self.pos > FILE_HEADER && self.pos + total > self.seg_bytes {
            self.roll_over()?;
        }
        // Headers and chained checksums are computed here, once the segment (and so the chain's
        // start) is known.
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let mut chain = self.chain;
        let mut locs = Vec::with_capacity(self.staged.len());
        for s in &self.staged {
            let data = &self.data[s.start..s.start + s.len as usize];
            let crc = record_crc(chain, s.kind, s.index, data);
            if s.kind == KIND_ENTRY {
                locs.push((s.index, Loc { off: self.pos + out.len() as u64, len: s.len, prev: chain }));
            }
            out.extend_from_slice(&s.len.to_le_bytes());
            out.extend_from_slice(&crc.to_le_bytes());
            out.push(s.kind);
            out.extend_from_slice(&s.index.to_le_bytes());
            out.extend_from_slice(data);
            chain = crc;
        }
        let file = self.index().segs.last().expect("a segment").file.clone();
        let res = file.write_all_at(&out, self.pos).and_then(|()| file.sync_data());
        let written = out.len() as u64;
        self.out = out;
        res?;
        self.pos += written;
        self.chain = chain;
        let mut ix = self.index();
        let seg = ix.segs.last_mut().expect("a segment");
        for (i, loc) in locs {
            if seg.locs.is_empty() {
                seg.first = i;
            }
            seg.locs.push(loc);
        }
        Ok(())
    }

    /// Closes the current segment with an end marker and starts the next one.
    fn roll_over(&mut self) -> std::io::Result<()> {
        let (file, seq) = {
            let ix = self.index();
            let s = ix.segs.last().expect("a segment");
            (s.file.clone(), s.seq)
        };
        file.write_all_at(&[0u8; REC_HEADER], self.pos)?;
        file.sync_data()?;
        let seg = create_segment(&self.dir, seq + 1, self.seg_bytes)?;
        self.index().segs.push(seg);
        self.pos = FILE_HEADER;
        self.chain = header_chain(seq + 1);
        Ok(())
    }

    /// Removes every entry from `from` on (staged records are flushed first).
    pub fn truncate_from(&mut self, from: u64) -> std::io::Result<()> {
        self.flush()?;
        let target = {
            let ix = self.index();
            ix.segs.iter().position(|s| s.last().is_some_and(|l| l >= from)).map(|i| (i, ix.segs[i].first))
        };
        let Some((si, first)) = target else { return Ok(()) };
        if si == 0 && from <= first {
            return self.clear();
        }
        let (file, cut) = {
            let mut ix = self.index();
            let seg = &mut ix.segs[si];
            let k = from.saturating_sub(seg.first) as usize;
            let loc = seg.locs[k];
            seg.locs.truncate(k);
            (seg.file.clone(), loc)
        };
        // Later segments go first, newest first, each removal durable before the next: a crash at
        // any point leaves a prefix of the old log (the truncation not yet done, which Raft then
        // repeats). Only then the end marker.
        let gone: Vec<Segment> = self.index().segs.drain(si + 1..).collect();
        remove_segments(&self.dir, gone.iter().rev())?;
        file.write_all_at(&[0u8; REC_HEADER], cut.off)?;
        file.sync_data()?;
        self.pos = cut.off;
        self.chain = cut.prev;
        Ok(())
    }

    /// Removes every entry (staged ones too) and starts a fresh segment.
    pub fn clear(&mut self) -> std::io::Result<()> {
        self.staged.clear();
        self.data.clear();
        let next = self.index().segs.last().map_or(1, |s| s.seq + 1);
        // Newest first, each removal durable before the next: a crash part-way leaves a prefix
        // of the old log. Then the new, empty segment.
        let old: Vec<Segment> = std::mem::take(&mut self.index().segs);
        remove_segments(&self.dir, old.iter().rev())?;
        let seg = create_segment(&self.dir, next, self.seg_bytes)?;
        self.index().segs.push(seg);
        self.pos = FILE_HEADER;
        self.chain = header_chain(next);
        Ok(())
    }

    /// Deletes the segments whose entries are all at or below `upto` (never the one being written).
    /// Entries at or below `upto` in the remaining first segment stay on disk but are never asked
    /// for (the caller records the purge point first). A purge at or past the last entry (a
    /// snapshot installed on a follower that lags behind it) empties the log: the next entry
    /// follows the snapshot, not what the log held.
    pub fn purge_upto(&mut self, upto: u64) -> std::io::Result<()> {
        self.flush()?;
        if self.last_index().is_some_and(|l| l <= upto) {
            return self.clear();
        }
        let gone: Vec<Segment> = {
            let mut ix = self.index();
            let n = ix.segs.len();
            let keep_from = ix.segs[..n - 1].iter().take_while(|s| s.last().is_none_or(|l| l <= upto)).count();
            ix.segs.drain(..keep_from).collect()
        };
        // Oldest first, each removal durable before the next: whatever a crash leaves is a
        // contiguous run of segments.
        remove_segments(&self.dir, gone.iter())
    }

    pub fn last_index(&self) -> Option<u64> {
        self.index().last()
    }

    /// How many segment files the log has now.
    pub fn segments(&self) -> usize {
        self.index().segs.len()
    }
}

impl WalReader {
    /// The entries' data for indexes in `start..end` that the log holds, in order, checksums
    /// verified.
    pub fn read(&self, start: u64, end: u64) -> std::io::Result<Vec<(u64, Vec<u8>)>> {
        let spans: Vec<(Arc<File>, PathBuf, u64, Loc)> = {
            let ix = self.index.lock().expect("wal index");
            let mut v = Vec::new();
            for s in &ix.segs {
                let Some(last) = s.last() else { continue };
                if last < start || s.first >= end {
                    continue;
                }
                let lo = start.max(s.first);
                let hi = end.min(last + 1);
                for i in lo..hi {
                    v.push((s.file.clone(), s.path.clone(), i, s.locs[(i - s.first) as usize]));
                }
            }
            v
        };
        let mut out = Vec::with_capacity(spans.len());
        for (file, path, i, loc) in spans {
            let mut rec = vec![0u8; REC_HEADER + loc.len as usize];
            file.read_exact_at(&mut rec, loc.off)?;
            let crc = u32::from_le_bytes(rec[4..8].try_into().expect("4 bytes"));
            let index = u64::from_le_bytes(rec[9..17].try_into().expect("8 bytes"));
            let data = rec.split_off(REC_HEADER);
            if index != i || record_crc(loc.prev, rec[8], index, &data) != crc {
                return Err(corrupt(&path, loc.off, &format!("entry {i} does not check out")));
            }
            out.push((i, data));
        }
        Ok(out)
    }

    /// The first index of the newest entries whose data fits in `budget` bytes (at least the newest
    /// one), or `None` for an empty log.
    pub fn newest_within(&self, budget: usize) -> Option<u64> {
        let ix = self.index.lock().expect("wal index");
        let mut used = 0usize;
        let mut from = None;
        for s in ix.segs.iter().rev() {
            for (k, loc) in s.locs.iter().enumerate().rev() {
                used += loc.len as usize;
                if used > budget && from.is_some() {
                    return from;
                }
                from = Some(s.first + k as u64);
            }
        }
        from
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(i: u64, tag: u8) -> Vec<u8> {
        let mut v = vec![tag; 40 + (i % 7) as usize];
        v.extend_from_slice(&i.to_le_bytes());
        v
    }

    fn append(w: &mut Wal, range: std::ops::RangeInclusive<u64>, tag: u8) {
        for i in range {
            w.stage(KIND_ENTRY, i, &data(i, tag));
        }
        w.flush().unwrap();
    }

    fn all(w: &Wal) -> Vec<(u64, Vec<u8>)> {
        w.reader().read(0, u64::MAX).unwrap()
    }

    fn indexes(w: &Wal) -> Vec<u64> {
        all(w).into_iter().map(|(i, _)| i).collect()
    }

    #[test]
    fn records_survive_reopen_with_the_newest_committed_hint() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut w, rec) = Wal::open(dir.path()).unwrap();
            assert!(rec.committed.is_none());
            append(&mut w, 1..=5, 1);
            w.stage(KIND_COMMITTED, 0, b"c5");
            w.flush().unwrap();
            append(&mut w, 6..=9, 1);
            w.stage(KIND_COMMITTED, 0, b"c9");
            w.flush().unwrap();
        }
        let (w, rec) = Wal::open(dir.path()).unwrap();
        assert_eq!(rec.committed.as_deref(), Some(&b"c9"[..]));
        let got = all(&w);
        assert_eq!(got.iter().map(|(i, _)| *i).collect::<Vec<_>>(), (1..=9).collect::<Vec<_>>());
        assert!(got.iter().all(|(i, d)| *d == data(*i, 1)));
        assert_eq!(w.reader().read(3, 5).unwrap().len(), 2);
    }

    #[test]
    fn a_torn_tail_is_dropped_and_the_log_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut w, _) = Wal::open(dir.path()).unwrap();
            append(&mut w, 1..=3, 1);
            append(&mut w, 4..=6, 1);
        }
        // Damage entry 5's data, as a write torn by a crash would.
        let seg = seg_path(dir.path(), 1);
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        let (w, _) = Wal::open(dir.path()).unwrap();
        let off = w.index().segs[0].locs[4].off;
        drop(w);
        f.write_all_at(&[0xAB], off + REC_HEADER as u64 + 3).unwrap();
        let (mut w, _) = Wal::open(dir.path()).unwrap();
        assert_eq!(indexes(&w), vec![1, 2, 3, 4], "the log ends before the first bad record");
        append(&mut w, 5..=5, 2);
        drop(w);
        let (w, _) = Wal::open(dir.path()).unwrap();
        assert_eq!(indexes(&w), vec![1, 2, 3, 4, 5], "entry 6 from the torn batch never comes back");
        assert_eq!(all(&w)[4].1, data(5, 2));
    }

    #[test]
    fn truncated_entries_never_come_back() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut w, _) = Wal::open(dir.path()).unwrap();
            append(&mut w, 1..=10, 1);
            w.truncate_from(6).unwrap();
            assert_eq!(indexes(&w), (1..=5).collect::<Vec<_>>());
        }
        {
            // Reopened right after the truncation: it held.
            let (mut w, _) = Wal::open(dir.path()).unwrap();
            assert_eq!(indexes(&w), (1..=5).collect::<Vec<_>>());
            // The same sizes as the truncated records, so the old bytes line up after these.
            append(&mut w, 6..=7, 2);
        }
        let (w, _) = Wal::open(dir.path()).unwrap();
        assert_eq!(indexes(&w), (1..=7).collect::<Vec<_>>(), "old 8..=10 stay gone");
        assert_eq!(all(&w)[6].1, data(7, 2));
    }

    #[test]
    fn segments_roll_over_purge_and_truncate_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let seg = 1024;
        {
            let (mut w, _) = Wal::open_with_segment_bytes(dir.path(), seg).unwrap();
            for i in 1..=100 {
                append(&mut w, i..=i, 1);
            }
            assert!(w.segments() > 5, "rolled over: {}", w.segments());
            assert_eq!(indexes(&w), (1..=100).collect::<Vec<_>>());
            let before = w.segments();
            w.purge_upto(50).unwrap();
            assert!(w.segments() < before, "whole segments below the purge point went");
            assert!(indexes(&w).first().is_some_and(|f| *f <= 51));
            w.truncate_from(60).unwrap();
            append(&mut w, 60..=80, 3);
        }
        let (w, _) = Wal::open_with_segment_bytes(dir.path(), seg).unwrap();
        let got = all(&w);
        assert_eq!(got.last().map(|(i, _)| *i), Some(80));
        assert!(got.iter().filter(|(i, _)| *i >= 60).all(|(i, d)| *d == data(*i, 3)));
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, w.segments(), "no stray files");
    }

    #[test]
    fn a_crash_in_the_middle_of_a_truncation_leaves_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let seg = 1024;
        let (mut w, _) = Wal::open_with_segment_bytes(dir.path(), seg).unwrap();
        for i in 1..=60 {
            append(&mut w, i..=i, 1);
        }
        assert!(w.segments() >= 3);
        let (first_path, first_last) = {
            let ix = w.index();
            (ix.segs[0].path.clone(), ix.segs[0].last().unwrap())
        };
        let first_bytes = std::fs::read(&first_path).unwrap();
        w.truncate_from(3).unwrap();
        drop(w);
        // The later segments are gone but the end marker never made it to the first one.
        std::fs::write(&first_path, &first_bytes).unwrap();
        let (mut w, _) = Wal::open_with_segment_bytes(dir.path(), seg).unwrap();
        assert_eq!(indexes(&w), (1..=first_last).collect::<Vec<_>>(), "a prefix of the old log");
        w.truncate_from(3).unwrap();
        append(&mut w, 3..=40, 2);
        drop(w);
        let (w, _) = Wal::open_with_segment_bytes(dir.path(), seg).unwrap();
        assert_eq!(indexes(&w), (1..=40).collect::<Vec<_>>());
        assert!(all(&w)[2..].iter().all(|(i, d)| *d == data(*i, 2)));
    }

    #[test]
    fn a_missing_segment_in_the_middle_fails_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = Wal::open_with_segment_bytes(dir.path(), 1024).unwrap();
        for i in 1..=60 {
            append(&mut w, i..=i, 1);
        }
        let middle = w.index().segs[1].path.clone();
        drop(w);
        std::fs::remove_file(middle).unwrap();
        let err = Wal::open_with_segment_bytes(dir.path(), 1024).err().expect("open fails");
        assert!(err.to_string().contains("was expected"), "{err}");
    }

    #[test]
    fn a_purge_past_the_last_entry_empties_the_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut w, _) = Wal::open_with_segment_bytes(dir.path(), 1024).unwrap();
            for i in 1..=30 {
                append(&mut w, i..=i, 1);
            }
            // A snapshot at 500 installed on a follower whose log ends at 30.
            w.purge_upto(500).unwrap();
            assert!(indexes(&w).is_empty());
            append(&mut w, 501..=520, 2);
            assert_eq!(w.reader().read(501, 503).unwrap().len(), 2);
            w.truncate_from(510).unwrap();
        }
        let (w, _) = Wal::open_with_segment_bytes(dir.path(), 1024).unwrap();
        assert_eq!(indexes(&w), (501..=509).collect::<Vec<_>>());
    }

    #[test]
    fn an_entry_that_does_not_follow_the_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = Wal::open(dir.path()).unwrap();
        append(&mut w, 1..=3, 1);
        w.stage(KIND_ENTRY, 7, b"x");
        assert!(w.flush().unwrap_err().to_string().contains("entry 7 does not follow 3"));
        append(&mut w, 4..=4, 1);
        assert_eq!(indexes(&w), vec![1, 2, 3, 4]);
    }

    #[test]
    fn corruption_before_the_last_segment_fails_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = Wal::open_with_segment_bytes(dir.path(), 1024).unwrap();
        for i in 1..=40 {
            append(&mut w, i..=i, 1);
        }
        let (path, off) = {
            let ix = w.index();
            (ix.segs[0].path.clone(), ix.segs[0].locs[1].off)
        };
        drop(w);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0xFF], off + REC_HEADER as u64).unwrap();
        let err = Wal::open_with_segment_bytes(dir.path(), 1024).err().expect("open fails");
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    #[test]
    fn clearing_and_newest_within() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = Wal::open(dir.path()).unwrap();
        assert_eq!(w.reader().newest_within(1000), None);
        append(&mut w, 1..=10, 1);
        let from = w.reader().newest_within(100).unwrap();
        assert!(from > 1 && from <= 10, "{from}");
        assert_eq!(w.reader().newest_within(0), Some(10), "the newest always counts");
        w.truncate_from(0).unwrap();
        assert!(indexes(&w).is_empty());
        append(&mut w, 20..=21, 1);
        drop(w);
        let (w, _) = Wal::open(dir.path()).unwrap();
        assert_eq!(indexes(&w), vec![20, 21]);
    }

    #[test]
    fn a_segment_whose_creation_did_not_finish_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let seg = 1024;
        {
            let (mut w, _) = Wal::open_with_segment_bytes(dir.path(), seg).unwrap();
            append(&mut w, 1..=3, 1);
        }
        // Preallocated but no header yet, as a crash in the middle of a rollover leaves it.
        std::fs::write(seg_path(dir.path(), 2), vec![0u8; 4096]).unwrap();
        let (mut w, _) = Wal::open_with_segment_bytes(dir.path(), seg).unwrap();
        assert_eq!(indexes(&w), vec![1, 2, 3]);
        for i in 4..=40 {
            append(&mut w, i..=i, 1);
        }
        assert!(w.segments() > 1, "rolled over again, over the removed file's name");
        drop(w);
        let (w, _) = Wal::open_with_segment_bytes(dir.path(), seg).unwrap();
        assert_eq!(indexes(&w), (1..=40).collect::<Vec<_>>());
    }

    /// A random walk over appends, truncations, purges, reopenings and torn last batches, checked
    /// after every step against a model of what the log must hold. Deterministic: the seeds are
    /// fixed, and a failure names its seed and step.
    #[test]
    fn random_operations_match_a_model() {
        struct Rng(u64);
        impl Rng {
            fn next(&mut self) -> u64 {
                // xorshift64*
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
            }
            fn below(&mut self, n: u64) -> u64 {
                self.next() % n.max(1)
            }
        }
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let dir = tempfile::tempdir().unwrap();
            let seg = 512 + rng.below(2048);
            let (mut w, _) = Wal::open_with_segment_bytes(dir.path(), seg).unwrap();
            // The model: entries after the purge point, by index, with their tag.
            let mut model: Vec<(u64, u8)> = Vec::new();
            let mut purged = 0u64;
            let mut tag = 0u8;
            for step in 0..60 {
                let last = model.last().map_or(purged, |(i, _)| *i);
                match rng.below(10) {
                    0..=4 => {
                        tag = tag.wrapping_add(1);
                        let n = 1 + rng.below(8);
                        for i in last + 1..=last + n {
                            w.stage(KIND_ENTRY, i, &data(i, tag));
                            model.push((i, tag));
                        }
                        w.flush().unwrap();
                    }
                    5 => {
                        let from = purged + 1 + rng.below(last.saturating_sub(purged) + 2);
                        w.truncate_from(from).unwrap();
                        model.retain(|(i, _)| *i < from);
                    }
                    6 => {
                        let upto = purged + rng.below(last.saturating_sub(purged) + 4);
                        w.purge_upto(upto).unwrap();
                        if upto >= last {
                            model.clear();
                        }
                        model.retain(|(i, _)| *i > upto);
                        purged = purged.max(upto);
                    }
                    7 => {
                        // A torn last batch: one of its records damaged as a crash would leave it.
                        tag = tag.wrapping_add(1);
                        let n = 1 + rng.below(5);
                        for i in last + 1..=last + n {
                            w.stage(KIND_ENTRY, i, &data(i, tag));
                        }
                        w.flush().unwrap();
                        let k = last + 1 + rng.below(n);
                        let (path, off) = {
                            let ix = w.index();
                            let s = ix.segs.last().unwrap();
                            (s.path.clone(), s.locs[(k - s.first) as usize].off)
                        };
                        drop(w);
                        let f = OpenOptions::new().write(true).open(path).unwrap();
                        f.write_all_at(&[0xEE, 0x11], off + REC_HEADER as u64).unwrap();
                        for i in last + 1..k {
                            model.push((i, tag));
                        }
                        (w, _) = Wal::open_with_segment_bytes(dir.path(), seg).unwrap();
                    }
                    _ => {
                        drop(w);
                        (w, _) = Wal::open_with_segment_bytes(dir.path(), seg).unwrap();
                    }
                }
                let got: Vec<(u64, Vec<u8>)> =
                    w.reader().read(0, u64::MAX).unwrap().into_iter().filter(|(i, _)| *i > purged).collect();
                let want: Vec<(u64, Vec<u8>)> = model.iter().map(|(i, t)| (*i, data(*i, *t))).collect();
                assert_eq!(
                    got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
                    want.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
                    "seed {seed} step {step}"
                );
                assert!(got == want, "seed {seed} step {step}: contents differ");
            }
        }
    }
}
