//! Serf's snapshot file, so an agent that restarts rejoins what it knew (docs/gossip-facts/serf.md
//! §10): an append-only text log of `alive: <name> <ip:port>`, `not-alive: <name>`, `clock: <n>`,
//! `event-clock: <n>`, `query-clock: <n>` and `leave` lines, compacted when it grows.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Smallest size before compaction.
const MIN_COMPACT: u64 = 128 * 1024;
/// How often clock lines are considered.
const CLOCK_EVERY: Duration = Duration::from_millis(500);

/// What a snapshot says, replayed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Replay {
    pub alive: BTreeMap<String, SocketAddr>,
    pub clock: u64,
    pub event_clock: u64,
    pub query_clock: u64,
    /// The last thing recorded was a graceful leave.
    pub left: bool,
}

/// Parses a snapshot. Unknown lines are skipped (with a warning), as Serf does.
pub fn parse(text: &str, rejoin_after_leave: bool) -> Replay {
    let mut r = Replay::default();
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') || line.starts_with("coordinate:") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("alive: ") {
            if let Some((name, addr)) = rest.rsplit_once(' ') {
                if let Ok(a) = addr.parse() {
                    r.alive.insert(name.to_string(), a);
                    continue;
                }
            }
        } else if let Some(name) = line.strip_prefix("not-alive: ") {
            r.alive.remove(name);
            continue;
        } else if let Some(n) = line.strip_prefix("clock: ").and_then(|n| n.parse().ok()) {
            r.clock = n;
            continue;
        } else if let Some(n) = line.strip_prefix("event-clock: ").and_then(|n| n.parse().ok()) {
            r.event_clock = n;
            continue;
        } else if let Some(n) = line.strip_prefix("query-clock: ").and_then(|n| n.parse().ok()) {
            r.query_clock = n;
            continue;
        } else if line == "leave" {
            if rejoin_after_leave {
                tracing::info!("serf: Ignoring previous leave in snapshot");
            } else {
                r.alive.clear();
                r.clock = 0;
                r.event_clock = 0;
                r.query_clock = 0;
                r.left = true;
            }
            continue;
        }
        tracing::warn!("serf: unrecognized snapshot line: {line:?}");
    }
    r
}

/// The writer side.
#[derive(Debug)]
pub struct Snapshotter {
    path: PathBuf,
    file: Option<std::fs::File>,
    alive: BTreeMap<String, SocketAddr>,
    clocks: (u64, u64, u64),
    written: u64,
    last_clock_check: Option<Instant>,
    left: bool,
}

impl Snapshotter {
    /// Opens (creating) the file for appending, after replaying it.
    pub fn open(path: &Path, rejoin_after_leave: bool) -> std::io::Result<(Snapshotter, Replay)> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let replay = parse(&text, rejoin_after_leave);
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let s = Snapshotter {
            path: path.to_path_buf(),
            file: Some(file),
            alive: replay.alive.clone(),
            clocks: (replay.clock, replay.event_clock, replay.query_clock),
            written: text.len() as u64,
            last_clock_check: None,
            left: false,
        };
        Ok((s, replay))
    }

    fn append(&mut self, line: &str) {
        if self.left {
            return;
        }
        let Some(f) = self.file.as_mut() else { return };
        if let Err(e) = f.write_all(line.as_bytes()) {
            tracing::error!("serf: failed to write to snapshot {}: {e}", self.path.display());
            return;
        }
        self.written += line.len() as u64;
        if self.written > MIN_COMPACT.max(self.alive.len() as u64 * 128 * 2) {
            if let Err(e) = self.compact() {
                tracing::error!("serf: failed to compact snapshot {}: {e}", self.path.display());
            }
        }
    }

    pub fn alive(&mut self, name: &str, addr: SocketAddr) {
        if self.alive.get(name) == Some(&addr) {
            return;
        }
        self.alive.insert(name.to_string(), addr);
        self.append(&format!("alive: {name} {addr}\n"));
    }

    pub fn not_alive(&mut self, name: &str) {
        if self.alive.remove(name).is_some() {
            self.append(&format!("not-alive: {name}\n"));
        }
    }

    /// Records clocks that moved, at most every 500 ms.
    pub fn clocks(&mut self, clock: u64, event: u64, query: u64, now: Instant) {
        if self.last_clock_check.is_some_and(|t| now.saturating_duration_since(t) < CLOCK_EVERY) {
            return;
        }
        self.last_clock_check = Some(now);
        // Serf writes the member clock minus one (the next join witnesses it).
        let clock = clock.saturating_sub(1);
        if clock > self.clocks.0 {
            self.clocks.0 = clock;
            self.append(&format!("clock: {clock}\n"));
        }
        if event > self.clocks.1 {
            self.clocks.1 = event;
            self.append(&format!("event-clock: {event}\n"));
        }
        if query > self.clocks.2 {
            self.clocks.2 = query;
            self.append(&format!("query-clock: {query}\n"));
        }
    }

    /// Records a graceful leave (flushed and synced); nothing is written after it.
    pub fn leave(&mut self) {
        self.append("leave\n");
        if let Some(f) = self.file.as_mut() {
            let _ = f.sync_all();
        }
        self.left = true;
    }

    pub fn flush(&mut self) {
        if let Some(f) = self.file.as_mut() {
            let _ = f.flush();
        }
    }

    fn compact(&mut self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("compact");
        let mut text = String::new();
        for (n, a) in &self.alive {
            text.push_str(&format!("alive: {n} {a}\n"));
        }
        text.push_str(&format!(
            "clock: {}\nevent-clock: {}\nquery-clock: {}\n",
            self.clocks.0, self.clocks.1, self.clocks.2
        ));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        self.file = Some(std::fs::OpenOptions::new().append(true).open(&self.path)?);
        self.written = text.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_and_leave() {
        let t = "alive: a 127.0.0.1:7946\nalive: b c 10.0.0.2:7946\nclock: 5\nnot-alive: a\nevent-clock: 3\nbogus\n";
        let r = parse(t, false);
        assert_eq!(r.alive.len(), 1);
        assert_eq!(r.alive["b c"], "10.0.0.2:7946".parse().unwrap());
        assert_eq!((r.clock, r.event_clock, r.left), (5, 3, false));
        let r = parse(&format!("{t}leave\n"), false);
        assert!(r.alive.is_empty() && r.left);
        assert_eq!(parse(&format!("{t}leave\n"), true).alive.len(), 1);
    }

    #[test]
    fn writes_replay_and_compact() {
        let d = std::env::temp_dir().join(format!("cairn-snap-{}", std::process::id()));
        let p = d.join("local.snapshot");
        let _ = std::fs::remove_file(&p);
        let (mut s, r) = Snapshotter::open(&p, false).unwrap();
        assert_eq!(r, Replay::default());
        for i in 0..3000 {
            s.alive(&format!("n{i}"), "127.0.0.1:1".parse().unwrap());
            if i % 2 == 0 {
                s.not_alive(&format!("n{i}"));
            }
        }
        s.clocks(10, 4, 2, Instant::now());
        s.flush();
        let r = parse(&std::fs::read_to_string(&p).unwrap(), false);
        assert_eq!(r.alive.len(), 1500);
        assert_eq!((r.clock, r.event_clock, r.query_clock), (9, 4, 2));
        // Compaction kept it small.
        assert!(std::fs::metadata(&p).unwrap().len() < 300 * 1024);
        let _ = std::fs::remove_dir_all(&d);
    }
}
