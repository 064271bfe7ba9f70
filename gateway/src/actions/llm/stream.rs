//! A streamed answer on its way: the provider's events read as they come, translated to the
//! client's format and written at once (nothing buffered beyond an incomplete event), the time
//! to the first token and the usage counted. A provider that stops mid-way ends the client's
//! stream with an error event in its format, counted as `stream_error`.

use super::translate::{StreamTranslator, Usage};
use crate::core::spec::llm::cache::{Cached, Filler};
use crate::core::upstream::exchange::Opened;
use crate::exchange::Exchange;
use crate::observe::metrics::METRICS;
use tokio::time::Instant;

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

    /// Relays the stream to the client until it ends; how it ended (the access log's outcome)
    /// and the usage the provider gave.
    pub async fn run(mut self, exchange: &mut impl Exchange) -> (&'static str, Option<Usage>) {
        let outcome = self.relay(exchange).await;
        (outcome, self.translator.usage())
    }

    async fn relay(&mut self, exchange: &mut impl Exchange) -> &'static str {
        let mut first_token = false;
        let Some(opened) = self.opened.as_mut() else {
            return "error";
        };
        loop {
            let next = tokio::select! {
                next = opened.next() => next,
                () = exchange.client_gone() => {
                    self.labels.count("client_gone");
                    return "client_gone";
                }
            };
            let piece = match next {
                Ok(Some(chunk)) => self.translator.feed(&chunk),
                Ok(None) => break,
                Err(error) => {
                    return self.failed(exchange, &error.to_string()).await;
                }
            };
            let out = match piece {
                Ok(out) => out,
                Err(error) => return self.failed(exchange, &error.to_string()).await,
            };
            if !first_token && self.translator.started() {
                first_token = true;
                self.labels.first_token(self.started.elapsed());
            }
            record(&mut self.recording, &out);
            if !out.is_empty() && exchange.send_chunk(out).await.is_err() {
                self.labels.count("client_gone");
                return "client_gone";
            }
        }
        if !self.translator.complete() {
            return self
                .failed(
                    exchange,
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
        if !last.is_empty() && exchange.send_chunk(last).await.is_err() {
            self.labels.count("client_gone");
            return "client_gone";
        }
        let _ = exchange.end_stream().await;
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
    async fn failed(&mut self, exchange: &mut impl Exchange, message: &str) -> &'static str {
        self.labels.count("stream_error");
        if let Some(usage) = self.translator.usage() {
            self.labels.tokens(usage);
        }
        let event = self.translator.error_event(message);
        let _ = exchange.send_chunk(event).await;
        let _ = exchange.end_stream().await;
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
