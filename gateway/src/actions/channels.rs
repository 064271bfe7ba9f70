//! Long-poll and publish routes: a poll is held on the hub (beside the client leaving and
//! shutdown) and ends with its reply; a publish stores the body on the hub. The hub holds the
//! channels; this module speaks HTTP. See docs/hub.md.

mod params;
mod reply;
pub mod sse;
pub mod subscription;
pub mod websocket;

use crate::actions::Admitted;
use crate::core::routes::CompiledRoute;
use crate::core::runtime::Runtime;
use crate::core::spec::channel::{LongPollSpec, PublishSpec};
use crate::exchange::hold::{hold, Held};
use crate::exchange::{body, Exchange, Reply};
use crate::hub::{validate_event_name, ChannelKey, HubError, OnWaiting, PollOutcome, PollRequest};
use crate::observe::metrics::METRICS;
use crate::problem::Problem;
use pingora_error::Result;
use reply::{messages_reply, timeout_reply, Ending};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Held polls past a cap are told to come back after this many seconds.
const RETRY_AFTER_SECS: &str = "1";

fn unavailable(detail: String) -> Problem {
    Problem::new(503, "unavailable", "Service Unavailable", detail)
        .with_header("retry-after", RETRY_AFTER_SECS)
}

/// A hub error as the client sees it.
pub(super) fn hub_problem(error: &HubError) -> Problem {
    if let HubError::CursorAhead { newest, .. } = error {
        let problem = Problem::new(400, "cursor-ahead", "Bad Request", error.to_string());
        return match newest {
            Some(newest) => problem.with_member("newest", newest.to_string().into()),
            None => problem,
        };
    }
    match error.status() {
        400 => Problem::new(400, "bad-request", "Bad Request", error.to_string()),
        503 if matches!(error, HubError::Unreplicated(_)) => unavailable(
            "no replica acknowledged the message in time, so it is not acknowledged as stored; publish it again".to_owned(),
        ),
        503 => unavailable("the channel backplane is unreachable; try again shortly".to_owned()),
        507 => Problem::new(507, "queue-full", "Insufficient Storage", error.to_string()),
        _ => Problem::new(
            500,
            "internal",
            "Internal Server Error",
            "the channel could not be read",
        ),
    }
}

/// The answer to a poll on a route that serves its channel only as streams.
fn not_acceptable(settings: &conf::LongPoll) -> Problem {
    let transports: Vec<&str> = settings.subscribe.iter().map(|t| t.as_str()).collect();
    let how = transports.join(", ");
    Problem::new(
        406,
        "transport-not-served",
        "Not Acceptable",
        format!("this route serves its channel to subscribers by {how}, not by long-poll; for Server-Sent Events send `Accept: text/event-stream`"),
    )
}

/// Releases a held poll's slots (route and instance) when the poll ends.
pub(super) struct HeldSlot<'r> {
    /// The route's count of held polls (for `max_held`).
    held: Arc<AtomicUsize>,
    runtime: &'r Runtime,
    gauge: prometheus::IntGauge,
}

impl Drop for HeldSlot<'_> {
    fn drop(&mut self) {
        self.held.fetch_sub(1, Ordering::Relaxed);
        self.runtime.release_held();
    }
}

/// Counts a poll in `holdfast_longpoll_held` from the moment the hub says it waits (its
/// position in the channel taken) until the wait ends: a publish made after the gauge counted
/// the poll reaches it.
struct Counted<'g>(&'g prometheus::IntGauge);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub(super) fn take_slot<'r>(
    runtime: &'r Runtime,
    spec: &LongPollSpec,
    route: &str,
) -> Result<HeldSlot<'r>, Problem> {
    let held = &spec.held;
    if let Some(max) = spec.settings.max_held {
        if held.fetch_add(1, Ordering::Relaxed) >= max {
            held.fetch_sub(1, Ordering::Relaxed);
            return Err(unavailable(format!(
                "this route already holds its maximum of {max} polls"
            )));
        }
    } else {
        held.fetch_add(1, Ordering::Relaxed);
    }
    if !runtime.acquire_held() {
        held.fetch_sub(1, Ordering::Relaxed);
        return Err(unavailable(
            "this instance already holds its maximum of polls".to_owned(),
        ));
    }
    let gauge = METRICS.longpoll_held.with_label_values(&[route]);
    Ok(HeldSlot {
        held: held.clone(),
        runtime,
        gauge,
    })
}

/// A held slot on `spec`'s route for a subscriber that is about to wait, with its request body
/// drained: noticing that the client left reads the connection, so the body must be out of the
/// way first. `Err` is the reply that refuses it.
pub(super) async fn held_slot<'r>(
    runtime: &'r Runtime,
    exchange: &mut impl Exchange,
    admitted: &Admitted<'_>,
    spec: &LongPollSpec,
    key: &ChannelKey,
) -> Result<Result<HeldSlot<'r>, Reply>> {
    let slot = match take_slot(runtime, spec, &admitted.route.name) {
        Ok(slot) => slot,
        Err(problem) => return Ok(Err(Reply::problem(&problem))),
    };
    if let Err(problem) = body::drain(exchange, admitted.body_timeout).await? {
        return Ok(Err(Reply::problem(&problem)));
    }
    if let Some(trace) = admitted.trace {
        let broadcast = key.mode == conf::ChannelMode::Broadcast;
        trace.start_hold(Some(&key.name), broadcast);
    }
    Ok(Ok(slot))
}

/// A poll that waits on its channel: what the hub is asked, and the slot it holds meanwhile.
/// It owns all it needs, so a transport may keep it in place of the request while it waits.
pub struct Waiting<'r> {
    pub key: ChannelKey,
    pub request: PollRequest,
    /// When the hub ends the poll with the cursor to resume from.
    pub deadline: Instant,
    slot: HeldSlot<'r>,
}

impl Waiting<'_> {
    /// The hub's answer to this poll, raced by the caller against the client and shutdown.
    pub fn wait<'w>(
        &'w self,
        runtime: &'w Runtime,
    ) -> impl Future<Output = Result<PollOutcome, HubError>> + Send + 'w {
        async move {
            let gauge = &self.slot.gauge;
            let mut counted = None;
            let mut count = || {
                gauge.inc();
                counted = Some(Counted(gauge));
            };
            let on_waiting = OnWaiting::new(&mut count);
            runtime
                .hub
                .wait(&self.key, self.request, self.deadline, on_waiting)
                .await
        }
    }
}

/// Serves a `longpoll` route; `None` when the client left.
pub async fn poll(
    runtime: &Runtime,
    exchange: &mut impl Exchange,
    admitted: &mut Admitted<'_>,
    spec: &LongPollSpec,
) -> Result<Option<Reply>> {
    let waiting = match open(runtime, exchange, admitted, spec).await? {
        Ok(waiting) => waiting,
        Err(reply) => return Ok(Some(reply)),
    };
    let held = {
        let work = std::pin::pin!(waiting.wait(runtime));
        hold(runtime, exchange.client_gone(), None, work).await
    };
    let origin = exchange
        .head()
        .headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let (outcome, reply) = close(admitted.route, spec, origin, waiting, held);
    admitted.outcome = Some(outcome);
    Ok(reply)
}

/// Opens a `longpoll` route's poll: the channel, cursor and hold from the request, a held slot,
/// the request body drained. `Err` is the reply that refuses it.
pub async fn open<'r>(
    runtime: &'r Runtime,
    exchange: &mut impl Exchange,
    admitted: &Admitted<'_>,
    spec: &LongPollSpec,
) -> Result<Result<Waiting<'r>, Reply>> {
    let settings = &spec.settings;
    if !settings.subscribe.contains(&conf::Transport::Longpoll) {
        return Ok(Err(Reply::problem(&not_acceptable(settings))));
    }
    let header = exchange.head();
    let max_len = runtime.channels.max_name_length;
    let inputs = params::channel_key(
        &spec.channel,
        header,
        admitted.captures,
        admitted.identity.map(|i| i.claims().as_value()),
        max_len,
    )
    .and_then(|key| {
        Ok((
            key,
            params::cursor(header)?,
            params::hold(header, settings.timeout.get())?,
        ))
    });
    let (key, cursor, hold_for) = match inputs {
        Ok(inputs) => inputs,
        Err(problem) => return Ok(Err(Reply::problem(&problem))),
    };
    let slot = match held_slot(runtime, exchange, admitted, spec, &key).await? {
        Ok(slot) => slot,
        Err(reply) => return Ok(Err(reply)),
    };
    let limit = match settings.format {
        conf::PollFormat::Raw => 1,
        conf::PollFormat::Batch | conf::PollFormat::Envelope => settings.limit,
    };
    Ok(Ok(Waiting {
        key,
        request: PollRequest {
            cursor,
            start: settings.start,
            limit,
        },
        // The hub ends the poll at the deadline itself (with the cursor to resume from).
        deadline: Instant::now() + hold_for,
        slot,
    }))
}

/// Ends a poll that waited: its slot freed, its outcome counted, and the reply for how it
/// ended (`None`: the client left). `origin` is the request's `Origin`.
pub fn close(
    route: &CompiledRoute,
    spec: &LongPollSpec,
    origin: Option<&str>,
    waiting: Waiting<'_>,
    held: Held<Result<PollOutcome, HubError>>,
) -> (&'static str, Option<Reply>) {
    let Waiting { request, slot, .. } = waiting;
    drop(slot);
    let ending = Ending {
        settings: &spec.settings,
        cors: route.cors.as_ref(),
        origin,
    };
    let cursor = request.cursor;
    let (outcome, reply) = match held {
        Held::Done(Ok(PollOutcome::Messages { messages, cursor })) => {
            let now = std::time::SystemTime::now();
            let delivery = METRICS
                .publish_to_delivery
                .with_label_values(&[&route.name]);
            for message in &messages {
                delivery.observe(
                    now.duration_since(message.published_at)
                        .unwrap_or(Duration::ZERO)
                        .as_secs_f64(),
                );
            }
            ("data", Some(messages_reply(&ending, &messages, &cursor)))
        }
        Held::Done(Ok(PollOutcome::Timeout { cursor })) => (
            "timeout",
            Some(timeout_reply(&ending, cursor.as_ref(), false)),
        ),
        Held::Done(Ok(PollOutcome::Gone { oldest })) => {
            let problem = Problem::new(
                410,
                "cursor-gone",
                "Gone",
                format!("the cursor is older than the channel's buffer; resume from `{oldest}`, the oldest cursor still held"),
            )
            .with_member("oldest", oldest.to_string().into());
            ("gone", Some(Reply::problem(&problem)))
        }
        Held::Done(Err(error)) => ("error", Some(Reply::problem(&hub_problem(&error)))),
        Held::ClientGone => ("client_gone", None),
        Held::Shutdown | Held::HoldEnded => (
            "shutdown",
            Some(timeout_reply(&ending, cursor.as_ref(), true)),
        ),
    };
    METRICS
        .longpoll_completions
        .with_label_values(&[&route.name, outcome])
        .inc();
    (outcome, reply)
}

/// Serves a `publish` route: stores the body (with its content type) and answers 201.
pub async fn publish(
    runtime: &Runtime,
    exchange: &mut impl Exchange,
    admitted: &Admitted<'_>,
    spec: &PublishSpec,
) -> Result<Reply> {
    let header = exchange.head();
    let key = match params::channel_key(
        &spec.channel,
        header,
        admitted.captures,
        admitted.identity.map(|i| i.claims().as_value()),
        runtime.channels.max_name_length,
    ) {
        Ok(key) => key,
        Err(problem) => return Ok(Reply::problem(&problem)),
    };
    let content_type = header
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // `?event=NAME`: the `event:` streams send the message under.
    let event = params::query_value(header.uri.query(), "event").map(|event| event.into_owned());
    if let Some(event) = &event {
        if let Err(error) = validate_event_name(event) {
            let problem = Problem::new(
                400,
                "bad-event-name",
                "Bad Request",
                format!("invalid event name: {error}"),
            );
            return Ok(Reply::problem(&problem));
        }
    }
    let read = body::read_whole(exchange, admitted.route.max_body, admitted.body_timeout).await?;
    let body = match read {
        Ok(body) => body,
        Err(problem) => return Ok(Reply::problem(&problem)),
    };
    let message = Incoming {
        body,
        content_type: content_type.as_deref(),
        event: event.as_deref(),
    };
    let broadcast = key.mode == conf::ChannelMode::Broadcast;
    let span = admitted
        .trace
        .and_then(|trace| trace.server.start_publish(&key.name, broadcast));
    let stored = store(runtime, &admitted.route.name, &key, message).await;
    if let Some(span) = span {
        span.end(stored.as_ref().err().map(|problem| problem.status));
    }
    match stored {
        Ok(published) => {
            let cursor = published.cursor.to_string();
            let body = serde_json::json!({"id": cursor, "cursor": cursor, "delivered_to": published.delivered_to});
            Ok(Reply::json(201, &body).header("poll-cursor", &cursor))
        }
        Err(problem) => Ok(Reply::problem(&problem)),
    }
}

/// A message to publish: its body, content type and event name.
pub(super) struct Incoming<'a> {
    pub body: bytes::Bytes,
    pub content_type: Option<&'a str>,
    pub event: Option<&'a str>,
}

/// Publishes `message` on the channel `key` for `route` (a publish route's request, a
/// WebSocket subscriber's message) and counts it; the problem that refuses it.
pub(super) async fn store(
    runtime: &Runtime,
    route: &str,
    key: &ChannelKey,
    message: Incoming<'_>,
) -> std::result::Result<crate::hub::Published, Problem> {
    let Incoming {
        body,
        content_type,
        event,
    } = message;
    let published = runtime
        .hub
        .publish_event(key, body, content_type, event)
        .await
        .map_err(|error| hub_problem(&error))?;
    METRICS.messages_published.with_label_values(&[route]).inc();
    Ok(published)
}
