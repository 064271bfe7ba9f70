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
    /// Counts the connections made, so that a late failure on an old one never forgets a new
    /// one.
    generations: std::sync::atomic::AtomicU64,
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
                generations: std::sync::atomic::AtomicU64::new(0),
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
        let generation = self
            .inner
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let mut current = self.lock();
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

    /// Forgets the connection a failed command used, unless another was made since. Server
    /// errors come back as values, not errors: `READONLY` (a master turned replica) counts too.
    fn after<T: Answers>(&self, generation: u64, result: RedisResult<T>) -> RedisResult<T> {
        let failure = match &result {
            Err(error) if is_outage(error) => Some(error.to_string()),
            Ok(answers) => answers.demoted(),
            Err(_) => None,
        };
        if let Some(failure) = failure {
            let mut current = self.lock();
            if current.as_ref().is_some_and(|c| c.generation == generation) {
                tracing::warn!(error = %failure, master = %self.inner.master, "the Sentinel master failed; asking the sentinels again");
                *current = None;
            }
        }
        result
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
}

/// What a command's or pipeline's answers say of the master they came from.
trait Answers {
    /// The server error that says it is no longer a master that takes writes, if any.
    fn demoted(&self) -> Option<String>;
}

impl Answers for Value {
    fn demoted(&self) -> Option<String> {
        match self {
            Value::ServerError(error)
                if matches!(
                    error.kind(),
                    Some(redis::ServerErrorKind::ReadOnly | redis::ServerErrorKind::MasterDown)
                ) =>
            {
                Some(error.to_string())
            }
            _ => None,
        }
    }
}

impl Answers for Vec<Value> {
    fn demoted(&self) -> Option<String> {
        self.iter().find_map(Answers::demoted)
    }
}
