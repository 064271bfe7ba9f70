//! [`Reply`]: every answer the gateway writes itself — problems, poll and publish answers,
//! upstream answers of calls, fan-in and jobs, CORS preflights — as one value, built by the
//! actions and written in one place. Always with a `Content-Length`, so keep-alive clients do not
//! hang on a close-delimited body.

use crate::core::upstream::exchange::{Answer, HOP_BY_HOP};
use crate::problem::Problem;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::HeaderMap;
use pingora_http::ResponseHeader;
use std::sync::Arc;

/// An answer the gateway writes itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The connection closes after this reply (`Connection: close`): the gateway is shutting
    /// down, or the connection cannot be trusted any more.
    pub close: bool,
    /// The problem's kind, when this reply is a problem+json refusal.
    pub problem: Option<&'static str>,
    /// Headers this reply shares with many others (every poll a message answers), rendered
    /// once; written before its own.
    pub shared: Option<Arc<SharedHeaders>>,
    /// The body is the start of a stream (Server-Sent Events) that goes on after this reply:
    /// no `Content-Length`; chunked on HTTP/1.1, close-delimited on HTTP/1.0.
    pub streamed: bool,
}

/// Headers many replies carry alike, with their HTTP/1 lines rendered once.
#[derive(Debug, PartialEq)]
pub struct SharedHeaders {
    headers: Vec<(HeaderName, HeaderValue)>,
    wire: Vec<u8>,
}

impl SharedHeaders {
    pub fn new(headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        let mut wire = Vec::with_capacity(headers.len() * 40);
        header_lines(&mut wire, headers.iter().map(|(name, value)| (name, value)));
        Self { headers, wire }
    }
}

/// `name: value` lines, each ending in CR LF.
fn header_lines<'h>(
    out: &mut Vec<u8>,
    headers: impl IntoIterator<Item = (&'h HeaderName, &'h HeaderValue)>,
) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

impl Reply {
    /// `status` with no headers and an empty body.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            close: false,
            problem: None,
            shared: None,
            streamed: false,
        }
    }

    /// `status`, not to be cached (`Cache-Control: no-store`): what the gateway answers from
    /// state that changes (channels, calls, jobs).
    pub fn fresh(status: u16) -> Self {
        Self::new(status).with(CACHE_CONTROL, HeaderValue::from_static("no-store"))
    }

    /// The `application/problem+json` answer for `problem`.
    pub fn problem(problem: &Problem) -> Self {
        let mut reply = Self::fresh(problem.status).with_body(
            Some(HeaderValue::from_static("application/problem+json")),
            problem.body(),
        );
        for (name, value) in &problem.headers {
            reply = reply.header(name, value.as_str());
        }
        reply.problem = Some(problem.kind);
        reply
    }

    /// An upstream's answer as it came (its status, end-to-end headers and body).
    pub fn upstream(answer: &Answer) -> Self {
        let mut reply = Self::new(answer.status);
        for (name, value) in &answer.headers {
            if !HOP_BY_HOP.contains(&name.as_str()) {
                reply.headers.append(name.clone(), value.clone());
            }
        }
        reply.body = answer.body.clone();
        reply
    }

    /// JSON, not to be cached.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        // Serialising a JSON value cannot fail.
        let body = Bytes::from(serde_json::to_vec(value).unwrap_or_default());
        Self::fresh(status).with_body(Some(HeaderValue::from_static("application/json")), body)
    }

    /// Sets `name` (replacing any value). A value that cannot be a header value is left out.
    pub fn header(self, name: &'static str, value: &str) -> Self {
        match HeaderValue::from_str(value) {
            Ok(value) => self.with(HeaderName::from_static(name), value),
            Err(_) => {
                tracing::debug!(name, "a reply header value is not valid; left out");
                self
            }
        }
    }

    /// Sets `name` to `value` (replacing any value).
    pub fn with(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Sets the body and its content type.
    pub fn with_body(mut self, content_type: Option<HeaderValue>, body: Bytes) -> Self {
        if let Some(content_type) = content_type {
            self.headers.insert(CONTENT_TYPE, content_type);
        }
        self.body = body;
        self
    }

    /// The reply closes the connection after it.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// The reply's body goes on after it is sent ([`Reply::streamed`]).
    pub fn streaming(mut self) -> Self {
        self.streamed = true;
        self
    }

    /// The response header to write: the reply's headers, `Content-Length`, and `Connection:
    /// close` when it closes.
    pub fn response_header(&self) -> pingora_error::Result<ResponseHeader> {
        let mut header = ResponseHeader::build(self.status, Some(self.headers.len() + 8))?;
        for (name, value) in self.shared.iter().flat_map(|shared| &shared.headers) {
            header.append_header(name.clone(), value.clone())?;
        }
        for (name, value) in &self.headers {
            header.append_header(name.clone(), value.clone())?;
        }
        if !self.streamed {
            header.set_content_length(self.body.len())?;
        }
        if self.close {
            header.insert_header(http::header::CONNECTION, "close")?;
        }
        Ok(header)
    }

    /// The reply as HTTP/1.1 bytes, head and body in one buffer (one write), for a connection
    /// the edge serves itself: with `Date`, `Connection` (`keep-alive` only when `keep_alive`
    /// and the reply does not close) and `Content-Length`; without the body when `with_body` is
    /// false (a `HEAD` request). A streamed reply is chunked when the connection stays open,
    /// else delimited by the close.
    pub fn to_http1(&self, keep_alive: bool, with_body: bool) -> Vec<u8> {
        let reason = http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|status| status.canonical_reason())
            .unwrap_or("");
        let body = if with_body { &self.body[..] } else { &[] };
        let mut out = Vec::with_capacity(160 + self.headers.len() * 40 + body.len());
        out.extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", self.status).as_bytes());
        if let Some(shared) = &self.shared {
            out.extend_from_slice(&shared.wire);
        }
        header_lines(&mut out, &self.headers);
        if self.status == 101 {
            // Switching protocols: its own `Connection: upgrade`, and no HTTP body; what
            // follows the head is the new protocol's (a WebSocket's first frames).
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&self.body);
            return out;
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(pingora_core::protocols::http::date::get_cached_date().as_bytes());
        out.extend_from_slice(if keep_alive && !self.close {
            b"\r\nconnection: keep-alive\r\n"
        } else {
            b"\r\nconnection: close\r\n"
        });
        if !self.streamed {
            out.extend_from_slice(
                format!("content-length: {}\r\n\r\n", self.body.len()).as_bytes(),
            );
            out.extend_from_slice(body);
        } else if keep_alive && !self.close {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
            out.extend_from_slice(&http1_chunk(body));
        } else {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(body);
        }
        out
    }
}

/// `data` as one HTTP/1.1 chunk (RFC 9112 §7.1); nothing for no data, which would end the body.
pub fn http1_chunk(data: &[u8]) -> Vec<u8> {
    if data.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(data.len() + 12);
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// The end of a chunked HTTP/1.1 body.
pub const HTTP1_LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_reply_is_problem_json_with_its_headers() {
        let problem = Problem::not_found("/x").with_header("retry-after", "1");
        let reply = Reply::problem(&problem);
        assert_eq!(reply.status, 404);
        assert_eq!(reply.problem, Some("not-found"));
        assert_eq!(reply.headers["content-type"], "application/problem+json");
        assert_eq!(reply.headers["cache-control"], "no-store");
        assert_eq!(reply.headers["retry-after"], "1");
        assert_eq!(reply.body, problem.body());
    }

    #[test]
    fn an_upstream_reply_drops_hop_by_hop_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", HeaderValue::from_static("keep-alive"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.append("set-cookie", HeaderValue::from_static("a=1"));
        headers.append("set-cookie", HeaderValue::from_static("b=2"));
        let answer = Answer {
            status: 201,
            headers,
            body: Bytes::from_static(b"x"),
        };
        let reply = Reply::upstream(&answer);
        assert_eq!(reply.status, 201);
        assert!(reply.headers.get("connection").is_none());
        assert!(reply.headers.get("transfer-encoding").is_none());
        assert_eq!(reply.headers.get_all("set-cookie").iter().count(), 2);
    }

    #[test]
    fn the_wire_form_carries_length_and_close() {
        let reply = Reply::fresh(204).closing();
        let wire = String::from_utf8(reply.to_http1(true, true)).expect("ascii");
        assert!(wire.starts_with("HTTP/1.1 204 No Content\r\ncache-control: no-store\r\ndate: "));
        assert!(wire.ends_with("GMT\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"));
        let head_only = Reply::fresh(200).with_body(None, Bytes::from_static(b"abc"));
        let wire = String::from_utf8(head_only.to_http1(true, false)).expect("ascii");
        assert!(wire.ends_with("connection: keep-alive\r\ncontent-length: 3\r\n\r\n"));
        let header = reply.response_header().expect("header");
        assert_eq!(header.headers["connection"], "close");
        assert_eq!(header.headers["content-length"], "0");
    }
}
