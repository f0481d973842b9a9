//! What the sans-IO core takes from its surroundings: randomness (ARCHITECTURE.md rule 3). Time is
//! passed in as an `Instant` on every call, so a simulation can run on virtual time.

/// A source of random numbers. The real driver uses the OS generator (nonces must be unpredictable);
/// a simulation uses a seeded one.
pub trait Rng: Send {
    fn next_u64(&mut self) -> u64;

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    /// A uniform integer in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Fisher–Yates.
pub fn shuffle<T>(rng: &mut dyn Rng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i + 1);
        v.swap(i, j);
    }
}

/// The OS's generator (through `rand`).
#[derive(Debug, Default)]
pub struct OsRng;

impl Rng for OsRng {
    fn next_u64(&mut self) -> u64 {
        rand::random()
    }
}

/// A small deterministic generator (SplitMix64) for simulations and tests.
#[derive(Debug, Clone)]
pub struct SeededRng(pub u64);

impl Rng for SeededRng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
