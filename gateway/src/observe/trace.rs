//! OpenTelemetry tracing (the `tracing:` section): the W3C trace context a request continues or
//! starts, the decision to record it, and the spans it makes — the server span, its children
//! (auth, mapping, each upstream attempt, the hold, a publish) — handed finished to the export
//! queue. Without the section nothing here runs: [`tracer`] is `None`.
//!
//! Spans are recorded after the fact from plain values (ids, start and end times, attributes),
//! not kept open as SDK spans: a held poll then carries only its ids and start time.

mod export;
mod otlp;
mod request;
mod span;
mod w3c;
mod waiting;

pub use export::Finished;
pub use opentelemetry::trace::SpanKind;
pub use opentelemetry::KeyValue;
pub use request::{RequestTrace, ServerSpan};
pub use span::{Attempt, ChildSpan, SpanParent};

use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

static TRACER: OnceLock<Tracer> = OnceLock::new();

/// The process's tracer, once [`install`]ed.
pub fn tracer() -> Option<&'static Tracer> {
    TRACER.get()
}

/// A span's `(trace id, span id)`.
pub type SpanIds = (u128, u64);

/// The most polls one publish span links to.
pub const MAX_LINKS: usize = 64;

/// Starts the exporter for `settings` and makes the tracer the process's. Fixed for the life of
/// the process, like the listeners.
pub fn install(settings: &conf::Tracing) -> std::io::Result<()> {
    let otlp = settings.otlp.clone();
    let batching = export::Batching {
        max_queue: settings.batch.max_queue,
        max_batch: settings.batch.max_batch,
        delay: settings.batch.delay.get(),
        timeout: otlp.timeout.get(),
    };
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(settings.service_name.clone())
        .with_attributes(
            settings
                .resource
                .iter()
                .map(|(name, value)| KeyValue::new(name.clone(), value.as_str().to_owned())),
        )
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let queue = export::start(batching, resource, move || otlp::exporter(&otlp))?;
    let _ = TRACER.set(Tracer::new(queue, &settings.sampler));
    Ok(())
}

/// Exports what is queued and stops exporting (at shutdown), waiting at most `timeout`.
pub fn flush(timeout: Duration) {
    if let Some(tracer) = tracer() {
        tracer.queue.flush(timeout);
    }
}

/// Decides and records: one per process.
pub struct Tracer {
    queue: export::Queue,
    ratio_bound: u64,
    all: bool,
    parent_based: bool,
    ids: RandomIdGenerator,
    waiting: waiting::Waiting,
}

impl Tracer {
    fn new(queue: export::Queue, sampler: &conf::Sampler) -> Self {
        let ratio = sampler.ratio.clamp(0.0, 1.0);
        Self {
            queue,
            // As the SDK's `TraceIdRatioBased`: the trace id's low 63 bits under ratio × 2^63.
            ratio_bound: (ratio * (1u64 << 63) as f64) as u64,
            all: ratio >= 1.0,
            parent_based: sampler.parent_based,
            ids: RandomIdGenerator::default(),
            waiting: waiting::Waiting::default(),
        }
    }

    /// The trace of a request with these headers: the caller's, continued, when it sent a
    /// valid `traceparent`; a new one otherwise. Recorded as the sampler decides.
    pub fn start(&self, headers: &http::HeaderMap) -> RequestTrace {
        let parent = headers
            .get("traceparent")
            .and_then(|value| w3c::parse_traceparent(value.as_bytes()));
        let state = parent
            .and_then(|_| {
                w3c::checked_tracestate(
                    headers
                        .get_all("tracestate")
                        .iter()
                        .map(http::HeaderValue::as_bytes),
                )
            })
            .map(Arc::from);
        let trace_id = parent.map_or_else(|| self.new_trace_id(), |parent| parent.trace_id);
        let sampled = match parent {
            Some(parent) if self.parent_based => parent.sampled,
            _ => self.by_ratio(trace_id),
        };
        RequestTrace::new(
            SpanParent {
                trace_id,
                span_id: self.new_span_id(),
                sampled,
                state,
            },
            parent.map(|parent| parent.span_id),
        )
    }

    fn by_ratio(&self, trace_id: u128) -> bool {
        self.all || ((trace_id as u64) >> 1) < self.ratio_bound
    }

    fn new_trace_id(&self) -> u128 {
        u128::from_be_bytes(self.ids.new_trace_id().to_bytes())
    }

    fn new_span_id(&self) -> u64 {
        u64::from_be_bytes(self.ids.new_span_id().to_bytes())
    }

    fn record(&self, span: Finished) {
        self.queue.push(span);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracer(ratio: f64, parent_based: bool) -> Tracer {
        let sampler = conf::Sampler {
            ratio,
            parent_based,
        };
        Tracer::new(export::Queue::discarding(), &sampler)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::from_static(name),
                    http::HeaderValue::from_str(value).expect("value"),
                )
            })
            .collect()
    }

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7";

    #[test]
    fn new_traces_are_sampled_at_the_ratio() {
        for (ratio, low, high) in [(0.0, 0, 0), (0.25, 2200, 2800), (1.0, 10_000, 10_000)] {
            let tracer = tracer(ratio, true);
            let sampled = (0..10_000)
                .filter(|_| tracer.start(&http::HeaderMap::new()).server.sampled)
                .count();
            assert!((low..=high).contains(&sampled), "{ratio}: {sampled}");
        }
    }

    #[test]
    fn a_callers_decision_stands_when_parent_based() {
        let sampled = headers(&[("traceparent", &format!("{PARENT}-01"))]);
        let unsampled = headers(&[("traceparent", &format!("{PARENT}-00"))]);
        let trace = tracer(0.0, true).start(&sampled);
        assert!(trace.server.sampled);
        assert_eq!(trace.server.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_ne!(trace.server.span_id, 0x00f067aa0ba902b7);
        assert!(!tracer(1.0, true).start(&unsampled).server.sampled);
        // Not parent-based: the ratio decides, on the caller's trace id.
        assert!(tracer(1.0, false).start(&unsampled).server.sampled);
        assert!(!tracer(0.0, false).start(&sampled).server.sampled);
    }

    #[test]
    fn tracestate_goes_on_only_with_a_valid_traceparent() {
        let with_parent = headers(&[
            ("traceparent", &format!("{PARENT}-01")),
            ("tracestate", "rojo=1"),
        ]);
        let trace = tracer(1.0, true).start(&with_parent);
        assert_eq!(trace.server.state.as_deref(), Some("rojo=1"));
        let alone = headers(&[("tracestate", "rojo=1")]);
        assert_eq!(tracer(1.0, true).start(&alone).server.state, None);
    }
}
