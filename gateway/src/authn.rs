//! The gateway side of authentication: runs the route's `auth` requirement on the request
//! head, turns refusals into RFC 6750 answers (problem+json with `WWW-Authenticate`), counts
//! them, and prepares what goes upstream (the credential stripped, claims copied into headers).

use crate::ctx::RequestCtx;
use crate::metrics::METRICS;
use crate::problem::Problem;
use http::{HeaderName, HeaderValue};
use pingora_proxy::Session;
use std::time::SystemTime;

/// What a successful authentication leaves for the upstream request.
#[derive(Default)]
pub struct Upstream {
    /// Claim headers to set, computed up front so a bad claim value refuses the request here.
    claim_headers: Vec<(HeaderName, HeaderValue)>,
}

/// Runs `requirement` on the request; on success the identity is kept in the context.
pub fn authenticate(
    session: &Session,
    ctx: &mut RequestCtx,
    requirement: &auth::RouteRequirement,
) -> Result<(), Problem> {
    let header = session.req_header();
    let verified = requirement
        .authenticate(&header.headers, header.uri.query(), SystemTime::now())
        .and_then(|identity| Ok((requirement.claim_headers(&identity)?, identity)));
    match verified {
        Ok((claim_headers, identity)) => {
            ctx.identity = Some(identity);
            ctx.auth_upstream = Upstream { claim_headers };
            Ok(())
        }
        Err(error) => {
            METRICS
                .auth_failures
                .with_label_values(&[ctx.route_name(), error.reason().as_str()])
                .inc();
            if let Some(provider) = error.refetch_provider() {
                crate::jwks::wake(provider);
            }
            Err(problem(&error, requirement.realm()))
        }
    }
}

/// The RFC 6750 answer for a refusal.
fn problem(error: &auth::AuthError, realm: &str) -> Problem {
    let kind = match error.status() {
        403 => "forbidden",
        503 => "auth-unavailable",
        _ => "unauthorized",
    };
    let mut problem = Problem::new(error.status(), kind, error.title(), error.detail());
    if let Some(challenge) = error.www_authenticate(realm) {
        problem = problem.with_header("www-authenticate", challenge);
    }
    if let Some(seconds) = error.retry_after_secs() {
        problem = problem.with_header("retry-after", seconds.to_string());
    }
    problem
}

/// Strips the credential (unless the route forwards it) and sets the claim headers, after
/// removing any the client sent itself.
pub fn upstream_request(
    upstream: &mut pingora_http::RequestHeader,
    ctx: &mut RequestCtx,
) -> pingora_error::Result<()> {
    let Some(requirement) = ctx.route.as_ref().and_then(|route| route.auth.clone()) else {
        return Ok(());
    };
    let strip = requirement.strip();
    for name in &strip.headers {
        upstream.remove_header(name);
    }
    if !strip.query.is_empty() {
        if let Some(query) = upstream.uri.query() {
            if let Some(kept) = auth::strip_query(query, &strip.query) {
                let path = upstream.uri.path();
                let uri = if kept.is_empty() {
                    path.to_owned()
                } else {
                    format!("{path}?{kept}")
                };
                if let Ok(uri) = uri.parse() {
                    upstream.set_uri(uri);
                }
            }
        }
    }
    if !strip.cookies.is_empty() {
        let cookie = upstream
            .headers
            .get(http::header::COOKIE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Some(kept) = cookie.and_then(|cookie| auth::strip_cookies(&cookie, &strip.cookies)) {
            if kept.is_empty() {
                upstream.remove_header(&http::header::COOKIE);
            } else {
                upstream.insert_header(http::header::COOKIE, kept)?;
            }
        }
    }
    for name in requirement.claim_header_names() {
        upstream.remove_header(name);
    }
    for (name, value) in std::mem::take(&mut ctx.auth_upstream.claim_headers) {
        upstream.insert_header(name, value)?;
    }
    Ok(())
}
