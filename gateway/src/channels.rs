//! Long-poll and publish routes answered by the gateway itself (docs/architecture.md): a poll
//! is held in a `select!` beside client-gone detection and shutdown; a publish stores the body
//! on the hub. The hub (`longpoll`) holds the channels; this module speaks HTTP.

mod answer;
mod params;
mod spec;

pub use spec::{ChannelSpec, LongPollSpec, PublishSpec};

use crate::ctx::RequestCtx;
use crate::longpoll::{HubError, PollOutcome, PollRequest};
use crate::metrics::METRICS;
use crate::problem::Problem;
use crate::proxy::answer as answer_problem;
use crate::runtime::Runtime;
use answer::{send_messages, send_timeout, Ending};
use pingora_error::Result;
use pingora_proxy::Session;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Held polls past a cap are told to come back after this many seconds.
const RETRY_AFTER_SECS: &str = "1";

fn unavailable(detail: String) -> Problem {
    Problem::new(503, "unavailable", "Service Unavailable", detail)
        .with_header("retry-after", RETRY_AFTER_SECS)
}

/// A hub error as the client sees it.
fn hub_problem(error: &HubError) -> Problem {
    if let HubError::CursorAhead { newest, .. } = error {
        let problem = Problem::new(400, "cursor-ahead", "Bad Request", error.to_string());
        return match newest {
            Some(newest) => problem.with_member("newest", newest.to_string().into()),
            None => problem,
        };
    }
    match error.status() {
        400 => Problem::new(400, "bad-request", "Bad Request", error.to_string()),
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

/// Releases a held poll's slots (route and instance) and its gauge when the poll ends.
struct HeldSlot<'a> {
    spec: &'a LongPollSpec,
    runtime: &'a Runtime,
    gauge: prometheus::IntGauge,
}

impl Drop for HeldSlot<'_> {
    fn drop(&mut self) {
        self.spec.held.fetch_sub(1, Ordering::Relaxed);
        self.runtime.release_held();
        self.gauge.dec();
    }
}

fn take_slot<'a>(
    runtime: &'a Runtime,
    spec: &'a LongPollSpec,
    route: &str,
) -> Result<HeldSlot<'a>, Problem> {
    if let Some(max) = spec.settings.max_held {
        if spec.held.fetch_add(1, Ordering::Relaxed) >= max {
            spec.held.fetch_sub(1, Ordering::Relaxed);
            return Err(unavailable(format!(
                "this route already holds its maximum of {max} polls"
            )));
        }
    } else {
        spec.held.fetch_add(1, Ordering::Relaxed);
    }
    if !runtime.acquire_held() {
        spec.held.fetch_sub(1, Ordering::Relaxed);
        return Err(unavailable(
            "this instance already holds its maximum of polls".to_owned(),
        ));
    }
    let gauge = METRICS.longpoll_held.with_label_values(&[route]);
    gauge.inc();
    Ok(HeldSlot {
        spec,
        runtime,
        gauge,
    })
}

/// How a held poll ended, for `holdfast_longpoll_completions_total`.
enum Held {
    Done(std::result::Result<PollOutcome, HubError>),
    ClientGone,
    Shutdown,
}

/// Serves a `longpoll` route; returns the status written (0 when the client left).
pub async fn poll(
    runtime: &Runtime,
    session: &mut Session,
    ctx: &mut RequestCtx,
    spec: &LongPollSpec,
) -> Result<u16> {
    let route = ctx.route_name().to_owned();
    let settings = &spec.settings;
    let header = session.req_header();
    let max_len = runtime.channels.max_name_length;
    let inputs = params::channel_key(
        &spec.channel,
        header,
        &ctx.captures,
        ctx.identity.as_ref().map(|i| i.claims().as_value()),
        max_len,
    )
    .and_then(|key| {
        Ok((
            key,
            params::cursor(header)?,
            params::hold(header, settings.timeout.get())?,
        ))
    });
    let (key, cursor, hold) = match inputs {
        Ok(inputs) => inputs,
        Err(problem) => {
            return answer_problem(session, ctx, &problem)
                .await
                .map(|_| problem.status)
        }
    };
    let slot = match take_slot(runtime, spec, &route) {
        Ok(slot) => slot,
        Err(problem) => {
            return answer_problem(session, ctx, &problem)
                .await
                .map(|_| problem.status)
        }
    };
    // The client-gone probe reads the connection: any request body must be out of the way first.
    if let Err(problem) = crate::body::drain(session, ctx.body_timeout()).await? {
        return answer_problem(session, ctx, &problem)
            .await
            .map(|_| problem.status);
    }
    let limit = match settings.format {
        conf::PollFormat::Raw => 1,
        conf::PollFormat::Batch => settings.limit,
    };
    let request = PollRequest {
        cursor,
        start: settings.start,
        limit,
    };
    let deadline = tokio::time::Instant::now() + hold;
    let mut shutdown = runtime.shutdown_signal();
    let held = if *shutdown.borrow_and_update() {
        Held::Shutdown
    } else {
        tokio::select! {
            outcome = runtime.hub.poll(&key, request, deadline) => Held::Done(outcome),
            _ = session.read_body_or_idle(true) => Held::ClientGone,
            _ = shutdown.changed() => Held::Shutdown,
        }
    };
    drop(slot);
    let route_spec = ctx.route.clone();
    let ending = Ending {
        settings,
        cors: route_spec.as_ref().and_then(|r| r.cors.as_ref()),
        origin: origin(session),
    };
    let (outcome, status) = match held {
        Held::Done(Ok(PollOutcome::Messages { messages, cursor })) => {
            let now = std::time::SystemTime::now();
            let delivery = METRICS.publish_to_delivery.with_label_values(&[&route]);
            for message in &messages {
                delivery.observe(
                    now.duration_since(message.published_at)
                        .unwrap_or(Duration::ZERO)
                        .as_secs_f64(),
                );
            }
            (
                "data",
                send_messages(session, ctx, &ending, &messages, &cursor).await?,
            )
        }
        Held::Done(Ok(PollOutcome::Timeout { cursor })) => (
            "timeout",
            send_timeout(session, ctx, &ending, cursor.as_ref(), false).await?,
        ),
        Held::Done(Ok(PollOutcome::Gone { oldest })) => {
            let problem = Problem::new(
                410,
                "cursor-gone",
                "Gone",
                format!("the cursor is older than the channel's buffer; resume from `{oldest}`, the oldest cursor still held"),
            )
            .with_member("oldest", oldest.to_string().into());
            (
                "gone",
                answer_problem(session, ctx, &problem).await.map(|_| 410)?,
            )
        }
        Held::Done(Err(error)) => {
            let problem = hub_problem(&error);
            (
                "error",
                answer_problem(session, ctx, &problem)
                    .await
                    .map(|_| problem.status)?,
            )
        }
        Held::ClientGone => ("client_gone", 0),
        Held::Shutdown => (
            "shutdown",
            send_timeout(session, ctx, &ending, cursor.as_ref(), true).await?,
        ),
    };
    ctx.outcome = Some(outcome);
    METRICS
        .longpoll_completions
        .with_label_values(&[&route, outcome])
        .inc();
    Ok(status)
}

fn origin(session: &Session) -> Option<String> {
    session
        .req_header()
        .headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Serves a `publish` route: stores the body (with its content type) and answers 201.
pub async fn publish(
    runtime: &Runtime,
    session: &mut Session,
    ctx: &mut RequestCtx,
    spec: &PublishSpec,
) -> Result<u16> {
    let max_body = ctx.route.as_ref().map_or(1 << 20, |route| route.max_body);
    let header = session.req_header();
    let key = match params::channel_key(
        &spec.channel,
        header,
        &ctx.captures,
        ctx.identity.as_ref().map(|i| i.claims().as_value()),
        runtime.channels.max_name_length,
    ) {
        Ok(key) => key,
        Err(problem) => {
            return answer_problem(session, ctx, &problem)
                .await
                .map(|_| problem.status)
        }
    };
    let content_type = header
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match crate::body::read_whole(session, max_body, ctx.body_timeout()).await? {
        Ok(body) => body,
        Err(problem) => {
            return answer_problem(session, ctx, &problem)
                .await
                .map(|_| problem.status)
        }
    };
    match runtime
        .hub
        .publish(&key, body, content_type.as_deref())
        .await
    {
        Ok(published) => {
            METRICS
                .messages_published
                .with_label_values(&[ctx.route_name()])
                .inc();
            let cursor = published.cursor.to_string();
            let body = serde_json::json!({"id": cursor, "cursor": cursor, "delivered_to": published.delivered_to});
            let headers = [("poll-cursor", cursor.as_str())];
            answer::send_json(session, ctx, 201, &body, &headers).await?;
            Ok(201)
        }
        Err(error) => {
            let problem = hub_problem(&error);
            answer_problem(session, ctx, &problem)
                .await
                .map(|_| problem.status)
        }
    }
}
