//! The pollers waiting on one queue channel, longest-waiting first, each with a oneshot sender
//! that the publisher (or the Redis dispatcher) hands messages to.
//!
//! Cancel safety rests on one rule: a waiter leaves the list under the channel's lock, and
//! messages are only sent while holding that lock. So once a dropped waiter has removed itself,
//! nothing more can arrive for it, and whatever did arrive before is still in its receiver to be
//! taken back (`try_recv`) and returned to the head of the queue.

use super::cursor::Cursor;
use super::message::{Message, PollOutcome};
use std::collections::VecDeque;
use tokio::sync::oneshot;
use tokio::time::Instant;

pub(crate) type Delivery = oneshot::Receiver<Vec<Message>>;

struct Waiter {
    id: u64,
    limit: usize,
    tx: oneshot::Sender<Vec<Message>>,
}

#[derive(Default)]
pub(crate) struct QueueWaiters {
    next_id: u64,
    list: VecDeque<Waiter>,
}

impl QueueWaiters {
    /// Adds a waiter at the back; returns its id (to leave) and its receiver.
    pub(crate) fn push(&mut self, limit: usize) -> (u64, Delivery) {
        let (tx, rx) = oneshot::channel();
        self.next_id += 1;
        let id = self.next_id;
        self.list.push_back(Waiter {
            id,
            limit: limit.max(1),
            tx,
        });
        (id, rx)
    }

    /// Takes the waiter out of the list (it timed out or went away).
    pub(crate) fn remove(&mut self, id: u64) {
        self.list.retain(|waiter| waiter.id != id);
    }

    /// The batch size the longest-waiting live waiter asked for; drops dead waiters on the way.
    pub(crate) fn front_limit(&mut self) -> Option<usize> {
        while let Some(front) = self.list.front() {
            if !front.tx.is_closed() {
                return Some(front.limit);
            }
            self.list.pop_front();
        }
        None
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Hands `messages` out, oldest first, to the longest-waiting live waiters, each getting at
    /// most the batch it asked for; gives back what nobody took, in order.
    pub(crate) fn hand(&mut self, messages: Vec<Message>) -> Result<(), Vec<Message>> {
        let mut rest = VecDeque::from(messages);
        while !rest.is_empty() {
            let Some(waiter) = self.list.pop_front() else {
                return Err(rest.into());
            };
            let take = waiter.limit.min(rest.len());
            let batch: Vec<Message> = rest.drain(..take).collect();
            if let Err(back) = waiter.tx.send(batch) {
                // That waiter went away before it could be told: put its share back in front.
                for message in back.into_iter().rev() {
                    rest.push_front(message);
                }
            }
        }
        Ok(())
    }
}

/// A queue poll's place in a line of waiters, on either backplane.
pub(crate) trait InLine {
    /// The receiver messages are handed to; `None` once the poll has left the line.
    fn delivery(&mut self) -> &mut Option<Delivery>;

    /// Takes this waiter out of its list, under the list's lock: its sender is dropped, so
    /// nothing more can be handed to it.
    fn remove_from_line(&mut self);

    /// Leaves the line; returns the messages handed over before it left, if any.
    fn leave(&mut self) -> Option<Vec<Message>> {
        let mut delivery = self.delivery().take()?;
        self.remove_from_line();
        delivery
            .try_recv()
            .ok()
            .filter(|messages| !messages.is_empty())
    }
}

/// Waits in line until messages are handed over or `deadline` passes. Cancel-safe: dropping the
/// future leaves `wait` in line, and its owner's `Drop` gives back anything handed meanwhile.
pub(crate) async fn wait_in_line(
    wait: &mut impl InLine,
    deadline: Instant,
    cursor: Option<Cursor>,
) -> PollOutcome {
    let Some(delivery) = wait.delivery().as_mut() else {
        return PollOutcome::Timeout { cursor };
    };
    tokio::select! {
        handed = delivery => {
            *wait.delivery() = None;
            match handed {
                Ok(messages) if !messages.is_empty() => PollOutcome::of(messages),
                _ => PollOutcome::Timeout { cursor },
            }
        }
        _ = tokio::time::sleep_until(deadline) => match wait.leave() {
            // Handed a message in the same instant the deadline passed: deliver it.
            Some(messages) => PollOutcome::of(messages),
            None => PollOutcome::Timeout { cursor },
        },
    }
}
