//! Wake-ups. On one Redis (or Sentinel's master) one dedicated RESP3 connection per instance,
//! subscribed to `<prefix>notify`, turns each `PUBLISH`ed `b:<name>` / `q:<name>` into a wake-up
//! of this instance's waiters on that channel. It reconnects with back-off (100 ms doubling to
//! 2 s; with Sentinel, to the master the sentinels name then), pings every second to notice a
//! dead peer, and wakes every local channel after each (re)subscription, since wake-ups sent
//! while it was away are lost.
//!
//! In a cluster each channel has a shard channel: the hub subscribes (`SSUBSCRIBE`) to those of
//! the channels it holds polls on, and this task relays what arrives. The cluster client
//! subscribes again by itself after a reconnect or a topology change (each confirmation wakes
//! that channel here); when a slot moves, its master drops the subscription and the hub makes it
//! again on the new master.

use super::{parse_wake_payload, RedisHub};
use crate::backplane::{Follower, Link};
use ::redis::cluster::{ClusterClientBuilder, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{
    AsyncConnectionConfig, Client, ProtocolVersion, PushInfo, PushKind, RedisError, Value,
};
use std::sync::Weak;
use std::time::Duration;
use tokio::sync::mpsc;

const PING_EVERY: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Where this instance hears of publishes.
pub(crate) enum Wakes {
    /// One Redis, or Sentinel's master: one subscription to the notify channel.
    Notify(Listener),
    /// A cluster: shard subscriptions per channel, on a connection of their own.
    Shards {
        conn: ClusterConnection,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
    },
}

impl Wakes {
    /// Lazy like the command link: nothing is dialled here.
    pub(crate) fn new(redis: &conf::RedisBackplane, link: &Link) -> Result<Self, RedisError> {
        match (redis.servers(), link) {
            (conf::RedisServers::Cluster(nodes), _) => {
                let (tx, pushes) = mpsc::unbounded_channel::<PushInfo>();
                let client = ClusterClientBuilder::new(nodes)
                    .use_protocol(ProtocolVersion::RESP3)
                    .build()?;
                let config = ClusterConfig::new()
                    .set_connection_timeout(TIMEOUT)
                    .set_response_timeout(TIMEOUT * 2)
                    .set_push_sender(tx);
                Ok(Wakes::Shards {
                    conn: client.get_pending_async_connection_with_config(config),
                    pushes,
                })
            }
            (_, Link::Sentinel(follower)) => Ok(Wakes::Notify(Listener {
                source: Source::Sentinel(follower.clone()),
            })),
            (conf::RedisServers::One(url), _) => Ok(Wakes::Notify(Listener {
                source: Source::Client(resp3(&Client::open(url)?)?),
            })),
            (conf::RedisServers::Sentinel { .. }, _) => Err(RedisError::from((
                ::redis::ErrorKind::Client,
                "a Sentinel backplane needs a Sentinel link",
            ))),
        }
    }

    /// The connection the hub subscribes shard channels on, in a cluster.
    pub(crate) fn shard_subscriptions(&self) -> Option<ClusterConnection> {
        match self {
            Wakes::Shards { conn, .. } => Some(conn.clone()),
            Wakes::Notify(_) => None,
        }
    }

    /// Relays wake-ups until the hub is dropped.
    pub(crate) async fn run(self, notify: String, hub: Weak<RedisHub>) {
        match self {
            Wakes::Notify(listener) => listener.run(notify, hub).await,
            Wakes::Shards { pushes, .. } => relay_shards(pushes, hub).await,
        }
    }
}

/// The cluster's pushes: messages wake their channel, subscription changes are followed.
async fn relay_shards(mut pushes: mpsc::UnboundedReceiver<PushInfo>, hub: Weak<RedisHub>) {
    if let Some(strong) = hub.upgrade() {
        strong.health.set(&strong.health.listener, true);
    }
    while let Some(push) = pushes.recv().await {
        let Some(strong) = hub.upgrade() else { return };
        let channel = push.data.first().and_then(payload);
        match push.kind {
            PushKind::SMessage => {
                if let Some(key) = push
                    .data
                    .get(1)
                    .and_then(payload)
                    .and_then(parse_wake_payload)
                {
                    strong.wake(&key);
                }
            }
            PushKind::SSubscribe => {
                if let Some(channel) = channel {
                    strong.resubscribed(channel);
                }
            }
            PushKind::SUnsubscribe => {
                if let Some(channel) = channel {
                    strong.resubscribe(channel);
                }
            }
            _ => {}
        }
    }
}

/// The same server as `client`, speaking RESP3 (pushes on a multiplexed connection).
fn resp3(client: &Client) -> Result<Client, RedisError> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Client::open(info.set_redis_settings(settings))
}

enum Source {
    Client(Client),
    Sentinel(Follower),
}

pub(crate) struct Listener {
    source: Source,
}

impl Listener {
    /// Runs until the hub is dropped.
    async fn run(self, channel: String, hub: Weak<RedisHub>) {
        let mut backoff = BACKOFF_MIN;
        let mut logged = false;
        loop {
            match self.session(&channel, &hub).await {
                Ok(()) => return, // the hub is gone
                Err(Session::Lost(error)) => {
                    tracing::warn!(%error, "redis wake-up listener lost its connection");
                    backoff = BACKOFF_MIN;
                    logged = false;
                }
                Err(Session::NoConnect(error)) => {
                    if !logged {
                        tracing::warn!(%error, "redis wake-up listener cannot connect; retrying");
                        logged = true;
                    }
                }
            }
            match hub.upgrade() {
                Some(strong) => {
                    strong.health.set(&strong.health.listener, false);
                }
                None => return,
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One connection's life: connect, subscribe, relay wake-ups until it breaks.
    async fn session(&self, channel: &str, hub: &Weak<RedisHub>) -> Result<(), Session> {
        let client = match &self.source {
            Source::Client(client) => client.clone(),
            // Asked afresh on every session: the connection the command side holds may still
            // point at the old master (or at it come back as an orphan, before the sentinels
            // make it a replica), and a listener there would hear nothing.
            Source::Sentinel(follower) => match follower.master_client().await {
                Ok(client) => resp3(&client).map_err(|e| Session::NoConnect(e.to_string()))?,
                Err(error) => return Err(Session::NoConnect(error.to_string())),
            },
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<PushInfo>();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_push_sender(tx);
        let connect = async {
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            conn.subscribe(channel).await?;
            Ok::<_, RedisError>(conn)
        };
        let mut conn = match tokio::time::timeout(TIMEOUT * 2, connect).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(error)) => return Err(Session::NoConnect(error.to_string())),
            Err(_) => return Err(Session::NoConnect("timed out".into())),
        };
        {
            let Some(strong) = hub.upgrade() else {
                return Ok(());
            };
            tracing::info!(server = %client.get_connection_info().addr(), "redis wake-up listener subscribed");
            strong.health.set(&strong.health.listener, true);
            // Anything published while we were away woke nobody here: look again.
            strong.wake_all();
        }
        let mut pings = tokio::time::interval(PING_EVERY);
        pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                push = rx.recv() => {
                    let Some(push) = push else { return Err(Session::Lost("push channel closed".into())) };
                    match push.kind {
                        PushKind::Message => {
                            let Some(strong) = hub.upgrade() else { return Ok(()) };
                            if let Some(key) = push.data.get(1).and_then(payload).and_then(parse_wake_payload) {
                                strong.wake(&key);
                            }
                        }
                        PushKind::Disconnection => return Err(Session::Lost("disconnected".into())),
                        _ => {}
                    }
                }
                _ = pings.tick() => {
                    if hub.strong_count() == 0 {
                        return Ok(());
                    }
                    let ping = tokio::time::timeout(TIMEOUT, ::redis::cmd("PING").query_async::<Value>(&mut conn)).await;
                    match ping {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => return Err(Session::Lost(error.to_string())),
                        Err(_) => return Err(Session::Lost("ping timed out".into())),
                    }
                }
            }
        }
    }
}

enum Session {
    NoConnect(String),
    Lost(String),
}

fn payload(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}
