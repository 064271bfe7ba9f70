//! Cursors: a message's position in its channel, written the way Redis writes stream ids
//! (`<ms>-<seq>`), so cursors look the same on both backplanes and a Redis stream id *is* the
//! cursor.
//!
//! A cursor means "I have seen everything up to and including this id"; polling with it returns
//! the messages with greater ids.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// A position in a channel: milliseconds since the Unix epoch and a sequence within that
/// millisecond. Ordered by time, then sequence, like Redis stream ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cursor {
    pub ms: u64,
    pub seq: u64,
}

/// Why a cursor given by a client could not be read (→ 400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("the cursor is empty")]
    Empty,
    #[error("the cursor is too long ({0} bytes)")]
    TooLong(usize),
    #[error("the cursor is not of the form `<ms>-<seq>` (two decimal numbers joined by `-`)")]
    Format,
}

/// Longest text form: two 20-digit `u64`s and a dash. Checked first so a huge header costs
/// nothing to refuse.
const MAX_TEXT_LEN: usize = 41;

impl Cursor {
    /// The position before every message: polling with it returns the whole buffer.
    pub const ZERO: Cursor = Cursor { ms: 0, seq: 0 };

    pub const fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }

    /// Reads `<ms>-<seq>` strictly: ASCII digits only, no sign, no spaces, both parts present.
    pub fn parse(text: &str) -> Result<Self, CursorError> {
        if text.is_empty() {
            return Err(CursorError::Empty);
        }
        if text.len() > MAX_TEXT_LEN {
            return Err(CursorError::TooLong(text.len()));
        }
        let (ms, seq) = text.split_once('-').ok_or(CursorError::Format)?;
        Ok(Self {
            ms: parse_part(ms)?,
            seq: parse_part(seq)?,
        })
    }

    /// The cursor just before this one, so that polling with it returns this message first.
    /// `0-0` has no predecessor and stays `0-0`.
    pub fn pred(self) -> Self {
        match (self.ms, self.seq) {
            (_, seq) if seq > 0 => Self::new(self.ms, seq - 1),
            (0, _) => Self::ZERO,
            (ms, _) => Self::new(ms - 1, u64::MAX),
        }
    }

    /// The id for a message published now, after `last`: the wall clock in ms, never going
    /// backwards (the same rule as Redis' `XADD *`), so ids grow even if the clock steps back.
    pub fn next_after(last: Cursor, now: SystemTime) -> Self {
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        if now_ms > last.ms {
            Self::new(now_ms, 0)
        } else if last.seq < u64::MAX {
            Self::new(last.ms, last.seq + 1)
        } else {
            Self::new(last.ms.saturating_add(1), 0)
        }
    }
}

fn parse_part(text: &str) -> Result<u64, CursorError> {
    // `u64::from_str` accepts a leading `+`; cursors are ours, so only plain digits are valid.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CursorError::Format);
    }
    text.parse().map_err(|_| CursorError::Format)
}

impl FromStr for Cursor {
    type Err = CursorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reads_and_writes_stream_ids() {
        let cursor = Cursor::parse("1700000000000-7").unwrap();
        assert_eq!(cursor, Cursor::new(1_700_000_000_000, 7));
        assert_eq!(cursor.to_string(), "1700000000000-7");
        let max = format!("{}-{}", u64::MAX, u64::MAX);
        assert_eq!(
            Cursor::parse(&max).unwrap(),
            Cursor::new(u64::MAX, u64::MAX)
        );
    }

    #[test]
    fn refuses_unknown_formats() {
        for bad in [
            "",
            "abc",
            "123",
            "-",
            "1-",
            "-1",
            "1-2-3",
            "+1-2",
            "1-+2",
            " 1-2",
            "1-2 ",
            "1.5-2",
            "0x1-2",
            "1-ab",
            "18446744073709551616-0",
            "١-٢",
            "$",
            "*",
        ] {
            assert!(Cursor::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(
            Cursor::parse(&"9".repeat(10_000)),
            Err(CursorError::TooLong(10_000))
        );
    }

    #[test]
    fn orders_like_redis() {
        assert!(Cursor::new(1, 5) < Cursor::new(2, 0));
        assert!(Cursor::new(2, 0) < Cursor::new(2, 1));
    }

    #[test]
    fn predecessor_crosses_milliseconds() {
        assert_eq!(Cursor::new(5, 3).pred(), Cursor::new(5, 2));
        assert_eq!(Cursor::new(5, 0).pred(), Cursor::new(4, u64::MAX));
        assert_eq!(Cursor::ZERO.pred(), Cursor::ZERO);
    }

    #[test]
    fn ids_never_go_backwards() {
        let t = UNIX_EPOCH + Duration::from_millis(1000);
        assert_eq!(Cursor::next_after(Cursor::ZERO, t), Cursor::new(1000, 0));
        assert_eq!(
            Cursor::next_after(Cursor::new(1000, 0), t),
            Cursor::new(1000, 1)
        );
        // The clock stepped back: keep counting within the last millisecond.
        assert_eq!(
            Cursor::next_after(Cursor::new(2000, 4), t),
            Cursor::new(2000, 5)
        );
    }
}
