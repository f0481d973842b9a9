//! A follower's read points, asked of the leader in batches. Every default or consistent read on a
//! follower needs the leader's read index first; when a write wakes thousands of blocking queries,
//! each re-arms with a new read, and one request per read would put thousands of round trips in
//! front of the leader. Here the reads waiting at one moment share one request, and a read that
//! arrives while a request is out waits for the next one: an answer always comes from a request
//! sent after its reader arrived, which is what makes the read point good for it (a read index
//! taken earlier could predate a write the reader has already seen acknowledged).
//!
//! Must not: decide a read point (the leader does); retry (the caller does, as before).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::error::Error;

type Ask = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<u64, Error>> + Send>> + Send + Sync>;

struct Batch {
    /// Whether a request (and the driver that sends it) is out.
    running: bool,
    waiting: Vec<oneshot::Sender<Result<u64, Error>>>,
}

/// Batches of read-index requests, one stream of batches per key (the leader's address and the
/// consistency asked).
pub struct ReadBatcher<K> {
    batches: Arc<Mutex<HashMap<K, Batch>>>,
}

impl<K> Default for ReadBatcher<K> {
    fn default() -> Self {
        ReadBatcher { batches: Arc::default() }
    }
}

impl<K: Eq + Hash + Clone + Send + 'static> ReadBatcher<K> {
    /// The read index for `key`, from a request `ask` sends after this call began (shared with
    /// the other reads waiting for it).
    pub async fn read_index<F, Fut>(&self, key: K, ask: F) -> Result<u64, Error>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<u64, Error>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut b = self.batches.lock().expect("read batches");
            let batch = b.entry(key.clone()).or_insert_with(|| Batch { running: false, waiting: Vec::new() });
            batch.waiting.push(tx);
            !std::mem::replace(&mut batch.running, true)
        };
        if start {
            let ask: Ask = Arc::new(move || Box::pin(ask()));
            // A task of its own: the reader that started the driver may give up (its client
            // went away), the others still need their answer.
            tokio::spawn(drive(self.batches.clone(), key, ask));
        }
        rx.await.unwrap_or(Err(Error::NoLeader))
    }
}

/// Ends a key's batches if its driver stops early (a panic, or the runtime shutting down):
/// the readers still queued get an error rather than waiting for a driver that is gone, and the
/// next reader starts a new one. Disarmed when the driver ends normally.
struct EndGuard<K: Eq + Hash> {
    batches: Arc<Mutex<HashMap<K, Batch>>>,
    key: Option<K>,
}

impl<K: Eq + Hash> Drop for EndGuard<K> {
    fn drop(&mut self) {
        if let (Some(key), Ok(mut b)) = (self.key.take(), self.batches.lock()) {
            b.remove(&key);
        }
    }
}

/// Sends one request per batch until no reader waits.
async fn drive<K: Eq + Hash>(batches: Arc<Mutex<HashMap<K, Batch>>>, key: K, ask: Ask) {
    let mut guard = EndGuard { batches: batches.clone(), key: Some(key) };
    loop {
        let readers = {
            let mut b = batches.lock().expect("read batches");
            let key = guard.key.as_ref().expect("armed");
            let batch = b.get_mut(key).expect("a running driver's batch stays until it ends");
            if batch.waiting.is_empty() {
                // Under the lock, so a reader arriving now finds no driver and starts one.
                let key = guard.key.take().expect("armed");
                b.remove(&key);
                return;
            }
            std::mem::take(&mut batch.waiting)
        };
        let answer = ask().await;
        for r in readers {
            let _ = r.send(answer.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn concurrent_reads_share_requests_sent_after_they_arrived() {
        let batcher = Arc::new(ReadBatcher::<&'static str>::default());
        // Each request returns the number of requests begun so far, including itself.
        let begun = Arc::new(AtomicU64::new(0));
        let mut readers = Vec::new();
        for i in 0..1_000u64 {
            let (batcher, begun) = (batcher.clone(), begun.clone());
            readers.push(tokio::spawn(async move {
                // Arrivals spread over 30 ms, while requests take 5 ms each.
                tokio::time::sleep(Duration::from_micros(i * 30)).await;
                let seen = begun.load(Ordering::SeqCst);
                let b = begun.clone();
                let got = batcher
                    .read_index("leader", move || {
                        let b = b.clone();
                        async move {
                            let n = b.fetch_add(1, Ordering::SeqCst) + 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            Ok(n)
                        }
                    })
                    .await
                    .expect("read index");
                assert!(got > seen, "answered by request {got}, which began before the reader arrived ({seen})");
            }));
        }
        for r in readers {
            r.await.expect("reader");
        }
        let n = begun.load(Ordering::SeqCst);
        assert!(n <= 10, "1,000 reads over 30 ms took {n} requests");
        assert!(batcher.batches.lock().unwrap().is_empty(), "the driver ends once no reader waits");
    }

    #[tokio::test(start_paused = true)]
    async fn a_driver_that_dies_fails_its_readers_and_the_next_reader_starts_anew() {
        let batcher = ReadBatcher::<u8>::default();
        let r = batcher
            .read_index(1, || async {
                if std::hint::black_box(true) {
                    panic!("the request's task dies");
                }
                Ok(1)
            })
            .await;
        assert!(matches!(r, Err(Error::NoLeader)), "{r:?}");
        assert!(batcher.batches.lock().unwrap().is_empty());
        assert!(matches!(batcher.read_index(1, || async { Ok(7) }).await, Ok(7)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_reaches_every_reader_of_its_batch() {
        let batcher = Arc::new(ReadBatcher::<u8>::default());
        let mut readers = Vec::new();
        for _ in 0..10 {
            let batcher = batcher.clone();
            readers.push(tokio::spawn(async move {
                batcher
                    .read_index(1, || async {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        Err(Error::NoLeader)
                    })
                    .await
            }));
        }
        for r in readers {
            assert!(matches!(r.await.expect("reader"), Err(Error::NoLeader)));
        }
    }
}
