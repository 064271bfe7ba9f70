//! Server-Sent Events on a `longpoll` route: one response that stays open, one event per
//! message (`id:` its cursor, `data:` its body), a comment line when the channel is quiet, an
//! explicit `reset` event when the subscriber's cursor is older than the buffer, and a clean end
//! at shutdown so that EventSource reconnects elsewhere and resumes by `Last-Event-ID`.
//! See docs/streams.md.

use super::hub_problem;
use super::reply::{with_cors, Ending};
use super::subscription::{self, gather, Delivery, Subscription, Written};
use crate::actions::Admitted;
use crate::core::runtime::Runtime;
use crate::core::spec::channel::LongPollSpec;
use crate::exchange::hold::{hold, Held};
use crate::exchange::{Exchange, Reply};
use crate::hub::{Cursor, HubError, Message, PollOutcome};
use crate::problem::Problem;
use base64::Engine;
use bytes::Bytes;
use http::HeaderValue;
use pingora_error::Result;
use pingora_http::RequestHeader;
use std::future::Future;

/// How long EventSource waits before it reconnects (the `retry:` line every stream starts with).
const RETRY_MS: u32 = 1000;

/// Whether the request asks for an event stream, on a route that serves one.
pub fn wanted(head: &RequestHeader, settings: &conf::LongPoll) -> bool {
    head.method == http::Method::GET
        && settings.subscribe.contains(&conf::Transport::Sse)
        && head
            .headers
            .get_all(http::header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|item| {
                let media = item.split(';').next().unwrap_or("").trim();
                media.eq_ignore_ascii_case("text/event-stream")
            })
}

/// Where a stream writes, once its head is sent: an [`Exchange`], or the edge's own connection
/// with nothing of the request kept.
pub trait Sink: Send {
    /// Resolves when the client goes away.
    fn client_gone(&mut self) -> impl Future<Output = ()> + Send;
    /// Writes `chunk` at once.
    fn write(&mut self, chunk: Bytes) -> impl Future<Output = Result<()>> + Send;
    /// Ends the stream's body.
    fn end(&mut self) -> impl Future<Output = Result<()>> + Send;
}

impl<E: Exchange> Sink for E {
    async fn client_gone(&mut self) {
        Exchange::client_gone(self).await
    }

    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.send_chunk(chunk).await
    }

    async fn end(&mut self) -> Result<()> {
        self.end_stream().await
    }
}

/// An open stream: its subscription.
pub struct Stream<'r>(Subscription<'r>);

/// Opens a stream: the subscription, and the reply that starts it (the head, `retry:`, and any
/// events already there); `Err` the reply that refuses it.
pub async fn open<'r>(
    runtime: &'r Runtime,
    exchange: &mut impl Exchange,
    admitted: &Admitted<'_>,
    spec: &LongPollSpec,
) -> Result<std::result::Result<(Stream<'r>, Reply), Reply>> {
    let origin = exchange
        .head()
        .headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let opened =
        subscription::open(runtime, exchange, admitted, spec, conf::Transport::Sse).await?;
    let (subscription, first) = match opened {
        Ok(opened) => opened,
        Err(reply) => return Ok(Err(reply)),
    };
    let mut events = format!("retry: {RETRY_MS}\n\n").into_bytes();
    if let Some((more, messages)) = render(first) {
        events.extend_from_slice(&more);
        // Written with the head.
        subscription.written(messages.len());
    }
    let ending = Ending {
        settings: &spec.settings,
        cors: admitted.route.cors.as_ref(),
        origin: origin.as_deref(),
    };
    let head = with_cors(Reply::fresh(200), &ending)
        .with_body(
            Some(HeaderValue::from_static("text/event-stream")),
            Bytes::from(events),
        )
        .header("x-accel-buffering", "no")
        .streaming();
    Ok(Ok((Stream(subscription), head)))
}

/// The events a delivery makes, and the messages they carry; `None` for nothing to write.
/// A hub failure is an `error` event.
fn render(delivery: Delivery) -> Option<(Vec<u8>, Vec<Message>)> {
    match delivery {
        Delivery::Messages(messages) => Some((events(&messages), messages)),
        Delivery::Reset(oldest) => Some((reset(&oldest), Vec::new())),
        Delivery::Quiet => None,
        Delivery::Failed(error) => Some((failure(&error), Vec::new())),
    }
}

impl Stream<'_> {
    /// Writes the channel's messages to `sink` as they come until the client leaves or the
    /// gateway shuts down; how it ended (for the access log). While it waits it holds what a
    /// held poll holds (the hub's wait, raced against the client and shutdown); writing is a
    /// boxed step, so a quiet stream costs no more than a held poll.
    pub async fn run(&mut self, runtime: &Runtime, sink: &mut impl Sink) -> &'static str {
        loop {
            let held = {
                let work = std::pin::pin!(self.0.wait(runtime));
                hold(runtime, sink.client_gone(), self.0.expires, work).await
            };
            match held {
                Held::Done(outcome) => {
                    if let Some(ended) = Box::pin(self.deliver(runtime, sink, outcome)).await {
                        return ended;
                    }
                }
                Held::ClientGone => return "client_gone",
                // Ended cleanly: EventSource reconnects (to the new process, on an upgrade;
                // with a fresh credential, when it expired) and resumes from its
                // `Last-Event-ID`.
                Held::Shutdown => {
                    let _ = sink.end().await;
                    return "shutdown";
                }
                Held::HoldEnded => {
                    let _ = sink.end().await;
                    return "expired";
                }
            }
        }
    }

    /// Writes what one wait on the hub brought, then whatever came while that was written, and
    /// so on; how the stream ended, if it did.
    async fn deliver(
        &mut self,
        runtime: &Runtime,
        sink: &mut impl Sink,
        outcome: std::result::Result<PollOutcome, HubError>,
    ) -> Option<&'static str> {
        let mut first = Some(self.0.advance(outcome));
        let mut more = Vec::new();
        loop {
            let mut failed = false;
            let mut wire = Vec::new();
            let mut taken = Vec::new();
            for delivery in first.take().into_iter().chain(more.drain(..)) {
                failed |= matches!(delivery, Delivery::Failed(_));
                if let Some((events, messages)) = render(delivery) {
                    gather(&mut wire, events);
                    gather(&mut taken, messages);
                }
            }
            if wire.is_empty() {
                // Nothing came: a comment line keeps proxies and clients from closing a quiet
                // stream.
                wire.extend_from_slice(b":\n\n");
            }
            let mut backlog = subscription::Backlog::default();
            let write = sink.write(Bytes::from(wire));
            let written = self.0.write_keeping_up(runtime, write, &mut backlog).await;
            if let Written::Done(Ok(())) = written {
                self.0.written(taken.len());
            }
            let ended = match written {
                Written::Done(Ok(())) if failed => {
                    let _ = sink.end().await;
                    return Some("error");
                }
                Written::Done(Ok(())) => None,
                Written::Done(Err(_)) => Some("client_gone"),
                // An event stream has no way to say why it ends but the access log.
                Written::Slow => Some("slow"),
                Written::Shutdown => Some("shutdown"),
            };
            if let Some(ended) = ended {
                self.0
                    .hand_back(runtime, taken.into_iter().chain(backlog.messages()))
                    .await;
                return Some(ended);
            }
            if backlog.deliveries.is_empty() {
                return None;
            }
            more = backlog.deliveries;
        }
    }
}

/// One event per message, in one buffer (one write for a burst).
fn events(messages: &[Message]) -> Vec<u8> {
    let mut out = Vec::with_capacity(messages.iter().map(|m| m.body.len() + 48).sum());
    for message in messages {
        out.extend_from_slice(format!("id: {}\n", message.id).as_bytes());
        match std::str::from_utf8(&message.body) {
            Ok(text) => {
                if let Some(event) = &message.event {
                    out.extend_from_slice(format!("event: {event}\n").as_bytes());
                }
                data_lines(&mut out, text)
            }
            Err(_) => {
                // Events are text: a body that is not UTF-8 goes base64-encoded, and says so
                // (in place of its event name).
                out.extend_from_slice(b"event: base64\n");
                let encoded = base64::engine::general_purpose::STANDARD.encode(&message.body);
                data_lines(&mut out, &encoded);
            }
        }
        out.push(b'\n');
    }
    out
}

/// `text` as `data:` lines, one per line of it (CR LF, LF and CR all end a line in an event
/// stream, so each becomes a line of its own).
fn data_lines(out: &mut Vec<u8>, text: &str) {
    let mut rest = text;
    loop {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&rest.as_bytes()[..end]);
        out.push(b'\n');
        if end == rest.len() {
            return;
        }
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
}

/// The event that tells a subscriber its cursor is older than the buffer: the stream goes on
/// from `oldest`, the oldest message still held (its `id:` is where a reconnect resumes).
fn reset(oldest: &Cursor) -> Vec<u8> {
    format!(
        "event: reset\nid: {oldest}\ndata: {{\"type\":\"cursor-gone\",\"oldest\":\"{oldest}\"}}\n\n"
    )
    .into_bytes()
}

/// The event that ends a stream the hub failed: the problem, as JSON.
fn failure(error: &HubError) -> Vec<u8> {
    let problem: Problem = hub_problem(error);
    let mut out = b"event: error\n".to_vec();
    data_lines(&mut out, &String::from_utf8_lossy(&problem.body()));
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_of_a_body_is_a_data_line() {
        let mut out = Vec::new();
        data_lines(&mut out, "a\nb\r\nc\rd");
        assert_eq!(out, b"data: a\ndata: b\ndata: c\ndata: d\n");
        let mut out = Vec::new();
        data_lines(&mut out, "");
        assert_eq!(out, b"data: \n");
        let mut out = Vec::new();
        data_lines(&mut out, "x\n");
        assert_eq!(out, b"data: x\ndata: \n");
    }

    #[test]
    fn only_an_event_stream_accept_asks_for_one() {
        let settings: conf::LongPoll = serde_yaml::from_str("channel: c").expect("settings");
        let head = |accept: &str| {
            let mut head = RequestHeader::build("GET", b"/c", None).expect("head");
            head.insert_header("accept", accept).expect("accept");
            head
        };
        assert!(wanted(&head("text/event-stream"), &settings));
        assert!(wanted(
            &head("application/json, Text/Event-Stream;q=0.9"),
            &settings
        ));
        assert!(!wanted(&head("application/json"), &settings));
        let polls_only: conf::LongPoll =
            serde_yaml::from_str("{channel: c, subscribe: [longpoll]}").expect("settings");
        assert!(!wanted(&head("text/event-stream"), &polls_only));
    }
}
