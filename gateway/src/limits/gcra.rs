//! The generic cell rate algorithm (GCRA) and a bounded, sharded in-process store of it.
//!
//! Why GCRA and not `pingora_limits::Rate`: `Rate` estimates a sliding count over fixed
//! intervals and has no burst, so `10/s, burst 20` cannot be expressed and a client can pass
//! twice the rate across an interval boundary. GCRA is a token bucket written as one number per
//! key — the theoretical arrival time (TAT) — so it is exact, has a burst, gives `Retry-After`
//! and the remaining quota for free, and the very same arithmetic runs in Redis (`redis.rs`).
//!
//! Memory is bounded: a key whose TAT is in the past is a full bucket, indistinguishable from an
//! absent key, so a full shard first drops those (exact); if every key is still live, the shard
//! drops one arbitrary live key (that client gets a fresh bucket — the only approximation,
//! reached only with more than `MAX_KEYS` keys active in one window).

use std::collections::HashMap;
use std::sync::Mutex;

/// Shards of the store; a power of two.
const SHARDS: usize = 64;
/// Keys kept at most, over all shards.
const MAX_KEYS: usize = 1 << 20;

/// The outcome of one GCRA step, times in the caller's unit (ns locally, µs in Redis).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; the bucket is full again after `reset`, and `remaining` more fit right now.
    Allow { remaining: u64, reset: u64 },
    /// Refused; the next request fits after `retry`.
    Deny { retry: u64 },
}

/// One GCRA step: `emission` = window / count, `tolerance` = emission × burst.
/// Returns the decision and the new TAT to store when allowed.
pub fn step(tat: u64, now: u64, emission: u64, tolerance: u64) -> (Decision, Option<u64>) {
    let tat = tat.max(now);
    let new_tat = tat.saturating_add(emission);
    let allow_at = new_tat.saturating_sub(tolerance);
    if now < allow_at {
        return (
            Decision::Deny {
                retry: allow_at - now,
            },
            None,
        );
    }
    let used = new_tat - now;
    let remaining = tolerance.saturating_sub(used) / emission.max(1);
    (
        Decision::Allow {
            remaining,
            reset: used,
        },
        Some(new_tat),
    )
}

/// TATs by key hash, in nanoseconds since the store's epoch.
pub struct Store {
    shards: Vec<Mutex<HashMap<u64, u64>>>,
    epoch: std::time::Instant,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            epoch: std::time::Instant::now(),
        }
    }
}

impl Store {
    pub fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn shard(&self, key: u64) -> &Mutex<HashMap<u64, u64>> {
        &self.shards[(key as usize) & (SHARDS - 1)]
    }

    /// One GCRA step for `key`, stored when allowed.
    pub fn check(&self, key: u64, now: u64, emission: u64, tolerance: u64) -> Decision {
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tat = shard.get(&key).copied().unwrap_or(now);
        let (decision, new_tat) = step(tat, now, emission, tolerance);
        if let Some(new_tat) = new_tat {
            if shard.len() >= MAX_KEYS / SHARDS && !shard.contains_key(&key) {
                shard.retain(|_, &mut tat| tat > now);
                if shard.len() >= MAX_KEYS / SHARDS {
                    if let Some(&victim) = shard.keys().next() {
                        shard.remove(&victim);
                    }
                }
            }
            shard.insert(key, new_tat);
        }
        decision
    }

    /// Gives back one request counted by `check` (another limit of the route refused it).
    pub fn refund(&self, key: u64, emission: u64) {
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tat) = shard.get_mut(&key) {
            *tat = tat.saturating_sub(emission);
        }
    }
}

impl Store {
    /// Moves `key`'s TAT by `delta` ns: a charge corrected once the real cost is known (more
    /// spent than charged: later; less: earlier). A debt starts from `now` when the bucket was
    /// full.
    pub fn adjust(&self, key: u64, now: u64, delta: i64) {
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tat = shard.get(&key).copied().unwrap_or(now);
        let moved = if delta >= 0 {
            tat.max(now).saturating_add(delta.unsigned_abs())
        } else {
            tat.saturating_sub(delta.unsigned_abs())
        };
        shard.insert(key, moved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        // 2 per second, burst 2: two pass at once, the third waits 0.5 s.
        let store = Store::default();
        let (e, tol) = (500_000_000, 1_000_000_000);
        assert!(matches!(
            store.check(1, 0, e, tol),
            Decision::Allow { remaining: 1, .. }
        ));
        assert!(matches!(
            store.check(1, 0, e, tol),
            Decision::Allow { remaining: 0, .. }
        ));
        assert_eq!(
            store.check(1, 0, e, tol),
            Decision::Deny { retry: 500_000_000 }
        );
        // Another key is independent.
        assert!(matches!(store.check(2, 0, e, tol), Decision::Allow { .. }));
        assert!(matches!(
            store.check(1, 500_000_000, e, tol),
            Decision::Allow { .. }
        ));
        store.refund(1, e);
        assert!(matches!(
            store.check(1, 500_000_000, e, tol),
            Decision::Allow { .. }
        ));
    }

    #[test]
    fn a_charge_is_corrected_both_ways() {
        // 1 token per ms, burst 10: a charge of 10 spends the bucket.
        let store = Store::default();
        let (e, tol) = (1_000_000, 10_000_000);
        assert!(matches!(
            store.check(7, 0, 10 * e, tol),
            Decision::Allow { .. }
        ));
        assert_eq!(store.check(7, 0, e, tol), Decision::Deny { retry: e });
        // Only 4 were used: 6 come back.
        store.adjust(7, 0, -6 * e as i64);
        assert!(matches!(
            store.check(7, 0, 6 * e, tol),
            Decision::Allow { .. }
        ));
        // 5 more were used than charged: a debt of 5 ms.
        store.adjust(7, 0, 5 * e as i64);
        assert_eq!(store.check(7, 0, e, tol), Decision::Deny { retry: 6 * e });
    }
}
