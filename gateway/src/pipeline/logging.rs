//! The end of every request, proxied or answered here: the access log line, the request counted
//! if no answer counted it (the client left, an error ended it), the duration, and an upstream
//! request that got no answer.

use crate::core::runtime::Runtime;
use crate::observe::access_log::{Entry, LlmEntry, UpstreamEntry};
use crate::observe::labels;
use crate::observe::metrics::METRICS;
use crate::observe::trace::ServerSpan;
use crate::pipeline::counting;
use crate::pipeline::ctx::RequestCtx;
use crate::pipeline::inbound::Inbound;

/// Records the finished request; `written` is the status of an answer that was not the
/// gateway's own (a proxied one).
pub fn finished(
    runtime: &Runtime,
    inbound: &impl Inbound,
    ctx: &mut RequestCtx,
    written: Option<u16>,
) {
    let status = ctx.answered.or(written).unwrap_or(0);
    if let Some(log) = &runtime.access_log {
        log.record(&access_entry(inbound, ctx, status));
    }
    // Answers were counted before they were written (`counting`, and limit refusals in
    // `respond`); what is left got no answer.
    counting::answered(&inbound.head().method, ctx, status);
    METRICS
        .request_duration
        .with_label_values(&[ctx.route_name()])
        .observe(ctx.started.elapsed().as_secs_f64());
    if let Some(trace) = ctx.trace.take() {
        trace.end(&server_span(inbound, ctx, status));
    }
    if let Some(pool) = &ctx.pool {
        if !ctx.tried.is_empty() && !ctx.upstream_counted {
            let code = labels::code(ctx.upstream_status.unwrap_or(0));
            METRICS
                .upstream_requests
                .with_label_values(&[&*pool.name, code])
                .inc();
        }
    }
}

/// What the server span records of a finished request.
fn server_span<'a>(inbound: &'a impl Inbound, ctx: &'a RequestCtx, status: u16) -> ServerSpan<'a> {
    let head = inbound.head();
    ServerSpan {
        method: head.method.as_str(),
        route: ctx.route.as_ref().map(|route| &*route.name),
        status,
        host: crate::pipeline::routing::raw_host(head),
        path: head.uri.path(),
        client: inbound.client_ip(),
        scheme: if inbound.is_tls() { "https" } else { "http" },
        version: match head.version {
            http::Version::HTTP_10 => "1.0",
            http::Version::HTTP_2 => "2",
            _ => "1.1",
        },
        outcome: ctx.outcome,
    }
}

/// What the access log records of a finished request.
fn access_entry<'a>(inbound: &'a impl Inbound, ctx: &'a RequestCtx, status: u16) -> Entry<'a> {
    Entry {
        request: inbound.head(),
        status,
        bytes: inbound.body_bytes_sent(),
        client: inbound.client_ip(),
        request_id: ctx.request_id.as_ref().and_then(|id| id.to_str().ok()),
        route: ctx.route.as_ref().map(|route| &*route.name),
        started: ctx.started,
        upstream: ctx.tried.last().map(|&target| UpstreamEntry {
            name: ctx.pool.as_ref().map(|pool| &*pool.name),
            target,
            status: ctx.upstream_status,
            elapsed: ctx.upstream_elapsed,
        }),
        outcome: ctx.outcome,
        identity: ctx
            .identity
            .as_ref()
            .map(|identity| (identity.provider(), identity.subject())),
        llm: ctx.llm.as_ref().map(|llm| LlmEntry {
            provider: &llm.provider,
            model: &llm.model,
            tokens: llm.usage.map(|usage| (usage.input, usage.output)),
            fallbacks: llm.fallbacks,
        }),
        trace: ctx
            .trace
            .as_ref()
            .map(|trace| (trace.server.trace_id, trace.server.span_id)),
        credential_params: ctx
            .route
            .as_ref()
            .and_then(|route| route.auth.as_ref())
            .map_or(&[], |auth| auth.credential_params()),
    }
}

/// An error log's summary of a request, with its trace's ids when tracing is on.
pub fn summary(mut text: String, ctx: &RequestCtx) -> String {
    let ids = trace_ids(ctx);
    if !ids.is_empty() {
        text.push(' ');
        text.push_str(&ids);
    }
    text
}

/// `trace_id=… span_id=…` of the request's trace (empty when tracing is off), for the log
/// lines about the request.
pub fn trace_ids(ctx: &RequestCtx) -> String {
    ctx.trace.as_ref().map_or_else(String::new, |trace| {
        let (trace_id, span_id) = trace.server.ids();
        format!("trace_id={trace_id} span_id={span_id}")
    })
}
