//! A queue channel in memory: the messages nobody has taken yet (bounded) and the pollers
//! waiting for one, longest-waiting first.

use crate::hub::cursor::Cursor;
use crate::hub::message::Message;
use crate::hub::queue_waiters::QueueWaiters;
use std::collections::VecDeque;

#[derive(Default)]
pub(crate) struct Queue {
    pub(crate) messages: VecDeque<Message>,
    pub(crate) waiters: QueueWaiters,
    /// The newest id given out, so ids keep growing.
    pub(crate) last: Cursor,
}

impl Queue {
    /// Takes up to `limit` messages from the head.
    pub(crate) fn take(&mut self, limit: usize) -> Vec<Message> {
        let n = limit.max(1).min(self.messages.len());
        self.messages.drain(..n).collect()
    }

    /// Messages a cancelled waiter had already been handed: to the next waiters if there are
    /// any, else back to the head of the queue in their order. Never dropped, even past
    /// `queue_max_messages` — they were accepted once.
    pub(crate) fn give_back(&mut self, messages: Vec<Message>) {
        if let Err(rest) = self.waiters.hand(messages) {
            for message in rest.into_iter().rev() {
                self.messages.push_front(message);
            }
        }
    }
}
