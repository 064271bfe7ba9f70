//! WebSocket subscribers on a `longpoll` route (RFC 6455): the handshake's checks and answer,
//! then one frame per message — the body as published (text when it is UTF-8, else binary),
//! or with `format: envelope` (or `batch`) a JSON `{"id","cursor","content_type","data"}` —
//! pings when the channel is quiet, and close codes that say why it ended. The framing is
//! tungstenite's. See docs/streams.md.

mod io;

use super::reply::message_json;
use super::subscription::{self, gather, Backlog, Delivery, Subscription, Written};
use super::{store, Incoming};
use crate::actions::Admitted;
use crate::core::runtime::Runtime;
use crate::core::spec::channel::LongPollSpec;
use crate::exchange::{Exchange, Reply};
use crate::hub::{Cursor, Message};
use crate::limits::{self, RateKeys, RouteLimits};
use crate::problem::Problem;
use base64::Engine;
use bytes::Bytes;
use pingora_http::RequestHeader;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tungstenite::error::{Error as WsError, ProtocolError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::Message as Frame;

/// Bytes read from a subscriber at a time, at most, and allocated for it up front: none for
/// one that only sends control frames (tungstenite reserves a frame header's 14 bytes when it
/// reads, and a frame's whole length once the header says it; its default, 128 KiB for every
/// connection, is what a held subscriber must not cost) — a little for one that publishes,
/// whose messages would otherwise be read 14 bytes at a time.
const READ_BUFFER: usize = 0;
const PUBLISHER_READ_BUFFER: usize = 1024;

/// The largest frame or message a subscriber that may not publish may send (it sends only
/// pings, pongs and close frames, whose payloads are at most 125 bytes); one that may publish
/// may send the route's `max_body`.
const MAX_INCOMING: usize = 4096;

/// Why a socket closes at shutdown (with 1001, going away).
const SHUTDOWN_REASON: &str = "the gateway is shutting down; reconnect with your last cursor";

/// How long a closing frame may take to go out to a subscriber that is not reading.
const SLOW_CLOSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether the request asks to switch to WebSocket, on a route that serves it.
pub fn wanted(head: &RequestHeader, settings: &conf::LongPoll) -> bool {
    head.method == http::Method::GET
        && settings.subscribe.contains(&conf::Transport::Websocket)
        && has_token(head, http::header::UPGRADE, "websocket")
}

fn has_token(head: &RequestHeader, name: http::HeaderName, token: &str) -> bool {
    head.headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

fn bad_handshake(detail: &str) -> Problem {
    Problem::new(400, "bad-websocket-handshake", "Bad Request", detail)
}

/// The handshake's answer to `head` (RFC 6455 §4.2.2): `101` with `Sec-WebSocket-Accept`, or
/// the 400 that refuses it.
pub fn accept(head: &RequestHeader) -> Result<Reply, Problem> {
    if !has_token(head, http::header::CONNECTION, "upgrade") {
        return Err(bad_handshake(
            "a WebSocket handshake needs `Connection: Upgrade`",
        ));
    }
    let header = |name: &str| head.headers.get(name).and_then(|v| v.to_str().ok());
    if header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(bad_handshake("`Sec-WebSocket-Version` must be 13")
            .with_header("sec-websocket-version", "13"));
    }
    let key = header("sec-websocket-key").map(str::trim).unwrap_or("");
    let decoded = base64::engine::general_purpose::STANDARD.decode(key);
    if decoded.map(|nonce| nonce.len()) != Ok(16) {
        return Err(bad_handshake(
            "`Sec-WebSocket-Key` must be 16 random bytes in base64 (RFC 6455 §4.1)",
        ));
    }
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    Ok(Reply::new(101)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-accept", &accept))
}

/// Opens a WebSocket subscriber: the handshake checked, then the subscription opened. `Ok` is
/// the socket and the `101` that switches to it, carrying the frames of what opening found;
/// `Err` the reply that refuses it.
pub async fn open<'r>(
    runtime: &'r Runtime,
    exchange: &mut impl Exchange,
    admitted: &Admitted<'_>,
    spec: &LongPollSpec,
) -> pingora_error::Result<Result<(Socket<'r>, Reply), Reply>> {
    let switch = match accept(exchange.head()) {
        Ok(switch) => switch,
        Err(problem) => return Ok(Err(Reply::problem(&problem))),
    };
    let transport = conf::Transport::Websocket;
    let opened = subscription::open(runtime, exchange, admitted, spec, transport).await?;
    let publisher = spec.settings.publish.then(|| {
        Box::new(Publisher {
            limits: admitted
                .route
                .limits
                .clone()
                .zip(admitted.rate_keys.cloned()),
            max_size: usize::try_from(admitted.route.max_body).unwrap_or(usize::MAX),
        })
    });
    let (max_incoming, read_buffer) = match &publisher {
        Some(publisher) => (publisher.max_size, PUBLISHER_READ_BUFFER),
        None => (MAX_INCOMING, READ_BUFFER),
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0)
        .max_message_size(Some(max_incoming))
        .max_frame_size(Some(max_incoming));
    let envelope = spec.settings.format != conf::PollFormat::Raw;
    Ok(opened.map(|(subscription, first)| {
        let mut context = Box::new(WebSocketContext::new(Role::Server, Some(config)));
        // A broadcast channel's replay or reset goes out with the `101`, as a stream's goes
        // with its head: nothing of it waits in the socket while it is held.
        let frames = match first {
            Delivery::Messages(messages) => {
                // Written with the `101`.
                subscription.written(messages.len());
                messages.iter().map(|m| frame(m, envelope)).collect()
            }
            Delivery::Reset(oldest) => vec![reset(&oldest)],
            Delivery::Quiet | Delivery::Failed(_) => Vec::new(),
        };
        let switch = match io::encode(&mut context, frames) {
            first if first.is_empty() => switch,
            first => switch.with_body(None, Bytes::from(first)),
        };
        let socket = Socket {
            subscription,
            context,
            envelope,
            publisher,
        };
        (socket, switch)
    }))
}

/// What a subscriber that may publish (`publish: true`) needs for it: the route's rate limits
/// with the keys its handshake was counted under, and the largest message.
struct Publisher {
    limits: Option<(Arc<RouteLimits>, RateKeys)>,
    max_size: usize,
}

impl Publisher {
    /// Publishes a message the subscriber sent, as a `publish` route would its request body:
    /// counted against the route's rate limits, then stored. The close code and reason that
    /// refuse it.
    async fn publish(
        &self,
        runtime: &Runtime,
        subscription: &Subscription<'_>,
        frame: Frame,
    ) -> Result<(), (CloseCode, String)> {
        let route = subscription.route();
        if let Some((limits, keys)) = &self.limits {
            let admitted = limits::admit_message(&runtime.limiter, limits, route, keys).await;
            if let Err(problem) = admitted {
                return Err((CloseCode::Policy, problem.detail));
            }
        }
        let (body, content_type) = match frame {
            Frame::Text(text) => (Bytes::from(text), "text/plain; charset=utf-8"),
            Frame::Binary(bytes) => (bytes, "application/octet-stream"),
            _ => return Ok(()),
        };
        let message = Incoming {
            body,
            content_type: Some(content_type),
            event: None,
        };
        match store(runtime, route, subscription.key(), message).await {
            Ok(_) => Ok(()),
            Err(problem) => Err((CloseCode::Error, problem.detail)),
        }
    }
}

/// A subscriber whose handshake was answered: its subscription, and tungstenite's state of the
/// connection (boxed: a held socket keeps it, and inline it would size every held poll's
/// record).
pub struct Socket<'r> {
    subscription: Subscription<'r>,
    context: Box<WebSocketContext>,
    envelope: bool,
    /// With `publish: true`: what publishing the subscriber's messages needs.
    publisher: Option<Box<Publisher>>,
}

/// What woke the socket's loop.
enum Woke<T> {
    Hub(T),
    Client(Option<Result<Frame, WsError>>),
    Shutdown,
    /// The credential the subscriber connected with expired.
    Expired,
}

impl Socket<'_> {
    /// Serves the subscriber over `io`, whose handshake was answered, until it ends; how it
    /// ended (for the access log).
    pub async fn run<S>(&mut self, runtime: &Runtime, mut io: S) -> &'static str
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let Socket {
            subscription,
            context,
            envelope,
            publisher,
        } = self;
        let (envelope, publisher) = (*envelope, publisher.as_deref());
        let mut shutdown = runtime.shutdown_signal();
        // A ping went out and its pong has not come back yet.
        let mut pinged = false;
        // Boxed, and only when the credential expires: an inline timer would size every socket.
        let mut expiry = subscription
            .expires
            .map(|at| Box::pin(tokio::time::sleep_until(at)));
        // Every step but the wait is boxed: while the socket waits, this loop holds what a
        // held poll's hold does, so it fits in the held poll's state.
        loop {
            if *shutdown.borrow_and_update() {
                Box::pin(close(context, &mut io, CloseCode::Away, SHUTDOWN_REASON)).await;
                return "shutdown";
            }
            let woke = {
                let wait = subscription.wait(runtime);
                let expired = async {
                    match &mut expiry {
                        Some(sleep) => sleep.as_mut().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    outcome = wait => Woke::Hub(outcome),
                    frame = io::next(context, &mut io) => Woke::Client(frame),
                    _ = shutdown.changed() => Woke::Shutdown,
                    _ = expired => Woke::Expired,
                }
            };
            match woke {
                Woke::Shutdown => {}
                Woke::Expired => {
                    let reason = "the credential expired; reconnect with a fresh one";
                    Box::pin(close(context, &mut io, CloseCode::Policy, reason)).await;
                    return "expired";
                }
                Woke::Hub(outcome) => match subscription.advance(outcome) {
                    Delivery::Quiet => {
                        // A whole keep-alive without the pong of the last ping: the client is
                        // gone.
                        if pinged {
                            return "client_gone";
                        }
                        let ping = vec![Frame::Ping(Bytes::new())];
                        if Box::pin(io::send(context, &mut io, ping)).await.is_err() {
                            return "client_gone";
                        }
                        pinged = true;
                    }
                    delivery => {
                        let ended = Box::pin(deliver(
                            subscription,
                            runtime,
                            (context, &mut io),
                            delivery,
                            envelope,
                        ));
                        if let Some(ended) = ended.await {
                            return ended;
                        }
                    }
                },
                Woke::Client(None) => return "client_gone",
                Woke::Client(Some(Ok(frame))) => match frame {
                    Frame::Pong(_) => pinged = false,
                    // Tungstenite queued the answer (a pong, or the closing handshake's close).
                    Frame::Ping(_) => {
                        if Box::pin(io::flush(context, &mut io)).await.is_err() {
                            return "client_gone";
                        }
                    }
                    Frame::Close(_) => {
                        let _ = Box::pin(io::flush(context, &mut io)).await;
                        return "client_gone";
                    }
                    Frame::Text(_) | Frame::Binary(_) => {
                        let refused = match publisher {
                            Some(publisher) => {
                                let published = publisher.publish(runtime, subscription, frame);
                                Box::pin(published).await.err()
                            }
                            None => Some((
                                CloseCode::Policy,
                                "this route does not take messages from subscribers".to_owned(),
                            )),
                        };
                        if let Some((code, reason)) = refused {
                            Box::pin(close(context, &mut io, code, &reason)).await;
                            return "error";
                        }
                    }
                    Frame::Frame(_) => {}
                },
                Woke::Client(Some(Err(error))) => {
                    let (code, reason) = match &error {
                        WsError::Capacity(_) => (CloseCode::Size, "the frame is too large"),
                        WsError::Utf8(_) => (CloseCode::Invalid, "a text frame is not UTF-8"),
                        WsError::Protocol(ProtocolError::UnmaskedFrameFromClient) => {
                            (CloseCode::Protocol, "client frames must be masked")
                        }
                        WsError::Protocol(_) => (CloseCode::Protocol, "a protocol error"),
                        _ => return "client_gone",
                    };
                    tracing::debug!(%error, "closing a WebSocket subscriber");
                    Box::pin(close(context, &mut io, code, reason)).await;
                    return "error";
                }
            }
        }
    }
}

/// Writes a delivery's frames (one flush for a burst), then whatever came while they were
/// written, and so on; how the socket ended, if it did.
async fn deliver<S>(
    subscription: &mut Subscription<'_>,
    runtime: &Runtime,
    (context, io): (&mut WebSocketContext, &mut S),
    delivery: Delivery,
    envelope: bool,
) -> Option<&'static str>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut first = Some(delivery);
    let mut more = Vec::new();
    loop {
        let mut frames = Vec::new();
        let mut taken = Vec::new();
        let mut failed = None;
        for delivery in first.take().into_iter().chain(more.drain(..)) {
            match delivery {
                Delivery::Quiet => {}
                Delivery::Failed(error) => failed = Some(error),
                Delivery::Reset(oldest) => frames.push(reset(&oldest)),
                Delivery::Messages(messages) => {
                    frames.extend(messages.iter().map(|message| frame(message, envelope)));
                    gather(&mut taken, messages);
                }
            }
        }
        let mut backlog = Backlog::default();
        let write = io::send(context, io, frames);
        let written = subscription
            .write_keeping_up(runtime, write, &mut backlog)
            .await;
        if let Written::Done(Ok(())) = written {
            subscription.written(taken.len());
        }
        let ended = match written {
            Written::Done(Ok(())) => None,
            Written::Done(Err(_)) => Some("client_gone"),
            Written::Slow => {
                let reason = format!(
                    "too slow: more than {} bytes of messages waited to be written",
                    subscription.max_lag()
                );
                let closing = close(context, io, CloseCode::Policy, &reason);
                // It does not read, so the close frame may never go out.
                let _ = tokio::time::timeout(SLOW_CLOSE, closing).await;
                Some("slow")
            }
            Written::Shutdown => {
                let closing = close(context, io, CloseCode::Away, SHUTDOWN_REASON);
                let _ = tokio::time::timeout(SLOW_CLOSE, closing).await;
                Some("shutdown")
            }
        };
        if let Some(ended) = ended {
            subscription
                .hand_back(runtime, taken.into_iter().chain(backlog.messages()))
                .await;
            return Some(ended);
        }
        if let Some(error) = failed {
            tracing::warn!(%error, "a WebSocket subscriber's channel failed");
            close(
                context,
                io,
                CloseCode::Error,
                "the channel could not be read",
            )
            .await;
            return Some("error");
        }
        if backlog.deliveries.is_empty() {
            return None;
        }
        more = backlog.deliveries;
    }
}

/// One message as a frame: the body as published, or the envelope.
fn frame(message: &Message, envelope: bool) -> Frame {
    if envelope {
        let mut json = message_json(message);
        json["cursor"] = message.id.to_string().into();
        return Frame::text(json.to_string());
    }
    match std::str::from_utf8(&message.body) {
        Ok(text) => Frame::text(text),
        Err(_) => Frame::binary(message.body.clone()),
    }
}

/// The frame that tells a subscriber its cursor is older than the buffer: it goes on from
/// `oldest`, the oldest message still held.
fn reset(oldest: &Cursor) -> Frame {
    Frame::text(format!(
        "{{\"type\":\"cursor-gone\",\"oldest\":\"{oldest}\"}}"
    ))
}

/// The longest reason a close frame carries (RFC 6455 §5.5: a control frame's payload is at
/// most 125 bytes, two of them the code).
const MAX_REASON: usize = 123;

async fn close<S>(context: &mut WebSocketContext, io: &mut S, code: CloseCode, reason: &str)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: reason[..end].into(),
    };
    if let Err(error) = io::close(context, io, frame).await {
        tracing::debug!(%error, "cannot close a WebSocket subscriber cleanly");
    }
}
