//! Parameter mapping end to end: the seed's body rewrite, headers, query, path and method
//! rewrites, response rules — and every kind of bad input, each answered with problem+json
//! before the upstream is ever called.

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use holdfast_tests::origin::Seen;
use holdfast_tests::{eventually, raw_request, Holdfast, Origin};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!";

/// A config with one upstream `up` at `origin` and the given routes.
fn config(origin: &Origin, routes: &str) -> String {
    format!(
        "server: {{ shutdown_grace: 1s }}\nupstreams:\n  up: {{ targets: [{}] }}\nroutes:\n{routes}\n",
        origin.addr
    )
}

/// An echo origin and a gateway with `routes` in front of it.
async fn gateway(routes: &str) -> (Origin, Holdfast) {
    let origin = Origin::echo().await;
    let gw = Holdfast::start(&config(&origin, routes)).await;
    (origin, gw)
}

const SEED: &str = r#"  - name: ai-poll
    match: { path: /ai/poll, methods: [POST] }
    map:
      request:
        - rename: { from: body.inputText, to: body.user_input }
        - rename: { from: body.requirement, to: body.context }
    upstream: up"#;

/// POSTs `body` to `path` as `content-type: application/json`.
async fn post_json(
    client: &reqwest::Client,
    gw: &Holdfast,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    client
        .post(gw.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request")
}

/// A problem+json answer: its status, its type (`urn:holdfast:problem:{kind}`), its title and
/// how its detail starts.
struct Problem {
    status: u16,
    kind: &'static str,
    title: &'static str,
    detail: &'static str,
}

const INVALID_JSON: Problem = Problem {
    status: 400,
    kind: "invalid-json",
    title: "Invalid JSON body",
    detail: "the body is not valid JSON",
};

const MAPPING_FAILED: Problem = Problem {
    status: 400,
    kind: "mapping-failed",
    title: "Request mapping failed",
    detail: "",
};

const UPSTREAM_MAPPING_FAILED: Problem = Problem {
    status: 502,
    kind: "upstream-mapping-failed",
    title: "Bad gateway",
    detail: "",
};

/// Checks that `response` is the problem `want`; every failure names `case`.
async fn assert_problem(case: &str, response: reqwest::Response, want: &Problem) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = response
        .json()
        .await
        .unwrap_or_else(|e| panic!("{case}: problem+json body: {e}"));
    assert_eq!(status, want.status, "{case}: {body}");
    assert_eq!(content_type, "application/problem+json", "{case}");
    assert_eq!(
        body["type"],
        format!("urn:holdfast:problem:{}", want.kind),
        "{case}: {body}"
    );
    assert_eq!(body["title"], want.title, "{case}: {body}");
    assert_eq!(body["status"], want.status, "{case}: {body}");
    let text = body["detail"].as_str().unwrap_or_default();
    assert!(
        text.starts_with(want.detail),
        "{case}: detail {text:?} should start with {:?}",
        want.detail
    );
}

/// Splits a raw HTTP/1.1 answer into its status, header block and body.
fn split(raw: &str) -> (u16, String, String) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// Sends `request` as raw bytes and checks the answer has `status` and a JSON body of type
/// `urn:holdfast:problem:{kind}`; returns its (lowercased) head and that body. Every failure
/// names `case`.
async fn raw_problem(
    case: &str,
    gw: &Holdfast,
    request: &[u8],
    status: u16,
    kind: &str,
) -> (String, Value) {
    let raw = raw_request(gw.addr, request, Duration::from_secs(5)).await;
    let (got, head, body) = split(&raw);
    assert_eq!(got, status, "{case}: {raw}");
    let body: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{case}: problem json: {e}\n{raw}"));
    assert_eq!(
        body["type"],
        format!("urn:holdfast:problem:{kind}"),
        "{case}: {body}"
    );
    (head, body)
}

/// A chunked request in chunks of at most 16 KiB.
fn chunked(method: &str, path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nhost: gw.test\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(16 * 1024) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// The upstream received `body`, framed by a Content-Length of its length.
fn assert_received(case: &str, seen: &Seen, body: &[u8]) {
    assert_eq!(&seen.body[..], body, "{case}");
    assert_eq!(
        seen.header("content-length"),
        Some(body.len().to_string().as_str()),
        "{case}"
    );
}

async fn failures(gw: &Holdfast, route: &str) -> f64 {
    gw.metric(&format!(
        r#"holdfast_mapping_failures_total{{route="{route}"}}"#
    ))
    .await
    .unwrap_or(0.0)
}

/// Waits until each route's mapping-failure counter reads its number.
async fn failures_reach(gw: &Holdfast, want: &[(&str, f64)]) {
    eventually(
        Duration::from_secs(5),
        &format!("mapping failures counted: {want:?}"),
        async || {
            for (route, count) in want {
                if failures(gw, route).await != *count {
                    return false;
                }
            }
            true
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_example_end_to_end() {
    let (origin, gw) = gateway(SEED).await;
    let client = reqwest::Client::new();
    for round in 0..2 {
        // Twice on one keep-alive connection: the first exchange ended cleanly.
        let response = post_json(
            &client,
            &gw,
            "/ai/poll",
            r#"{"inputText": "Hello", "requirement": "new data"}"#,
        )
        .await;
        assert_eq!(response.status(), 200, "round {round}");
        let echo: Value = response.json().await.expect("echo");
        assert_eq!(
            echo["body"], r#"{"user_input":"Hello","context":"new data"}"#,
            "round {round}"
        );
        assert_eq!(echo["uri"], "/ai/poll", "round {round}");
    }
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    assert_received(
        "the first round",
        &seen[0],
        br#"{"user_input":"Hello","context":"new data"}"#,
    );
    assert_eq!(seen[0].header("transfer-encoding"), None);
    assert_eq!(seen[0].header("content-type"), Some("application/json"));

    // A chunked request body reaches the upstream rewritten, with a Content-Length.
    let raw = raw_request(
        gw.addr,
        &chunked(
            "POST",
            "/ai/poll",
            "application/json",
            br#"{"inputText": "Hi", "requirement": "more"}"#,
        ),
        Duration::from_secs(5),
    )
    .await;
    let (status, _, _) = split(&raw);
    assert_eq!(status, 200, "{raw}");
    let seen = origin.seen();
    let last = seen.last().expect("seen");
    assert_received(
        "the chunked request",
        last,
        br#"{"user_input":"Hi","context":"more"}"#,
    );
    assert_eq!(last.header("transfer-encoding"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_query_path_and_method_are_rewritten() {
    let (_origin, gw) = gateway(
        r#"  - name: items
    match: { path: "/users/{id}/items", methods: [GET] }
    map:
      request:
        - set: { to: header.x-api, value: v1 }
        - remove: header.x-debug
        - rename: { from: query.q, to: query.search }
        - append: { to: query.tag, value: "a b&c/✓" }
        - set: { to: path, value: "/v2/accounts/{id}/items" }
        - set: { to: method, value: POST }
    upstream: up"#,
    )
    .await;
    let response = reqwest::Client::new()
        .get(gw.url("/users/7/items?q=a&x=1&q=b%20c"))
        .header("x-debug", "1")
        .header("x-keep", "yes")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.expect("echo");
    assert_eq!(echo["method"], "POST");
    assert_eq!(
        echo["uri"],
        "/v2/accounts/7/items?search=a&x=1&search=b+c&tag=a+b%26c%2F%E2%9C%93"
    );
    assert_eq!(echo["headers"]["x-api"], "v1");
    assert_eq!(echo["headers"]["x-keep"], "yes");
    assert!(echo["headers"].get("x-debug").is_none(), "{echo}");

    // A query no rule changed keeps its exact encoding while the path is rewritten.
    let response = reqwest::Client::new()
        .get(gw.url("/users/9/items?z=%7E&y"))
        .send()
        .await
        .expect("request");
    let echo: Value = response.json().await.expect("echo");
    assert_eq!(
        echo["uri"],
        "/v2/accounts/9/items?z=%7E&y=&tag=a+b%26c%2F%E2%9C%93"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_rule_rewrites_the_upstream_json_and_keeps_the_status() {
    let origin = Origin::start(
        Router::new()
            .route(
                "/answer",
                get(|| async {
                    (
                        StatusCode::CREATED,
                        [("content-type", "application/json"), ("x-secret", "s3")],
                        r#"{"output":"42","other":1}"#,
                    )
                }),
            )
            .route(
                "/text",
                get(|| async {
                    (
                        [("content-type", "text/plain"), ("x-secret", "s3")],
                        "output stays",
                    )
                }),
            ),
    )
    .await;
    let gw = Holdfast::start(&config(
        &origin,
        r#"  - name: answer
    match: { prefix: / }
    map:
      response:
        - rename: { from: body.output, to: body.answer }
        - remove: header.x-secret
    upstream: up"#,
    ))
    .await;
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let response = client
            .get(gw.url("/answer"))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 201);
        assert!(response.headers().get("x-secret").is_none());
        assert!(response.headers().get("content-length").is_none());
        let body: Value = response.json().await.expect("json");
        assert_eq!(body, json!({"other": 1, "answer": "42"}));
    }
    // The rules read JSON: the upstream is not asked for a compressed answer.
    assert_eq!(origin.seen()[0].header("accept-encoding"), None);

    // Not JSON: the body passes untouched, header rules still apply.
    let response = client.get(gw.url("/text")).send().await.expect("request");
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-secret").is_none());
    assert_eq!(response.text().await.expect("text"), "output stays");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_is_not_json_is_a_400_and_never_proxied() {
    let (origin, gw) = gateway(SEED).await;
    let client = reqwest::Client::new();
    for (case, body) in [
        ("a cut-short object", r#"{"inputText": "#),
        ("a bare word", "hello"),
        ("a trailing brace", "{\"a\":1}}"),
    ] {
        let response = post_json(&client, &gw, "/ai/poll", body).await;
        assert_problem(case, response, &INVALID_JSON).await;
    }
    assert_eq!(origin.count(), 0);
    failures_reach(&gw, &[("ai-poll", 3.0)]).await;

    // Not JSON by its content type: passed through untouched (the route does not refuse it).
    let response = client
        .post(gw.url("/ai/poll"))
        .header("content-type", "text/plain")
        .body("inputText")
        .send()
        .await
        .expect("request");
    let echo: Value = response.json().await.expect("echo");
    assert_eq!(echo["body"], "inputText");
    assert_eq!(origin.seen()[0].header("content-length"), Some("9"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_limit_is_a_413_declared_or_streamed() {
    let (origin, gw) = gateway(&format!("{SEED}\n    max_body: 1KiB")).await;
    let big = format!(r#"{{"inputText": "{}"}}"#, "x".repeat(2000));
    let response = post_json(&reqwest::Client::new(), &gw, "/ai/poll", big.clone()).await;
    assert_problem(
        "declared",
        response,
        &Problem {
            status: 413,
            kind: "body-too-large",
            title: "Payload too large",
            detail: "the body is larger than the limit of 1024 bytes",
        },
    )
    .await;
    // Streamed without a declared length: refused once the bytes pass the limit.
    let (head, _) = raw_problem(
        "streamed",
        &gw,
        &chunked("POST", "/ai/poll", "application/json", big.as_bytes()),
        413,
        "body-too-large",
    )
    .await;
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    assert_eq!(origin.count(), 0);
    failures_reach(&gw, &[("ai-poll", 2.0)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_body_over_64_kib_needs_a_content_length() {
    let (origin, gw) = gateway(SEED).await;
    let big = format!(r#"{{"inputText": "{}"}}"#, "x".repeat(100_000));
    raw_problem(
        "chunked",
        &gw,
        &chunked("POST", "/ai/poll", "application/json", big.as_bytes()),
        411,
        "length-required",
    )
    .await;
    assert_eq!(origin.count(), 0);
    // The same body with its length declared goes through.
    let response = post_json(&reqwest::Client::new(), &gw, "/ai/poll", big).await;
    assert_eq!(response.status(), 200);
    let expected = format!(r#"{{"user_input":"{}"}}"#, "x".repeat(100_000));
    assert_eq!(&origin.seen()[0].body[..], expected.as_bytes());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_nested_ten_thousand_levels_is_a_400_and_the_gateway_lives_on() {
    let (origin, gw) = gateway(SEED).await;
    let client = reqwest::Client::new();
    for (case, deep) in [
        (
            "10 000 nested arrays",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
        ),
        (
            "10 000 nested objects",
            format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000)),
        ),
    ] {
        let response = post_json(&client, &gw, "/ai/poll", deep).await;
        let want = Problem {
            detail: "the body is not valid JSON: recursion limit exceeded",
            ..INVALID_JSON
        };
        assert_problem(case, response, &want).await;
    }
    assert_eq!(origin.count(), 0);
    let response = post_json(&client, &gw, "/ai/poll", r#"{"inputText": "still here"}"#).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_thousand_element_array_is_mapped() {
    let (origin, gw) = gateway(SEED).await;
    let items: Vec<u32> = (0..100_000).collect();
    let body = json!({"inputText": "many", "items": items}).to_string();
    assert!(body.len() > 64 * 1024);
    let response = post_json(&reqwest::Client::new(), &gw, "/ai/poll", body).await;
    assert_eq!(response.status(), 200);
    let seen = origin.seen();
    let sent: Value = serde_json::from_slice(&seen[0].body).expect("json");
    assert_eq!(sent["user_input"], "many");
    assert_eq!(sent["items"].as_array().map(Vec::len), Some(100_000));
    assert_eq!(sent["items"][99_999], 99_999);
    assert_eq!(
        seen[0].header("content-length"),
        Some(seen[0].body.len().to_string().as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_with_invalid_percent_encoding_is_a_400() {
    let (origin, gw) = gateway(
        r#"  - name: search
    match: { path: /search }
    map:
      request:
        - rename: { from: query.q, to: query.search }
    upstream: up"#,
    )
    .await;
    for query in ["q=%zz", "q=%4", "q=%FF"] {
        let request =
            format!("GET /search?{query} HTTP/1.1\r\nhost: gw.test\r\nconnection: close\r\n\r\n");
        let (head, body) = raw_problem(query, &gw, request.as_bytes(), 400, "invalid-query").await;
        assert!(
            head.contains("content-type: application/problem+json"),
            "{query}: {head}"
        );
        assert_eq!(body["title"], "Invalid query string", "{query}: {body}");
    }
    assert_eq!(origin.count(), 0);
    failures_reach(&gw, &[("search", 3.0)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_template_with_a_missing_source_fails_only_when_required() {
    let (origin, gw) = gateway(
        r#"  - name: required
    match: { path: /required }
    map:
      request:
        - set: { to: header.x-page, value: "page-{query.page}", required: true }
    upstream: up
  - name: optional
    match: { path: /optional }
    map:
      request:
        - set: { to: header.x-page, value: "page-{query.page}" }
    upstream: up"#,
    )
    .await;
    let client = reqwest::Client::new();
    let response = client
        .get(gw.url("/required"))
        .send()
        .await
        .expect("request");
    let want = Problem {
        detail: "map.request[0] (set header.x-page): `query.page` is missing",
        ..MAPPING_FAILED
    };
    assert_problem("/required without the page", response, &want).await;
    assert_eq!(origin.count(), 0);

    let response = client
        .get(gw.url("/optional"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.expect("echo");
    assert!(echo["headers"].get("x-page").is_none(), "{echo}");
    let response = client
        .get(gw.url("/required?page=2"))
        .send()
        .await
        .expect("request");
    let echo: Value = response.json().await.expect("echo");
    assert_eq!(echo["headers"]["x-page"], "page-2");
    failures_reach(&gw, &[("required", 1.0), ("optional", 0.0)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_rule_producing_dot_segments_is_refused() {
    let (origin, gw) = gateway(
        r#"  - name: files
    match: { path: "/files/{name}/meta" }
    map:
      request:
        - set: { to: path.name, from: header.x-name }
    upstream: up"#,
    )
    .await;
    let client = reqwest::Client::new();
    for value in ["..", "."] {
        let response = client
            .get(gw.url("/files/a/meta"))
            .header("x-name", value)
            .send()
            .await
            .expect("request");
        let want = Problem {
            detail: "map.request[0] (set path.name ← header.x-name): the rewritten path holds a `.` or `..` segment",
            ..MAPPING_FAILED
        };
        assert_problem(&format!("x-name: {value}"), response, &want).await;
    }
    assert_eq!(origin.count(), 0);
    // A value with a slash stays one segment.
    let response = client
        .get(gw.url("/files/a/meta"))
        .header("x-name", "../admin")
        .send()
        .await
        .expect("request");
    let echo: Value = response.json().await.expect("echo");
    assert_eq!(echo["uri"], "/files/..%2Fadmin/meta");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_with_crlf_never_reaches_a_header() {
    let origin = Origin::echo().await;
    let gw = Holdfast::start(&format!(
        r#"server: {{ shutdown_grace: 1s }}
auth:
  main:
    jwt: {{ issuer: https://id.test, audiences: [holdfast], secret: "{SECRET}" }}
upstreams:
  up: {{ targets: [{}] }}
routes:
  - name: ai-poll
    match: {{ path: /ai/poll, methods: [POST] }}
    auth: {{ provider: main }}
    map:
      request:
        - rename: {{ from: body.inputText, to: body.user_input }}
        - set: {{ to: header.x-user-id, from: claim.sub }}
    upstream: up
"#,
        origin.addr
    ))
    .await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let token = |sub: &str| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": sub, "iss": "https://id.test", "aud": "holdfast", "iat": now - 10, "exp": now + 600}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("sign")
    };
    let client = reqwest::Client::new();
    let response = client
        .post(gw.url("/ai/poll"))
        .bearer_auth(token("alice\r\nx-admin: 1"))
        .header("content-type", "application/json")
        .body(r#"{"inputText": "Hello"}"#)
        .send()
        .await
        .expect("request");
    let want = Problem {
        detail: "map.request[1] (set header.x-user-id ← claim.sub): the value for `header.x-user-id` holds a control character",
        ..MAPPING_FAILED
    };
    assert_problem("a sub claim with CRLF", response, &want).await;
    assert_eq!(origin.count(), 0);

    // The seed's example with its claim: the upstream gets both.
    let response = client
        .post(gw.url("/ai/poll"))
        .bearer_auth(token("alice"))
        .header("content-type", "application/json")
        .body(r#"{"inputText": "Hello"}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.expect("echo");
    assert_eq!(echo["headers"]["x-user-id"], "alice");
    assert_eq!(echo["body"], r#"{"user_input":"Hello"}"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_on_another_target_sends_the_mapped_body_again() {
    let origin = Origin::echo().await;
    let dead = holdfast_tests::free_port();
    let gw = Holdfast::start(&format!(
        "server: {{ shutdown_grace: 1s }}\nupstreams:\n  up: {{ targets: [127.0.0.1:{dead}, {}] }}\nroutes:\n{SEED}\n",
        origin.addr
    ))
    .await;
    let client = reqwest::Client::new();
    let long = "y".repeat(80_000);
    for i in 0..4 {
        // Small and over 64 KiB, so both ways of handing the body to Pingora are retried.
        let text = if i % 2 == 0 { "short" } else { long.as_str() };
        let response = post_json(
            &client,
            &gw,
            "/ai/poll",
            json!({"inputText": text}).to_string(),
        )
        .await;
        assert_eq!(response.status(), 200, "request {i}");
        let seen = origin.seen();
        let last = seen.last().expect("seen");
        assert_received(
            &format!("request {i}"),
            last,
            json!({"user_input": text}).to_string().as_bytes(),
        );
    }
    assert_eq!(origin.count(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_expecting_100_continue_gets_it_before_the_body_is_read() {
    let (origin, gw) = gateway(SEED).await;
    let body = r#"{"inputText": "Hello"}"#;
    let raw = raw_request(
        gw.addr,
        format!(
            "POST /ai/poll HTTP/1.1\r\nhost: gw.test\r\ncontent-type: application/json\r\ncontent-length: {}\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        raw.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 "),
        "{raw}"
    );
    let seen = origin.seen();
    assert_eq!(&seen[0].body[..], br#"{"user_input":"Hello"}"#);
    assert_eq!(seen[0].header("expect"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn response_mapping_of_large_broken_and_bodiless_answers() {
    let origin = Origin::start(
        Router::new()
            .route(
                "/large",
                get(|| async {
                    let items: Vec<u32> = (0..50_000).collect();
                    axum::Json(json!({"output": items, "keep": true}))
                }),
            )
            .route(
                "/broken",
                get(|| async { ([("content-type", "application/json")], r#"{"output": "#) }),
            )
            .route(
                "/empty",
                get(|| async { (StatusCode::NO_CONTENT, [("x-secret", "s3")]) }),
            )
            .route(
                "/gzip",
                get(|| async {
                    (
                        [
                            ("content-type", "application/json"),
                            ("content-encoding", "gzip"),
                        ],
                        "not really gzip",
                    )
                }),
            )
            .route("/strict/empty", get(|| async { StatusCode::NO_CONTENT }))
            .route(
                "/strict/json",
                get(|| async { axum::Json(json!({"output": 1})) }),
            ),
    )
    .await;
    let gw = Holdfast::start(&config(
        &origin,
        r#"  - name: answers
    match: { prefix: / }
    map:
      response:
        - rename: { from: body.output, to: body.answer }
        - remove: header.x-secret
    upstream: up
  - name: strict
    match: { prefix: /strict }
    map:
      response:
        - copy: { from: header.x-trace, to: header.x-trace-id, required: true }
    upstream: up"#,
    ))
    .await;
    let client = reqwest::Client::new();
    let response = client.get(gw.url("/large")).send().await.expect("request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["answer"].as_array().map(Vec::len), Some(50_000));
    assert_eq!(body["keep"], true);
    assert!(body.get("output").is_none());

    // A body that turns out not to be JSON is never delivered unmapped: when the status is
    // already sent, the answer is cut short.
    // Pingora filters a small answer's header and body together: then the client gets a 502.
    let response = client.get(gw.url("/broken")).send().await.expect("request");
    if response.status() == 200 {
        assert!(response.bytes().await.is_err(), "a cut-short answer");
    } else {
        assert_eq!(response.status(), 502);
        // The connection is not reused after a failed proxy attempt, and the answer says so:
        // a client would otherwise send its next request onto a closing connection.
        assert_eq!(
            response.headers().get("connection").map(|v| v.as_bytes()),
            Some(&b"close"[..])
        );
        let body = response.text().await.expect("body");
        assert!(!body.contains("output"), "{body}");
    }
    failures_reach(&gw, &[("answers", 1.0)]).await;

    // No body: header rules only.
    let response = client.get(gw.url("/empty")).send().await.expect("request");
    assert_eq!(response.status(), 204);
    assert!(response.headers().get("x-secret").is_none());
    let response = client.head(gw.url("/large")).send().await.expect("request");
    assert_eq!(response.status(), 200);

    // Known from the header alone: a 502 problem in place of the upstream's answer.
    for (path, detail) in [
        (
            "/gzip",
            "the upstream's response: the body is not valid JSON: the body is compressed",
        ),
        (
            "/strict/json",
            "the upstream's response: map.response[0] (copy header.x-trace → header.x-trace-id): `header.x-trace` is missing",
        ),
    ] {
        let response = client.get(gw.url(path)).send().await.expect("request");
        let want = Problem {
            detail,
            ..UPSTREAM_MAPPING_FAILED
        };
        assert_problem(path, response, &want).await;
    }
    let response = client
        .get(gw.url("/strict/empty"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["content-length"], "0");
    failures_reach(&gw, &[("answers", 2.0), ("strict", 2.0)]).await;

    // The gateway still answers on new connections.
    let response = client.get(gw.url("/large")).send().await.expect("request");
    assert_eq!(response.status(), 200);
}
