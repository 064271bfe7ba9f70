//! A request's part in a trace ([`RequestTrace`]): its server span, the attempt and the hold it
//! has open, and how they end with the request ([`ServerSpan`]).

use super::span::{Attempt, ChildSpan, SpanParent};
use super::{tracer, waiting, Finished, KeyValue, SpanKind};
use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

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
    /// The trace of a request starting now, its server span `server`, a child of the caller's
    /// span `remote_parent` when it sent one.
    pub fn new(server: SpanParent, remote_parent: Option<u64>) -> Self {
        Self {
            server,
            remote_parent,
            started: SystemTime::now(),
            attempt: None,
            hold: Mutex::new(None),
        }
    }

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
