//! The long-poll hub: channels, cursors, held polls and their wake-ups, over this process's
//! memory or Redis shared by several Holdfast instances. No Pingora types: the gateway calls
//! [`Hub::poll`] or [`Hub::publish`] and writes the answer. See docs/hub.md.

mod cursor;
mod error;
mod memory;
mod message;
mod name;
mod on_waiting;
mod queue_waiters;
mod redis;
mod shards;

pub use cursor::Cursor;
pub use error::HubError;
pub use message::{Message, PollOutcome, PollRequest, Published};
pub use name::{validate_channel_name, validate_event_name};
pub use on_waiting::OnWaiting;

use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// A channel: its name (validated, after template expansion) and its mode. The same name in
/// the two modes are two different channels.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChannelKey {
    pub mode: conf::ChannelMode,
    pub name: Arc<str>,
}

impl ChannelKey {
    pub fn new(mode: conf::ChannelMode, name: impl Into<Arc<str>>) -> Self {
        Self {
            mode,
            name: name.into(),
        }
    }
}

/// The channel settings the hub works with, taken from `conf::Channels`.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub buffer_messages: usize,
    pub buffer_bytes: usize,
    pub buffer_age: Duration,
    pub queue_max_messages: usize,
    pub max_name_length: usize,
    pub idle_expiry: Duration,
}

impl Settings {
    /// `config.channels`. (Written against the field, not the type: `conf` does not re-export
    /// `Channels`.)
    pub(crate) fn from_config(config: &conf::Config) -> Self {
        let channels = &config.channels;
        Self {
            buffer_messages: channels.buffer_messages,
            buffer_bytes: channels.buffer_bytes.as_usize(),
            buffer_age: channels.buffer_age.get(),
            queue_max_messages: channels.queue_max_messages,
            max_name_length: channels.max_name_length,
            idle_expiry: channels.idle_expiry.get(),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self::from_config(&conf::Config::default())
    }
}

/// Why the hub could not be built (a configuration problem; Redis being down is not one).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("backplane.redis: {0}")]
    Redis(String),
    #[error("the long-poll hub must be started inside a tokio runtime")]
    NoRuntime,
}

/// The long-poll hub. Cheap to clone; every clone is the same hub. Its background tasks stop
/// when the last clone is dropped (or on [`Hub::stop`]).
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    settings: Settings,
    up: watch::Receiver<bool>,
    tasks: Mutex<Vec<AbortHandle>>,
}

enum Backend {
    Memory(memory::Memory),
    Redis(Arc<redis::RedisHub>),
}

impl Hub {
    /// Builds the hub for `config.backplane` and `config.channels` and starts its background
    /// tasks (idle-channel sweeping; for Redis the pub/sub listener and the health check) on the
    /// current tokio runtime, which must outlive the server. Does not wait for Redis: a Redis
    /// that is down at start shows as `is_up() == false` until it answers.
    pub fn start(config: &conf::Config) -> Result<Hub, StartError> {
        Self::start_with(&config.backplane, Settings::from_config(config))
    }

    fn start_with(backplane: &conf::Backplane, settings: Settings) -> Result<Hub, StartError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        let (backend, up, mut tasks) = match backplane {
            conf::Backplane::Memory => {
                let (_, up) = watch::channel(true);
                (
                    Backend::Memory(memory::Memory::new(settings.clone())),
                    up,
                    Vec::new(),
                )
            }
            conf::Backplane::Redis(redis_conf) => {
                let (hub, tasks) = redis::RedisHub::start(redis_conf, settings.clone(), &runtime)?;
                let up = hub.up_changes();
                (Backend::Redis(hub), up, tasks)
            }
        };
        let inner = Arc::new(Inner {
            backend,
            settings,
            up,
            tasks: Mutex::new(Vec::new()),
        });
        tasks.push(runtime.spawn(sweep(Arc::downgrade(&inner))).abort_handle());
        *shards::lock(&inner.tasks) = tasks;
        Ok(Hub { inner })
    }

    /// Waits for a message on `key` until `deadline`. Returns at once if messages are there;
    /// otherwise tells `on_waiting` when the poll has its place and waits. Cancel-safe: drop
    /// the future whenever the client goes away or the server shuts down.
    pub async fn wait(
        &self,
        key: &ChannelKey,
        request: PollRequest,
        deadline: Instant,
        on_waiting: OnWaiting<'_>,
    ) -> Result<PollOutcome, HubError> {
        validate_channel_name(&key.name, self.inner.settings.max_name_length)?;
        let request = PollRequest {
            limit: request.limit.max(1),
            ..request
        };
        let outcome = match &self.inner.backend {
            Backend::Memory(memory) => memory.poll(key, request, deadline, on_waiting).await,
            // Boxed: the Redis poll's state (a script call in flight) is far bigger than a
            // memory poll's, and a future is as big as its biggest branch.
            Backend::Redis(redis) => Box::pin(redis.poll(key, request, deadline, on_waiting)).await,
        };
        count_unavailable("poll", &outcome);
        outcome
    }

    /// [`Hub::wait`] with nobody to tell.
    #[cfg(test)]
    pub async fn poll(
        &self,
        key: &ChannelKey,
        request: PollRequest,
        deadline: Instant,
    ) -> Result<PollOutcome, HubError> {
        self.wait(key, request, deadline, OnWaiting::nobody()).await
    }

    /// [`Hub::publish_event`] without an event name.
    #[cfg(test)]
    pub async fn publish(
        &self,
        key: &ChannelKey,
        body: Bytes,
        content_type: Option<&str>,
    ) -> Result<Published, HubError> {
        self.publish_event(key, body, content_type, None).await
    }

    /// Appends a message to `key` and wakes the polls waiting on it (on every instance);
    /// streams send it under `event` (checked by the caller: [`validate_event_name`]).
    pub async fn publish_event(
        &self,
        key: &ChannelKey,
        body: Bytes,
        content_type: Option<&str>,
        event: Option<&str>,
    ) -> Result<Published, HubError> {
        validate_channel_name(&key.name, self.inner.settings.max_name_length)?;
        let content_type = content_type
            .filter(|ct| !ct.is_empty())
            .map(Arc::<str>::from);
        let event = event.filter(|e| !e.is_empty()).map(Arc::<str>::from);
        let published = match &self.inner.backend {
            Backend::Memory(memory) => memory.publish(key, body, content_type, event),
            Backend::Redis(redis) => redis.publish(key, body, content_type, event).await,
        };
        count_unavailable("publish", &published);
        published
    }

    /// Whether the backplane is reachable (always true for memory).
    pub fn is_up(&self) -> bool {
        *self.inner.up.borrow()
    }

    /// Changes of [`Hub::is_up`]: `changed().await` wakes on each flip.
    pub fn up_changes(&self) -> watch::Receiver<bool> {
        self.inner.up.clone()
    }

    /// `"memory"` or `"redis"`, for logs.
    pub fn backplane(&self) -> &'static str {
        match self.inner.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
        }
    }

    /// Channels this instance currently keeps (memory: all; Redis: those with local waiters).
    pub fn channel_count(&self) -> usize {
        match &self.inner.backend {
            Backend::Memory(memory) => memory.channel_count(),
            Backend::Redis(redis) => redis.channel_count(),
        }
    }

    /// Stops the background tasks. Polls and publishes still work on memory; on Redis held
    /// polls are no longer woken by other instances.
    pub fn stop(&self) {
        for task in shards::lock(&self.inner.tasks).drain(..) {
            task.abort();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in shards::lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

/// `holdfast_backplane_unavailable_total`: what the backplane could not take, and why.
fn count_unavailable<T>(operation: &str, result: &Result<T, HubError>) {
    let reason = match result {
        Err(HubError::Unavailable(_)) => "down",
        Err(HubError::Unreplicated(_)) => "unreplicated",
        _ => return,
    };
    crate::observe::metrics::METRICS
        .backplane_unavailable
        .with_label_values(&[operation, reason])
        .inc();
}

/// Ages out buffers and forgets idle channels, a few times per `idle_expiry`. Holds the hub
/// weakly so that dropping the hub ends it.
async fn sweep(hub: std::sync::Weak<Inner>) {
    let every = match hub.upgrade() {
        Some(inner) => (inner.settings.idle_expiry / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(5)),
        None => return,
    };
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = hub.upgrade() else { return };
        match &inner.backend {
            Backend::Memory(memory) => memory.sweep(),
            Backend::Redis(redis) => redis.sweep(),
        }
    }
}

#[cfg(test)]
mod tests;
