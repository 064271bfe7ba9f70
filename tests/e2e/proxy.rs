//! Proxying: routing by host, method and path; forwarding headers; the gateway's own answers
//! (404, 405, 502, 504, 431, ambiguous framing); retries, health checks and streaming.

use axum::routing::get;
use axum::Router;
use holdfast_tests::{eventually, raw_request, Holdfast, Origin};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn config(upstreams: &str, routes: &str) -> String {
    format!("server: {{ shutdown_grace: 1s }}\nupstreams:\n{upstreams}\nroutes:\n{routes}\n")
}

async fn problem(response: reqwest::Response) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    let body: Value = response.json().await.expect("problem+json body");
    (status, content_type, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn proxies_with_forwarding_headers_and_request_id() {
    let origin = Origin::echo().await;
    let gw = Holdfast::start(&config(
        &format!("  api: {{ targets: [{}] }}", origin.addr),
        "  - { name: api, match: { prefix: /api }, upstream: api }",
    ))
    .await;
    let client = reqwest::Client::new();
    let response = client
        .post(gw.url("/api/items?x=1&x=2"))
        .body("hello")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let generated = response
        .headers()
        .get("x-request-id")
        .expect("x-request-id")
        .to_str()
        .expect("ascii")
        .to_owned();
    let echo: Value = response.json().await.expect("json");
    assert_eq!(echo["uri"], "/api/items?x=1&x=2");
    assert_eq!(echo["body"], "hello");
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "http");
    assert_eq!(echo["headers"]["x-request-id"], generated.as_str());

    let response = client
        .get(gw.url("/api"))
        .header("x-request-id", "abc-123")
        .header("x-forwarded-for", "10.0.0.9")
        .send()
        .await
        .expect("request");
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let echo: Value = response.json().await.expect("json");
    assert_eq!(echo["headers"]["x-request-id"], "abc-123");
    assert_eq!(echo["headers"]["x-forwarded-for"], "10.0.0.9, 127.0.0.1");

    // Counted before the answers went out: a scrape right after them sees both, no waiting.
    let metrics = gw.metrics().await;
    for (sample, count) in [
        (
            r#"holdfast_http_requests_total{code="200",method="POST",route="api"}"#,
            1.0,
        ),
        (
            r#"holdfast_http_requests_total{code="200",method="GET",route="api"}"#,
            1.0,
        ),
        (
            r#"holdfast_upstream_requests_total{code="200",upstream="api"}"#,
            2.0,
        ),
    ] {
        assert_eq!(
            holdfast_tests::metric_value(&metrics, sample),
            Some(count),
            "{sample}\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_all_drops_every_header_with_an_underscore() {
    let origin = Origin::echo().await;
    let gw = Holdfast::start(&format!(
        "limits: {{ headers_with_underscores: drop_all }}\n{}",
        config(
            &format!("  api: {{ targets: [{}] }}", origin.addr),
            "  - { name: api, match: { prefix: /api }, upstream: api }",
        )
    ))
    .await;
    let answer = raw_request(
        gw.addr,
        b"GET /api HTTP/1.1\r\nHost: x\r\nX_Custom: 1\r\nX-Other_Thing: 2\r\nX-Plain: 3\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let seen = origin.seen();
    let headers = &seen.last().expect("proxied").headers;
    assert!(
        headers.iter().all(|(name, _)| !name.contains('_')),
        "{headers:?}"
    );
    assert_eq!(seen[0].header("x-plain"), Some("3"));
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_by_host_method_and_pattern() {
    let a = Origin::echo().await;
    let b = Origin::echo().await;
    let gw = Holdfast::start(&config(
        &format!(
            "  a: {{ targets: [{}] }}\n  b: {{ targets: [{}] }}",
            a.addr, b.addr
        ),
        r#"  - { name: users, match: { path: "/users/{id}", methods: [GET] }, upstream: a }
  - { name: special, match: { path: "/users/{id}", host: special.test }, upstream: b }"#,
    ))
    .await;
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(gw.url("/users/7"))
            .send()
            .await
            .expect("get")
            .status(),
        200
    );
    assert_eq!(a.count(), 1);
    let response = client
        .get(gw.url("/users/7"))
        .header("host", "Special.Test:8080")
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(b.count(), 1);
    // The pattern takes one segment only.
    let (status, content_type, body) =
        problem(client.get(gw.url("/users/7/x")).send().await.expect("get")).await;
    assert_eq!(
        (status, content_type.as_str()),
        (404, "application/problem+json")
    );
    assert_eq!(
        body,
        json!({"type": "urn:holdfast:problem:not-found", "title": "Not Found", "status": 404, "detail": "no route matches GET /users/7/x"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_path_is_404_and_wrong_method_is_405_with_allow() {
    let origin = Origin::echo().await;
    let gw = Holdfast::start(&config(
        &format!("  api: {{ targets: [{}] }}", origin.addr),
        "  - { name: get-only, match: { path: /thing, methods: [GET, HEAD] }, upstream: api }",
    ))
    .await;
    let client = reqwest::Client::new();
    let (status, _, body) = problem(client.get(gw.url("/nope")).send().await.expect("get")).await;
    assert_eq!(status, 404);
    assert_eq!(body["detail"], "no route matches GET /nope");

    let response = client
        .delete(gw.url("/thing"))
        .send()
        .await
        .expect("delete");
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    let (status, content_type, body) = problem(response).await;
    assert_eq!(
        (status, content_type.as_str()),
        (405, "application/problem+json")
    );
    assert_eq!(
        body,
        json!({"type": "urn:holdfast:problem:method-not-allowed", "title": "Method Not Allowed", "status": 405, "detail": "this route does not accept DELETE; allowed: GET, HEAD"})
    );
    assert_eq!(
        origin.count(),
        0,
        "the upstream must not see refused requests"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_upstream_is_502() {
    let dead = holdfast_tests::free_port();
    let gw = Holdfast::start(&config(
        &format!("  dead: {{ targets: [127.0.0.1:{dead}] }}"),
        "  - { name: dead, match: { path: /dead }, upstream: dead }",
    ))
    .await;
    let (status, content_type, body) =
        problem(reqwest::get(gw.url("/dead")).await.expect("get")).await;
    assert_eq!(
        (status, content_type.as_str()),
        (502, "application/problem+json")
    );
    assert_eq!(
        body,
        json!({"type": "urn:holdfast:problem:upstream-failed", "title": "Bad Gateway", "status": 502, "detail": "upstream `dead` refused or dropped the connection"})
    );
    assert!(
        !body.to_string().contains(&dead.to_string()),
        "the answer must not leak the target address"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_upstream_is_504_after_its_timeout() {
    let origin = Origin::start(Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "too late"
        }),
    ))
    .await;
    let gw = Holdfast::start(&config(
        &format!("  slow: {{ targets: [{}], timeout: 300ms }}", origin.addr),
        "  - { name: slow, match: { path: /slow }, upstream: slow }",
    ))
    .await;
    let started = Instant::now();
    let (status, _, body) = problem(reqwest::get(gw.url("/slow")).await.expect("get")).await;
    assert_eq!(status, 504);
    assert_eq!(
        body,
        json!({"type": "urn:holdfast:problem:upstream-timeout", "title": "Gateway Timeout", "status": 504, "detail": "upstream `slow` did not answer in time"})
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "504 must come at the timeout, took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_failure_retries_another_target() {
    let origin = Origin::echo().await;
    let dead = holdfast_tests::free_port();
    let gw = Holdfast::start(&config(
        &format!("  pool: {{ targets: [127.0.0.1:{dead}, {}] }}", origin.addr),
        "  - { name: pool, match: { prefix: / }, upstream: pool }",
    ))
    .await;
    let client = reqwest::Client::new();
    for i in 0..6 {
        let response = client
            .post(gw.url(&format!("/n/{i}")))
            .body("not idempotent")
            .send()
            .await
            .expect("post");
        assert_eq!(
            response.status(),
            200,
            "request {i} must be retried on the live target"
        );
    }
    assert_eq!(origin.count(), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_health_check_takes_a_target_out_of_rotation() {
    let healthy = Origin::echo().await;
    let sick = Origin::start(
        Router::new()
            .route(
                "/healthz",
                get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "sick") }),
            )
            .fallback(holdfast_tests::origin::echo),
    )
    .await;
    let gw = Holdfast::start(&config(
        &format!(
            "  pool: {{ targets: [{}, {}], health_check: {{ path: /healthz, interval: 100ms }} }}",
            healthy.addr, sick.addr
        ),
        "  - { name: pool, match: { prefix: /work }, upstream: pool }",
    ))
    .await;
    eventually(Duration::from_secs(10), "one healthy target", async || {
        gw.metric(r#"holdfast_upstream_healthy_targets{upstream="pool"}"#)
            .await
            == Some(1.0)
    })
    .await;
    let sick_before = sick
        .seen()
        .iter()
        .filter(|s| s.uri.starts_with("/work"))
        .count();
    let client = reqwest::Client::new();
    for _ in 0..6 {
        assert_eq!(
            client
                .get(gw.url("/work"))
                .send()
                .await
                .expect("get")
                .status(),
            200
        );
    }
    let sick_after = sick
        .seen()
        .iter()
        .filter(|s| s.uri.starts_with("/work"))
        .count();
    assert_eq!(
        sick_after, sick_before,
        "the sick target must get no traffic"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn event_stream_passes_through_chunk_by_chunk() {
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let origin = Origin::start(Router::new().route(
        "/stream",
        get(move || {
            let gate = gate.clone();
            async move {
                let stream = futures_util::stream::unfold(0, move |step| {
                    let gate = gate.clone();
                    async move {
                        match step {
                            0 => Some((
                                Ok::<_, std::io::Error>(bytes::Bytes::from("data: first\n\n")),
                                1,
                            )),
                            1 => {
                                gate.notified().await;
                                Some((Ok(bytes::Bytes::from("data: second\n\n")), 2))
                            }
                            _ => None,
                        }
                    }
                });
                (
                    [("content-type", "text/event-stream")],
                    axum::body::Body::from_stream(stream),
                )
            }
        }),
    ))
    .await;
    let gw = Holdfast::start(&config(
        &format!("  ai: {{ targets: [{}] }}", origin.addr),
        "  - { name: stream, match: { path: /stream }, upstream: ai }",
    ))
    .await;
    let mut response = reqwest::get(gw.url("/stream")).await.expect("get");
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    // The second event is only produced after the first reached the client: a buffering proxy
    // would deadlock here and the timeout would fail the test.
    let first = tokio::time::timeout(Duration::from_secs(10), response.chunk())
        .await
        .expect("first chunk in time")
        .expect("chunk");
    assert_eq!(first.as_deref(), Some(&b"data: first\n\n"[..]));
    release.notify_one();
    let second = tokio::time::timeout(Duration::from_secs(10), response.chunk())
        .await
        .expect("second chunk")
        .expect("chunk");
    assert_eq!(second.as_deref(), Some(&b"data: second\n\n"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_header_block_is_431() {
    let origin = Origin::echo().await;
    let gw = Holdfast::start(&config(
        &format!("  api: {{ targets: [{}] }}", origin.addr),
        "  - { name: api, match: { prefix: / }, upstream: api }",
    ))
    .await;
    let big = "a".repeat(40 * 1024);
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let answer = raw_request(gw.addr, request.as_bytes(), Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert!(
        answer.contains(r#""detail":"the request head is larger than 32768 bytes""#),
        "{answer}"
    );
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n");
    let answer = raw_request(gw.addr, request.as_bytes(), Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert!(answer.contains("more than 100 headers"), "{answer}");
    assert_eq!(origin.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn content_length_with_transfer_encoding_is_refused_not_forwarded() {
    let origin = Origin::echo().await;
    let gw = Holdfast::start(&config(
        &format!("  api: {{ targets: [{}] }}", origin.addr),
        "  - { name: api, match: { prefix: / }, upstream: api }",
    ))
    .await;
    let request = b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let answer = raw_request(gw.addr, request, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.contains(r#""detail":"the request has both Content-Length and Transfer-Encoding""#),
        "{answer}"
    );
    assert_eq!(
        origin.count(),
        0,
        "the ambiguous request must not reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_endpoints() {
    let gw = Holdfast::start("routes: []\n").await;
    assert_eq!(
        reqwest::get(gw.admin_url("/healthz"))
            .await
            .expect("healthz")
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(gw.admin_url("/readyz"))
            .await
            .expect("readyz")
            .status(),
        200
    );
    let metrics = gw.metrics().await;
    for sample in [
        r#"holdfast_build_info{version="0.1.0"} 1"#,
        "holdfast_backplane_up 1",
        r#"holdfast_config_reloads_total{result="error"} 0"#,
    ] {
        assert!(
            metrics.contains(sample),
            "{sample} missing from:\n{metrics}"
        );
    }
}

/// Reads from `client` until `needle` has come (5 s at most); everything read.
async fn read_until(client: &mut tokio::net::TcpStream, needle: &[u8]) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.windows(needle.len()).any(|w| w == needle) {
        let n = tokio::time::timeout_at(deadline, client.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} within 5 s; got {seen:?}"))
            .expect("read");
        assert!(n > 0, "closed before {needle:?}; got {seen:?}");
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// An origin that switches protocols (`101`) and then answers every byte upper-cased, as a
/// WebSocket server would echo frames.
async fn upgrading_origin() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
                if stream.write_all(switch).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    let upper = buf[..n].to_ascii_uppercase();
                    if stream.write_all(&upper).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgraded_connection_carries_bytes_both_ways() {
    use tokio::io::AsyncWriteExt;
    let (origin, task) = upgrading_origin().await;
    // A tunnel outlives `body_timeout`: what follows a 101 is no request body.
    let gw = Holdfast::start(&format!(
        "limits: {{ body_timeout: 1s }}\n{}",
        config(
            &format!("  ws: {{ targets: [{origin}] }}"),
            "  - { name: ws, match: { prefix: /ws }, upstream: ws }",
        )
    ))
    .await;
    let mut client = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    client
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .expect("write");
    let head = read_until(&mut client, b"\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // After the switch, what the client sends is the upgraded protocol's, not a next request:
    // it must reach the origin, and the origin's bytes must come back.
    client.write_all(b"hello").await.expect("write");
    read_until(&mut client, b"HELLO").await;
    for frame in ["one", "two", "three", "four"] {
        tokio::time::sleep(Duration::from_millis(400)).await;
        client.write_all(frame.as_bytes()).await.expect("write");
        let echoed = read_until(&mut client, frame.to_uppercase().as_bytes()).await;
        assert!(
            !echoed.contains("problem"),
            "an HTTP answer inside the tunnel: {echoed}"
        );
    }
    task.abort();
}
