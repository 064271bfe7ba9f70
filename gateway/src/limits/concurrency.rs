//! In-flight caps: route-wide (503) and per key (429). Each admitted request holds an
//! [`InFlightGuard`] in its context; dropping it (whenever the request ends, held polls
//! included) releases the slots.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;

/// A route's in-flight counters.
pub struct InFlight {
    pub max: Option<usize>,
    pub max_per_key: Option<usize>,
    count: AtomicUsize,
    /// Requests in flight per key hash; an entry exists only while its count is above 0, so
    /// memory is bounded by the requests in flight.
    per_key: Vec<Mutex<HashMap<u64, usize>>>,
}

/// Why a request was not admitted.
pub enum Refused {
    Route(usize),
    Key(usize),
}

impl InFlight {
    pub fn new(max: Option<usize>, max_per_key: Option<usize>) -> Self {
        Self {
            max,
            max_per_key,
            count: AtomicUsize::new(0),
            per_key: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, HashMap<u64, usize>> {
        self.per_key[(key as usize) % SHARDS]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a route slot and, with `key`, a key slot.
    pub fn acquire(self: &Arc<Self>, key: Option<u64>) -> Result<InFlightGuard, Refused> {
        let max = self.max.unwrap_or(usize::MAX);
        if self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err()
        {
            return Err(Refused::Route(max));
        }
        let mut guard = InFlightGuard {
            limits: self.clone(),
            key: None,
        };
        if let (Some(key), Some(max)) = (key, self.max_per_key) {
            let mut shard = self.shard(key);
            let count = shard.entry(key).or_insert(0);
            if *count >= max {
                if *count == 0 {
                    shard.remove(&key);
                }
                return Err(Refused::Key(max));
            }
            *count += 1;
            guard.key = Some(key);
        }
        Ok(guard)
    }
}

/// Releases its slots on drop.
pub struct InFlightGuard {
    limits: Arc<InFlight>,
    key: Option<u64>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.limits.count.fetch_sub(1, Ordering::AcqRel);
        if let Some(key) = self.key {
            let mut shard = self.limits.shard(key);
            if let Some(count) = shard.get_mut(&key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    shard.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_releases() {
        let limits = Arc::new(InFlight::new(Some(3), Some(1)));
        let a = limits.acquire(Some(1)).ok().expect("first");
        assert!(matches!(limits.acquire(Some(1)), Err(Refused::Key(1))));
        let _b = limits.acquire(Some(2)).ok().expect("other key");
        let _c = limits.acquire(None).ok().expect("no key");
        assert!(matches!(limits.acquire(Some(3)), Err(Refused::Route(3))));
        drop(a);
        assert!(limits.acquire(Some(1)).is_ok());
    }
}
