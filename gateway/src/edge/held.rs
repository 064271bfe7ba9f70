//! Long-polls served by the edge itself over HTTP/1, without Pingora's session: while a poll is
//! held its connection keeps only the fence, the parsed head, the request's context and the
//! hub's waiter, and the answer leaves in one write. Admission, the action and the records are
//! the pipeline's, through [`Inbound`]. See docs/edge.md.

use crate::core::routes::Action;
use crate::core::runtime::Runtime;
use crate::edge::fence::Fence;
use crate::exchange::{Exchange, Reply};
use crate::pipeline::ctx::RequestCtx;
use crate::pipeline::inbound::Inbound;
use crate::pipeline::{admit, logging, respond};
use crate::problem::Problem;
use bytes::{Bytes, BytesMut};
use pingora_core::server::ShutdownWatch;
use pingora_http::RequestHeader;
use std::net::IpAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request on the edge's own HTTP/1 path.
pub struct Http1Exchange<'a> {
    fence: &'a mut Fence,
    head: RequestHeader,
    /// The head as it came, until admission has checked it: it holds the head buffer.
    raw_head: Option<Bytes>,
    /// Body bytes that came with the head, read before the fence is.
    body_start: Bytes,
    client_ip: Option<IpAddr>,
    tls: bool,
    /// The connection may serve another request after this one.
    keep_alive: bool,
    body_bytes_sent: usize,
}

impl<'a> Http1Exchange<'a> {
    /// The request whose checked head is `prefix[..head_len]` (what follows is the start of
    /// its body), on `fence`; `None` for a head that does not parse (it was checked: not
    /// expected).
    fn new(fence: &'a mut Fence, mut prefix: BytesMut, head_len: usize) -> Option<Self> {
        let rest = prefix.split_off(head_len);
        // An empty rest would keep the head buffer's allocation alive for the whole hold.
        let body_start = if rest.is_empty() {
            Bytes::new()
        } else {
            rest.freeze()
        };
        let raw_head = prefix.freeze();
        let mut headers = [httparse::EMPTY_HEADER; 256];
        let mut parsed = httparse::Request::new(&mut headers);
        parsed.parse(&raw_head).ok()?;
        let method = parsed.method?;
        let target = parsed.path?;
        // Without the header-case map Pingora keeps for forwarding: this request is not
        // forwarded.
        let mut head =
            RequestHeader::build_no_case(method, target.as_bytes(), Some(parsed.headers.len()))
                .ok()?;
        head.set_version(match parsed.version? {
            0 => http::Version::HTTP_10,
            _ => http::Version::HTTP_11,
        });
        for header in parsed.headers.iter() {
            let name = http::HeaderName::from_bytes(header.name.as_bytes()).ok()?;
            let value = http::HeaderValue::from_bytes(header.value).ok()?;
            head.append_header(name, value).ok()?;
        }
        let keep_alive = keeps_alive(&head);
        let digest = fence.inner_mut().get_socket_digest();
        let client_ip = digest
            .as_ref()
            .and_then(|digest| digest.peer_addr())
            .and_then(|addr| addr.as_inet())
            .map(|addr| addr.ip());
        let tls = fence.inner_mut().get_ssl_digest().is_some();
        Some(Self {
            fence,
            head,
            raw_head: Some(raw_head),
            body_start,
            client_ip,
            tls,
            keep_alive,
            body_bytes_sent: 0,
        })
    }
}

/// Whether the client lets the connection live after this request (RFC 9112 §9.3).
fn keeps_alive(head: &RequestHeader) -> bool {
    let tokens = || {
        head.headers
            .get_all(http::header::CONNECTION)
            .into_iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
    };
    if head.version == http::Version::HTTP_10 {
        tokens().any(|token| token.eq_ignore_ascii_case("keep-alive"))
    } else {
        !tokens().any(|token| token.eq_ignore_ascii_case("close"))
    }
}

impl Exchange for Http1Exchange<'_> {
    fn head(&self) -> &RequestHeader {
        &self.head
    }

    fn body_done(&mut self) -> bool {
        self.body_start.is_empty() && self.fence.body_done()
    }

    /// The body as it came on the wire (chunked framing included): polls only drain it.
    async fn read_body(&mut self) -> pingora_error::Result<Option<Bytes>> {
        if !self.body_start.is_empty() {
            return Ok(Some(std::mem::take(&mut self.body_start)));
        }
        if self.fence.body_done() {
            return Ok(None);
        }
        let mut chunk = BytesMut::with_capacity(4096);
        let read = self.fence.read_buf(&mut chunk).await.map_err(|error| {
            pingora_error::Error::because(
                pingora_error::ErrorType::ReadError,
                "reading the request body",
                error,
            )
        })?;
        if read == 0 {
            // The client closed before the body's end.
            return pingora_error::Error::e_explain(
                pingora_error::ErrorType::ConnectionClosed,
                "the client closed before the request body ended",
            );
        }
        Ok(Some(chunk.freeze()))
    }

    async fn client_gone(&mut self) {
        // Past the request's end the fence keeps what comes (a pipelined request) and reports
        // only the client closing.
        let mut nothing = [0u8; 0];
        loop {
            match self.fence.read(&mut nothing).await {
                Ok(_) if self.fence.closed() => return,
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }

    fn close_after(&mut self) {
        self.keep_alive = false;
    }

    async fn send(&mut self, reply: Reply) -> pingora_error::Result<()> {
        if reply.close {
            self.keep_alive = false;
        }
        let with_body = self.head.method != http::Method::HEAD;
        let wire = reply.to_http1(self.keep_alive, with_body);
        if with_body {
            self.body_bytes_sent += reply.body.len();
        }
        let stream = self.fence.inner_mut();
        let written = async {
            stream.write_all(&wire).await?;
            stream.flush().await
        };
        written.await.map_err(|error| {
            pingora_error::Error::because(
                pingora_error::ErrorType::WriteError,
                "writing the answer",
                error,
            )
        })
    }
}

impl Inbound for Http1Exchange<'_> {
    fn head_mut(&mut self) -> &mut RequestHeader {
        &mut self.head
    }

    fn raw_head(&self) -> Option<Bytes> {
        self.raw_head.clone()
    }

    fn is_http2(&self) -> bool {
        false
    }

    fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    fn is_tls(&self) -> bool {
        self.tls
    }

    fn body_bytes_sent(&self) -> usize {
        self.body_bytes_sent
    }
}

/// Serves the long-poll whose checked head is `prefix[..head_len]` on `fence`; whether the
/// connection may serve another request (never when `keep_alive` is false).
pub async fn serve(
    runtime: &Runtime,
    fence: &mut Fence,
    (prefix, head_len): (BytesMut, usize),
    keep_alive: bool,
    shutdown: &ShutdownWatch,
) -> bool {
    let Some(mut exchange) = Http1Exchange::new(fence, prefix, head_len) else {
        return false;
    };
    if *shutdown.borrow() || !keep_alive {
        exchange.close_after();
    }
    let mut ctx = RequestCtx::new();
    let served = async {
        // Boxed, and so are the answer's writing below: they are done before and after the
        // hold, and inline they would size the state every held poll keeps.
        let admitted = Box::pin(admit::admit_request(runtime, &mut exchange, &mut ctx)).await?;
        // Checked: the head buffer is not kept while the poll is held.
        exchange.raw_head = None;
        if !admitted {
            return Ok(());
        }
        // The edge decided on the route before admission looked it up again: a reload in
        // between may have made it another kind, which this path does not serve.
        let long_poll = ctx
            .route
            .as_ref()
            .is_some_and(|route| matches!(route.action, Action::LongPoll(_)));
        if !long_poll {
            exchange.close_after();
            let problem = route_changed();
            let refused = respond::problem(&mut exchange, &mut ctx, &problem);
            return Box::pin(refused).await.map(|_| ());
        }
        let reply = admit::dispatch(runtime, &mut exchange, &mut ctx).await?;
        Box::pin(admit::finish(&mut exchange, &mut ctx, reply)).await
    }
    .await;
    if let Err(error) = &served {
        crate::observe::client_log::client_error(error, &exchange.head.uri.to_string());
    }
    logging::finished(runtime, &exchange, &mut ctx, None);
    let gone = ctx.answered == Some(0);
    served.is_ok()
        && !gone
        && exchange.keep_alive
        && !*shutdown.borrow()
        && !exchange.fence.closed()
}

/// The answer when the route changed kind between the edge's decision and admission.
pub fn route_changed() -> Problem {
    Problem::new(
        503,
        "reloading",
        "Service Unavailable",
        "the configuration changed while the request arrived; retry it",
    )
    .with_header("retry-after", "0")
}
