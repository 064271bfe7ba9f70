//! The hub's error: one enum for poll and publish, each variant knowing its HTTP status.

use super::cursor::CursorError;
use super::name::ChannelNameError;

/// What can go wrong in a poll or a publish. The gateway turns it into problem+json with
/// [`HubError::status`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The client's cursor is not a cursor at all (→ 400).
    #[error("bad cursor: {0}")]
    BadCursor(#[from] CursorError),
    /// The channel name (after template expansion) is not allowed (→ 400).
    #[error("bad channel name: {0}")]
    BadChannel(#[from] ChannelNameError),
    /// A queue channel already holds `max` undelivered messages (→ 507).
    #[error("the queue holds {max} undelivered messages, its limit")]
    QueueFull { max: usize },
    /// The backplane (Redis) cannot be reached or did not answer in time (→ 503).
    #[error("the channel backplane is unavailable: {0}")]
    Unavailable(String),
    /// The backplane answered something Holdfast did not write (→ 500).
    #[error("the channel backplane returned unexpected data: {0}")]
    Corrupt(String),
}

impl HubError {
    /// The HTTP status the gateway answers with.
    pub fn status(&self) -> u16 {
        match self {
            HubError::BadCursor(_) | HubError::BadChannel(_) => 400,
            HubError::QueueFull { .. } => 507,
            HubError::Unavailable(_) => 503,
            HubError::Corrupt(_) => 500,
        }
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
        assert_eq!(HubError::QueueFull { max: 1 }.status(), 507);
        assert_eq!(HubError::Unavailable("down".into()).status(), 503);
        assert_eq!(HubError::Corrupt("?".into()).status(), 500);
    }
}
