//! `limits.rpc_rate` and `limits.rpc_max_burst`: the agent's own limit on the RPCs it makes to the
//! servers, as Consul's. A token bucket with the semantics of Go's `golang.org/x/time/rate` (which
//! Consul uses): `rate` tokens a second accrue up to `burst`, a call takes one, and a call that
//! finds none is refused at once, not queued. Consul checks it on every RPC a client agent makes
//! and, on a server, on the calls its own agent makes in process; Cairn checks it on every call
//! through the agent's [`Rpc`], so HTTP, DNS and anti-entropy all count. A refused call is
//! Consul's `RPC rate limit exceeded`, which the HTTP API answers with 429, counted in
//! `consul.client.rpc.exceeded`. Both settings are reloadable, as in Consul.
//!
//! Must not: know about HTTP (the status code is the error mapping's job).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use cairn_cluster::clock::Clock;
use cairn_cluster::rpc::{Rpc, RpcFuture};
use cairn_cluster::Error;
use cairn_types::rpc::{
    OperatorRequest, OperatorResponse, QueryMeta, QueryOptions, ReadRequest, ReadResponse, WriteOptions, WriteRequest,
    WriteResponse,
};

/// A token bucket. `rate: None` is Go's `rate.Inf` (Consul's default): every call passes.
#[derive(Debug)]
pub struct Bucket {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    rate: Option<f64>,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl State {
    /// Accrues the tokens earned since `last`.
    fn advance(&mut self, now: Instant) {
        if let Some(rate) = self.rate {
            let earned = now.saturating_duration_since(self.last).as_secs_f64() * rate;
            self.tokens = (self.tokens + earned).min(self.burst);
        }
        self.last = now;
    }
}

impl Bucket {
    /// A full bucket, as a new Go limiter is.
    pub fn new(rate: Option<f64>, burst: u64, clock: Arc<dyn Clock>) -> Bucket {
        let now = clock.now();
        let burst = burst as f64;
        Bucket { clock, state: Mutex::new(State { rate, burst, tokens: burst, last: now }) }
    }

    /// New settings (a reload): a full bucket of the new size, as Consul installs a new limiter.
    pub fn set(&self, rate: Option<f64>, burst: u64) {
        let now = self.clock.now();
        let mut s = self.state.lock().expect("rpc limiter");
        *s = State { rate, burst: burst as f64, tokens: burst as f64, last: now };
    }

    /// Takes a token if there is one.
    pub fn allow(&self) -> bool {
        let now = self.clock.now();
        let mut s = self.state.lock().expect("rpc limiter");
        if s.rate.is_none() {
            return true;
        }
        s.advance(now);
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The agent's [`Rpc`] behind its rate limit.
pub struct Limited {
    pub inner: Arc<dyn Rpc>,
    pub bucket: Arc<Bucket>,
}

impl Limited {
    fn check(&self) -> Result<(), Error> {
        if self.bucket.allow() {
            return Ok(());
        }
        metrics::counter!("consul_client_rpc_exceeded").increment(1);
        Err(Error::RateLimited)
    }
}

impl Rpc for Limited {
    fn read<'a>(&'a self, req: ReadRequest, q: QueryOptions) -> RpcFuture<'a, (QueryMeta, ReadResponse)> {
        match self.check() {
            Ok(()) => self.inner.read(req, q),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
    fn write<'a>(&'a self, req: WriteRequest, w: WriteOptions) -> RpcFuture<'a, WriteResponse> {
        match self.check() {
            Ok(()) => self.inner.write(req, w),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
    fn operator<'a>(&'a self, req: OperatorRequest, q: QueryOptions) -> RpcFuture<'a, OperatorResponse> {
        match self.check() {
            Ok(()) => self.inner.operator(req, q),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A clock the test moves.
    #[derive(Debug)]
    struct Manual(Mutex<Instant>);

    impl Clock for Manual {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    impl Manual {
        fn advance(&self, d: Duration) {
            *self.0.lock().unwrap() += d;
        }
    }

    fn taken(b: &Bucket, n: usize) -> usize {
        (0..n).filter(|_| b.allow()).count()
    }

    #[test]
    fn a_bucket_starts_full_refills_at_its_rate_and_never_holds_more_than_its_burst() {
        let clock = Arc::new(Manual(Mutex::new(Instant::now())));
        let b = Bucket::new(Some(10.0), 5, clock.clone());
        assert_eq!(taken(&b, 8), 5, "a new bucket holds its burst");
        clock.advance(Duration::from_millis(250));
        assert_eq!(taken(&b, 8), 2, "10 a second for 0.25 s is 2.5 tokens");
        clock.advance(Duration::from_millis(50));
        assert_eq!(taken(&b, 8), 1, "the half token left plus half earned");
        clock.advance(Duration::from_secs(60));
        assert_eq!(taken(&b, 100), 5, "an idle bucket fills to its burst only");
    }

    #[test]
    fn no_rate_is_unlimited_and_a_reload_starts_a_full_bucket() {
        let clock = Arc::new(Manual(Mutex::new(Instant::now())));
        let b = Bucket::new(None, 0, clock.clone());
        assert_eq!(taken(&b, 10_000), 10_000, "Consul's default rate is infinite");
        b.set(Some(1.0), 3);
        assert_eq!(taken(&b, 10), 3, "a reload installs a full bucket");
        clock.advance(Duration::from_secs(2));
        assert_eq!(taken(&b, 10), 2);
        b.set(Some(1.0), 1);
        assert_eq!(taken(&b, 10), 1, "of the new size");
        b.set(Some(100.0), 0);
        clock.advance(Duration::from_secs(1));
        assert_eq!(taken(&b, 10), 0, "a zero burst refuses every call, as Go's limiter does");
    }
}
