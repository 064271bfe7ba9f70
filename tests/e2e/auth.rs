//! Bearer-token authentication end to end: JWT (HS256 from a secret, RS256 from a JWKS served by
//! a real HTTP server), API keys, scopes, RFC 6750 answers, the credential stripped and claims
//! copied into upstream headers, private channels from a claim, and the JWKS refresh rules.

use axum::routing::get;
use axum::Router;
use holdfast_tests::{eventually, Holdfast, Origin};
use jsonwebtoken::{jwk::Jwk, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) const SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!";

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../auth/src/testdata")
        .join(name)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

pub(crate) fn claims(extra: Value) -> Value {
    let mut claims = json!({"sub": "alice", "iss": "https://id.test", "aud": "holdfast", "iat": now() - 10, "exp": now() + 600, "scope": "ai:read", "org": {"id": "acme"}});
    if let (Some(base), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            base.insert(key.clone(), value.clone());
        }
    }
    claims
}

pub(crate) fn hs256(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

pub(crate) fn rsa_key(file: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(testdata(file)).expect("key")).expect("rsa key")
}

pub(crate) fn rs256(kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

pub(crate) fn jwks(keys: &[(&str, &EncodingKey)]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(kid, key)| {
            let mut jwk = Jwk::from_encoding_key(key, Algorithm::RS256).expect("jwk");
            jwk.common.key_id = Some((*kid).to_owned());
            serde_json::to_value(jwk).expect("json")
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

/// Base64url without padding, for hand-made token parts.
fn b64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn config(origin: &Origin, jwks_url: &str) -> String {
    format!(
        r#"
server: {{ shutdown_grace: 1s }}
auth:
  main:
    jwt: {{ issuer: https://id.test, audiences: [holdfast], secret: "{SECRET}" }}
  idp:
    jwt: {{ issuer: https://id.test, audiences: [holdfast], algorithms: [RS256], jwks_url: "{jwks_url}", jwks: {{ refetch_cooldown: 1s, min_refresh: 1s, timeout: 1s }} }}
  rsa-pem:
    jwt: {{ issuer: https://id.test, audiences: [holdfast], public_key_file: {rsa_pub} }}
  partners:
    api_keys: {{ file: {keys} }}
  web:
    jwt: {{ issuer: https://id.test, audiences: [holdfast], secret: "{SECRET}" }}
    token: {{ cookie: session }}
upstreams:
  o: {{ targets: [{origin}] }}
routes:
  - name: ai
    match: {{ path: /ai }}
    auth: {{ provider: main, scopes: [ai:read], claims_to_headers: {{ sub: x-user-id, org.id: x-org }} }}
    upstream: o
  - name: admin
    match: {{ path: /admin }}
    auth: {{ provider: main, scopes: [admin:write] }}
    upstream: o
  - name: jwks
    match: {{ path: /jwks }}
    auth: {{ provider: idp }}
    upstream: o
  - name: pem
    match: {{ path: /pem }}
    auth: {{ provider: rsa-pem }}
    upstream: o
  - name: keys
    match: {{ path: /keys }}
    auth: {{ providers: [partners], scopes: [ai:read] }}
    upstream: o
  - name: open
    match: {{ path: /open }}
    upstream: o
  - name: web
    match: {{ path: /web }}
    auth: {{ provider: web }}
    upstream: o
  - name: inbox
    match: {{ path: /inbox, methods: [GET] }}
    auth: {{ provider: main }}
    longpoll: {{ channel: "user:{{claim.sub}}", timeout: 5s }}
  - name: send
    match: {{ path: "/send/{{user}}", methods: [POST] }}
    publish: {{ channel: "user:{{user}}" }}
"#,
        origin = origin.addr,
        rsa_pub = testdata("rsa.pub").display(),
        keys = testdata("keys.yaml").display(),
    )
}

/// A JWKS endpoint whose document and behaviour the test controls.
struct Idp {
    origin: Origin,
    document: Arc<Mutex<(u16, String)>>,
    delay: Arc<Mutex<Duration>>,
}

impl Idp {
    async fn start(document: String) -> Self {
        let document = Arc::new(Mutex::new((200u16, document)));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let (served, slow) = (document.clone(), delay.clone());
        let origin = Origin::start(Router::new().route(
            "/jwks.json",
            get(move || {
                let (status, body) = served.lock().expect("lock").clone();
                let wait = *slow.lock().expect("lock");
                async move {
                    tokio::time::sleep(wait).await;
                    (
                        axum::http::StatusCode::from_u16(status).expect("status"),
                        [("content-type", "application/json")],
                        body,
                    )
                }
            }),
        ))
        .await;
        Self {
            origin,
            document,
            delay,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/jwks.json", self.origin.addr)
    }

    fn serve(&self, status: u16, body: String) {
        *self.document.lock().expect("lock") = (status, body);
    }

    fn slow_down(&self, by: Duration) {
        *self.delay.lock().expect("lock") = by;
    }

    fn fetches(&self) -> usize {
        self.origin.count()
    }
}

async fn status_and_problem(response: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, challenge, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_routes_refuse_with_rfc6750_answers_and_forward_claims() {
    let origin = Origin::echo().await;
    let idp = Idp::start(jwks(&[])).await;
    let gw = Holdfast::start(&config(&origin, &idp.url())).await;
    let client = reqwest::Client::new();

    // Missing token.
    let (status, challenge, body) =
        status_and_problem(client.get(gw.url("/ai")).send().await.expect("get")).await;
    assert_eq!(status, 401);
    assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="holdfast""#));
    assert_eq!(body["status"], 401);
    assert_eq!(body["title"], "Unauthorized");

    // A good token: the upstream sees the claims, not the token, and not the client's own x-user-id.
    let token = hs256(&claims(json!({})));
    let response = client
        .get(gw.url("/ai"))
        .bearer_auth(&token)
        .header("x-user-id", "mallory")
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.expect("echo");
    assert_eq!(echo["headers"]["x-user-id"], "alice");
    assert_eq!(echo["headers"]["x-org"], "acme");
    assert!(
        echo["headers"].get("authorization").is_none(),
        "the token must not reach the upstream: {echo}"
    );

    // Each forged or unusable token: 401 invalid_token, never a hint of which check failed.
    let header_none = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(claims(json!({})).to_string().as_bytes());
    let rsa_public = std::fs::read(testdata("rsa.pub")).expect("pub");
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(json!({})),
        &EncodingKey::from_secret(&rsa_public),
    )
    .expect("sign");
    let tampered = {
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = b64(claims(json!({"sub": "admin"})).to_string().as_bytes());
        parts.join(".")
    };
    let cases: Vec<(&str, &str, String)> = vec![
        ("ai", "alg none", format!("{header_none}.{payload}.")),
        ("pem", "HS256 signed with the RSA public key", confused),
        ("ai", "bad signature", tampered),
        (
            "ai",
            "expired",
            hs256(&claims(json!({"exp": now() - 3600, "iat": now() - 7200}))),
        ),
        (
            "ai",
            "not yet valid",
            hs256(&claims(json!({"nbf": now() + 3600}))),
        ),
        (
            "ai",
            "wrong issuer",
            hs256(&claims(json!({"iss": "https://evil.test"}))),
        ),
        (
            "ai",
            "wrong audience",
            hs256(&claims(json!({"aud": "someone-else"}))),
        ),
        ("ai", "malformed base64", "a.b$.c".to_owned()),
        (
            "ai",
            "malformed json",
            format!("{}.{}.sig", b64(b"{not json"), payload),
        ),
        (
            "ai",
            "over 8 KiB",
            hs256(&claims(json!({"pad": "x".repeat(9000)}))),
        ),
        (
            "pem",
            "an algorithm the provider does not allow",
            rs256(None, &rsa_key("rsa2.key"), &claims(json!({}))),
        ),
    ];
    for (route, what, token) in cases {
        let response = client
            .get(gw.url(&format!("/{route}")))
            .bearer_auth(&token)
            .send()
            .await
            .expect("get");
        let (status, challenge, body) = status_and_problem(response).await;
        assert_eq!(status, 401, "{what}");
        let challenge = challenge.unwrap_or_default();
        assert!(
            challenge.starts_with(r#"Bearer realm="holdfast", error="invalid_token""#),
            "{what}: {challenge}"
        );
        assert_eq!(body["status"], 401, "{what}");
        assert_eq!(body["type"], "urn:holdfast:problem:unauthorized", "{what}");
    }

    // Malformed requests: two Authorization headers, `Bearer` with nothing after it.
    let response = client
        .get(gw.url("/ai"))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("get");
    let (status, challenge, _) = status_and_problem(response).await;
    assert_eq!(status, 401);
    assert!(challenge
        .unwrap_or_default()
        .contains(r#"error="invalid_request""#));
    let response = client
        .get(gw.url("/ai"))
        .header("authorization", "Bearer ")
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 401);

    // A valid token lacking the route's scope: 403 insufficient_scope.
    let (status, challenge, body) = status_and_problem(
        client
            .get(gw.url("/admin"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        challenge.as_deref(),
        Some(
            r#"Bearer realm="holdfast", error="insufficient_scope", error_description="the access token lacks the required scope", scope="admin:write""#
        )
    );
    assert_eq!(body["status"], 403);

    // The upstream saw only the one good request; failures are counted by reason.
    assert_eq!(origin.count(), 1);
    eventually(Duration::from_secs(5), "auth failure metrics", async || {
        let metrics = gw.metrics().await;
        holdfast_tests::metric_value(
            &metrics,
            r#"holdfast_auth_failures_total{reason="missing",route="ai"}"#,
        ) == Some(1.0)
            && holdfast_tests::metric_value(
                &metrics,
                r#"holdfast_auth_failures_total{reason="insufficient_scope",route="admin"}"#,
            ) == Some(1.0)
            && holdfast_tests::metric_value(
                &metrics,
                r#"holdfast_auth_failures_total{reason="expired",route="ai"}"#,
            ) == Some(1.0)
    })
    .await;
}

/// The header lines the origin received under `name` (one entry per line).
fn header_lines<'a>(seen: &'a holdfast_tests::origin::Seen, name: &str) -> Vec<&'a str> {
    seen.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_cookie_is_stripped_from_every_cookie_header() {
    let origin = Origin::echo().await;
    let idp = Idp::start(jwks(&[])).await;
    let gw = Holdfast::start(&config(&origin, &idp.url())).await;
    let token = hs256(&claims(json!({})));
    // HTTP/2 clients send one Cookie header per cookie; HTTP/1 clients may too.
    let cases = [
        (
            format!("Cookie: theme=dark\r\nCookie: session={token}; lang=en\r\n"),
            vec!["theme=dark", "lang=en"],
        ),
        (
            format!("Cookie: session={token}\r\nCookie: theme=dark; lang=en\r\n"),
            vec!["theme=dark; lang=en"],
        ),
        (format!("Cookie: session={token}\r\n"), vec![]),
    ];
    for (cookies, expected) in cases {
        let before = origin.count();
        let request = format!("GET /web HTTP/1.1\r\nHost: x\r\n{cookies}Connection: close\r\n\r\n");
        let answer =
            holdfast_tests::raw_request(gw.addr, request.as_bytes(), Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{cookies}: {answer}");
        let seen = origin.seen();
        assert_eq!(seen.len(), before + 1);
        let last = &seen[before];
        assert_eq!(header_lines(last, "cookie"), expected, "{cookies}");
        assert!(
            last.headers
                .iter()
                .all(|(_, v)| !v.contains("session=") && !v.contains(&token)),
            "the session cookie reached the origin: {:?}",
            last.headers
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lookalikes_of_a_claim_header_never_reach_the_origin() {
    let origin = Origin::echo().await;
    let idp = Idp::start(jwks(&[])).await;
    let gw = Holdfast::start(&config(&origin, &idp.url())).await;
    let token = hs256(&claims(json!({})));
    // CGI-style origins read all of these as HTTP_X_USER_ID.
    let request = format!(
        "GET /ai HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nX_User_Id: mallory\r\nX-User_Id: mallory\r\nx-user-id: mallory\r\nX_Forwarded_For: 10.9.9.9\r\nX_Custom: kept\r\nConnection: close\r\n\r\n"
    );
    let answer =
        holdfast_tests::raw_request(gw.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let seen = origin.seen();
    let seen = seen.last().expect("proxied");
    let user_ids: Vec<&str> = seen
        .headers
        .iter()
        .filter(|(n, _)| n.replace('_', "-").eq_ignore_ascii_case("x-user-id"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(user_ids, ["alice"], "{:?}", seen.headers);
    assert_eq!(header_lines(seen, "x_forwarded_for"), Vec::<&str>::new());
    assert_eq!(header_lines(seen, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(
        header_lines(seen, "x_custom"),
        ["kept"],
        "no managed header reads so"
    );
    assert!(
        seen.headers.iter().all(|(_, v)| !v.contains("mallory")),
        "{:?}",
        seen.headers
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_are_checked_against_hashes() {
    let origin = Origin::echo().await;
    let idp = Idp::start(jwks(&[])).await;
    let gw = Holdfast::start(&config(&origin, &idp.url())).await;
    let client = reqwest::Client::new();
    let response = client
        .get(gw.url("/keys"))
        .header("x-api-key", "k-acme")
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.expect("echo");
    assert!(
        echo["headers"].get("x-api-key").is_none(),
        "the key must not reach the upstream"
    );
    let (status, challenge, _) = status_and_problem(
        client
            .get(gw.url("/keys"))
            .header("x-api-key", "k-unknown")
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(status, 401);
    assert!(challenge
        .unwrap_or_default()
        .contains(r#"error="invalid_token""#));
    // k-beta is a known key without the route's scope.
    assert_eq!(
        client
            .get(gw.url("/keys"))
            .header("x-api-key", "k-beta")
            .send()
            .await
            .expect("get")
            .status(),
        403
    );
    // `holdfast hash-key` makes the keys file's hashes.
    let (code, stdout, _) = holdfast_tests::run_holdfast(&["hash-key", "k-acme"]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        "0b131655124822cb1cf254042086d2bf26a4f1c6cd82727aab583e915346aca3"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn jwks_keys_are_fetched_refetched_for_unknown_kids_and_kept_when_the_idp_fails() {
    let origin = Origin::echo().await;
    let first = rsa_key("rsa.key");
    let second = rsa_key("rsa2.key");
    let idp = Idp::start(jwks(&[("k1", &first)])).await;
    let gw = Holdfast::start(&config(&origin, &idp.url())).await;
    let client = reqwest::Client::new();
    let good = rs256(Some("k1"), &first, &claims(json!({})));
    eventually(Duration::from_secs(10), "the JWKS to load", async || {
        client
            .get(gw.url("/jwks"))
            .bearer_auth(&good)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;

    // A kid the JWKS does not have: refused, and a refetch is asked for (rate-limited).
    let rotated = rs256(Some("k2"), &second, &claims(json!({})));
    let fetches = idp.fetches();
    let (status, challenge, _) = status_and_problem(
        client
            .get(gw.url("/jwks"))
            .bearer_auth(&rotated)
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(status, 401);
    assert!(challenge
        .unwrap_or_default()
        .contains(r#"error="invalid_token""#));
    eventually(Duration::from_secs(5), "the refetch", async || {
        idp.fetches() > fetches
    })
    .await;

    // The IdP publishes the new key: after the cooldown the refetch makes the token good.
    idp.serve(200, jwks(&[("k1", &first), ("k2", &second)]));
    eventually(
        Duration::from_secs(10),
        "the rotated key to be accepted",
        async || {
            client
                .get(gw.url("/jwks"))
                .bearer_auth(&rotated)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;

    // A flood of unknown kids does not hammer the IdP: at most one fetch per cooldown (1 s).
    let before = idp.fetches();
    let started = std::time::Instant::now();
    for i in 0..50 {
        let token = rs256(Some(&format!("nope-{i}")), &second, &claims(json!({})));
        assert_eq!(
            client
                .get(gw.url("/jwks"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("get")
                .status(),
            401
        );
    }
    let allowed = (started.elapsed().as_millis() / 1000 + 2) as usize;
    assert!(
        idp.fetches() - before <= allowed,
        "{} fetches for 50 unknown kids in {:?}",
        idp.fetches() - before,
        started.elapsed()
    );

    // The IdP breaks (500, then garbage): the last good keys keep working.
    idp.serve(500, "down".to_owned());
    let rotated_again = rs256(Some("k3"), &second, &claims(json!({})));
    let _ = client
        .get(gw.url("/jwks"))
        .bearer_auth(&rotated_again)
        .send()
        .await;
    eventually(Duration::from_secs(5), "a failed fetch", async || {
        gw.metric(r#"holdfast_jwks_refresh_total{provider="idp",result="error"}"#)
            .await
            .unwrap_or(0.0)
            >= 1.0
    })
    .await;
    idp.serve(200, "{garbage".to_owned());
    let _ = client
        .get(gw.url("/jwks"))
        .bearer_auth(&rotated_again)
        .send()
        .await;
    eventually(
        Duration::from_secs(5),
        "a second failed fetch",
        async || {
            gw.metric(r#"holdfast_jwks_refresh_total{provider="idp",result="error"}"#)
                .await
                .unwrap_or(0.0)
                >= 2.0
        },
    )
    .await;
    // A slow IdP (past the 1 s fetch timeout) counts as down too.
    idp.serve(200, jwks(&[("k1", &first)]));
    idp.slow_down(Duration::from_secs(5));
    let _ = client
        .get(gw.url("/jwks"))
        .bearer_auth(&rotated_again)
        .send()
        .await;
    eventually(Duration::from_secs(10), "a timed-out fetch", async || {
        gw.metric(r#"holdfast_jwks_refresh_total{provider="idp",result="error"}"#)
            .await
            .unwrap_or(0.0)
            >= 3.0
    })
    .await;
    assert_eq!(
        client
            .get(gw.url("/jwks"))
            .bearer_auth(&good)
            .send()
            .await
            .expect("get")
            .status(),
        200
    );
    assert!(
        gw.metric(r#"holdfast_jwks_last_success_timestamp_seconds{provider="idp"}"#)
            .await
            .unwrap_or(0.0)
            > 0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jwks_provider_that_never_loaded_answers_503_not_500() {
    let origin = Origin::echo().await;
    let idp = Idp::start("not json at all".to_owned()).await;
    let gw = Holdfast::start(&config(&origin, &idp.url())).await;
    let token = rs256(Some("k1"), &rsa_key("rsa.key"), &claims(json!({})));
    eventually(
        Duration::from_secs(5),
        "the failed first fetch",
        async || {
            gw.metric(r#"holdfast_jwks_refresh_total{provider="idp",result="error"}"#)
                .await
                .unwrap_or(0.0)
                >= 1.0
        },
    )
    .await;
    let response = reqwest::Client::new()
        .get(gw.url("/jwks"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some());
    let body: Value = response.json().await.expect("problem");
    assert_eq!(body["status"], 503);
    assert_eq!(origin.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_names_a_private_channel() {
    let origin = Origin::echo().await;
    let idp = Idp::start(jwks(&[])).await;
    let gw = Holdfast::start(&config(&origin, &idp.url())).await;
    let client = reqwest::Client::new();
    let alice = hs256(&claims(json!({})));
    let bob = hs256(&claims(json!({"sub": "bob"})));
    let alice_poll = tokio::spawn(client.get(gw.url("/inbox")).bearer_auth(&alice).send());
    let bob_poll = tokio::spawn(client.get(gw.url("/inbox?wait=1")).bearer_auth(&bob).send());
    eventually(Duration::from_secs(5), "two held polls", async || {
        gw.metric(r#"holdfast_longpoll_held{route="inbox"}"#).await == Some(2.0)
    })
    .await;
    assert_eq!(
        client
            .post(gw.url("/send/alice"))
            .body("for alice")
            .send()
            .await
            .expect("send")
            .status(),
        201
    );
    let response = alice_poll.await.expect("join").expect("poll");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("text"), "for alice");
    assert_eq!(
        bob_poll.await.expect("join").expect("poll").status(),
        204,
        "bob must not see alice's message"
    );
}
