//! What a client is told when serving its request failed in Pingora's proxy path: a limit that
//! refused the streamed body, a malformed body, a header that cannot be forwarded, a body that
//! came too slowly, or the upstream's failure (the same table as calls the gateway makes
//! itself: `UpstreamError`). `None`: the client is gone or broke the exchange; nothing to say.

use crate::core::upstream::exchange::UpstreamError;
use crate::limits;
use crate::pipeline::ctx::RequestCtx;
use crate::problem::Problem;
use crate::wire::framing::FramingError;
use pingora_error::{Error, ErrorSource, ErrorType};
use std::sync::Arc;

/// The problem to answer `error` with.
pub fn problem(error: &Error, ctx: &mut RequestCtx) -> Option<Problem> {
    if let Some(rejected) = ctx.rejected.take() {
        return Some(rejected);
    }
    let upstream: Arc<str> = ctx
        .pool
        .as_ref()
        .map_or_else(|| Arc::from("the upstream"), |pool| pool.name.clone());
    match (error.esource(), error.etype()) {
        (_, ErrorType::HTTPStatus(code)) => Some(Problem::new(
            *code,
            "error",
            "Error",
            "the request could not be served",
        )),
        _ if malformed_body(error).is_some() => malformed_body(error).map(|framing| {
            Problem::new(400, "malformed-request", "Bad Request", framing.to_string())
        }),
        // A request header Pingora cannot pass on (a `Connection` header nominating a header it
        // protects): the client's fault, said as such.
        (ErrorSource::Downstream, ErrorType::InvalidHTTPHeader) => Some(Problem::new(
            400,
            "malformed-request",
            "Bad Request",
            format!(
                "a request header cannot be forwarded: {}",
                error
                    .context
                    .as_ref()
                    .map_or("invalid header", |c| c.as_str())
            ),
        )),
        (ErrorSource::Downstream, ErrorType::ReadTimedout) => {
            Some(limits::request_timeout(&format!(
                "the request body did not arrive within {:?}",
                ctx.body_timeout()
            )))
        }
        (ErrorSource::Downstream, _) => None,
        (
            _,
            ErrorType::ConnectTimedout
            | ErrorType::ReadTimedout
            | ErrorType::WriteTimedout
            | ErrorType::ConnectNoRoute,
        )
        | (ErrorSource::Upstream, _) => Some(UpstreamError::of(upstream, error).problem()),
        _ => Some(Problem::new(
            500,
            "internal",
            "Internal Server Error",
            "the gateway failed to serve the request",
        )),
    }
}

/// Whether `error` is what a client did (left, stalled, sent a malformed body): routine for a
/// long-poll gateway, logged at a bounded rate and never as an error.
pub fn clients_doing(error: &Error) -> bool {
    matches!(error.esource(), ErrorSource::Downstream) || malformed_body(error).is_some()
}

/// Why the request's chunked body turned out malformed while it streamed, when that ended the
/// request (the fence refuses it as a read error that carries the reason).
fn malformed_body(error: &Error) -> Option<&FramingError> {
    let io = error.root_cause().downcast_ref::<std::io::Error>()?;
    io.get_ref()?.downcast_ref()
}
