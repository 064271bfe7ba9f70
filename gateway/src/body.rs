//! Reading a whole request body for the routes the gateway answers itself (publish, upstream
//! calls, jobs): refused at once when `Content-Length` says more than the route's limit, and as
//! soon as the streamed bytes pass it.

use crate::limits::body_too_large;
use crate::problem::Problem;
use bytes::{Bytes, BytesMut};
use pingora_proxy::Session;

/// The body, or the 413 to answer with.
pub async fn read_whole(
    session: &mut Session,
    limit: u64,
) -> pingora_error::Result<Result<Bytes, Problem>> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Ok(Err(body_too_large(limit)));
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    while let Some(chunk) = session.read_request_body().await? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Ok(Err(body_too_large(limit)));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Ok(body.freeze()))
}
