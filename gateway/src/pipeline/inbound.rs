//! [`Inbound`]: a request as admission sees it, whatever carries it — Pingora's session, or the
//! edge's own HTTP/1 exchange for held polls — so admission, replies and the end-of-request
//! records are written once for both.

use crate::exchange::Exchange;
use bytes::Bytes;
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use std::net::IpAddr;

/// What admission and the request's records need of the connection, besides the exchange.
pub trait Inbound: Exchange {
    /// The head, for the path normalization that rewrites it.
    fn head_mut(&mut self) -> &mut RequestHeader;

    /// The head as it came over HTTP/1 (its size and repeated lines are checked on it).
    fn raw_head(&self) -> Option<Bytes>;

    fn is_http2(&self) -> bool;

    /// The connection's peer (`None` when it is not an inet socket).
    fn client_ip(&self) -> Option<IpAddr>;

    /// Whether the connection is TLS.
    fn is_tls(&self) -> bool;

    /// Body bytes written to the client so far.
    fn body_bytes_sent(&self) -> usize;
}

impl Inbound for Session {
    fn head_mut(&mut self) -> &mut RequestHeader {
        self.req_header_mut()
    }

    fn raw_head(&self) -> Option<Bytes> {
        self.as_downstream()
            .as_http1()
            .map(|h1| h1.get_headers_raw_bytes())
    }

    fn is_http2(&self) -> bool {
        self.as_downstream().is_http2()
    }

    fn client_ip(&self) -> Option<IpAddr> {
        self.client_addr()
            .and_then(|addr| addr.as_inet())
            .map(|addr| addr.ip())
    }

    fn is_tls(&self) -> bool {
        self.digest()
            .is_some_and(|digest| digest.ssl_digest.is_some())
    }

    fn body_bytes_sent(&self) -> usize {
        self.as_downstream().body_bytes_sent()
    }
}
