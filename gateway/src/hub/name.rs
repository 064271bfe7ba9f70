//! Channel names: what a name may contain once the route's template has been expanded.
//!
//! Allowed: ASCII letters and digits and `. _ ~ - : @ / + = | !`, 1 to `max_len` bytes. That
//! covers `user:{claim.sub}` for the subs identity providers issue (UUIDs, e-mail addresses,
//! `auth0|1234`), and keeps out whitespace, control characters, quotes, `{}` (Redis Cluster hash
//! tags), `*?[]` (Redis patterns) and anything non-ASCII, so a name is safe in a Redis key, a log
//! line and a problem+json `detail`.

/// Why a channel name was refused (→ 400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelNameError {
    #[error("the channel name is empty")]
    Empty,
    #[error("the channel name is {len} bytes long; the limit is {max}")]
    TooLong { len: usize, max: usize },
    #[error("the channel name contains {found:?} at byte {at}; allowed are ASCII letters, digits and . _ ~ - : @ / + = | !")]
    BadCharacter { found: char, at: usize },
}

/// Checks a channel name after template expansion. `max_len` is `channels.max_name_length`.
pub fn validate_channel_name(name: &str, max_len: usize) -> Result<(), ChannelNameError> {
    if name.is_empty() {
        return Err(ChannelNameError::Empty);
    }
    if name.len() > max_len {
        return Err(ChannelNameError::TooLong {
            len: name.len(),
            max: max_len,
        });
    }
    match name.char_indices().find(|&(_, c)| !allowed(c)) {
        Some((at, found)) => Err(ChannelNameError::BadCharacter { found, at }),
        None => Ok(()),
    }
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '.' | '_' | '~' | '-' | ':' | '@' | '/' | '+' | '=' | '|' | '!'
        )
}

/// Why an event name was refused (→ 400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventNameError {
    #[error("the event name is {len} bytes long; the limit is {max}")]
    TooLong { len: usize, max: usize },
    #[error("the event name contains {found:?} at byte {at}; allowed are ASCII letters, digits and . _ - :")]
    BadCharacter { found: char, at: usize },
    #[error("`{0}` is an event name the gateway sends itself (reset, error, base64, message)")]
    Reserved(String),
}

/// The longest event name.
pub const MAX_EVENT_NAME: usize = 64;

/// Checks an event name given on a publish: a short token (it becomes an `event:` line of a
/// Server-Sent Events stream, so never a line break), and not one the gateway sends itself.
pub fn validate_event_name(name: &str) -> Result<(), EventNameError> {
    if name.len() > MAX_EVENT_NAME {
        return Err(EventNameError::TooLong {
            len: name.len(),
            max: MAX_EVENT_NAME,
        });
    }
    let token = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':');
    if let Some((at, found)) = name.char_indices().find(|&(_, c)| !token(c)) {
        return Err(EventNameError::BadCharacter { found, at });
    }
    if matches!(name, "reset" | "error" | "base64" | "message") {
        return Err(EventNameError::Reserved(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn accepts_usual_names() {
        for name in [
            "updates",
            "user:42",
            "user:a@b.example",
            "auth0|5f1c",
            "jobs/7e3a-9b",
            "a",
        ] {
            assert_eq!(validate_channel_name(name, 200), Ok(()), "{name}");
        }
    }

    #[test]
    fn refuses_long_empty_and_odd_names() {
        let long = "a".repeat(10 * 1024);
        assert_eq!(
            validate_channel_name(&long, 200),
            Err(ChannelNameError::TooLong {
                len: 10 * 1024,
                max: 200
            })
        );
        assert_eq!(validate_channel_name("", 200), Err(ChannelNameError::Empty));
        for bad in ["a b", "a\nb", "tag{x}", "p*", "é", "a\"b", "a%20b", "a\0"] {
            assert!(
                matches!(
                    validate_channel_name(bad, 200),
                    Err(ChannelNameError::BadCharacter { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
