//! JSON bodies: which content types are JSON, parsing with a size limit and a depth limit, and
//! serialising back.
//!
//! Depth: serde_json refuses nesting deeper than 128 levels (its recursion limit, on by
//! default), so a body nested 10,000 levels deep is a 400, not a stack overflow — and no value
//! deeper than that ever exists for the rest of the engine to recurse into.

use crate::error::MappingError;
use bytes::Bytes;
use serde_json::Value;

/// `application/json` and `application/…+json` (any parameters, any case).
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype.len() > 5 && subtype.to_ascii_lowercase().ends_with("+json"))
}

/// Parses a JSON body of at most `limit` bytes: over it, 413; not JSON or nested too deep, 400.
pub fn parse_json(bytes: &[u8], limit: usize) -> Result<Value, MappingError> {
    if bytes.len() > limit {
        return Err(MappingError::TooLarge { limit });
    }
    parse_unbounded(bytes)
}

/// Parses without a size check (the gateway enforced its limit while reading).
pub(crate) fn parse_unbounded(bytes: &[u8]) -> Result<Value, MappingError> {
    serde_json::from_slice(bytes).map_err(|error| MappingError::InvalidJson(error.to_string()))
}

/// Serialises a body for the upstream (or the client); set `Content-Length` to its length.
pub fn to_bytes(value: &Value) -> Bytes {
    // Room for a typical body at once, rather than growing from serde_json's 128 bytes.
    let mut out = Vec::with_capacity(1024);
    // Serialising a `Value` into memory cannot fail: its keys are strings and it holds no
    // non-finite numbers. Fall back to `null` rather than panic.
    if serde_json::to_writer(&mut out, value).is_err() {
        return Bytes::from_static(b"null");
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/problem+json",
            "application/vnd.api+json",
        ] {
            assert!(is_json(yes), "{yes}");
        }
        for no in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/+json",
            "json",
            "",
            "text/json",
        ] {
            assert!(!is_json(no), "{no}");
        }
    }

    #[test]
    fn not_json_is_a_400() {
        let error = parse_json(b"{\"a\": ", 1024).expect_err("truncated");
        assert_eq!(error.status(), 400);
        assert!(matches!(error, MappingError::InvalidJson(_)));
        assert_eq!(parse_json(b"hello", 1024).map_err(|e| e.status()), Err(400));
    }

    #[test]
    fn over_the_limit_is_a_413() {
        let error = parse_json(&[b' '; 11], 10).expect_err("too large");
        assert_eq!(error.status(), 413);
    }

    #[test]
    fn ten_thousand_levels_are_refused_without_overflow() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let error = parse_json(deep.as_bytes(), usize::MAX).expect_err("too deep");
        assert_eq!(error.status(), 400);
        assert!(error.to_string().contains("recursion limit"), "{error}");
        let deep = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
        assert_eq!(
            parse_json(deep.as_bytes(), usize::MAX).map_err(|e| e.status()),
            Err(400)
        );
        // 100 levels are fine.
        let ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(parse_json(ok.as_bytes(), usize::MAX).is_ok());
    }

    #[test]
    fn a_hundred_thousand_elements_work() {
        let big = format!("[{}0]", "0,".repeat(99_999));
        let value = parse_json(big.as_bytes(), usize::MAX).expect("parses");
        assert_eq!(value.as_array().map(Vec::len), Some(100_000));
        assert_eq!(to_bytes(&value).len(), big.len());
    }
}
