//! The request the gateway sends upstream: the client's head with hop-by-hop headers dropped,
//! `X-Forwarded-*` and `X-Request-Id` set, the credential stripped and claims copied (`authn`),
//! the route's mapping applied (`mapped`), headers with `_` dropped (`underscores`). Proxied
//! requests get it in `upstream_request_filter`; calls the gateway makes itself get it from
//! [`call_head`].

use crate::core::upstream::exchange::HOP_BY_HOP;
use crate::pipeline::ctx::RequestCtx;
use crate::pipeline::inbound::Inbound;
use crate::pipeline::{authn, mapped};
use pingora_error::Result;
use pingora_http::RequestHeader;

/// The head a call the gateway makes itself sends upstream (the body is the action's:
/// `actions::call::outbound`): the client's head without hop-by-hop headers, written as
/// HTTP/1.1, prepared as every upstream request is.
pub fn call_head(inbound: &impl Inbound, ctx: &mut RequestCtx) -> Result<RequestHeader> {
    let mut header = inbound.head().clone();
    for name in HOP_BY_HOP {
        header.remove_header(*name);
    }
    as_http1(&mut header)?;
    prepare(inbound, &mut header, ctx)?;
    Ok(header)
}

/// A request that arrived over HTTP/2 is written upstream as HTTP/1.1 (Pingora's HTTP/2
/// client sets its own version when the pool speaks HTTP/2), its `:authority` becoming the
/// `Host` header, as Pingora's proxy does for proxied requests.
fn as_http1(header: &mut RequestHeader) -> Result<()> {
    if header.version != http::Version::HTTP_2 {
        return Ok(());
    }
    header.set_version(http::Version::HTTP_11);
    if header.headers.contains_key(http::header::HOST) {
        return Ok(());
    }
    let authority = header.uri.authority().map(|a| a.as_str().to_owned());
    match authority {
        Some(authority) if !authority.contains('@') => {
            header.insert_header(http::header::HOST, authority)
        }
        _ => Ok(()),
    }
}

/// What every request sent upstream carries, proxied or called by the gateway itself:
/// `X-Forwarded-For` (appended to), `X-Forwarded-Proto`, `X-Request-Id`, the credential
/// stripped with the claims in headers, and the mapped method, path, query and headers; last,
/// headers with `_` are dropped (`limits.headers_with_underscores`), judged against the
/// request exactly as it leaves.
pub fn prepare(
    inbound: &impl Inbound,
    upstream: &mut RequestHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    if let Some(client) = inbound.client_ip() {
        let ip = client.to_string();
        let forwarded = match upstream
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(previous) => format!("{previous}, {ip}"),
            None => ip,
        };
        upstream.insert_header("x-forwarded-for", forwarded)?;
    }
    let tls = inbound.is_tls();
    upstream.insert_header("x-forwarded-proto", if tls { "https" } else { "http" })?;
    if let Some(id) = &ctx.request_id {
        upstream.insert_header(crate::pipeline::respond::X_REQUEST_ID, id.clone())?;
    }
    authn::upstream_request(upstream, ctx)?;
    mapped::upstream_request(upstream, ctx)?;
    crate::pipeline::underscores::drop_headers(upstream, ctx);
    Ok(())
}
