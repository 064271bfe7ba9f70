//! The backplane's Redis as a key-value store, for what instances share besides channels and
//! rate limits: job results and cached answers. One lazy connection for the process, made at
//! start when `backplane` is redis; every key is under the backplane's `prefix` and expires.

use crate::backplane::Link;
use redis::AsyncCommands;
use std::sync::OnceLock;
use std::time::Duration;

static KV: OnceLock<Kv> = OnceLock::new();

pub struct Kv {
    link: Link,
    /// The backplane's settings, for connections of their own: a blocking read holds its
    /// connection.
    settings: conf::RedisBackplane,
    prefix: String,
}

/// Connects the store when the config uses the Redis backplane; call inside a runtime that
/// lives as long as the process (the connection's driver runs there).
pub fn init(config: &conf::Config) {
    let conf::Backplane::Redis(redis_conf) = &config.backplane else {
        return;
    };
    match Link::lazy(redis_conf, Duration::from_secs(1)) {
        Ok(link) => {
            let _ = KV.set(Kv {
                link,
                settings: redis_conf.clone(),
                prefix: redis_conf.prefix.clone(),
            });
        }
        Err(error) => {
            tracing::error!(%error, "job results and cached answers cannot use the Redis backplane")
        }
    }
}

/// The store, when the backplane is Redis.
pub fn get() -> Option<&'static Kv> {
    KV.get()
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Kv {
    /// `key` under the backplane's prefix, as its own hash tag in a cluster: the keys of one
    /// record share the tag (`key("answer:7", ":live")`) so a script or pipeline may touch them
    /// all.
    pub fn key(&self, key: &str) -> String {
        self.key_with(key, "")
    }

    /// Like [`Kv::key`], with `suffix` after the tag.
    pub fn key_with(&self, key: &str, suffix: &str) -> String {
        self.link.key_shape().key(&self.prefix, key, suffix)
    }

    /// The shared connection, for commands that answer at once.
    pub fn connection(&self) -> Link {
        self.link.clone()
    }

    /// A connection of its own, for commands that block (`XREAD BLOCK`) up to `wait`.
    pub async fn own_connection(&self, wait: Duration) -> redis::RedisResult<Link> {
        self.link.own(&self.settings, wait).await
    }

    /// Stores `value` at `key` for `keep`.
    pub async fn put(&self, key: &str, value: &[u8], keep: Duration) -> redis::RedisResult<()> {
        let mut conn = self.link.clone();
        conn.pset_ex(self.key(key), value, millis(keep)).await
    }

    /// The value at `key`; `None` when there is none, or Redis did not answer.
    pub async fn fetch(&self, key: &str) -> Option<Vec<u8>> {
        let mut conn = self.link.clone();
        conn.get(self.key(key)).await.unwrap_or(None)
    }
}
