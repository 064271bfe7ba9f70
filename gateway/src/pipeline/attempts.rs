//! The client span of each attempt a proxied request makes at its upstream, kept in the
//! request's trace across Pingora's hooks: begun when a target is chosen, named upstream in
//! `traceparent`, given the upstream's status, ended by a failure or with the request.

use crate::observe::trace::Attempt;
use crate::pipeline::ctx::RequestCtx;

/// A target was chosen: the previous attempt (if any) failed to connect, a new one begins.
pub fn begin(ctx: &mut RequestCtx, method: &str) {
    let (Some(trace), Some(&target), Some(pool)) =
        (ctx.trace.as_mut(), ctx.tried.last(), ctx.pool.as_ref())
    else {
        return;
    };
    if let Some(previous) = trace.attempt.take() {
        previous.end(method, Some("connect"));
    }
    trace.attempt = Some(Attempt {
        span: trace.server.child(),
        target,
        upstream: pool.name.clone(),
        resend: ctx.tried.len() - 1,
        status: None,
    });
}

/// The attempt's trace context, on the head sent upstream.
pub fn propagate(ctx: &RequestCtx, upstream: &mut pingora_http::RequestHeader) {
    if let Some(attempt) = ctx.trace.as_ref().and_then(|trace| trace.attempt.as_ref()) {
        attempt.span.propagate(upstream);
    }
}

/// The upstream answered with `status` (the span ends with the request).
pub fn answered(ctx: &mut RequestCtx, status: u16) {
    if let Some(attempt) = ctx.trace.as_mut().and_then(|trace| trace.attempt.as_mut()) {
        attempt.status = Some(status);
    }
}

/// The attempt failed: `error` says how.
pub fn failed(ctx: &mut RequestCtx, method: &str, error: &pingora_error::Error) {
    if let Some(attempt) = ctx.trace.as_mut().and_then(|trace| trace.attempt.take()) {
        attempt.end(
            method,
            Some(crate::core::upstream::exchange::failure_word(error)),
        );
    }
}
