//! A provider's pool of API keys: used in turn, a key the provider refused (429, 401) resting
//! until its `Retry-After`. Keys are header values made at load and never written anywhere else.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The keys of one provider.
pub struct KeyPool {
    keys: Vec<http::HeaderValue>,
    next: AtomicUsize,
    /// When each key may be used again, in milliseconds since `epoch` (0: now).
    resting_until: Vec<AtomicU64>,
    epoch: Instant,
}

/// A key taken for one request: which one, and its header value.
pub struct Key<'p> {
    pub index: usize,
    pub value: &'p http::HeaderValue,
}

impl KeyPool {
    /// The pool of `keys` (header values, each marked sensitive so no log prints it).
    pub fn new(keys: Vec<http::HeaderValue>) -> Self {
        let keys: Vec<_> = keys
            .into_iter()
            .map(|mut key| {
                key.set_sensitive(true);
                key
            })
            .collect();
        let resting_until = keys.iter().map(|_| AtomicU64::new(0)).collect();
        Self {
            keys,
            next: AtomicUsize::new(0),
            resting_until,
            epoch: Instant::now(),
        }
    }

    /// The next key in turn that is not resting; `Err` is how long until the soonest one is
    /// back when all are.
    pub fn take(&self) -> Result<Key<'_>, Duration> {
        let count = self.keys.len();
        let now = self.now();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut soonest = u64::MAX;
        for offset in 0..count {
            let index = (start + offset) % count;
            let until = self.resting_until[index].load(Ordering::Relaxed);
            if until <= now {
                return Ok(Key {
                    index,
                    value: &self.keys[index],
                });
            }
            soonest = soonest.min(until);
        }
        Err(Duration::from_millis(soonest.saturating_sub(now)))
    }

    /// Key `index` rests for `pause`.
    pub fn rest(&self, index: usize, pause: Duration) {
        if let Some(until) = self.resting_until.get(index) {
            let pause = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX);
            until.fetch_max(self.now().saturating_add(pause), Ordering::Relaxed);
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> KeyPool {
        KeyPool::new(
            (0..n)
                .map(|i| http::HeaderValue::from_str(&format!("k{i}")).expect("value"))
                .collect(),
        )
    }

    #[test]
    fn keys_are_used_in_turn_and_a_resting_key_is_skipped() {
        let pool = pool(3);
        let taken: Vec<usize> = (0..4).map(|_| pool.take().expect("key").index).collect();
        assert_eq!(taken, [0, 1, 2, 0]);
        pool.rest(1, Duration::from_secs(60));
        let taken: Vec<usize> = (0..4).map(|_| pool.take().expect("key").index).collect();
        assert!(!taken.contains(&1), "{taken:?}");
    }

    #[test]
    fn when_every_key_rests_the_soonest_return_is_told() {
        let pool = pool(2);
        pool.rest(0, Duration::from_secs(30));
        pool.rest(1, Duration::from_secs(5));
        let wait = pool.take().err().expect("all resting");
        assert!(
            wait <= Duration::from_secs(5) && wait > Duration::from_secs(4),
            "{wait:?}"
        );
        assert!(pool.keys[0].is_sensitive());
    }
}
