//! Writing the gateway's own replies: every one goes through [`reply`], which stamps the
//! request id, counts the request (and a limit's refusal) before the reply is written — so a
//! scrape right after an answer sees it — and remembers the status for the access log.

use crate::exchange::{Exchange, Reply};
use crate::limits;
use crate::observe::metrics::METRICS;
use crate::pipeline::counting;
use crate::pipeline::ctx::RequestCtx;
use crate::problem::Problem;
use pingora_error::Result;
use pingora_proxy::Session;

/// The request id every answer carries, proxied or not.
pub const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Writes `reply`; returns its status.
pub async fn reply(session: &mut Session, ctx: &mut RequestCtx, mut reply: Reply) -> Result<u16> {
    let status = reply.status;
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
    counting::answered(session, ctx, status);
    session.send(reply).await?;
    Ok(status)
}

/// Writes `problem` as problem+json; returns its status.
pub async fn problem(
    session: &mut Session,
    ctx: &mut RequestCtx,
    problem: &Problem,
) -> Result<u16> {
    reply(session, ctx, Reply::problem(problem)).await
}
