//! Traffic protection: rate limits (burst, independent keys, trusted proxies, shared through
//! Redis and the local fallback), in-flight caps per key on held polls, and the size and time
//! limits — 414, 413 declared and streamed on a proxied route, 431, and a slowloris client that
//! gets 408 within the header timeout.

use holdfast_tests::{eventually, raw_request, Holdfast, Origin, RedisServer};
use serde_json::Value;
use std::time::{Duration, Instant};

async fn problem(response: reqwest::Response) -> Value {
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    response.json().await.expect("problem json")
}

fn routes(origin: &Origin, extra: &str) -> String {
    format!(
        r#"
server: {{ shutdown_grace: 1s }}
{extra}
upstreams:
  o: {{ targets: [{origin}] }}
routes:
  - name: burst
    match: {{ path: /burst }}
    rate_limits: [{{ key: ip, rate: 2/s }}]
    upstream: o
  - name: tenant
    match: {{ path: /tenant }}
    rate_limits: [{{ key: header.x-tenant, rate: 1/m }}, {{ key: ip, rate: 100/s, burst: 100 }}]
    upstream: o
  - name: byip
    match: {{ path: /byip }}
    rate_limits: [{{ key: ip, rate: 1/m, name: per-ip }}]
    upstream: o
"#,
        origin = origin.addr
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_over_the_limit_gets_429_then_passes_after_the_window() {
    let origin = Origin::echo().await;
    let gw = Holdfast::start(&routes(&origin, "")).await;
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let response = client.get(gw.url("/burst")).send().await.expect("get");
        assert_eq!(response.status(), 200);
    }
    let refused = client.get(gw.url("/burst")).send().await.expect("get");
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.headers()["ratelimit-policy"], "\"ip:2/s\";q=2;w=1");
    assert_eq!(refused.headers()["ratelimit"], "\"ip:2/s\";r=0;t=1");
    let body = problem(refused).await;
    assert_eq!(body["status"], 429);
    assert_eq!(body["type"], "urn:holdfast:problem:rate-limited");
    assert_eq!(body["title"], "Too Many Requests");
    assert_eq!(body["detail"], "rate limit `ip:2/s` exceeded; retry in 1s");
    assert_eq!(
        origin.count(),
        2,
        "the refused request never reached the origin"
    );
    eventually(Duration::from_secs(3), "the window to pass", async || {
        client
            .get(gw.url("/burst"))
            .send()
            .await
            .expect("get")
            .status()
            == 200
    })
    .await;
    // The refusal above, and any while `eventually` waited for the window.
    let rejections = gw
        .metric("holdfast_ratelimit_rejections_total{limit=\"ip:2/s\",route=\"burst\"}")
        .await;
    assert!(rejections.is_some_and(|n| n >= 1.0), "{rejections:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_keys_are_limited_independently_and_spoofed_forwarding_changes_nothing() {
    let origin = Origin::echo().await;
    let gw = Holdfast::start(&routes(&origin, "")).await;
    let client = reqwest::Client::new();
    let tenant = |name: &'static str| client.get(gw.url("/tenant")).header("x-tenant", name);
    assert_eq!(tenant("a").send().await.expect("get").status(), 200);
    assert_eq!(tenant("a").send().await.expect("get").status(), 429);
    assert_eq!(tenant("b").send().await.expect("get").status(), 200);
    assert_eq!(tenant("b").send().await.expect("get").status(), 429);
    // No trusted proxies: X-Forwarded-For from the (untrusted) peer is ignored.
    let spoofed = |xff: &'static str| client.get(gw.url("/byip")).header("x-forwarded-for", xff);
    assert_eq!(spoofed("1.1.1.1").send().await.expect("get").status(), 200);
    let refused = spoofed("2.2.2.2").send().await.expect("get");
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["ratelimit-policy"], "\"per-ip\";q=1;w=60");
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((59..=60).contains(&retry), "{retry}");
    assert_eq!(problem(refused).await["status"], 429);
    assert_eq!(
        gw.metric(
            "holdfast_ratelimit_rejections_total{limit=\"header.x-tenant:1/m\",route=\"tenant\"}"
        )
        .await,
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_proxy_forwarded_address_is_the_key() {
    let origin = Origin::echo().await;
    let gw = Holdfast::start(&routes(
        &origin,
        "trusted_proxies: [127.0.0.1/32, 10.0.0.0/8]",
    ))
    .await;
    let client = reqwest::Client::new();
    let via = |xff: &'static str| client.get(gw.url("/byip")).header("x-forwarded-for", xff);
    assert_eq!(via("1.1.1.1").send().await.expect("get").status(), 200);
    assert_eq!(via("1.1.1.1").send().await.expect("get").status(), 429);
    // The right-most untrusted address counts; what the client prepended does not.
    assert_eq!(
        via("9.9.9.9, 1.1.1.1, 10.0.0.7")
            .send()
            .await
            .expect("get")
            .status(),
        429
    );
    assert_eq!(
        via("1.1.1.1, 2.2.2.2").send().await.expect("get").status(),
        200
    );
}

fn shared(origin: &Origin, redis: &RedisServer) -> String {
    format!(
        r#"
server: {{ shutdown_grace: 1s }}
backplane: {{ redis: {{ url: "{redis}" }} }}
upstreams:
  o: {{ targets: [{origin}] }}
routes:
  - {{ name: r, match: {{ path: /r }}, rate_limits: [{{ key: ip, rate: 3/m }}], upstream: o }}
"#,
        redis = redis.url(),
        origin = origin.addr
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_backed_limit_is_shared_by_two_instances() {
    let origin = Origin::echo().await;
    let redis = RedisServer::start().await;
    let a = Holdfast::start(&shared(&origin, &redis)).await;
    let b = Holdfast::start(&shared(&origin, &redis)).await;
    three_pass_then_the_fourth_is_refused(&a, &b, "\"ip:3/m\";q=3;w=60").await;
}

/// A route's `ip: 3/m` limit (with `policy` as its `RateLimit-Policy`), shared by `a` and `b`
/// through Redis: three requests across the two pass, the fourth is refused and so is the next
/// on the other.
pub(crate) async fn three_pass_then_the_fourth_is_refused(
    a: &Holdfast,
    b: &Holdfast,
    policy: &str,
) {
    let client = reqwest::Client::new();
    for gw in [a, b, a] {
        assert_eq!(
            client.get(gw.url("/r")).send().await.expect("get").status(),
            200
        );
    }
    let refused = client.get(b.url("/r")).send().await.expect("get");
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["ratelimit-policy"], policy);
    assert_eq!(
        problem(refused).await["detail"],
        "rate limit `ip:3/m` exceeded; retry in 20s"
    );
    assert_eq!(
        client.get(a.url("/r")).send().await.expect("get").status(),
        429
    );
    assert_eq!(
        b.metric("holdfast_ratelimit_backend{backend=\"redis\"}")
            .await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_down_limits_fall_back_to_local_counts() {
    let origin = Origin::echo().await;
    let mut redis = RedisServer::start().await;
    let gw = Holdfast::start(&shared(&origin, &redis)).await;
    redis.kill();
    let client = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(
            client.get(gw.url("/r")).send().await.expect("get").status(),
            200
        );
    }
    let refused = client.get(gw.url("/r")).send().await.expect("get");
    assert_eq!(refused.status(), 429);
    assert_eq!(
        problem(refused).await["type"],
        "urn:holdfast:problem:rate-limited"
    );
    assert_eq!(
        gw.metric("holdfast_ratelimit_backend{backend=\"local\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(
        gw.metric("holdfast_ratelimit_backend{backend=\"redis\"}")
            .await,
        Some(0.0)
    );
    assert!(
        gw.metric("holdfast_ratelimit_fallbacks_total")
            .await
            .unwrap_or(0.0)
            >= 4.0
    );
    assert!(gw.log().contains("rate limits fall back"), "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn held_polls_per_key_are_capped() {
    let gw = Holdfast::start(
        r#"
server: { shutdown_grace: 1s }
routes:
  - name: poll
    match: { path: /poll }
    concurrency: { max_per_key: 1, key: header.x-client }
    longpoll: { channel: c, timeout: 10s }
"#,
    )
    .await;
    let client = reqwest::Client::new();
    let held = {
        let request = client.get(gw.url("/poll")).header("x-client", "a");
        tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
    };
    eventually(
        Duration::from_secs(5),
        "the first poll to be held",
        async || gw.metric("holdfast_longpoll_held{route=\"poll\"}").await == Some(1.0),
    )
    .await;
    let refused = client
        .get(gw.url("/poll"))
        .header("x-client", "a")
        .send()
        .await
        .expect("get");
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body = problem(refused).await;
    assert_eq!(body["type"], "urn:holdfast:problem:too-many-in-flight");
    assert_eq!(
        body["detail"],
        "this client already has 1 requests in flight on this route"
    );
    let other = client
        .get(gw.url("/poll?wait=0.2"))
        .header("x-client", "b")
        .send()
        .await
        .expect("get");
    assert_eq!(other.status(), 204);
    assert_eq!(
        gw.metric("holdfast_limit_rejections_total{kind=\"concurrency\",route=\"poll\"}")
            .await,
        Some(1.0)
    );
    held.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slowloris_client_gets_408_within_the_header_timeout_and_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Holdfast::start(
        r#"
server: { shutdown_grace: 1s }
limits: { header_timeout: 2s }
routes:
  - { name: p, match: { path: /p }, publish: { channel: c } }
"#,
    )
    .await;
    let stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for byte in b"GET /p HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaa\r\n" {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(6), reader.read_to_end(&mut answer))
        .await
        .expect("the connection is closed within the header timeout")
        .expect("read");
    let elapsed = started.elapsed();
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("content-type: application/problem+json"),
        "{answer}"
    );
    let body: Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).expect("body")).expect("json");
    assert_eq!(body["status"], 408);
    assert_eq!(body["type"], "urn:holdfast:problem:request-timeout");
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
    assert_eq!(
        gw.metric("holdfast_limit_rejections_total{kind=\"slow_client\",route=\"none\"}")
            .await,
        Some(1.0)
    );
    // A prompt client on a fresh connection is served as usual.
    let ok = raw_request(
        gw.addr,
        b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        Duration::from_secs(5),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 201"), "{ok}");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_url_headers_and_bodies_are_refused() {
    let origin = Origin::echo().await;
    let gw = Holdfast::start(&format!(
        r#"
server: {{ shutdown_grace: 1s }}
limits: {{ max_url_bytes: 1KiB, max_body: 1KiB, max_header_bytes: 4KiB }}
upstreams:
  o: {{ targets: [{origin}] }}
routes:
  - {{ name: api, match: {{ prefix: /api }}, upstream: o }}
"#,
        origin = origin.addr
    ))
    .await;
    let client = reqwest::Client::new();
    let long = client
        .get(gw.url(&format!("/api/{}", "x".repeat(1100))))
        .send()
        .await
        .expect("get");
    assert_eq!(long.status(), 414);
    let body = problem(long).await;
    assert_eq!(body["type"], "urn:holdfast:problem:uri-too-long");
    assert_eq!(
        body["detail"],
        "the request target is longer than 1024 bytes"
    );

    let declared = client
        .post(gw.url("/api/upload"))
        .body(vec![b'x'; 2000])
        .send()
        .await
        .expect("post");
    assert_eq!(declared.status(), 413);
    let body = problem(declared).await;
    assert_eq!(body["type"], "urn:holdfast:problem:body-too-large");
    assert_eq!(
        body["detail"],
        "the body is larger than this route's limit of 1024 bytes"
    );

    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..4).map(|_| Ok(vec![b'y'; 600])).collect();
    let streamed = client
        .post(gw.url("/api/upload"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("post chunked");
    assert_eq!(streamed.status(), 413);
    assert_eq!(
        problem(streamed).await["type"],
        "urn:holdfast:problem:body-too-large"
    );
    assert!(
        origin.seen().iter().all(|seen| seen.body.len() <= 1024),
        "no oversize body reached the origin whole"
    );

    let small = client
        .post(gw.url("/api/upload"))
        .body(vec![b'z'; 500])
        .send()
        .await
        .expect("post");
    assert_eq!(small.status(), 200);

    let headers = client
        .get(gw.url("/api/h"))
        .header("x-big", "b".repeat(5000))
        .send()
        .await
        .expect("get");
    assert_eq!(headers.status(), 431);
    assert_eq!(problem(headers).await["status"], 431);

    let metrics = gw.metrics().await;
    for (kind, route, count) in [
        ("url", "none", 1.0),
        ("body", "api", 2.0),
        ("header", "none", 1.0),
    ] {
        let sample =
            format!("holdfast_limit_rejections_total{{kind=\"{kind}\",route=\"{route}\"}}");
        assert_eq!(
            holdfast_tests::metric_value(&metrics, &sample),
            Some(count),
            "{sample}\n{metrics}"
        );
    }
}
