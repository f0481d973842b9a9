//! Time as the cluster's decisions see it. Wall-clock decisions (lock-delays, session TTLs) are
//! taken on the leader before proposing; they read time only through [`Clock`], so a simulation
//! can drive them (ARCHITECTURE.md rule 3). [`SystemClock`] is the real one.

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
