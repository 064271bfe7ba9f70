//! The Prometheus metrics Holdfast exports (the README's Metrics section): names in base units, labels limited
//! to configured route and upstream names, methods and status codes — never raw paths, channel
//! names, tokens or client addresses.

use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::LazyLock;

/// Every metric, registered once in Holdfast's own registry.
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_requests: IntCounterVec,
    pub upstream_duration: HistogramVec,
    pub config_reloads: IntCounterVec,
    pub build_info: IntGaugeVec,
    pub backplane_up: IntGauge,
    pub backplane_unavailable: IntCounterVec,
    pub longpoll_held: IntGaugeVec,
    pub subscribers: IntGaugeVec,
    pub messages_delivered: IntCounterVec,
    pub stream_resets: IntCounterVec,
    pub slow_subscribers: IntCounterVec,
    pub longpoll_completions: IntCounterVec,
    pub publish_to_delivery: HistogramVec,
    pub messages_published: IntCounterVec,
    pub upstream_healthy: IntGaugeVec,
    pub channels: IntGauge,
    pub mapping_failures: IntCounterVec,
    pub auth_failures: IntCounterVec,
    pub jwks_refresh: IntCounterVec,
    pub jwks_last_success: prometheus::GaugeVec,
    pub fanin_responses: IntCounterVec,
    pub coalesced: IntCounterVec,
    pub jobs: IntGaugeVec,
    pub ratelimit_rejections: IntCounterVec,
    pub limit_rejections: IntCounterVec,
    pub ratelimit_backend: IntGaugeVec,
    pub ratelimit_fallbacks: prometheus::IntCounter,
    pub connections: IntCounterVec,
    pub tls_handshake_failures: IntCounterVec,
    pub trace_spans_dropped: IntCounterVec,
    pub llm_requests: IntCounterVec,
    pub llm_tokens: IntCounterVec,
    pub llm_time_to_first_token: HistogramVec,
    pub llm_fallbacks: IntCounterVec,
    pub llm_cache: IntCounterVec,
    pub stream_resumes: IntCounterVec,
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric =
        IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric =
        IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    metric
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let metric = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    metric
}

/// 0.5 ms to ~135 s: plain proxying at the low end, the longest long-poll holds at the top.
fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.0005, 2.5, 15).unwrap_or_default()
}

impl Metrics {
    // The names and labels below are constants: registering them can only fail on a programming
    // error, which the unit test below catches.
    #[allow(clippy::panic)]
    fn new() -> Self {
        let r = Registry::new();
        let metrics = Self {
            requests: counter(&r, "holdfast_http_requests_total", "Requests answered, by route, method and status code.", &["route", "method", "code"]),
            request_duration: histogram(&r, "holdfast_http_request_duration_seconds", "Time from request to the end of the answer, holds included.", &["route"], latency_buckets()),
            upstream_requests: counter(&r, "holdfast_upstream_requests_total", "Requests sent to upstreams, by upstream and status code (0: no answer).", &["upstream", "code"]),
            upstream_duration: histogram(&r, "holdfast_upstream_duration_seconds", "Time from sending to an upstream to its response header.", &["upstream"], latency_buckets()),
            config_reloads: counter(&r, "holdfast_config_reloads_total", "Configuration reloads by result (ok, error).", &["result"]),
            build_info: gauge(&r, "holdfast_build_info", "Always 1; the version label says which build runs.", &["version"]),
            backplane_up: {
                let g = IntGauge::new("holdfast_backplane_up", "1 when the long-poll backplane is reachable.").unwrap_or_else(|e| panic!("{e}"));
                r.register(Box::new(g.clone())).unwrap_or_else(|e| panic!("{e}"));
                g
            },
            backplane_unavailable: counter(&r, "holdfast_backplane_unavailable_total", "Publishes and polls answered 503 because the backplane could not take them, by operation (publish, poll) and reason (down: unreachable or failing over; unreplicated: no replica acknowledged in time).", &["operation", "reason"]),
            longpoll_held: gauge(&r, "holdfast_longpoll_held", "Long-polls held right now, by route.", &["route"]),
            subscribers: gauge(&r, "holdfast_subscribers", "Subscribers connected right now, by route and transport (sse, websocket); held polls are in holdfast_longpoll_held.", &["route", "transport"]),
            messages_delivered: counter(&r, "holdfast_messages_delivered_total", "Messages written to stream and socket subscribers, by route and transport (sse, websocket); held polls' answers are in holdfast_longpoll_completions_total.", &["route", "transport"]),
            stream_resets: counter(&r, "holdfast_stream_resets_total", "Streams whose cursor was older than the channel's buffer, told to start again from its oldest message, by route.", &["route"]),
            slow_subscribers: counter(&r, "holdfast_slow_subscribers_total", "Stream and socket subscribers closed for falling more than the route's max_lag behind (a client that stopped reading), by route and transport.", &["route", "transport"]),
            longpoll_completions: counter(&r, "holdfast_longpoll_completions_total", "Long-polls ended, by route and outcome (data, timeout, client_gone, shutdown, gone, error).", &["route", "outcome"]),
            publish_to_delivery: histogram(&r, "holdfast_publish_to_delivery_seconds", "Time from a message's publish to its delivery to a held poll.", &["route"], exponential_buckets(0.0001, 2.0, 18).unwrap_or_default()),
            messages_published: counter(&r, "holdfast_messages_published_total", "Messages published, by route.", &["route"]),
            channels: {
                let g = IntGauge::new("holdfast_channels", "Channels this instance tracks (with buffered messages or held polls).").unwrap_or_else(|e| panic!("{e}"));
                r.register(Box::new(g.clone())).unwrap_or_else(|e| panic!("{e}"));
                g
            },
            auth_failures: counter(&r, "holdfast_auth_failures_total", "Requests refused by a route's auth, by route and reason.", &["route", "reason"]),
            jwks_refresh: counter(&r, "holdfast_jwks_refresh_total", "JWKS fetches by provider and result (ok, error).", &["provider", "result"]),
            jwks_last_success: {
                let g = prometheus::GaugeVec::new(Opts::new("holdfast_jwks_last_success_timestamp_seconds", "Unix time of each provider's last good JWKS fetch."), &["provider"]).unwrap_or_else(|e| panic!("{e}"));
                r.register(Box::new(g.clone())).unwrap_or_else(|e| panic!("{e}"));
                g
            },
            fanin_responses: counter(&r, "holdfast_fanin_responses_total", "Fan-in answers, by route and result (complete, partial, failed, timeout, client_gone, shutdown).", &["route", "result"]),
            coalesced: counter(&r, "holdfast_coalesced_requests_total", "Requests answered by another request's upstream call or a cached answer, by route.", &["route"]),
            jobs: gauge(&r, "holdfast_jobs", "Jobs this instance keeps, by route and state (running, done, failed).", &["route", "state"]),
            upstream_healthy: gauge(&r, "holdfast_upstream_healthy_targets", "Targets of an upstream that pass their health check.", &["upstream"]),
            mapping_failures: counter(&r, "holdfast_mapping_failures_total", "Requests refused and upstream responses not delivered because the route's mapping rules failed, by route.", &["route"]),
            ratelimit_rejections: counter(&r, "holdfast_ratelimit_rejections_total", "Requests refused with 429 by a rate limit, by route and limit (the limit's policy name).", &["route", "limit"]),
            limit_rejections: counter(&r, "holdfast_limit_rejections_total", "Requests refused by a size, time or concurrency limit, by route and kind (header, body, url, slow_client, concurrency).", &["route", "kind"]),
            ratelimit_backend: gauge(&r, "holdfast_ratelimit_backend", "1 for the store rate limits use right now: redis (shared) or local (this instance only).", &["backend"]),
            ratelimit_fallbacks: {
                let c = prometheus::IntCounter::new("holdfast_ratelimit_fallbacks_total", "Rate-limit checks done locally because Redis was unreachable.").unwrap_or_else(|e| panic!("{e}"));
                r.register(Box::new(c.clone())).unwrap_or_else(|e| panic!("{e}"));
                c
            },
            connections: counter(&r, "holdfast_connections_total", "Client connections accepted, by protocol (http1 over TLS or in clear, h2 by ALPN, h2c by prior knowledge); HTTP/1 connections count at their first request.", &["protocol"]),
            tls_handshake_failures: counter(&r, "holdfast_tls_handshake_failures_total", "TLS handshakes that failed, by reason (protocol_version, incompatible, bad_message, certificate_rejected, client_alert, misbehaved, closed, timeout, other).", &["reason"]),
            trace_spans_dropped: counter(&r, "holdfast_trace_spans_dropped_total", "Spans not exported, by reason (queue_full: the export queue was full; export_failed: the collector did not take them; stopped).", &["reason"]),
            llm_requests: counter(&r, "holdfast_llm_requests_total", "Requests to model providers by llm routes, by route, provider, model and outcome (ok, error, stream_error, refused, rate_limited, unavailable, timeout).", &["route", "provider", "model", "outcome"]),
            llm_tokens: counter(&r, "holdfast_llm_tokens_total", "Tokens of answers by llm routes, from the provider's usage, by route, provider, model and type (input, output).", &["route", "provider", "model", "type"]),
            llm_time_to_first_token: histogram(&r, "holdfast_llm_time_to_first_token_seconds", "Time from a request to the first token of its streamed answer reaching the client.", &["route", "provider", "model"], latency_buckets()),
            llm_fallbacks: counter(&r, "holdfast_llm_fallbacks_total", "Requests moved from one provider to the next of their model's list, by route, the provider left and the reason (429, 5xx, connect, first_byte_timeout, keys_resting).", &["route", "from", "reason"]),
            llm_cache: counter(&r, "holdfast_llm_cache_total", "Requests to llm routes with an answer cache, by route and result (hit; coalesced: served by an identical request's call; miss; bypass: not cacheable, or the client said no-store/no-cache; too_large: answered but not kept).", &["route", "result"]),
            stream_resumes: counter(&r, "holdfast_stream_resumes_total", "Requests to resume a kept stream (an llm route's GET …/streams/<id>, or a proxied route asked again with its Last-Event-ID), by route and result (events: followed as a stream; poll: answered a long-poll; not_found: not kept here, or not the asker's).", &["route", "result"]),
            registry: r,
        };
        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        metrics.backplane_up.set(1);
        // Present from the start, so alerts on `increase(...)` see the first failure.
        for result in ["ok", "error"] {
            metrics.config_reloads.with_label_values(&[result]);
        }
        for operation in ["publish", "poll"] {
            for reason in ["down", "unreplicated"] {
                metrics
                    .backplane_unavailable
                    .with_label_values(&[operation, reason]);
            }
        }
        metrics
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let encoder = TextEncoder::new();
        if let Err(error) = encoder.encode(&self.registry.gather(), &mut out) {
            tracing::error!(%error, "cannot encode metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_renders() {
        METRICS
            .requests
            .with_label_values(&["r", "GET", "200"])
            .inc();
        let text = String::from_utf8(METRICS.render()).expect("utf8");
        assert!(text
            .contains("holdfast_http_requests_total{code=\"200\",method=\"GET\",route=\"r\"} 1"));
        assert!(text.contains("holdfast_build_info{version="));
    }
}
