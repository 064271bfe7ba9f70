//! WebSocket subscribers on a `longpoll` route (RFC 6455): the handshake's checks and answer,
//! then one frame per message — the body as published (text when it is UTF-8, else binary),
//! or with `format: envelope` (or `batch`) a JSON `{"id","cursor","content_type","data"}` —
//! pings when the channel is quiet, and close codes that say why it ended. The framing is
//! tungstenite's. See docs/streams.md.

use super::reply::message_json;
use super::subscription::{self, Delivery, Subscription};
use crate::actions::Admitted;
use crate::core::runtime::Runtime;
use crate::core::spec::channel::LongPollSpec;
use crate::exchange::{Exchange, Reply};
use crate::hub::{Cursor, Message};
use crate::problem::Problem;
use base64::Engine;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use pingora_http::RequestHeader;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::WebSocketStream;

/// Bytes read from a subscriber at a time. Subscribers only send control frames, so a small
/// buffer (tungstenite's default is 128 KiB, allocated for every connection) is plenty.
const READ_BUFFER: usize = 256;

/// The largest frame or message a subscriber may send (it sends only pings, pongs and close
/// frames, whose payloads are at most 125 bytes).
const MAX_INCOMING: usize = 4096;

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
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    Ok(Reply::new(101)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-accept", &accept))
}

/// Opens a WebSocket subscriber: the handshake checked, then the subscription opened. `Ok` is
/// the socket and the `101` that switches to it; `Err` the reply that refuses it.
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
    Ok(opened.map(|(subscription, first)| {
        let socket = Socket::new(subscription, first, spec.settings.format);
        (socket, switch)
    }))
}

/// A subscriber whose handshake was answered, until its loop runs.
pub struct Socket<'r> {
    subscription: Subscription<'r>,
    /// What opening the subscription found, written first.
    first: Option<Delivery>,
    envelope: bool,
}

impl<'r> Socket<'r> {
    fn new(subscription: Subscription<'r>, first: Delivery, format: conf::PollFormat) -> Self {
        Self {
            subscription,
            first: Some(first),
            envelope: format != conf::PollFormat::Raw,
        }
    }

    /// Serves the subscriber over `io` until it ends; how it ended.
    pub async fn run<S>(&mut self, runtime: &Runtime, io: S) -> &'static str
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let first = self.first.take().unwrap_or(Delivery::Quiet);
        run(&mut self.subscription, runtime, io, first, self.envelope).await
    }
}

/// What woke the socket's loop.
enum Woke<T> {
    Hub(T),
    Client(Option<Result<Frame, WsError>>),
    Shutdown,
}

/// Serves `subscription` over the connection `io`, whose handshake was answered, starting with
/// `first` (what opening it found); how it ended (for the access log).
async fn run<S>(
    subscription: &mut Subscription<'_>,
    runtime: &Runtime,
    io: S,
    first: Delivery,
    envelope: bool,
) -> &'static str
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_INCOMING))
        .max_frame_size(Some(MAX_INCOMING));
    // Boxed, and every step but the wait boxed too: while the socket waits, this loop holds
    // what a held poll's hold does, so it fits in the held poll's state.
    let mut socket =
        Box::new(WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await);
    let mut shutdown = runtime.shutdown_signal();
    let opened = Box::pin(deliver(subscription, runtime, &mut socket, first, envelope));
    if let Some(ended) = opened.await {
        return ended;
    }
    // A ping went out and its pong has not come back yet.
    let mut pinged = false;
    loop {
        if *shutdown.borrow_and_update() {
            let reason = "the gateway is shutting down; reconnect with your last cursor";
            Box::pin(close(&mut socket, CloseCode::Away, reason)).await;
            return "shutdown";
        }
        let woke = {
            let wait = subscription.wait(runtime);
            tokio::select! {
                outcome = wait => Woke::Hub(outcome),
                frame = socket.next() => Woke::Client(frame),
                _ = shutdown.changed() => Woke::Shutdown,
            }
        };
        match woke {
            Woke::Shutdown => {}
            Woke::Hub(outcome) => match subscription.advance(outcome) {
                Delivery::Quiet => {
                    // A whole keep-alive without the pong of the last ping: the client is gone.
                    if pinged {
                        return "client_gone";
                    }
                    if Box::pin(socket.send(Frame::Ping(Bytes::new())))
                        .await
                        .is_err()
                    {
                        return "client_gone";
                    }
                    pinged = true;
                }
                delivery => {
                    let ended = Box::pin(deliver(
                        subscription,
                        runtime,
                        &mut socket,
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
                // tungstenite queued the answer (a pong, or the closing handshake's close).
                Frame::Ping(_) => {
                    if Box::pin(socket.flush()).await.is_err() {
                        return "client_gone";
                    }
                }
                Frame::Close(_) => {
                    let _ = Box::pin(socket.flush()).await;
                    return "client_gone";
                }
                Frame::Text(_) | Frame::Binary(_) => {
                    let reason = "this route does not take messages from subscribers";
                    Box::pin(close(&mut socket, CloseCode::Policy, reason)).await;
                    return "error";
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
                Box::pin(close(&mut socket, code, reason)).await;
                return "error";
            }
        }
    }
}

/// Writes a delivery's frames (one flush for a burst); how the socket ended, if it did.
async fn deliver<S>(
    subscription: &Subscription<'_>,
    runtime: &Runtime,
    socket: &mut WebSocketStream<S>,
    delivery: Delivery,
    envelope: bool,
) -> Option<&'static str>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let messages = match delivery {
        Delivery::Quiet => return None,
        Delivery::Failed(error) => {
            tracing::warn!(%error, "a WebSocket subscriber's channel failed");
            close(socket, CloseCode::Error, "the channel could not be read").await;
            return Some("error");
        }
        Delivery::Reset(oldest) => {
            let reset = reset(&oldest);
            return socket.send(reset).await.err().map(|_| "client_gone");
        }
        Delivery::Messages(messages) => messages,
    };
    let mut written = Ok(());
    for message in &messages {
        written = socket.feed(frame(message, envelope)).await;
        if written.is_err() {
            break;
        }
    }
    if written.is_ok() {
        written = socket.flush().await;
    }
    if written.is_err() {
        subscription.hand_back(runtime, messages).await;
        return Some("client_gone");
    }
    None
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

async fn close<S>(socket: &mut WebSocketStream<S>, code: CloseCode, reason: &str)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if let Err(error) = socket.close(Some(frame)).await {
        tracing::debug!(%error, "cannot close a WebSocket subscriber cleanly");
    }
}
