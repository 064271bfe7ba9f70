//! Reading a request body the gateway consumes itself (publish, upstream calls, jobs, mapping):
//! refused at once when `Content-Length` says more than the route's limit, as soon as the
//! streamed bytes pass it, and with 408 when the whole body has not arrived within
//! `limits.body_timeout` of the first read — a trickling client is timed on the whole body, not
//! per read.

use crate::exchange::Exchange;
use crate::limits::{body_too_large, request_timeout};
use crate::problem::Problem;
use bytes::{Bytes, BytesMut};
use std::time::Duration;
use tokio::time::Instant;

/// When a body read from now must be complete.
pub fn deadline(timeout: Duration) -> (Instant, Duration) {
    (Instant::now() + timeout, timeout)
}

/// The next chunk of the body (`None` at its end), or the 408 when the deadline passed.
pub async fn next_chunk(
    exchange: &mut impl Exchange,
    (deadline, timeout): (Instant, Duration),
) -> pingora_error::Result<Result<Option<Bytes>, Problem>> {
    // Pingora's shared timer: it is armed only if the read has to wait, and arming it wakes no
    // thread (a Tokio timer sooner than the runtime's next one writes to its eventfd).
    let left = deadline.saturating_duration_since(Instant::now());
    match pingora::time::timeout(left, exchange.read_body()).await {
        Ok(chunk) => Ok(Ok(chunk?)),
        Err(_) => {
            // The rest of the body will not be read: the connection cannot be reused.
            exchange.close_after();
            Ok(Err(request_timeout(&format!(
                "the request body did not arrive within {timeout:?}"
            ))))
        }
    }
}

/// The declared `Content-Length`, when there is a valid one.
pub fn declared_length(exchange: &impl Exchange) -> Option<u64> {
    exchange
        .head()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// The body, or the 413 or 408 to answer with.
pub async fn read_whole(
    exchange: &mut impl Exchange,
    limit: u64,
    timeout: Duration,
) -> pingora_error::Result<Result<Bytes, Problem>> {
    let declared = declared_length(exchange);
    if declared.is_some_and(|length| length > limit) {
        return Ok(Err(body_too_large(limit)));
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    let deadline = deadline(timeout);
    loop {
        let chunk = match next_chunk(exchange, deadline).await? {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(problem) => return Ok(Err(problem)),
        };
        if (body.len() + chunk.len()) as u64 > limit {
            return Ok(Err(body_too_large(limit)));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Ok(body.freeze()))
}

/// Reads and discards the body (a poll's, before it is held), or the 408 when it is late.
pub async fn drain(
    exchange: &mut impl Exchange,
    timeout: Duration,
) -> pingora_error::Result<Result<(), Problem>> {
    let deadline = deadline(timeout);
    while !exchange.body_done() {
        match next_chunk(exchange, deadline).await? {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(problem) => return Ok(Err(problem)),
        }
    }
    Ok(Ok(()))
}
