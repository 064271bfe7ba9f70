//! Request coalescing (`coalesce:`) and the short answer cache (`cache:`): identical `GET` and
//! `HEAD` requests in flight share one upstream call, through one process-wide table of flights
//! and cached answers. See docs/actions.md.

use crate::core::upstream::exchange::{CallResult, UpstreamError};
use crate::observe::metrics::METRICS;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Most cached answers kept in the process.
pub const MAX_CACHED: usize = 10_000;

/// Whether requests of this method may share an answer.
pub fn eligible(method: &http::Method) -> bool {
    matches!(*method, http::Method::GET | http::Method::HEAD)
}

struct Flight {
    id: u64,
    answer: watch::Receiver<Option<Arc<CallResult>>>,
    waiters: usize,
    task: tokio::task::AbortHandle,
}

#[derive(Default)]
struct Table {
    flights: HashMap<String, Flight>,
    cache: HashMap<String, (Instant, Arc<CallResult>)>,
    next_id: u64,
}

static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(Mutex::default);

fn lock_table() -> MutexGuard<'static, Table> {
    TABLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Leaves a flight when dropped; the last one to leave before the answer cancels the call.
struct Waiter {
    key: String,
    id: u64,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut table = lock_table();
        if let Some(flight) = table.flights.get_mut(&self.key) {
            if flight.id == self.id {
                flight.waiters -= 1;
                if flight.waiters == 0 {
                    flight.task.abort();
                    table.flights.remove(&self.key);
                }
            }
        }
    }
}

/// The answer of `call` for `key`: shared with identical calls in flight, or a cached answer
/// that is still fresh. `cacheable` says which answers the cache may keep.
pub async fn call<F>(
    key: String,
    cache: Option<Duration>,
    route: &str,
    cacheable: impl Fn(&CallResult) -> bool + Send + 'static,
    call: F,
) -> Arc<CallResult>
where
    F: Future<Output = CallResult> + Send + 'static,
{
    let (mut answer, waiter) = {
        let mut table = lock_table();
        if let Some((until, answer)) = table.cache.get(&key) {
            if *until > Instant::now() {
                METRICS.coalesced.with_label_values(&[route]).inc();
                return answer.clone();
            }
            table.cache.remove(&key);
        }
        if let Some(flight) = table.flights.get_mut(&key) {
            flight.waiters += 1;
            METRICS.coalesced.with_label_values(&[route]).inc();
            (flight.answer.clone(), Waiter { key, id: flight.id })
        } else {
            table.next_id += 1;
            let id = table.next_id;
            let (sender, receiver) = watch::channel(None);
            let finished_key = key.clone();
            let task = tokio::spawn(async move {
                let result = Arc::new(call.await);
                // The answer is cached (and the flight retired) before any waiter hears of it:
                // a waiter that returns and calls again at once must find it in the cache, not
                // start a second call.
                {
                    let mut table = lock_table();
                    if table.flights.get(&finished_key).is_some_and(|f| f.id == id) {
                        table.flights.remove(&finished_key);
                    }
                    if let Some(ttl) = cache.filter(|_| cacheable(&result)) {
                        if table.cache.len() >= MAX_CACHED {
                            let now = Instant::now();
                            table.cache.retain(|_, (until, _)| *until > now);
                        }
                        if table.cache.len() < MAX_CACHED {
                            table
                                .cache
                                .insert(finished_key, (Instant::now() + ttl, result.clone()));
                        }
                    }
                }
                sender.send_replace(Some(result));
            });
            table.flights.insert(
                key.clone(),
                Flight {
                    id,
                    answer: receiver.clone(),
                    waiters: 1,
                    task: task.abort_handle(),
                },
            );
            (receiver, Waiter { key, id })
        }
    };
    let result = loop {
        if let Some(result) = answer.borrow_and_update().clone() {
            break result;
        }
        if answer.changed().await.is_err() {
            // The task ended without an answer: it was aborted (runtime shutting down).
            let upstream = waiter.key.split('\0').nth(1).unwrap_or("upstream");
            break Arc::new(Err(UpstreamError::Cancelled(Arc::from(upstream))));
        }
    };
    drop(waiter);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::upstream::exchange::Answer;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn ok() -> CallResult {
        Ok(Answer {
            status: 200,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::from_static(b"x"),
        })
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn identical_calls_share_one_and_the_last_leaver_cancels() {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut joins = Vec::new();
        for _ in 0..50 {
            let calls = calls.clone();
            joins.push(tokio::spawn(call(
                "k1".into(),
                None,
                "r",
                |_| true,
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    ok()
                },
            )));
        }
        for join in joins {
            assert!(join.await.expect("join").is_ok());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // Everyone leaves: the call is aborted and the flight forgotten.
        let dropped = Arc::new(AtomicUsize::new(0));
        struct Guard(Arc<AtomicUsize>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let guard_count = dropped.clone();
        let waiting = call("k2".into(), None, "r", |_| true, async move {
            let _guard = Guard(guard_count);
            tokio::time::sleep(Duration::from_secs(60)).await;
            ok()
        });
        let _ = tokio::time::timeout(Duration::from_millis(50), waiting).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        assert!(!lock_table().flights.contains_key("k2"));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn cached_answers_are_served_until_they_expire() {
        // Long enough that the three calls below fit in it on a loaded CI machine (200 ms did
        // not always); the wait after them is what makes the entry expire.
        const TTL: Duration = Duration::from_secs(1);
        let calls = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let counter = calls.clone();
            call("k3".into(), Some(TTL), "r", |_| true, async move {
                counter.fetch_add(1, Ordering::SeqCst);
                ok()
            })
            .await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(TTL + Duration::from_millis(50)).await;
        let counter = calls.clone();
        call("k3".into(), Some(TTL), "r", |_| true, async move {
            counter.fetch_add(1, Ordering::SeqCst);
            ok()
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
