//! The gateway side of authentication: runs the route's `auth` requirement on the request
//! head, turns refusals into RFC 6750 answers (problem+json with `WWW-Authenticate`), counts
//! them, and prepares what goes upstream (the credential stripped, claims copied into headers).

use crate::observe::metrics::METRICS;
use crate::pipeline::ctx::RequestCtx;
use crate::problem::Problem;
use http::{HeaderName, HeaderValue};
use std::time::SystemTime;

/// What a successful authentication leaves for the upstream request.
#[derive(Default)]
pub struct Upstream {
    /// Claim headers to set, computed up front so a bad claim value refuses the request here.
    claim_headers: Vec<(HeaderName, HeaderValue)>,
}

/// Runs `requirement` on the request; on success the identity is kept in the context.
pub fn authenticate(
    header: &pingora_http::RequestHeader,
    ctx: &mut RequestCtx,
    requirement: &auth::RouteRequirement,
) -> Result<(), Problem> {
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
            if error.refetch_provider().is_some() {
                crate::core::runtime::JWKS_WAKE.notify_one();
            }
            Err(problem(&error, requirement.realm()))
        }
    }
}

/// Records the auth step's span: the provider that accepted the request, or the refusal's
/// status and kind. Never the credential.
pub fn record_span(
    span: crate::observe::trace::ChildSpan,
    ctx: &RequestCtx,
    refused: Option<&Problem>,
) {
    use crate::observe::trace::{KeyValue, SpanKind};
    let error = refused.map(|problem| std::borrow::Cow::Borrowed(problem.kind));
    span.end(
        SpanKind::Internal,
        "auth".into(),
        || match (refused, &ctx.identity) {
            (Some(problem), _) => vec![
                KeyValue::new("holdfast.auth.result", problem.kind),
                KeyValue::new("http.response.status_code", i64::from(problem.status)),
            ],
            (None, Some(identity)) => vec![
                KeyValue::new("holdfast.auth.result", "ok"),
                KeyValue::new("holdfast.auth.provider", identity.provider().to_owned()),
            ],
            (None, None) => vec![KeyValue::new("holdfast.auth.result", "ok")],
        },
        error,
    );
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

/// Strips the credential (unless the route forwards it) from every place it can be read —
/// every instance of its header, every query parameter of its name, every `Cookie` header —
/// and sets the claim headers, after removing any the client sent itself.
pub fn upstream_request(
    upstream: &mut pingora_http::RequestHeader,
    ctx: &mut RequestCtx,
) -> pingora_error::Result<()> {
    let Some(requirement) = ctx.route.as_ref().and_then(|route| route.auth.clone()) else {
        return Ok(());
    };
    let strip = requirement.strip();
    for name in &strip.headers {
        // Every instance: `remove_header` drops all values under the name.
        upstream.remove_header(name);
    }
    strip_query(upstream, &strip.query)?;
    let cookies = upstream.headers.get_all(http::header::COOKIE);
    if let Some(kept) = auth::strip_cookie_headers(cookies, &strip.cookies) {
        upstream.remove_header(&http::header::COOKIE);
        for value in kept {
            upstream.append_header(http::header::COOKIE, value)?;
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

/// Removes the credential's query parameters. The target is rebuilt from the URI, which
/// replaces the bytes Pingora keeps for the wire (an absolute-form or non-UTF-8 target's): what
/// goes upstream is exactly what was stripped. A target that cannot be rebuilt refuses the
/// request rather than forward the credential.
fn strip_query(
    upstream: &mut pingora_http::RequestHeader,
    names: &[String],
) -> pingora_error::Result<()> {
    let Some(kept) = upstream
        .uri
        .query()
        .and_then(|query| auth::strip_query(query, names))
    else {
        return Ok(());
    };
    let path = upstream.uri.path();
    let target = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{kept}")
    };
    let mut parts = upstream.uri.clone().into_parts();
    let rebuilt = http::uri::PathAndQuery::try_from(target)
        .map_err(|e| e.to_string())
        .and_then(|target| {
            parts.path_and_query = Some(target);
            http::Uri::from_parts(parts).map_err(|e| e.to_string())
        });
    match rebuilt {
        Ok(uri) => {
            upstream.set_uri(uri);
            Ok(())
        }
        Err(error) => pingora_error::Error::e_explain(
            pingora_error::ErrorType::InternalError,
            format!("cannot remove the credential from the query: {error}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_http::RequestHeader;

    const CONFIG: &str = r#"
auth:
  main:
    jwt: { issuer: https://id.test, audiences: [holdfast], secret: "an-hmac-secret-of-at-least-32-bytes!" }
    token: { header: x-token, query: access_token, cookie: session }
upstreams:
  o: { targets: ["127.0.0.1:9"] }
routes:
  - { name: api, match: { prefix: /api }, upstream: o, auth: { provider: main } }
"#;

    fn stripped(target: impl AsRef<[u8]>, headers: &[(&str, &str)]) -> RequestHeader {
        let mut ctx = crate::pipeline::ctx::for_route(CONFIG, "/api");
        let mut upstream = RequestHeader::build("GET", target.as_ref(), None).expect("request");
        for (name, value) in headers {
            upstream
                .append_header(name.to_string(), *value)
                .expect("header");
        }
        upstream_request(&mut upstream, &mut ctx).expect("stripped");
        upstream
    }

    fn cookies(upstream: &RequestHeader) -> Vec<&str> {
        upstream
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect()
    }

    #[test]
    fn the_credential_cookie_leaves_every_cookie_header() {
        let upstream = stripped("/api", &[("cookie", "a=1"), ("cookie", "session=t; b=2")]);
        assert_eq!(cookies(&upstream), ["a=1", "b=2"]);
        let upstream = stripped("/api", &[("cookie", "session=t"), ("cookie", "c=3")]);
        assert_eq!(cookies(&upstream), ["c=3"], "an emptied header is dropped");
        let upstream = stripped("/api", &[("cookie", "session=t"), ("Cookie", "session=u")]);
        assert!(cookies(&upstream).is_empty());
        let upstream = stripped("/api", &[("cookie", "a=1"), ("cookie", "b=2")]);
        assert_eq!(cookies(&upstream), ["a=1", "b=2"], "untouched without it");
    }

    #[test]
    fn every_header_and_query_instance_is_stripped() {
        let upstream = stripped(
            "/api/x?access_token=a&x=1&access%5Ftoken=b&access_token=c&y=%20",
            &[("x-token", "a"), ("X-Token", "b"), ("accept", "*/*")],
        );
        assert_eq!(upstream.uri.to_string(), "/api/x?x=1&y=%20");
        assert!(upstream.headers.get("x-token").is_none());
        assert_eq!(upstream.headers["accept"], "*/*");
        let upstream = stripped("/api?access_token=a", &[]);
        assert_eq!(upstream.uri.to_string(), "/api");
        // Pingora keeps an absolute-form target's bytes for the wire and only its path and
        // query in the URI: the stripped target replaces those bytes.
        let upstream = stripped("http://h.test/api?access_token=a&k=v", &[]);
        assert_eq!(upstream.raw_path(), b"/api?k=v");
        let upstream = stripped(b"/api?access_token=a&k=%FF\xff", &[]);
        assert!(!String::from_utf8_lossy(upstream.raw_path()).contains("access_token"));
    }
}
