//! `limits.headers_with_underscores`: the last step of every upstream request (proxied or
//! called by the gateway) drops request headers whose names hold `_`, either those that read as
//! a header the gateway manages (`drop_lookalikes`, the default) or all of them (`drop_all`).
//!
//! Why: CGI-style origins turn `X-User-Id`, `X_User_Id` and `X-User_Id` alike into
//! `HTTP_X_USER_ID`, so a client's `X_User_Id` sent beside the gateway's claim header may be the
//! one the origin reads. Stripping the real name (claims, credentials) does not catch it.

use crate::pipeline::ctx::RequestCtx;
use conf::HeadersWithUnderscores;
use http::HeaderName;
use pingora_http::RequestHeader;

/// Headers an origin trusts a gateway for, whether this one sets them or not.
const MANAGED: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-real-ip",
    "x-request-id",
];

/// Drops the headers with `_` that the route's setting refuses, and any look-alike of a header
/// the gateway sets itself (a claim or mapping header), whatever the setting.
pub fn drop_headers(upstream: &mut RequestHeader, ctx: &RequestCtx) {
    let auth = ctx.route.as_ref().and_then(|route| route.auth.as_deref());
    // Headers the gateway itself sets (claims, mapping): never the client's, whatever the name.
    let gateway_set = || {
        auth.into_iter()
            .flat_map(auth::RouteRequirement::claim_header_names)
            .chain(ctx.mapped.header_names())
    };
    // Almost no request (or config) has `_` in a header name: a pass over the names, no more.
    if !upstream.headers.keys().any(has_underscore) && !gateway_set().any(has_underscore) {
        return;
    }
    let policy = ctx.state.as_ref().map_or_else(Default::default, |state| {
        state.config.limits.headers_with_underscores
    });
    let set_here: Vec<&HeaderName> = gateway_set().collect();
    let managed: Vec<&str> = match policy {
        HeadersWithUnderscores::DropAll => Vec::new(),
        HeadersWithUnderscores::DropLookalikes => upstream
            .headers
            .keys()
            .map(HeaderName::as_str)
            .chain(MANAGED.iter().copied())
            .chain(
                auth.into_iter()
                    .flat_map(auth::RouteRequirement::credential_header_names)
                    .map(HeaderName::as_str),
            )
            .collect(),
    };
    let refused = |name: &HeaderName| {
        if set_here.contains(&name) {
            return false;
        }
        let name = name.as_str();
        if set_here
            .iter()
            .any(|set| same_when_dashed(name, set.as_str()))
        {
            return true;
        }
        if !name.contains('_') {
            return false;
        }
        match policy {
            HeadersWithUnderscores::DropAll => true,
            HeadersWithUnderscores::DropLookalikes => managed
                .iter()
                .any(|managed| *managed != name && same_when_dashed(name, managed)),
        }
    };
    let doomed: Vec<HeaderName> = upstream
        .headers
        .keys()
        .filter(|name| refused(name))
        .cloned()
        .collect();
    for name in &doomed {
        upstream.remove_header(name);
    }
}

fn has_underscore(name: &HeaderName) -> bool {
    name.as_str().as_bytes().contains(&b'_')
}

/// Whether two names are the same once every `_` reads as `-` (and case is ignored).
fn same_when_dashed(a: &str, b: &str) -> bool {
    let dash = |b: u8| {
        if b == b'_' {
            b'-'
        } else {
            b.to_ascii_lowercase()
        }
    };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(a, b)| dash(a) == dash(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
auth:
  main:
    jwt: { issuer: https://id.test, audiences: [holdfast], secret: "an-hmac-secret-of-at-least-32-bytes!" }
    token: { header: x-api-token }
upstreams:
  o: { targets: ["127.0.0.1:9"] }
routes:
  - name: api
    match: { prefix: /api }
    auth: { provider: main, claims_to_headers: { sub: x-user-id, tenant: x_tenant } }
    upstream: o
"#;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build("GET", b"/api", None).expect("request");
        for (name, value) in headers {
            request
                .append_header(name.to_string(), *value)
                .expect("header");
        }
        request
    }

    fn names(request: &RequestHeader) -> Vec<String> {
        let mut names: Vec<String> = request.headers.keys().map(|n| n.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn lookalikes_of_managed_headers_are_dropped() {
        let ctx = crate::pipeline::ctx::for_route(CONFIG, "/api");
        let mut upstream = request(&[
            ("x-user-id", "alice"),
            ("X_User_Id", "mallory"),
            ("X-User_Id", "mallory"),
            ("x_forwarded_for", "10.0.0.1"),
            ("X_Real_IP", "10.0.0.1"),
            ("x_api_token", "forged"),
            ("content-type", "text/plain"),
            ("Content_Type", "text/html"),
            ("x_custom", "kept"),
            ("x_tenant", "acme"),
            ("x-tenant", "other"),
        ]);
        drop_headers(&mut upstream, &ctx);
        assert_eq!(
            names(&upstream),
            ["content-type", "x-user-id", "x_custom", "x_tenant"],
            "x_custom reads as no managed header; x_tenant is a claim header, and the client's \
             x-tenant its look-alike"
        );
        assert_eq!(upstream.headers["x-user-id"], "alice");
    }

    #[test]
    fn drop_all_keeps_only_the_gateways_own() {
        let yaml = CONFIG.replacen(
            "upstreams:",
            "limits: { headers_with_underscores: drop_all }\nupstreams:",
            1,
        );
        let ctx = crate::pipeline::ctx::for_route(&yaml, "/api");
        let mut upstream = request(&[("x_custom", "1"), ("x_tenant", "acme"), ("a", "1")]);
        drop_headers(&mut upstream, &ctx);
        assert_eq!(names(&upstream), ["a", "x_tenant"]);
    }

    #[test]
    fn a_lookalike_of_an_absent_claim_header_is_dropped_too() {
        // The token had no `tenant` claim: the gateway set no `x_tenant`, and a CGI origin
        // must not take the client's `X-Tenant` for it.
        let ctx = crate::pipeline::ctx::for_route(CONFIG, "/api");
        let mut upstream = request(&[("X-Tenant", "forged"), ("a", "1")]);
        drop_headers(&mut upstream, &ctx);
        assert_eq!(names(&upstream), ["a"]);
    }

    #[test]
    fn without_underscores_nothing_changes() {
        let ctx = crate::pipeline::ctx::for_route(CONFIG, "/api");
        let mut upstream = request(&[("x-user-id", "alice"), ("x-user-id", "again")]);
        drop_headers(&mut upstream, &ctx);
        assert_eq!(upstream.headers.get_all("x-user-id").iter().count(), 2);
        assert!(same_when_dashed("X_Real_Ip", "x-real-ip"));
        assert!(!same_when_dashed("x_real_ipv6", "x-real-ip"));
    }
}
