//! Queue mode on Redis: each instance's line of local pollers and the dispatcher that pops
//! for them. See docs/hub.md for the design.

use super::super::message::{Message, PollOutcome, PollRequest};
use super::super::queue_waiters::{wait_in_line, Delivery, InLine};
use super::super::shards::lock;
use super::super::{ChannelKey, OnWaiting};
use super::{scripts, unix_ms, HubError, Local, RedisHub};
use std::sync::Arc;
use tokio::time::Instant;

impl RedisHub {
    pub(super) async fn poll_queue(
        self: &Arc<Self>,
        key: &ChannelKey,
        local: Arc<Local>,
        request: PollRequest,
        deadline: Instant,
        mut on_waiting: OnWaiting<'_>,
    ) -> Result<PollOutcome, HubError> {
        let (id, delivery) = lock(&local.queue).waiters.push(request.limit);
        on_waiting.tell();
        let mut wait = QueueWait {
            hub: self.clone(),
            key: key.clone(),
            local,
            id,
            delivery: Some(delivery),
        };
        self.kick(key, &wait.local);
        Ok(wait_in_line(&mut wait, deadline, request.cursor).await)
    }

    /// Notes that the queue may have messages and starts its dispatcher if it has waiters and
    /// none runs.
    pub(super) fn kick(self: &Arc<Self>, key: &ChannelKey, local: &Arc<Local>) {
        let mut queue = lock(&local.queue);
        queue.pending = true;
        if queue.running || queue.waiters.is_empty() {
            return;
        }
        queue.running = true;
        drop(queue);
        self.runtime
            .spawn(self.clone().dispatch(key.clone(), local.clone()));
    }

    /// Pops messages for the local waiters, longest-waiting first, while there are waiters and
    /// messages. Runs as its own task so that a pop is never cut in half by a poll being
    /// dropped: a popped message is always handed to a waiter or pushed back.
    async fn dispatch(self: Arc<Self>, key: ChannelKey, local: Arc<Local>) {
        let list = self.keys.data(&key);
        loop {
            let limit = {
                let mut queue = lock(&local.queue);
                match queue.waiters.front_limit() {
                    Some(limit) if queue.pending => {
                        queue.pending = false;
                        limit
                    }
                    _ => {
                        queue.running = false;
                        return;
                    }
                }
            };
            let mut conn = self.writes.clone();
            let popped: Result<Option<Vec<Vec<u8>>>, HubError> = self
                .call(
                    ::redis::cmd("RPOP")
                        .arg(&list)
                        .arg(limit)
                        .query_async(&mut conn),
                )
                .await;
            let items = match popped {
                Ok(Some(items)) if !items.is_empty() => items,
                Ok(_) => continue, // empty: wait for the next wake-up (or one that came meanwhile)
                Err(error) => {
                    tracing::warn!(channel = %key.name, %error, "queue pop failed");
                    lock(&local.queue).running = false;
                    return; // the recovery wake-up restarts it
                }
            };
            let messages: Vec<Message> = items
                .iter()
                .filter_map(|item| match scripts::decode_queue_item(item) {
                    Ok(message) => Some(message),
                    Err(error) => {
                        tracing::error!(channel = %key.name, %error, "dropping an unreadable queue item");
                        None
                    }
                })
                .collect();
            let rest = {
                let mut queue = lock(&local.queue);
                queue.pending = true; // there may be more
                queue.waiters.hand(messages).err()
            };
            if let Some(rest) = rest {
                self.give_back(&list, rest).await;
            }
        }
    }

    /// Puts messages back at the head of a queue list, oldest at the very head.
    async fn give_back(&self, list: &str, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        let items: Vec<Vec<u8>> = messages
            .iter()
            .rev()
            .map(|m| {
                scripts::encode_queue_item(
                    Some(m.id),
                    unix_ms(m.published_at),
                    m.content_type.as_deref(),
                    m.event.as_deref(),
                    &m.body,
                )
            })
            .collect();
        let mut conn = self.writes.clone();
        let pushed: Result<i64, HubError> = self
            .call(
                ::redis::cmd("RPUSH")
                    .arg(list)
                    .arg(items)
                    .query_async(&mut conn),
            )
            .await;
        if let Err(error) = pushed {
            tracing::error!(list, count = messages.len(), %error, "could not return queue messages to redis; they are lost");
        }
    }
}

/// A Redis queue poll's place in its local line; see `memory::QueueWait`. Messages it was
/// handed but never returned go back to Redis (from a spawned task: `Drop` cannot wait).
struct QueueWait {
    hub: Arc<RedisHub>,
    key: ChannelKey,
    local: Arc<Local>,
    id: u64,
    delivery: Option<Delivery>,
}

impl InLine for QueueWait {
    fn delivery(&mut self) -> &mut Option<Delivery> {
        &mut self.delivery
    }

    fn remove_from_line(&mut self) {
        lock(&self.local.queue).waiters.remove(self.id);
    }
}

impl Drop for QueueWait {
    fn drop(&mut self) {
        let Some(messages) = self.leave() else { return };
        // Prefer another local waiter: no round trip, and the order is kept.
        let rest = lock(&self.local.queue).waiters.hand(messages).err();
        if let Some(rest) = rest {
            let hub = self.hub.clone();
            let list = hub.keys.data(&self.key);
            self.hub
                .runtime
                .spawn(async move { hub.give_back(&list, rest).await });
        }
    }
}
