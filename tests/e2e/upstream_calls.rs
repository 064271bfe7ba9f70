//! Upstream calls the gateway makes itself (design.md §5): re-polling a short-polling upstream,
//! fan-in with `until`/`merge`/partial answers and cancellation, request coalescing, and async
//! jobs — against real upstream servers that count what they receive and notice when the
//! gateway hangs up on them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use holdfast_tests::{eventually, Holdfast, Origin};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!";

fn token(sub: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let claims = json!({"sub": sub, "iss": "https://id.test", "aud": "holdfast", "iat": now - 10, "exp": now + 600, "scope": "ai:read"});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// Counts requests, those in flight at once (and the most), and handlers dropped before they
/// finished — what an upstream sees when the gateway cancels its call.
#[derive(Default)]
struct Counters {
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    cancelled: AtomicUsize,
}

/// Held by a handler while it runs; dropped unfinished, it counts a cancellation.
struct Guard {
    counters: Arc<Counters>,
    finished: bool,
}

impl Guard {
    fn new(counters: &Arc<Counters>) -> Self {
        counters.calls.fetch_add(1, Ordering::SeqCst);
        let now = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counters.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self {
            counters: counters.clone(),
            finished: false,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.counters.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            self.counters.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// An upstream that answers `body` after `delay` (with `status`), counting everything.
async fn upstream(status: u16, delay: Duration, body: &'static str) -> (Origin, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let state = counters.clone();
    let router = Router::new()
        .fallback(move |State(counters): State<Arc<Counters>>| async move {
            let mut guard = Guard::new(&counters);
            tokio::time::sleep(delay).await;
            guard.finished = true;
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .expect("response")
        })
        .with_state(state);
    (Origin::start(router).await, counters)
}

fn gateway_config(upstreams: &[(&str, &Origin)], routes: &str) -> String {
    let upstreams: String = upstreams
        .iter()
        .map(|(name, origin)| format!("  {name}: {{ targets: [{}], timeout: 60s }}\n", origin.addr))
        .collect();
    format!(
        "server: {{ shutdown_grace: 1s }}\nauth:\n  main:\n    jwt: {{ issuer: https://id.test, audiences: [holdfast], secret: \"{SECRET}\" }}\nupstreams:\n{upstreams}routes:\n{routes}\n"
    )
}

async fn problem(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    assert_eq!(
        header(&response, "content-type"),
        "application/problem+json",
        "status {status}"
    );
    (status, response.json().await.expect("problem+json"))
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn repoll_turns_a_short_polling_upstream_into_one_long_poll() {
    // 204, 204, then data.
    let counters = Arc::new(Counters::default());
    let state = counters.clone();
    let sometimes = Origin::start(
        Router::new()
            .fallback(|State(counters): State<Arc<Counters>>| async move {
                let n = counters.calls.fetch_add(1, Ordering::SeqCst) + 1;
                if n <= 2 {
                    StatusCode::NO_CONTENT.into_response()
                } else {
                    Json(json!({"news": "ready", "attempt": n})).into_response()
                }
            })
            .with_state(state),
    )
    .await;
    let (never, never_counters) = upstream(204, Duration::ZERO, "").await;
    let gw = Holdfast::start(&gateway_config(
        &[("sometimes", &sometimes), ("never", &never)],
        "  - { name: news, match: { path: /news }, upstream: sometimes, repoll_on: [204], hold: 5s, backoff: 20ms }\n  - { name: never, match: { path: /never }, upstream: never, repoll_on: [204], hold: 600ms, backoff: { initial: 20ms, max: 100ms } }",
    ))
    .await;
    let client = reqwest::Client::new();
    let response = client.get(gw.url("/news?x=1")).send().await.expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), "application/json");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, json!({"news": "ready", "attempt": 3}));
    assert_eq!(counters.calls.load(Ordering::SeqCst), 3);
    assert!(sometimes.seen().iter().all(|seen| seen.uri == "/news?x=1"));

    let started = Instant::now();
    let response = client.get(gw.url("/never")).send().await.expect("get");
    assert_eq!(response.status(), 204);
    assert_eq!(header(&response, "cache-control"), "no-store");
    let held = started.elapsed();
    assert!(
        held >= Duration::from_millis(550) && held < Duration::from_secs(3),
        "{held:?}"
    );
    assert!(never_counters.calls.load(Ordering::SeqCst) >= 3);
    eventually(Duration::from_secs(5), "upstream metrics", async || {
        gw.metric(r#"holdfast_upstream_requests_total{code="204",upstream="sometimes"}"#)
            .await
            == Some(2.0)
            && gw
                .metric(r#"holdfast_upstream_requests_total{code="200",upstream="sometimes"}"#)
                .await
                == Some(1.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fanin_merges_field_by_field() {
    let (a, _) = upstream(
        200,
        Duration::ZERO,
        r#"{"a":1,"shared":{"x":1,"keep":true},"list":[1],"who":"a"}"#,
    )
    .await;
    let (b, _) = upstream(
        200,
        Duration::from_millis(100),
        r#"{"b":2,"shared":{"x":2,"y":3},"list":[2,3],"who":"b"}"#,
    )
    .await;
    let (arr1, _) = upstream(200, Duration::ZERO, "[1,2]").await;
    let (arr2, _) = upstream(200, Duration::ZERO, r#"[3,{"four":4}]"#).await;
    let (text, _) = upstream(200, Duration::ZERO, "plain words").await;
    let gw = Holdfast::start(&gateway_config(
        &[("a", &a), ("b", &b), ("arr1", &arr1), ("arr2", &arr2), ("text", &text)],
        r#"  - { name: by-name, match: { path: /by-name }, fanin: { upstreams: [a, b, text], merge: by_name } }
  - { name: deep, match: { path: /deep }, fanin: { upstreams: [a, b], merge: deep } }
  - { name: concat, match: { path: /concat }, fanin: { upstreams: [arr1, arr2], merge: concat } }
  - { name: first, match: { path: /first }, fanin: { upstreams: [b, a], merge: first, until: all } }"#,
    ))
    .await;
    let client = reqwest::Client::new();

    let response = client.get(gw.url("/by-name")).send().await.expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "holdfast-complete"), "true");
    assert_eq!(
        header(&response, "holdfast-upstreams"),
        "a=200, b=200, text=200"
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["a"]["a"], 1);
    assert_eq!(body["a"]["who"], "a");
    assert_eq!(body["b"]["b"], 2);
    assert_eq!(body["b"]["shared"], json!({"x": 2, "y": 3}));
    assert_eq!(body["text"], "plain words");
    assert_eq!(body.as_object().map(|o| o.len()), Some(3));

    let body: Value = client
        .get(gw.url("/deep"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(body["a"], 1);
    assert_eq!(body["b"], 2);
    assert_eq!(body["who"], "b", "the later upstream wins for scalars");
    assert_eq!(
        body["shared"],
        json!({"x": 2, "keep": true, "y": 3}),
        "objects merge"
    );
    assert_eq!(body["list"], json!([1, 2, 3]), "arrays concatenate");

    let body: Value = client
        .get(gw.url("/concat"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(body, json!([1, 2, 3, {"four": 4}]));

    let body: Value = client
        .get(gw.url("/first"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(body["who"], "b", "first in list order, not in time");
}

#[tokio::test(flavor = "multi_thread")]
async fn fanin_until_first_quorum_all_partial_and_failure() {
    let (fast, _) = upstream(200, Duration::ZERO, r#"{"fast":true}"#).await;
    let (slow, _) = upstream(200, Duration::from_millis(400), r#"{"slow":true}"#).await;
    let (failing, _) = upstream(500, Duration::ZERO, r#"{"error":"boom"}"#).await;
    let (hanging, hang) = upstream(200, Duration::from_secs(3600), "{}").await;
    let (bad, _) = upstream(200, Duration::ZERO, "{not json").await;
    let gw = Holdfast::start(&gateway_config(
        &[("fast", &fast), ("slow", &slow), ("failing", &failing), ("hanging", &hanging), ("bad", &bad)],
        r#"  - { name: first, match: { path: /first }, fanin: { upstreams: [hanging, slow, fast], until: first } }
  - { name: quorum, match: { path: /quorum }, fanin: { upstreams: [fast, failing, slow, hanging], until: { quorum: 2 } } }
  - { name: all-partial, match: { path: /all }, fanin: { upstreams: [fast, failing, slow] } }
  - { name: held, match: { path: /held }, fanin: { upstreams: [fast, hanging], hold: 500ms } }
  - { name: per-upstream, match: { path: /per }, fanin: { upstreams: [fast, { name: hanging, timeout: 300ms }] } }
  - { name: strict, match: { path: /strict }, fanin: { upstreams: [fast, failing], partial: false } }
  - { name: required, match: { path: /required }, fanin: { upstreams: [fast, { name: failing, required: true }], until: first } }
  - { name: down, match: { path: /down }, fanin: { upstreams: [failing, bad], merge: deep } }
  - { name: bad-json, match: { path: /bad-json }, fanin: { upstreams: [fast, bad], merge: deep } }"#,
    ))
    .await;
    let client = reqwest::Client::new();

    let started = Instant::now();
    let response = client.get(gw.url("/first")).send().await.expect("get");
    assert!(
        started.elapsed() < Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "holdfast-complete"), "true");
    assert_eq!(
        header(&response, "holdfast-upstreams"),
        "hanging=cancelled, slow=cancelled, fast=200"
    );
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({"fast": {"fast": true}})
    );
    // The losers' connections were closed: the hanging upstream saw its request go away.
    eventually(
        Duration::from_secs(5),
        "the losing call cancelled",
        async || hang.cancelled.load(Ordering::SeqCst) == 1,
    )
    .await;

    let response = client.get(gw.url("/quorum")).send().await.expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "holdfast-complete"), "true");
    assert_eq!(
        header(&response, "holdfast-upstreams"),
        "fast=200, failing=500, slow=200, hanging=cancelled"
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body,
        json!({"fast": {"fast": true}, "slow": {"slow": true}})
    );

    let response = client.get(gw.url("/all")).send().await.expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "holdfast-complete"), "false");
    assert_eq!(
        header(&response, "holdfast-upstreams"),
        "fast=200, failing=500, slow=200"
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body,
        json!({"fast": {"fast": true}, "slow": {"slow": true}})
    );

    let started = Instant::now();
    let response = client.get(gw.url("/held")).send().await.expect("get");
    assert!(started.elapsed() >= Duration::from_millis(450));
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "holdfast-complete"), "false");
    assert_eq!(
        header(&response, "holdfast-upstreams"),
        "fast=200, hanging=timeout"
    );

    let response = client.get(gw.url("/per")).send().await.expect("get");
    assert_eq!(header(&response, "holdfast-complete"), "false");
    assert_eq!(
        header(&response, "holdfast-upstreams"),
        "fast=200, hanging=timeout"
    );

    let response = client.get(gw.url("/strict")).send().await.expect("get");
    assert_eq!(
        header(&response, "holdfast-upstreams"),
        "fast=200, failing=500"
    );
    let (status, body) = problem(response).await;
    assert_eq!(status, 502);
    assert_eq!(body["type"], "urn:holdfast:problem:fanin-failed");
    assert_eq!(
        body["detail"],
        "only 1 of the 2 upstream answers needed came"
    );
    assert_eq!(body["upstreams"], json!({"fast": "200", "failing": "500"}));

    let (status, body) = problem(client.get(gw.url("/required")).send().await.expect("get")).await;
    assert_eq!(status, 502);
    assert_eq!(body["detail"], "required upstream `failing` failed");
    assert_eq!(body["upstreams"]["failing"], "500");

    // All failing, one of them with a body that is not JSON: 502 listing each outcome.
    let (status, body) = problem(client.get(gw.url("/down")).send().await.expect("get")).await;
    assert_eq!(status, 502);
    assert_eq!(body["title"], "Bad Gateway");
    assert_eq!(body["detail"], "no upstream answered successfully");
    assert_eq!(
        body["upstreams"],
        json!({"failing": "500", "bad": "invalid-json"})
    );

    // Invalid JSON under `merge: deep` is that upstream's failure, not a 500.
    let response = client.get(gw.url("/bad-json")).send().await.expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "holdfast-complete"), "false");
    assert_eq!(
        header(&response, "holdfast-upstreams"),
        "fast=200, bad=invalid-json"
    );
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({"fast": true})
    );

    eventually(Duration::from_secs(5), "fan-in metrics", async || {
        let metrics = gw.metrics().await;
        holdfast_tests::metric_value(
            &metrics,
            r#"holdfast_fanin_responses_total{result="partial",route="all-partial"}"#,
        ) == Some(1.0)
            && holdfast_tests::metric_value(
                &metrics,
                r#"holdfast_fanin_responses_total{result="complete",route="first"}"#,
            ) == Some(1.0)
            && holdfast_tests::metric_value(
                &metrics,
                r#"holdfast_fanin_responses_total{result="failed",route="down"}"#,
            ) == Some(1.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fanin_calls_are_cancelled_when_the_client_leaves() {
    let (one, one_counters) = upstream(200, Duration::from_secs(3600), "{}").await;
    let (two, two_counters) = upstream(200, Duration::from_secs(3600), "{}").await;
    let (never, _) = upstream(204, Duration::ZERO, "").await;
    let gw = Holdfast::start(&gateway_config(
        &[("one", &one), ("two", &two), ("never", &never)],
        "  - { name: dash, match: { path: /dash }, fanin: { upstreams: [one, two], hold: 30s } }\n  - { name: nothing, match: { path: /nothing }, fanin: { upstreams: [never], hold: 300ms, repoll_on: [204], backoff: 20ms } }",
    ))
    .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client");
    assert!(
        client.get(gw.url("/dash")).send().await.is_err(),
        "the client gives up"
    );
    eventually(
        Duration::from_secs(5),
        "both upstream calls cancelled",
        async || {
            one_counters.cancelled.load(Ordering::SeqCst) == 1
                && two_counters.cancelled.load(Ordering::SeqCst) == 1
        },
    )
    .await;
    eventually(Duration::from_secs(5), "client_gone counted", async || {
        gw.metric(r#"holdfast_fanin_responses_total{result="client_gone",route="dash"}"#)
            .await
            == Some(1.0)
    })
    .await;

    // Nothing ready before the hold ends: the timeout answer.
    let response = reqwest::get(gw.url("/nothing")).await.expect("get");
    assert_eq!(response.status(), 204);
    assert_eq!(header(&response, "holdfast-upstreams"), "never=timeout");
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_long_polls_share_one_upstream_request() {
    let (slow, counters) = upstream(200, Duration::from_secs(3), r#"{"v":1}"#).await;
    let gw = Holdfast::start(&gateway_config(
        &[("slow", &slow)],
        r#"  - { name: shared, match: { path: /shared }, upstream: slow, coalesce: { shared: true } }
  - { name: mine, match: { path: /mine }, auth: { provider: main }, upstream: slow, coalesce: true, vary: [accept-language] }
  - { name: cached, match: { path: /cached }, upstream: slow, cache: 2s, coalesce: true }"#,
    ))
    .await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(2000)
        .build()
        .expect("client");
    let mut polls = Vec::new();
    for _ in 0..1000 {
        let (client, url) = (client.clone(), gw.url("/shared?topic=a"));
        polls.push(tokio::spawn(async move {
            let response = client.get(url).send().await.expect("get");
            (
                response.status().as_u16(),
                response.text().await.expect("body"),
            )
        }));
    }
    for poll in polls {
        assert_eq!(poll.await.expect("join"), (200, r#"{"v":1}"#.to_owned()));
    }
    assert_eq!(
        counters.max_in_flight.load(Ordering::SeqCst),
        1,
        "one upstream request in flight"
    );
    let calls = counters.calls.load(Ordering::SeqCst);
    assert!(calls <= 2, "{calls} upstream calls for 1000 polls");
    eventually(Duration::from_secs(5), "coalesced metric", async || {
        gw.metric(r#"holdfast_coalesced_requests_total{route="shared"}"#)
            .await
            == Some((1000 - calls) as f64)
    })
    .await;

    // Per identity: alice twice shares one call, bob gets his own, and so does another language.
    let before = counters.calls.load(Ordering::SeqCst);
    let get = |who: &'static str, lang: &'static str| {
        let (client, url) = (client.clone(), gw.url("/mine"));
        tokio::spawn(async move {
            client
                .get(url)
                .bearer_auth(token(who))
                .header("accept-language", lang)
                .send()
                .await
                .expect("get")
                .status()
                .as_u16()
        })
    };
    let polls = [
        get("alice", "en"),
        get("alice", "en"),
        get("bob", "en"),
        get("alice", "fr"),
    ];
    for poll in polls {
        assert_eq!(poll.await.expect("join"), 200);
    }
    assert_eq!(counters.calls.load(Ordering::SeqCst) - before, 3);

    // A cached answer is served at once for `cache`.
    let before = counters.calls.load(Ordering::SeqCst);
    assert_eq!(
        client
            .get(gw.url("/cached"))
            .send()
            .await
            .expect("get")
            .status(),
        200
    );
    let started = Instant::now();
    assert_eq!(
        client
            .get(gw.url("/cached"))
            .send()
            .await
            .expect("get")
            .status(),
        200
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(counters.calls.load(Ordering::SeqCst) - before, 1);
}

/// An OpenAI-style chat-completions server that takes `delay` to answer.
async fn chat_completions(delay: Duration) -> Origin {
    Origin::start(Router::new().route(
        "/ai/jobs",
        post(move |Json(request): Json<Value>| async move {
            tokio::time::sleep(delay).await;
            let query = request["query"].as_str().unwrap_or("").to_owned();
            Json(json!({"choices": [{"message": {"role": "assistant", "content": format!("Updates for: {query}")}}]}))
        }),
    ).route(
        "/ai/poll",
        post(|Json(request): Json<Value>| async move {
            Json(json!({"choices": [{"message": {"content": format!("direct: {}", request["parameters"]["method"])}}]}))
        }),
    ))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_start_poll_expire_and_stay_private() {
    let ai = chat_completions(Duration::from_millis(800)).await;
    let (hanging, _) = upstream(200, Duration::from_secs(3600), "{}").await;
    let big = Origin::start(Router::new().fallback(|| async {
        let chunk = vec![b'x'; 1 << 20];
        let body = axum::body::Body::from_stream(futures_util::stream::iter(
            (0..50).map(move |_| Ok::<_, std::io::Error>(bytes::Bytes::from(chunk.clone()))),
        ));
        Response::builder()
            .header("content-type", "text/plain")
            .body(body)
            .expect("response")
    }))
    .await;
    let gw = Holdfast::start(&gateway_config(
        &[("ai", &ai), ("hanging", &hanging), ("big", &big)],
        r#"  - name: ai-poll
    match: { path: /ai/poll, methods: [POST] }
    auth: { provider: main, scopes: [ai:read] }
    upstream: ai
  - name: ai-jobs
    match: { prefix: /ai/jobs }
    auth: { provider: main, scopes: [ai:read] }
    job: { upstream: ai, ttl: 2s, timeout: 5s }
  - { name: busy, match: { prefix: /busy }, job: { upstream: hanging, max_running: 1 } }
  - { name: huge, match: { prefix: /huge }, job: { upstream: big } }"#,
    ))
    .await;
    let client = reqwest::Client::new();
    let alice = token("alice");
    let seed =
        json!({"query": "Get the most recent updates.", "parameters": {"method": "long_polling"}});

    // The seed's AI call, answered directly.
    let response = client
        .post(gw.url("/ai/poll"))
        .bearer_auth(&alice)
        .json(&seed)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "direct: \"long_polling\""
    );

    // …and as a job.
    let response = client
        .post(gw.url("/ai/jobs"))
        .bearer_auth(&alice)
        .json(&seed)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 202);
    let started: Value = response.json().await.expect("json");
    let id = started["job"].as_str().expect("job id").to_owned();
    assert_eq!(started["poll"], format!("/ai/jobs/{id}"));
    let poll_url = gw.url(&format!("/ai/jobs/{id}"));

    // Still running: a short hold ends in 204.
    let response = client
        .get(format!("{poll_url}?wait=0.1"))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("poll");
    assert_eq!(response.status(), 204);

    // Another identity does not see it; an unknown id is 404 too.
    let (status, body) = problem(
        client
            .get(&poll_url)
            .bearer_auth(token("mallory"))
            .send()
            .await
            .expect("poll"),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["type"], "urn:holdfast:problem:job-not-found");
    assert_eq!(
        body["detail"],
        format!("there is no job `{id}` for this caller")
    );
    let (status, body) = problem(
        client
            .get(gw.url("/ai/jobs/nope"))
            .bearer_auth(&alice)
            .send()
            .await
            .expect("poll"),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["detail"], "there is no job `nope` for this caller");

    // The poll holds until the result is there.
    let response = client
        .get(&poll_url)
        .bearer_auth(&alice)
        .send()
        .await
        .expect("poll");
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "holdfast-upstream-status"), "200");
    assert_eq!(header(&response, "content-type"), "application/json");
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Updates for: Get the most recent updates."
    );
    let seen = ai.seen();
    let job_call = seen
        .iter()
        .find(|s| s.uri == "/ai/jobs")
        .expect("the job's call");
    assert_eq!(job_call.method, "POST");
    assert_eq!(
        serde_json::from_slice::<Value>(&job_call.body).expect("json"),
        seed
    );
    assert_eq!(
        job_call.header("authorization"),
        None,
        "the credential is stripped"
    );
    // Pollable again until it expires, then 410.
    let response = client
        .get(&poll_url)
        .bearer_auth(&alice)
        .send()
        .await
        .expect("poll");
    assert_eq!(response.status(), 200);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (status, body) = problem(
        client
            .get(&poll_url)
            .bearer_auth(&alice)
            .send()
            .await
            .expect("poll"),
    )
    .await;
    assert_eq!(status, 410);
    assert_eq!(body["type"], "urn:holdfast:problem:job-expired");
    assert_eq!(
        body["detail"],
        format!("the result of job `{id}` has expired")
    );

    // Past max_running: 503 with Retry-After.
    let response = client
        .post(gw.url("/busy"))
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 202);
    let response = client
        .post(gw.url("/busy"))
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(header(&response, "retry-after"), "1");
    let (status, body) = problem(response).await;
    assert_eq!(status, 503);
    assert_eq!(body["type"], "urn:holdfast:problem:jobs-busy");
    assert_eq!(
        body["detail"],
        "this route already runs its maximum of 1 jobs; try again shortly"
    );

    // A 50 MiB answer over max_result (10 MiB) is stored as an error result.
    let response = client.post(gw.url("/huge")).send().await.expect("post");
    assert_eq!(response.status(), 202);
    let poll: Value = response.json().await.expect("json");
    let poll = poll["poll"].as_str().expect("poll").to_owned();
    let (status, body) = problem(client.get(gw.url(&poll)).send().await.expect("poll")).await;
    assert_eq!(status, 502);
    assert_eq!(body["type"], "urn:holdfast:problem:job-result-too-large");
    assert_eq!(body["detail"], "the answer of upstream `big` was larger than this route's max_result of 10485760 bytes; it was not kept");

    eventually(Duration::from_secs(5), "job gauges", async || {
        let metrics = gw.metrics().await;
        holdfast_tests::metric_value(&metrics, r#"holdfast_jobs{route="busy",state="running"}"#)
            == Some(1.0)
            && holdfast_tests::metric_value(
                &metrics,
                r#"holdfast_jobs{route="huge",state="failed"}"#,
            ) == Some(1.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn request_mapping_applies_to_routes_the_gateway_calls_itself() {
    let origin = Origin::echo().await;
    let config = format!(
        r#"
server: {{ shutdown_grace: 1s }}
upstreams:
  ai: {{ targets: [{origin}] }}
routes:
  - name: ai-poll
    match: {{ path: /ai/poll, methods: [POST] }}
    map:
      request:
        - rename: {{ from: body.inputText, to: body.user_input }}
        - set: {{ to: header.x-mapped, value: "yes" }}
    upstream: ai
    repoll_on: [204]
    hold: 2s
"#,
        origin = origin.addr
    );
    let gw = Holdfast::start(&config).await;
    let response = reqwest::Client::new()
        .post(gw.url("/ai/poll"))
        .json(&serde_json::json!({"inputText": "Hello"}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(&seen[0].body[..], br#"{"user_input":"Hello"}"#);
    assert_eq!(seen[0].header("x-mapped"), Some("yes"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_started_on_one_instance_is_polled_on_another_through_redis() {
    let redis = holdfast_tests::RedisServer::start().await;
    let ai = chat_completions(Duration::from_millis(700)).await;
    let config = gateway_config(
        &[("ai", &ai)],
        r#"  - name: ai-jobs
    match: { prefix: /ai/jobs }
    auth: { provider: main, scopes: [ai:read] }
    job: { upstream: ai, ttl: 2s, timeout: 5s }"#,
    )
    .replace(
        "server: {",
        &format!(
            "backplane: {{ redis: {{ url: \"{}\" }} }}\nserver: {{",
            redis.url()
        ),
    );
    let a = Holdfast::start(&config).await;
    let b = Holdfast::start(&config).await;
    let client = reqwest::Client::new();
    let alice = token("alice");
    let response = client
        .post(a.url("/ai/jobs"))
        .bearer_auth(&alice)
        .json(&json!({"query": "Get the most recent updates."}))
        .send()
        .await
        .expect("start on A");
    assert_eq!(response.status(), 202);
    let poll = response.json::<Value>().await.expect("json")["poll"]
        .as_str()
        .expect("poll")
        .to_owned();

    // On B, while A still runs it: held, then 204 at the client's wait.
    let response = client
        .get(b.url(&format!("{poll}?wait=0.1")))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("poll on B");
    assert_eq!(response.status(), 204);
    // Another identity does not see it on B either.
    let (status, body) = problem(
        client
            .get(b.url(&poll))
            .bearer_auth(token("bob"))
            .send()
            .await
            .expect("bob"),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    // Held on B until A finishes: 200 with the upstream's answer.
    let response = client
        .get(b.url(&format!("{poll}?wait=5")))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("poll on B");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["holdfast-upstream-status"], "200");
    let answer: Value = response.json().await.expect("json");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Updates for: Get the most recent updates."
    );
    // After the ttl (2 s), B says it expired.
    let gone = async || {
        client
            .get(b.url(&poll))
            .bearer_auth(&alice)
            .send()
            .await
            .is_ok_and(|r| r.status() == 410)
    };
    holdfast_tests::eventually(Duration::from_secs(10), "the job to expire on B", gone).await;
}
