//! The Redis backplane: channels shared by every Holdfast instance on one Redis. A broadcast
//! channel is a Stream whose ids are the cursors, a queue channel is a list, and one pub/sub
//! connection per instance carries the wake-ups. See docs/hub.md.

mod fetch;
mod queue;
mod scripts;
mod sharded;
mod subscriber;
#[cfg(test)]
mod tests;

use super::cursor::Cursor;
use super::message::{PollOutcome, PollRequest, Published};
use super::queue_waiters::QueueWaiters;
use super::shards::Shards;
use super::{ChannelKey, HubError, OnWaiting, Settings, StartError};
use crate::backplane::{is_moving, is_outage, KeyShape, Link};
use ::redis::RedisError;
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
/// How often a shard channel whose slot moved is subscribed to again before giving up.
const RESUBSCRIBE_ATTEMPTS: u32 = 40;
/// How often the command connection is checked with `PING`.
const HEALTH_EVERY: Duration = Duration::from_millis(500);

pub(crate) struct RedisHub {
    /// For reads.
    conn: Link,
    /// For writes that must not run twice: publishes (and their `WAIT`), queue pops and
    /// give-backs.
    writes: Link,
    keys: Keys,
    settings: Settings,
    /// With `durability: replicated`, how long a publish waits for a replica.
    replicated_within: Option<Duration>,
    /// In a cluster: the connection that holds this instance's shard subscriptions.
    shard_subscriptions: Option<::redis::cluster_async::ClusterConnection>,
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
    /// In a cluster: this instance is subscribed to the channel's shard channel.
    subscribed: AtomicBool,
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
            subscribed: AtomicBool::new(false),
        }
    }
}

/// Redis key names under the configured prefix. On one Redis every wake-up goes to one
/// pub/sub channel; in a cluster each channel has a shard channel beside its keys (one hash tag),
/// so a publish wakes only the instances holding polls on that channel, through one shard.
struct Keys {
    prefix: String,
    shape: KeyShape,
    notify: String,
}

impl Keys {
    fn new(prefix: &str, shape: KeyShape) -> Self {
        Self {
            prefix: prefix.to_owned(),
            shape,
            notify: format!("{prefix}notify"),
        }
    }

    fn data(&self, key: &ChannelKey) -> String {
        self.shape.key(&self.prefix, &wake_payload(key), "")
    }

    fn queue_seq(&self, key: &ChannelKey) -> String {
        match self.shape {
            KeyShape::Plain => format!("{}qseq:{}", self.prefix, key.name),
            KeyShape::Tagged => self.shape.key(&self.prefix, &wake_payload(key), ":seq"),
        }
    }

    /// The wake-up command and the channel it publishes on.
    fn wake(&self, key: &ChannelKey) -> (&'static str, String) {
        match self.shape {
            KeyShape::Plain => ("PUBLISH", self.notify.clone()),
            KeyShape::Tagged => ("SPUBLISH", self.shard_channel(key)),
        }
    }

    fn shard_channel(&self, key: &ChannelKey) -> String {
        self.shape
            .key(&self.prefix, &wake_payload(key), SHARD_SUFFIX)
    }

    /// The channel a shard channel name wakes, for a subscription change the server sent.
    fn channel_of(&self, shard_channel: &[u8]) -> Option<ChannelKey> {
        let name = std::str::from_utf8(shard_channel).ok()?;
        let tagged = name.strip_prefix(self.prefix.as_str())?.strip_prefix('{')?;
        let payload = tagged.strip_suffix(SHARD_SUFFIX)?.strip_suffix('}')?;
        parse_wake_payload(payload.as_bytes())
    }
}

/// What follows a channel's hash tag in its shard channel's name.
const SHARD_SUFFIX: &str = ":wake";

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
    /// When a command last failed as an outage would. The health check's `PING` may pass
    /// while commands still fail (in a cluster, once the client has dropped a dead master but
    /// before its replica is promoted): the backplane counts as up only after a quiet spell.
    last_outage: Mutex<Option<Instant>>,
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

    fn outage(&self) {
        *super::shards::lock(&self.last_outage) = Some(Instant::now());
        self.set(&self.commands, false);
    }

    /// No command has failed as an outage would for `spell`.
    fn quiet_for(&self, spell: Duration) -> bool {
        super::shards::lock(&self.last_outage).is_none_or(|at| at.elapsed() >= spell)
    }
}

impl RedisHub {
    pub(crate) fn start(
        redis_conf: &conf::RedisBackplane,
        settings: Settings,
        runtime: &tokio::runtime::Handle,
    ) -> Result<(Arc<Self>, Vec<AbortHandle>), StartError> {
        let link_error = |e: crate::backplane::LinkError| StartError::Redis(e.to_string());
        let (conn, writes, wakes) = {
            // The connections' drivers run on the hub's runtime.
            let _entered = runtime.enter();
            let conn = Link::lazy(redis_conf, COMMAND_TIMEOUT).map_err(link_error)?;
            let writes = match &conn {
                Link::Cluster(_) => {
                    Link::lazy_for_writes(redis_conf, COMMAND_TIMEOUT).map_err(link_error)?
                }
                _ => conn.clone(),
            };
            let wakes = subscriber::Wakes::new(redis_conf, &conn)
                .map_err(|e| StartError::Redis(e.to_string()))?;
            (conn, writes, wakes)
        };
        let (up, _) = watch::channel(false);
        let hub = Arc::new(Self {
            keys: Keys::new(&redis_conf.prefix, conn.key_shape()),
            conn,
            writes,
            settings,
            replicated_within: (redis_conf.durability == conf::Durability::Replicated)
                .then(|| redis_conf.replication_timeout.get()),
            shard_subscriptions: wakes.shard_subscriptions(),
            local: Shards::new(),
            health: Health {
                commands: AtomicBool::new(false),
                listener: AtomicBool::new(false),
                up,
                last_outage: Mutex::new(None),
            },
            runtime: runtime.clone(),
        });
        let tasks = vec![
            runtime
                .spawn(wakes.run(hub.keys.notify.clone(), Arc::downgrade(&hub)))
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

    /// Forgets local channels nobody waits on (in a cluster, with their shard subscriptions).
    pub(crate) fn sweep(&self) {
        let mut gone = Vec::new();
        self.local.sweep(|key, local| {
            if local.subscribed.load(Ordering::Acquire) {
                gone.push(self.keys.shard_channel(key));
            }
            true
        });
        self.unsubscribe(gone);
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
            Ok(Err(error)) if is_outage(&error) => {
                self.health.outage();
                Err(HubError::Unavailable(error.to_string()))
            }
            // One slot moving is no outage of the rest: this call is refused, nothing else.
            Ok(Err(error)) if is_moving(&error) => Err(HubError::Unavailable(error.to_string())),
            Ok(Err(error)) => Err(HubError::Corrupt(error.to_string())),
            Err(_) => {
                self.health.outage();
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
        let call = match key.mode {
            conf::ChannelMode::Broadcast => {
                let ttl = self.settings.buffer_age + self.settings.idle_expiry;
                let (command, channel) = self.keys.wake(key);
                scripts::publish_broadcast(
                    &self.keys.data(key),
                    self.settings.buffer_messages.max(1),
                    millis(self.settings.buffer_age),
                    millis(ttl).max(1),
                    (command, &channel),
                    &wake_payload(key),
                    &body,
                    content_type.as_deref(),
                    event.as_deref(),
                    now_ms,
                )
            }
            conf::ChannelMode::Queue => {
                let item = scripts::encode_queue_item(
                    None,
                    now_ms,
                    content_type.as_deref(),
                    event.as_deref(),
                    &body,
                );
                let (command, channel) = self.keys.wake(key);
                scripts::publish_queue(
                    &self.keys.data(key),
                    &self.keys.queue_seq(key),
                    self.settings.queue_max_messages,
                    (command, &channel),
                    &wake_payload(key),
                    &item,
                )
            }
        };
        let (id, listeners) = self.run_publish(&call).await?;
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

    /// Runs a publish script. With `durability: replicated` a `WAIT 1` follows it in the same
    /// pipeline, so it goes on the same connection, to the node that ran the script, and
    /// counts the replicas that have this write. The publish is acknowledged only once a replica
    /// has it; when none does in time the client is told 503, though the message may still be
    /// delivered: a publisher that tries again may publish it twice, but never loses one it was
    /// told is stored.
    async fn run_publish(&self, call: &scripts::ScriptCall) -> Result<(String, i64), HubError> {
        let mut pipe = ::redis::pipe();
        pipe.add_command(call.evalsha.clone());
        if let Some(within) = self.replicated_within {
            pipe.cmd("WAIT").arg(1).arg(millis(within).max(1));
        }
        let mut conn = self.writes.clone();
        let answers = self
            .call(async {
                // `NOSCRIPT` (a script this server has not seen, as on a replica just promoted)
                // comes back as the pipeline's error or as its first answer.
                let no_script = |error: &::redis::RedisError| {
                    error.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::NoScript)
                };
                let sent: Result<Vec<::redis::Value>, _> = pipe.query_async(&mut conn).await;
                let missing = match &sent {
                    Err(error) => no_script(error),
                    Ok(answers) => answers
                        .first()
                        .cloned()
                        .is_some_and(|first| first.extract_error().is_err_and(|e| no_script(&e))),
                };
                if missing {
                    call.script.load_async(&mut conn).await?;
                    return pipe.query_async(&mut conn).await;
                }
                let answers = sent?;
                if let Some(first) = answers.first() {
                    first.clone().extract_error()?;
                }
                Ok(answers)
            })
            .await?;
        let mut answers = answers.into_iter();
        let script = answers.next().unwrap_or(::redis::Value::Nil);
        let published: (String, i64) = ::redis::from_redis_value(script)
            .map_err(|error| HubError::Corrupt(error.to_string()))?;
        if let Some(within) = self.replicated_within {
            let replicas: i64 = answers
                .next()
                .map(::redis::from_redis_value)
                .transpose()
                .map_err(|error| HubError::Unavailable(error.to_string()))?
                .unwrap_or(0);
            // A full queue wrote nothing, so there is nothing to wait for.
            if replicas < 1 && published.1 >= 0 {
                return Err(HubError::Unreplicated(format!("waited {within:?}")));
            }
        }
        Ok(published)
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
        if self.shard_subscriptions.is_some() && !local.subscribed.load(Ordering::Acquire) {
            // Boxed, as the look is: inline, the subscription's state would size every held
            // poll. Only a cluster's first poll of a channel here pays for it.
            Box::pin(self.subscribe(key, &local)).await?;
        }
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
        let mut held = false;
        loop {
            // Registered before reading, so a wake-up during the read is not lost.
            let notified = local.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Reads end with the poll's deadline (a little later if it has passed, so a poll
            // with no wait still sees what is there) and are never cut short otherwise.
            let read_until = deadline.max(Instant::now() + READ_GRACE);
            // Boxed: the look is done before the wait, and inline its reads would size the
            // state every held poll keeps while it waits.
            match Box::pin(self.look(&stream, local, &mut cursor, request, read_until)).await {
                Ok(Some(outcome)) => return Ok(outcome),
                Ok(None) => {}
                Err(HubError::Unavailable(_)) if held => {
                    // The backplane went away (a failover) while this poll was held: it stays
                    // held, and looks again from its cursor when the backplane is back.
                    if !Box::pin(self.wait_up(deadline)).await {
                        return Ok(PollOutcome::Timeout { cursor });
                    }
                    continue;
                }
                Err(error) => return Err(error),
            }
            // Only now is the place taken: a poll without a cursor starts where its first
            // read found the stream's end.
            on_waiting.tell();
            held = true;
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(PollOutcome::Timeout { cursor }),
            }
        }
    }

    /// One look at the stream after `cursor` (which a poll without one takes from the stream's
    /// end): the outcome when there is one, `None` when the poll should wait.
    async fn look(
        &self,
        stream: &str,
        local: &Local,
        cursor: &mut Option<Cursor>,
        request: PollRequest,
        read_until: Instant,
    ) -> Result<Option<PollOutcome>, HubError> {
        let timeout = |cursor: Option<Cursor>| Ok(Some(PollOutcome::Timeout { cursor }));
        let from = match *cursor {
            Some(cursor) => cursor,
            None => {
                let Ok(read) =
                    tokio::time::timeout_at(read_until, self.read(stream, None, 0)).await
                else {
                    return timeout(*cursor);
                };
                *cursor.get_or_insert(read?.start(request.start))
            }
        };
        let cell = local.fetches.cell(from, request.limit);
        let shared_read = cell.get_or_try_init(|| self.read(stream, Some(from), request.limit));
        let Ok(read) = tokio::time::timeout_at(read_until, shared_read).await else {
            return timeout(*cursor);
        };
        let mut read = read?.clone();
        if read.check_cursor(from).is_err() {
            // A shared read may predate the message this cursor names (its wake-up still
            // on the way): only a fresh read refuses the cursor.
            let Ok(fresh) =
                tokio::time::timeout_at(read_until, self.read(stream, Some(from), request.limit))
                    .await
            else {
                return timeout(*cursor);
            };
            read = fresh?;
            read.check_cursor(from)?;
        }
        if let Some(oldest) = read.gone(from) {
            return Ok(Some(PollOutcome::Gone { oldest }));
        }
        Ok(read.messages.last().map(|last| PollOutcome::Messages {
            cursor: last.id,
            messages: read.messages.clone(),
        }))
    }

    /// Waits until the backplane is up again; false when `deadline` comes first.
    async fn wait_up(&self, deadline: Instant) -> bool {
        let mut up = self.health.up.subscribe();
        loop {
            if *up.borrow_and_update() {
                return true;
            }
            tokio::select! {
                changed = up.changed() => if changed.is_err() { return false },
                _ = tokio::time::sleep_until(deadline) => return false,
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
        self.subscribe_lost();
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
        let ping = strong.call(conn.ping()).await;
        let up = ping.is_ok() && strong.health.quiet_for(HEALTH_EVERY * 2);
        if strong.health.set(&strong.health.commands, up) {
            strong.wake_all();
        }
        drop(strong);
        tokio::time::sleep(HEALTH_EVERY).await;
    }
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
