//! CORS for browser clients of channel routes: the preflight (`OPTIONS` with
//! `Access-Control-Request-Method`) answered for routes that declare `cors:`, so a page may send
//! `Last-Event-ID`, `If-None-Match` or `Authorization` across origins. The headers on actual
//! poll answers are set with the answer (actions/channels/answer.rs).

use crate::core::spec::channel::allowed_origin;
use crate::exchange::Reply;
use pingora_http::RequestHeader;

/// The method a preflight asks about, if this request is a preflight.
pub fn preflight_method(header: &RequestHeader) -> Option<http::Method> {
    if header.method != http::Method::OPTIONS || !header.headers.contains_key(http::header::ORIGIN)
    {
        return None;
    }
    let asked = header
        .headers
        .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)?;
    http::Method::from_bytes(asked.as_bytes()).ok()
}

/// The answer to a preflight: 204 with the allowed origin, method and request headers (or 204
/// without them for an origin the route does not allow, which the browser treats as a refusal).
pub fn preflight_reply(header: &RequestHeader, cors: &conf::Cors, method: &http::Method) -> Reply {
    let origin = header
        .headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut reply = Reply::new(204);
    if let Some(allowed) = allowed_origin(cors, origin) {
        reply = reply
            .header("access-control-allow-origin", allowed)
            .header("access-control-allow-methods", method.as_str())
            .header(
                "access-control-allow-headers",
                "Authorization, Content-Type, Last-Event-ID, If-None-Match",
            )
            .header("access-control-max-age", "600");
        if cors.credentials {
            reply = reply.header("access-control-allow-credentials", "true");
        }
    }
    reply.header("vary", "Origin")
}
