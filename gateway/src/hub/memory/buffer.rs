//! A broadcast channel's buffer in memory: the recent messages, bounded by count, bytes and age,
//! and what was dropped, so a cursor that fell off the end is answered `Gone`, never skipped.

use crate::hub::cursor::Cursor;
use crate::hub::message::Message;
use crate::hub::{HubError, Settings};
use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far past this process' clock a cursor may be on a channel with no history: the next id
/// comes from the clock, and a client's clock (or a previous instance's) may run a little ahead.
const CLOCK_SLACK: Duration = Duration::from_secs(1);

/// What a read after a cursor found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Read {
    Messages(Vec<Message>),
    Empty,
    /// Messages after the cursor were dropped; `oldest` is the earliest cursor still valid.
    Gone {
        oldest: Cursor,
    },
}

#[derive(Default)]
pub(crate) struct Buffer {
    messages: VecDeque<Message>,
    bytes: usize,
    /// The newest id ever given out (kept when the buffer empties, so ids keep growing).
    last: Cursor,
    /// The greatest id dropped so far: a cursor below it missed something.
    max_dropped: Option<Cursor>,
}

impl Buffer {
    /// Appends a new message with the next id and trims to the bounds; returns the message.
    pub(crate) fn append(
        &mut self,
        body: bytes::Bytes,
        content_type: Option<std::sync::Arc<str>>,
        event: Option<std::sync::Arc<str>>,
        now: SystemTime,
        settings: &Settings,
    ) -> Message {
        let id = Cursor::next_after(self.last, now);
        self.last = id;
        let message = Message::new(id, body, content_type, now).with_event(event);
        self.bytes += message.cost();
        self.messages.push_back(message.clone());
        self.trim(now, settings);
        message
    }

    /// Drops messages past the count, byte and age bounds, oldest first. The newest message stays
    /// even if it alone is over `buffer_bytes` (until it ages out): dropping it at once would
    /// turn the polls waiting for it into `Gone`.
    pub(crate) fn trim(&mut self, now: SystemTime, settings: &Settings) {
        while let Some(front) = self.messages.front() {
            let too_old = now
                .duration_since(front.published_at)
                .is_ok_and(|age| age > settings.buffer_age);
            let over = self.messages.len() > settings.buffer_messages.max(1)
                || (self.bytes > settings.buffer_bytes && self.messages.len() > 1);
            if !(too_old || over) {
                break;
            }
            if let Some(dropped) = self.messages.pop_front() {
                self.bytes -= dropped.cost();
                self.max_dropped = Some(dropped.id);
            }
        }
    }

    /// Where a poll without a cursor starts: after the newest message (`Newest`), or before the
    /// oldest one held (`Oldest`).
    pub(crate) fn start(&self, start: conf::StartAt) -> Cursor {
        match (start, self.messages.front()) {
            (conf::StartAt::Oldest, Some(front)) => front.id.pred(),
            _ => self.last,
        }
    }

    /// Refuses a cursor past every id this channel gave out: the next message would get a smaller
    /// id and the poll would never see it. A channel with no history (new, or forgotten after
    /// `idle_expiry` or a restart) cannot say what came before, so there a cursor is refused
    /// only when it is ahead of the clock the next id comes from (with [`CLOCK_SLACK`]).
    pub(crate) fn check_cursor(&self, cursor: Cursor, now: SystemTime) -> Result<(), HubError> {
        let ahead = if self.last == Cursor::ZERO {
            let clock = (now + CLOCK_SLACK)
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            cursor.ms > clock
        } else {
            cursor > self.last
        };
        if !ahead {
            return Ok(());
        }
        Err(HubError::CursorAhead {
            cursor,
            newest: (self.last != Cursor::ZERO).then_some(self.last),
        })
    }

    /// Up to `limit` messages after `cursor`, or `Gone` if some of them were dropped.
    pub(crate) fn read_after(&self, cursor: Cursor, limit: usize) -> Read {
        if self.max_dropped.is_some_and(|dropped| cursor < dropped) {
            return Read::Gone {
                oldest: self.start(conf::StartAt::Oldest),
            };
        }
        let from = self.messages.partition_point(|m| m.id <= cursor);
        let messages: Vec<Message> = self
            .messages
            .iter()
            .skip(from)
            .take(limit.max(1))
            .cloned()
            .collect();
        if messages.is_empty() {
            Read::Empty
        } else {
            Read::Messages(messages)
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    fn settings() -> Settings {
        Settings {
            buffer_messages: 3,
            buffer_bytes: 100,
            buffer_age: Duration::from_secs(60),
            ..Settings::default()
        }
    }

    fn t(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn ids(read: Read) -> Vec<String> {
        match read {
            Read::Messages(messages) => messages.iter().map(|m| m.id.to_string()).collect(),
            other => panic!("expected messages, got {other:?}"),
        }
    }

    #[test]
    fn bounds_by_count_and_names_the_oldest_when_gone() {
        let s = settings();
        let mut buffer = Buffer::default();
        for ms in 1..=5 {
            buffer.append(Bytes::from_static(b"x"), None, None, t(ms), &s);
        }
        assert_eq!(buffer.len(), 3);
        assert_eq!(
            ids(buffer.read_after(Cursor::new(2, 0), 10)),
            ["3-0", "4-0", "5-0"]
        );
        // 1-0 saw message 1 only; 2-0 was dropped since: gone, resume just before 3-0.
        let oldest = Cursor::new(3, 0).pred();
        assert_eq!(
            buffer.read_after(Cursor::new(1, 0), 10),
            Read::Gone { oldest }
        );
        assert_eq!(ids(buffer.read_after(oldest, 10)), ["3-0", "4-0", "5-0"]);
        assert_eq!(ids(buffer.read_after(oldest, 2)), ["3-0", "4-0"]);
        assert_eq!(buffer.read_after(Cursor::new(5, 0), 10), Read::Empty);
    }

    #[test]
    fn a_cursor_past_the_newest_id_is_refused() {
        let s = settings();
        let mut buffer = Buffer::default();
        // No history: only a cursor ahead of the clock (beyond the slack) is refused.
        let now = t(10_000);
        assert!(buffer.check_cursor(Cursor::new(10_900, 5), now).is_ok());
        assert!(buffer.check_cursor(Cursor::new(11_000, 0), now).is_ok());
        assert_eq!(
            buffer.check_cursor(Cursor::new(11_001, 0), now),
            Err(HubError::CursorAhead {
                cursor: Cursor::new(11_001, 0),
                newest: None
            })
        );
        // With history: anything past the newest id, even within the clock's slack.
        buffer.append(Bytes::from_static(b"x"), None, None, now, &s);
        assert!(buffer.check_cursor(Cursor::new(10_000, 0), now).is_ok());
        assert!(buffer.check_cursor(Cursor::new(1, 0), now).is_ok());
        assert_eq!(
            buffer.check_cursor(Cursor::new(10_000, 1), now),
            Err(HubError::CursorAhead {
                cursor: Cursor::new(10_000, 1),
                newest: Some(Cursor::new(10_000, 0))
            })
        );
        // The newest id stays known after the buffer empties.
        buffer.trim(t(200_000), &s);
        assert!(buffer.is_empty());
        assert!(buffer
            .check_cursor(Cursor::new(10_000, 1), t(200_000))
            .is_err());
    }

    #[test]
    fn bounds_by_bytes() {
        let s = settings();
        let mut buffer = Buffer::default();
        buffer.append(Bytes::from(vec![b'a'; 60]), None, None, t(1), &s);
        buffer.append(Bytes::from(vec![b'b'; 60]), None, None, t(2), &s);
        assert_eq!(buffer.len(), 1);
        buffer.append(Bytes::from(vec![b'c'; 500]), None, None, t(3), &s);
        assert_eq!(
            buffer.len(),
            1,
            "the newest message stays even over the byte bound"
        );
        assert_eq!(ids(buffer.read_after(Cursor::new(2, 0), 10)), ["3-0"]);
        assert_eq!(
            buffer.read_after(Cursor::new(1, 0), 10),
            Read::Gone {
                oldest: Cursor::new(3, 0).pred()
            }
        );
    }

    #[test]
    fn bounds_by_age() {
        let s = settings();
        let mut buffer = Buffer::default();
        buffer.append(Bytes::from_static(b"old"), None, None, t(1_000), &s);
        buffer.append(Bytes::from_static(b"new"), None, None, t(50_000), &s);
        buffer.trim(t(62_000), &s);
        assert_eq!(buffer.len(), 1);
        assert_eq!(
            buffer.start(conf::StartAt::Oldest),
            Cursor::new(50_000, 0).pred()
        );
        buffer.trim(t(200_000), &s);
        assert!(buffer.is_empty());
        assert_eq!(buffer.start(conf::StartAt::Oldest), Cursor::new(50_000, 0));
    }
}
