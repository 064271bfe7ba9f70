//! A subscriber that stays connected (a Server-Sent Events stream, a WebSocket): its channel
//! and place in it, the slot it holds, and what each wait on the hub brings it — the part the
//! transports share. Each transport renders the deliveries its own way (`sse.rs`,
//! `websocket.rs`). See docs/streams.md.

use super::params;
use super::HeldSlot;
use crate::actions::Admitted;
use crate::core::runtime::Runtime;
use crate::core::spec::channel::{LongPollSpec, SubscriberMetrics};
use crate::exchange::{Exchange, Reply};
use crate::hub::{ChannelKey, Cursor, HubError, Message, OnWaiting, PollOutcome, PollRequest};
use pingora_error::Result;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// An open subscription.
pub struct Subscription<'r> {
    key: ChannelKey,
    request: PollRequest,
    /// How long a wait lasts before the transport keeps the connection alive (a comment line,
    /// a ping).
    pub keepalive: Duration,
    /// The route's metrics for this transport: counted in `subscribers` while it lives.
    metrics: Arc<SubscriberMetrics>,
    /// Bytes that may wait behind a write that has not gone out; past it: too slow.
    max_lag: usize,
    /// When the credential the subscriber connected with expires: the connection ends then,
    /// and a reconnect must bring a fresh one.
    pub expires: Option<Instant>,
    /// Counted in `max_held` and the instance's cap, as held polls are.
    _slot: HeldSlot<'r>,
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        self.metrics.subscribers.dec();
    }
}

/// What one wait on the hub brought a subscriber.
pub enum Delivery {
    /// Messages, oldest first: the subscription has moved past them.
    Messages(Vec<Message>),
    /// The subscriber's cursor was older than the buffer: it goes on from `oldest`, the oldest
    /// message still held. Never a silent gap: the subscriber is told.
    Reset(Cursor),
    /// Nothing came before the keep-alive: the subscription's place is kept.
    Quiet,
    Failed(HubError),
}

/// What a subscriber took from its channel while a write to it was still going out, to write
/// next.
#[derive(Default)]
pub struct Backlog {
    pub deliveries: Vec<Delivery>,
    bytes: usize,
}

impl Backlog {
    fn push(&mut self, delivery: Delivery) {
        self.bytes += match &delivery {
            Delivery::Messages(messages) => messages.iter().map(|m| m.body.len()).sum(),
            _ => 0,
        };
        self.deliveries.push(delivery);
    }

    /// Every message in it (to hand back when they cannot be written).
    pub fn messages(&mut self) -> impl Iterator<Item = Message> + '_ {
        self.deliveries
            .drain(..)
            .flat_map(|delivery| match delivery {
                Delivery::Messages(messages) => messages,
                _ => Vec::new(),
            })
    }
}

/// Adds `more` to `all`, moving it when `all` is empty: a delivery is usually one batch, which
/// then costs no copy.
pub fn gather<T>(all: &mut Vec<T>, more: Vec<T>) {
    if all.is_empty() {
        *all = more;
    } else {
        all.extend(more);
    }
}

/// How a write that kept up with the channel ended.
pub enum Written<T> {
    /// The write's own result; what came meanwhile is in the backlog.
    Done(T),
    /// More than `max_lag` waited behind it (on a queue: it took a whole keep-alive): the
    /// subscriber does not read, and is closed as too slow.
    Slow,
    /// The gateway is shutting down.
    Shutdown,
}

/// Opens a subscription by `transport` with the cursor the request gave: its channel, a held
/// slot, the request body drained and — on a broadcast channel — its place in the channel taken
/// by a look that does not wait, so that a publish made once the client knows it is subscribed
/// reaches it. `Ok` is the subscription and what that look brought; `Err` the refusal.
pub async fn open<'r>(
    runtime: &'r Runtime,
    exchange: &mut impl Exchange,
    admitted: &Admitted<'_>,
    spec: &LongPollSpec,
    transport: conf::Transport,
) -> Result<std::result::Result<(Subscription<'r>, Delivery), Reply>> {
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
    let slot = match super::held_slot(runtime, exchange, admitted, spec, &key).await? {
        Ok(slot) => slot,
        Err(reply) => return Ok(Err(reply)),
    };
    let metrics = spec.subscriber_metrics(transport).clone();
    metrics.subscribers.inc();
    let mut subscription = Subscription {
        key,
        request: PollRequest {
            cursor,
            start: settings.start,
            limit: settings.limit,
        },
        keepalive: settings.keepalive.get(),
        metrics,
        max_lag: settings.max_lag.as_usize(),
        expires: admitted.identity.and_then(expiry),
        _slot: slot,
    };
    let mut first = Delivery::Quiet;
    // A queue has no place to fix, and what it hands out is taken for good.
    if subscription.key.mode == conf::ChannelMode::Broadcast {
        let look = runtime.hub.wait(
            &subscription.key,
            subscription.request,
            Instant::now(),
            OnWaiting::nobody(),
        );
        first = subscription.advance(look.await);
        if let Delivery::Failed(error) = first {
            return Ok(Err(Reply::problem(&super::hub_problem(&error))));
        }
    }
    Ok(Ok((subscription, first)))
}

/// When `identity`'s credential expires, on the runtime's clock.
fn expiry(identity: &auth::Identity) -> Option<Instant> {
    let left = identity
        .expires_at()?
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    Some(Instant::now() + left)
}

impl Subscription<'_> {
    /// The channel subscribed to.
    pub fn key(&self) -> &ChannelKey {
        &self.key
    }

    /// The route's name.
    pub fn route(&self) -> &str {
        &self.metrics.route
    }

    /// The hub's next answer for this subscriber, or nothing within one keep-alive.
    pub fn wait<'w>(
        &'w self,
        runtime: &'w Runtime,
    ) -> impl Future<Output = std::result::Result<PollOutcome, HubError>> + Send + 'w {
        let deadline = Instant::now() + self.keepalive;
        runtime
            .hub
            .wait(&self.key, self.request, deadline, OnWaiting::nobody())
    }

    /// Counts `messages` written to the subscriber (taken is not written: a subscriber closed
    /// before its write went out did not get them).
    pub fn written(&self, messages: usize) {
        self.metrics.delivered.inc_by(messages as u64);
    }

    /// Moves the subscription past `outcome`; what it brought.
    pub fn advance(&mut self, outcome: std::result::Result<PollOutcome, HubError>) -> Delivery {
        match outcome {
            Ok(PollOutcome::Messages { messages, cursor }) => {
                self.request.cursor = Some(cursor);
                Delivery::Messages(messages)
            }
            Ok(PollOutcome::Timeout { cursor }) => {
                if cursor.is_some() {
                    self.request.cursor = cursor;
                }
                Delivery::Quiet
            }
            Ok(PollOutcome::Gone { oldest }) => {
                self.request.cursor = Some(oldest);
                self.metrics.resets.inc();
                Delivery::Reset(oldest)
            }
            Err(error) => Delivery::Failed(error),
        }
    }

    /// Drives `write` (to this subscriber) to its end while keeping its place in the channel:
    /// on a broadcast channel what arrives meanwhile is taken into `backlog`, to be written next
    /// in one go, until more than `max_lag` bytes wait; a queue takes nothing more while it
    /// writes (so that other subscribers get the messages), and gives a write one keep-alive.
    pub async fn write_keeping_up<T>(
        &mut self,
        runtime: &Runtime,
        write: impl Future<Output = T>,
        backlog: &mut Backlog,
    ) -> Written<T> {
        let mut write = std::pin::pin!(write);
        let mut shutdown = runtime.shutdown_signal();
        let mut reading = self.key.mode == conf::ChannelMode::Broadcast;
        loop {
            if *shutdown.borrow_and_update() {
                return Written::Shutdown;
            }
            // The write first: one that goes out at once (the usual case) never waits on the
            // hub.
            let outcome = if reading {
                tokio::select! {
                    biased;
                    done = &mut write => return Written::Done(done),
                    outcome = self.wait(runtime) => outcome,
                    _ = shutdown.changed() => continue,
                }
            } else {
                let patience = tokio::time::sleep(self.keepalive);
                tokio::select! {
                    biased;
                    done = &mut write => return Written::Done(done),
                    _ = patience, if self.key.mode == conf::ChannelMode::Queue => {
                        return self.slow();
                    }
                    _ = shutdown.changed() => continue,
                }
            };
            match self.advance(outcome) {
                Delivery::Quiet => {}
                delivery => {
                    // A failing channel is not read again; its error is written in turn.
                    reading = !matches!(delivery, Delivery::Failed(_));
                    backlog.push(delivery);
                    if backlog.bytes > self.max_lag {
                        return self.slow();
                    }
                }
            }
        }
    }

    fn slow<T>(&self) -> Written<T> {
        self.metrics.slow.inc();
        Written::Slow
    }

    /// The most bytes that may wait behind a write, for telling a slow subscriber why.
    pub fn max_lag(&self) -> usize {
        self.max_lag
    }

    /// Puts queue messages whose write failed back on the queue (at its end, with new ids), so
    /// that another subscriber gets them; nothing on a broadcast channel, where every
    /// subscriber resumes by its own cursor.
    pub async fn hand_back(&self, runtime: &Runtime, messages: impl IntoIterator<Item = Message>) {
        if self.key.mode != conf::ChannelMode::Queue {
            return;
        }
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
