//! A published message and what poll and publish return.

use super::cursor::Cursor;
use bytes::Bytes;
use std::sync::Arc;
use std::time::SystemTime;

/// One published message. Cloning it is a few reference-count increments: the body, the
/// content type and what is derived from them are shared by every subscriber, never copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The message's id; as a cursor it means "everything up to this message".
    pub id: Cursor,
    /// The body exactly as published.
    pub body: Bytes,
    /// The publisher's `Content-Type`, if it sent one.
    pub content_type: Option<Arc<str>>,
    /// The event name the publisher gave (`?event=`), which a Server-Sent Events stream sends as
    /// the event's `event:` field.
    pub event: Option<Arc<str>>,
    /// When it was published (wall clock, so it means the same on every instance), for the
    /// publish-to-delivery histogram.
    pub published_at: SystemTime,
    /// What the layers above derive from this message once for every subscriber it reaches
    /// (the head of a poll answer); the hub only carries it.
    pub derived: Derived,
}

/// A slot for one value derived from a message, set once and shared by its clones.
#[derive(Clone, Default)]
pub struct Derived(Arc<std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>>);

impl Derived {
    /// The value, made by `make` on first use.
    pub fn get_or_init<T: Send + Sync + 'static>(
        &self,
        make: impl FnOnce() -> T,
    ) -> Option<Arc<T>> {
        self.0
            .get_or_init(|| Arc::new(make()))
            .clone()
            .downcast()
            .ok()
    }
}

/// Derived values are a cache: two messages are equal whatever they hold.
impl PartialEq for Derived {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Derived {}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Derived")
    }
}

impl Message {
    /// A message as published (nothing derived from it yet).
    pub(crate) fn new(
        id: Cursor,
        body: Bytes,
        content_type: Option<Arc<str>>,
        published_at: SystemTime,
    ) -> Self {
        Self {
            id,
            body,
            content_type,
            event: None,
            published_at,
            derived: Derived::default(),
        }
    }

    /// The message with the event name `event`.
    pub(crate) fn with_event(mut self, event: Option<Arc<str>>) -> Self {
        self.event = event;
        self
    }

    /// Bytes this message counts against a channel's `buffer_bytes`.
    pub(crate) fn cost(&self) -> usize {
        self.body.len()
            + self.content_type.as_ref().map_or(0, |ct| ct.len())
            + self.event.as_ref().map_or(0, |event| event.len())
    }
}

/// What one poll asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollRequest {
    /// Broadcast: resume after this cursor. `None`: see `start`. Ignored in queue mode.
    pub cursor: Option<Cursor>,
    /// Broadcast without a cursor: wait for the next message (`Newest`) or replay the buffer
    /// (`Oldest`). Ignored in queue mode.
    pub start: conf::StartAt,
    /// Most messages in one answer (0 counts as 1). Pass 1 for `format: raw`: in queue mode
    /// every message handed out is gone from the queue.
    pub limit: usize,
}

/// How a poll ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PollOutcome {
    /// One or more messages, oldest first; `cursor` is the last one's id.
    Messages {
        messages: Vec<Message>,
        cursor: Cursor,
    },
    /// Nothing arrived before the deadline; `cursor` is the poll's own, unchanged.
    Timeout { cursor: Option<Cursor> },
    /// Messages after the poll's cursor were dropped from the buffer. `oldest` is the earliest
    /// cursor still valid: polling with it returns every message still held, oldest first.
    Gone { oldest: Cursor },
}

impl PollOutcome {
    /// Messages handed to a poll: the cursor is the last one's id.
    pub(crate) fn of(messages: Vec<Message>) -> Self {
        let cursor = messages.last().map(|m| m.id).unwrap_or_default();
        PollOutcome::Messages { messages, cursor }
    }
}

/// What a publish returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// The message's id (its cursor).
    pub cursor: Cursor,
    /// Memory: the held polls that were woken with the message (broadcast) or handed it
    /// (queue: 0 or 1). Redis: the Holdfast instances the wake-up reached (see docs/hub.md) — waiters on other instances cannot be counted without a round trip each.
    pub delivered_to: usize,
}
