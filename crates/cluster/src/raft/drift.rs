//! Raft's clock, with room for a drifting one. openraft reads time only through its runtime's
//! `Instant` and timers; [`Drifting`] wraps the runtime so that the tasks of one Raft node can run
//! on a clock that goes faster or slower than real time ([`with_rate`]). Outside such a scope (every
//! real server) it is the runtime's own clock, unchanged. The Raft simulation gives each server a
//! rate of its own, which is how it checks that leases stay safe when clocks drift apart.
//!
//! A node's local reading is `origin + (real - origin) * rate`; its timers wait `d / rate` of real
//! time. The rate is constant for the life of a scope (a crashed server restarts with a new one),
//! so the local clock stays monotonic. Tasks spawned through the runtime inherit their parent's rate.

use std::future::Future;
use std::io;
use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::time::Duration;

use openraft_rt::instant::Instant as _;
use openraft_rt::{AsyncRuntime, OptionalSend, Select2, Select3, Select4};

type Inner = openraft_rt::deterministic_rng::DeterministicRng<openraft_rt_tokio::TokioRuntime>;
type RealInstant = openraft_rt_tokio::TokioInstant;

#[derive(Debug, Clone, Copy)]
struct Rate {
    origin: RealInstant,
    rate: f64,
}

tokio::task_local! {
    static RATE: Rate;
}

fn current() -> Option<Rate> {
    RATE.try_with(|r| *r).ok()
}

/// Runs `f` (which creates a Raft node, or reads its clock) with a clock that advances `rate`
/// times as fast as real time, for `f` and every task it spawns through Raft's runtime.
pub async fn with_rate<F: Future>(rate: f64, f: F) -> F::Output {
    let rate = if rate.is_finite() && rate > 0.0 { rate } else { 1.0 };
    RATE.scope(Rate { origin: RealInstant::now(), rate }, f).await
}

/// Runs `f` on the clock of the scope `like` was taken in (see [`scope_of_current`]).
pub async fn with_scope<F: Future>(like: Option<ClockScope>, f: F) -> F::Output {
    match like {
        Some(ClockScope(r)) => RATE.scope(r, f).await,
        None => f.await,
    }
}

/// A node's clock, to re-enter from elsewhere (the simulation's checker reads a node's metrics on
/// that node's clock).
#[derive(Debug, Clone, Copy)]
pub struct ClockScope(Rate);

/// The clock scope the caller runs in, if any.
pub fn scope_of_current() -> Option<ClockScope> {
    current().map(ClockScope)
}

/// An instant on the local (possibly drifting) clock.
#[derive(Clone, Copy, Debug, Eq, PartialEq, Ord, PartialOrd)]
pub struct LocalInstant(RealInstant);

impl LocalInstant {
    /// The real instant at which the local clock reads `self`.
    fn to_real(self) -> RealInstant {
        match current() {
            Some(r) if r.rate != 1.0 => {
                if self.0 >= r.origin {
                    r.origin + (self.0 - r.origin).div_f64(r.rate)
                } else {
                    r.origin - (r.origin - self.0).div_f64(r.rate)
                }
            }
            _ => self.0,
        }
    }
}

impl Add<Duration> for LocalInstant {
    type Output = Self;
    fn add(self, d: Duration) -> Self {
        LocalInstant(self.0 + d)
    }
}

impl AddAssign<Duration> for LocalInstant {
    fn add_assign(&mut self, d: Duration) {
        self.0 += d;
    }
}

impl Sub<Duration> for LocalInstant {
    type Output = Self;
    fn sub(self, d: Duration) -> Self {
        LocalInstant(self.0 - d)
    }
}

impl SubAssign<Duration> for LocalInstant {
    fn sub_assign(&mut self, d: Duration) {
        self.0 -= d;
    }
}

impl Sub<LocalInstant> for LocalInstant {
    type Output = Duration;
    fn sub(self, other: LocalInstant) -> Duration {
        self.0 - other.0
    }
}

impl openraft_rt::instant::Instant for LocalInstant {
    fn now() -> Self {
        let real = RealInstant::now();
        match current() {
            Some(r) if r.rate != 1.0 => LocalInstant(r.origin + (real - r.origin).mul_f64(r.rate)),
            _ => LocalInstant(real),
        }
    }
}

fn real_duration(d: Duration) -> Duration {
    match current() {
        Some(r) if r.rate != 1.0 => d.div_f64(r.rate),
        _ => d,
    }
}

/// Raft's runtime: tokio with a seeded RNG ([`super::Runtime`]), and a clock that may drift.
#[derive(Debug)]
pub struct Drifting(Inner);

impl AsyncRuntime for Drifting {
    type JoinError = <Inner as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <Inner as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <Inner as AsyncRuntime>::Sleep;
    type Instant = LocalInstant;
    type TimeoutError = <Inner as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <Inner as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = <Inner as AsyncRuntime>::ThreadLocalRng;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        match current() {
            Some(r) => Inner::spawn(RATE.scope(r, future)),
            None => Inner::spawn(future),
        }
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        Inner::sleep(real_duration(duration))
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        Inner::sleep_until(deadline.to_real())
    }

    fn timeout<R, F>(duration: Duration, future: F) -> Self::Timeout<R, F>
    where
        F: Future<Output = R> + OptionalSend,
    {
        Inner::timeout(real_duration(duration), future)
    }

    fn timeout_at<R, F>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F>
    where
        F: Future<Output = R> + OptionalSend,
    {
        Inner::timeout_at(deadline.to_real(), future)
    }

    fn select2<A, B>(a: A, b: B) -> impl Future<Output = Select2<A::Output, B::Output>> + OptionalSend
    where
        A: Future + OptionalSend,
        B: Future + OptionalSend,
    {
        Inner::select2(a, b)
    }

    fn select3<A, B, C>(
        a: A,
        b: B,
        c: C,
    ) -> impl Future<Output = Select3<A::Output, B::Output, C::Output>> + OptionalSend
    where
        A: Future + OptionalSend,
        B: Future + OptionalSend,
        C: Future + OptionalSend,
    {
        Inner::select3(a, b, c)
    }

    fn select4<A, B, C, D>(
        a: A,
        b: B,
        c: C,
        d: D,
    ) -> impl Future<Output = Select4<A::Output, B::Output, C::Output, D::Output>> + OptionalSend
    where
        A: Future + OptionalSend,
        B: Future + OptionalSend,
        C: Future + OptionalSend,
        D: Future + OptionalSend,
    {
        Inner::select4(a, b, c, d)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Inner::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        Inner::thread_rng()
    }

    type Mpsc = <Inner as AsyncRuntime>::Mpsc;
    type Watch = <Inner as AsyncRuntime>::Watch;
    type Oneshot = <Inner as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <Inner as AsyncRuntime>::Mutex<T>;

    fn new(threads: usize) -> Self {
        Drifting(Inner::new(threads))
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.0.block_on(future)
    }

    fn spawn_blocking<F, T>(f: F) -> impl Future<Output = Result<T, io::Error>> + Send
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        Inner::spawn_blocking(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_fast_clock_reads_ahead_and_its_timers_end_early() {
        // Raft's runtime spawns only within a seed's scope (see `raft::with_seed`).
        let rated = with_rate(1.25, async {
            let t0 = LocalInstant::now();
            let real0 = tokio::time::Instant::now();
            Drifting::sleep(Duration::from_millis(500)).await;
            assert_eq!(real0.elapsed(), Duration::from_millis(400), "500 ms on a clock 1.25x fast");
            assert_eq!(LocalInstant::now() - t0, Duration::from_millis(500));
            // A spawned task keeps the rate; a deadline on the local clock converts back.
            let child = Drifting::spawn(async move {
                Drifting::sleep_until(t0 + Duration::from_millis(1000)).await;
                LocalInstant::now() - t0
            });
            assert_eq!(child.await.expect("join"), Duration::from_millis(1000));
            assert_eq!(real0.elapsed(), Duration::from_millis(800));
        });
        crate::raft::with_seed(1, rated).await;
        // Outside a scope: real time.
        let t = LocalInstant::now();
        Drifting::sleep(Duration::from_millis(100)).await;
        assert_eq!(LocalInstant::now() - t, Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_clock_handles_instants_from_before_its_scope() {
        let before = LocalInstant::now();
        tokio::time::sleep(Duration::from_millis(100)).await;
        with_rate(0.5, async move {
            let real0 = tokio::time::Instant::now();
            // `before` is 100 ms before the scope began: on a half-speed clock, 200 ms of real time.
            Drifting::sleep_until(before + Duration::from_millis(150)).await;
            assert_eq!(real0.elapsed(), Duration::from_millis(100), "50 ms local past the origin is 100 ms real");
            let r = Drifting::timeout(Duration::from_millis(10), std::future::pending::<()>()).await;
            assert!(r.is_err());
            assert_eq!(real0.elapsed(), Duration::from_millis(120));
        })
        .await;
    }
}
