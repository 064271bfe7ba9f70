//! Limits on a proxied request body while it streams to the upstream: `max_body` (413) and
//! `limits.body_timeout` on the whole body (408). A route whose mapping reads the body
//! enforces them when it reads it.

use crate::core::routes::CompiledRoute;
use crate::limits::{body_too_large, request_timeout};
use crate::pipeline::ctx::RequestCtx;
use crate::problem::Problem;

/// A route whose request mapping reads the JSON body enforces `max_body` itself (`mapped.rs`).
pub fn mapping_reads_body(route: &CompiledRoute) -> bool {
    route
        .mapping
        .as_ref()
        .is_some_and(|mapping| mapping.request.needs_body())
}

/// Counts the streamed body of a proxied request; the problem to answer once it passes
/// the route's limit or takes longer than `body_timeout`.
pub fn count_body(
    ctx: &mut RequestCtx,
    chunk: usize,
    body_timeout: std::time::Duration,
) -> Option<Problem> {
    let route = ctx.route.as_ref()?;
    if mapping_reads_body(route) {
        return None;
    }
    let limit = route.max_body;
    ctx.body_bytes = ctx.body_bytes.saturating_add(chunk as u64);
    if ctx.body_bytes > limit {
        return Some(body_too_large(limit));
    }
    if ctx.started.elapsed() > body_timeout {
        return Some(request_timeout("the request body did not arrive in time"));
    }
    None
}
