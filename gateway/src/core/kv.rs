//! The backplane's Redis as a key-value store, for what instances share besides channels and
//! rate limits: job results and cached answers. One lazy connection for the process, made at
//! start when `backplane` is redis; every key is under the backplane's `prefix` and expires.

use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use std::sync::OnceLock;
use std::time::Duration;

static KV: OnceLock<Kv> = OnceLock::new();

pub struct Kv {
    conn: ConnectionManager,
    /// For connections of their own: a blocking read holds its connection.
    client: redis::Client,
    prefix: String,
}

/// Connects the store when the config uses the Redis backplane; call inside a runtime that
/// lives as long as the process (the connection's driver runs there).
pub fn init(config: &conf::Config) {
    let conf::Backplane::Redis(redis_conf) = &config.backplane else {
        return;
    };
    let client = match redis::Client::open(redis_conf.url.as_str()) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "job results and cached answers cannot use the Redis backplane");
            return;
        }
    };
    let settings = redis::aio::ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(1)));
    match ConnectionManager::new_lazy_with_config(client.clone(), settings) {
        Ok(conn) => {
            let _ = KV.set(Kv {
                conn,
                client,
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
    /// `key` under the backplane's prefix.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The shared connection, for commands that answer at once.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A connection of its own, for commands that block (`XREAD BLOCK`) up to `wait`.
    pub async fn own_connection(
        &self,
        wait: Duration,
    ) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let settings = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(wait + Duration::from_secs(1)));
        self.client
            .get_multiplexed_async_connection_with_config(&settings)
            .await
    }

    /// Stores `value` at `key` for `keep`.
    pub async fn put(&self, key: &str, value: &[u8], keep: Duration) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        conn.pset_ex(format!("{}{key}", self.prefix), value, millis(keep))
            .await
    }

    /// The value at `key`; `None` when there is none, or Redis did not answer.
    pub async fn fetch(&self, key: &str) -> Option<Vec<u8>> {
        let mut conn = self.conn.clone();
        conn.get(format!("{}{key}", self.prefix))
            .await
            .unwrap_or(None)
    }
}
