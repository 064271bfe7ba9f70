//! OpenTelemetry tracing (the `tracing:` section): the W3C trace context a request continues or
//! starts, the decision to record it, and the spans it makes — the server span, its children
//! (auth, mapping, each upstream attempt, the hold, a publish) — handed finished to the export
//! queue. Without the section nothing here runs: [`tracer`] is `None`.
//!
//! Spans are recorded after the fact from plain values (ids, start and end times, attributes),
//! not kept open as SDK spans: a held poll then carries only its ids and start time.

mod export;
mod w3c;
mod waiting;

pub use export::Finished;
pub use opentelemetry::trace::SpanKind;
pub use opentelemetry::KeyValue;

use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

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
    let queue = export::start(batching, resource, move || exporter(&otlp))?;
    let ratio = settings.sampler.ratio.clamp(0.0, 1.0);
    let tracer = Tracer {
        queue,
        // As the SDK's `TraceIdRatioBased`: the trace id's low 63 bits under ratio × 2^63.
        ratio_bound: (ratio * (1u64 << 63) as f64) as u64,
        all: ratio >= 1.0,
        parent_based: settings.sampler.parent_based,
        ids: RandomIdGenerator::default(),
        waiting: waiting::Waiting::default(),
    };
    let _ = TRACER.set(tracer);
    Ok(())
}

/// The OTLP exporter for `otlp`, built on the export thread.
fn exporter(otlp: &conf::Otlp) -> Result<opentelemetry_otlp::SpanExporter, String> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
    let endpoint = otlp.endpoint().trim_end_matches('/');
    let timeout = otlp.timeout.get();
    let built = match otlp.protocol {
        conf::OtlpProtocol::Grpc => {
            let mut headers = http::HeaderMap::new();
            for (name, value) in &otlp.headers {
                // Checked when the config was validated.
                if let (Ok(name), Ok(value)) = (
                    http::HeaderName::from_bytes(name.as_bytes()),
                    http::HeaderValue::from_str(value.as_str()),
                ) {
                    headers.insert(name, value);
                }
            }
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(timeout)
                .with_metadata(
                    opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers),
                )
                .build()
        }
        conf::OtlpProtocol::HttpProtobuf => {
            let endpoint = if endpoint.ends_with("/v1/traces") {
                endpoint.to_owned()
            } else {
                format!("{endpoint}/v1/traces")
            };
            let headers = otlp
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.as_str().to_owned()))
                .collect();
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(endpoint)
                .with_timeout(timeout)
                .with_headers(headers)
                .with_http_client(http_client(timeout)?)
                .build()
        }
    };
    built.map_err(|error| error.to_string())
}

/// The HTTP client for `http/protobuf`: http:// and https:// (rustls with the system's roots).
fn http_client(
    timeout: Duration,
) -> Result<
    opentelemetry_http::hyper::HyperClient<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    >,
    String,
> {
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(certificates) = rustls_native_certs::load_native_certs() {
        roots.add_parsable_certificates(certificates);
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| error.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(opentelemetry_http::hyper::HyperClient::new(
        connector, timeout, None,
    ))
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
        RequestTrace {
            server: SpanParent {
                trace_id,
                span_id: self.new_span_id(),
                sampled,
                state,
            },
            remote_parent: parent.map(|parent| parent.span_id),
            started: SystemTime::now(),
            attempt: None,
            hold: Mutex::new(None),
        }
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
            started: SystemTime::now(),
        }
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
    trace_id: u128,
    parent: u64,
    span_id: u64,
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

/// A request's part in a trace: its server span's ids, and the spans it has open.
#[derive(Debug)]
pub struct RequestTrace {
    pub server: SpanParent,
    /// The caller's span, when it sent a `traceparent`.
    remote_parent: Option<u64>,
    started: SystemTime,
    /// A proxied request's attempt under way.
    pub attempt: Option<Attempt>,
    /// The hold, from the moment the request starts to wait. Behind a lock: the action that
    /// starts it sees the request only by reference.
    hold: Mutex<Option<Hold>>,
}

#[derive(Debug)]
struct Hold {
    span: ChildSpan,
    channel: Option<Arc<str>>,
    /// Registered where a publish on the channel finds it (broadcast channels).
    listed: Option<waiting::Listed>,
}

/// What the server span records of the finished request.
pub struct ServerSpan<'a> {
    pub method: &'a str,
    pub route: Option<&'a str>,
    pub status: u16,
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub client: Option<std::net::IpAddr>,
    pub scheme: &'static str,
    pub version: &'static str,
    pub outcome: Option<&'static str>,
}

impl RequestTrace {
    /// The request starts to wait on `channel` (a long-poll, a stream, a socket); `broadcast`
    /// channels list the wait, so a publish there links to it.
    pub fn start_hold(&self, channel: Option<&Arc<str>>, broadcast: bool) {
        if !self.server.sampled {
            return;
        }
        let span = self.server.child();
        let listed = match (channel, broadcast, tracer()) {
            (Some(channel), true, Some(tracer)) => Some(tracer.waiting.list(
                channel.clone(),
                span.trace_id,
                span.span_id,
            )),
            _ => None,
        };
        let mut hold = self.hold.lock().unwrap_or_else(|e| e.into_inner());
        *hold = Some(Hold {
            span,
            channel: channel.cloned(),
            listed,
        });
    }

    /// Ends the request's spans: the hold (if it waited) and the server span.
    pub fn end(mut self, request: &ServerSpan<'_>) {
        if let Some(attempt) = self.attempt.take() {
            attempt.end(request.method, Some("ended before an answer"));
        }
        let hold = self
            .hold
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(Hold {
            span,
            channel,
            listed,
        }) = hold
        {
            drop(listed);
            let outcome = request.outcome.unwrap_or("data");
            let route = request.route.unwrap_or("none").to_owned();
            let error = (outcome == "error").then_some(Cow::Borrowed("error"));
            span.end(
                SpanKind::Internal,
                Cow::Borrowed("hold"),
                || {
                    let mut attributes = vec![
                        KeyValue::new("holdfast.hold.outcome", outcome),
                        KeyValue::new("holdfast.channel.route", route),
                    ];
                    if let Some(channel) = channel {
                        attributes.push(KeyValue::new(
                            "messaging.destination.name",
                            channel.to_string(),
                        ));
                    }
                    attributes
                },
                error,
            );
        }
        let Some(tracer) = tracer().filter(|_| self.server.sampled) else {
            return;
        };
        let name = match request.route {
            Some(route) => format!("{} {route}", request.method),
            None => request.method.to_owned(),
        };
        let mut attributes = vec![
            KeyValue::new("http.request.method", request.method.to_owned()),
            KeyValue::new("url.path", request.path.to_owned()),
            KeyValue::new("url.scheme", request.scheme),
            KeyValue::new("network.protocol.version", request.version),
        ];
        if let Some(route) = request.route {
            attributes.push(KeyValue::new("http.route", route.to_owned()));
        }
        if request.status > 0 {
            attributes.push(KeyValue::new(
                "http.response.status_code",
                i64::from(request.status),
            ));
        }
        if let Some(host) = request.host {
            let (address, port) = split_host(host);
            attributes.push(KeyValue::new("server.address", address.to_owned()));
            if let Some(port) = port {
                attributes.push(KeyValue::new("server.port", i64::from(port)));
            }
        }
        if let Some(client) = request.client {
            attributes.push(KeyValue::new("client.address", client.to_string()));
        }
        if let Some(outcome) = request.outcome {
            attributes.push(KeyValue::new("holdfast.outcome", outcome));
        }
        // A server span fails on 5xx only (the HTTP conventions): a 4xx is the client's.
        let error: Option<Cow<'static, str>> =
            (request.status >= 500).then(|| Cow::Owned(request.status.to_string()));
        if let Some(error) = &error {
            attributes.push(KeyValue::new("error.type", error.to_string()));
        }
        tracer.record(Finished {
            trace_id: self.server.trace_id,
            span_id: self.server.span_id,
            parent: self.remote_parent.unwrap_or(0),
            parent_remote: self.remote_parent.is_some(),
            kind: SpanKind::Server,
            name: name.into(),
            start: self.started,
            end: SystemTime::now(),
            attributes,
            links: Vec::new(),
            dropped_links: 0,
            error,
        });
    }
}

/// `host[:port]` (or `[v6]:port`) apart.
fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((address, port)) => (address, port.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((address, port)) if !address.contains(':') => (address, port.parse().ok()),
        _ => (host, None),
    }
}
