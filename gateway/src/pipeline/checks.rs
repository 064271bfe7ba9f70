//! Checks on the request head that run before routing: target length (414), header count and
//! size (431), and
//! ambiguous framing — `Content-Length` together with `Transfer-Encoding` is refused outright
//! (RFC 9112 §6.1 allows it; a gateway that forwards it invites request smuggling).

use crate::pipeline::inbound::Inbound;
use crate::problem::Problem;

/// The first problem with the request head, if any.
pub fn check_head(
    inbound: &impl Inbound,
    max_headers: usize,
    max_header_bytes: usize,
    max_url_bytes: usize,
) -> Option<Problem> {
    let header = inbound.head();
    let target = header.raw_path().len();
    if target > max_url_bytes {
        return Some(Problem::new(
            414,
            "uri-too-long",
            "URI Too Long",
            format!("the request target is longer than {max_url_bytes} bytes"),
        ));
    }
    if header.headers.len() > max_headers {
        return Some(too_large(format!(
            "the request has more than {max_headers} headers"
        )));
    }
    let raw = inbound.raw_head();
    let size = match &raw {
        Some(raw) => raw.len(),
        None => {
            header
                .headers
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 4)
                .sum::<usize>()
                + header.uri.to_string().len()
        }
    };
    if size > max_header_bytes {
        return Some(too_large(format!(
            "the request head is larger than {max_header_bytes} bytes"
        )));
    }
    // Pingora drops Content-Length when Transfer-Encoding is present; the raw head still shows it.
    if header.headers.contains_key(http::header::TRANSFER_ENCODING) {
        if let Some(raw) = &raw {
            if has_header_line(raw, b"content-length") {
                return Some(Problem::new(
                    400,
                    "ambiguous-framing",
                    "Bad Request",
                    "the request has both Content-Length and Transfer-Encoding",
                ));
            }
        }
    }
    None
}

fn too_large(detail: String) -> Problem {
    Problem::new(
        431,
        "header-too-large",
        "Request Header Fields Too Large",
        detail,
    )
}

/// Whether a raw HTTP/1 head has a header line named `name` (lower case).
fn has_header_line(raw: &[u8], name: &[u8]) -> bool {
    raw.split(|&b| b == b'\n').skip(1).any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()..].trim_ascii_start().first() == Some(&b':')
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_header_lines_case_insensitively() {
        let raw = b"POST / HTTP/1.1\r\nHost: x\r\nCONTENT-LENGTH: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(super::has_header_line(raw, b"content-length"));
        assert!(!super::has_header_line(
            b"GET /content-length: HTTP/1.1\r\n\r\n",
            b"content-length"
        ));
    }
}
