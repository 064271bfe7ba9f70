//! Server-Sent Events on a `longpoll` route: one response that stays open, one event per
//! message (`id:` its cursor, `data:` its body), a comment line when the channel is quiet, an
//! explicit `reset` event when the subscriber's cursor is older than the buffer, and a clean end
//! at shutdown so that EventSource reconnects elsewhere and resumes by `Last-Event-ID`.
//! See docs/streams.md.

use super::params;
use super::reply::{with_cors, Ending};
use super::{hub_problem, take_slot, HeldSlot};
use crate::actions::Admitted;
use crate::core::runtime::Runtime;
use crate::core::spec::channel::LongPollSpec;
use crate::exchange::hold::{hold, Held};
use crate::exchange::{body, Exchange, Reply};
use crate::hub::{ChannelKey, Cursor, HubError, Message, OnWaiting, PollOutcome, PollRequest};
use crate::observe::metrics::METRICS;
use crate::problem::Problem;
use base64::Engine;
use bytes::Bytes;
use http::HeaderValue;
use pingora_error::Result;
use pingora_http::RequestHeader;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

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

/// An open stream: its channel and place in it, and the slot it holds.
pub struct Stream<'r> {
    key: ChannelKey,
    request: PollRequest,
    keepalive: Duration,
    route: std::sync::Arc<str>,
    /// Counted in `max_held` and the instance's cap, as held polls are.
    _slot: HeldSlot<'r>,
    _subscribed: Subscribed,
}

/// Counts a stream in `holdfast_subscribers` while it lives.
struct Subscribed(prometheus::IntGauge);

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Opens a stream: its channel and cursor from the request, a held slot, its place in the
/// channel taken (so that a publish made once the client has the head reaches it). `Ok` is the
/// stream and the reply that starts it (the head, `retry:`, and any events already there);
/// `Err` the reply that refuses it.
pub async fn open<'r>(
    runtime: &'r Runtime,
    exchange: &mut impl Exchange,
    admitted: &Admitted<'_>,
    spec: &LongPollSpec,
) -> Result<std::result::Result<(Stream<'r>, Reply), Reply>> {
    let settings = &spec.settings;
    let header = exchange.head();
    let inputs = params::channel_key(
        &spec.channel,
        header,
        admitted.captures,
        admitted.identity.map(|i| i.claims().as_value()),
        runtime.channels.max_name_length,
    )
    .and_then(|key| Ok((key, params::stream_cursor(header)?)));
    let (key, cursor) = match inputs {
        Ok(inputs) => inputs,
        Err(problem) => return Ok(Err(Reply::problem(&problem))),
    };
    let origin = header
        .headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let slot = match take_slot(runtime, spec, &admitted.route.name) {
        Ok(slot) => slot,
        Err(problem) => return Ok(Err(Reply::problem(&problem))),
    };
    if let Err(problem) = body::drain(exchange, admitted.body_timeout).await? {
        return Ok(Err(Reply::problem(&problem)));
    }
    let route = admitted.route.name.clone();
    let mut request = PollRequest {
        cursor,
        start: settings.start,
        limit: settings.limit,
    };
    let mut events = format!("retry: {RETRY_MS}\n\n").into_bytes();
    if key.mode == conf::ChannelMode::Broadcast {
        // A look without waiting fixes where the stream starts before the client hears of it.
        // (A queue has no place to fix, and what it hands out is taken for good.)
        let first = runtime
            .hub
            .wait(&key, request, Instant::now(), OnWaiting::nobody())
            .await;
        match next(&mut request, first, &route) {
            Next::Write(more, _) => events.extend_from_slice(&more),
            Next::Quiet => {}
            Next::Failed(error) => return Ok(Err(Reply::problem(&hub_problem(&error)))),
        }
    }
    let ending = Ending {
        settings,
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
    let gauge = METRICS
        .subscribers
        .with_label_values(&[&route, conf::Transport::Sse.as_str()]);
    gauge.inc();
    Ok(Ok((
        Stream {
            key,
            request,
            keepalive: settings.keepalive.get(),
            route,
            _slot: slot,
            _subscribed: Subscribed(gauge),
        },
        head,
    )))
}

/// What the stream does with one answer of the hub.
enum Next {
    /// The events to write, and the messages they carry.
    Write(Vec<u8>, Vec<Message>),
    /// Nothing came: the stream's place is kept.
    Quiet,
    Failed(HubError),
}

/// Moves `request` past `outcome` and renders what it brought.
fn next(
    request: &mut PollRequest,
    outcome: std::result::Result<PollOutcome, HubError>,
    route: &str,
) -> Next {
    match outcome {
        Ok(PollOutcome::Messages { messages, cursor }) => {
            request.cursor = Some(cursor);
            METRICS
                .messages_delivered
                .with_label_values(&[route, conf::Transport::Sse.as_str()])
                .inc_by(messages.len() as u64);
            Next::Write(events(&messages), messages)
        }
        Ok(PollOutcome::Timeout { cursor }) => {
            if cursor.is_some() {
                request.cursor = cursor;
            }
            Next::Quiet
        }
        Ok(PollOutcome::Gone { oldest }) => {
            // Never a silent gap: the subscriber hears where the stream starts again.
            request.cursor = Some(oldest);
            METRICS.stream_resets.with_label_values(&[route]).inc();
            Next::Write(reset(&oldest), Vec::new())
        }
        Err(error) => Next::Failed(error),
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
                let deadline = Instant::now() + self.keepalive;
                let work = std::pin::pin!(runtime.hub.wait(
                    &self.key,
                    self.request,
                    deadline,
                    OnWaiting::nobody()
                ));
                hold(runtime, sink.client_gone(), None, work).await
            };
            match held {
                Held::Done(outcome) => {
                    if let Some(ended) = Box::pin(self.deliver(runtime, sink, outcome)).await {
                        return ended;
                    }
                }
                Held::ClientGone => return "client_gone",
                Held::Shutdown | Held::HoldEnded => {
                    // Ended cleanly: EventSource reconnects (to the new process, on an
                    // upgrade) and resumes from its `Last-Event-ID`.
                    let _ = sink.end().await;
                    return "shutdown";
                }
            }
        }
    }

    /// Writes what one wait on the hub brought; how the stream ended, if it did.
    async fn deliver(
        &mut self,
        runtime: &Runtime,
        sink: &mut impl Sink,
        outcome: std::result::Result<PollOutcome, HubError>,
    ) -> Option<&'static str> {
        let (wire, taken) = match next(&mut self.request, outcome, &self.route) {
            Next::Write(events, messages) => (events, messages),
            // A comment line keeps proxies and clients from closing a quiet stream.
            Next::Quiet => (b":\n\n".to_vec(), Vec::new()),
            Next::Failed(error) => {
                let _ = sink.write(Bytes::from(failure(&error))).await;
                let _ = sink.end().await;
                return Some("error");
            }
        };
        if sink.write(Bytes::from(wire)).await.is_err() {
            if self.key.mode == conf::ChannelMode::Queue {
                self.hand_back(runtime, taken).await;
            }
            return Some("client_gone");
        }
        None
    }
}

impl Stream<'_> {
    /// Puts queue messages whose write failed back on the queue (at its end, with new ids), so
    /// that another subscriber gets them.
    async fn hand_back(&self, runtime: &Runtime, messages: Vec<Message>) {
        for message in messages {
            let content_type = message.content_type.as_deref();
            let event = message.event.as_deref();
            if let Err(error) = runtime
                .hub
                .publish_event(&self.key, message.body.clone(), content_type, event)
                .await
            {
                tracing::warn!(%error, "a queue message whose write failed could not be handed back");
            }
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
