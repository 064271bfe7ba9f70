//! A streamed answer on its way: the provider's events read as they come, translated to the
//! client's format and written at once (nothing buffered beyond an incomplete event), the time
//! to the first token and the usage counted. A provider that stops mid-way ends the client's
//! stream with an error event in its format, counted as `stream_error`.

use super::translate::{StreamTranslator, Usage};
use crate::core::spec::llm::cache::{Cached, Filler};
use crate::core::upstream::exchange::Opened;
use crate::exchange::Exchange;
use crate::observe::metrics::METRICS;
use bytes::Bytes;
use std::future::Future;
use tokio::time::Instant;

/// Where a streamed answer goes: the client's connection, or the log a resumable answer is
/// kept in.
pub trait Sink: Send {
    /// Writes the next events; `Err` when nobody can receive them any more.
    fn send(&mut self, events: Bytes) -> impl Future<Output = Result<(), ()>> + Send;

    /// Resolves when the answer is no longer wanted, with the outcome counted for it.
    fn gone(&mut self) -> impl Future<Output = &'static str> + Send;

    /// The answer is over.
    fn end(&mut self) -> impl Future<Output = ()> + Send;
}

/// The client's own connection.
pub struct ToClient<'a, E>(pub &'a mut E);

impl<E: Exchange> Sink for ToClient<'_, E> {
    async fn send(&mut self, events: Bytes) -> Result<(), ()> {
        self.0.send_chunk(events).await.map_err(|_| ())
    }

    async fn gone(&mut self) -> &'static str {
        self.0.client_gone().await;
        "client_gone"
    }

    async fn end(&mut self) {
        let _ = self.0.end_stream().await;
    }
}

/// The metric labels of one provider's model on one route (all configured names).
pub struct Labels {
    route: String,
    provider: String,
    model: String,
}

impl Labels {
    pub fn new(route: &str, provider: &str, model: &str) -> Self {
        Self {
            route: route.to_owned(),
            provider: provider.to_owned(),
            model: model.to_owned(),
        }
    }

    /// Counts one request to the provider by how it ended.
    pub fn count(&self, outcome: &str) {
        METRICS
            .llm_requests
            .with_label_values(&[&self.route, &self.provider, &self.model, outcome])
            .inc();
    }

    /// Counts an answer's tokens.
    pub fn tokens(&self, usage: Usage) {
        for (kind, count) in [("input", usage.input), ("output", usage.output)] {
            METRICS
                .llm_tokens
                .with_label_values(&[&self.route, &self.provider, &self.model, kind])
                .inc_by(count);
        }
    }

    fn first_token(&self, after: std::time::Duration) {
        METRICS
            .llm_time_to_first_token
            .with_label_values(&[&self.route, &self.provider, &self.model])
            .observe(after.as_secs_f64());
    }
}

/// A provider's streamed answer, its head already answered.
pub struct Stream {
    /// Given back to the pool once read to its end.
    opened: Option<Opened>,
    translator: StreamTranslator,
    labels: Labels,
    /// When the client's request reached the action (time to first token counts from here).
    started: Instant,
    /// The events sent so far, for the route's answer cache, and where they go once complete.
    recording: Option<(Filler, Vec<u8>)>,
}

impl Stream {
    pub fn new(
        opened: Opened,
        translator: StreamTranslator,
        labels: Labels,
        started: Instant,
    ) -> Self {
        Self {
            opened: Some(opened),
            translator,
            labels,
            started,
            recording: None,
        }
    }

    /// Keeps a copy of what the client gets, for `filler`, when the answer completes.
    pub fn record_into(&mut self, filler: Filler) {
        self.recording = Some((filler, Vec::new()));
    }

    /// The format the client asked in.
    pub fn client_format(&self) -> super::translate::Format {
        self.translator.client_format()
    }

    /// Relays the stream to `sink` until it ends; how it ended (the access log's outcome) and
    /// the usage the provider gave.
    pub async fn run(mut self, sink: &mut impl Sink) -> (&'static str, Option<Usage>) {
        let outcome = self.relay(sink).await;
        (outcome, self.translator.usage())
    }

    async fn relay(&mut self, sink: &mut impl Sink) -> &'static str {
        let mut first_token = false;
        let Some(opened) = self.opened.as_mut() else {
            return "error";
        };
        loop {
            let next = tokio::select! {
                next = opened.next() => next,
                outcome = sink.gone() => {
                    self.labels.count(outcome);
                    return outcome;
                }
            };
            let piece = match next {
                Ok(Some(chunk)) => self.translator.feed(&chunk),
                Ok(None) => break,
                Err(error) => {
                    return self.failed(sink, &error.to_string()).await;
                }
            };
            let out = match piece {
                Ok(out) => out,
                Err(error) => return self.failed(sink, &error.to_string()).await,
            };
            if !first_token && self.translator.started() {
                first_token = true;
                self.labels.first_token(self.started.elapsed());
            }
            record(&mut self.recording, &out);
            if !out.is_empty() && sink.send(out).await.is_err() {
                self.labels.count("client_gone");
                return "client_gone";
            }
        }
        if !self.translator.complete() {
            return self
                .failed(
                    sink,
                    "the provider ended its stream before the answer was complete",
                )
                .await;
        }
        let last = self.translator.finish();
        let usage = self.translator.usage();
        if let Some(opened) = self.opened.take() {
            opened.finish().await;
        }
        record(&mut self.recording, &last);
        if !last.is_empty() && sink.send(last).await.is_err() {
            self.labels.count("client_gone");
            return "client_gone";
        }
        sink.end().await;
        if let Some((filler, events)) = self.recording.take() {
            let cached = Cached {
                streamed: true,
                body: events.into(),
            };
            filler.fill(cached).await;
        }
        self.labels.count("ok");
        if let Some(usage) = usage {
            self.labels.tokens(usage);
        }
        "data"
    }

    /// Ends the client's stream with an error event: the provider failed mid-way.
    async fn failed(&mut self, sink: &mut impl Sink, message: &str) -> &'static str {
        self.labels.count("stream_error");
        if let Some(usage) = self.translator.usage() {
            self.labels.tokens(usage);
        }
        let event = self.translator.error_event(message);
        let _ = sink.send(event).await;
        sink.end().await;
        "stream_error"
    }
}

/// Adds `out` to a stream's recording; one that outgrows the cache's limit stops.
fn record(recording: &mut Option<(Filler, Vec<u8>)>, out: &[u8]) {
    let Some((filler, events)) = recording else {
        return;
    };
    if events.len() + out.len() > filler.max_entry() {
        if let Some((filler, _)) = recording.take() {
            filler.too_large();
        }
        return;
    }
    events.extend_from_slice(out);
}
