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
