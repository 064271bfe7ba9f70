//! Query strings: strict decoding into pairs (invalid percent-encoding is the client's error,
//! 400) and encoding pairs back, repeated names kept in order.
//!
//! Decoding follows `application/x-www-form-urlencoded`, as servers do: `+` is a space.
//! Encoding writes a space as `+` and percent-encodes everything but `A–Z a–z 0–9 * - . _`.

use crate::error::MappingError;

/// Decodes a raw query string (without the `?`) into pairs. Empty pieces (`a=1&&b=2`) are
/// skipped; a piece without `=` is a name with an empty value. A `%` not followed by two hex
/// digits, or bytes that do not decode to UTF-8, are [`MappingError::InvalidQuery`].
pub fn parse_query(raw: &str) -> Result<Vec<(String, String)>, MappingError> {
    let mut pairs = Vec::new();
    for piece in raw.split('&').filter(|piece| !piece.is_empty()) {
        let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
        pairs.push((decode(name)?, decode(value)?));
    }
    Ok(pairs)
}

/// Encodes pairs into a query string (without the `?`); empty pairs give an empty string.
pub fn encode_query(pairs: &[(String, String)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        serializer.append_pair(name, value);
    }
    serializer.finish()
}

fn decode(text: &str) -> Result<String, MappingError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let high = bytes.get(i + 1).copied().and_then(hex);
                let low = bytes.get(i + 2).copied().and_then(hex);
                let (Some(high), Some(low)) = (high, low) else {
                    return Err(MappingError::InvalidQuery(format!(
                        "`%` must be followed by two hex digits, at byte {i} of `{}`",
                        truncate(text)
                    )));
                };
                out.push(high << 4 | low);
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| MappingError::InvalidQuery("a percent-encoded value is not UTF-8".to_owned()))
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// At most 64 characters of client text in an error message.
fn truncate(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn decodes_repeated_keys_in_order() {
        let decoded = parse_query("a=1&b=x%20y&a=2&&flag&c=%E2%9C%93+ok").expect("valid");
        assert_eq!(
            decoded,
            pairs(&[
                ("a", "1"),
                ("b", "x y"),
                ("a", "2"),
                ("flag", ""),
                ("c", "✓ ok")
            ])
        );
    }

    #[test]
    fn invalid_percent_encoding_is_a_400() {
        for bad in ["a=%zz", "a=%4", "a=%", "%G1=1", "a=%+1"] {
            let error = parse_query(bad).expect_err(bad);
            assert_eq!(error.status(), 400, "{bad}");
            assert!(matches!(error, MappingError::InvalidQuery(_)));
        }
        assert!(parse_query("a=%FF").is_err(), "not UTF-8");
    }

    #[test]
    fn encodes_and_round_trips() {
        let original = pairs(&[("q", "a b&c=d"), ("q", "✓"), ("e", ""), ("x/y", "100%")]);
        let encoded = encode_query(&original);
        assert_eq!(encoded, "q=a+b%26c%3Dd&q=%E2%9C%93&e=&x%2Fy=100%25");
        assert_eq!(parse_query(&encoded).expect("valid"), original);
        assert_eq!(encode_query(&[]), "");
    }
}
