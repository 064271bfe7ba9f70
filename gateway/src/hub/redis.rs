//! The Redis backplane: channels shared by every Holdfast instance on one Redis. A broadcast
//! channel is a Stream whose ids are the cursors, a queue channel is a list, and one pub/sub
//! connection per instance carries the wake-ups. See docs/hub.md.

mod fetch;
mod queue;
mod scripts;
mod subscriber;
#[cfg(test)]
mod tests;

use super::cursor::Cursor;
use super::message::{PollOutcome, PollRequest, Published};
use super::queue_waiters::QueueWaiters;
use super::shards::Shards;
use super::{ChannelKey, HubError, OnWaiting, Settings, StartError};
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisError};
use bytes::Bytes;
use fetch::FetchCache;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// The longest any single Redis command may take before it counts as Redis being down.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a poll whose deadline has passed may still read what is there.
const READ_GRACE: Duration = Duration::from_millis(100);
/// How often the command connection is checked with `PING`.
const HEALTH_EVERY: Duration = Duration::from_millis(500);

pub(crate) struct RedisHub {
    conn: ConnectionManager,
    keys: Keys,
    settings: Settings,
    local: Shards<Local>,
    health: Health,
    runtime: tokio::runtime::Handle,
}

/// This instance's view of one channel while it has polls held here.
pub(crate) struct Local {
    /// Broadcast: woken on each wake-up for this channel.
    notify: Notify,
    /// Broadcast: reads shared by the waiters of one wake-up.
    fetches: FetchCache,
    /// Queue: the line of local pollers and the dispatcher's state.
    queue: Mutex<LocalQueue>,
}

#[derive(Default)]
struct LocalQueue {
    waiters: QueueWaiters,
    /// A dispatcher task is running for this channel.
    running: bool,
    /// Something may be in the Redis list: a wake-up came or a waiter arrived.
    pending: bool,
}

impl Local {
    fn new() -> Self {
        Self {
            notify: Notify::new(),
            fetches: FetchCache::default(),
            queue: Mutex::new(LocalQueue::default()),
        }
    }
}

/// Redis key names under the configured prefix.
struct Keys {
    prefix: String,
    notify: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            notify: format!("{prefix}notify"),
        }
    }

    fn data(&self, key: &ChannelKey) -> String {
        format!("{}{}", self.prefix, wake_payload(key))
    }

    fn queue_seq(&self, key: &ChannelKey) -> String {
        format!("{}qseq:{}", self.prefix, key.name)
    }
}

/// What `PUBLISH` carries and what the listener parses back: `b:<name>` or `q:<name>`.
fn wake_payload(key: &ChannelKey) -> String {
    match key.mode {
        conf::ChannelMode::Broadcast => format!("b:{}", key.name),
        conf::ChannelMode::Queue => format!("q:{}", key.name),
    }
}

fn parse_wake_payload(payload: &[u8]) -> Option<ChannelKey> {
    let text = std::str::from_utf8(payload).ok()?;
    let (mode, name) = text.split_once(':')?;
    let mode = match mode {
        "b" => conf::ChannelMode::Broadcast,
        "q" => conf::ChannelMode::Queue,
        _ => return None,
    };
    Some(ChannelKey::new(mode, name))
}

/// Up when both the command connection and the pub/sub listener are; published on a watch.
struct Health {
    commands: AtomicBool,
    listener: AtomicBool,
    up: watch::Sender<bool>,
}

impl Health {
    /// Records one side's state; returns true when the whole became up by it.
    fn set(&self, side: &AtomicBool, value: bool) -> bool {
        side.store(value, Ordering::Release);
        let up = self.commands.load(Ordering::Acquire) && self.listener.load(Ordering::Acquire);
        let mut became_up = false;
        self.up.send_if_modified(|current| {
            if *current == up {
                return false;
            }
            if up {
                tracing::info!("redis backplane is up");
            } else {
                tracing::warn!("redis backplane is down");
            }
            became_up = up;
            *current = up;
            true
        });
        became_up
    }

    fn is_up(&self) -> bool {
        *self.up.borrow()
    }
}

impl RedisHub {
    pub(crate) fn start(
        redis_conf: &conf::RedisBackplane,
        settings: Settings,
        runtime: &tokio::runtime::Handle,
    ) -> Result<(Arc<Self>, Vec<AbortHandle>), StartError> {
        let url_error = |e: RedisError| StartError::RedisUrl(e.to_string());
        let client = Client::open(redis_conf.url.as_str()).map_err(url_error)?;
        // Fail fast instead of the manager's default of retrying for seconds: callers have
        // deadlines, and the manager reconnects again on the next command anyway.
        let manager_config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        let conn = {
            // The manager spawns its connection driver on the current runtime.
            let _entered = runtime.enter();
            ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
                .map_err(url_error)?
        };
        let (up, _) = watch::channel(false);
        let hub = Arc::new(Self {
            conn,
            keys: Keys::new(&redis_conf.prefix),
            settings,
            local: Shards::new(),
            health: Health {
                commands: AtomicBool::new(false),
                listener: AtomicBool::new(false),
                up,
            },
            runtime: runtime.clone(),
        });
        let listener =
            subscriber::Listener::new(&client, hub.keys.notify.clone()).map_err(url_error)?;
        let tasks = vec![
            runtime
                .spawn(listener.run(Arc::downgrade(&hub)))
                .abort_handle(),
            runtime
                .spawn(health_loop(Arc::downgrade(&hub)))
                .abort_handle(),
        ];
        Ok((hub, tasks))
    }

    pub(crate) fn up_changes(&self) -> watch::Receiver<bool> {
        self.health.up.subscribe()
    }

    pub(crate) fn channel_count(&self) -> usize {
        self.local.len()
    }

    /// Forgets local channels nobody waits on.
    pub(crate) fn sweep(&self) {
        self.local.sweep(|_, _| true);
    }

    fn check_up(&self) -> Result<(), HubError> {
        if self.health.is_up() {
            Ok(())
        } else {
            Err(HubError::Unavailable("redis is not reachable".into()))
        }
    }

    /// Runs one Redis call, bounded by `COMMAND_TIMEOUT`; a connection failure or no answer
    /// marks the command side down (the health loop brings it back).
    async fn call<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, HubError> {
        let until = Instant::now() + COMMAND_TIMEOUT;
        match tokio::time::timeout_at(until, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) if is_connection_error(&error) => {
                self.health.set(&self.health.commands, false);
                Err(HubError::Unavailable(error.to_string()))
            }
            Ok(Err(error)) => Err(HubError::Corrupt(error.to_string())),
            Err(_) => {
                self.health.set(&self.health.commands, false);
                Err(HubError::Unavailable("redis did not answer in time".into()))
            }
        }
    }

    pub(crate) async fn publish(
        &self,
        key: &ChannelKey,
        body: Bytes,
        content_type: Option<Arc<str>>,
        event: Option<Arc<str>>,
    ) -> Result<Published, HubError> {
        self.check_up()?;
        let now_ms = unix_ms(SystemTime::now());
        let mut conn = self.conn.clone();
        let (id, listeners): (String, i64) = match key.mode {
            conf::ChannelMode::Broadcast => {
                let ttl = self.settings.buffer_age + self.settings.idle_expiry;
                let invocation = scripts::publish_broadcast(
                    &self.keys.data(key),
                    self.settings.buffer_messages.max(1),
                    millis(self.settings.buffer_age),
                    millis(ttl).max(1),
                    &self.keys.notify,
                    &wake_payload(key),
                    &body,
                    content_type.as_deref(),
                    event.as_deref(),
                    now_ms,
                );
                self.call(invocation.invoke_async(&mut conn)).await?
            }
            conf::ChannelMode::Queue => {
                let item = scripts::encode_queue_item(
                    None,
                    now_ms,
                    content_type.as_deref(),
                    event.as_deref(),
                    &body,
                );
                let invocation = scripts::publish_queue(
                    &self.keys.data(key),
                    &self.keys.queue_seq(key),
                    self.settings.queue_max_messages,
                    &self.keys.notify,
                    &wake_payload(key),
                    &item,
                );
                self.call(invocation.invoke_async(&mut conn)).await?
            }
        };
        if listeners < 0 {
            return Err(HubError::QueueFull {
                max: self.settings.queue_max_messages,
            });
        }
        let cursor =
            Cursor::parse(&id).map_err(|_| HubError::Corrupt(format!("message id {id:?}")))?;
        Ok(Published {
            cursor,
            delivered_to: usize::try_from(listeners).unwrap_or(0),
        })
    }

    pub(crate) async fn poll(
        self: &Arc<Self>,
        key: &ChannelKey,
        request: PollRequest,
        deadline: Instant,
        on_waiting: OnWaiting<'_>,
    ) -> Result<PollOutcome, HubError> {
        self.check_up()?;
        let local = self.local.get_or_create(key, Local::new);
        match key.mode {
            conf::ChannelMode::Broadcast => {
                self.poll_broadcast(key, &local, request, deadline, on_waiting)
                    .await
            }
            conf::ChannelMode::Queue => {
                self.poll_queue(key, local, request, deadline, on_waiting)
                    .await
            }
        }
    }

    async fn poll_broadcast(
        &self,
        key: &ChannelKey,
        local: &Local,
        request: PollRequest,
        deadline: Instant,
        mut on_waiting: OnWaiting<'_>,
    ) -> Result<PollOutcome, HubError> {
        let stream = self.keys.data(key);
        let mut cursor = request.cursor;
        loop {
            // Registered before reading, so a wake-up during the read is not lost.
            let notified = local.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Reads end with the poll's deadline (a little later if it has passed, so a poll
            // with no wait still sees what is there) and are never cut short otherwise.
            let read_until = deadline.max(Instant::now() + READ_GRACE);
            let from = match cursor {
                Some(cursor) => cursor,
                None => {
                    let Ok(read) =
                        tokio::time::timeout_at(read_until, Box::pin(self.read(&stream, None, 0)))
                            .await
                    else {
                        return Ok(PollOutcome::Timeout { cursor });
                    };
                    *cursor.get_or_insert(read?.start(request.start))
                }
            };
            let cell = local.fetches.cell(from, request.limit);
            // The reads are boxed: they are done before the wait, and inline they would size
            // the state every held poll keeps while it waits.
            let shared_read =
                Box::pin(cell.get_or_try_init(|| self.read(&stream, Some(from), request.limit)));
            let Ok(read) = tokio::time::timeout_at(read_until, shared_read).await else {
                return Ok(PollOutcome::Timeout { cursor });
            };
            let mut read = read?.clone();
            if read.check_cursor(from).is_err() {
                // A shared read may predate the message this cursor names (its wake-up still
                // on the way): only a fresh read refuses the cursor.
                let Ok(fresh) = tokio::time::timeout_at(
                    read_until,
                    Box::pin(self.read(&stream, Some(from), request.limit)),
                )
                .await
                else {
                    return Ok(PollOutcome::Timeout { cursor });
                };
                read = fresh?;
                read.check_cursor(from)?;
            }
            if let Some(oldest) = read.gone(from) {
                return Ok(PollOutcome::Gone { oldest });
            }
            if let Some(last) = read.messages.last() {
                return Ok(PollOutcome::Messages {
                    cursor: last.id,
                    messages: read.messages.clone(),
                });
            }
            // Only now is the place taken: a poll without a cursor starts where its first
            // read found the stream's end.
            on_waiting.tell();
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(PollOutcome::Timeout { cursor }),
            }
        }
    }

    /// One `READ` script call: the stream's trim state and up to `limit` entries after `after`.
    async fn read(
        &self,
        stream: &str,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Arc<scripts::StreamRead>, HubError> {
        let mut conn = self.conn.clone();
        let value: ::redis::Value = self
            .call(scripts::read(stream, after, limit).invoke_async(&mut conn))
            .await?;
        scripts::StreamRead::decode(value)
            .map(Arc::new)
            .map_err(HubError::Corrupt)
    }

    /// A wake-up from the listener (or a recovery): wake the local waiters of that channel.
    fn wake(self: &Arc<Self>, key: &ChannelKey) {
        if let Some(local) = self.local.get(key) {
            self.wake_local(key, &local);
        }
    }

    fn wake_local(self: &Arc<Self>, key: &ChannelKey, local: &Arc<Local>) {
        match key.mode {
            conf::ChannelMode::Broadcast => {
                local.fetches.clear();
                local.notify.notify_waiters();
            }
            conf::ChannelMode::Queue => self.kick(key, local),
        }
    }

    /// After a reconnect: wake-ups may have been missed, so every local channel re-reads.
    fn wake_all(self: &Arc<Self>) {
        for (key, local) in self.local.all() {
            self.wake_local(&key, &local);
        }
    }
}

/// Checks the command connection every `HEALTH_EVERY`; wakes every local channel when Redis
/// comes back.
async fn health_loop(hub: std::sync::Weak<RedisHub>) {
    loop {
        let Some(strong) = hub.upgrade() else { return };
        let mut conn = strong.conn.clone();
        let ping: Result<String, HubError> = strong
            .call(::redis::cmd("PING").query_async(&mut conn))
            .await;
        if strong.health.set(&strong.health.commands, ping.is_ok()) {
            strong.wake_all();
        }
        drop(strong);
        tokio::time::sleep(HEALTH_EVERY).await;
    }
}

fn is_connection_error(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
