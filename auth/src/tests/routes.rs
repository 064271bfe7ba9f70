//! Route requirements: several providers, token locations, claims to headers, and what is
//! stripped before proxying.

use super::*;
use crate::testkit::*;
use crate::Reason;
use serde_json::json;

fn two_providers() -> AuthSet {
    set(&format!(
        "auth:\n  main:\n    jwt: {{ public_key_file: rsa.pub, issuer: https://id }}\n  legacy:\n    jwt: {{ secret: {SECRET}, issuer: https://legacy }}\n    token: {{ header: authorization, cookie: session }}\n  keys:\n    api_keys: {{ file: keys.yaml }}\n    token: {{ header: x-api-key, query: api_key }}\nroutes:\n  - name: r\n    auth: {{ providers: [main, legacy, keys], scopes: [ai:read], claims_to_headers: {{ sub: x-user-id, org.id: x-org, groups: x-groups }} }}\n  - name: open\n    auth: {{ public: true }}\n  - name: bare\n  - name: fwd\n    auth: {{ provider: main, forward_token: true }}\n"
    ))
}

#[test]
fn any_listed_provider_may_vouch() {
    let set = two_providers();
    let main = Signer::rs256().sign(&claims(), None);
    assert_eq!(check_token(&set, &main).expect("main").provider(), "main");
    let legacy = Signer::new(jsonwebtoken::Algorithm::HS256)
        .sign(&claims_with(json!({ "iss": "https://legacy" })), None);
    assert_eq!(
        check_token(&set, &legacy).expect("legacy").provider(),
        "legacy"
    );
    let cookie = headers(&[("cookie", &format!("theme=dark; session={legacy}"))]);
    assert_eq!(
        check(&set, &cookie).expect("legacy cookie").provider(),
        "legacy"
    );
    let route = set.route(0).expect("route");
    let key = route
        .authenticate(&HeaderMap::new(), Some("api_key=k-acme"), now())
        .expect("api key");
    assert_eq!((key.provider(), key.subject()), ("keys", "acme"));
    // k-beta is a valid key without the scope: 403, the furthest any provider got.
    let beta = check(&set, &headers(&[("x-api-key", "k-beta")])).expect_err("no scope");
    assert_eq!(beta.status(), 403);
    // A token from an unknown issuer: invalid for both JWT providers.
    let stranger = Signer::rs256().sign(&claims_with(json!({ "iss": "https://evil" })), None);
    assert_eq!(
        check_token(&set, &stranger),
        Err(AuthError::InvalidToken(Reason::WrongIssuer))
    );
    // An expired main token: "expired" beats legacy's "wrong issuer".
    let expired = Signer::rs256().sign(&claims_with(json!({ "exp": NOW - 3600 })), None);
    assert_eq!(
        check_token(&set, &expired),
        Err(AuthError::InvalidToken(Reason::Expired))
    );
    assert_eq!(check(&set, &HeaderMap::new()), Err(AuthError::Missing));
}

#[test]
fn open_and_public_routes_have_no_requirement() {
    let set = two_providers();
    assert!(set.route(1).is_none(), "public: true");
    assert!(set.route(2).is_none(), "no auth");
    assert!(set.route(9).is_none(), "no such route");
}

#[test]
fn claims_become_headers() {
    let set = two_providers();
    let token = Signer::rs256().sign(
        &claims_with(json!({ "org": { "id": 7 }, "groups": ["a", "b"] })),
        None,
    );
    let identity = check_token(&set, &token).expect("valid");
    let route = set.route(0).expect("route");
    let names: Vec<&str> = route.claim_header_names().map(|n| n.as_str()).collect();
    assert_eq!(names, ["x-groups", "x-org", "x-user-id"]);
    let headers: Vec<(String, String)> = route
        .claim_headers(&identity)
        .expect("clean")
        .into_iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    assert_eq!(
        headers,
        [
            ("x-groups".to_owned(), "a,b".to_owned()),
            ("x-org".to_owned(), "7".to_owned()),
            ("x-user-id".to_owned(), "alice".to_owned())
        ]
    );
}

#[test]
fn claims_with_cr_lf_or_nul_are_refused() {
    let set = two_providers();
    let route = set.route(0).expect("route");
    for sub in ["alice\r\nx-admin: 1", "alice\n", "a\u{0}b"] {
        let token = Signer::rs256().sign(&claims_with(json!({ "sub": sub })), None);
        let identity = check_token(&set, &token).expect("signed, so valid");
        assert_eq!(
            route.claim_headers(&identity).map(|_| ()),
            Err(AuthError::InvalidToken(Reason::Malformed)),
            "{sub:?}"
        );
    }
}

#[test]
fn what_is_stripped_before_proxying() {
    let set = two_providers();
    let strip = set.route(0).expect("route").strip();
    let names: Vec<&str> = strip.headers.iter().map(|h| h.as_str()).collect();
    assert_eq!(names, ["authorization", "x-api-key"]);
    assert_eq!(strip.query, ["api_key"]);
    assert_eq!(strip.cookies, ["session"]);
    let fwd = set.route(3).expect("route");
    assert!(fwd.forward_token() && fwd.strip().is_empty());
    // Forwarded or not, the credential's headers are known (for dropping look-alikes).
    let credential: Vec<&str> = fwd.credential_header_names().map(|h| h.as_str()).collect();
    assert_eq!(credential, ["authorization"]);
    let credential: Vec<&str> = set
        .route(0)
        .expect("route")
        .credential_header_names()
        .map(|h| h.as_str())
        .collect();
    assert_eq!(credential, ["authorization", "authorization", "x-api-key"]);
    assert_eq!(
        crate::strip_query("a=1&api_key=k", &strip.query).as_deref(),
        Some("a=1")
    );
    assert_eq!(
        crate::strip_cookies("theme=dark; session=t", &strip.cookies).as_deref(),
        Some("theme=dark")
    );
}

#[test]
fn api_key_identities_carry_claims() {
    let set = two_providers();
    let identity = check(&set, &headers(&[("x-api-key", "k-acme")])).expect("valid");
    assert_eq!(identity.claims().text("sub").as_deref(), Some("acme"));
    assert_eq!(identity.roles(), ["partner"]);
    assert_eq!(identity.key(), "keys:acme");
    assert_eq!(identity.expires_at(), None);
}
