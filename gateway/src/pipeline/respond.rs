//! Writing the gateway's own replies: every one goes through [`reply`], which stamps the
//! request id, counts the request (and a limit's refusal) before the reply is written — so a
//! scrape right after an answer sees it — and remembers the status for the access log.

use crate::exchange::Reply;
use crate::limits;
use crate::observe::metrics::METRICS;
use crate::pipeline::counting;
use crate::pipeline::ctx::RequestCtx;
use crate::pipeline::inbound::Inbound;
use crate::problem::Problem;
use pingora_error::Result;

/// The request id every answer carries, proxied or not.
pub const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Writes `reply`; returns its status.
pub async fn reply(
    inbound: &mut impl Inbound,
    ctx: &mut RequestCtx,
    mut reply: Reply,
) -> Result<u16> {
    let status = reply.status;
    // A head refused for its size is not worth reading another after (as nginx does).
    if reply.problem.is_some() && matches!(status, 414 | 431) {
        reply.close = true;
    }
    if let Some(id) = &ctx.request_id {
        reply.headers.insert(X_REQUEST_ID, id.clone());
    }
    ctx.answered = Some(status);
    if reply.problem.is_some() && !ctx.counted {
        if let Some(kind) = limits::rejection_kind(status) {
            METRICS
                .limit_rejections
                .with_label_values(&[ctx.route_name(), kind])
                .inc();
        }
    }
    counting::answered(&inbound.head().method, ctx, status);
    inbound.send(reply).await?;
    Ok(status)
}

/// Writes `problem` as problem+json; returns its status.
pub async fn problem(
    inbound: &mut impl Inbound,
    ctx: &mut RequestCtx,
    problem: &Problem,
) -> Result<u16> {
    reply(inbound, ctx, Reply::problem(problem)).await
}
