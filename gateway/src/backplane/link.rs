//! One connection to the backplane's Redis, of whichever shape the config names. It is a
//! `ConnectionLike`, so scripts, pipelines and typed commands run on it unchanged.

use super::sentinel::Follower;
use super::KeyShape;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{
    Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value,
};
use std::time::Duration;

/// How long dialling a server may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a link could not be made or checked: each names what the operator must fix.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Url(String),
    #[error("no node of the cluster answers ({0}); check backplane.redis.cluster")]
    NoNode(String),
    #[error("no sentinel answers ({0}); check backplane.redis.sentinel.nodes")]
    NoSentinel(String),
    #[error("the sentinels know no master named `{0}`; check backplane.redis.sentinel.master")]
    UnknownMaster(String),
}

/// A connection to the backplane's Redis. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub enum Link {
    /// One server, reconnected on failure.
    One(ConnectionManager),
    /// A connection of its own to one server (for a blocking read).
    Own(MultiplexedConnection),
    /// Redis Cluster: routed by key slot, following `MOVED`/`ASK` and topology changes.
    Cluster(ClusterConnection),
    /// Redis Cluster, for writes that must not run twice: sent again only after `MOVED` (which
    /// says it did not run), never after a broken connection (after which it may have).
    ClusterOnce(ClusterConnection),
    /// The master Sentinel names, found again after a failover.
    Sentinel(Follower),
}

impl Link {
    /// A link that dials nothing until its first command. Call it inside the runtime that should
    /// drive the connection (a runtime that lives as long as the process).
    pub fn lazy(redis: &conf::RedisBackplane, response: Duration) -> Result<Self, LinkError> {
        Self::lazy_with(redis, response, Resend::Redirected)
    }

    /// A link for writes that must not happen twice (a publish, a pop): in a cluster, a
    /// command is never sent again, not even after `MOVED`, since a command whose connection
    /// broke may have run. Elsewhere the same as [`Link::lazy`].
    pub fn lazy_for_writes(
        redis: &conf::RedisBackplane,
        response: Duration,
    ) -> Result<Self, LinkError> {
        Self::lazy_with(redis, response, Resend::Never)
    }

    fn lazy_with(
        redis: &conf::RedisBackplane,
        response: Duration,
        resend: Resend,
    ) -> Result<Self, LinkError> {
        let url_error = |error: RedisError| LinkError::Url(error.to_string());
        match redis.servers() {
            conf::RedisServers::One(url) => {
                let client = redis::Client::open(url).map_err(url_error)?;
                // Fail fast instead of the manager's default of retrying for seconds: callers
                // have deadlines, and the manager reconnects again on the next command anyway.
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500))
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(response));
                ConnectionManager::new_lazy_with_config(client, config)
                    .map(Link::One)
                    .map_err(url_error)
            }
            conf::RedisServers::Cluster(nodes) => {
                let client = cluster_client(&nodes, resend).map_err(url_error)?;
                let config = ClusterConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(response);
                let conn = client.get_pending_async_connection_with_config(config);
                Ok(match resend {
                    Resend::Redirected => Link::Cluster(conn),
                    Resend::Never => Link::ClusterOnce(conn),
                })
            }
            conf::RedisServers::Sentinel { master, nodes } => {
                Follower::new(master, &nodes, response).map(Link::Sentinel)
            }
        }
    }

    /// Dials the servers once and asks each shape's own question: at start and at reload, so
    /// that a cluster or Sentinel config naming no live server is refused with an error that
    /// says which. One Redis is not dialled: it may be down at start, and the hub reports it and
    /// waits for it.
    pub async fn check(redis: &conf::RedisBackplane) -> Result<(), LinkError> {
        let url_error = |error: RedisError| LinkError::Url(error.to_string());
        match redis.servers() {
            conf::RedisServers::One(_) => Ok(()),
            conf::RedisServers::Cluster(nodes) => {
                let client = cluster_client(&nodes, Resend::Redirected).map_err(url_error)?;
                let config = ClusterConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(CONNECT_TIMEOUT);
                match tokio::time::timeout(
                    CONNECT_TIMEOUT * 3,
                    client.get_async_connection_with_config(config),
                )
                .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(error)) => Err(LinkError::NoNode(error.to_string())),
                    Err(_) => Err(LinkError::NoNode("timed out".into())),
                }
            }
            conf::RedisServers::Sentinel { master, nodes } => {
                Follower::new(master, &nodes, CONNECT_TIMEOUT)?
                    .master_client()
                    .await
                    .map(|_| ())
            }
        }
    }

    /// How keys must be named on this link.
    pub fn key_shape(&self) -> KeyShape {
        match self {
            Link::Cluster(_) | Link::ClusterOnce(_) => KeyShape::Tagged,
            _ => KeyShape::Plain,
        }
    }

    /// A connection of its own, of the same shape, for commands that block up to `wait`
    /// (`XREAD BLOCK` holds the connection it is sent on).
    pub async fn own(&self, redis: &conf::RedisBackplane, wait: Duration) -> RedisResult<Link> {
        let response = wait + Duration::from_secs(1);
        match self {
            Link::Cluster(_) | Link::ClusterOnce(_) => {
                let conf::RedisServers::Cluster(nodes) = redis.servers() else {
                    return Err(RedisError::from((ErrorKind::Client, "not a cluster")));
                };
                let config = ClusterConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(response);
                let client = cluster_client(&nodes, Resend::Redirected)?;
                Ok(Link::Cluster(
                    client.get_async_connection_with_config(config).await?,
                ))
            }
            Link::Sentinel(follower) => Ok(Link::Own(follower.own(response).await?)),
            Link::One(_) | Link::Own(_) => {
                let conf::RedisServers::One(url) = redis.servers() else {
                    return Err(RedisError::from((ErrorKind::Client, "not one server")));
                };
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(response));
                let conn = redis::Client::open(url)?
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok(Link::Own(conn))
            }
        }
    }

    /// `PING`, to every master of a cluster: the backplane is up when all of them answer.
    pub async fn ping(&mut self) -> RedisResult<()> {
        let ping = redis::cmd("PING");
        match self {
            Link::Cluster(conn) | Link::ClusterOnce(conn) => {
                let every_master = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::AllSucceeded),
                ));
                conn.route_command(ping, every_master).await.map(drop)
            }
            other => ping.query_async::<Value>(other).await.map(drop),
        }
    }
}

/// When the cluster client may send a command again.
#[derive(Clone, Copy)]
enum Resend {
    /// After a redirect (`MOVED`, `ASK`) or a broken connection: for reads and for writes
    /// that are the same done twice.
    Redirected,
    /// Never: the caller answers 503 and the next command finds the new slot map.
    Never,
}

fn cluster_client(nodes: &[&str], resend: Resend) -> RedisResult<redis::cluster::ClusterClient> {
    // Few resends: callers have deadlines, and a failover is waited out by the health check,
    // not by commands retrying inside the client.
    let retries = match resend {
        Resend::Redirected => 2,
        Resend::Never => 0,
    };
    ClusterClientBuilder::new(nodes.to_vec())
        .retries(retries)
        .min_retry_wait(50)
        .max_retry_wait(500)
        .build()
}

/// True when an error means the backplane cannot be used now, rather than that a command was
/// wrong: a lost or refused connection, no answer, a cluster mid-failover, a master that became
/// a replica.
pub fn is_outage(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::ClusterDown
                    | ServerErrorKind::ReadOnly
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::BusyLoading
            ) | ErrorKind::ClusterConnectionNotFound
                | ErrorKind::MasterNameNotFoundBySentinel
        )
}

/// True when a cluster sent a command elsewhere or asked for it again later (`MOVED`, `ASK`,
/// `TRYAGAIN` past their resends): that part of the keyspace is moving, the command did not
/// run, and the rest of the backplane is fine.
pub fn is_moving(error: &RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Server(
            ServerErrorKind::Moved | ServerErrorKind::Ask | ServerErrorKind::TryAgain
        )
    )
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::One(conn) => conn.req_packed_command(cmd),
            Link::Own(conn) => conn.req_packed_command(cmd),
            Link::Cluster(conn) => conn.req_packed_command(cmd),
            Link::ClusterOnce(conn) => Box::pin(super::once::send_once(conn, cmd)),
            Link::Sentinel(follower) => Box::pin(follower.command(cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::One(conn) => conn.req_packed_commands(pipeline, offset, count),
            Link::Own(conn) => conn.req_packed_commands(pipeline, offset, count),
            Link::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Link::ClusterOnce(conn) => Box::pin(super::once::send_pipeline_once(
                conn, pipeline, offset, count,
            )),
            Link::Sentinel(follower) => Box::pin(follower.commands(pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::One(conn) => conn.get_db(),
            Link::Own(conn) => conn.get_db(),
            Link::Cluster(conn) | Link::ClusterOnce(conn) => conn.get_db(),
            Link::Sentinel(_) => 0,
        }
    }
}
