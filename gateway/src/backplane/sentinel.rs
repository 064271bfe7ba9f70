//! Following the master that Redis Sentinel names. Commands go to a connection to the master
//! the sentinels named last; when one fails as an outage would (the master is gone, or it has
//! become a replica and refuses writes), that connection is forgotten and the next command asks
//! the sentinels again, so a failover costs the commands of its own gap and no more.

use super::link::{is_outage, LinkError, CONNECT_TIMEOUT};
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::sentinel::Sentinel;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisResult, Value};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// A connection that follows Sentinel's master. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct Follower {
    inner: Arc<Inner>,
}

struct Inner {
    master: String,
    sentinels: tokio::sync::Mutex<Sentinel>,
    current: Mutex<Option<Current>>,
    response: Duration,
    /// Where the master connection's driver runs: the runtime the follower was made in.
    runtime: Option<tokio::runtime::Handle>,
}

#[derive(Clone)]
struct Current {
    generation: u64,
    client: redis::Client,
    conn: ConnectionManager,
}

impl Follower {
    pub fn new(master: &str, nodes: &[&str], response: Duration) -> Result<Self, LinkError> {
        let sentinels =
            Sentinel::build(nodes.to_vec()).map_err(|error| LinkError::Url(error.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                master: master.to_owned(),
                sentinels: tokio::sync::Mutex::new(sentinels),
                current: Mutex::new(None),
                response,
                runtime: tokio::runtime::Handle::try_current().ok(),
            }),
        })
    }

    /// Asks the sentinels for the master now (and checks that it answers as one).
    pub async fn master_client(&self) -> Result<redis::Client, LinkError> {
        let mut sentinels = self.inner.sentinels.lock().await;
        let ask = sentinels.async_master_for(&self.inner.master, None);
        match tokio::time::timeout(CONNECT_TIMEOUT * 3, ask).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(error)) if error.kind() == ErrorKind::MasterNameNotFoundBySentinel => {
                Err(LinkError::UnknownMaster(self.inner.master.clone()))
            }
            Ok(Err(error)) => Err(LinkError::NoSentinel(error.to_string())),
            Err(_) => Err(LinkError::NoSentinel("timed out".into())),
        }
    }

    /// The connection to the master named last, asking the sentinels when there is none.
    async fn current(&self) -> RedisResult<Current> {
        if let Some(current) = self.lock().clone() {
            return Ok(current);
        }
        let client = self
            .master_client()
            .await
            .map_err(|error| RedisError::from((ErrorKind::Io, "no master", error.to_string())))?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(self.inner.response));
        let conn = {
            let _entered = self.inner.runtime.as_ref().map(|runtime| runtime.enter());
            ConnectionManager::new_lazy_with_config(client.clone(), config)?
        };
        let mut current = self.lock();
        let generation = current.as_ref().map_or(0, |c| c.generation) + 1;
        Ok(current
            .get_or_insert(Current {
                generation,
                client,
                conn,
            })
            .clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.inner
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets the connection a failed command used, unless another was made since.
    fn after<T>(&self, generation: u64, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(error) = &result {
            if is_outage(error) {
                let mut current = self.lock();
                if current.as_ref().is_some_and(|c| c.generation == generation) {
                    tracing::warn!(%error, master = %self.inner.master, "the Sentinel master failed; asking the sentinels again");
                    *current = None;
                }
            }
        }
        result
    }

    /// The connection to the current master, kept for several commands that must go to the
    /// same connection (a write and the `WAIT` for it).
    pub async fn pin(&self) -> RedisResult<Pinned> {
        Ok(Pinned {
            follower: self.clone(),
            current: self.current().await?,
        })
    }

    pub async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let mut current = self.current().await?;
        let result = current.conn.req_packed_command(cmd).await;
        self.after(current.generation, result)
    }

    pub async fn commands(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let mut current = self.current().await?;
        let result = current
            .conn
            .req_packed_commands(pipeline, offset, count)
            .await;
        self.after(current.generation, result)
    }

    /// A connection of its own to the current master.
    pub async fn own(&self, response: Duration) -> RedisResult<MultiplexedConnection> {
        let current = self.current().await?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response));
        current
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// The current master's client, for a connection with settings of its own (the wake-up
    /// listener's RESP3 one).
    pub async fn client(&self) -> RedisResult<redis::Client> {
        Ok(self.current().await?.client)
    }
}

/// One master connection of a [`Follower`], for commands that must share it.
#[derive(Clone)]
pub struct Pinned {
    follower: Follower,
    current: Current,
}

impl Pinned {
    pub async fn command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        let result = self.current.conn.req_packed_command(cmd).await;
        self.follower.after(self.current.generation, result)
    }

    pub async fn commands(
        &mut self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let result = self
            .current
            .conn
            .req_packed_commands(pipeline, offset, count)
            .await;
        self.follower.after(self.current.generation, result)
    }
}
