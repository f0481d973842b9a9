//! Time and randomness as the cluster's decisions see them. Wall-clock decisions (lock-delays,
//! session TTLs) are taken on the leader before proposing; they read time only through [`Clock`],
//! so a simulation can drive them (ARCHITECTURE.md rule 3). [`SystemClock`] is the real one.
//! Random choices come from an [`Rng`].

use std::fmt::Debug;
use std::time::Instant;

pub trait Clock: Send + Sync + Debug + 'static {
    fn now(&self) -> Instant;
}

/// The process's monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Randomness as the server's decisions see it: blocking-query and snapshot jitter, prepared
/// queries' shuffle, Raft's entropy seeds (ARCHITECTURE.md rule 3). [`OsRng`] is the real one; a
/// test or simulation gives a [`SeededRng`].
pub trait Rng: Send + Sync + Debug + 'static {
    fn next_u64(&self) -> u64;

    /// A uniform integer in `0..n` (`0` when `n` is 0).
    fn below(&self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// The operating system's generator (through `rand`).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRng;

impl Rng for OsRng {
    fn next_u64(&self) -> u64 {
        rand::random()
    }
}

/// A deterministic generator (SplitMix64) for tests and simulations.
#[derive(Debug, Default)]
pub struct SeededRng(std::sync::atomic::AtomicU64);

impl SeededRng {
    pub fn new(seed: u64) -> SeededRng {
        SeededRng(std::sync::atomic::AtomicU64::new(seed))
    }
}

impl Rng for SeededRng {
    fn next_u64(&self) -> u64 {
        let s = self.0.fetch_add(0x9e37_79b9_7f4a_7c15, std::sync::atomic::Ordering::Relaxed);
        let mut z = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seeded_rng_replays_and_stays_below_its_bound() {
        let (a, b) = (SeededRng::new(7), SeededRng::new(7));
        let xs: Vec<u64> = (0..100).map(|_| a.below(10)).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.below(10)).collect();
        assert_eq!(xs, ys, "the same seed gives the same draws");
        assert!(xs.iter().all(|x| *x < 10));
        assert!((0..10).all(|v| xs.contains(&v)), "every value in range is drawn: {xs:?}");
        let c = SeededRng::new(8);
        assert_ne!(xs, (0..100).map(|_| c.below(10)).collect::<Vec<_>>(), "another seed, other draws");
        assert_eq!(a.below(0), 0);
    }
}
