//! Path rewriting: where a route pattern's captures sit, percent-encoding values that go into a
//! path, replacing a capture's segment, and the rule on dot segments.
//!
//! **Dot segments are refused, not normalised.** A rewritten path with a `.` or `..` segment
//! (also when written `%2e%2e`) fails the rule with 400. Normalising would let a value from the
//! client or a token climb out of the prefix the route meant to confine it to
//! (`/tenants/{claim.org}/…` with `org = ".."`); refusing keeps the upstream path predictable.
//! Values from anywhere but the path itself are percent-encoded as one segment (`/` becomes
//! `%2F`), so only literal text in the config and captured path text can add segments.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// Characters encoded in a value written into a path, besides controls and non-ASCII.
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']');

/// The same, and `/`: a value that must stay one segment.
const SEGMENT: &AsciiSet = &PATH.add(b'/');

/// Where a capture of the route's pattern sits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CaptureSlot {
    pub name: String,
    /// The segment's index, counting from 0 after the leading `/`.
    pub index: usize,
    /// `{*rest}`: the capture takes this segment and every one after it.
    pub tail: bool,
}

/// The captures of a pattern such as `/users/{id}/files/{*rest}`, with their positions.
pub(crate) fn layout(pattern: &str) -> Result<Vec<CaptureSlot>, String> {
    if !pattern.starts_with('/') {
        return Err(format!("the route pattern `{pattern}` must start with `/`"));
    }
    let mut slots = Vec::new();
    for (index, segment) in pattern.split('/').skip(1).enumerate() {
        if let Some(inner) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let (name, tail) = match inner.strip_prefix('*') {
                Some(name) => (name, true),
                None => (inner, false),
            };
            slots.push(CaptureSlot {
                name: name.to_owned(),
                index,
                tail,
            });
        } else if segment.contains(['{', '}']) {
            return Err(format!(
                "the route pattern `{pattern}` has a malformed capture `{segment}`"
            ));
        }
    }
    Ok(slots)
}

/// Encodes a value to stand as one path segment (`/` encoded too).
pub(crate) fn encode_segment(value: &str) -> String {
    utf8_percent_encode(value, SEGMENT).to_string()
}

/// Encodes a value to stand as a path or a path's tail (`/` kept).
pub(crate) fn encode_path(value: &str) -> String {
    utf8_percent_encode(value, PATH).to_string()
}

/// Decodes captured path text for use outside the path (invalid UTF-8 becomes U+FFFD).
pub(crate) fn decode(raw: &str) -> String {
    percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

/// Replaces the segment at `slot` (or, for a tail capture, every segment from it on).
pub(crate) fn replace_capture(path: &str, slot: &CaptureSlot, encoded: &str) -> Option<String> {
    let mut segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    if slot.index >= segments.len() {
        return None;
    }
    if slot.tail {
        segments.truncate(slot.index);
        segments.push(encoded);
    } else {
        segments[slot.index] = encoded;
    }
    Some(format!("/{}", segments.join("/")))
}

/// A path the rules may hand to the upstream: starts with `/`, no query or fragment, and no
/// `.`/`..` segment (see the module's doc).
pub(crate) fn check(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("the rewritten path must start with `/`".to_owned());
    }
    if path.contains(['?', '#']) {
        return Err("the rewritten path must not hold `?` or `#`".to_owned());
    }
    let dot = path.split('/').any(|segment| {
        segment.len() <= 6
            && segment.contains(['.', '%'])
            && matches!(decode(segment).as_str(), "." | "..")
    });
    if dot {
        return Err("dot".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_finds_captures() {
        let slots = layout("/users/{id}/files/{*rest}").expect("valid");
        assert_eq!(
            slots[0],
            CaptureSlot {
                name: "id".into(),
                index: 1,
                tail: false
            }
        );
        assert_eq!(
            slots[1],
            CaptureSlot {
                name: "rest".into(),
                index: 3,
                tail: true
            }
        );
        assert!(layout("/a/x{id}").is_err());
    }

    #[test]
    fn replaces_segments() {
        let slots = layout("/users/{id}/files/{*rest}").expect("valid");
        assert_eq!(
            replace_capture("/users/7/files/a/b", &slots[0], "42").as_deref(),
            Some("/users/42/files/a/b")
        );
        assert_eq!(
            replace_capture("/users/7/files/a/b", &slots[1], "c").as_deref(),
            Some("/users/7/files/c")
        );
        assert_eq!(replace_capture("/users", &slots[0], "42"), None);
    }

    #[test]
    fn encodes_values() {
        assert_eq!(encode_segment("a b/c?d%"), "a%20b%2Fc%3Fd%25");
        assert_eq!(encode_path("/a b/c"), "/a%20b/c");
        assert_eq!(decode("a%20b"), "a b");
    }

    #[test]
    fn dot_segments_are_refused() {
        for bad in [
            "/a/../b",
            "/a/./b",
            "/..",
            "/a/%2e%2E/b",
            "/a/.%2e",
            "/a/..",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
        for good in ["/a/b", "/a/..b/c", "/a/.well-known", "/a/b.", "/"] {
            assert!(check(good).is_ok(), "{good}");
        }
    }
}
