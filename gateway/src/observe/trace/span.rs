//! A request's child spans while they run: where they hang ([`SpanParent`]), a span under way
//! ([`ChildSpan`]), an upstream attempt ([`Attempt`]) and a publish ([`Publishing`]). Each is
//! recorded when it ends, and only when its trace is.

use super::{tracer, w3c, Finished, KeyValue, SpanIds, SpanKind, Tracer, MAX_LINKS};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

/// Where a child span hangs: its trace, its parent span, whether the trace is recorded, and the
/// `tracestate` to pass on.
#[derive(Clone, Debug)]
pub struct SpanParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
    pub state: Option<Arc<str>>,
}

impl SpanParent {
    /// A child span starting now.
    pub fn child(&self) -> ChildSpan {
        ChildSpan {
            trace_id: self.trace_id,
            parent: self.span_id,
            span_id: tracer().map_or(0, Tracer::new_span_id),
            sampled: self.sampled,
            state: self.state.clone(),
            // An unrecorded span's start is never read.
            started: if self.sampled {
                SystemTime::now()
            } else {
                SystemTime::UNIX_EPOCH
            },
        }
    }

    /// A child span starting now when the trace is recorded; `None` (nothing to do) when not,
    /// for spans whose id goes nowhere else.
    pub fn recorded_child(&self) -> Option<ChildSpan> {
        self.sampled.then(|| self.child())
    }

    /// The ids of the trace and the span, as logs write them (`trace_id`, `span_id`).
    pub fn ids(&self) -> (String, String) {
        (
            format!("{:032x}", self.trace_id),
            format!("{:016x}", self.span_id),
        )
    }

    /// A publish on `channel` starting now, a child of this span, linked to the recorded polls
    /// waiting on the channel at this moment (`broadcast`: each of them receives it). `None`
    /// when the trace is not recorded.
    pub fn start_publish(&self, channel: &str, broadcast: bool) -> Option<Publishing> {
        let tracer = tracer().filter(|_| self.sampled)?;
        let (links, dropped_links) = if broadcast {
            tracer.waiting.on(channel, MAX_LINKS)
        } else {
            (Vec::new(), 0)
        };
        Some(Publishing {
            span: self.child(),
            channel: channel.to_owned(),
            links,
            dropped_links,
        })
    }
}

/// A publish under way: its span and the holds it links to.
pub struct Publishing {
    span: ChildSpan,
    channel: String,
    links: Vec<SpanIds>,
    dropped_links: u32,
}

impl Publishing {
    /// The publish ended: stored, or refused with `error`'s status.
    pub fn end(self, error: Option<u16>) {
        let Publishing {
            span,
            channel,
            links,
            dropped_links,
        } = self;
        let name = format!("send {channel}");
        let mut attributes = vec![
            KeyValue::new("messaging.system", "holdfast"),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new("messaging.destination.name", channel),
        ];
        if let Some(status) = error {
            attributes.push(KeyValue::new("error.type", status.to_string()));
        }
        span.finish(
            SpanKind::Producer,
            name.into(),
            attributes,
            links,
            dropped_links,
            error.map(|status| format!("refused with {status}").into()),
        );
    }
}

/// A span under way: its ids and start. Ended with [`ChildSpan::end`], or dropped unrecorded.
#[derive(Debug)]
pub struct ChildSpan {
    pub(super) trace_id: u128,
    parent: u64,
    pub(super) span_id: u64,
    sampled: bool,
    state: Option<Arc<str>>,
    started: SystemTime,
}

impl ChildSpan {
    /// The trace context to send with a request this span makes: `traceparent` naming this
    /// span, and the caller's `tracestate`. Replaces any the head had.
    pub fn propagate(&self, head: &mut pingora_http::RequestHeader) {
        let traceparent = w3c::format_traceparent(self.trace_id, self.span_id, self.sampled);
        // Both values were checked (ours is hex, the state passed W3C's grammar): these cannot
        // fail, and a failure would only leave the header out.
        let _ = head.insert_header("traceparent", traceparent);
        match self.state.as_deref() {
            Some(state) => {
                let _ = head.insert_header("tracestate", state);
            }
            None => {
                head.remove_header("tracestate");
            }
        }
    }

    /// Ends the span now and records it (when its trace is recorded). `attributes` is called
    /// only then.
    pub fn end(
        self,
        kind: SpanKind,
        name: Cow<'static, str>,
        attributes: impl FnOnce() -> Vec<KeyValue>,
        error: Option<Cow<'static, str>>,
    ) {
        if self.sampled {
            self.finish(kind, name, attributes(), Vec::new(), 0, error);
        }
    }

    fn finish(
        self,
        kind: SpanKind,
        name: Cow<'static, str>,
        attributes: Vec<KeyValue>,
        links: Vec<SpanIds>,
        dropped_links: u32,
        error: Option<Cow<'static, str>>,
    ) {
        let Some(tracer) = tracer() else { return };
        tracer.record(Finished {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent: self.parent,
            parent_remote: false,
            kind,
            name,
            start: self.started,
            end: SystemTime::now(),
            attributes,
            links,
            dropped_links,
            error,
        });
    }
}

/// One attempt of a proxied request at an upstream target: a client span.
#[derive(Debug)]
pub struct Attempt {
    pub span: ChildSpan,
    pub target: SocketAddr,
    pub upstream: Arc<str>,
    /// Attempts before this one (`http.request.resend_count`).
    pub resend: usize,
    pub status: Option<u16>,
}

impl Attempt {
    /// Ends the attempt: by its status when the upstream answered, else by `failure`.
    pub fn end(self, method: &str, failure: Option<&str>) {
        if !self.span.sampled {
            return;
        }
        let Attempt {
            span,
            target,
            upstream,
            resend,
            status,
        } = self;
        let error = match (status, failure) {
            (Some(status), _) if status >= 400 => Some(Cow::Owned(status.to_string())),
            (Some(_), _) => None,
            (None, failure) => Some(Cow::Owned(failure.unwrap_or("no answer").to_owned())),
        };
        let name = Cow::Owned(method.to_owned());
        span.end(
            SpanKind::Client,
            name,
            || {
                let mut attributes = vec![
                    KeyValue::new("http.request.method", method.to_owned()),
                    KeyValue::new("server.address", target.ip().to_string()),
                    KeyValue::new("server.port", i64::from(target.port())),
                    KeyValue::new("holdfast.upstream", upstream.to_string()),
                ];
                if let Some(status) = status {
                    attributes.push(KeyValue::new(
                        "http.response.status_code",
                        i64::from(status),
                    ));
                }
                if resend > 0 {
                    attributes.push(KeyValue::new("http.request.resend_count", resend as i64));
                }
                if let Some(error) = &error {
                    attributes.push(KeyValue::new("error.type", error.to_string()));
                }
                attributes
            },
            error.clone(),
        );
    }
}
