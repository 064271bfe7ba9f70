//! The in-memory backplane: every channel lives in this process. A broadcast channel is a
//! bounded buffer and a `tokio::sync::Notify`; a queue channel is a queue and its line of
//! waiters. See docs/hub.md.

mod buffer;
mod queue;

use super::cursor::Cursor;
use super::message::{Message, PollOutcome, PollRequest, Published};
use super::queue_waiters::{wait_in_line, Delivery, InLine};
use super::shards::{lock, Shards};
use super::{ChannelKey, HubError, OnWaiting, Settings};
use buffer::{Buffer, Read};
use bytes::Bytes;
use queue::Queue;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::Notify;
use tokio::time::Instant;

pub(crate) struct Memory {
    channels: Shards<Channel>,
    settings: Settings,
}

struct Channel {
    state: Mutex<State>,
    /// Broadcast only: woken on every publish.
    notify: Notify,
    /// Broadcast polls currently waiting, reported as `delivered_to`.
    waiting: AtomicUsize,
}

struct State {
    kind: Kind,
    /// Last publish or poll, for `idle_expiry`.
    touched: Instant,
}

enum Kind {
    Broadcast(Buffer),
    Queue(Queue),
}

impl Memory {
    pub(crate) fn new(settings: Settings) -> Self {
        Self {
            channels: Shards::new(),
            settings,
        }
    }

    fn channel(&self, key: &ChannelKey) -> Arc<Channel> {
        self.channels.get_or_create(key, || Channel {
            state: Mutex::new(State {
                kind: match key.mode {
                    conf::ChannelMode::Broadcast => Kind::Broadcast(Buffer::default()),
                    conf::ChannelMode::Queue => Kind::Queue(Queue::default()),
                },
                touched: Instant::now(),
            }),
            notify: Notify::new(),
            waiting: AtomicUsize::new(0),
        })
    }

    pub(crate) fn publish(
        &self,
        key: &ChannelKey,
        body: Bytes,
        content_type: Option<Arc<str>>,
        event: Option<Arc<str>>,
    ) -> Result<Published, HubError> {
        let channel = self.channel(key);
        let now = SystemTime::now();
        let mut state = lock(&channel.state);
        state.touched = Instant::now();
        match &mut state.kind {
            Kind::Broadcast(buffer) => {
                let message = buffer.append(body, content_type, event, now, &self.settings);
                let delivered_to = channel.waiting.load(Ordering::Acquire);
                drop(state);
                channel.notify.notify_waiters();
                Ok(Published {
                    cursor: message.id,
                    delivered_to,
                })
            }
            Kind::Queue(queue) => {
                let id = Cursor::next_after(queue.last, now);
                let message = Message::new(id, body, content_type, now).with_event(event);
                let Err(mut back) = queue.waiters.hand(vec![message]) else {
                    queue.last = id;
                    return Ok(Published {
                        cursor: id,
                        delivered_to: 1,
                    });
                };
                if queue.messages.len() >= self.settings.queue_max_messages {
                    return Err(HubError::QueueFull {
                        max: self.settings.queue_max_messages,
                    });
                }
                queue.last = id;
                queue.messages.extend(back.pop());
                Ok(Published {
                    cursor: id,
                    delivered_to: 0,
                })
            }
        }
    }

    pub(crate) async fn poll(
        &self,
        key: &ChannelKey,
        request: PollRequest,
        deadline: Instant,
        on_waiting: OnWaiting<'_>,
    ) -> Result<PollOutcome, HubError> {
        let channel = self.channel(key);
        match key.mode {
            conf::ChannelMode::Broadcast => {
                poll_broadcast(&channel, request, deadline, &self.settings, on_waiting).await
            }
            conf::ChannelMode::Queue => poll_queue(channel, request, deadline, on_waiting).await,
        }
    }

    /// Drops aged messages and forgets idle channels; run periodically.
    pub(crate) fn sweep(&self) {
        let now = SystemTime::now();
        let idle_for = self.settings.idle_expiry;
        self.channels.sweep(|_, channel| {
            let mut state = lock(&channel.state);
            let empty = match &mut state.kind {
                Kind::Broadcast(buffer) => {
                    buffer.trim(now, &self.settings);
                    buffer.is_empty()
                }
                Kind::Queue(queue) => queue.messages.is_empty() && queue.waiters.is_empty(),
            };
            empty && state.touched.elapsed() >= idle_for
        });
    }

    pub(crate) fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Broadcast polls waiting on `key` now.
    #[cfg(test)]
    pub(crate) fn waiting(&self, key: &ChannelKey) -> usize {
        self.channels
            .get(key)
            .map_or(0, |channel| channel.waiting.load(Ordering::Acquire))
    }
}

async fn poll_broadcast(
    channel: &Channel,
    request: PollRequest,
    deadline: Instant,
    settings: &Settings,
    mut on_waiting: OnWaiting<'_>,
) -> Result<PollOutcome, HubError> {
    let mut cursor = request.cursor;
    let mut waiting: Option<WaitingGuard<'_>> = None;
    loop {
        // Register for the wake-up before looking, so a publish between the look and the
        // wait is not missed.
        let notified = channel.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let read = {
            let mut state = lock(&channel.state);
            state.touched = Instant::now();
            let Kind::Broadcast(buffer) = &mut state.kind else {
                return Err(HubError::Corrupt(
                    "a queue channel under a broadcast key".into(),
                ));
            };
            let now = SystemTime::now();
            buffer.trim(now, settings);
            let from = *cursor.get_or_insert_with(|| buffer.start(request.start));
            // Checked on every wake-up too: a cursor let through on a channel with no history
            // (within the clock's slack) is refused once a message shows it was ahead.
            buffer.check_cursor(from, now)?;
            buffer.read_after(from, request.limit)
        };
        match read {
            Read::Messages(messages) => return Ok(PollOutcome::of(messages)),
            Read::Gone { oldest } => return Ok(PollOutcome::Gone { oldest }),
            Read::Empty => {}
        }
        if waiting.is_none() {
            channel.waiting.fetch_add(1, Ordering::AcqRel);
            waiting = Some(WaitingGuard(&channel.waiting));
            on_waiting.tell();
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(PollOutcome::Timeout { cursor }),
        }
    }
}

/// Counts a broadcast poll as waiting until it ends, however it ends.
struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn poll_queue(
    channel: Arc<Channel>,
    request: PollRequest,
    deadline: Instant,
    mut on_waiting: OnWaiting<'_>,
) -> Result<PollOutcome, HubError> {
    let (id, delivery) = {
        let mut state = lock(&channel.state);
        state.touched = Instant::now();
        let Kind::Queue(queue) = &mut state.kind else {
            return Err(HubError::Corrupt(
                "a broadcast channel under a queue key".into(),
            ));
        };
        if !queue.messages.is_empty() {
            return Ok(PollOutcome::of(queue.take(request.limit)));
        }
        queue.waiters.push(request.limit)
    };
    on_waiting.tell();
    let mut wait = QueueWait {
        channel,
        id,
        delivery: Some(delivery),
    };
    Ok(wait_in_line(&mut wait, deadline, request.cursor).await)
}

/// A queue poll's place in line. Dropping it (client gone, shutdown) leaves the line and puts
/// back whatever it had already been handed.
struct QueueWait {
    channel: Arc<Channel>,
    id: u64,
    delivery: Option<Delivery>,
}

impl InLine for QueueWait {
    fn delivery(&mut self) -> &mut Option<Delivery> {
        &mut self.delivery
    }

    fn remove_from_line(&mut self) {
        if let Kind::Queue(queue) = &mut lock(&self.channel.state).kind {
            queue.waiters.remove(self.id);
        }
    }
}

impl Drop for QueueWait {
    fn drop(&mut self) {
        if let Some(messages) = self.leave() {
            let mut state = lock(&self.channel.state);
            if let Kind::Queue(queue) = &mut state.kind {
                queue.give_back(messages);
            }
        }
    }
}
