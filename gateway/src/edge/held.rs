//! Long-polls served by the edge itself over HTTP/1, without Pingora's session: while a poll is
//! held its connection keeps only the fence, a compact record of the request ([`Parked`]) and
//! the hub's waiter, and the answer leaves in one write. Admission, the action and the records are
//! the pipeline's, through [`Inbound`]. See docs/edge.md.

use crate::actions::{channels, jobs};
use crate::core::routes::{Action, CompiledRoute};
use crate::core::runtime::Runtime;
use crate::core::spec::channel::LongPollSpec;
use crate::core::spec::job::JobSpec;
use crate::edge::fence::Fence;
use crate::exchange::hold::{hold, Held};
use crate::exchange::reply::{http1_chunk, HTTP1_LAST_CHUNK};
use crate::exchange::{Exchange, Reply};
use crate::hub::{HubError, PollOutcome};
use crate::pipeline::ctx::{self, RequestCtx};
use crate::pipeline::inbound::Inbound;
use crate::pipeline::{admit, logging, respond};
use crate::problem::Problem;
use bytes::{Bytes, BytesMut};
use pingora_core::server::ShutdownWatch;
use pingora_http::RequestHeader;
use std::net::IpAddr;
use std::sync::Arc;
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
    /// A streamed reply's body is being sent in chunks.
    chunked: bool,
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
        let client_ip = crate::edge::plain::client_ip(fence.inner_mut());
        let tls = fence.inner_mut().get_ssl_digest().is_some();
        Some(Self {
            fence,
            head,
            raw_head: Some(raw_head),
            body_start,
            client_ip,
            tls,
            keep_alive,
            chunked: false,
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
        client_gone(self.fence).await
    }

    fn close_after(&mut self) {
        self.keep_alive = false;
    }

    async fn send(&mut self, reply: Reply) -> pingora_error::Result<()> {
        if reply.close {
            self.keep_alive = false;
        }
        if reply.streamed && self.head.version == http::Version::HTTP_10 {
            // No chunked encoding in HTTP/1.0: the stream ends with the connection.
            self.keep_alive = false;
        }
        self.chunked = reply.streamed && self.keep_alive;
        let with_body = self.head.method != http::Method::HEAD;
        let wire = reply.to_http1(self.keep_alive, with_body);
        if with_body {
            self.body_bytes_sent += reply.body.len();
        }
        write(self.fence, &wire).await
    }

    async fn send_chunk(&mut self, chunk: Bytes) -> pingora_error::Result<()> {
        self.body_bytes_sent += chunk.len();
        write_piece(self.fence, self.chunked, &chunk).await
    }

    async fn end_stream(&mut self) -> pingora_error::Result<()> {
        end_pieces(self.fence, self.chunked).await
    }
}

/// Writes the next piece of a streamed body: an HTTP/1.1 chunk, or as it is when the body ends
/// with the connection.
async fn write_piece(fence: &mut Fence, chunked: bool, piece: &[u8]) -> pingora_error::Result<()> {
    if chunked {
        write(fence, &http1_chunk(piece)).await
    } else {
        write(fence, piece).await
    }
}

/// Ends a streamed body: its last chunk, or nothing when the connection's close ends it.
async fn end_pieces(fence: &mut Fence, chunked: bool) -> pingora_error::Result<()> {
    if chunked {
        write(fence, HTTP1_LAST_CHUNK).await
    } else {
        Ok(())
    }
}

/// Writes `wire` on the fence's connection, at once.
async fn write(fence: &mut Fence, wire: &[u8]) -> pingora_error::Result<()> {
    let stream = fence.inner_mut();
    let written = async {
        stream.write_all(wire).await?;
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
///
/// Three steps, so that while the poll is held its connection keeps only what waiting needs:
/// admission and opening the poll (boxed, gone once the poll waits), the hold (the [`Parked`]
/// record and the hub's waiter, raced against the client leaving and shutdown), and the
/// answer (boxed).
pub async fn serve(
    runtime: &Runtime,
    fence: &mut Fence,
    (prefix, head_len): (BytesMut, usize),
    keep_alive: bool,
    shutdown: &ShutdownWatch,
) -> bool {
    let opened = Box::pin(open(runtime, fence, prefix, head_len, keep_alive, shutdown)).await;
    let mut parked = match opened {
        Opened::Served(reuse) => return reuse,
        Opened::Waiting(parked) => parked,
    };
    let ended = match &mut parked.waiting {
        Waiting::Stream(stream) => {
            let mut sink = FenceSink {
                fence,
                chunked: parked.chunked,
                sent: 0,
            };
            let outcome = stream.run(runtime, &mut sink).await;
            Ended::Stream(outcome, sink.sent)
        }
        Waiting::Socket(socket) => {
            let ended = socket.run(runtime, &mut *fence).await;
            // The closing handshake's last frame may still be in the fence's gathered writes;
            // a client that stopped reading gets a moment for it, not forever.
            let flushed = tokio::time::timeout(CLOSING_FLUSH, fence.flush());
            let _ = flushed.await;
            Ended::Socket(ended)
        }
        Waiting::Channel(waiting) => {
            let work = std::pin::pin!(waiting.wait(runtime));
            Ended::Channel(hold(runtime, client_gone(fence), None, work).await)
        }
        Waiting::Job(waiting) => {
            let deadline = waiting.deadline;
            let work = std::pin::pin!(waiting.wait());
            Ended::Job(hold(runtime, client_gone(fence), Some(deadline), work).await)
        }
    };
    Box::pin(answer(runtime, fence, parked, ended, shutdown)).await
}

/// How long the last bytes of a WebSocket (its close frame) may take to go out.
const CLOSING_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

/// What a held request waits for.
enum Waiting<'r> {
    /// A message on a `longpoll` route's channel.
    Channel(channels::Waiting<'r>),
    /// A job's result.
    Job(jobs::Waiting),
    /// The messages of a `longpoll` route's channel as Server-Sent Events, its head sent.
    Stream(channels::sse::Stream<'r>),
    /// The messages of a `longpoll` route's channel over WebSocket, its handshake answered.
    Socket(channels::websocket::Socket<'r>),
}

/// How a hold ended, by what it waited for.
enum Ended {
    Channel(Held<Result<PollOutcome, HubError>>),
    Job(Held<Option<Arc<jobs::JobResult>>>),
    /// How the stream ended, and the body bytes it wrote after its head.
    Stream(&'static str, usize),
    /// How the WebSocket ended.
    Socket(&'static str),
}

/// How opening a poll ended.
enum Opened<'r> {
    /// It was answered (refused, or the client left): whether the connection may be reused.
    Served(bool),
    Waiting(Box<Parked<'r>>),
}

/// A held poll's record, in place of its request while it waits: the hub's inputs and slot,
/// and what its answer and its access log line need.
struct Parked<'r> {
    waiting: Waiting<'r>,
    ctx: ctx::Kept,
    head: KeptHead,
    /// The request's `Origin`, on routes that answer browsers (CORS).
    origin: Option<http::HeaderValue>,
    client_ip: Option<IpAddr>,
    tls: bool,
    keep_alive: bool,
    /// A stream's body goes out in HTTP/1.1 chunks.
    chunked: bool,
    /// Body bytes written before the hold (a stream's start).
    sent: usize,
}

/// A stream's way to its client on the edge: the connection, nothing of the request.
struct FenceSink<'f> {
    fence: &'f mut Fence,
    chunked: bool,
    sent: usize,
}

impl channels::sse::Sink for FenceSink<'_> {
    async fn client_gone(&mut self) {
        client_gone(self.fence).await
    }

    async fn write(&mut self, chunk: Bytes) -> pingora_error::Result<()> {
        self.sent += chunk.len();
        write_piece(self.fence, self.chunked, &chunk).await
    }

    async fn end(&mut self) -> pingora_error::Result<()> {
        end_pieces(self.fence, self.chunked).await
    }
}

/// What a held poll keeps of its request's head: the request line, and the headers only when
/// the access log may record some.
struct KeptHead {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: Option<Box<http::HeaderMap>>,
}

impl KeptHead {
    fn of(head: RequestHeader, with_headers: bool) -> Self {
        let parts = http::request::Parts::from(head);
        Self {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: with_headers.then(|| Box::new(parts.headers)),
        }
    }

    fn into_head(self) -> RequestHeader {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = self.method;
        parts.uri = self.uri;
        parts.version = self.version;
        if let Some(headers) = self.headers {
            parts.headers = *headers;
        }
        RequestHeader::from(parts)
    }
}

/// Admits the request and opens its poll; what is left of it when the poll waits.
async fn open<'r>(
    runtime: &'r Runtime,
    fence: &mut Fence,
    prefix: BytesMut,
    head_len: usize,
    keep_alive: bool,
    shutdown: &ShutdownWatch,
) -> Opened<'r> {
    let Some(mut exchange) = Http1Exchange::new(fence, prefix, head_len) else {
        return Opened::Served(false);
    };
    if *shutdown.borrow() || !keep_alive {
        exchange.close_after();
    }
    let mut ctx = RequestCtx::new();
    let opened = async {
        let admitted = Box::pin(admit::admit_request(runtime, &mut exchange, &mut ctx)).await?;
        // Checked: the head buffer is not kept while the poll is held.
        exchange.raw_head = None;
        if !admitted {
            return Ok(None);
        }
        let route = ctx.route.clone();
        let Some((route, held)) = route.as_ref().and_then(|route| {
            let held = held_here(route, &exchange.head)?;
            Some((route, held))
        }) else {
            exchange.close_after();
            respond::problem(&mut exchange, &mut ctx, &route_changed()).await?;
            return Ok(None);
        };
        let admitted = ctx.admitted(route);
        let opened = match held {
            HeldHere::Channel(spec)
                if channels::websocket::wanted(&exchange.head, &spec.settings) =>
            {
                match channels::websocket::open(runtime, &mut exchange, &admitted, spec).await? {
                    Ok((socket, switch)) => {
                        // The 101 goes out past the fence, which is told: the rest is the
                        // socket's.
                        respond::reply(&mut exchange, &mut ctx, switch).await?;
                        exchange.fence.switched();
                        return Ok(Some(Waiting::Socket(socket)));
                    }
                    Err(reply) => Err(reply),
                }
            }
            HeldHere::Channel(spec) if channels::sse::wanted(&exchange.head, &spec.settings) => {
                match channels::sse::open(runtime, &mut exchange, &admitted, spec).await? {
                    Ok((stream, head)) => {
                        // The stream's head and start go out now; the rest while it is held.
                        respond::reply(&mut exchange, &mut ctx, head).await?;
                        return Ok(Some(Waiting::Stream(stream)));
                    }
                    Err(reply) => Err(reply),
                }
            }
            HeldHere::Channel(spec) => channels::open(runtime, &mut exchange, &admitted, spec)
                .await?
                .map(Waiting::Channel),
            HeldHere::Job(spec, id) => jobs::open(&mut exchange, &admitted, spec, &id)
                .await?
                .map(Waiting::Job),
        };
        match opened {
            Ok(waiting) => Ok(Some(waiting)),
            Err(reply) => admit::finish(&mut exchange, &mut ctx, Some(reply))
                .await
                .map(|_| None),
        }
    }
    .await;
    match opened {
        Ok(Some(waiting)) => {
            let with_cors = ctx.route.as_ref().is_some_and(|route| route.cors.is_some());
            let origin = with_cors
                .then(|| exchange.head.headers.get(http::header::ORIGIN).cloned())
                .flatten();
            let Http1Exchange {
                head,
                client_ip,
                tls,
                keep_alive,
                chunked,
                body_bytes_sent,
                ..
            } = exchange;
            Opened::Waiting(Box::new(Parked {
                waiting,
                ctx: ctx.keep(),
                head: KeptHead::of(head, runtime.access_log.is_some()),
                origin,
                client_ip,
                tls,
                keep_alive,
                chunked,
                sent: body_bytes_sent,
            }))
        }
        Ok(None) => Opened::Served(recorded(runtime, exchange, ctx, Ok(()), shutdown)),
        Err(error) => Opened::Served(recorded(runtime, exchange, ctx, Err(error), shutdown)),
    }
}

/// Answers a poll that was held, by how the hold ended; whether the connection may be reused.
async fn answer(
    runtime: &Runtime,
    fence: &mut Fence,
    parked: Box<Parked<'_>>,
    ended: Ended,
    shutdown: &ShutdownWatch,
) -> bool {
    let Parked {
        waiting,
        ctx,
        head,
        origin,
        client_ip,
        tls,
        keep_alive,
        chunked: _,
        sent,
    } = *parked;
    let mut ctx = RequestCtx::resume(ctx);
    // A stream and a socket were their own answers: their outcome and status.
    let (keep_alive, body_bytes_sent, streamed) = match &ended {
        // The connection was the socket's.
        Ended::Socket(outcome) => (false, 0, Some((*outcome, 101))),
        // A stream's body ended; its connection stays only when the stream did not end for
        // the client or the shutdown.
        Ended::Stream(outcome, streamed) => (
            keep_alive && *outcome == "error",
            sent + streamed,
            Some((*outcome, 200)),
        ),
        _ => (keep_alive && !*shutdown.borrow(), 0, None),
    };
    let mut exchange = Http1Exchange {
        fence,
        head: head.into_head(),
        raw_head: None,
        body_start: Bytes::new(),
        client_ip,
        tls,
        keep_alive,
        chunked: false,
        body_bytes_sent,
    };
    if let Some((outcome, status)) = streamed {
        ctx.outcome = Some(outcome);
        ctx.answered = Some(status);
        return recorded(runtime, exchange, ctx, Ok(()), shutdown);
    }
    let (outcome, reply) = match (ctx.route.clone(), waiting, ended) {
        (Some(route), Waiting::Channel(waiting), Ended::Channel(held)) => match &route.action {
            Action::LongPoll(spec) => {
                let origin = origin.as_ref().and_then(|origin| origin.to_str().ok());
                channels::close(&route, spec, origin, waiting, held)
            }
            _ => ("error", None),
        },
        (_, Waiting::Job(_), Ended::Job(held)) => jobs::close(held),
        _ => ("error", None),
    };
    ctx.outcome = Some(outcome);
    let answered = admit::finish(&mut exchange, &mut ctx, reply).await;
    recorded(runtime, exchange, ctx, answered, shutdown)
}

/// Records the finished request (access log, metrics; a failed answer in the client log);
/// whether its connection may serve another request.
fn recorded(
    runtime: &Runtime,
    exchange: Http1Exchange<'_>,
    mut ctx: RequestCtx,
    served: pingora_error::Result<()>,
    shutdown: &ShutdownWatch,
) -> bool {
    if let Err(error) = &served {
        let summary = logging::summary(exchange.head.uri.to_string(), &ctx);
        crate::observe::client_log::client_error(error, &summary);
    }
    logging::finished(runtime, &exchange, &mut ctx, None);
    let gone = ctx.answered == Some(0);
    served.is_ok()
        && !gone
        && exchange.keep_alive
        && !*shutdown.borrow()
        && !exchange.fence.closed()
}

/// What this path holds for a request on a route.
enum HeldHere<'s> {
    Channel(&'s LongPollSpec),
    /// The result of the job with this id.
    Job(&'s JobSpec, String),
}

/// What this path holds for `head` on `route`: a poll on a `longpoll` route, or a job's result
/// poll. `None` for anything else: the edge decided before admission looked the route up again,
/// and a reload in between may have changed it.
fn held_here<'s>(route: &'s CompiledRoute, head: &RequestHeader) -> Option<HeldHere<'s>> {
    match &route.action {
        Action::LongPoll(spec) => Some(HeldHere::Channel(spec)),
        Action::Job(spec) => match jobs::Target::of(spec, &head.method, head.uri.path()) {
            jobs::Target::Result(id) => Some(HeldHere::Job(spec, id.to_owned())),
            _ => None,
        },
        _ => None,
    }
}

/// Ends when the client closes its side of `fence` (or the connection fails). Past the
/// request's end the fence keeps what comes (a pipelined request) and reports only the client
/// closing.
async fn client_gone(fence: &mut Fence) {
    let mut nothing = [0u8; 0];
    loop {
        match fence.read(&mut nothing).await {
            Ok(_) if fence.closed() => return,
            Ok(_) => {}
            Err(_) => return,
        }
    }
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
