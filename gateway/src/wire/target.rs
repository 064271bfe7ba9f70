//! The one normalized form of a request path, decided before routing so that the route, its
//! auth, its mapping and the upstream all see the same path; a path an origin could read
//! differently is refused. See docs/security.md.

use std::borrow::Cow;

/// Why a path cannot be normalized (→ 400 `bad-path`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path contains an encoded slash (%2F), which origins may read as a separator")]
    EncodedSlash,
    #[error("the path contains a backslash, raw or encoded (%5C), which origins may read as a separator")]
    Backslash,
    #[error("the path contains an encoded NUL (%00)")]
    EncodedNul,
    #[error("the path has a `.` or `..` segment with parameters (`..;`), which some origins read as a dot segment")]
    DotParams,
    #[error("the path contains invalid percent-encoding at byte {0}")]
    BadPercent(usize),
    #[error("the path contains a byte that must be percent-encoded (0x{0:02x})")]
    BadByte(u8),
    #[error("the request target is neither a path nor an absolute http(s) URI")]
    NotAbsolute,
}

/// Whether `byte` is an RFC 3986 unreserved character, which percent-encoding must not change.
fn unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Whether `path` is already normal: no percent sign, no dot segment, no empty segment, no byte
/// that needs a look. Most paths are, and cost one scan.
fn already_normal(path: &[u8]) -> Result<bool, PathError> {
    let mut normal = true;
    for (index, &byte) in path.iter().enumerate() {
        match byte {
            b'%' => normal = false,
            b'\\' => return Err(PathError::Backslash),
            0..=0x20 | 0x7f..=0xff => return Err(PathError::BadByte(byte)),
            b'/' => {
                let next = &path[index + 1..];
                if next.first() == Some(&b'/')
                    || next == b"."
                    || next == b".."
                    || next.starts_with(b"./")
                    || next.starts_with(b"../")
                    || next.starts_with(b".;")
                    || next.starts_with(b"..;")
                {
                    normal = false;
                }
            }
            _ => {}
        }
    }
    Ok(normal)
}

/// Decodes what must be decoded in one segment, into `out`.
fn decode_segment(segment: &[u8], offset: usize, out: &mut Vec<u8>) -> Result<(), PathError> {
    let mut index = 0;
    while index < segment.len() {
        let byte = segment[index];
        if byte != b'%' {
            out.push(byte);
            index += 1;
            continue;
        }
        let (Some(high), Some(low)) = (
            segment.get(index + 1).copied().and_then(hex),
            segment.get(index + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::BadPercent(offset + index));
        };
        let decoded = high << 4 | low;
        match decoded {
            b'/' => return Err(PathError::EncodedSlash),
            b'\\' => return Err(PathError::Backslash),
            0 => return Err(PathError::EncodedNul),
            _ if unreserved(decoded) => out.push(decoded),
            _ => {
                const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
                out.extend_from_slice(&[b'%', DIGITS[usize::from(high)], DIGITS[usize::from(low)]]);
            }
        }
        index += 3;
    }
    Ok(())
}

/// The normalized form of `path` (the request target's path, without its query): borrowed when
/// it is already normal.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if already_normal(bytes)? {
        return Ok(Cow::Borrowed(path));
    }
    // Segments after decoding, as ranges of `decoded`; dot segments pop or vanish.
    let mut decoded: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut segments: Vec<(usize, usize)> = Vec::new();
    let mut offset = 1;
    let raw_segments: Vec<&[u8]> = bytes[1..].split(|&b| b == b'/').collect();
    let last = raw_segments.len() - 1;
    // Whether the normalized path ends with a slash: a trailing empty segment, or a final dot
    // segment (`/a/b/..` is `/a/`).
    let mut trailing_slash = false;
    for (index, raw) in raw_segments.iter().enumerate() {
        let start = decoded.len();
        decode_segment(raw, offset, &mut decoded)?;
        offset += raw.len() + 1;
        let segment = &decoded[start..];
        // Tomcat and Spring drop `;params` from a segment before they resolve dot segments.
        if segment.starts_with(b".;") || segment.starts_with(b"..;") {
            return Err(PathError::DotParams);
        }
        let is_last = index == last;
        match segment {
            b"" => {
                decoded.truncate(start);
                trailing_slash = is_last;
            }
            b"." => {
                decoded.truncate(start);
                trailing_slash = is_last;
            }
            b".." => {
                decoded.truncate(start);
                segments.pop();
                trailing_slash = is_last;
            }
            _ => {
                segments.push((start, decoded.len()));
                trailing_slash = false;
            }
        }
    }
    let mut normal = String::with_capacity(bytes.len());
    for &(start, end) in &segments {
        normal.push('/');
        // Only ASCII went in: raw bytes were checked, decoded ones are unreserved.
        normal.push_str(std::str::from_utf8(&decoded[start..end]).unwrap_or_default());
    }
    if trailing_slash || segments.is_empty() {
        normal.push('/');
    }
    Ok(Cow::Owned(normal))
}

/// Normalizes the path of `header`'s target in place, so that everything after this sees (and
/// the upstream receives) the normal form. An HTTP/1 absolute-form target
/// (`GET http://host/path`) becomes origin form and its authority replaces `Host` (RFC 9112
/// §3.2.2). HTTP/2 requests keep their scheme and authority.
pub fn normalize_target(
    header: &mut pingora_http::RequestHeader,
    http2: bool,
) -> Result<(), PathError> {
    if !header.raw_path_is_utf8() {
        return Err(PathError::BadByte(
            header
                .raw_path()
                .iter()
                .copied()
                .find(|b| !b.is_ascii())
                .unwrap_or(0xff),
        ));
    }
    let raw = header.raw_path();
    if raw == b"*" {
        return Ok(());
    }
    // Absolute form: Pingora keeps the whole target for the wire and only its path in `uri`.
    let authority = if http2 || raw.first() == Some(&b'/') {
        None
    } else {
        let absolute = http::Uri::try_from(raw).map_err(|_| PathError::NotAbsolute)?;
        match (absolute.scheme_str(), absolute.authority()) {
            (Some("http" | "https"), Some(authority)) => Some(authority.clone()),
            _ => return Err(PathError::NotAbsolute),
        }
    };
    let uri = &header.uri;
    let path = normalize(uri.path())?;
    if authority.is_none() && matches!(path, Cow::Borrowed(_)) {
        return Ok(());
    }
    let target = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.into_owned(),
    };
    let mut parts = http::uri::Parts::default();
    // Made of bytes the URI already held, so it parses.
    parts.path_and_query =
        Some(http::uri::PathAndQuery::try_from(target).map_err(|_| PathError::NotAbsolute)?);
    if http2 {
        parts.scheme = uri.scheme().cloned();
        parts.authority = uri.authority().cloned();
    }
    let normal = http::Uri::from_parts(parts).map_err(|_| PathError::NotAbsolute)?;
    header.set_uri(normal);
    if let Some(authority) = authority {
        header.remove_header(&http::header::HOST);
        header
            .insert_header(http::header::HOST, authority.as_str())
            .map_err(|_| PathError::NotAbsolute)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> String {
        normalize(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .into_owned()
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for path in [
            "/",
            "/a",
            "/a/b/",
            "/.well-known/x",
            "/a.b/..c/c..",
            "/a-b_c~d",
        ] {
            assert!(matches!(normalize(path), Ok(Cow::Borrowed(_))), "{path}");
        }
    }

    #[test]
    fn dot_segments_and_encoded_dots_are_removed() {
        assert_eq!(norm("/pub/../admin/secret"), "/admin/secret");
        assert_eq!(norm("/pub/%2e%2e/admin/secret"), "/admin/secret");
        assert_eq!(norm("/pub/%2E%2E/admin/secret"), "/admin/secret");
        assert_eq!(norm("/pub/.%2e/admin/secret"), "/admin/secret");
        assert_eq!(norm("/pub/%2e./admin"), "/admin");
        assert_eq!(norm("/pub/./../admin"), "/admin");
        assert_eq!(norm("/../../admin"), "/admin");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("/a/b/."), "/a/b/");
        assert_eq!(norm("/a/.."), "/");
        assert_eq!(norm("/.."), "/");
        assert_eq!(norm("/a/b/../c"), "/a/c");
    }

    #[test]
    fn slashes_merge_and_unreserved_characters_decode() {
        assert_eq!(norm("//admin/secret"), "/admin/secret");
        assert_eq!(norm("/a//b///c/"), "/a/b/c/");
        assert_eq!(norm("/%61dmin/%7Euser"), "/admin/~user");
        assert_eq!(norm("/a%20b/%3a"), "/a%20b/%3A");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        assert_eq!(normalize("/a%2Fb"), Err(PathError::EncodedSlash));
        assert_eq!(normalize("/a%2fb"), Err(PathError::EncodedSlash));
        assert_eq!(normalize("/a%5cb"), Err(PathError::Backslash));
        assert_eq!(normalize("/a\\b"), Err(PathError::Backslash));
        assert_eq!(normalize("/a%00"), Err(PathError::EncodedNul));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadPercent(2)));
        assert_eq!(normalize("/a%4"), Err(PathError::BadPercent(2)));
        assert_eq!(normalize("/a b"), Err(PathError::BadByte(b' ')));
        assert_eq!(normalize("/a\u{e9}"), Err(PathError::BadByte(0xc3)));
        assert_eq!(normalize("a"), Err(PathError::NotAbsolute));
        assert_eq!(normalize("/pub/..;/admin"), Err(PathError::DotParams));
        assert_eq!(
            normalize("/pub/%2e%2e;x=1/admin"),
            Err(PathError::DotParams)
        );
        assert_eq!(normalize("/pub/.;/admin"), Err(PathError::DotParams));
        assert!(matches!(normalize("/pub/a;b/..c;d"), Ok(Cow::Borrowed(_))));
    }

    /// Path pieces an attacker would combine: dot segments plain, encoded and mixed, encoded
    /// letters, empty segments and the route prefixes.
    const PIECES: &[&str] = &[
        "pub", "admin", "secret", "files", "a", ".", "..", "%2e", "%2E", ".%2e", "%2e.", "%2e%2E",
        "", "%61dmin", "%70ub", "x.y", "..a", "%7e",
    ];

    fn reference(path: &str) -> String {
        // An independent reading: decode the few encodings the pieces use, then resolve
        // segments with a stack.
        let decoded = path
            .replace("%2e", ".")
            .replace("%2E", ".")
            .replace("%61", "a")
            .replace("%70", "p")
            .replace("%7e", "~");
        let mut stack: Vec<&str> = Vec::new();
        let segments: Vec<&str> = decoded[1..].split('/').collect();
        let mut trailing = false;
        for (i, segment) in segments.iter().enumerate() {
            let last = i == segments.len() - 1;
            match *segment {
                "" | "." => trailing = last,
                ".." => {
                    stack.pop();
                    trailing = last;
                }
                other => {
                    stack.push(other);
                    trailing = false;
                }
            }
        }
        let mut out = String::new();
        for segment in &stack {
            out.push('/');
            out.push_str(segment);
        }
        if trailing || stack.is_empty() {
            out.push('/');
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn normal_paths_are_normal_and_match_an_independent_reading(
            pieces in proptest::collection::vec(proptest::sample::select(PIECES), 0..8)
        ) {
            let path = format!("/{}", pieces.join("/"));
            let normal = normalize(&path).expect("only normalizable pieces");
            let expected = reference(&path);
            proptest::prop_assert_eq!(&*normal, expected.as_str());
            // Normal means: stable, no dot segment, no empty segment but a trailing one.
            proptest::prop_assert!(matches!(normalize(&normal), Ok(Cow::Borrowed(_))));
            let inner = normal.trim_end_matches('/');
            proptest::prop_assert!(!inner.contains("//"));
            proptest::prop_assert!(inner.split('/').all(|s| s != "." && s != ".."));
            proptest::prop_assert!(!normal.contains('%') || normal.contains("%7E"));
        }

        #[test]
        fn an_encoded_slash_anywhere_is_refused(
            before in proptest::collection::vec(proptest::sample::select(PIECES), 0..4),
            slash in proptest::sample::select(&["%2f", "%2F", "%5c", "%5C"][..]),
        ) {
            let path = format!("/{}/{slash}/admin", before.join("/"));
            proptest::prop_assert!(normalize(&path).is_err());
        }
    }
}
