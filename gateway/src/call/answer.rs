//! Writing the answers of locally answered upstream calls: the upstream's answer (its status,
//! its end-to-end headers and its body, with a `Content-Length`), the timeout answer (`204`,
//! `Cache-Control: no-store`, and `Connection: close` on shutdown), and problems.

use super::{Answer, HOP_BY_HOP};
use crate::ctx::RequestCtx;
use crate::problem::Problem;
use bytes::Bytes;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// Writes `header` and `body`, counting the request first (see `counting`).
pub async fn send(
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut header: ResponseHeader,
    body: Bytes,
    close: bool,
) -> Result<u16> {
    let status = header.status.as_u16();
    header.set_content_length(body.len())?;
    if let Some(id) = &ctx.request_id {
        header.insert_header("x-request-id", id.clone())?;
    }
    if close {
        header.insert_header("connection", "close")?;
        session.set_keepalive(None);
    }
    ctx.answered = Some(status);
    crate::counting::answered(session, ctx, status);
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await?;
    Ok(status)
}

/// The upstream's answer as it came, plus `extra` headers.
pub async fn upstream(
    session: &mut Session,
    ctx: &mut RequestCtx,
    answer: &Answer,
    extra: &[(&'static str, String)],
) -> Result<u16> {
    let mut header =
        ResponseHeader::build(answer.status, Some(answer.headers.len() + extra.len()))?;
    for (name, value) in &answer.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            header.append_header(name.clone(), value.clone())?;
        }
    }
    for (name, value) in extra {
        header.insert_header(*name, value.as_str())?;
    }
    send(session, ctx, header, answer.body.clone(), false).await
}

/// `status` with a body of `content_type` and `extra` headers.
pub async fn body(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    content_type: Option<&str>,
    body: Bytes,
    extra: &[(&'static str, String)],
) -> Result<u16> {
    let mut header = ResponseHeader::build(status, Some(3 + extra.len()))?;
    if let Some(content_type) = content_type {
        header.insert_header("content-type", content_type)?;
    }
    header.insert_header("cache-control", "no-store")?;
    for (name, value) in extra {
        header.insert_header(*name, value.as_str())?;
    }
    send(session, ctx, header, body, false).await
}

/// The hold ended without data: `204` (with `Connection: close` when shutting down).
pub async fn timeout(session: &mut Session, ctx: &mut RequestCtx, close: bool) -> Result<u16> {
    timeout_with(session, ctx, close, &[]).await
}

/// [`timeout`] with extra headers.
pub async fn timeout_with(
    session: &mut Session,
    ctx: &mut RequestCtx,
    close: bool,
    extra: &[(&'static str, String)],
) -> Result<u16> {
    let mut header = ResponseHeader::build(204, Some(2 + extra.len()))?;
    header.insert_header("cache-control", "no-store")?;
    for (name, value) in extra {
        header.insert_header(*name, value.as_str())?;
    }
    send(session, ctx, header, Bytes::new(), close).await
}

/// A problem answer.
pub async fn problem(
    session: &mut Session,
    ctx: &mut RequestCtx,
    problem: &Problem,
) -> Result<u16> {
    crate::proxy::answer(session, ctx, problem).await?;
    Ok(problem.status)
}
