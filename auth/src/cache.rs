//! The verified-token cache: a client that repeats its token pays the signature check once.
//!
//! Keyed by the SHA-256 of the token (the token itself is never kept as a key, and a collision
//! would need a second preimage), bounded (sharded maps of a fixed total size; when a shard is
//! full, expired entries go first, then an arbitrary one), and tagged with the key-set
//! generation so that a JWKS change re-verifies every token. A hit still re-checks `exp`,
//! `nbf` and `iat` against the current time; an expired entry is dropped, never served.

use crate::identity::Verified;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

const SHARDS: usize = 16;

/// Entries whose `exp` passed this long ago are dropped first (the largest configurable leeway).
const EXPIRED_GRACE: i64 = 300;

pub(crate) type CacheKey = [u8; 32];

struct Entry {
    verified: Arc<Verified>,
    generation: u64,
}

/// The key is already a SHA-256: its first bytes are a fine hash.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(1) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }
}

type Shard = HashMap<CacheKey, Entry, BuildHasherDefault<PassThrough>>;

/// A bounded map from token hashes to verified tokens.
pub(crate) struct TokenCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("capacity", &(self.per_shard * self.shards.len()))
            .finish()
    }
}

impl TokenCache {
    /// A cache of about `capacity` tokens; `None` for 0 (caching off).
    pub fn new(capacity: usize) -> Option<Self> {
        if capacity == 0 {
            return None;
        }
        let shards = SHARDS.min(capacity);
        Some(Self {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(shards),
        })
    }

    pub fn key(token: &str) -> CacheKey {
        Sha256::digest(token.as_bytes()).into()
    }

    fn shard(&self, key: &CacheKey) -> std::sync::MutexGuard<'_, Shard> {
        let index = usize::from(key[31]) % self.shards.len();
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The verified token, if it was verified under key-set `generation`.
    pub fn get(&self, key: &CacheKey, generation: u64) -> Option<Arc<Verified>> {
        let shard = self.shard(key);
        let entry = shard.get(key)?;
        (entry.generation == generation).then(|| entry.verified.clone())
    }

    pub fn insert(&self, key: CacheKey, verified: Arc<Verified>, generation: u64, now: i64) {
        let mut shard = self.shard(&key);
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, entry| {
                entry
                    .verified
                    .exp
                    .is_none_or(|exp| exp.saturating_add(EXPIRED_GRACE) > now)
            });
            if shard.len() >= self.per_shard {
                if let Some(victim) = shard.keys().next().copied() {
                    shard.remove(&victim);
                }
            }
        }
        shard.insert(
            key,
            Entry {
                verified,
                generation,
            },
        );
    }

    pub fn remove(&self, key: &CacheKey) {
        self.shard(key).remove(key);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::CredentialKind;
    use crate::Claims;

    fn verified(exp: i64) -> Arc<Verified> {
        Arc::new(Verified {
            kind: CredentialKind::Jwt,
            subject: "s".to_owned(),
            claims: Claims::default(),
            scopes: vec![],
            roles: vec![],
            exp: Some(exp),
            nbf: None,
            iat: None,
        })
    }

    #[test]
    fn stays_within_its_bound() {
        let cache = TokenCache::new(64).expect("on");
        for i in 0..1000 {
            cache.insert(TokenCache::key(&format!("t{i}")), verified(2_000), 0, 1_000);
        }
        assert!(cache.len() <= 64, "{}", cache.len());
        assert!(TokenCache::new(0).is_none());
    }

    #[test]
    fn expired_entries_leave_first() {
        let cache = TokenCache::new(1).expect("on");
        let old = TokenCache::key("old");
        cache.insert(old, verified(10), 0, 0);
        cache.insert(TokenCache::key("new"), verified(10_000), 0, 5_000);
        assert!(cache.get(&old, 0).is_none());
        assert!(cache.get(&TokenCache::key("new"), 0).is_some());
    }

    #[test]
    fn another_generation_misses() {
        let cache = TokenCache::new(8).expect("on");
        let key = TokenCache::key("t");
        cache.insert(key, verified(10), 1, 0);
        assert!(cache.get(&key, 1).is_some());
        assert!(cache.get(&key, 2).is_none());
    }
}
