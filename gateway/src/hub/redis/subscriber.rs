//! The wake-up listener: one dedicated RESP3 connection per instance, subscribed to
//! `<prefix>notify`, that turns each `PUBLISH`ed `b:<name>` / `q:<name>` into a wake-up of this
//! instance's waiters on that channel. It reconnects with back-off (100 ms doubling to 2 s),
//! pings every second to notice a dead peer, and wakes every local channel after each
//! (re)subscription, since wake-ups sent while it was away are lost.

use super::{parse_wake_payload, RedisHub};
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

pub(crate) struct Listener {
    client: Client,
    channel: String,
}

impl Listener {
    /// A listener for `channel` on the same server as `client`, speaking RESP3 (pushes on a
    /// multiplexed connection).
    pub(crate) fn new(client: &Client, channel: String) -> Result<Self, RedisError> {
        let info = client.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = Client::open(info.set_redis_settings(settings))?;
        Ok(Self { client, channel })
    }

    /// Runs until the hub is dropped.
    pub(crate) async fn run(self, hub: Weak<RedisHub>) {
        let mut backoff = BACKOFF_MIN;
        let mut logged = false;
        loop {
            match self.session(&hub).await {
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
    async fn session(&self, hub: &Weak<RedisHub>) -> Result<(), Session> {
        let (tx, mut rx) = mpsc::unbounded_channel::<PushInfo>();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_push_sender(tx);
        let connect = async {
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            conn.subscribe(&self.channel).await?;
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
