//! Checking an HTTP/1 request head as it arrived on the wire, before Pingora parses it: a
//! malformed or ambiguous head is refused with a problem that names the fault, and an
//! absolute-form target is rewritten into origin form. See docs/security.md.

use crate::problem::Problem;
use crate::wire::framing::Framing;

/// What the rest of the gateway needs of a checked head.
pub struct Checked<'a> {
    /// The head's length in bytes; what follows is body, or the next request.
    pub len: usize,
    pub framing: Framing,
    /// The request asks to switch protocols (`Upgrade`, e.g. WebSocket).
    pub upgrade: bool,
    pub method: &'a str,
    pub target: &'a str,
    pub host: Option<&'a str>,
}

/// Header slots on the stack; a limit above it takes them from the heap.
const STACK_HEADERS: usize = 128;

fn malformed(detail: impl Into<String>) -> Problem {
    Problem::new(400, "malformed-request", "Bad Request", detail)
}

/// Checks the complete head at the start of `buf`.
pub fn check(buf: &[u8], max_headers: usize) -> Result<Checked<'_>, Problem> {
    let line_end = buf
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| malformed("the request line does not end"))?;
    let line = buf[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..line_end]);
    let http10 = request_line(line)?;
    if let Some(at) = folded_line(&buf[line_end + 1..]) {
        return Err(malformed(format!(
            "header line {at} is folded (obs-fold: it starts with a space or tab)"
        )));
    }
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut heap = Vec::new();
    let slots: &mut [httparse::Header<'_>] = if max_headers <= STACK_HEADERS {
        &mut stack[..max_headers]
    } else {
        heap.resize(max_headers, httparse::EMPTY_HEADER);
        &mut heap
    };
    let mut request = httparse::Request::new(slots);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err(malformed("the request head is incomplete")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Problem::new(
                431,
                "header-too-large",
                "Request Header Fields Too Large",
                format!("the request has more than {max_headers} headers"),
            ))
        }
        Err(httparse::Error::HeaderName) => {
            return Err(malformed(
                "a header name is not a token (spaces, control characters or a missing colon)",
            ))
        }
        Err(httparse::Error::HeaderValue | httparse::Error::NewLine) => {
            return Err(malformed(
                "a header value contains a control character (NUL, a bare CR or LF)",
            ))
        }
        Err(error) => return Err(malformed(format!("the request line is malformed: {error}"))),
    };
    let (Some(method), Some(target)) = (request.method, request.path) else {
        return Err(malformed("the request line is malformed"));
    };
    if method == "CONNECT" {
        return Err(Problem::new(
            501,
            "not-implemented",
            "Not Implemented",
            "CONNECT is not supported: this gateway does not open tunnels",
        ));
    }
    let mut host = None;
    let mut hosts = 0;
    let mut length: Option<&[u8]> = None;
    let mut lengths = 0;
    let mut codings: Vec<&[u8]> = Vec::new();
    let mut upgrade = false;
    for header in request.headers.iter() {
        let name = header.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            host = Some(header.value);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            length = Some(header.value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings.extend(header.value.split(|&b| b == b',').map(<[u8]>::trim_ascii));
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade = true;
        }
    }
    let host = match (hosts, host) {
        (0, _) if http10 => None,
        (0, _) => return Err(malformed("an HTTP/1.1 request needs a Host header")),
        (1, Some(value)) => Some(valid_host(value)?),
        _ => return Err(malformed("the request has more than one Host header")),
    };
    let framing = framing(http10, &codings, lengths, length)?;
    Ok(Checked {
        len,
        framing,
        upgrade: upgrade && !http10,
        method,
        target,
        host,
    })
}

/// Checks `METHOD SP target SP HTTP/1.x`; whether it is HTTP/1.0.
fn request_line(line: &[u8]) -> Result<bool, Problem> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(
            "the request line is not `METHOD target HTTP/1.1`",
        ));
    };
    if parts.next().is_some() {
        return Err(malformed(
            "the request target contains a space, or the request line has extra parts",
        ));
    }
    if method.is_empty() || !method.iter().all(|&b| is_token(b)) {
        return Err(malformed("the request method is not a token"));
    }
    if target.is_empty() {
        return Err(malformed("the request target is empty"));
    }
    if let Some(&byte) = target.iter().find(|&&b| !(0x21..0x7f).contains(&b)) {
        return Err(malformed(format!(
            "the request target contains a byte that is not visible ASCII (0x{byte:02x})"
        )));
    }
    // The URI parser Pingora reads the target with: what it refuses is refused here, with a
    // reason, rather than by Pingora with an empty 400.
    if target.first() == Some(&b'/') && http::uri::PathAndQuery::try_from(target).is_err() {
        return Err(malformed(
            "the request target contains a character that must be percent-encoded",
        ));
    }
    match version {
        b"HTTP/1.1" => Ok(false),
        b"HTTP/1.0" => Ok(true),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Err(Problem::new(
                505,
                "version-not-supported",
                "HTTP Version Not Supported",
                format!(
                    "HTTP version {}.{} is not supported on this connection: send HTTP/1.0 or HTTP/1.1",
                    char::from(*major),
                    char::from(*minor)
                ),
            ))
        }
        _ => Err(malformed("the request line does not end with an HTTP version")),
    }
}

/// The 1-based number of the first header line that is a continuation of the previous one.
fn folded_line(headers: &[u8]) -> Option<usize> {
    headers
        .split(|&b| b == b'\n')
        .take_while(|line| !line.is_empty() && *line != b"\r")
        .position(|line| matches!(line.first(), Some(b' ' | b'\t')))
        .map(|index| index + 1)
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2), or empty.
fn valid_host(value: &[u8]) -> Result<&str, Problem> {
    let invalid = || malformed("the Host header is not a valid host name, address and port");
    let (host, port) = match value.first() {
        Some(b'[') => {
            let close = value.iter().position(|&b| b == b']').ok_or_else(invalid)?;
            let literal = &value[1..close];
            if literal.is_empty()
                || !literal
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return Err(invalid());
            }
            (&value[..=close], &value[close + 1..])
        }
        _ => {
            let colon = value.iter().position(|&b| b == b':');
            let (host, port) = value.split_at(colon.unwrap_or(value.len()));
            let reg_name = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b);
            if !host.iter().all(|&b| reg_name(b)) {
                return Err(invalid());
            }
            (host, port)
        }
    };
    if let Some(digits) = port.strip_prefix(b":") {
        if digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(invalid());
        }
    } else if !port.is_empty() {
        return Err(invalid());
    }
    if host.is_empty() && !port.is_empty() {
        return Err(invalid());
    }
    // Only ASCII passed the checks above.
    std::str::from_utf8(value).map_err(|_| invalid())
}

/// The body framing the headers declare, if it is unambiguous.
fn framing(
    http10: bool,
    codings: &[&[u8]],
    lengths: usize,
    length: Option<&[u8]>,
) -> Result<Framing, Problem> {
    if !codings.is_empty() {
        if http10 {
            return Err(malformed(
                "Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1)",
            ));
        }
        if lengths > 0 {
            return Err(Problem::new(
                400,
                "ambiguous-framing",
                "Bad Request",
                "the request has both Content-Length and Transfer-Encoding",
            ));
        }
        if let Some(other) = codings
            .iter()
            .find(|coding| !coding.eq_ignore_ascii_case(b"chunked"))
        {
            if other.is_empty() {
                return Err(malformed("Transfer-Encoding has an empty element"));
            }
            return Err(Problem::new(
                501,
                "not-implemented",
                "Not Implemented",
                format!(
                    "Transfer-Encoding `{}` is not supported; only `chunked` is",
                    String::from_utf8_lossy(other)
                ),
            ));
        }
        if codings.len() > 1 {
            return Err(malformed(
                "Transfer-Encoding lists `chunked` more than once",
            ));
        }
        return Ok(Framing::Chunked);
    }
    match (lengths, length) {
        (0, _) => Ok(Framing::None),
        (1, Some(value)) => {
            let digits = value.trim_ascii();
            if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
                return Err(malformed("Content-Length is not one decimal number"));
            }
            let text = std::str::from_utf8(digits).unwrap_or("");
            text.parse::<u64>()
                .map(Framing::Length)
                .map_err(|_| malformed("Content-Length is not one decimal number"))
        }
        _ => Err(malformed(
            "the request has more than one Content-Length header",
        )),
    }
}

/// The head rewritten in origin form when its target is absolute-form
/// (`GET http://host/path HTTP/1.1`): the path and query become the target and the URI's
/// authority replaces every `Host` (RFC 9112 §3.2.2), so routing, auth and the upstream all see
/// one host and one path. `None` for any other target.
pub fn origin_form(head: &[u8], checked: &Checked<'_>) -> Result<Option<Vec<u8>>, Problem> {
    let target = checked.target;
    if target.starts_with('/') || target == "*" || checked.method == "CONNECT" {
        return Ok(None);
    }
    let not_http = || malformed("the request target is neither a path nor an absolute http(s) URI");
    let uri = http::Uri::try_from(target).map_err(|_| not_http())?;
    let (Some("http" | "https"), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(not_http());
    };
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let path = if path.is_empty() { "/" } else { path };
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let version = head[..line_end]
        .trim_ascii_end()
        .rsplit(|&b| b == b' ')
        .next()
        .unwrap_or(b"HTTP/1.1");
    let mut out = Vec::with_capacity(head.len());
    out.extend_from_slice(checked.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.push(b' ');
    out.extend_from_slice(version);
    out.extend_from_slice(b"\r\nHost: ");
    out.extend_from_slice(authority.as_str().as_bytes());
    out.extend_from_slice(b"\r\n");
    // The header lines as they came, less Host; the head was checked, so lines are well formed.
    for line in head[line_end + 1..checked.len].split_inclusive(|&b| b == b'\n') {
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        if !name.eq_ignore_ascii_case(b"host") {
            out.extend_from_slice(line);
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(head: &str) -> (u16, String) {
        match check(head.as_bytes(), 100) {
            Ok(_) => panic!("accepted: {head:?}"),
            Err(problem) => (problem.status, problem.detail),
        }
    }

    #[test]
    fn a_plain_head_passes_with_its_framing() {
        let head = "POST /a?b HTTP/1.1\r\nHost: x.example:80\r\nContent-Length: 3\r\n\r\nabc";
        let checked = check(head.as_bytes(), 100).expect("valid");
        assert_eq!(checked.len, head.len() - 3);
        assert_eq!(checked.framing, Framing::Length(3));
        assert_eq!((checked.method, checked.target), ("POST", "/a?b"));
        assert_eq!(checked.host, Some("x.example:80"));
        let chunked = "POST / HTTP/1.1\r\nHost: [::1]:8080\r\nTransfer-Encoding: Chunked\r\n\r\n";
        assert_eq!(
            check(chunked.as_bytes(), 100).expect("valid").framing,
            Framing::Chunked
        );
        assert!(check(b"GET / HTTP/1.0\r\n\r\n", 100).is_ok());
        let upgrade =
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let checked = check(upgrade, 100).expect("valid");
        assert_eq!((checked.framing, checked.upgrade), (Framing::None, true));
        assert!(check(b"GET / HTTP/1.1\r\nHost:\r\n\r\n", 100).is_ok());
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_its_host() {
        let head = b"GET http://a.example:8080/p/../q?x=1 HTTP/1.1\r\nHost: other\r\nX: 1\r\n\r\n";
        let checked = check(head, 100).expect("valid");
        let rewritten = origin_form(head, &checked)
            .expect("http")
            .expect("rewritten");
        assert_eq!(
            String::from_utf8_lossy(&rewritten),
            "GET /p/../q?x=1 HTTP/1.1\r\nHost: a.example:8080\r\nX: 1\r\n\r\n"
        );
        let ftp = b"GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            origin_form(ftp, &check(ftp, 100).expect("valid"))
                .map_err(|p| p.status)
                .err(),
            Some(400)
        );
        let plain = b"GET /p HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(origin_form(plain, &check(plain, 100).expect("valid"))
            .expect("ok")
            .is_none());
    }

    #[test]
    fn bad_hosts_are_refused() {
        for host in [
            "a b", "a\tb", "[::1", "a/b", "<a>", "a/../b", "a:b", ":80", "a:123456",
        ] {
            let (status, detail) = refused(&format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"));
            assert_eq!(status, 400, "{host}");
            assert!(detail.contains("Host"), "{detail}");
        }
        assert!(refused("GET / HTTP/1.1\r\n\r\n").1.contains("Host"));
        assert!(refused("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n")
            .1
            .contains("Host"));
    }

    #[test]
    fn unclear_framing_is_refused() {
        let head = |headers: &str| format!("POST / HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
        assert_eq!(refused(&head("Transfer-Encoding: gzip\r\n")).0, 501);
        for headers in [
            "Transfer-Encoding: chunked, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: ,chunked\r\n",
            "Content-Length: 5, 6\r\n",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: 1e3\r\n",
            "Content-Length: 99999999999999999999\r\n",
        ] {
            assert_eq!(refused(&head(headers)).0, 400, "{headers}");
        }
        let (status, detail) = refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(status, 400);
        assert!(detail.contains("Transfer-Encoding"));
    }

    #[test]
    fn malformed_lines_are_refused_with_a_reason() {
        assert!(refused("GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n")
            .1
            .contains("fold"));
        assert!(refused("GET / HTTP/1.1\r\nHost: x\r\nA: b\0c\r\n\r\n")
            .1
            .contains("header"));
        assert!(refused("GET / HTTP/1.1\r\nHost: x\r\nA: b\rc\r\n\r\n")
            .1
            .contains("header"));
        assert_eq!(refused("GET /x HTTP/1.2\r\nHost: x\r\n\r\n").0, 505);
        assert_eq!(
            refused("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n").0,
            501
        );
        assert_eq!(refused("GET /x HTTP/2.0\r\nHost: x\r\n\r\n").0, 505);
        assert!(refused("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n")
            .1
            .contains("target"));
        assert!(refused("GET /\u{ff} HTTP/1.1\r\nHost: x\r\n\r\n")
            .1
            .contains("target"));
        for target in ["/<a>", "/`a"] {
            let head = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
            assert!(refused(&head).1.contains("target"), "{target}");
        }
        assert_eq!(refused("\u{1}\u{2} garbage\r\n\r\n").0, 400);
        let many: String = (0..300).map(|i| format!("h{i}: v\r\n")).collect();
        let (status, detail) = refused(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n"));
        assert_eq!(status, 431);
        assert!(detail.contains("headers"));
    }
}
