//! The channel table: a map from channel key to channel state, split into shards so that polls
//! and publishes on different channels rarely meet on one lock.
//!
//! A channel is removed only while nobody but the table holds it (`Arc::strong_count == 1`
//! under the shard lock): a poller or publisher always clones the `Arc` under that same lock,
//! so a channel can never be forgotten while someone is about to wait on it.

use super::ChannelKey;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

const SHARDS: usize = 32;

type Shard<V> = Mutex<HashMap<ChannelKey, Arc<V>>>;

pub(crate) struct Shards<V> {
    hasher: RandomState,
    shards: Box<[Shard<V>]>,
}

impl<V> Shards<V> {
    pub(crate) fn new() -> Self {
        Self {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, key: &ChannelKey) -> MutexGuard<'_, HashMap<ChannelKey, Arc<V>>> {
        let index = (self.hasher.hash_one(key) as usize) % self.shards.len();
        lock(&self.shards[index])
    }

    pub(crate) fn get(&self, key: &ChannelKey) -> Option<Arc<V>> {
        self.shard(key).get(key).cloned()
    }

    pub(crate) fn get_or_create(&self, key: &ChannelKey, create: impl FnOnce() -> V) -> Arc<V> {
        self.shard(key)
            .entry(key.clone())
            .or_insert_with(|| Arc::new(create()))
            .clone()
    }

    /// Removes the channels nobody else holds and `idle` calls idle; visits every channel.
    pub(crate) fn sweep(&self, mut idle: impl FnMut(&ChannelKey, &V) -> bool) {
        for shard in self.shards.iter() {
            lock(shard)
                .retain(|key, channel| Arc::strong_count(channel) > 1 || !idle(key, channel));
        }
    }

    /// Every channel, for waking them all (after a backplane reconnect).
    pub(crate) fn all(&self) -> Vec<(ChannelKey, Arc<V>)> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            all.extend(lock(shard).iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        all
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }
}

/// Locks a mutex, ignoring poisoning: the hub's critical sections leave consistent state at
/// every point a panic could happen, so a poisoned lock's data is still good.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
