//! The hub's error: one enum for poll and publish, each variant knowing its HTTP status.

use super::cursor::{Cursor, CursorError};
use super::name::ChannelNameError;

/// What can go wrong in a poll or a publish. The gateway turns it into problem+json with
/// [`HubError::status`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The client's cursor is not a cursor at all (→ 400).
    #[error("bad cursor: {0}")]
    BadCursor(#[from] CursorError),
    /// The client's cursor is past every message the channel has given out (→ 400): polling
    /// with it would skip the next messages, whose ids are smaller. `newest` is the channel's
    /// newest cursor, when it has one.
    #[error("{}", ahead(cursor, newest))]
    CursorAhead {
        cursor: Cursor,
        newest: Option<Cursor>,
    },
    /// The channel name (after template expansion) is not allowed (→ 400).
    #[error("bad channel name: {0}")]
    BadChannel(#[from] ChannelNameError),
    /// A queue channel already holds `max` undelivered messages (→ 507).
    #[error("the queue holds {max} undelivered messages, its limit")]
    QueueFull { max: usize },
    /// The backplane (Redis) cannot be reached or did not answer in time (→ 503).
    #[error("the channel backplane is unavailable: {0}")]
    Unavailable(String),
    /// `durability: replicated` and no replica acknowledged the message in time (→ 503): it
    /// is on the master and may still be delivered, but it is not acknowledged as stored.
    #[error("no replica acknowledged the message in time: {0}")]
    Unreplicated(String),
    /// The backplane answered something Holdfast did not write (→ 500).
    #[error("the channel backplane returned unexpected data: {0}")]
    Corrupt(String),
}

impl HubError {
    /// The HTTP status the gateway answers with.
    pub fn status(&self) -> u16 {
        match self {
            HubError::BadCursor(_) | HubError::CursorAhead { .. } | HubError::BadChannel(_) => 400,
            HubError::QueueFull { .. } => 507,
            HubError::Unavailable(_) | HubError::Unreplicated(_) => 503,
            HubError::Corrupt(_) => 500,
        }
    }
}

fn ahead(cursor: &Cursor, newest: &Option<Cursor>) -> String {
    match newest {
        Some(newest) => format!(
            "the cursor `{cursor}` is ahead of the channel's newest message `{newest}`; poll with `{newest}` (or without a cursor) to wait for the next one"
        ),
        None => format!(
            "the cursor `{cursor}` is ahead of the channel, which has no messages yet; poll without a cursor to wait for the next one"
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(HubError::from(CursorError::Format).status(), 400);
        assert_eq!(HubError::from(ChannelNameError::Empty).status(), 400);
        let ahead = HubError::CursorAhead {
            cursor: Cursor::new(9, 0),
            newest: Some(Cursor::new(5, 1)),
        };
        assert_eq!(ahead.status(), 400);
        assert!(
            ahead.to_string().contains("newest message `5-1`"),
            "{ahead}"
        );
        assert_eq!(HubError::QueueFull { max: 1 }.status(), 507);
        assert_eq!(HubError::Unavailable("down".into()).status(), 503);
        assert_eq!(HubError::Corrupt("?".into()).status(), 500);
    }
}
