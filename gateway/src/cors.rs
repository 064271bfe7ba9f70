//! CORS for browser clients of channel routes: the preflight (`OPTIONS` with
//! `Access-Control-Request-Method`) answered for routes that declare `cors:`, so a page may send
//! `Last-Event-ID`, `If-None-Match` or `Authorization` across origins. The headers on actual
//! poll answers are written with the answer (channels/answer.rs).

use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

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

/// Whether `origin` may call a route with these settings, and the value to allow it with.
pub fn allowed_origin<'a>(cors: &conf::Cors, origin: &'a str) -> Option<&'a str> {
    let any = cors.origins.iter().any(|allowed| allowed == "*");
    if any && !cors.credentials {
        return Some("*");
    }
    (any || cors.origins.iter().any(|allowed| allowed == origin)).then_some(origin)
}

/// Answers a preflight: 204 with the allowed origin, method and request headers (or 204 without
/// them for an origin the route does not allow, which the browser treats as a refusal).
pub async fn answer_preflight(
    session: &mut Session,
    ctx: &mut crate::ctx::RequestCtx,
    cors: &conf::Cors,
    method: &http::Method,
) -> pingora_error::Result<u16> {
    let origin = session
        .req_header()
        .headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_default();
    let mut header = ResponseHeader::build(204, Some(6))?;
    if let Some(allowed) = allowed_origin(cors, &origin) {
        header.insert_header("access-control-allow-origin", allowed)?;
        header.insert_header("access-control-allow-methods", method.as_str())?;
        header.insert_header(
            "access-control-allow-headers",
            "Authorization, Content-Type, Last-Event-ID, If-None-Match",
        )?;
        header.insert_header("access-control-max-age", "600")?;
        if cors.credentials {
            header.insert_header("access-control-allow-credentials", "true")?;
        }
    }
    header.insert_header("vary", "Origin")?;
    header.set_content_length(0)?;
    crate::counting::answered(session, ctx, 204);
    session
        .write_response_header(Box::new(header), true)
        .await?;
    Ok(204)
}
