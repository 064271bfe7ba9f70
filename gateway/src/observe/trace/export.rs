//! Finished spans on their way to the collector: a bounded queue the request path hands spans
//! to without waiting, and one thread that batches them and exports each batch with the OTLP
//! exporter of `opentelemetry-otlp`. A full queue or a failed export drops spans and counts
//! them (`holdfast_trace_spans_dropped_total`); neither ever reaches a request.

use crate::observe::metrics::METRICS;
use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use opentelemetry_sdk::Resource;
use std::borrow::Cow;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// One finished span, as the request path records it: plain values, turned into the SDK's
/// `SpanData` on the export thread.
pub struct Finished {
    pub trace_id: u128,
    pub span_id: u64,
    /// 0 for a root span.
    pub parent: u64,
    /// The parent is the caller's span (from its `traceparent`).
    pub parent_remote: bool,
    pub kind: SpanKind,
    pub name: Cow<'static, str>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    /// Spans this one is linked to.
    pub links: Vec<super::SpanIds>,
    pub dropped_links: u32,
    /// Set when the span failed: its status is then `Error` with this description.
    pub error: Option<Cow<'static, str>>,
}

enum Item {
    Span(Box<Finished>),
    /// Export what is queued, then stop; the sender is told when done.
    Stop(SyncSender<()>),
}

/// The request path's end of the queue.
pub struct Queue {
    sender: SyncSender<Item>,
    /// Told to stop once; later flushes find it gone.
    stopping: Mutex<bool>,
}

impl Queue {
    /// Queues `span`, or drops and counts it when the queue is full.
    pub fn push(&self, span: Finished) {
        match self.sender.try_send(Item::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => dropped("queue_full", 1),
            Err(TrySendError::Disconnected(_)) => dropped("stopped", 1),
        }
    }

    /// A queue whose spans go nowhere (for tests of what records them).
    #[cfg(test)]
    pub fn discarding() -> Self {
        let (sender, _) = sync_channel(1);
        Self {
            sender,
            stopping: Mutex::new(false),
        }
    }

    /// Exports what is queued and stops the export thread, waiting at most `timeout`.
    pub fn flush(&self, timeout: Duration) {
        let mut stopping = self.stopping.lock().unwrap_or_else(|e| e.into_inner());
        if *stopping {
            return;
        }
        *stopping = true;
        let (done, finished) = sync_channel(1);
        let deadline = Instant::now() + timeout;
        // The queue may be full: retry until the export thread makes room.
        let mut item = Item::Stop(done);
        loop {
            match self.sender.try_send(item) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    item = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = finished.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

fn dropped(reason: &str, count: usize) {
    METRICS
        .trace_spans_dropped
        .with_label_values(&[reason])
        .inc_by(count as u64);
}

/// How the export thread batches.
pub struct Batching {
    pub max_queue: usize,
    pub max_batch: usize,
    pub delay: Duration,
    pub timeout: Duration,
}

/// Starts the export thread; `build` makes the exporter on it (inside the thread's own tokio
/// runtime, which the gRPC and HTTP clients need).
pub fn start<E, B>(batching: Batching, resource: Resource, build: B) -> std::io::Result<Queue>
where
    E: SpanExporter + 'static,
    B: FnOnce() -> Result<E, String> + Send + 'static,
{
    let (sender, receiver) = sync_channel(batching.max_queue);
    std::thread::Builder::new()
        .name("holdfast-otlp".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, "cannot start the span exporter; spans are dropped");
                    return;
                }
            };
            let exporter = runtime.block_on(async { build() });
            match exporter {
                Ok(mut exporter) => {
                    exporter.set_resource(&resource);
                    export_batches(&runtime, &mut exporter, &receiver, &batching);
                    let _ = exporter.shutdown_with_timeout(Duration::from_secs(1));
                }
                Err(error) => {
                    tracing::error!(%error, "cannot build the OTLP exporter; spans are dropped")
                }
            }
        })?;
    Ok(Queue {
        sender,
        stopping: Mutex::new(false),
    })
}

/// The export loop: a batch is sent when it is full or its first span has waited `delay`.
fn export_batches(
    runtime: &tokio::runtime::Runtime,
    exporter: &mut impl SpanExporter,
    receiver: &Receiver<Item>,
    batching: &Batching,
) {
    let scope = InstrumentationScope::builder("holdfast")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let mut batch = Vec::with_capacity(batching.max_batch);
    let mut stop = None;
    let mut warned: Option<Instant> = None;
    while stop.is_none() {
        match receiver.recv() {
            Ok(Item::Span(span)) => batch.push(span_data(*span, &scope)),
            Ok(Item::Stop(done)) => stop = Some(done),
            Err(_) => return,
        }
        let deadline = Instant::now() + batching.delay;
        while batch.len() < batching.max_batch && stop.is_none() {
            match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Item::Span(span)) => batch.push(span_data(*span, &scope)),
                Ok(Item::Stop(done)) => stop = Some(done),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if stop.is_some() {
            // What is still queued goes in this last export.
            while let Ok(Item::Span(span)) = receiver.try_recv() {
                batch.push(span_data(*span, &scope));
            }
        }
        if batch.is_empty() {
            continue;
        }
        let count = batch.len();
        let spans = std::mem::replace(&mut batch, Vec::with_capacity(batching.max_batch));
        let exported = runtime.block_on(async {
            tokio::time::timeout(batching.timeout, exporter.export(spans)).await
        });
        let failure = match exported {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some(format!("no answer within {:?}", batching.timeout)),
        };
        if let Some(error) = failure {
            dropped("export_failed", count);
            // An unreachable collector fails every batch: said once a minute, not each time.
            if warned.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                warned = Some(Instant::now());
                tracing::warn!(%error, spans = count, "cannot export spans; they are dropped");
            }
        }
    }
    if let Some(done) = stop {
        let _ = done.send(());
    }
}

/// The SDK's form of a finished span.
fn span_data(span: Finished, scope: &InstrumentationScope) -> SpanData {
    let context = |trace_id: u128, span_id: u64| {
        SpanContext::new(
            TraceId::from(trace_id),
            SpanId::from(span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        )
    };
    let mut links = SpanLinks::default();
    links.links = span
        .links
        .into_iter()
        .map(|(trace_id, span_id)| Link::with_context(context(trace_id, span_id)))
        .collect();
    links.dropped_count = span.dropped_links;
    let status = match span.error {
        Some(description) => Status::error(description),
        None => Status::Unset,
    };
    SpanData {
        span_context: context(span.trace_id, span.span_id),
        parent_span_id: SpanId::from(span.parent),
        parent_span_is_remote: span.parent_remote,
        span_kind: span.kind,
        name: span.name,
        start_time: span.start,
        end_time: span.end,
        attributes: span.attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links,
        status,
        instrumentation_scope: scope.clone(),
    }
}
